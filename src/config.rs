//! The server's configuration: where the database is, which addresses to bind, which webhook
//! secrets to accept. Built from the command line (see `cli`) or directly by tests.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use crate::applier::ApplierConfig;
use crate::grpc::watch::WatchConfig;
use crate::http_server::HttpLimits;
use crate::ingest::verify::WebhookSecrets;

pub use crate::db::DatabaseConfig;
pub use crate::secrets::Redacted;
pub use crate::grpc::web::GrpcWebConfig;
pub use crate::tls::TlsConfig;

/// Everything `Application::build` needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub database: DatabaseConfig,
    /// The public webhook port: only `/webhooks/clerk`, `/healthz`, `/readyz`.
    pub http_addr: SocketAddr,
    /// The gRPC port.
    pub grpc_addr: SocketAddr,
    /// The operator port (metrics, reports): loopback by default.
    pub admin_addr: SocketAddr,
    /// The Svix signing secrets any of which may verify a webhook (several during rotation).
    pub webhook_secrets: WebhookSecrets,
    /// Largest webhook body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most rows written by one group-commit transaction.
    pub ingest_batch_size: usize,
    /// Connections in the write pool; the API's reads get as many, half for lists and checks,
    /// half for point reads that memory cannot answer.
    pub max_connections: u32,
    /// How long a request waits for a connection before the database counts as unavailable.
    pub acquire_timeout: Duration,
    /// Changes the hub keeps for this replica's readers, in its broadcast buffer and its ring of
    /// recent changes (a watcher that starts or falls further behind reads the database).
    pub hub_capacity: usize,
    /// Watch streams.
    pub watch: WatchConfig,
    /// How long shutdown may take before the remaining work is abandoned.
    pub shutdown_timeout: Duration,
    /// How often gRPC health re-checks the database.
    pub health_interval: Duration,
    /// Bearer tokens for the gRPC APIs and the admin port (empty: no authentication).
    pub tokens: crate::grpc::auth::Tokens,
    /// TLS (and, with a client CA, mTLS) for the gRPC and admin ports.
    pub tls: Option<TlsConfig>,
    /// Serve without tokens on a non-loopback address anyway.
    pub allow_unauthenticated: bool,
    /// gRPC-Web (and HTTP/1.1) on the gRPC port, for runtimes without HTTP/2 trailers
    /// (`None`: off, plain gRPC over HTTP/2 only).
    pub grpc_web: Option<GrpcWebConfig>,
    /// Longest a unary RPC may take (and a stream until its first message).
    pub rpc_timeout: Duration,
    /// Largest gRPC message accepted.
    pub max_message_bytes: usize,
    /// Most RPCs in flight at once on the gRPC port (more are refused, never queued).
    pub max_concurrent_rpcs: usize,
    /// Bounds on request heads on the webhook and admin ports.
    pub http_limits: HttpLimits,
    /// Reconcile against Clerk's Backend API (run by the applier lock holder): the roles and
    /// permissions at start, and everything periodically if `every` is set.
    pub reconcile: Option<ReconcileConfig>,
    /// Most bytes the in-memory read cache holds (0: no cache; every read goes to PostgreSQL).
    pub read_cache_bytes: usize,
    /// Longest an `at_least_as_fresh` read waits for this replica to apply its cursor (the
    /// request's deadline may shorten it).
    pub consistency_wait: Duration,
    /// How often the hub reads the log when no notification came.
    pub hub_poll: Duration,
    /// Whether organization Billing gates custom permissions on this instance (Clerk then allows
    /// `org:<feature>:<permission>` only if the organization's plan includes the feature, and so
    /// does the mirror). Until the mirror holds plans, such checks are answered by the
    /// membership's snapshot.
    pub billing_gates_permissions: bool,
    /// Who is entitled to what (README, "Who is entitled"): whether a `past_due` subscription
    /// item still entitles.
    pub entitlements: crate::store::entitlement::Policy,
    /// The applier (`None`: this process never applies; tests use it to hold events back).
    pub applier: Option<ApplierConfig>,
    /// Outbound webhooks: the destinations key, where deliveries may go, and how the sender
    /// (on the applier lock's holder) retries.
    pub outbound: crate::outbound::sender::SenderConfig,
}

impl Config {
    /// The defaults of the fields that are plain values (the command line's defaults too).
    pub const DEFAULT_HTTP_ADDR: SocketAddr = loopback(8080);
    pub const DEFAULT_GRPC_ADDR: SocketAddr = loopback(50051);
    pub const DEFAULT_ADMIN_ADDR: SocketAddr = loopback(9090);
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
    pub const DEFAULT_MAX_CONCURRENT_RPCS: usize = 1024;
    pub const DEFAULT_READ_CACHE_BYTES: usize = DEFAULT_READ_CACHE_BYTES;
    pub const DEFAULT_HUB_CAPACITY: usize = 1024;

    /// Defaults for everything but the database and the secrets; addresses on loopback.
    pub fn new(database: DatabaseConfig, webhook_secrets: WebhookSecrets) -> Self {
        Config {
            database,
            http_addr: Self::DEFAULT_HTTP_ADDR,
            grpc_addr: Self::DEFAULT_GRPC_ADDR,
            admin_addr: Self::DEFAULT_ADMIN_ADDR,
            webhook_secrets,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            ingest_batch_size: 500,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            hub_capacity: Self::DEFAULT_HUB_CAPACITY,
            watch: WatchConfig::default(),
            health_interval: Duration::from_secs(2),
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            tokens: Default::default(),
            tls: None,
            allow_unauthenticated: false,
            grpc_web: None,
            rpc_timeout: Self::DEFAULT_RPC_TIMEOUT,
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            max_concurrent_rpcs: Self::DEFAULT_MAX_CONCURRENT_RPCS,
            http_limits: HttpLimits::default(),
            reconcile: None,
            read_cache_bytes: DEFAULT_READ_CACHE_BYTES,
            consistency_wait: Duration::from_secs(5),
            hub_poll: Duration::from_secs(1),
            billing_gates_permissions: false,
            entitlements: crate::store::entitlement::Policy::default(),
            applier: Some(ApplierConfig::default()),
            outbound: Default::default(),
        }
    }
}

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// The read cache's default budget: 1 GiB.
pub const DEFAULT_READ_CACHE_BYTES: usize = 1 << 30;

/// Where the embedded default keeps its cluster when no `--data-dir` is given.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from(".clerk-mirror")
}

/// Where and how often to reconcile.
#[derive(Clone, Debug)]
pub struct ReconcileConfig {
    pub api_url: String,
    pub secret_key: Redacted<String>,
    /// Requests per `window`.
    pub rate: usize,
    pub window: Duration,
    /// How often to reconcile everything; `None`: only the roles and permissions, when the
    /// replica starts leading.
    pub every: Option<Duration>,
    /// How often to list Clerk Billing's plans (they have no webhooks), besides at start, on
    /// reconcile and when an item names a plan the mirror does not know.
    pub plans_every: Duration,
}

impl ReconcileConfig {
    /// Backend API requests per window by default: the instance's limit is shared with the
    /// application itself.
    pub const DEFAULT_RATE: usize = 20;
    pub const WINDOW: Duration = Duration::from_secs(10);
}

/// A duration as people write it on a command line: `30s`, `15m`, `12h`, `7d` (a bare number is
/// seconds); shown in the largest unit that divides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.as_secs();
        let (n, unit) = [(86_400, "d"), (3600, "h"), (60, "m")]
            .into_iter()
            .find(|(u, _)| secs > 0 && secs % u == 0)
            .map_or((secs, "s"), |(u, name)| (secs / u, name));
        write!(f, "{n}{unit}")
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(HumanDuration)
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

/// `30s`, `15m`, `12h`, `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30s, 15m, 12h or 7d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(unit)))
}

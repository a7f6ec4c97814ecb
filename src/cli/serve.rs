//! `serve`: its options (each with an environment variable; defaults from `Config`) and the
//! server they start on the database they name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::LogFormat;
use super::args::{DatabaseArgs, open_database, raise_open_file_limit, secret, shutdown_signal, tokens};
use crate::Application;
use crate::applier::ApplierConfig;
use crate::config::{Config, HumanDuration, ReconcileConfig, Redacted, parse_duration};
use crate::grpc::watch::WatchConfig;
use crate::http_server::HttpLimits;
use crate::ingest::verify::WebhookSecrets;

#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    #[command(flatten)]
    pub(super) database: DatabaseArgs,
    /// The public webhook address (`POST /webhooks/clerk`, `/healthz`, `/readyz`).
    #[arg(long, env = "CLERK_MIRROR_HTTP_ADDR", default_value_t = Config::DEFAULT_HTTP_ADDR)]
    pub(super) http_addr: SocketAddr,
    /// The gRPC address.
    #[arg(long, env = "CLERK_MIRROR_GRPC_ADDR", default_value_t = Config::DEFAULT_GRPC_ADDR)]
    pub(super) grpc_addr: SocketAddr,
    /// The operator address (metrics); keep it private.
    #[arg(long, env = "CLERK_MIRROR_ADMIN_ADDR", default_value_t = Config::DEFAULT_ADMIN_ADDR)]
    pub(super) admin_addr: SocketAddr,
    /// The webhook endpoint's signing secret(s), `whsec_…`, comma-separated; any may verify.
    #[arg(
        long,
        env = "CLERK_WEBHOOK_SECRET",
        hide_env_values = true,
        value_delimiter = ',',
        required = true,
        value_parser = secret
    )]
    pub(super) webhook_secret: Vec<Redacted<String>>,
    /// Log format: `pretty` (text for people, coloured only on a terminal and without
    /// `NO_COLOR`) or `json` (one object a line); `RUST_LOG` filters (default `info`).
    #[arg(long, env = "CLERK_MIRROR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub(super) log_format: LogFormat,
    /// A client allowed to read (DirectoryService, WatchService): `name=secret`; repeat, or
    /// comma-separate in the variable.
    #[arg(long, env = "CLERK_MIRROR_READER_TOKENS", hide_env_values = true, value_delimiter = ',', value_parser = secret)]
    pub(super) reader_token: Vec<Redacted<String>>,
    /// A client allowed everything, AdminService and the admin port included: `name=secret`.
    #[arg(long, env = "CLERK_MIRROR_ADMIN_TOKENS", hide_env_values = true, value_delimiter = ',', value_parser = secret)]
    pub(super) admin_token: Vec<Redacted<String>>,
    /// A file of reader tokens: one `name=secret` a line, `#` comments.
    #[arg(long, env = "CLERK_MIRROR_READER_TOKENS_FILE")]
    pub(super) reader_tokens_file: Option<PathBuf>,
    /// A file of admin tokens: one `name=secret` a line, `#` comments.
    #[arg(long, env = "CLERK_MIRROR_ADMIN_TOKENS_FILE")]
    pub(super) admin_tokens_file: Option<PathBuf>,
    /// TLS certificate (PEM, with its chain) for the gRPC and admin ports.
    #[arg(long, env = "CLERK_MIRROR_TLS_CERT", requires = "tls_key")]
    pub(super) tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the gRPC and admin ports.
    #[arg(long, env = "CLERK_MIRROR_TLS_KEY", requires = "tls_cert")]
    pub(super) tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates the gRPC and admin ports require (mTLS).
    #[arg(long, env = "CLERK_MIRROR_CLIENT_CA", requires = "tls_cert")]
    pub(super) client_ca: Option<PathBuf>,
    /// Serve the gRPC and admin ports on a non-loopback address without tokens (when something
    /// else guards them).
    #[arg(long, env = "CLERK_MIRROR_ALLOW_UNAUTHENTICATED")]
    pub(super) allow_unauthenticated: bool,
    /// Export the server's spans to this OTLP/gRPC collector (`http://collector:4317`): a
    /// webhook's ingest, the applier's batches, each RPC. Off by default. `OTEL_SERVICE_NAME`,
    /// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*` apply;
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` works too, `OTEL_SDK_DISABLED=true` turns it off.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub(super) otlp_endpoint: Option<String>,
    /// Also serve gRPC-Web (and HTTP/1.1) on the gRPC port, for runtimes without HTTP/2
    /// trailers (edge functions, some serverless platforms and proxies). The same tokens apply.
    /// Not for browsers: a reader token reads every user's email and private metadata.
    #[arg(long, env = "CLERK_MIRROR_GRPC_WEB")]
    pub(super) grpc_web: bool,
    /// With --grpc-web: answer CORS for this origin (`https://app.example.com`; repeatable,
    /// comma-separated in the variable). None: no CORS headers.
    #[arg(long, env = "CLERK_MIRROR_GRPC_WEB_CORS_ORIGINS", value_delimiter = ',', requires = "grpc_web", value_parser = cors_origin)]
    pub(super) grpc_web_cors_origin: Vec<String>,
    /// Recent changes each replica keeps in memory for watchers that start behind or fall behind
    /// (a resume from a cursor within them reads no PostgreSQL).
    #[arg(long, env = "CLERK_MIRROR_RECENT_CHANGES", default_value_t = Config::DEFAULT_HUB_CAPACITY, value_parser = clap::value_parser!(usize))]
    pub(super) recent_changes: usize,
    /// Most watch streams open at once on this replica.
    #[arg(long, env = "CLERK_MIRROR_MAX_WATCHERS", default_value_t = WatchConfig::default().max_streams)]
    pub(super) max_watchers: usize,
    /// Longest a unary RPC may take.
    #[arg(long, env = "CLERK_MIRROR_RPC_TIMEOUT", default_value_t = Config::DEFAULT_RPC_TIMEOUT.into())]
    pub(super) rpc_timeout: HumanDuration,
    /// Most RPCs in flight at once on the gRPC port; more are refused at once
    /// (RESOURCE_EXHAUSTED), never queued. Health checks are never refused.
    #[arg(long, env = "CLERK_MIRROR_MAX_CONCURRENT_RPCS", default_value_t = Config::DEFAULT_MAX_CONCURRENT_RPCS)]
    pub(super) max_concurrent_rpcs: usize,
    /// Largest gRPC request message, in bytes.
    #[arg(long, env = "CLERK_MIRROR_MAX_MESSAGE_BYTES", default_value_t = Config::DEFAULT_MAX_MESSAGE_BYTES)]
    pub(super) max_message_bytes: usize,
    /// Largest webhook body, in bytes (larger: 413).
    #[arg(long, env = "CLERK_MIRROR_MAX_BODY_BYTES", default_value_t = Config::DEFAULT_MAX_BODY_BYTES)]
    pub(super) max_body_bytes: usize,
    /// Most header fields in one request on the webhook and admin ports (more: 431).
    #[arg(long, env = "CLERK_MIRROR_MAX_HEADER_COUNT", default_value_t = HttpLimits::default().max_headers)]
    pub(super) max_header_count: usize,
    /// Most bytes in one request's head (request line and headers) on the webhook and admin
    /// ports (more: 431).
    #[arg(long, env = "CLERK_MIRROR_MAX_HEADER_BYTES", default_value_t = HttpLimits::default().max_header_bytes)]
    pub(super) max_header_bytes: usize,
    /// Reconcile with Clerk's Backend API this often (e.g. 6h), on the replica holding the applier
    /// lock; needs --secret-key.
    #[arg(long, env = "CLERK_MIRROR_RECONCILE_EVERY", value_parser = parse_duration, requires = "secret_key")]
    pub(super) reconcile_every: Option<Duration>,
    /// The instance's secret key: with it, the replica holding the applier lock reads the roles
    /// and permissions from the Backend API when it starts leading (the default roles have no
    /// events), and reconciles everything with --reconcile-every.
    #[arg(long, env = "CLERK_SECRET_KEY", hide_env_values = true, value_parser = secret)]
    pub(super) secret_key: Option<Redacted<String>>,
    /// Clerk's Backend API.
    #[arg(long, env = "CLERK_API_URL", default_value = crate::backfill::client::DEFAULT_API_URL)]
    pub(super) api_url: String,
    /// How often the lock holder lists Clerk Billing's plans with --secret-key (plans have no
    /// webhooks; also at start, on reconcile, and when an item names a plan the mirror does not
    /// know).
    #[arg(long, env = "CLERK_MIRROR_PLANS_EVERY", default_value_t = crate::backfill::plans::DEFAULT_EVERY.into())]
    pub(super) plans_every: HumanDuration,
    /// Backend API requests per 10 s for the periodic reconcile.
    #[arg(long, env = "CLERK_MIRROR_API_RATE", default_value_t = ReconcileConfig::DEFAULT_RATE)]
    pub(super) api_rate: usize,
    /// How long shutdown may take (in-flight webhooks, the applier's batch, streams) before the
    /// process gives up waiting.
    #[arg(long, env = "CLERK_MIRROR_SHUTDOWN_TIMEOUT", default_value_t = Config::DEFAULT_SHUTDOWN_TIMEOUT.into())]
    pub(super) shutdown_timeout: HumanDuration,
    /// Most bytes of users, organizations and memberships each replica holds in memory to serve
    /// reads (0: none; every read goes to PostgreSQL). Above it, what is not held is read from
    /// PostgreSQL.
    #[arg(long, env = "CLERK_MIRROR_READ_CACHE_BYTES", default_value_t = Config::DEFAULT_READ_CACHE_BYTES)]
    pub(super) read_cache_bytes: usize,
    /// Organization Billing is on for this instance, so Clerk allows a custom permission
    /// (`org:<feature>:<permission>`) only if the organization's plan includes the feature: such
    /// checks then also need the feature in the organization's plan (CHECK_SOURCE_PLAN), or,
    /// until the mirror holds plans (listed with --secret-key), are answered by the membership's
    /// snapshot (CHECK_SOURCE_MEMBERSHIP_SNAPSHOT).
    #[arg(long, env = "CLERK_MIRROR_BILLING_GATES_PERMISSIONS")]
    pub(super) billing_gates_permissions: bool,
    /// Whether a Clerk Billing item that is `past_due` (Clerk is retrying the payment) still
    /// entitles its payer to its plan's features (README, "Who is entitled").
    #[arg(long, env = "CLERK_MIRROR_BILLING_PAST_DUE_ENTITLES", default_value_t = true, action = clap::ArgAction::Set)]
    pub(super) billing_past_due_entitles: bool,
    /// The key that seals outbound webhook destinations' signing secrets in the database (32
    /// bytes, base64: `openssl rand -base64 32`), so a dump alone does not reveal them. Without
    /// it the embedded default keeps one in `<data-dir>/destinations.key`; with --database-url,
    /// destinations cannot be created until it is given.
    #[arg(long, env = "CLERK_MIRROR_DESTINATIONS_KEY", hide_env_values = true, value_parser = secret)]
    pub(super) destinations_key: Option<Redacted<String>>,
    /// Let outbound webhooks go to loopback and private addresses (10/8, 172.16/12, 192.168/16,
    /// fc00::/7), over http too. Link-local, metadata and CGNAT addresses are refused whatever.
    #[arg(long, env = "CLERK_MIRROR_ALLOW_PRIVATE_DESTINATIONS")]
    pub(super) allow_private_destinations: bool,
    /// How long one outbound delivery may take to be answered (a 2xx later counts as a failure);
    /// a replica that takes over sending waits this long before its first delivery.
    #[arg(long, env = "CLERK_MIRROR_DELIVERY_TIMEOUT", default_value_t = crate::outbound::client::DELIVERY_TIMEOUT.into())]
    pub(super) delivery_timeout: HumanDuration,
    /// How long a destination may keep failing before it is paused (it resumes where it stopped).
    #[arg(long, env = "CLERK_MIRROR_DELIVERY_HORIZON", default_value_t = crate::outbound::outcome::Schedule::default().horizon.into())]
    pub(super) delivery_horizon: HumanDuration,
    /// Keep changes this long (cursors older than that get CURSOR_EXPIRED): e.g. 7d, 12h, 30m.
    #[arg(long, env = "CLERK_MIRROR_CHANGE_RETENTION", default_value_t = ApplierConfig::default().retention.changes.into())]
    pub(super) change_retention: HumanDuration,
    /// Keep applied and skipped inbox rows this long.
    #[arg(long, env = "CLERK_MIRROR_INBOX_RETENTION", default_value_t = ApplierConfig::default().retention.inbox.into())]
    pub(super) inbox_retention: HumanDuration,
    /// Keep dead letters (failed inbox rows) this long unless replayed.
    #[arg(long, env = "CLERK_MIRROR_DEAD_LETTER_RETENTION", default_value_t = ApplierConfig::default().retention.dead_letters.into())]
    pub(super) dead_letter_retention: HumanDuration,
}

pub(super) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // SIGTERM and SIGINT are handled from here on: one sent while the database starts, or the
    // moment the server says `serving`, is a clean shutdown, not the default disposition's kill.
    let stop = shutdown_signal();
    raise_open_file_limit();
    let webhook_secrets: Vec<&str> = args.webhook_secret.iter().map(|s| s.0.as_str()).collect();
    let secrets = WebhookSecrets::parse(&webhook_secrets)?;
    // Before the database starts: a bad token or token file fails at once.
    let tokens = crate::grpc::auth::Tokens {
        readers: tokens("--reader-token", &args.reader_token, args.reader_tokens_file.as_ref())?,
        admins: tokens("--admin-token", &args.admin_token, args.admin_tokens_file.as_ref())?,
    };
    let database = open_database(&args.database).await?;
    let mut config = Config::new(database.config.clone(), secrets);
    config.http_addr = args.http_addr;
    config.grpc_addr = args.grpc_addr;
    config.admin_addr = args.admin_addr;
    config.shutdown_timeout = args.shutdown_timeout.0;
    config.tokens = tokens;
    config.allow_unauthenticated = args.allow_unauthenticated;
    config.grpc_web = args.grpc_web.then(|| crate::config::GrpcWebConfig {
        cors_origins: args.grpc_web_cors_origin.clone(),
    });
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        config.tls = Some(crate::config::TlsConfig {
            cert: read(cert)?,
            key: Redacted(read(key)?),
            client_ca: args.client_ca.as_ref().map(read).transpose()?,
        });
    }
    config.watch.max_streams = args.max_watchers;
    config.hub_capacity = args.recent_changes.max(1);
    config.rpc_timeout = args.rpc_timeout.0;
    config.max_concurrent_rpcs = args.max_concurrent_rpcs;
    config.max_message_bytes = args.max_message_bytes;
    config.max_body_bytes = args.max_body_bytes;
    config.read_cache_bytes = args.read_cache_bytes;
    config.billing_gates_permissions = args.billing_gates_permissions;
    config.entitlements.past_due_entitles = args.billing_past_due_entitles;
    config.http_limits.max_headers = args.max_header_count;
    config.http_limits.max_header_bytes = args.max_header_bytes;
    if let Some(key) = &args.secret_key {
        config.reconcile = Some(ReconcileConfig {
            api_url: args.api_url.clone(),
            secret_key: key.clone(),
            rate: args.api_rate,
            window: ReconcileConfig::WINDOW,
            every: args.reconcile_every,
            plans_every: args.plans_every.0,
        });
    }
    config.outbound.key = destinations_key(&args)?.map(std::sync::Arc::new);
    config.outbound.policy.allow_private = args.allow_private_destinations;
    config.outbound.schedule.horizon = args.delivery_horizon.0;
    config.outbound.timeout = args.delivery_timeout.0;
    config.outbound.takeover_wait = args.delivery_timeout.0;
    if let Some(applier) = config.applier.as_mut() {
        applier.retention.changes = args.change_retention.0;
        applier.retention.inbox = args.inbox_retention.0;
        applier.retention.dead_letters = args.dead_letter_retention.0;
    }
    let result = async {
        let app = Application::build(config).await?;
        app.run_until_stopped(stop).await
    }
    .await;
    // The database stops last, after in-flight webhooks have committed.
    database.close().await;
    result
}

/// The destinations key: given, or the embedded default's own (made on first use, readable by
/// its owner only), or none (an external database without the flag).
fn destinations_key(args: &ServeArgs) -> anyhow::Result<Option<crate::outbound::sealed::SealingKey>> {
    use crate::outbound::sealed::SealingKey;
    if let Some(text) = &args.destinations_key {
        return SealingKey::parse(&text.0).map(Some).context("--destinations-key");
    }
    if args.database.database_url.is_some() {
        return Ok(None);
    }
    let path = args.database.data_dir.join("destinations.key");
    if !path.exists() {
        std::fs::create_dir_all(&args.database.data_dir)
            .with_context(|| format!("cannot create {}", args.database.data_dir.display()))?;
        use std::io::Write as _;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(&path).with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(SealingKey::generate_text().as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    SealingKey::parse(&text)
        .map(Some)
        .with_context(|| format!("{} holds no destinations key", path.display()))
}

/// A CORS origin as browsers send it: `scheme://host[:port]`, nothing after. `*` is refused:
/// a token that reads the whole directory must not be usable from any page on the web.
fn cors_origin(value: &str) -> Result<String, String> {
    if value == "*" {
        return Err("`*` would let any web page call the mirror with a token it holds; name each origin (https://app.example.com)".into());
    }
    let uri: http::Uri = value
        .parse()
        .map_err(|e| format!("`{value}` is not an origin ({e}); expected scheme://host[:port], e.g. https://app.example.com"))?;
    let plain = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some()
        && uri.path_and_query().is_none_or(|p| p.as_str() == "/")
        && !value.ends_with('/');
    if !plain {
        return Err(format!(
            "`{value}` is not an origin; expected scheme://host[:port] with no path or trailing slash, e.g. https://app.example.com"
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(extra: &[&str]) -> Result<ServeArgs, clap::Error> {
        let mut argv = vec!["serve", "--webhook-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.serve)
    }

    #[test]
    fn grpc_web_is_off_unless_asked_for_and_takes_named_origins() {
        assert!(!parse(&[]).unwrap().grpc_web);
        let args = parse(&[
            "--grpc-web",
            "--grpc-web-cors-origin",
            "https://app.example.com,http://localhost:3000",
        ])
        .unwrap();
        assert!(args.grpc_web);
        assert_eq!(args.grpc_web_cors_origin, ["https://app.example.com", "http://localhost:3000"]);
    }

    #[test]
    fn a_cors_origin_without_grpc_web_or_that_is_not_an_origin_is_refused_with_what_to_write() {
        let e = parse(&["--grpc-web-cors-origin", "https://app.example.com"]).unwrap_err().to_string();
        assert!(e.contains("--grpc-web"), "{e}");
        for (bad, says) in [
            ("*", "name each origin"),
            ("https://app.example.com/", "no path or trailing slash"),
            ("https://app.example.com/login", "no path"),
            ("app.example.com", "scheme://host[:port]"),
            ("ftp://app.example.com", "scheme://host[:port]"),
        ] {
            let e = parse(&["--grpc-web", "--grpc-web-cors-origin", bad]).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("--grpc-web-cors-origin"), "{bad}: {e}");
        }
    }
}

//! The command line: `serve`, `migrate`, `send-event`. Every option also reads an environment
//! variable (see README). The embedded default lives here: with no database URL, commands run on
//! a private PostgreSQL cluster in `--data-dir`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing::{error, info};

use crate::applier::ApplierConfig;
pub use crate::config::parse_duration;
use crate::config::{Config, DatabaseConfig, HumanDuration, ReconcileConfig, Redacted, default_data_dir};
use crate::grpc::auth::Token;
use crate::grpc::watch::WatchConfig;
use crate::http_server::HttpLimits;
use crate::ingest::verify::WebhookSecrets;
use crate::pg::{Cluster, ClusterOptions};
use crate::{Application, db, send_event, telemetry};

/// The database the embedded cluster serves the mirror from.
pub const EMBEDDED_DATABASE: &str = "clerk_mirror";

#[derive(Parser, Debug)]
#[command(
    name = "clerk-mirror",
    version,
    about = "A live, queryable mirror of a Clerk instance, served over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve webhooks (HTTP), the gRPC API and the admin port.
    Serve(Box<ServeArgs>),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Sign a Clerk event body exactly as Svix does and post it to a running server.
    SendEvent(SendEventArgs),
    /// Print a running server's change stream as JSON lines, resuming after disconnects.
    Watch(crate::watch_command::WatchArgs),
    /// Import every user, organization and membership from Clerk's Backend API (resumable).
    Backfill(BackfillArgs),
    /// Compare Clerk's state with the mirror and repair the drift; print the drift report.
    Reconcile(ReconcileArgs),
    /// Show where the mirror stands: log head and oldest cursor, inbox backlog, dead letters.
    Status(StatusArgs),
    /// Re-apply dead letters (after an upgrade) or given deliveries, through the inbox.
    Replay(ReplayArgs),
    /// Measure ingest, lookups, watch streams and backfill against same-run baselines.
    Bench(crate::bench::BenchArgs),
}

#[derive(Args, Debug)]
struct BackfillArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Clerk's Backend API.
    #[arg(long, env = "CLERK_API_URL", default_value = crate::backfill::client::DEFAULT_API_URL)]
    api_url: String,
    /// The instance's secret key (`sk_live_…` / `sk_test_…`).
    #[arg(long, env = "CLERK_SECRET_KEY", hide_env_values = true, value_parser = secret)]
    secret_key: Redacted<String>,
    /// Requests per 10 s: the instance's limit is shared with your own application.
    #[arg(long, env = "CLERK_MIRROR_API_RATE", default_value_t = ReconcileConfig::DEFAULT_RATE)]
    api_rate: usize,
}

#[derive(Args, Debug)]
struct ReconcileArgs {
    #[command(flatten)]
    api: BackfillArgs,
    /// Allow deleting more than max(10, 1 %) of an entity type (when Clerk really lost them).
    #[arg(long)]
    allow_mass_delete: bool,
    /// List the ids of every repair, not only the counts.
    #[arg(long)]
    verbose: bool,
}

#[derive(Args, Debug)]
struct StatusArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Replay every dead letter.
    #[arg(long, conflicts_with = "id", required_unless_present = "id")]
    all_dead_letters: bool,
    /// Replay this delivery (svix-id); repeat for several.
    #[arg(long)]
    id: Vec<String>,
}

/// Where the database is: a URL, or the embedded cluster in a data directory.
#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// PostgreSQL URL. Without it, an embedded cluster in --data-dir is used.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret)]
    database_url: Option<Redacted<String>>,
    /// Where the embedded cluster lives (created on first start, kept across restarts).
    #[arg(long, env = "CLERK_MIRROR_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The public webhook address (`POST /webhooks/clerk`, `/healthz`, `/readyz`).
    #[arg(long, env = "CLERK_MIRROR_HTTP_ADDR", default_value_t = Config::DEFAULT_HTTP_ADDR)]
    http_addr: SocketAddr,
    /// The gRPC address.
    #[arg(long, env = "CLERK_MIRROR_GRPC_ADDR", default_value_t = Config::DEFAULT_GRPC_ADDR)]
    grpc_addr: SocketAddr,
    /// The operator address (metrics); keep it private.
    #[arg(long, env = "CLERK_MIRROR_ADMIN_ADDR", default_value_t = Config::DEFAULT_ADMIN_ADDR)]
    admin_addr: SocketAddr,
    /// The webhook endpoint's signing secret(s), `whsec_…`, comma-separated; any may verify.
    #[arg(
        long,
        env = "CLERK_WEBHOOK_SECRET",
        hide_env_values = true,
        value_delimiter = ',',
        required = true,
        value_parser = secret
    )]
    webhook_secret: Vec<Redacted<String>>,
    /// Log format: `pretty` (text for people, coloured only on a terminal and without
    /// `NO_COLOR`) or `json` (one object a line); `RUST_LOG` filters (default `info`).
    #[arg(long, env = "CLERK_MIRROR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    /// A client allowed to read (DirectoryService, WatchService): `name=secret`; repeat, or
    /// comma-separate in the variable.
    #[arg(long, env = "CLERK_MIRROR_READER_TOKENS", hide_env_values = true, value_delimiter = ',', value_parser = secret)]
    reader_token: Vec<Redacted<String>>,
    /// A client allowed everything, AdminService and the admin port included: `name=secret`.
    #[arg(long, env = "CLERK_MIRROR_ADMIN_TOKENS", hide_env_values = true, value_delimiter = ',', value_parser = secret)]
    admin_token: Vec<Redacted<String>>,
    /// A file of reader tokens: one `name=secret` a line, `#` comments.
    #[arg(long, env = "CLERK_MIRROR_READER_TOKENS_FILE")]
    reader_tokens_file: Option<PathBuf>,
    /// A file of admin tokens: one `name=secret` a line, `#` comments.
    #[arg(long, env = "CLERK_MIRROR_ADMIN_TOKENS_FILE")]
    admin_tokens_file: Option<PathBuf>,
    /// TLS certificate (PEM, with its chain) for the gRPC and admin ports.
    #[arg(long, env = "CLERK_MIRROR_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the gRPC and admin ports.
    #[arg(long, env = "CLERK_MIRROR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates the gRPC and admin ports require (mTLS).
    #[arg(long, env = "CLERK_MIRROR_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Serve the gRPC and admin ports on a non-loopback address without tokens (when something
    /// else guards them).
    #[arg(long, env = "CLERK_MIRROR_ALLOW_UNAUTHENTICATED")]
    allow_unauthenticated: bool,
    /// Most watch streams open at once on this replica.
    #[arg(long, env = "CLERK_MIRROR_MAX_WATCHERS", default_value_t = WatchConfig::default().max_streams)]
    max_watchers: usize,
    /// Longest a unary RPC may take.
    #[arg(long, env = "CLERK_MIRROR_RPC_TIMEOUT", default_value_t = Config::DEFAULT_RPC_TIMEOUT.into())]
    rpc_timeout: HumanDuration,
    /// Most RPCs in flight at once on the gRPC port; more are refused at once
    /// (RESOURCE_EXHAUSTED), never queued. Health checks are never refused.
    #[arg(long, env = "CLERK_MIRROR_MAX_CONCURRENT_RPCS", default_value_t = Config::DEFAULT_MAX_CONCURRENT_RPCS)]
    max_concurrent_rpcs: usize,
    /// Largest gRPC request message, in bytes.
    #[arg(long, env = "CLERK_MIRROR_MAX_MESSAGE_BYTES", default_value_t = Config::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Largest webhook body, in bytes (larger: 413).
    #[arg(long, env = "CLERK_MIRROR_MAX_BODY_BYTES", default_value_t = Config::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Most header fields in one request on the webhook and admin ports (more: 431).
    #[arg(long, env = "CLERK_MIRROR_MAX_HEADER_COUNT", default_value_t = HttpLimits::default().max_headers)]
    max_header_count: usize,
    /// Most bytes in one request's head (request line and headers) on the webhook and admin
    /// ports (more: 431).
    #[arg(long, env = "CLERK_MIRROR_MAX_HEADER_BYTES", default_value_t = HttpLimits::default().max_header_bytes)]
    max_header_bytes: usize,
    /// Reconcile with Clerk's Backend API this often (e.g. 6h), on the replica holding the applier
    /// lock; needs --secret-key.
    #[arg(long, env = "CLERK_MIRROR_RECONCILE_EVERY", value_parser = parse_duration, requires = "secret_key")]
    reconcile_every: Option<Duration>,
    /// The instance's secret key, for the periodic reconcile.
    #[arg(long, env = "CLERK_SECRET_KEY", hide_env_values = true, value_parser = secret)]
    secret_key: Option<Redacted<String>>,
    /// Clerk's Backend API.
    #[arg(long, env = "CLERK_API_URL", default_value = crate::backfill::client::DEFAULT_API_URL)]
    api_url: String,
    /// Backend API requests per 10 s for the periodic reconcile.
    #[arg(long, env = "CLERK_MIRROR_API_RATE", default_value_t = ReconcileConfig::DEFAULT_RATE)]
    api_rate: usize,
    /// How long shutdown may take (in-flight webhooks, the applier's batch, streams) before the
    /// process gives up waiting.
    #[arg(long, env = "CLERK_MIRROR_SHUTDOWN_TIMEOUT", default_value_t = Config::DEFAULT_SHUTDOWN_TIMEOUT.into())]
    shutdown_timeout: HumanDuration,
    /// Most bytes of users, organizations and memberships each replica holds in memory to serve
    /// reads (0: none; every read goes to PostgreSQL). Above it, what is not held is read from
    /// PostgreSQL.
    #[arg(long, env = "CLERK_MIRROR_READ_CACHE_BYTES", default_value_t = Config::DEFAULT_READ_CACHE_BYTES)]
    read_cache_bytes: usize,
    /// Keep changes this long (cursors older than that get CURSOR_EXPIRED): e.g. 7d, 12h, 30m.
    #[arg(long, env = "CLERK_MIRROR_CHANGE_RETENTION", default_value_t = ApplierConfig::default().retention.changes.into())]
    change_retention: HumanDuration,
    /// Keep applied and skipped inbox rows this long.
    #[arg(long, env = "CLERK_MIRROR_INBOX_RETENTION", default_value_t = ApplierConfig::default().retention.inbox.into())]
    inbox_retention: HumanDuration,
    /// Keep dead letters (failed inbox rows) this long unless replayed.
    #[arg(long, env = "CLERK_MIRROR_DEAD_LETTER_RETENTION", default_value_t = ApplierConfig::default().retention.dead_letters.into())]
    dead_letter_retention: HumanDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

/// A secret, kept out of `Debug` output. Nothing is checked here: clap would quote a refused
/// value in its error; the command checks it and names only the flag.
pub(crate) fn secret(text: &str) -> Result<Redacted<String>, String> {
    Ok(Redacted(text.to_string()))
}

/// The tokens given for one role: the flags' (or variable's) values, then the file's.
fn tokens(flag: &str, values: &[Redacted<String>], file: Option<&PathBuf>) -> anyhow::Result<Vec<Token>> {
    let mut tokens = values
        .iter()
        .enumerate()
        .map(|(i, value)| Token::parse(&value.0).map_err(|e| anyhow::anyhow!("{flag} value #{}: {e}", i + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(path) = file {
        tokens.extend(crate::grpc::token_file::read(path)?);
    }
    Ok(tokens)
}

#[derive(Args, Debug)]
struct SendEventArgs {
    /// The signing secret, `whsec_…` (the first one when several are given).
    #[arg(long, env = "CLERK_WEBHOOK_SECRET", hide_env_values = true, value_parser = secret)]
    secret: Redacted<String>,
    /// Where to post.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/clerk")]
    url: String,
    /// The delivery id (`svix-id`); a fresh one when absent. Reuse one to try a redelivery.
    #[arg(long)]
    id: Option<String>,
    /// The event body (JSON), or `-` for standard input.
    file: PathBuf,
}

/// Runs the command line; the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // Commands whose output goes into pipes end quietly when the reader goes away
        // (`clerk-mirror watch | head`), as Unix tools do, instead of panicking on EPIPE. Sockets
        // are unaffected (Rust sends with MSG_NOSIGNAL). `serve` keeps ignoring SIGPIPE.
        // SAFETY: restoring a signal's default disposition before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // `serve` logs its progress; the other commands print their answer on stdout and keep
    // stderr for warnings and errors (RUST_LOG raises either).
    let logging = match &cli.command {
        Command::Serve(args) => telemetry::Logging::server(match args.log_format {
            LogFormat::Pretty => telemetry::Format::Pretty,
            LogFormat::Json => telemetry::Format::Json,
        }),
        _ => telemetry::Logging::command(),
    };
    telemetry::init(logging);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // Said once: as a log line where logs are JSON (a log shipper reads every line), else
        // as a plain `error:` line.
        Err(e) if logging.format == telemetry::Format::Json => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(*args).await.map(|()| ExitCode::SUCCESS),
        Command::Migrate(args) => migrate(args).await.map(|()| ExitCode::SUCCESS),
        Command::SendEvent(args) => send(args).await,
        Command::Watch(args) => crate::watch_command::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Backfill(args) => backfill(args).await.map(|()| ExitCode::SUCCESS),
        Command::Reconcile(args) => reconcile(args).await.map(|()| ExitCode::SUCCESS),
        Command::Status(args) => status(args).await.map(|()| ExitCode::SUCCESS),
        Command::Replay(args) => replay(args).await.map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => crate::bench::run(args).await.map(|()| ExitCode::SUCCESS),
    }
}

/// The database a command uses, and the embedded cluster behind it when there is one.
pub struct OpenDatabase {
    pub config: DatabaseConfig,
    pub cluster: Option<Cluster>,
}

impl OpenDatabase {
    /// Stops the embedded cluster if this process is the one that runs it.
    pub async fn close(mut self) {
        if let Some(cluster) = self.cluster.as_mut()
            && let Err(e) = cluster.stop().await
        {
            error!("cannot stop the embedded PostgreSQL: {e}");
        }
    }
}

/// Opens the database `args` name: the URL, or the embedded cluster (started, or attached to
/// when a `serve` already runs it).
pub async fn open_database(args: &DatabaseArgs) -> anyhow::Result<OpenDatabase> {
    if let Some(url) = &args.database_url {
        return Ok(OpenDatabase {
            config: DatabaseConfig::Url(url.clone()),
            cluster: None,
        });
    }
    let cluster = Cluster::start(ClusterOptions {
        data_dir: args.data_dir.clone(),
        durable: true,
        die_with_parent: false,
    })
    .await
    .context("cannot start the embedded PostgreSQL")?;
    info!(data_dir = %args.data_dir.display(), "using the embedded PostgreSQL");
    let open = OpenDatabase {
        config: DatabaseConfig::Options(Box::new(cluster.connect_options(EMBEDDED_DATABASE))),
        cluster: Some(cluster),
    };
    if let Err(e) = ensure_database(open.cluster.as_ref().expect("just set")).await {
        open.close().await;
        return Err(e);
    }
    Ok(open)
}

/// Creates the mirror's database in the embedded cluster on first use.
async fn ensure_database(cluster: &Cluster) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect_with(&cluster.connect_options("postgres"))
        .await
        .context("cannot connect to the embedded PostgreSQL")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(EMBEDDED_DATABASE)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {EMBEDDED_DATABASE}")))
            .execute(&mut conn)
            .await;
        // Another process may have created it meanwhile (42P04 duplicate_database).
        if let Err(e) = created
            && e.as_database_error().and_then(|d| d.code()).as_deref() != Some("42P04")
        {
            return Err(e.into());
        }
    }
    conn.close().await?;
    Ok(())
}

/// Raises the soft open-file limit to the hard one (many watch connections), where allowed.
pub(crate) fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let before = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                tracing::debug!(from = before, to = limit.rlim_max, "raised the open-file limit");
            }
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
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
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        config.tls = Some(crate::config::TlsConfig {
            cert: read(cert)?,
            key: Redacted(read(key)?),
            client_ca: args.client_ca.as_ref().map(read).transpose()?,
        });
    }
    config.watch.max_streams = args.max_watchers;
    config.rpc_timeout = args.rpc_timeout.0;
    config.max_concurrent_rpcs = args.max_concurrent_rpcs;
    config.max_message_bytes = args.max_message_bytes;
    config.max_body_bytes = args.max_body_bytes;
    config.read_cache_bytes = args.read_cache_bytes;
    config.http_limits.max_headers = args.max_header_count;
    config.http_limits.max_header_bytes = args.max_header_bytes;
    if let (Some(every), Some(key)) = (args.reconcile_every, &args.secret_key) {
        config.reconcile = Some(ReconcileConfig {
            api_url: args.api_url.clone(),
            secret_key: key.clone(),
            rate: args.api_rate,
            window: ReconcileConfig::WINDOW,
            every,
        });
    }
    if let Some(applier) = config.applier.as_mut() {
        applier.retention.changes = args.change_retention.0;
        applier.retention.inbox = args.inbox_retention.0;
        applier.retention.dead_letters = args.dead_letter_retention.0;
    }
    let result = async {
        let app = Application::build(config).await?;
        app.run_until_stopped(shutdown_signal()).await
    }
    .await;
    // The database stops last, after in-flight webhooks have committed.
    database.close().await;
    result
}

async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    // Opening the pool applies the migrations.
    with_pool(&args, async |_| Ok(())).await?;
    println!("migrations applied");
    Ok(())
}

/// Runs `f` on a pool of the database `args` name, stopping an embedded cluster it started.
async fn with_pool<T>(
    args: &DatabaseArgs,
    f: impl AsyncFnOnce(&sqlx::PgPool) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let database = open_database(args).await?;
    let result = async {
        // sqlx errors are formatted with `{e}` (their text already holds their cause) and never
        // name the URL: it may hold a password.
        let options = db::connect_options(&database.config).map_err(|e| {
            anyhow::anyhow!(
                "--database-url / DATABASE_URL is not a PostgreSQL URL ({e}): write it as \
                 postgres://user:password@host:5432/database"
            )
        })?;
        let place = format!(
            "PostgreSQL at {}:{} (database {}, user {})",
            options.get_host(),
            options.get_port(),
            // PostgreSQL's default database is the user's.
            options.get_database().unwrap_or(options.get_username()),
            options.get_username()
        );
        let unreachable = |e: sqlx::Error| {
            anyhow::anyhow!(
                "cannot connect to {place}: {e}; check --database-url / DATABASE_URL and that PostgreSQL runs there"
            )
        };
        // One connection first: the pool retries a refused connection until its timeout and then
        // says only "pool timed out", without the cause.
        {
            use sqlx::Connection;
            let conn = sqlx::PgConnection::connect_with(&options).await.map_err(unreachable)?;
            let _ = conn.close().await;
        }
        let pool = sqlx::PgPool::connect_with(options).await.map_err(unreachable)?;
        if let Err(e) = db::migrate(&pool).await {
            pool.close().await;
            let what_to_do = match e {
                sqlx::migrate::MigrateError::VersionMissing(_) => {
                    "this database was migrated by a newer clerk-mirror: run that version (or newer)"
                }
                sqlx::migrate::MigrateError::VersionMismatch(_) => {
                    "an applied migration differs from this build's: was the database migrated by another build?"
                }
                _ => "run `clerk-mirror migrate` again once the cause is fixed",
            };
            anyhow::bail!("cannot apply the migrations to {place}: {e}; {what_to_do}");
        }
        let out = f(&pool).await;
        pool.close().await;
        out
    }
    .await;
    database.close().await;
    result
}

fn clerk_api(args: &BackfillArgs) -> crate::backfill::ClerkApi {
    use crate::backfill::{ClerkApi, rate::RateLimiter};
    let limiter = std::sync::Arc::new(RateLimiter::new(args.api_rate, ReconcileConfig::WINDOW));
    ClerkApi::new(&args.api_url, &args.secret_key.0, limiter)
}

async fn reconcile(args: ReconcileArgs) -> anyhow::Result<()> {
    let api = clerk_api(&args.api);
    let options = crate::backfill::reconcile::Options {
        allow_mass_delete: args.allow_mass_delete,
    };
    let report = with_pool(&args.api.database, async |pool| {
        Ok(crate::backfill::reconcile::run(pool, &api, options).await?)
    })
    .await?;
    print!("{}", report.render(args.verbose));
    Ok(())
}

async fn backfill(args: BackfillArgs) -> anyhow::Result<()> {
    let api = clerk_api(&args);
    let summary = with_pool(&args.database, async |pool| {
        // Progress is for a person watching: on a terminal only, never in a log file or pipe.
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut progress = |p: &crate::backfill::Progress| {
            if !tty {
                return;
            }
            let of = p.total.map(|t| format!("/{t}")).unwrap_or_default();
            let eta = match p.total {
                Some(t) if p.per_second > 0.0 && t > p.fetched => {
                    format!(", ETA {:.0} s", (t - p.fetched) as f64 / p.per_second)
                }
                _ => String::new(),
            };
            let line = format!(
                "backfill: {}: {}{of} fetched ({:.0}/s{eta})",
                p.resource, p.fetched, p.per_second
            );
            let finished = p.total.is_some_and(|t| p.fetched >= t);
            // One line per resource, redrawn in place.
            eprint!("\r\x1b[2K{line}{}", if finished { "\n" } else { "" });
        };
        Ok(crate::backfill::run(pool, &api, &mut progress).await?)
    })
    .await?;
    for (resource, s) in summary {
        let resumed = if s.resumed_at > 0 {
            format!(" (resumed at {})", s.resumed_at)
        } else {
            String::new()
        };
        println!(
            "{resource}: {} fetched, {} new to apply{resumed}",
            s.fetched, s.enqueued
        );
    }
    println!("done: a running serve applies them (clerk-mirror status shows the backlog)");
    Ok(())
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (s, report) = with_pool(&args.database, async |pool| {
        Ok((
            crate::store::admin::sync_status(pool)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the mirror's sync status: {e}"))?,
            crate::backfill::reconcile::last_report(pool)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the last drift report: {e}"))?,
        ))
    })
    .await?;
    let cursor = |seq| crate::pb::cursor::Cursor::new(&s.log_id, seq).encode();
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into());
    if args.json {
        let value = serde_json::json!({
            "head_cursor": cursor(s.head), "oldest_cursor": cursor(s.oldest - 1),
            "inbox_pending": s.pending, "dead_letters": s.dead_letters,
            "last_event_received": s.last_received, "last_event_applied": s.last_applied,
            "applier": s.applier,
            "last_reconcile": report,
        });
        println!("{value}");
    } else {
        println!("change log head:    {} (seq {})", cursor(s.head), s.head);
        println!("oldest cursor:      {} (seq {})", cursor(s.oldest - 1), s.oldest - 1);
        println!("inbox pending:      {}", s.pending);
        println!("dead letters:       {}", s.dead_letters);
        println!("last received:      {}", time(s.last_received));
        println!("last applied:       {}", time(s.last_applied));
        println!("applier:            {}", s.applier.as_deref().unwrap_or("none running"));
        match &report {
            Some(r) => print!("last {}", r.render(false)),
            None => println!("last reconcile:     never"),
        }
    }
    Ok(())
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let what = if args.all_dead_letters {
        crate::inbox::Replay::AllDeadLetters
    } else {
        crate::inbox::Replay::SvixIds(args.id.clone())
    };
    let (replayed, not_found) = with_pool(&args.database, async |pool| {
        crate::inbox::replay(pool, &what)
            .await
            .map_err(|e| anyhow::anyhow!("cannot put the deliveries back into the inbox: {e}"))
    })
    .await?;
    println!("replayed {replayed} event(s); a running serve applies them");
    for id in &not_found {
        println!("not found: {id}");
    }
    anyhow::ensure!(
        not_found.is_empty(),
        "{} svix-id(s) not in the inbox: give the svix-id of a delivery this mirror received (the Clerk \
         Dashboard lists them under Webhooks, Message Attempts); applied rows older than serve's \
         --inbox-retention are deleted",
        not_found.len()
    );
    Ok(())
}

async fn send(args: SendEventArgs) -> anyhow::Result<ExitCode> {
    let body = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("cannot read standard input")?;
        buf
    } else {
        tokio::fs::read(&args.file)
            .await
            .with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let secrets = WebhookSecrets::parse(&[args.secret.0.as_str()]).map_err(|e| {
        anyhow::anyhow!(
            "--secret / CLERK_WEBHOOK_SECRET: {e}; copy the endpoint's signing secret from the Clerk Dashboard \
             (Webhooks, the endpoint, Signing Secret)"
        )
    })?;
    let id = args.id.unwrap_or_else(send_event::new_message_id);
    let response = send_event::send(&args.url, &secrets, &id, &body).await?;
    println!(
        "{} {}",
        response.status.as_u16(),
        response.status.canonical_reason().unwrap_or("")
    );
    println!("{}", response.body);
    if response.status.is_success() {
        return Ok(ExitCode::SUCCESS);
    }
    let what_to_do = match response.status.as_u16() {
        401 => "sign with the secret the server verifies with: --secret / CLERK_WEBHOOK_SECRET as given to serve",
        413 => "the event is larger than the server accepts (serve's --max-body-bytes)",
        400 => "the server could not read the event: see its answer above",
        503 => "the server's database is unavailable: send it again later (the same --id is a redelivery)",
        404 | 405 => "is --url the server's webhook endpoint, http://<serve's --http-addr>/webhooks/clerk?",
        _ => "see the server's answer above",
    };
    eprintln!("error: {} answered {}: {what_to_do}", args.url, response.status);
    Ok(ExitCode::FAILURE)
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => info!("SIGINT received, shutting down"),
        () = term => info!("SIGTERM received, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_on_the_command_line_never_show_in_debug_output() {
        let secrets = [
            "postgres://mirror:pg-password-4711@db/mirror",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "reader-secret-0123456789",
            "admin-secret-0123456789ab",
            "sk_test_secret_key_0815",
        ];
        let serve = Cli::try_parse_from([
            "clerk-mirror",
            "serve",
            "--database-url",
            secrets[0],
            "--webhook-secret",
            secrets[1],
            "--reader-token",
            &format!("billing={}", secrets[2]),
            "--admin-token",
            &format!("ops={}", secrets[3]),
            "--reconcile-every",
            "6h",
            "--secret-key",
            secrets[4],
        ])
        .unwrap();
        let backfill = Cli::try_parse_from([
            "clerk-mirror",
            "backfill",
            "--secret-key",
            secrets[4],
            "--database-url",
            secrets[0],
        ])
        .unwrap();
        let send = Cli::try_parse_from(["clerk-mirror", "send-event", "--secret", secrets[1], "-"]).unwrap();
        for cli in [serve, backfill, send] {
            let debug = format!("{cli:?}");
            for secret in secrets.iter().chain(&["pg-password-4711"]) {
                assert!(!debug.contains(secret), "`{secret}` shows in {debug}");
            }
        }
    }

    #[test]
    fn serve_defaults_are_the_config_defaults() {
        let cli = Cli::try_parse_from(["clerk-mirror", "serve", "--webhook-secret", "whsec_x"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let config = Config::new(
            DatabaseConfig::Url(Redacted(String::new())),
            WebhookSecrets::parse::<&str>(&[]).unwrap(),
        );
        let applier = config.applier.clone().expect("an applier");
        assert_eq!(
            (args.http_addr, args.grpc_addr, args.admin_addr),
            (config.http_addr, config.grpc_addr, config.admin_addr)
        );
        assert_eq!(
            (args.rpc_timeout.0, args.shutdown_timeout.0),
            (config.rpc_timeout, config.shutdown_timeout)
        );
        assert_eq!(
            (
                args.max_watchers,
                args.max_concurrent_rpcs,
                args.max_message_bytes,
                args.max_body_bytes
            ),
            (
                config.watch.max_streams,
                config.max_concurrent_rpcs,
                config.max_message_bytes,
                config.max_body_bytes
            )
        );
        assert_eq!(
            (args.max_header_count, args.max_header_bytes),
            (config.http_limits.max_headers, config.http_limits.max_header_bytes)
        );
        assert_eq!(args.read_cache_bytes, config.read_cache_bytes);
        assert_eq!(
            (
                args.change_retention.0,
                args.inbox_retention.0,
                args.dead_letter_retention.0
            ),
            (
                applier.retention.changes,
                applier.retention.inbox,
                applier.retention.dead_letters
            )
        );
    }

    #[test]
    fn durations_show_in_the_largest_unit_that_divides_them() {
        for (secs, text) in [
            (30, "30s"),
            (90, "90s"),
            (900, "15m"),
            (7 * 86_400, "7d"),
            (36 * 3600, "36h"),
            (0, "0s"),
        ] {
            let shown = HumanDuration(Duration::from_secs(secs)).to_string();
            assert_eq!(shown, text);
            assert_eq!(parse_duration(&shown), Ok(Duration::from_secs(secs)));
        }
    }

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("7 weeks").is_err());
        assert!(parse_duration("h").is_err());
    }
}

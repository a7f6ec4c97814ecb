//! The command line: every command clerk-mirror has (`serve`, `migrate`, `send-event`, `watch`,
//! `backfill`, `reconcile`, `status`, `replay`, `bench`), parsed by clap and run on one runtime.
//! Every option also reads an environment variable (see README). The files: `args.rs` (what
//! every command shares: the database, the embedded default, secrets, signals), `serve.rs`,
//! `ops.rs` (migrate, backfill, reconcile, status, replay), `send_event.rs`, `watch.rs` and
//! `bench/`.

pub mod args;
pub mod bench;
pub mod connect;
mod destinations;
mod ops;
pub mod send_event;
mod serve;
pub mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::error;

pub use crate::config::parse_duration;
use crate::telemetry;
pub use args::{DatabaseArgs, EMBEDDED_DATABASE, OpenDatabase, open_database, shutdown_signal};
use ops::{BackfillArgs, ReconcileArgs, ReplayArgs, StatusArgs};
use send_event::SendEventArgs;
use serve::ServeArgs;

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
    Watch(watch::WatchArgs),
    /// Import every user, organization and membership from Clerk's Backend API (resumable).
    Backfill(BackfillArgs),
    /// Compare Clerk's state with the mirror and repair the drift; print the drift report.
    Reconcile(ReconcileArgs),
    /// Show where the mirror stands: log head and oldest cursor, inbox backlog, dead letters.
    Status(StatusArgs),
    /// Re-apply dead letters (after an upgrade) or given deliveries, through the inbox.
    Replay(ReplayArgs),
    /// Manage outbound webhook destinations on a running server: add, list, show, pause,
    /// resume, reset, rotate-secret, remove.
    Destinations(destinations::DestinationsArgs),
    /// Measure ingest, lookups, watch streams and backfill against same-run baselines.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Pretty,
    Json,
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
    let traces = match &cli.command {
        Command::Serve(args) => telemetry::Traces::from_settings(args.otlp_endpoint.as_deref()),
        _ => None,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            telemetry::init(logging);
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's channel lives on the runtime.
    let exporting = match runtime.block_on(async { telemetry::install(logging, traces.as_ref()) }) {
        Ok(exporting) => exporting,
        Err(e) => {
            telemetry::init(logging);
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    if let Some(exporting) = exporting {
        exporting.shutdown();
    }
    match result {
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
        Command::Serve(args) => serve::serve(*args).await.map(|()| ExitCode::SUCCESS),
        Command::Migrate(args) => ops::migrate(args).await.map(|()| ExitCode::SUCCESS),
        Command::SendEvent(args) => send_event::send_command(args).await,
        Command::Watch(args) => watch::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Backfill(args) => ops::backfill(args).await.map(|()| ExitCode::SUCCESS),
        Command::Reconcile(args) => ops::reconcile(args).await.map(|()| ExitCode::SUCCESS),
        Command::Status(args) => ops::status(args).await.map(|()| ExitCode::SUCCESS),
        Command::Replay(args) => ops::replay(args).await.map(|()| ExitCode::SUCCESS),
        Command::Destinations(args) => destinations::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Config, DatabaseConfig, HumanDuration, Redacted};
    use crate::ingest::verify::WebhookSecrets;

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

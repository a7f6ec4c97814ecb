//! What every command shares: the database (a URL, or the embedded cluster in a data
//! directory, started or attached to), secrets kept out of `Debug` output, the open-file limit
//! and the shutdown signals.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tracing::{error, info};

use crate::config::{DatabaseConfig, Redacted, default_data_dir};
use crate::db;
use crate::grpc::auth::Token;
use crate::pg::{Cluster, ClusterOptions};

/// The database the embedded cluster serves the mirror from.
pub const EMBEDDED_DATABASE: &str = "clerk_mirror";

/// Where the database is: a URL, or the embedded cluster in a data directory.
#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// PostgreSQL URL. Without it, an embedded cluster in --data-dir is used.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret)]
    pub(super) database_url: Option<Redacted<String>>,
    /// Where the embedded cluster lives (created on first start, kept across restarts).
    #[arg(long, env = "CLERK_MIRROR_DATA_DIR", default_value_os_t = default_data_dir())]
    pub(super) data_dir: PathBuf,
}

/// A secret, kept out of `Debug` output. Nothing is checked here: clap would quote a refused
/// value in its error; the command checks it and names only the flag.
pub fn secret(text: &str) -> Result<Redacted<String>, String> {
    Ok(Redacted(text.to_string()))
}

/// The tokens given for one role: the flags' (or variable's) values, then the file's.
pub(super) fn tokens(flag: &str, values: &[Redacted<String>], file: Option<&PathBuf>) -> anyhow::Result<Vec<Token>> {
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

/// Runs `f` on a pool of the database `args` name, stopping an embedded cluster it started.
pub(super) async fn with_pool<T>(
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

/// Raises the soft open-file limit to the hard one (many watch connections), where allowed.
pub fn raise_open_file_limit() {
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

/// Completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: call it before the server says `serving`, so that a SIGTERM
/// sent the moment it is ready is a clean shutdown rather than the default disposition's kill.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt()).ok();
    let terminate = signal(SignalKind::terminate()).ok();
    let received = |s: Option<tokio::signal::unix::Signal>| async move {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    async move {
        tokio::select! {
            () = received(interrupt) => info!("SIGINT received, shutting down"),
            () = received(terminate) => info!("SIGTERM received, shutting down"),
        }
    }
}

//! Where the database is, the connection pool and the embedded migrations, and what every layer
//! above names in the database: the NOTIFY channels, the applier's lock key, and "is the database
//! unavailable".

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::secrets::Redacted;

/// Where the database is.
#[derive(Clone, Debug)]
pub enum DatabaseConfig {
    /// An external PostgreSQL, by URL (kept out of `Debug` output: it may carry a password).
    Url(Redacted<String>),
    /// Connect options prepared by the caller (tests, the embedded cluster).
    Options(Box<sqlx::postgres::PgConnectOptions>),
}

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The connect options a configuration names. (A URL of another scheme is refused here: sqlx
/// would read `user:password@host` as a scheme and a database name, and errors would show it.)
/// Connections ask for warnings and errors only (see [`without_notices`]).
pub fn connect_options(database: &DatabaseConfig) -> Result<PgConnectOptions, sqlx::Error> {
    let options = match database {
        DatabaseConfig::Url(url) if !url.0.starts_with("postgres://") && !url.0.starts_with("postgresql://") => {
            return Err(sqlx::Error::Configuration(
                "it does not start with postgres:// or postgresql://".into(),
            ));
        }
        DatabaseConfig::Url(url) => url.0.parse()?,
        DatabaseConfig::Options(options) => (**options).clone(),
    };
    Ok(without_notices(options))
}

/// PostgreSQL's notices (`relation "_sqlx_migrations" already exists, skipping`) say nothing to
/// a user: the server sends only warnings and errors (`client_min_messages=warning`), unless the
/// URL's `options` set `client_min_messages` itself.
fn without_notices(options: PgConnectOptions) -> PgConnectOptions {
    if options.get_options().is_some_and(|o| o.contains("client_min_messages")) {
        options
    } else {
        options.options([("client_min_messages", "warning")])
    }
}

/// A pool of at most `max_connections` to `database`, each waited for at most `acquire_timeout`,
/// connected once so a wrong URL fails at start, not on the first webhook. Each connection is
/// checked (a round trip) before it is lent out.
pub async fn connect(
    database: &DatabaseConfig,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    pool_options(max_connections, acquire_timeout)
        .connect_with(session_options(database)?)
        .await
}

/// The API's read pool: as [`connect`], but a connection is checked before it is lent out only
/// when it has been idle for [`crate::lender::CHECK_AFTER_IDLE`], as lent connections are. Checking every one costs a round trip
/// per read, as much as the read itself (`bench lookup`, cache off: #24); one in use a moment
/// ago is alive but for a database restart in that moment, which fails the reads then in
/// flight anyway.
pub async fn connect_reads(
    database: &DatabaseConfig,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    pool_options(max_connections, acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= crate::lender::CHECK_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(session_options(database)?)
        .await
}

fn pool_options(max_connections: u32, acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
}

/// The options of every connection this server makes to `database`.
pub fn session_options(database: &DatabaseConfig) -> Result<PgConnectOptions, sqlx::Error> {
    // No JIT: every query here is a short, index-driven read or write, for which compiling with
    // LLVM costs more than it saves (and the applier's plans would always cross its thresholds).
    Ok(connect_options(database)?
        .application_name("clerk-mirror")
        .options([("jit", "off")]))
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// The channel every inbox insert notifies, in the inserting transaction: it wakes the applier.
pub const INBOX_CHANNEL: &str = "clerk_mirror_inbox";

/// The channel the applier notifies when a batch appended changes: it wakes every replica's hub.
pub const CHANGES_CHANNEL: &str = "clerk_mirror_changes";

/// Takes every notification `listener` has already been sent, without waiting for more: how
/// many, or `None` when its connection was lost (the next wait reconnects).
///
/// A listener that takes one notification per round while more arrive falls behind them, and
/// PostgreSQL's backend then blocks writing to its full socket in the middle of reading the
/// notification queue, holding a snapshot: no dead row anywhere can be cleaned up, and the
/// queue itself cannot advance, until it is read (#27: the applier's batches slowed five-fold
/// within a minute of sustained webhooks).
pub fn drain_notifications(listener: &mut sqlx::postgres::PgListener) -> Result<Option<usize>, sqlx::Error> {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut taken = 0;
    loop {
        // Polled once: ready only with what the socket already holds.
        let next = std::pin::pin!(listener.try_recv()).poll(&mut Context::from_waker(Waker::noop()));
        match next {
            Poll::Pending => return Ok(Some(taken)),
            Poll::Ready(Ok(Some(_))) => taken += 1,
            Poll::Ready(Ok(None)) => return Ok(None),
            Poll::Ready(Err(e)) => return Err(e),
        }
    }
}

/// The advisory lock key of the applier (`clkm` in ASCII): one holder per database writes.
pub const APPLIER_LOCK_KEY: i64 = 0x636c_6b6d;

/// Whether an error says the database is unreachable rather than that it refused something.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            // Class 08 (connection exception), 53 (insufficient resources), 57P (operator
            // intervention: shutdown, crash recovery), 40001/40P01 would be retryable too.
            let code = db.code().unwrap_or_default();
            code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code.starts_with("40")
        }
        _ => true,
    }
}

/// Whether this server is ready: its database (see [`check_ready`]) and its own background
/// tasks, one of which ending early marks the server not ready while it stops.
#[derive(Clone)]
pub struct Readiness {
    pool: PgPool,
    failure: std::sync::Arc<std::sync::OnceLock<String>>,
}

impl Readiness {
    /// Readiness that follows `pool`'s database.
    pub fn new(pool: PgPool) -> Readiness {
        Readiness {
            pool,
            failure: Default::default(),
        }
    }

    /// Marks the server not ready for good (the first reason is kept).
    pub fn fail(&self, reason: String) {
        let _ = self.failure.set(reason);
    }

    /// Why the server was marked not ready, if it was.
    pub fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
    }

    /// Ready, or why not.
    pub async fn check(&self) -> Result<(), String> {
        match self.failure() {
            Some(reason) => Err(reason),
            None => check_ready(&self.pool).await,
        }
    }
}

/// Ready means: the database answers within two seconds and every embedded migration is applied.
pub async fn check_ready(pool: &PgPool) -> Result<(), String> {
    let query =
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success AND version = ANY($1)")
            .bind(MIGRATOR.iter().map(|m| m.version).collect::<Vec<_>>())
            .fetch_one(pool);
    match tokio::time::timeout(Duration::from_secs(2), query).await {
        Err(_) => Err("the database did not answer within 2 s".into()),
        Ok(Err(e)) => Err(format!("database error: {e}")),
        Ok(Ok(n)) if n as usize == MIGRATOR.iter().count() => Ok(()),
        Ok(Ok(n)) => Err(format!("{n} of {} migrations applied", MIGRATOR.iter().count())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Redacted;

    fn options_of(url: &str) -> Option<String> {
        connect_options(&DatabaseConfig::Url(Redacted(url.into())))
            .unwrap()
            .get_options()
            .map(str::to_owned)
    }

    #[test]
    fn connections_ask_for_warnings_only_unless_the_url_says_otherwise() {
        assert_eq!(
            options_of("postgres://u@h/db").as_deref(),
            Some("-c client_min_messages=warning")
        );
        assert_eq!(
            options_of("postgres://u@h/db?options=-c%20client_min_messages%3Dnotice").as_deref(),
            Some("-c client_min_messages=notice")
        );
        let both = options_of("postgres://u@h/db?options=-c%20statement_timeout%3D5s").unwrap();
        assert!(
            both.contains("statement_timeout=5s") && both.contains("client_min_messages=warning"),
            "{both}"
        );
    }
}

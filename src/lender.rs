//! Connections lent to the API's point reads (gets, batch gets, lookups) when memory cannot
//! answer them: at most `max` open, each returned after its read without a round trip.
//!
//! sqlx's pool checks every connection when it comes back (a `Sync` and its `ReadyForQuery`,
//! for the sake of reads cut off half-way), so a one-statement read costs two round trips.
//! Here a connection goes back only after a read that ended, and one whose read ended early
//! (an error, or the request dropped mid-read) is closed instead, so what comes back is always
//! ready. One idle for [`CHECK_AFTER_IDLE`] is checked before it is lent again. `bench lookup`
//! measured the difference with the read cache off (BENCHMARKS.md, #24).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long a connection may sit idle before it is checked when lent.
pub const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Lends connections to one database.
pub struct Lender {
    options: PgConnectOptions,
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    permits: Semaphore,
    acquire_timeout: Duration,
    check_after_idle: Duration,
}

/// A lent connection. [`Lent::returned`] gives it back; dropped otherwise, it is closed.
pub struct Lent<'a> {
    connection: Option<PgConnection>,
    lender: &'a Lender,
    _permit: SemaphorePermit<'a>,
}

impl Lender {
    /// At most `max` connections with `options`, each waited for at most `acquire_timeout`.
    pub fn new(options: PgConnectOptions, max: usize, acquire_timeout: Duration) -> Lender {
        Lender {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max.max(1)),
            acquire_timeout,
            check_after_idle: CHECK_AFTER_IDLE,
        }
    }

    /// Checks a connection idle for `idle` or more before lending it (default
    /// [`CHECK_AFTER_IDLE`]; zero checks every one).
    pub fn check_after_idle(mut self, idle: Duration) -> Lender {
        self.check_after_idle = idle;
        self
    }

    /// A connection: an idle one (checked first if it idled long), else a new one. Fails as
    /// sqlx's pool does: `PoolTimedOut` when none is free in time, else the connect error.
    pub async fn lend(&self) -> Result<Lent<'_>, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        let permit = tokio::time::timeout_at(deadline, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let idle = self.idle.lock().expect("the idle list is never poisoned").pop();
            let Some((mut connection, since)) = idle else {
                break;
            };
            if since.elapsed() < self.check_after_idle {
                return Ok(self.lent(connection, permit));
            }
            match tokio::time::timeout_at(deadline, connection.ping()).await {
                Ok(Ok(())) => return Ok(self.lent(connection, permit)),
                // Gone (a restart, an idle timeout): dropped, and the next one tried.
                Ok(Err(_)) => continue,
                Err(_) => return Err(sqlx::Error::PoolTimedOut),
            }
        }
        let connection = tokio::time::timeout_at(deadline, self.options.connect())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(self.lent(connection, permit))
    }

    fn lent<'a>(&'a self, connection: PgConnection, permit: SemaphorePermit<'a>) -> Lent<'a> {
        Lent {
            connection: Some(connection),
            lender: self,
            _permit: permit,
        }
    }

    /// Connections idle now.
    pub fn idle(&self) -> usize {
        self.idle.lock().expect("the idle list is never poisoned").len()
    }
}

impl Lent<'_> {
    pub fn connection(&mut self) -> &mut PgConnection {
        self.connection.as_mut().expect("a lent connection is held until it is returned")
    }

    /// Gives the connection back, ready for the next read (its read ended).
    pub fn returned(mut self) {
        if let Some(c) = self.connection.take() {
            self.lender
                .idle
                .lock()
                .expect("the idle list is never poisoned")
                .push((c, Instant::now()));
        }
    }
}

//! The applier: the single writer of projections and the change log. One runs per database, held
//! by a PostgreSQL advisory lock on a connection of its own, and every batch runs on that same
//! connection, so losing the connection means losing the right to write (fencing).

pub mod batch;
pub mod event;
pub mod expiry;
pub mod retention;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::watch;
use tracing::{Instrument, debug, error, info, warn};

pub use batch::{BatchOutcome, apply_batch};

use crate::db::{APPLIER_LOCK_KEY, INBOX_CHANNEL, is_unavailable};
use crate::metrics::Metrics;

/// How the applier runs.
#[derive(Debug, Clone)]
pub struct ApplierConfig {
    /// Most inbox rows per transaction.
    pub batch_size: i64,
    /// How often it looks for work when no notification came (a missed NOTIFY costs this much).
    pub idle_poll: Duration,
    /// How long it waits before reconnecting after losing its connection.
    pub retry_delay: Duration,
    /// What is pruned, and how often the applier looks.
    pub retention: retention::Retention,
    pub prune_every: Duration,
    /// The longest the lock holder goes without looking for invitations past their expiry (it
    /// looks sooner when one is due, and after every batch that touched invitations).
    pub expiry_every: Duration,
}

impl Default for ApplierConfig {
    fn default() -> Self {
        ApplierConfig {
            batch_size: 500,
            idle_poll: Duration::from_secs(5),
            retry_delay: Duration::from_secs(1),
            retention: retention::Retention::default(),
            prune_every: Duration::from_secs(60),
            expiry_every: Duration::from_secs(60),
        }
    }
}

/// Runs the applier until `stop` turns true: waits for the lock, then applies pending inbox rows
/// as they arrive. Any replica may run it; only the lock holder writes.
pub async fn run(
    options: PgConnectOptions,
    config: ApplierConfig,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    leading: watch::Sender<bool>,
) {
    loop {
        let span = tracing::info_span!("applier");
        let led = lead(&options, &config, &mut stop, &metrics, &leading)
            .instrument(span)
            .await;
        leading.send_replace(false);
        match led {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e, "the applier lost its database connection; retrying");
                tokio::select! {
                    () = tokio::time::sleep(config.retry_delay) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

/// This machine's name (for telling replicas apart).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into our buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    if ok {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".into()
    }
}

/// Takes the lock, then applies until stopped. Returns Err when the connection fails.
async fn lead(
    options: &PgConnectOptions,
    config: &ApplierConfig,
    stop: &mut watch::Receiver<bool>,
    metrics: &Metrics,
    leading: &watch::Sender<bool>,
) -> Result<(), sqlx::Error> {
    let name = format!("clerk-mirror applier {}@{}", std::process::id(), hostname());
    let mut conn = options.clone().application_name(&name).connect().await?;
    // Server-side keepalives: a partitioned leader's session (and lock) ends within seconds.
    // Ignored on unix sockets.
    sqlx::query("SET tcp_keepalives_idle = 5").execute(&mut conn).await?;
    sqlx::query("SET tcp_keepalives_interval = 2")
        .execute(&mut conn)
        .await?;
    sqlx::query("SET tcp_keepalives_count = 3").execute(&mut conn).await?;
    // Every statement of the applier is keyed by ids (`= ANY($1)` over a batch's ids): an
    // index always serves it. With statistics from when a table was small (autovacuum analyzes
    // a fast-growing table only every minute or so) the planner picks sequential scans instead,
    // which made each batch scan the whole of `user_phone_numbers`, `memberships`, … and the
    // apply rate fall as they grew (measured by `bench backfill`: 1.0 M rows read for 48 k
    // objects). So this connection never plans a sequential scan where an index can do.
    sqlx::query("SET enable_seqscan = off").execute(&mut conn).await?;
    // A disabled plan's cost (1e10) is far above the JIT thresholds: without this, PostgreSQL
    // compiled `UPDATE log_head` (which has no index to use) with LLVM on every batch, ~50 ms each.
    sqlx::query("SET jit = off").execute(&mut conn).await?;
    sqlx::query("SET tcp_user_timeout = 10000").execute(&mut conn).await?;
    debug!("waiting for the applier lock");
    let lock = sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(APPLIER_LOCK_KEY)
        .execute(&mut conn);
    tokio::select! {
        r = lock => { r?; }
        // Dropping the connection abandons the wait.
        _ = stop.wait_for(|s| *s) => return Ok(()),
    }
    info!("holding the applier lock");
    leading.send_replace(true);

    // Its notifications on a connection of its own too, not one of the server's pool: the
    // applier runs on a runtime of its own, and a socket opened on it must not serve others.
    let listening = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&listening).await?;
    let mut next_prune = tokio::time::Instant::now();
    // Expiries that passed while no replica led are enqueued at once.
    let mut next_expiry = tokio::time::Instant::now();
    listener.listen(INBOX_CHANNEL).await?;
    loop {
        if *stop.borrow() {
            let _ = conn.close().await;
            return Ok(());
        }
        // What the notifications said is what this batch reads: take them all, every round, or
        // PostgreSQL blocks sending them while holding back every cleanup (see the function).
        crate::db::drain_notifications(&mut listener)?;
        // Catch up before waiting: rows may have arrived while no applier ran.
        let outcome = apply_once(&mut conn, config.batch_size).await?;
        record(metrics, &outcome);
        if outcome.rows.iter().any(|(t, status, _)| *status == "applied" && expiry::concerns(t)) {
            next_expiry = tokio::time::Instant::now();
        }
        if next_expiry <= tokio::time::Instant::now() {
            let swept = expiry::sweep(&mut conn).await?;
            next_expiry = tokio::time::Instant::now()
                + swept.next_in.map_or(config.expiry_every, |d| d.min(config.expiry_every));
            if swept.stored > 0 {
                // Apply them at once.
                continue;
            }
        }
        if next_prune <= tokio::time::Instant::now() {
            let pruned = retention::prune(&mut conn, &config.retention).await?;
            if pruned != retention::Pruned::default() {
                debug!(?pruned, "pruned");
                // A full batch: more may be due right away.
                continue;
            }
            next_prune = tokio::time::Instant::now() + config.prune_every;
        }
        if outcome.events as i64 >= config.batch_size {
            continue;
        }
        let wake = next_prune
            .min(next_expiry)
            .min(tokio::time::Instant::now() + config.idle_poll);
        tokio::select! {
            n = listener.try_recv() => { n?; }
            () = tokio::time::sleep_until(wake) => {}
            changed = stop.changed() => {
                // No one left to say stop: the server is gone.
                if changed.is_err() {
                    let _ = conn.close().await;
                    return Ok(());
                }
            }
        }
    }
}

fn record(metrics: &Metrics, outcome: &BatchOutcome) {
    let now = chrono::Utc::now();
    for (event_type, status, event_time) in &outcome.rows {
        metrics.events.with_label_values(&[event_type.as_str(), status]).inc();
        if *status == "applied"
            && let Some(t) = event_time
        {
            metrics
                .apply_lag
                .observe(((now - *t).num_milliseconds().max(0) as f64) / 1000.0);
        }
    }
    metrics.changes.inc_by(outcome.changes as u64);
    for (entity_type, value) in &outcome.unrecognised {
        let value: String = value.chars().take(64).collect();
        metrics
            .unrecognised_values
            .with_label_values(&[entity_type.as_str(), value.as_str()])
            .inc();
    }
}

/// Applies one batch; a batch that fails for a reason other than the connection is retried one
/// row at a time, and a row that cannot commit alone becomes a dead letter, so one bad event
/// never blocks the others.
pub async fn apply_once(conn: &mut PgConnection, batch_size: i64) -> Result<BatchOutcome, sqlx::Error> {
    match apply_batch(conn, batch_size).await {
        Ok(outcome) => {
            if outcome.events > 0 {
                debug!(?outcome, "batch applied");
            }
            Ok(outcome)
        }
        Err(e) if is_unavailable(&e) => Err(e),
        Err(e) => {
            warn!(error = %e, "batch failed; applying its rows one at a time");
            let mut total = BatchOutcome::default();
            for _ in 0..batch_size {
                match apply_batch(conn, 1).await {
                    Ok(o) if o.events == 0 => break,
                    Ok(o) => total.add(o),
                    Err(e) if is_unavailable(&e) => return Err(e),
                    Err(e) => {
                        let id = batch::dead_letter_first_pending(conn, &format!("cannot be applied: {e}")).await?;
                        error!(inbox_id = ?id, error = %e, "dead letter: the event could not be applied");
                        total.events += 1;
                        total.failed += 1;
                        total.rows.push(("unknown".into(), "failed", None));
                    }
                }
            }
            Ok(total)
        }
    }
}

/// Applies every pending row now, on `conn`, without the lock (tests and one-off tools whose
/// caller guarantees no applier runs).
pub async fn drain(conn: &mut PgConnection, batch_size: i64) -> Result<BatchOutcome, sqlx::Error> {
    let mut total = BatchOutcome::default();
    loop {
        let o = apply_once(conn, batch_size).await?;
        if o.events == 0 {
            return Ok(total);
        }
        total.add(o);
    }
}

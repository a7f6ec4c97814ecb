//! Filling the read cache and keeping it current: one REPEATABLE READ snapshot of the
//! projections and the log head, read page by page, then every change after that head from the
//! replica's feed of the log (`hub::Feed`: live, or from the database when behind), one applier
//! batch under one hold of the write lock, so a read never sees part of a batch. A cursor the
//! log no longer retains means a reload.

use std::time::Duration;

use sqlx::{FromRow, PgPool, Row};
use tokio::sync::watch;
use tracing::{info, warn};

use super::index::Cached;
use super::index::Parsed;
use super::{Index, ReadCache};
use crate::hub::{Batch, Feed, FeedError, Hub, Reader};
use crate::store::Kind;
use crate::store::kind::for_each_kind;

/// Rows read per page (the load) and changes per catch-up query.
const PAGE: i64 = 1000;

/// How long without a change before the cache compares its cursor with the log's head (changes
/// pruned before the hub read them are never published: only the log shows the gap).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How long to wait before retrying a load or a catch-up the database refused.
const RETRY: Duration = Duration::from_millis(500);

/// Why following stopped.
pub enum Ended {
    Stopped,
    /// The log no longer holds the changes after the cache's cursor, or a change did not apply.
    Reload(String),
}

/// Loads the cache (or starts from `initial`, an index loaded earlier) and keeps it current
/// until `stop`; reloads when it must.
pub async fn run(
    cache: ReadCache,
    pool: PgPool,
    hub: Hub,
    log_id: String,
    budget: usize,
    mut initial: Option<Index>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let started = std::time::Instant::now();
        let loaded = match initial.take() {
            Some(index) => Ok(index),
            None => tokio::select! {
                r = load(&pool, &log_id, budget) => r,
                _ = stop.wait_for(|s| *s) => return,
            },
        };
        let index = match loaded {
            Ok(index) => index,
            Err(e) => {
                warn!(error = %e, "the read cache cannot load; reads use PostgreSQL meanwhile");
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        let (users, organizations, memberships) = index.entries();
        info!(
            cursor = index.cursor(),
            users,
            organizations,
            memberships,
            bytes = index.bytes(),
            complete = index.complete(),
            ms = started.elapsed().as_millis() as u64,
            "the read cache is loaded"
        );
        // The feed reads the database from the snapshot's head before it goes live: nothing
        // committed after the snapshot is missed.
        let mut feed = hub.feed(
            index.cursor(),
            Reader {
                idle_check: Some(IDLE_CHECK),
                recent_read: Some(cache.shared.metrics.changes_from_recent.with_label_values(&["cache"])),
                ..Reader::everything(PAGE)
            },
        );
        cache.install(index);
        give_back_freed_memory();
        match follow(&cache, &hub, &mut feed, &mut stop).await {
            Ended::Stopped => return,
            Ended::Reload(why) => {
                warn!(%why, "the read cache reloads; reads use PostgreSQL meanwhile");
                cache.uninstall();
            }
        }
    }
}

/// Reads every projection in one REPEATABLE READ snapshot, with the log head of that snapshot.
pub async fn load(pool: &PgPool, log_id: &str, budget: usize) -> Result<Index, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let head: i64 = sqlx::query_scalar("SELECT head_seq FROM log_head")
        .fetch_one(&mut *tx)
        .await?;
    let mut index = Index::new(log_id, head, budget);
    for_each_kind!(K => {
        let mut after = String::new();
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT * FROM {} WHERE id > $1 ORDER BY id LIMIT $2",
                K::TABLE
            )))
            .bind(&after)
            .bind(PAGE)
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let cursor: i64 = row.try_get("update_cursor")?;
                Cached::put(&mut index, &K::from_row(row)?, cursor);
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == PAGE => after = last.try_get("id")?,
                _ => break,
            }
        }
    });
    tx.commit().await?;
    index.shrink();
    Ok(index)
}

/// Returns to the system the memory a load freed (its pages of rows, their JSON, the tables'
/// old sizes): the allocator keeps it otherwise, and the replica's RSS would stay at the load's
/// peak. The binary allocates with mimalloc (`main.rs`); the test binaries with glibc's.
fn give_back_freed_memory() {
    // SAFETY: mi_collect only frees and returns pages mimalloc no longer uses.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Applies the feed's batches, each under one hold of the write lock, until stopped or a reload.
async fn follow(cache: &ReadCache, hub: &Hub, feed: &mut Feed, stop: &mut watch::Receiver<bool>) -> Ended {
    loop {
        let next = tokio::select! {
            next = feed.next() => next,
            _ = stop.wait_for(|s| *s) => return Ended::Stopped,
        };
        match next {
            // A quiet spell with nothing new: only the gauges.
            Ok(batch) if batch.changes.is_empty() && batch.end <= cache.state().cursor => {
                cache.lag(hub.latest());
                cache.gauges();
            }
            Ok(batch) => {
                // Read outside the lock, so readers wait only for the index's own updates (and a
                // change that cannot be read leaves the index untouched).
                let parsed = match parse(&batch) {
                    Ok(parsed) => parsed,
                    Err(e) => return Ended::Reload(e.to_string()),
                };
                match cache.update(|index| apply(index, &parsed, batch.end)) {
                    Some(()) => {}
                    None => return Ended::Reload("the index is gone".into()),
                }
                cache.lag(hub.latest());
                cache.gauges();
            }
            Err(FeedError::Database(e)) => {
                // The index is still right at its cursor, only older: try again.
                warn!(error = %e, "the read cache cannot read the change log");
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    _ = stop.wait_for(|s| *s) => return Ended::Stopped,
                }
            }
            Err(e @ FeedError::CursorExpired { .. }) => return Ended::Reload(e.to_string()),
            Err(FeedError::Closed) => return Ended::Stopped,
        }
    }
}

/// A batch's changes, read into their records.
fn parse(batch: &Batch) -> Result<Vec<Parsed>, super::index::ApplyError> {
    batch.changes.iter().map(|c| Index::parse(c)).collect()
}

/// Applies one batch, parsed (the feed hands out each change once, in order, from the index's
/// cursor), and moves the cursor to its end.
fn apply(index: &mut Index, parsed: &[Parsed], end: i64) {
    for p in parsed {
        if p.seq > index.cursor() {
            index.apply(p);
        }
    }
    if end > index.cursor() {
        index.set_cursor(end);
    }
}

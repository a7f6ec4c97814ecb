//! Filling the read cache and keeping it current: one REPEATABLE READ snapshot of the
//! projections and the log head, read page by page, then every change after that head from the
//! replica's hub, in seq order. A hub that skipped (lagged broadcast) is caught up from the
//! database at the cache's own cursor; a cursor the log no longer retains means a reload.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{FromRow, PgPool, Row};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Index, ReadCache};
use crate::hub::Hub;
use crate::store::changes::{self, ChangeRow, Scope};
use crate::store::{MembershipRecord, OrganizationRecord, UserRecord};

/// Rows read per page (the load) and changes per catch-up query.
const PAGE: i64 = 1000;

/// Changes applied under one hold of the write lock.
const BATCH: usize = 256;

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
        // Subscribe before the snapshot: every change after its head is then either in the
        // snapshot or in the subscription (or, if the subscription skips, in the database).
        let mut live = hub.subscribe();
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
        cache.install(index);
        match follow(&cache, &pool, &hub, &mut live, &mut stop).await {
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
    for table in ["users", "organizations", "memberships"] {
        let mut after = String::new();
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT * FROM {table} WHERE id > $1 ORDER BY id LIMIT $2"
            )))
            .bind(&after)
            .bind(PAGE)
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let cursor: i64 = row.try_get("update_cursor")?;
                match table {
                    "users" => index.put_user(&UserRecord::from_row(row)?, cursor),
                    "organizations" => index.put_organization(&OrganizationRecord::from_row(row)?, cursor),
                    _ => index.put_membership(&MembershipRecord::from_row(row)?, cursor),
                }
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == PAGE => after = last.try_get("id")?,
                _ => break,
            }
        }
    }
    tx.commit().await?;
    Ok(index)
}

/// Applies the hub's changes after the cache's cursor, in order, until stopped or a reload.
async fn follow(
    cache: &ReadCache,
    pool: &PgPool,
    hub: &Hub,
    live: &mut tokio::sync::broadcast::Receiver<Arc<ChangeRow>>,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    loop {
        let first = tokio::select! {
            r = live.recv() => Some(r),
            () = tokio::time::sleep(IDLE_CHECK) => None,
            _ = stop.wait_for(|s| *s) => return Ended::Stopped,
        };
        let Some(first) = first else {
            let behind = match changes::bounds(pool).await {
                Ok((_, bounds)) => bounds.head > cache.state().cursor,
                Err(_) => false,
            };
            if behind && let Some(ended) = catch_up(cache, pool, stop).await {
                return ended;
            }
            cache.lag(hub.latest());
            cache.gauges();
            continue;
        };
        let mut batch = Vec::new();
        let mut lagged = false;
        match first {
            Ok(c) => batch.push(c),
            Err(RecvError::Lagged(_)) => lagged = true,
            Err(RecvError::Closed) => return Ended::Stopped,
        }
        while !lagged && batch.len() < BATCH {
            match live.try_recv() {
                Ok(c) => batch.push(c),
                Err(TryRecvError::Lagged(_)) => lagged = true,
                Err(_) => break,
            }
        }
        let mut rest: &[Arc<ChangeRow>] = &batch;
        loop {
            // A change after a gap (the hub skipped, or this receiver lagged): read the log.
            let applied = match cache.update(|index| apply_all(index, rest.iter().map(|c| &**c))) {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Ended::Reload(e.to_string()),
                None => return Ended::Reload("the index is gone".into()),
            };
            rest = &rest[applied..];
            if rest.is_empty() && !lagged {
                break;
            }
            if let Some(ended) = catch_up(cache, pool, stop).await {
                return ended;
            }
            if rest.is_empty() {
                break;
            }
            lagged = false;
        }
        cache.lag(hub.latest());
        cache.gauges();
    }
}

/// Applies the changes after the index's cursor (earlier ones are already in it) up to the
/// first gap (seqs are consecutive); how many changes it went through.
fn apply_all<'a>(
    index: &mut Index,
    changes: impl Iterator<Item = &'a ChangeRow>,
) -> Result<usize, super::index::ApplyError> {
    let mut n = 0;
    for c in changes {
        if c.seq > index.cursor() + 1 {
            break;
        }
        if c.seq == index.cursor() + 1 {
            index.apply(c)?;
        }
        n += 1;
    }
    Ok(n)
}

/// Reads the log from the cache's cursor until it has read everything there is (the hub's
/// buffer went past it). `Some` when following must end.
pub async fn catch_up(cache: &ReadCache, pool: &PgPool, stop: &mut watch::Receiver<bool>) -> Option<Ended> {
    let everything = Scope::default();
    loop {
        let cursor = cache.state().cursor;
        let page = tokio::select! {
            r = changes::page(pool, cursor, &everything, PAGE) => r,
            _ = stop.wait_for(|s| *s) => return Some(Ended::Stopped),
        };
        let (rows, bounds) = match page {
            Ok(page) => page,
            Err(e) => {
                // The index is still right at its cursor, only older: try again.
                warn!(error = %e, "the read cache cannot read the change log");
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => continue,
                    _ = stop.wait_for(|s| *s) => return Some(Ended::Stopped),
                }
            }
        };
        if cursor < bounds.oldest - 1 {
            return Some(Ended::Reload(format!(
                "the log no longer holds the changes after {cursor} (oldest retained: {})",
                bounds.oldest
            )));
        }
        let n = rows.len();
        // A page is applied in holds of at most BATCH changes, as from the hub: readers wait for
        // the write lock (blocking their threads) at most one batch long.
        for chunk in rows.chunks(BATCH) {
            match cache.update(|index| apply_all(index, chunk.iter())) {
                Some(Ok(applied)) if applied == chunk.len() => {}
                Some(Ok(_)) => return Some(Ended::Reload(format!("the log has a gap after {cursor}"))),
                Some(Err(e)) => return Some(Ended::Reload(e.to_string())),
                None => return Some(Ended::Reload("the index is gone".into())),
            }
        }
        if (n as i64) < PAGE {
            return None;
        }
    }
}

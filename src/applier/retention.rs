//! Retention: prunes changes older than the change retention, and inbox rows applied or skipped
//! longer ago than the inbox retention (dead letters: once replayed, or after 30 days), in small
//! batches, run by the applier (the one writer) between its batches. `log_head.oldest_seq` moves
//! with the pruned prefix, so cursors before it get `CURSOR_EXPIRED`, never a silent gap.

use std::time::Duration;

use sqlx::PgConnection;

/// How long things are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub changes: Duration,
    pub inbox: Duration,
    pub dead_letters: Duration,
    /// Most rows deleted per statement.
    pub batch: i64,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Retention {
            changes: Duration::from_secs(7 * DAY),
            inbox: Duration::from_secs(7 * DAY),
            dead_letters: Duration::from_secs(30 * DAY),
            batch: 1000,
        }
    }
}

/// What one pruning pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub changes: u64,
    pub inbox: u64,
}

/// One pass: at most one batch of changes and one of inbox rows, each in its own short statement.
pub async fn prune(conn: &mut PgConnection, retention: &Retention) -> Result<Pruned, sqlx::Error> {
    let changes_secs = retention.changes.as_secs_f64();
    // The pruned prefix ends at the first change still inside the window (or the head).
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let (oldest, head): (i64, i64) = sqlx::query_as("SELECT oldest_seq, head_seq FROM log_head FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    let keep_from: i64 = sqlx::query_scalar(
        "SELECT coalesce(
            (SELECT seq FROM changes WHERE commit_time >= now() - make_interval(secs => $1) ORDER BY seq LIMIT 1),
            $2 + 1)",
    )
    .bind(changes_secs)
    .bind(head)
    .fetch_one(&mut *tx)
    .await?;
    let until = keep_from.min(oldest + retention.batch);
    let mut pruned = Pruned::default();
    if until > oldest {
        pruned.changes = sqlx::query("DELETE FROM changes WHERE seq >= $1 AND seq < $2")
            .bind(oldest)
            .bind(until)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE log_head SET oldest_seq = $1")
            .bind(until)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    pruned.inbox = sqlx::query(
        "DELETE FROM inbox WHERE id IN (
            SELECT id FROM inbox
             WHERE (status IN ('applied', 'skipped') AND processed_at < now() - make_interval(secs => $1))
                OR (status = 'failed' AND processed_at < now() - make_interval(secs => $2))
             ORDER BY id LIMIT $3)",
    )
    .bind(retention.inbox.as_secs_f64())
    .bind(retention.dead_letters.as_secs_f64())
    .bind(retention.batch)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(pruned)
}

//! The operator's view of the database: sync status, the inbox without bodies, and replaying
//! dead letters as new inbox rows for the one applier. Used by `AdminService` and by the
//! `status` and `replay` commands alike.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::applier::APPLIER_LOCK_KEY;
use crate::ingest::writer::INBOX_CHANNEL;

/// Where the mirror stands.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SyncStatus {
    pub log_id: String,
    pub head: i64,
    pub oldest: i64,
    pub pending: i64,
    pub dead_letters: i64,
    pub last_received: Option<DateTime<Utc>>,
    pub last_applied: Option<DateTime<Utc>>,
    /// The lock holder's connection name, `clerk-mirror applier <pid>@<host>`.
    pub applier: Option<String>,
}

pub async fn sync_status(pool: &PgPool) -> Result<SyncStatus, sqlx::Error> {
    sqlx::query_as(
        "SELECT h.log_id, h.head_seq AS head, h.oldest_seq AS oldest,
                (SELECT count(*) FROM inbox WHERE status = 'pending') AS pending,
                (SELECT count(*) FROM inbox WHERE status = 'failed') AS dead_letters,
                (SELECT max(received_at) FROM inbox) AS last_received,
                (SELECT max(processed_at) FROM inbox WHERE processed_at IS NOT NULL) AS last_applied,
                (SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                  WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1 LIMIT 1) AS applier
           FROM log_head h",
    )
    .bind(APPLIER_LOCK_KEY)
    .fetch_one(pool)
    .await
}

/// An inbox row without its body.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct InboxEntry {
    pub id: i64,
    pub source: String,
    pub event_key: String,
    pub event_type: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub status: String,
    pub error: Option<String>,
    pub attempts: i32,
    pub processed_at: Option<DateTime<Utc>>,
}

/// Inbox rows newest first, with an id below `before` (0: from the newest).
pub async fn list_inbox(
    pool: &PgPool,
    status: Option<&str>,
    event_type: Option<&str>,
    before: i64,
    limit: i64,
) -> Result<Vec<InboxEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, source, event_key, event_type, event_time, received_at, status, error, attempts, processed_at
           FROM inbox
          WHERE ($1 = 0 OR id < $1) AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR event_type = $3)
          ORDER BY id DESC LIMIT $4",
    )
    .bind(before)
    .bind(status)
    .bind(event_type)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// What to replay.
#[derive(Debug, Clone)]
pub enum Replay {
    AllDeadLetters,
    SvixIds(Vec<String>),
}

/// Enqueues the selected rows again as `replay` rows (the applier applies them with the usual
/// rules); replayed dead letters become `replayed`. Returns how many, and the svix-ids not held.
pub async fn replay(pool: &PgPool, what: &Replay) -> Result<(i64, Vec<String>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (ids, not_found): (Vec<i64>, Vec<String>) = match what {
        Replay::AllDeadLetters => (
            sqlx::query_scalar("SELECT id FROM inbox WHERE status = 'failed' ORDER BY id FOR UPDATE")
                .fetch_all(&mut *tx)
                .await?,
            Vec::new(),
        ),
        Replay::SvixIds(keys) => {
            let found: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, event_key FROM inbox WHERE source = 'webhook' AND event_key = ANY($1) ORDER BY id FOR UPDATE",
            )
            .bind(keys)
            .fetch_all(&mut *tx)
            .await?;
            let missing = keys
                .iter()
                .filter(|k| !found.iter().any(|(_, f)| f == *k))
                .cloned()
                .collect();
            (found.into_iter().map(|(id, _)| id).collect(), missing)
        }
    };
    let replayed = sqlx::query(
        "INSERT INTO inbox (source, event_key, event_type, event_time, instance_id, body, body_redacted)
         SELECT 'replay', source || ':' || event_key || '@' || (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
                event_type, event_time, instance_id, body, body_redacted
           FROM inbox WHERE id = ANY($1) AND status <> 'pending'
         ON CONFLICT (source, event_key) DO NOTHING",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;
    sqlx::query("UPDATE inbox SET status = 'replayed' WHERE id = ANY($1) AND status = 'failed'")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    if replayed > 0 {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(INBOX_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((replayed, not_found))
}

//! The operator's view of the inbox: rows newest first, filtered, never with their bodies.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

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

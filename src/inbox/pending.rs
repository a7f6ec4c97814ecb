//! What the applier reads: the pending rows, oldest first, locked for its transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// The inbox columns the applier reads.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxEvent {
    pub id: i64,
    pub source: String,
    pub event_key: String,
    pub event_type: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub body: Option<Vec<u8>>,
    /// The webhook's `traceparent`, when it was traced.
    pub trace_context: Option<String>,
}

impl InboxEvent {
    /// What a change made by this row names as its source: `webhook:<svix-id>` and so on.
    pub fn change_source(&self) -> String {
        format!("{}:{}", self.source, self.event_key)
    }
}

/// Up to `limit` pending rows in arrival order, locked `FOR UPDATE` in the transaction on `conn`.
pub async fn pending(conn: &mut PgConnection, limit: i64) -> Result<Vec<InboxEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, source, event_key, event_type, event_time, received_at, body, trace_context
           FROM inbox WHERE status = 'pending' ORDER BY id LIMIT $1 FOR UPDATE",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

//! The operator's view of where the mirror stands: the change log's head and oldest position,
//! the inbox's backlog, and who holds the applier lock. Used by `AdminService` and the `status`
//! command alike. (Listing and replaying the inbox is the inbox's: `crate::inbox`.)

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::db::APPLIER_LOCK_KEY;

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
                  WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1
                    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  LIMIT 1) AS applier
           FROM log_head h",
    )
    .bind(APPLIER_LOCK_KEY)
    .fetch_one(pool)
    .await
}

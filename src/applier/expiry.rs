//! Invitation expiry, which Clerk never sends: the applier-lock holder looks for pending
//! invitations whose `expires_at` has passed (by the database's clock) and enqueues, for each, an
//! inbox row of source `clock` and type `store::invitations::EXPIRED` naming the stored version
//! it was computed from (its basis). The applier applies it like any row: only over exactly that
//! version (docs/inbox.md, "Ranking").
//!
//! Once across replicas and failover: the row's key is the invitation, its expiry and its basis
//! (`expiry:{id}:{expires_ms}:{updated_ms}:{event_ms}:{basis key}`), and a key already stored is
//! skipped, so a second replica, or a new leader repeating the sweep its predecessor made before
//! dying, stores nothing new. A newer word of Clerk's changes the basis: if the invitation is
//! still pending and past its expiry, the next sweep expires it again from the new basis.

use std::time::Duration;

use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::inbox::{InboxRow, Source, envelope, insert_in};
use crate::store::invitations::{EXPIRED, PENDING};

/// Most rows one sweep enqueues (the rest follow in the next sweep, at once: see `Swept::next_in`).
const SWEEP_LIMIT: i64 = 500;

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    /// Expiry rows newly stored.
    pub stored: usize,
    /// How long until the next pending invitation expires, if one will (zero when this sweep
    /// was full and more may be due already).
    pub next_in: Option<Duration>,
}

#[derive(sqlx::FromRow)]
struct Due {
    id: String,
    organization_id: Option<String>,
    expires_ms: i64,
    version_updated_ms: i64,
    version_event_ms: i64,
    version_key: String,
}

impl Due {
    fn row(&self) -> InboxRow {
        let body = json!({
            "object": "event", "type": EXPIRED, "timestamp": self.expires_ms,
            "data": {
                "id": self.id, "organization_id": self.organization_id, "expires_at": self.expires_ms,
                "basis": {"updated_ms": self.version_updated_ms, "event_ms": self.version_event_ms, "key": self.version_key},
            },
        });
        InboxRow {
            source: Source::Clock,
            event_key: format!(
                "expiry:{}:{}:{}:{}:{}",
                self.id, self.expires_ms, self.version_updated_ms, self.version_event_ms, self.version_key
            ),
            event_type: Some(EXPIRED.into()),
            event_time: envelope::event_time(&json!(self.expires_ms)),
            instance_id: None,
            body: Some(serde_json::to_vec(&body).expect("serialises").into()),
        }
    }
}

/// Enqueues the expiry of every pending invitation whose `expires_at` has passed (up to
/// [`SWEEP_LIMIT`]), in one transaction on `conn` (the applier's: only the lock holder sweeps),
/// and says when the next one is due.
pub async fn sweep(conn: &mut PgConnection) -> Result<Swept, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let due: Vec<Due> = sqlx::query_as(
        "SELECT id, organization_id, (extract(epoch FROM expires_at) * 1000)::bigint AS expires_ms,
                version_updated_ms, version_event_ms, version_key
           FROM invitations
          WHERE status = $1 AND deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= now()
            AND clerk_status = $1 AND version_key IS NOT NULL
            AND version_updated_ms IS NOT NULL AND version_event_ms IS NOT NULL
          ORDER BY expires_at, id LIMIT $2",
    )
    .bind(PENDING)
    .bind(SWEEP_LIMIT)
    .fetch_all(&mut *tx)
    .await?;
    let rows: Vec<InboxRow> = due.iter().map(Due::row).collect();
    let refs: Vec<&InboxRow> = rows.iter().collect();
    let stored = if refs.is_empty() { 0 } else { insert_in(&mut tx, &refs).await?.len() };
    let next_in: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM min(expires_at) - now())::float8 FROM invitations
          WHERE status = $1 AND deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at > now()",
    )
    .bind(PENDING)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if stored > 0 {
        tracing::info!(stored, "invitations past their expiry enqueued as expired");
    }
    // A full sweep may have left more that are already due: at once, then.
    let next_in = match due.len() as i64 >= SWEEP_LIMIT {
        true => Some(Duration::ZERO),
        false => next_in.map(|s| Duration::from_secs_f64(s.max(0.0))),
    };
    Ok(Swept { stored, next_in })
}

/// Whether a batch that applied rows of `event_type` may have made an expiry due sooner (a new
/// or changed invitation; an organization's delete only ends invitations, and the mirror's own
/// rows were produced from what the sweep already saw).
pub fn concerns(event_type: &str) -> bool {
    event_type.starts_with("organizationInvitation.")
}

//! States that follow from time passing while Clerk says nothing: an invitation's expiry (Clerk
//! never sends it) and a canceled subscription item's period end (Clerk's `ended` may come
//! late). The applier-lock holder looks for pending invitations whose `expires_at` and canceled
//! items whose `period_end` has passed (by the database's clock) and enqueues, for each, an inbox
//! row of source `clock` (type `store::invitations::EXPIRED`, `store::billing::PERIOD_ENDED`)
//! naming the stored version it was computed from (its basis). The applier applies it like any
//! row: only over exactly that version (docs/inbox.md, "Ranking").
//!
//! Once across replicas and failover: the row's key is the entity, its deadline and its basis
//! (`expiry:{id}:{expires_ms}:{updated_ms}:{event_ms}:{basis key}`, `period_end:…` alike), and a
//! key already stored is
//! skipped, so a second replica, or a new leader repeating the sweep its predecessor made before
//! dying, stores nothing new. A newer word of Clerk's changes the basis: if the invitation is
//! still pending and past its expiry (the item still canceled past its period end), the next
//! sweep ends it again from the new basis.

use std::time::Duration;

use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::inbox::{InboxRow, Source, envelope, insert_in};
use crate::store::billing::PERIOD_ENDED;
use crate::store::invitations::{EXPIRED, PENDING};

/// Most rows one sweep enqueues per kind (the rest follow in the next sweep, at once: see
/// `Swept::next_in`).
const SWEEP_LIMIT: i64 = 500;

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    /// Rows newly stored.
    pub stored: usize,
    /// How long until the next deadline passes, if one will (zero when this sweep was full and
    /// more may be due already).
    pub next_in: Option<Duration>,
}

/// A state that follows from a time passing while Clerk says nothing: which rows it concerns,
/// and the row the mirror enqueues for each.
struct Deadline {
    /// The projection.
    table: &'static str,
    /// The status (Clerk's and the mirror's alike) of the rows it ends.
    status: &'static str,
    /// The column holding the time, also the field of the row's `data` naming it.
    column: &'static str,
    /// The organization column, for the row's `data`.
    organization: &'static str,
    /// The row's type (a `Kind::DERIVED_BY` of the kind).
    event_type: &'static str,
    /// The first part of the row's key.
    key: &'static str,
    /// What the log says was enqueued.
    what: &'static str,
}

const DEADLINES: [Deadline; 2] = [
    Deadline {
        table: "invitations",
        status: PENDING,
        column: "expires_at",
        organization: "organization_id",
        event_type: EXPIRED,
        key: "expiry",
        what: "invitations past their expiry enqueued as expired",
    },
    Deadline {
        table: "subscription_items",
        status: "canceled",
        column: "period_end",
        organization: "payer_organization_id",
        event_type: PERIOD_ENDED,
        key: "period_end",
        what: "canceled subscription items past their period end enqueued as ended",
    },
];

#[derive(sqlx::FromRow)]
struct Due {
    id: String,
    organization_id: Option<String>,
    at_ms: i64,
    version_updated_ms: i64,
    version_event_ms: i64,
    version_key: String,
}

impl Due {
    fn row(&self, d: &Deadline) -> InboxRow {
        let body = json!({
            "object": "event", "type": d.event_type, "timestamp": self.at_ms,
            "data": {
                "id": self.id, "organization_id": self.organization_id, d.column: self.at_ms,
                "basis": {"updated_ms": self.version_updated_ms, "event_ms": self.version_event_ms, "key": self.version_key},
            },
        });
        InboxRow {
            source: Source::Clock,
            event_key: format!(
                "{}:{}:{}:{}:{}:{}",
                d.key, self.id, self.at_ms, self.version_updated_ms, self.version_event_ms, self.version_key
            ),
            event_type: Some(d.event_type.into()),
            event_time: envelope::event_time(&json!(self.at_ms)),
            instance_id: None,
            body: Some(serde_json::to_vec(&body).expect("serialises").into()),
            trace_context: None,
        }
    }
}

/// Enqueues, for every entity whose deadline has passed (an invitation's expiry, a canceled
/// item's period end; up to [`SWEEP_LIMIT`] of each), the row of the state that follows, in one
/// transaction on `conn` (the applier's: only the lock holder sweeps), and says when the next
/// deadline passes.
pub async fn sweep(conn: &mut PgConnection) -> Result<Swept, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let mut swept = Swept::default();
    for d in &DEADLINES {
        let (table, column, organization) = (d.table, d.column, d.organization);
        let due: Vec<Due> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, {organization} AS organization_id, (extract(epoch FROM {column}) * 1000)::bigint AS at_ms,
                    version_updated_ms, version_event_ms, version_key
               FROM {table}
              WHERE status = $1 AND deleted_at IS NULL AND {column} IS NOT NULL AND {column} <= now()
                AND clerk_status = $1 AND version_key IS NOT NULL
                AND version_updated_ms IS NOT NULL AND version_event_ms IS NOT NULL
              ORDER BY {column}, id LIMIT $2"
        )))
        .bind(d.status)
        .bind(SWEEP_LIMIT)
        .fetch_all(&mut *tx)
        .await?;
        let rows: Vec<InboxRow> = due.iter().map(|due| due.row(d)).collect();
        let refs: Vec<&InboxRow> = rows.iter().collect();
        let stored = if refs.is_empty() { 0 } else { insert_in(&mut tx, &refs).await?.len() };
        let next_in: Option<f64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT extract(epoch FROM min({column}) - now())::float8 FROM {table}
              WHERE status = $1 AND deleted_at IS NULL AND {column} IS NOT NULL AND {column} > now()"
        )))
        .bind(d.status)
        .fetch_one(&mut *tx)
        .await?;
        if stored > 0 {
            tracing::info!(stored, "{}", d.what);
        }
        // A full sweep may have left more that are already due: at once, then.
        let next_in = match due.len() as i64 >= SWEEP_LIMIT {
            true => Some(Duration::ZERO),
            false => next_in.map(|s| Duration::from_secs_f64(s.max(0.0))),
        };
        swept.stored += stored;
        swept.next_in = match (swept.next_in, next_in) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    tx.commit().await?;
    Ok(swept)
}

/// Whether a batch that applied rows of `event_type` may have made a deadline due sooner (a new
/// or changed invitation or subscription item; an organization's delete only ends invitations,
/// and the mirror's own rows were produced from what the sweep already saw).
pub fn concerns(event_type: &str) -> bool {
    ["organizationInvitation.", "subscriptionItem.", "subscription."]
        .iter()
        .any(|p| event_type.starts_with(p))
}

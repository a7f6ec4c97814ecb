//! Clerk Billing's plans, read from the Backend API's plan list (`GET /billing/plans`, paged):
//! Clerk sends no plan webhooks, and a plan's features live only in that list. Each listed plan
//! that differs from the stored one (or is not stored) becomes an inbox row of the mirror's own
//! source (`api`, type [`LISTED`]), which the one applier applies like any other row.
//!
//! When: while this replica holds the applier lock, at once and then every `every` (about a
//! minute: a feature edited in the Dashboard is otherwise invisible), on every reconcile, and
//! promptly when the applier writes an item naming a plan the mirror does not know. The applier
//! says so on [`WANTED_CHANNEL`] (one notification per unknown plan, at its commit), and the
//! lister coalesces: one listing answers every plan asked for while it waited
//! ([`Wanted`]), and a plan asked for again before the next periodic listing (Clerk did not list
//! it) asks for nothing more.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::{BackfillError, ClerkApi, ClerkApiError, Doing, NOT_A_LIST, items};
use crate::inbox::{self, InboxRow, Source, envelope};
use crate::store::plans::{LISTED, WANTED_CHANNEL};
use crate::store::records;


/// Plans per page.
const PAGE: usize = 100;

/// How often the plans are listed by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);

/// How long the lister waits after the first ask, gathering the others of the same burst, before
/// it lists.
const GATHER: Duration = Duration::from_millis(200);

/// What one listing did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The ids of the plans listed.
    pub listed: Vec<String>,
    /// Listed plans the mirror did not hold (each enqueued).
    pub missing: Vec<String>,
    /// Listed plans the mirror held otherwise (each enqueued).
    pub stale: Vec<String>,
    /// Rows newly stored in the inbox.
    pub enqueued: usize,
}

/// Every plan of the instance, page by page.
pub async fn list(api: &ClerkApi) -> Result<Vec<Value>, ClerkApiError> {
    let mut all = Vec::new();
    loop {
        let path = format!("/billing/plans?paginated=true&limit={PAGE}&offset={}", all.len());
        let page = api.get(&path).await?;
        let total = page.get("total_count").and_then(Value::as_u64);
        let plans = items(page).ok_or_else(|| api.unexpected(&path, NOT_A_LIST))?;
        let n = plans.len();
        all.extend(plans);
        if n < PAGE || total.is_some_and(|t| all.len() as u64 >= t) {
            return Ok(all);
        }
    }
}

/// Lists the plans and enqueues a row for each one that is new or differs from the stored one.
pub async fn refresh(pool: &PgPool, api: &ClerkApi) -> Result<Listing, BackfillError> {
    let plans = list(api).await?;
    enqueue_changed(pool, plans).await
}

/// Enqueues a row (source `api`, versioned by now) for each of `plans` that is not stored as it
/// is listed.
pub async fn enqueue_changed(pool: &PgPool, plans: Vec<Value>) -> Result<Listing, BackfillError> {
    let listed_ms = chrono::Utc::now().timestamp_millis();
    let plans: Vec<(String, Value)> = plans
        .into_iter()
        .map(records::clean)
        .filter_map(|p| Some((p.get("id")?.as_str().filter(|id| records::is_valid_id(id))?.to_string(), p)))
        .collect();
    let ids: Vec<&str> = plans.iter().map(|(id, _)| id.as_str()).collect();
    let stored: Vec<(String, Option<Value>)> = sqlx::query_as("SELECT id, data FROM plans WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(pool)
        .await
        .doing("cannot read the stored plans")?;
    let (mut missing, mut stale, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for (id, plan) in &plans {
        match stored.iter().find(|(s, _)| s == id) {
            Some((_, data)) if data.as_ref() == Some(plan) => continue,
            Some(_) => stale.push(id.clone()),
            None => missing.push(id.clone()),
        }
        rows.push(row(id, plan, listed_ms));
    }
    let refs: Vec<&InboxRow> = rows.iter().collect();
    let enqueued = if refs.is_empty() {
        0
    } else {
        inbox::insert(pool, &refs)
            .await
            .doing("cannot write the listed plans to the inbox")?
            .len()
    };
    Ok(Listing {
        listed: plans.into_iter().map(|(id, _)| id).collect(),
        missing,
        stale,
        enqueued,
    })
}

/// The inbox row of one listed plan, listed at `listed_ms`.
fn row(id: &str, plan: &Value, listed_ms: i64) -> InboxRow {
    let body = json!({"object": "event", "type": LISTED, "timestamp": listed_ms, "data": plan});
    InboxRow {
        source: Source::Api,
        event_key: format!("plans:{id}@{listed_ms}"),
        event_type: Some(LISTED.into()),
        event_time: envelope::event_time(&json!(listed_ms)),
        instance_id: None,
        body: Some(serde_json::to_vec(&body).expect("serialises").into()),
        trace_context: None,
    }
}

/// Which asks for a plan a listing is still owed: a plan the last listing showed, or one already
/// asked for since the last periodic listing, asks for nothing.
#[derive(Debug, Default)]
pub struct Wanted {
    listed: HashSet<String>,
    asked: HashSet<String>,
}

impl Wanted {
    /// Whether an ask for `plan` calls for a listing (and remembers it).
    pub fn ask(&mut self, plan: &str) -> bool {
        !self.listed.contains(plan) && self.asked.insert(plan.to_string())
    }

    /// A listing showed `listed`; `periodic`: a listing on the interval, after which every plan
    /// may be asked for once again.
    pub fn listed(&mut self, listed: &[String], periodic: bool) {
        self.listed = listed.iter().cloned().collect();
        if periodic {
            self.asked.clear();
        }
    }
}

/// What woke the lister.
enum Woken {
    /// The periodic listing is due.
    Due,
    /// The applier asked for this plan.
    Asked(String),
    /// The listener failed.
    Lost(sqlx::Error),
    /// Whether this replica leads changed.
    Leading,
    Stop,
}

/// While this replica holds the applier lock (`leading`), until `stop`: the plans at once, then
/// every `every`, and soon after the applier asks for one it does not know (coalesced).
pub async fn periodically(
    pool: PgPool,
    api: ClerkApi,
    every: Duration,
    mut leading: tokio::sync::watch::Receiver<bool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wanted = Wanted::default();
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen(WANTED_CHANNEL).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for unknown plans; plans are listed every {every:?} only");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for unknown plans; plans are listed every {every:?} only");
                None
            }
        };
        let mut next = tokio::time::Instant::now();
        while *leading.borrow() {
            let woken = tokio::select! {
                () = tokio::time::sleep_until(next) => Woken::Due,
                n = async { listener.as_mut().expect("guarded").recv().await }, if listener.is_some() => match n {
                    Ok(n) => Woken::Asked(n.payload().to_string()),
                    Err(e) => Woken::Lost(e),
                },
                _ = leading.changed() => Woken::Leading,
                _ = stop.wait_for(|s| *s) => Woken::Stop,
            };
            let asked = match woken {
                Woken::Due => false,
                Woken::Leading => continue,
                Woken::Stop => return,
                Woken::Lost(e) => {
                    tracing::warn!(error = %e, "lost the listener for unknown plans; listening again");
                    break;
                }
                Woken::Asked(plan) if !wanted.ask(&plan) => continue,
                Woken::Asked(_) => {
                    // The rest of the burst, in one listing.
                    let listening = listener.as_mut().expect("asked through it");
                    let gathered = tokio::time::Instant::now() + GATHER;
                    while let Ok(Ok(n)) = tokio::time::timeout_at(gathered, listening.recv()).await {
                        wanted.ask(n.payload());
                    }
                    true
                }
            };
            let refreshed = tokio::select! {
                r = refresh(&pool, &api) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match refreshed {
                Ok(listing) => {
                    tracing::info!(plans = listing.listed.len(), enqueued = listing.enqueued, asked, "plans listed");
                    wanted.listed(&listing.listed, !asked);
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "cannot list the plans from the Backend API; entitlements answer from the plans the mirror holds \
                     (retried in {every:?})"
                ),
            }
            if !asked {
                next = tokio::time::Instant::now() + every;
            }
        }
        drop(listener);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_asked_for_once_until_the_next_periodic_listing_and_never_when_just_listed() {
        let mut w = Wanted::default();
        assert!(w.ask("cplan_a"));
        assert!(!w.ask("cplan_a"), "asked for already");
        assert!(w.ask("cplan_b"));
        // The asked-for listing showed cplan_a only: cplan_b is not asked for again.
        w.listed(&["cplan_a".into()], false);
        assert!(!w.ask("cplan_a") && !w.ask("cplan_b"));
        // After the periodic one, cplan_b (still unknown) may be asked for once more.
        w.listed(&["cplan_a".into()], true);
        assert!(!w.ask("cplan_a"));
        assert!(w.ask("cplan_b"));
    }
}

//! Reconcile: compares Clerk's state (listed through the Backend API) with the mirror and repairs
//! drift through the inbox (source `reconcile`), so the one applier applies every repair with the
//! usual rules: missing entities, stale ones (Clerk's `updated_at` newer), and entities alive in
//! the mirror that Clerk no longer lists — tombstoned only after a direct look-up answers 404,
//! because offset paging skips rows when others are deleted mid-scan (one that cannot be looked up, or
//! of a kind no event deletes, is left alone and reported as unconfirmed). A run that would tombstone
//! more than max(10, 1 %) refuses unless allowed. The report is printed, kept, and exposed.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgPool, Row};

use super::resource::Lookup;
use super::{
    ACCESS_RESOURCES, BackfillError, ClerkApi, ClerkApiError, Doing, NOT_A_LIST, PAGE, RESOURCES, Resource, check_instance,
    items,
};
use crate::inbox::{self, InboxRow, Source, envelope};

/// What one entity type's drift was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// In Clerk, not in the mirror.
    pub missing: Vec<String>,
    /// Newer in Clerk than in the mirror.
    pub stale: Vec<String>,
    /// Alive in the mirror, gone from Clerk (confirmed by a 404).
    pub deleted: Vec<String>,
    /// Alive in the mirror, not listed by Clerk, but found by a direct look-up (paging skipped it).
    pub unlisted_but_present: Vec<String>,
    /// Alive in the mirror, not listed by Clerk, and not tombstoned: no look-up can say whether
    /// Clerk still has it (a parent the look-up needs is unknown), or no event deletes its kind.
    /// Left as it is, and absent from the report when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed: Vec<String>,
}

/// A reconcile run's drift report, per entity type (`users`, `organizations`,
/// `organization_memberships`, `organization_permissions`, `organization_roles`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub started_at: String,
    pub finished_at: String,
    pub drift: BTreeMap<String, Drift>,
}

impl Report {
    /// One line per entity type and kind; the ids too with `verbose`.
    pub fn render(&self, verbose: bool) -> String {
        let mut out = format!("reconcile {} → {}\n", self.started_at, self.finished_at);
        for (entity, d) in &self.drift {
            let unconfirmed = Some(("unconfirmed", &d.unconfirmed)).filter(|(_, ids)| !ids.is_empty());
            for (kind, ids) in [
                ("missing", &d.missing),
                ("stale", &d.stale),
                ("deleted", &d.deleted),
                ("unlisted but present", &d.unlisted_but_present),
            ]
            .into_iter()
            .chain(unconfirmed)
            {
                out.push_str(&format!("  {entity:<26} {kind:<22} {}\n", ids.len()));
                if verbose {
                    for id in ids {
                        out.push_str(&format!("      {id}\n"));
                    }
                }
            }
        }
        out
    }
}

/// Options of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Allow tombstoning more than max(10, 1 %) of an entity type.
    pub allow_mass_delete: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Backfill(#[from] BackfillError),
    #[error(
        "reconcile would delete {count} {entity} of {alive} (more than max(10, 1 %)); nothing was changed. \
         If Clerk really lost them, run again with --allow-mass-delete"
    )]
    MassDelete { entity: String, count: usize, alive: usize },
}

impl From<ClerkApiError> for ReconcileError {
    fn from(e: ClerkApiError) -> Self {
        ReconcileError::Backfill(e.into())
    }
}

/// The mirror's view of one entity: alive or not, Clerk's `updated_at` it holds (ms), and its
/// parents (one per column of the kind's `PARENTS`).
struct Held {
    alive: bool,
    updated_ms: i64,
    parents: Vec<Option<String>>,
}

async fn held(pool: &PgPool, resource: &Resource) -> Result<HashMap<String, Held>, sqlx::Error> {
    let parents: String = resource
        .parents
        .iter()
        .map(|(_, column)| format!(", {column}"))
        .collect();
    let sql = format!(
        "SELECT id, deleted_at IS NULL AS alive,
                coalesce((extract(epoch FROM updated_at) * 1000)::bigint, 0) AS updated_ms{parents}
           FROM {}",
        resource.table
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            let held = Held {
                alive: r.try_get("alive")?,
                updated_ms: r.try_get("updated_ms")?,
                parents: resource
                    .parents
                    .iter()
                    .map(|(_, column)| r.try_get(*column))
                    .collect::<Result<_, _>>()?,
            };
            Ok((r.try_get("id")?, held))
        })
        .collect()
}

/// What a direct look-up says of an entity the listing did not show.
enum Found {
    /// Clerk still has it (paging skipped it): its object.
    Present(Value),
    /// Clerk answers that it is gone.
    Gone,
    /// No look-up can say (see [`super::Listed::lookup`]).
    Unknown,
}

/// Whether Clerk still has the entity, by a direct look-up.
async fn still_there(api: &ClerkApi, resource: &Resource, id: &str, held: &Held) -> Result<Found, ClerkApiError> {
    let found = match resource.lookup(id, &held.parents) {
        None => return Ok(Found::Unknown),
        Some(Lookup::Get(path)) => api.get(&path).await,
        Some(Lookup::Among(path)) => api.get(&path).await.map(|page| {
            items(page)
                .unwrap_or_default()
                .into_iter()
                .find(|m| m["id"] == id)
                .unwrap_or(Value::Null)
        }),
    };
    match found {
        Ok(Value::Null) | Err(ClerkApiError::NotFound { .. }) => Ok(Found::Gone),
        Ok(v) => Ok(Found::Present(v)),
        Err(e) => Err(e),
    }
}

fn repair_row(
    resource: &Resource,
    instance: &str,
    event_type: &str,
    data: Value,
    time_ms: i64,
    key: String,
) -> InboxRow {
    let body =
        json!({"object": "event", "type": event_type, "timestamp": time_ms, "instance_id": instance, "data": data});
    InboxRow {
        source: Source::Reconcile,
        event_key: format!("{}:{key}", resource.name),
        event_type: Some(event_type.into()),
        event_time: envelope::event_time(&json!(time_ms)),
        instance_id: Some(instance.into()),
        body: Some(serde_json::to_vec(&body).expect("serialises").into()),
        trace_context: None,
    }
}

/// One reconcile run of every resource; repairs are enqueued only when the whole comparison is
/// done and allowed. The report is kept (the newest ten) and exposed.
pub async fn run(pool: &PgPool, api: &ClerkApi, options: Options) -> Result<Report, ReconcileError> {
    let mut report = compare_and_repair(pool, api, options, &RESOURCES).await?;
    // Plans have no webhooks: what the list says now is enqueued where it differs.
    match super::plans::refresh(pool, api).await {
        Ok(listing) => {
            report.drift.insert(
                "billing/plans".into(),
                Drift {
                    missing: listing.missing,
                    stale: listing.stale,
                    ..Default::default()
                },
            );
        }
        Err(e) => tracing::warn!(error = %e, "reconcile could not list the billing plans; they are listed again at the next run"),
    }
    report.finished_at = Utc::now().to_rfc3339();
    keep(pool, &report).await?;
    Ok(report)
}

/// The roles and permissions alone, compared and repaired as a run does (a few requests): what
/// `serve` reads when it starts leading, since the default roles have no events. Its report is
/// returned, not kept (the kept one stays the last whole run's).
pub async fn roles_and_permissions(pool: &PgPool, api: &ClerkApi) -> Result<Report, ReconcileError> {
    compare_and_repair(pool, api, Options::default(), &ACCESS_RESOURCES).await
}

async fn compare_and_repair(
    pool: &PgPool,
    api: &ClerkApi,
    options: Options,
    resources: &[Resource],
) -> Result<Report, ReconcileError> {
    let started = Utc::now();
    let instance = check_instance(pool, api).await?;
    let mut report = Report {
        started_at: started.to_rfc3339(),
        ..Default::default()
    };
    let mut repairs: Vec<InboxRow> = Vec::new();
    let run_key = started.timestamp_millis();
    'resources: for resource in resources {
        let held = held(pool, resource)
            .await
            .doing("cannot read the mirror's entities to compare")?;
        let mut listed: HashMap<String, Value> = HashMap::new();
        let mut offset = 0;
        loop {
            let path = resource.page_path(PAGE, offset);
            let page = match api.get(&path).await.map_err(BackfillError::from) {
                Ok(page) => page,
                Err(e) if resource.optional && super::not_offered(&e) => {
                    tracing::warn!(resource = resource.name, error = %e, "not compared: this instance does not offer the list (Billing off?)");
                    continue 'resources;
                }
                Err(e) => return Err(e.into()),
            };
            let mut page = items(page).ok_or_else(|| api.unexpected(&path, NOT_A_LIST))?;
            super::keep_held(pool, resource, &mut page).await?;
            let n = page.len() as i64;
            for object in page {
                if let Some(id) = object["id"].as_str() {
                    listed.insert(id.to_string(), object);
                }
            }
            offset += n;
            if n < PAGE {
                break;
            }
        }
        let mut drift = Drift::default();
        let compare = |id: &str, object: &Value, drift: &mut Drift, unlisted: bool| {
            let updated = object["updated_at"].as_i64().unwrap_or(0);
            let kind = match held.get(id) {
                None => &mut drift.missing,
                Some(h) if h.alive && updated > h.updated_ms => &mut drift.stale,
                _ => {
                    if unlisted {
                        drift.unlisted_but_present.push(id.to_string());
                    }
                    return None;
                }
            };
            kind.push(id.to_string());
            if unlisted {
                drift.unlisted_but_present.push(id.to_string());
            }
            Some(repair_row(
                resource,
                &instance,
                resource.event_type,
                object.clone(),
                updated,
                format!("{id}:{updated}"),
            ))
        };
        let mut ids: Vec<&String> = listed.keys().collect();
        ids.sort();
        for id in ids {
            repairs.extend(compare(id, &listed[id], &mut drift, false));
        }
        // Alive here, not listed there: confirm with a direct look-up before any tombstone.
        let mut candidates: Vec<(&String, &Held)> = held
            .iter()
            .filter(|(id, h)| h.alive && !listed.contains_key(*id))
            .collect();
        candidates.sort_by(|a, b| a.0.cmp(b.0));
        let mut deletes = Vec::new();
        for (id, h) in candidates {
            match still_there(api, resource, id, h).await? {
                Found::Present(object) => repairs.extend(compare(id, &object, &mut drift, true)),
                Found::Gone if resource.delete_type.is_some() => deletes.push((id.clone(), h)),
                Found::Gone | Found::Unknown => drift.unconfirmed.push(id.clone()),
            }
        }
        let alive = held.values().filter(|h| h.alive).count();
        if deletes.len() > 10.max(alive / 100) && !options.allow_mass_delete {
            return Err(ReconcileError::MassDelete {
                entity: resource.name.to_string(),
                count: deletes.len(),
                alive,
            });
        }
        let now = Utc::now().timestamp_millis();
        for (id, h) in deletes {
            let event_type = resource
                .delete_type
                .expect("only a kind with a delete event has deletes");
            repairs.push(repair_row(
                resource,
                &instance,
                event_type,
                resource.deleted(&id, &h.parents),
                now,
                format!("{id}:deleted:{run_key}"),
            ));
            drift.deleted.push(id);
        }
        report.drift.insert(resource.name.to_string(), drift);
    }
    for chunk in repairs.chunks(500) {
        let refs: Vec<&InboxRow> = chunk.iter().collect();
        inbox::insert(pool, &refs)
            .await
            .doing("cannot write the repairs to the inbox")?;
    }
    report.finished_at = Utc::now().to_rfc3339();
    Ok(report)
}

/// Keeps `report` (and the nine before it).
async fn keep(pool: &PgPool, report: &Report) -> Result<(), ReconcileError> {
    let started = chrono::DateTime::parse_from_rfc3339(&report.started_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now());
    sqlx::query("INSERT INTO reconcile_reports (started_at, report) VALUES ($1, $2)")
        .bind(started)
        .bind(sqlx::types::Json(&report))
        .execute(pool)
        .await
        .doing("cannot keep the drift report")?;
    sqlx::query(
        "DELETE FROM reconcile_reports WHERE id NOT IN (SELECT id FROM reconcile_reports ORDER BY id DESC LIMIT 10)",
    )
    .execute(pool)
    .await
    .doing("cannot delete the oldest drift reports")?;
    Ok(())
}

/// The newest kept report, if any.
pub async fn last_report(pool: &PgPool) -> Result<Option<Report>, sqlx::Error> {
    let row: Option<sqlx::types::Json<Report>> =
        sqlx::query_scalar("SELECT report FROM reconcile_reports ORDER BY id DESC LIMIT 1")
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|r| r.0))
}

/// How long a replica that reconciles only at start waits before it asks again for roles and
/// permissions that it could not read.
pub const START_RETRY: std::time::Duration = std::time::Duration::from_secs(600);

/// While this replica holds the applier lock (`leading`), until `stop`: at once, the roles and
/// permissions (again each time it starts leading, and every [`START_RETRY`] until that works),
/// then a whole reconcile every `every`, if given.
pub async fn periodically(
    pool: PgPool,
    api: ClerkApi,
    every: Option<std::time::Duration>,
    mut leading: tokio::sync::watch::Receiver<bool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut imported = import_access(&pool, &api).await;
        while *leading.borrow() {
            tokio::select! {
                () = tokio::time::sleep(every.unwrap_or(START_RETRY)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if !*leading.borrow() {
                break;
            }
            match every {
                Some(_) => match run(&pool, &api, Options::default()).await {
                    Ok(report) => {
                        imported = true;
                        tracing::info!(repairs = repairs(&report), "periodic reconcile done");
                    }
                    Err(e) => tracing::error!(error = %e, "periodic reconcile failed"),
                },
                None if !imported => imported = import_access(&pool, &api).await,
                None => {}
            }
        }
    }
}

fn repairs(report: &Report) -> usize {
    report
        .drift
        .values()
        .map(|d| d.missing.len() + d.stale.len() + d.deleted.len())
        .sum()
}

/// Reads the roles and permissions; whether it worked (a failure is logged with what to do).
async fn import_access(pool: &PgPool, api: &ClerkApi) -> bool {
    match roles_and_permissions(pool, api).await {
        Ok(report) => {
            tracing::info!(repairs = repairs(&report), "roles and permissions read from the Backend API");
            true
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "cannot read the roles and permissions from the Backend API; permission checks of roles \
                 the mirror has not seen answer from membership snapshots until it can (retried at the next reconcile)"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(unconfirmed: &[&str]) -> Report {
        let drift = Drift {
            deleted: vec!["user_1".into()],
            unconfirmed: unconfirmed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Report {
            started_at: "a".into(),
            finished_at: "b".into(),
            drift: [("users".to_string(), drift)].into(),
        }
    }

    #[test]
    fn a_report_without_unconfirmed_entities_reads_and_renders_as_before_and_one_with_them_says_so() {
        let before = report(&[]);
        assert_eq!(
            serde_json::to_value(&before).unwrap(),
            json!({"started_at": "a", "finished_at": "b", "drift": {"users": {
                "missing": [], "stale": [], "deleted": ["user_1"], "unlisted_but_present": []}}})
        );
        assert_eq!(
            serde_json::from_value::<Report>(serde_json::to_value(&before).unwrap()).unwrap(),
            before,
            "a kept report of before reads back"
        );
        assert_eq!(before.render(false).lines().count(), 5, "{}", before.render(false));
        assert!(!before.render(true).contains("unconfirmed"));

        let with = report(&["dmn_1"]);
        assert_eq!(
            serde_json::to_value(&with).unwrap()["drift"]["users"]["unconfirmed"],
            json!(["dmn_1"])
        );
        let text = with.render(true);
        assert!(text.contains("unconfirmed") && text.contains("      dmn_1"), "{text}");
    }
}

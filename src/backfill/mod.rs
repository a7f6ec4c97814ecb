//! Backfill from Clerk's Backend API: every user, organization, membership, permission and role
//! becomes an inbox
//! row (source `backfill`) that the one applier applies with the same rules as webhooks (stale
//! data never wins, tombstones are final). Paged with `limit=500&order_by=+created_at`, within a
//! request budget, resumable through a checkpoint per resource.

pub mod client;
pub mod plans;
pub mod rate;
pub mod reconcile;
pub mod resource;

use std::time::Instant;

use serde_json::{Value, json};
use sqlx::PgPool;

pub use client::{ClerkApi, ClerkApiError};
pub use resource::{ACCESS_RESOURCES, Listed, RESOURCES, Resource};

use crate::inbox::{self, InboxRow, Source, envelope};

/// Objects per page (Clerk's maximum).
pub const PAGE: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(
        "the secret key belongs to instance {key_instance}, but this mirror holds webhooks from {mirror_instance}: \
         refusing to import another instance's data (a development key against a production mirror?)"
    )]
    InstanceMismatch {
        key_instance: String,
        mirror_instance: String,
    },
    #[error(transparent)]
    Api(#[from] ClerkApiError),
    /// A step on the mirror's database failed; `doing` names it.
    #[error("{doing}: {cause}; run again once PostgreSQL answers")]
    Database { doing: &'static str, cause: sqlx::Error },
}

/// Names the database step an error comes from (there is no bare `From<sqlx::Error>`: every
/// step says what it was doing).
pub(crate) trait Doing<T> {
    fn doing(self, doing: &'static str) -> Result<T, BackfillError>;
}

impl<T> Doing<T> for Result<T, sqlx::Error> {
    fn doing(self, doing: &'static str) -> Result<T, BackfillError> {
        self.map_err(|cause| BackfillError::Database { doing, cause })
    }
}

/// Progress of one resource, after each page.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub resource: &'a str,
    pub fetched: i64,
    /// How many Clerk says there are (when it says).
    pub total: Option<i64>,
    pub per_second: f64,
}

/// What one resource's run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceSummary {
    pub fetched: i64,
    /// New inbox rows (objects already enqueued at the same `updated_at` are not enqueued again).
    pub enqueued: i64,
    /// Whether this run resumed from a checkpoint.
    pub resumed_at: i64,
    /// Why an optional resource was skipped (the instance does not offer its list).
    pub skipped: Option<String>,
}

/// Checks that the key's instance is the one the mirror's webhooks come from.
pub async fn check_instance(pool: &PgPool, api: &ClerkApi) -> Result<String, BackfillError> {
    let key_instance = api.instance_id().await?;
    let seen: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT instance_id FROM inbox WHERE instance_id IS NOT NULL AND source = 'webhook' LIMIT 5",
    )
    .fetch_all(pool)
    .await
    .doing("cannot read which instance the mirror's webhooks come from")?;
    if let Some(other) = seen.into_iter().find(|i| *i != key_instance) {
        return Err(BackfillError::InstanceMismatch {
            key_instance,
            mirror_instance: other,
        });
    }
    Ok(key_instance)
}

/// What a page that `items` cannot read is, for the error.
pub(crate) const NOT_A_LIST: &str = "a body that is neither a list nor `{\"data\": [...]}`";

/// The objects of one page (`GET /users` answers a bare array, the others `{data, total_count}`).
pub(crate) fn items(page: Value) -> Option<Vec<Value>> {
    match page {
        Value::Array(items) => Some(items),
        Value::Object(mut map) => match map.remove("data") {
            Some(Value::Array(items)) => Some(items),
            _ => None,
        },
        _ => None,
    }
}

/// Fills in, on each of `objects` lacking them, the fields the mirror keeps as it holds them
/// (`Resource::keep_held`), from the projection.
pub(crate) async fn keep_held(pool: &PgPool, resource: &Resource, objects: &mut [Value]) -> Result<(), BackfillError> {
    if resource.keep_held.is_empty() || objects.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = objects.iter().filter_map(|o| o.get("id")?.as_str()).collect();
    let columns: String = resource.keep_held.iter().map(|c| format!(", {c}")).collect();
    let held = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id{columns} FROM {} WHERE id = ANY($1)",
        resource.table
    )))
    .bind(&ids)
    .fetch_all(pool)
    .await
    .doing("cannot read what the mirror holds of the fetched objects")?;
    let held: std::collections::HashMap<String, &sqlx::postgres::PgRow> = held
        .iter()
        .filter_map(|r| Some((sqlx::Row::try_get::<String, _>(r, "id").ok()?, r)))
        .collect();
    for object in objects.iter_mut() {
        let Some(row) = object.get("id").and_then(Value::as_str).and_then(|id| held.get(id)) else {
            continue;
        };
        for column in resource.keep_held {
            let value: Option<String> = sqlx::Row::try_get(*row, *column).unwrap_or(None);
            if let Some(value) = value
                && object.get(*column).is_none_or(Value::is_null)
            {
                object[*column] = Value::String(value);
            }
        }
    }
    Ok(())
}

/// Whether `e` says the instance does not offer a list at all (Billing off): a 404, 403 or
/// another refusal, not a failure to reach Clerk.
pub(crate) fn not_offered(e: &BackfillError) -> bool {
    matches!(
        e,
        BackfillError::Api(ClerkApiError::NotFound { .. } | ClerkApiError::Refused { .. } | ClerkApiError::Unauthorized { .. })
    )
}

/// The inbox row for one fetched object.
fn row(resource: &Resource, instance: &str, object: &Value) -> Option<InboxRow> {
    let id = object.get("id")?.as_str()?;
    let updated = object.get("updated_at").and_then(Value::as_i64).unwrap_or(0);
    let body = json!({
        "object": "event", "type": resource.event_type, "timestamp": updated,
        "instance_id": instance, "data": object,
    });
    Some(InboxRow {
        source: Source::Backfill,
        event_key: format!("{}:{id}:{updated}", resource.name),
        event_type: Some(resource.event_type.into()),
        event_time: envelope::event_time(&json!(updated)),
        instance_id: Some(instance.into()),
        body: Some(serde_json::to_vec(&body).expect("serialises").into()),
        trace_context: None,
    })
}

/// Fetches every object of `resource` after its checkpoint into the inbox; `progress` is told
/// the running count after each page.
pub async fn backfill_resource(
    pool: &PgPool,
    api: &ClerkApi,
    instance: &str,
    resource: &Resource,
    progress: &mut dyn FnMut(&Progress),
) -> Result<ResourceSummary, BackfillError> {
    sqlx::query("INSERT INTO backfill_checkpoints (resource) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(resource.name)
        .execute(pool)
        .await
        .doing("cannot create the backfill checkpoint")?;
    let (mut offset, done): (i64, bool) =
        sqlx::query_as("SELECT \"offset\", done FROM backfill_checkpoints WHERE resource = $1")
            .bind(resource.name)
            .fetch_one(pool)
            .await
            .doing("cannot read the backfill checkpoint")?;
    let mut summary = ResourceSummary {
        resumed_at: offset,
        ..Default::default()
    };
    if done {
        return Ok(summary);
    }
    let started = Instant::now();
    let fetched_before = offset;
    // A list that answers a bare array (`GET /users`) is counted by a request of its own.
    let mut total = match resource.count_path {
        Some(path) => api.get(path).await.ok().and_then(|v| v["total_count"].as_i64()),
        None => None,
    };
    loop {
        let path = resource.page_path(PAGE, offset);
        let page = api.get(&path).await?;
        if let Some(t) = page.get("total_count").and_then(Value::as_i64) {
            total = Some(t);
        }
        let mut objects = items(page).ok_or_else(|| api.unexpected(&path, NOT_A_LIST))?;
        keep_held(pool, resource, &mut objects).await?;
        let rows: Vec<InboxRow> = objects.iter().filter_map(|o| row(resource, instance, o)).collect();
        let refs: Vec<&InboxRow> = rows.iter().collect();
        let inserted = if refs.is_empty() {
            Vec::new()
        } else {
            inbox::insert(pool, &refs)
                .await
                .doing("cannot write the fetched objects to the inbox")?
        };
        let n = objects.len() as i64;
        offset += n;
        summary.fetched += n;
        summary.enqueued += inserted.len() as i64;
        let last = n < PAGE;
        sqlx::query(
            "UPDATE backfill_checkpoints SET \"offset\" = $2, fetched = fetched + $3, done = $4, updated_at = now() WHERE resource = $1",
        )
        .bind(resource.name)
        .bind(offset)
        .bind(n)
        .bind(last)
        .execute(pool)
        .await
        .doing("cannot update the backfill checkpoint")?;
        progress(&Progress {
            resource: resource.name,
            fetched: offset,
            total,
            per_second: (offset - fetched_before) as f64 / started.elapsed().as_secs_f64().max(0.001),
        });
        if last {
            return Ok(summary);
        }
    }
}

/// A whole backfill: the instance check, then every resource; the checkpoints are cleared once
/// all are done, so the next backfill starts over.
pub async fn run(
    pool: &PgPool,
    api: &ClerkApi,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<(&'static str, ResourceSummary)>, BackfillError> {
    let instance = check_instance(pool, api).await?;
    let mut out = Vec::new();
    for resource in &RESOURCES {
        let summary = match backfill_resource(pool, api, &instance, resource, progress).await {
            Err(e) if resource.optional && not_offered(&e) => {
                tracing::warn!(resource = resource.name, error = %e, "skipped: this instance does not offer the list (Billing off?)");
                ResourceSummary {
                    skipped: Some(e.to_string()),
                    ..Default::default()
                }
            }
            summary => summary?,
        };
        out.push((resource.name, summary));
    }
    sqlx::query("DELETE FROM backfill_checkpoints")
        .execute(pool)
        .await
        .doing("cannot clear the finished backfill's checkpoints")?;
    Ok(out)
}

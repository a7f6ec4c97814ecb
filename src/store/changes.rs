//! Reading the change log: pages of changes after a seq (optionally narrowed by entity type,
//! organization and user), with the log's head and oldest retained seq from the same snapshot.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use super::EntityType;

/// One change as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ChangeRow {
    pub seq: i64,
    pub entity_type: String,
    pub entity_id: String,
    pub operation: String,
    pub organization_id: Option<String>,
    pub user_id: Option<String>,
    pub state: Value,
    pub previous: Option<Value>,
    pub source: String,
    pub commit_time: DateTime<Utc>,
}

impl ChangeRow {
    pub fn entity_type(&self) -> Option<EntityType> {
        EntityType::from_name(&self.entity_type)
    }
}

/// What narrows a read of the log (all optional).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Entity types (`user`, `organization`, `membership`); empty: all.
    pub entity_types: Vec<String>,
    pub organization_id: Option<String>,
    pub user_id: Option<String>,
}

impl Scope {
    /// Whether a change is in scope (the in-memory twin of the SQL below).
    pub fn contains(&self, c: &ChangeRow) -> bool {
        (self.entity_types.is_empty() || self.entity_types.contains(&c.entity_type))
            && self
                .organization_id
                .as_ref()
                .is_none_or(|o| c.organization_id.as_ref() == Some(o))
            && self.user_id.as_ref().is_none_or(|u| c.user_id.as_ref() == Some(u))
    }
}

/// The log's bounds at one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub head: i64,
    /// The oldest retained seq (changes before it are pruned).
    pub oldest: i64,
}

pub async fn bounds(pool: &PgPool) -> Result<(String, Bounds), sqlx::Error> {
    let (log_id, head, oldest): (String, i64, i64) =
        sqlx::query_as("SELECT log_id, head_seq, oldest_seq FROM log_head")
            .fetch_one(pool)
            .await?;
    Ok((log_id, Bounds { head, oldest }))
}

/// Up to `limit` in-scope changes after `after`, in seq order, and the bounds at that snapshot.
pub async fn page(
    pool: &PgPool,
    after: i64,
    scope: &Scope,
    limit: i64,
) -> Result<(Vec<ChangeRow>, Bounds), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT h.head_seq AS head, h.oldest_seq AS oldest, c.* FROM log_head h LEFT JOIN LATERAL (
            SELECT * FROM changes c
             WHERE c.seq > $1
               AND (cardinality($2::text[]) = 0 OR c.entity_type = ANY($2))
               AND ($3::text IS NULL OR c.organization_id = $3)
               AND ($4::text IS NULL OR c.user_id = $4)
             ORDER BY c.seq LIMIT $5) c ON true",
    )
    .bind(after)
    .bind(&scope.entity_types)
    .bind(&scope.organization_id)
    .bind(&scope.user_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    use sqlx::{FromRow, Row as _};
    let mut bounds = Bounds { head: 0, oldest: 1 };
    let mut changes = Vec::with_capacity(rows.len());
    for row in &rows {
        bounds = Bounds {
            head: row.try_get("head")?,
            oldest: row.try_get("oldest")?,
        };
        if row.try_get::<Option<i64>, _>("seq")?.is_some() {
            changes.push(ChangeRow::from_row(row)?);
        }
    }
    Ok((changes, bounds))
}

//! Reading the change log: pages of changes after a seq (optionally narrowed by entity type,
//! organization and user) that end on applier-batch boundaries, with the log's head and oldest
//! retained seq from the same snapshot.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use super::EntityType;

/// The `entity_type` of a raw Clerk event recorded in the log for the outbound webhook
/// destinations that select its type (operation `received`, the body in `raw`). Not a change of
/// the directory: watches and the read cache pass over these rows.
pub const RAW_EVENT: &str = "event";

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
    /// The seq of the last change of the applier batch that appended this one (`None`: written
    /// before batches were recorded, or by hand: a batch of its own).
    pub batch_last: Option<i64>,
    /// The W3C `traceparent` of the webhook that made it, when it was traced (the hub's fan-out
    /// span continues that trace).
    #[sqlx(default)]
    pub trace_context: Option<String>,
    /// The change as the API shows it, made once by the first watch stream that sends it and
    /// shared by every other stream of the replica (the hub hands each change out once, behind
    /// `Arc`). Not part of the change: a copy starts empty, and equality ignores it.
    #[sqlx(skip)]
    pub wire: Memo,
}

/// A value computed at most once for one change and shared by its readers (see
/// `ChangeRow::wire`): the converted change, encoded (every stream sends these bytes), or why
/// it cannot be converted.
#[derive(Default)]
pub struct Memo(std::sync::OnceLock<Result<crate::pb::Encoded<crate::pb::Change>, String>>);

impl Memo {
    /// The value, made by `make` if no reader has made it yet.
    pub fn get_or_init(
        &self,
        make: impl FnOnce() -> Result<crate::pb::Encoded<crate::pb::Change>, String>,
    ) -> &Result<crate::pb::Encoded<crate::pb::Change>, String> {
        self.0.get_or_init(make)
    }
}

impl Clone for Memo {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "Memo(made)" } else { "Memo(empty)" })
    }
}

impl ChangeRow {
    /// Whether this row is a raw Clerk event (see [`RAW_EVENT`]).
    pub fn is_raw_event(&self) -> bool {
        self.entity_type == RAW_EVENT
    }

    pub fn entity_type(&self) -> Option<EntityType> {
        EntityType::from_name(&self.entity_type)
    }

    /// The last seq of this change's batch: once a reader has passed it, it has the whole batch.
    pub fn batch_end(&self) -> i64 {
        self.batch_last.unwrap_or(self.seq).max(self.seq)
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
                .is_none_or(|o| c.organization_id.as_ref() == Some(o) || INSTANCE_WIDE.contains(&c.entity_type))
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

/// One page of the log: every in-scope change in `(after, end]`, in seq order.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub changes: Vec<ChangeRow>,
    /// The last seq the page covers (see [`Ends`]; the head when the page reached it).
    pub end: i64,
    /// The bounds at the page's snapshot.
    pub bounds: Bounds,
}

impl Page {
    /// Whether the page reached the log's head (nothing more to read at its snapshot).
    pub fn at_head(&self) -> bool {
        self.end >= self.bounds.head
    }
}

/// Where a page that has reached its limit ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ends {
    /// At the end of the batch of its `limit`-th change: a page holds more than `limit` changes
    /// rather than cut a batch (for readers that apply batches whole).
    Batch,
    /// At its `limit`-th change, inside a batch if need be (for readers that take changes one
    /// by one and should hold no more than a page).
    Limit,
}

/// The kinds an organization's scope includes whatever organization they name (roles and
/// permissions: they decide what every organization's members may do).
static INSTANCE_WIDE: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(super::kind::instance_wide);

/// Whether a change is in scope, in SQL (`$2`: entity types, `$3`: organization, `$4`: user,
/// `$6`: the kinds in every organization's scope).
fn in_scope(t: &str) -> String {
    format!(
        "(cardinality($2::text[]) = 0 OR {t}.entity_type = ANY($2))
           AND ($3::text IS NULL OR {t}.organization_id = $3 OR {t}.entity_type = ANY($6))
           AND ($4::text IS NULL OR {t}.user_id = $4)"
    )
}

/// A page ending on a batch boundary: its snapshot's bounds, its last seq (`page_end`: the end
/// of the batch of the `$5`-th change, else the head) and its changes.
static PAGE_TO_BATCH_END: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT h.head_seq AS head, h.oldest_seq AS oldest, e.page_end, c.* FROM log_head h
          CROSS JOIN LATERAL (SELECT coalesce(
                (SELECT coalesce(n.batch_last, n.seq) FROM changes n
                  WHERE n.seq > $1 AND {}
                  ORDER BY n.seq OFFSET $5 - 1 LIMIT 1),
                h.head_seq) AS page_end) e
           LEFT JOIN LATERAL (
                SELECT * FROM changes c
                 WHERE c.seq > $1 AND c.seq <= e.page_end AND {}
                 ORDER BY c.seq) c ON true",
        in_scope("n"),
        in_scope("c"),
    )
});

/// A page of at most `$5` changes: its snapshot's bounds and its changes (it ends at its last
/// change when full, else at the head).
static PAGE_TO_LIMIT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT h.head_seq AS head, h.oldest_seq AS oldest, NULL::bigint AS page_end, c.* FROM log_head h
           LEFT JOIN LATERAL (
                SELECT * FROM changes c WHERE c.seq > $1 AND {} ORDER BY c.seq LIMIT $5) c ON true",
        in_scope("c"),
    )
});

/// The in-scope changes after `after`: up to `limit` of them, ending as `ends` says, or every
/// one up to the head when fewer remain; in seq order, with the bounds at that snapshot.
pub async fn page(pool: &PgPool, after: i64, scope: &Scope, limit: i64, ends: Ends) -> Result<Page, sqlx::Error> {
    let sql: &str = match ends {
        Ends::Batch => &PAGE_TO_BATCH_END,
        Ends::Limit => &PAGE_TO_LIMIT,
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after)
        .bind(&scope.entity_types)
        .bind(&scope.organization_id)
        .bind(&scope.user_id)
        .bind(limit.max(1))
        .bind(&*INSTANCE_WIDE)
        .fetch_all(pool)
        .await?;
    use sqlx::{FromRow, Row as _};
    let mut page = Page {
        changes: Vec::with_capacity(rows.len()),
        end: after,
        bounds: Bounds { head: 0, oldest: 1 },
    };
    for row in &rows {
        page.bounds = Bounds {
            head: row.try_get("head")?,
            oldest: row.try_get("oldest")?,
        };
        page.end = match row.try_get::<Option<i64>, _>("page_end")? {
            Some(end) => end,
            None => page.bounds.head,
        };
        if row.try_get::<Option<i64>, _>("seq")?.is_some() {
            page.changes.push(ChangeRow::from_row(row)?);
        }
    }
    if ends == Ends::Limit
        && page.changes.len() as i64 >= limit.max(1)
        && let Some(last) = page.changes.last()
    {
        page.end = last.seq;
    }
    page.end = page.end.max(after);
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memo_is_made_once_and_a_copy_of_a_change_starts_without_it() {
        let memo = Memo::default();
        let mut made = 0;
        for _ in 0..3 {
            let _ = memo.get_or_init(|| {
                made += 1;
                Ok(crate::pb::Encoded::of(&crate::pb::Change::default()))
            });
        }
        assert_eq!(made, 1);
        assert!(memo.0.get().is_some());
        assert!(memo.clone().0.get().is_none());
        assert_eq!(memo, Memo::default(), "not part of the change's equality");
    }
}

//! The read queries of the API. Each read is one SQL statement that also reads the log head, so
//! the data and the cursor it reflects come from one snapshot, in one round trip.

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool, Row};

use super::{MembershipRecord, OrganizationRecord, UserRecord};

/// A record and the seq of the change that last touched it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    pub record: T,
    pub update_cursor: i64,
}

/// What a read found, and the head of the log at that snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot<T> {
    pub items: Vec<Option<Stored<T>>>,
    pub head: i64,
}

fn decode<T: for<'r> FromRow<'r, PgRow>>(row: &PgRow) -> Result<Option<Stored<T>>, sqlx::Error> {
    // A LEFT JOIN that found nothing has a NULL id.
    if row.try_get::<Option<String>, _>("id")?.is_none() {
        return Ok(None);
    }
    Ok(Some(Stored {
        record: T::from_row(row)?,
        update_cursor: row.try_get("update_cursor")?,
    }))
}

/// Runs `sql` (which selects `head` and the entity's columns) and decodes every row.
async fn snapshot<T: for<'r> FromRow<'r, PgRow>>(
    pool: &PgPool,
    sql: &'static str,
    bind: impl FnOnce(
        sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<Snapshot<T>, sqlx::Error> {
    let rows = bind(sqlx::query(sql)).fetch_all(pool).await?;
    let head = match rows.first() {
        Some(row) => row.try_get("head")?,
        None => head(pool).await?,
    };
    let items = rows.iter().map(decode).collect::<Result<_, _>>()?;
    Ok(Snapshot { items, head })
}

/// The log's head seq.
pub async fn head(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT head_seq FROM log_head")
        .fetch_one(pool)
        .await
}

/// The log's id (made once, at the first migration).
pub async fn log_id(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT log_id FROM log_head").fetch_one(pool).await
}

/// Users by id, in the order asked (one row per id, `None` where unknown).
pub async fn users_by_id(pool: &PgPool, ids: &[&str]) -> Result<Snapshot<UserRecord>, sqlx::Error> {
    snapshot(
        pool,
        "SELECT h.head_seq AS head, u.* FROM log_head h
           CROSS JOIN unnest($1::text[]) WITH ORDINALITY AS n(want, ord)
           LEFT JOIN users u ON u.id = n.want ORDER BY n.ord",
        |q| q.bind(ids.to_vec()),
    )
    .await
}

pub async fn organizations_by_id(pool: &PgPool, ids: &[&str]) -> Result<Snapshot<OrganizationRecord>, sqlx::Error> {
    snapshot(
        pool,
        "SELECT h.head_seq AS head, o.* FROM log_head h
           CROSS JOIN unnest($1::text[]) WITH ORDINALITY AS n(want, ord)
           LEFT JOIN organizations o ON o.id = n.want ORDER BY n.ord",
        |q| q.bind(ids.to_vec()),
    )
    .await
}

/// A membership by id within an organization.
pub async fn membership(
    pool: &PgPool,
    organization_id: &str,
    id: &str,
) -> Result<Snapshot<MembershipRecord>, sqlx::Error> {
    snapshot(
        pool,
        "SELECT h.head_seq AS head, m.* FROM log_head h
           LEFT JOIN memberships m ON m.id = $1 AND m.organization_id = $2",
        |q| q.bind(id.to_string()).bind(organization_id.to_string()),
    )
    .await
}

/// What a user can be looked up by.
#[derive(Debug, Clone)]
pub enum UserKey {
    Email(String),
    ExternalId(String),
    Username(String),
    PhoneNumber(String),
}

/// The live user with `key` (tombstones keep no emails, usernames or numbers). When several share
/// it, the least id in byte order (`COLLATE "C"`, whatever the database's collation), as the read
/// cache answers.
pub async fn user_by_key(pool: &PgPool, key: &UserKey) -> Result<Snapshot<UserRecord>, sqlx::Error> {
    let (sql, value) = match key {
        UserKey::Email(v) => (
            "SELECT h.head_seq AS head, u.* FROM log_head h LEFT JOIN LATERAL (
                SELECT u.* FROM user_email_addresses e JOIN users u ON u.id = e.user_id
                 WHERE lower(e.email_address) = lower($1) AND u.deleted_at IS NULL ORDER BY u.id COLLATE \"C\" LIMIT 1) u ON true",
            v,
        ),
        UserKey::ExternalId(v) => (
            "SELECT h.head_seq AS head, u.* FROM log_head h LEFT JOIN LATERAL (
                SELECT * FROM users WHERE external_id = $1 AND deleted_at IS NULL ORDER BY id COLLATE \"C\" LIMIT 1) u ON true",
            v,
        ),
        UserKey::Username(v) => (
            "SELECT h.head_seq AS head, u.* FROM log_head h LEFT JOIN LATERAL (
                SELECT * FROM users WHERE lower(username) = lower($1) AND deleted_at IS NULL ORDER BY id COLLATE \"C\" LIMIT 1) u ON true",
            v,
        ),
        UserKey::PhoneNumber(v) => (
            "SELECT h.head_seq AS head, u.* FROM log_head h LEFT JOIN LATERAL (
                SELECT u.* FROM user_phone_numbers p JOIN users u ON u.id = p.user_id
                 WHERE p.phone_number = $1 AND u.deleted_at IS NULL ORDER BY u.id COLLATE \"C\" LIMIT 1) u ON true",
            v,
        ),
    };
    snapshot(pool, sql, |q| q.bind(value.clone())).await
}

/// The live organization with `slug`.
pub async fn organization_by_slug(pool: &PgPool, slug: &str) -> Result<Snapshot<OrganizationRecord>, sqlx::Error> {
    snapshot(
        pool,
        "SELECT h.head_seq AS head, o.* FROM log_head h LEFT JOIN LATERAL (
            SELECT * FROM organizations WHERE slug = $1 AND deleted_at IS NULL ORDER BY id COLLATE \"C\" LIMIT 1) o ON true",
        |q| q.bind(slug.to_string()),
    )
    .await
}

/// The user's current membership of the organization.
pub async fn membership_of(
    pool: &PgPool,
    organization_id: &str,
    user_id: &str,
) -> Result<Snapshot<MembershipRecord>, sqlx::Error> {
    snapshot(
        pool,
        "SELECT h.head_seq AS head, m.* FROM log_head h LEFT JOIN LATERAL (
            SELECT * FROM memberships WHERE organization_id = $1 AND user_id = $2 AND deleted_at IS NULL
             ORDER BY updated_at DESC NULLS LAST, id COLLATE \"C\" LIMIT 1) m ON true",
        |q| q.bind(organization_id.to_string()).bind(user_id.to_string()),
    )
    .await
}

/// One page of a list: rows of `table` with id after `after`, at most `limit`, in id order.
pub struct ListQuery<'a> {
    pub table: &'static str,
    pub after: &'a str,
    pub limit: i64,
    pub show_deleted: bool,
    /// Memberships of one organization only.
    pub organization_id: Option<&'a str>,
    /// Memberships of one user only.
    pub user_id: Option<&'a str>,
    /// Only the entity with this id.
    pub id: Option<&'a str>,
    pub filter: Option<&'a crate::filter::Filter>,
}

/// A page of a list, and the log head of its snapshot (one statement, keyset pagination).
pub async fn list<T: for<'r> FromRow<'r, PgRow>>(pool: &PgPool, q: &ListQuery<'_>) -> Result<Snapshot<T>, sqlx::Error> {
    use crate::filter::Bind;
    let mut conditions = vec!["t.id > $1".to_string()];
    if !q.show_deleted {
        conditions.push("t.deleted_at IS NULL".into());
    }
    let mut next = 3;
    for (column, value) in [
        ("organization_id", q.organization_id),
        ("user_id", q.user_id),
        ("id", q.id),
    ] {
        if value.is_some() {
            conditions.push(format!("t.{column} = ${next}"));
            next += 1;
        }
    }
    let (filter_sql, binds) = match q.filter {
        Some(f) => {
            let (sql, binds) = f.to_sql(next);
            (Some(sql), binds)
        }
        None => (None, Vec::new()),
    };
    conditions.extend(filter_sql);
    let sql = format!(
        "SELECT h.head_seq AS head, t.* FROM log_head h LEFT JOIN LATERAL (
            SELECT * FROM {} t WHERE {} ORDER BY t.id LIMIT $2) t ON true",
        q.table,
        conditions.join(" AND ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(q.after.to_string())
        .bind(q.limit);
    for value in [q.organization_id, q.user_id, q.id].into_iter().flatten() {
        query = query.bind(value.to_string());
    }
    for b in binds {
        query = match b {
            Bind::Text(v) => query.bind(v),
            Bind::Float(v) => query.bind(v),
            Bind::Bool(v) => query.bind(v),
            Bind::Time(v) => query.bind(v),
            Bind::TextArray(v) => query.bind(v),
            Bind::Json(v) => query.bind(sqlx::types::Json(v)),
        };
    }
    let rows = query.fetch_all(pool).await?;
    let head = match rows.first() {
        Some(row) => row.try_get("head")?,
        None => head(pool).await?,
    };
    let items = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    Ok(Snapshot {
        items: items.into_iter().filter(Option::is_some).collect(),
        head,
    })
}

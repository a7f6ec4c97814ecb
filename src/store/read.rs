//! The read queries of the API. Each read is one SQL statement that also reads the log head, so
//! the data and the cursor it reflects come from one snapshot, in one round trip.

use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{FromRow, PgPool, Row};

use super::access::{Member, Source, Standing};
use super::kind::MESSAGE_FORMAT;
use super::{Kind, MembershipRecord, OrganizationRecord, RoleRecord, UserRecord};

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
    conn: &mut PgConnection,
    sql: &'static str,
    bind: impl FnOnce(
        sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<Snapshot<T>, sqlx::Error> {
    let rows = bind(sqlx::query(sql)).fetch_all(&mut *conn).await?;
    let head = match rows.first() {
        Some(row) => row.try_get("head")?,
        None => head(&mut *conn).await?,
    };
    let items = rows.iter().map(decode).collect::<Result<_, _>>()?;
    Ok(Snapshot { items, head })
}

/// The log's head seq.
pub async fn head(db: impl sqlx::PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT head_seq FROM log_head").fetch_one(db).await
}

/// The log's id (made once, at the first migration).
pub async fn log_id(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT log_id FROM log_head").fetch_one(pool).await
}

// A get of one id has its own statement: PostgreSQL plans `unnest($1::text[])` afresh on every
// call (a custom plan: the generic one guesses the array's length), ~0.17 ms of a read that
// otherwise costs ~0.05 ms; `= $1` gets a generic plan, made once per connection.

/// One entity of kind `K` by id, as the API reads it (`None` where unknown).
pub async fn by_id<K: Kind>(conn: &mut PgConnection, id: &str) -> Result<Snapshot<K>, sqlx::Error> {
    let sql = format!(
        "SELECT h.head_seq AS head, t.* FROM log_head h LEFT JOIN {} t ON t.id = $1",
        K::READ_FROM
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(&mut *conn).await?;
    let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    Ok(Snapshot {
        head: row.try_get("head")?,
        items: vec![decode(row)?],
    })
}

/// What the projection keeps of one entity's message (`Kind::STORES_MESSAGE`), and the head.
#[derive(Debug)]
pub struct StoredMessage {
    pub head: i64,
    /// For an entity that exists: whether it is a tombstone, and its message if it is kept in
    /// this binary's format ([`MESSAGE_FORMAT`]; `None`: convert the row instead).
    pub row: Option<(bool, Option<Vec<u8>>)>,
}

/// The stored message of the `K` with `id`: one statement, no JSON.
pub async fn stored_message<K: Kind>(conn: &mut PgConnection, id: &str) -> Result<StoredMessage, sqlx::Error> {
    let sql = format!(
        "SELECT h.head_seq AS head, t.id, t.deleted_at IS NOT NULL AS deleted,
                CASE WHEN t.message_format = $2 THEN t.message END AS message
           FROM log_head h LEFT JOIN {} t ON t.id = $1",
        K::TABLE
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(MESSAGE_FORMAT)
        .fetch_one(conn)
        .await?;
    let found = row.try_get::<Option<String>, _>("id")?.is_some();
    Ok(StoredMessage {
        head: row.try_get("head")?,
        row: match found {
            true => Some((row.try_get("deleted")?, row.try_get("message")?)),
            false => None,
        },
    })
}

/// Users by id, in the order asked (one row per id, `None` where unknown).
pub async fn users_by_id(conn: &mut PgConnection, ids: &[&str]) -> Result<Snapshot<UserRecord>, sqlx::Error> {
    snapshot(
        conn,
        "SELECT h.head_seq AS head, u.* FROM log_head h
           CROSS JOIN unnest($1::text[]) WITH ORDINALITY AS n(want, ord)
           LEFT JOIN users u ON u.id = n.want ORDER BY n.ord",
        |q| q.bind(ids.to_vec()),
    )
    .await
}

pub async fn organizations_by_id(conn: &mut PgConnection, ids: &[&str]) -> Result<Snapshot<OrganizationRecord>, sqlx::Error> {
    snapshot(
        conn,
        "SELECT h.head_seq AS head, o.* FROM log_head h
           CROSS JOIN unnest($1::text[]) WITH ORDINALITY AS n(want, ord)
           LEFT JOIN organizations o ON o.id = n.want ORDER BY n.ord",
        |q| q.bind(ids.to_vec()),
    )
    .await
}

/// A membership by id within an organization.
pub async fn membership(
    conn: &mut PgConnection,
    organization_id: &str,
    id: &str,
) -> Result<Snapshot<MembershipRecord>, sqlx::Error> {
    snapshot(
        conn,
        "SELECT h.head_seq AS head, m.* FROM log_head h
           LEFT JOIN membership_view m ON m.id = $1 AND m.organization_id = $2",
        |q| q.bind(id.to_string()).bind(organization_id.to_string()),
    )
    .await
}

/// An invitation by id within an organization.
pub async fn invitation(
    conn: &mut PgConnection,
    organization_id: &str,
    id: &str,
) -> Result<Snapshot<super::InvitationRecord>, sqlx::Error> {
    snapshot(
        conn,
        "SELECT h.head_seq AS head, i.* FROM log_head h
           LEFT JOIN invitations i ON i.id = $1 AND i.organization_id = $2",
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
pub async fn user_by_key(conn: &mut PgConnection, key: &UserKey) -> Result<Snapshot<UserRecord>, sqlx::Error> {
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
    snapshot(conn, sql, |q| q.bind(value.clone())).await
}

/// The live organization with `slug`.
pub async fn organization_by_slug(conn: &mut PgConnection, slug: &str) -> Result<Snapshot<OrganizationRecord>, sqlx::Error> {
    snapshot(
        conn,
        "SELECT h.head_seq AS head, o.* FROM log_head h LEFT JOIN LATERAL (
            SELECT * FROM organizations WHERE slug = $1 AND deleted_at IS NULL ORDER BY id COLLATE \"C\" LIMIT 1) o ON true",
        |q| q.bind(slug.to_string()),
    )
    .await
}

/// The user's current membership of the organization.
pub async fn membership_of(
    conn: &mut PgConnection,
    organization_id: &str,
    user_id: &str,
) -> Result<Snapshot<MembershipRecord>, sqlx::Error> {
    snapshot(
        conn,
        "SELECT h.head_seq AS head, m.* FROM log_head h LEFT JOIN LATERAL (
            SELECT * FROM membership_view WHERE organization_id = $1 AND user_id = $2 AND deleted_at IS NULL
             ORDER BY updated_at DESC NULLS LAST, id COLLATE \"C\" LIMIT 1) m ON true",
        |q| q.bind(organization_id.to_string()).bind(user_id.to_string()),
    )
    .await
}

/// The live role with `key`, else the live one with its other spelling (`admin` ↔ `org:admin`,
/// `basic_member` ↔ `org:member`); the least id among equals.
pub async fn role_by_key(conn: &mut PgConnection, key: &str) -> Result<Snapshot<RoleRecord>, sqlx::Error> {
    snapshot(
        conn,
        "SELECT h.head_seq AS head, r.* FROM log_head h LEFT JOIN LATERAL (
            SELECT * FROM role_view WHERE deleted_at IS NULL AND (key = $1 OR key = clerk_mirror_role_alias($1))
             ORDER BY key <> $1, id COLLATE \"C\" LIMIT 1) r ON true",
        |q| q.bind(key.to_string()),
    )
    .await
}

/// What each check `(organization, user, permission)` needs, in order, at one snapshot (one
/// statement), with the head of that snapshot.
pub async fn standings(
    pool: &mut PgConnection,
    checks: &[(&str, &str, &str)],
) -> Result<(Vec<Standing>, i64), sqlx::Error> {
    let column = |i: usize| checks.iter().map(|c| [c.0, c.1, c.2][i].to_string()).collect::<Vec<_>>();
    let rows = sqlx::query(
        "SELECT h.head_seq AS head,
                coalesce((SELECT u.deleted_at IS NULL FROM users u WHERE u.id = n.uid), false) AS user_live,
                coalesce((SELECT o.deleted_at IS NULL FROM organizations o WHERE o.id = n.oid), false) AS organization_live,
                m.id AS membership_id, m.role, m.permissions_source,
                coalesce(n.perm = ANY(m.permissions), false) AS has,
                coalesce(n.perm = ANY(s.permissions), false) AS snapshot_has
           FROM log_head h
          CROSS JOIN unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS n(oid, uid, perm, ord)
           LEFT JOIN LATERAL (
                SELECT * FROM membership_view v WHERE v.organization_id = n.oid AND v.user_id = n.uid AND v.deleted_at IS NULL
                 ORDER BY v.updated_at DESC NULLS LAST, v.id COLLATE \"C\" LIMIT 1) m ON true
           LEFT JOIN memberships s ON s.id = m.id
          ORDER BY n.ord",
    )
    .bind(column(0))
    .bind(column(1))
    .bind(column(2))
    .fetch_all(&mut *pool)
    .await?;
    let head = match rows.first() {
        Some(row) => row.try_get("head")?,
        None => head(&mut *pool).await?,
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let member = match row.try_get::<Option<String>, _>("membership_id")? {
            None => None,
            Some(_) => {
                let source: Option<String> = row.try_get("permissions_source")?;
                Some(Member {
                    role: row.try_get::<Option<String>, _>("role")?.unwrap_or_default(),
                    has: row.try_get("has")?,
                    source: source.as_deref().and_then(Source::from_view).unwrap_or(Source::Snapshot),
                    snapshot_has: row.try_get("snapshot_has")?,
                })
            }
        };
        out.push(Standing {
            user_live: row.try_get("user_live")?,
            organization_live: row.try_get("organization_live")?,
            member,
        });
    }
    Ok((out, head))
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

/// What entitlement checks of `payers` need, at one snapshot: each payer's items (in id order),
/// every plan, and the head.
pub async fn entitlement_facts<'e>(
    pool: impl sqlx::PgExecutor<'e>,
    payers: &[&str],
) -> Result<(Vec<Vec<super::entitlement::ItemFacts>>, Vec<super::entitlement::PlanFacts>, i64), sqlx::Error> {
    use super::entitlement::{ItemFacts, PlanFacts};
    let row = sqlx::query(
        "SELECT h.head_seq AS head,
                coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'payer', i.payer, 'id', i.id, 'status', i.status, 'plan_id', i.plan_id,
                            'period_end_us', (extract(epoch FROM i.period_end) * 1000000)::bigint,
                            'deleted', i.deleted_at IS NOT NULL) ORDER BY i.id COLLATE \"C\")
                            FROM subscription_items i WHERE i.payer = ANY($1)), '[]') AS items,
                coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'id', p.id, 'payer_type', p.payer_type, 'features', p.features,
                            'is_default', p.is_default, 'deleted', p.deleted_at IS NOT NULL))
                            FROM plans p), '[]') AS plans
           FROM log_head h",
    )
    .bind(payers)
    .fetch_one(pool)
    .await?;
    let bad = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
    #[derive(serde::Deserialize)]
    struct Item {
        payer: Option<String>,
        id: String,
        status: Option<String>,
        plan_id: Option<String>,
        period_end_us: Option<i64>,
        deleted: bool,
    }
    #[derive(serde::Deserialize)]
    struct Plan {
        id: String,
        payer_type: Option<String>,
        features: Vec<String>,
        is_default: bool,
        deleted: bool,
    }
    let items: Vec<Item> = serde_json::from_value(row.try_get("items")?).map_err(bad)?;
    let plans: Vec<Plan> = serde_json::from_value(row.try_get("plans")?).map_err(bad)?;
    let by_payer = payers
        .iter()
        .map(|payer| {
            items
                .iter()
                .filter(|i| i.payer.as_deref() == Some(*payer))
                .map(|i| ItemFacts {
                    id: i.id.clone(),
                    status: i.status.clone(),
                    plan_id: i.plan_id.clone(),
                    period_end: i.period_end_us.and_then(chrono::DateTime::from_timestamp_micros),
                    deleted: i.deleted,
                })
                .collect()
        })
        .collect();
    let plans = plans
        .into_iter()
        .map(|p| PlanFacts {
            id: p.id,
            payer_type: p.payer_type,
            features: p.features,
            is_default: p.is_default,
            deleted: p.deleted,
        })
        .collect();
    Ok((by_payer, plans, row.try_get("head")?))
}

/// A payer's subscription, its items in id order, and its latest payment's status.
type PayersSubscription = (
    Stored<super::SubscriptionRecord>,
    Vec<Stored<super::SubscriptionItemRecord>>,
    Option<String>,
);

/// The payer's subscription (its most recently updated live one) with its items in id order and
/// the status of its latest payment's newest attempt, if it has one, and the head, at one
/// snapshot.
pub async fn subscription_of(pool: &PgPool, payer: &str) -> Result<(Option<PayersSubscription>, i64), sqlx::Error> {
    let row = sqlx::query(
        "WITH s AS (SELECT * FROM subscriptions WHERE payer = $1 AND deleted_at IS NULL
                     ORDER BY updated_at DESC NULLS LAST, id COLLATE \"C\" DESC LIMIT 1)
         SELECT h.head_seq AS head, to_jsonb(s.*) AS subscription,
                (SELECT coalesce(jsonb_agg(to_jsonb(i.*) ORDER BY i.id COLLATE \"C\"), '[]')
                   FROM subscription_items i WHERE i.subscription_id = s.id) AS items,
                (SELECT a.status FROM payment_attempts a
                  WHERE a.payment_id = s.latest_payment_id AND a.deleted_at IS NULL
                  ORDER BY a.updated_at DESC NULLS LAST, a.id COLLATE \"C\" DESC LIMIT 1) AS payment_status
           FROM log_head h LEFT JOIN s ON true",
    )
    .bind(payer)
    .fetch_one(pool)
    .await?;
    let head: i64 = row.try_get("head")?;
    let Some(subscription) = row.try_get::<Option<serde_json::Value>, _>("subscription")? else {
        return Ok((None, head));
    };
    fn stored<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<Stored<T>, sqlx::Error> {
        let update_cursor = v.get("update_cursor").and_then(serde_json::Value::as_i64).unwrap_or_default();
        let record = serde_json::from_value(v).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(Stored { record, update_cursor })
    }
    let items: Vec<serde_json::Value> = match row.try_get::<Option<serde_json::Value>, _>("items")? {
        Some(serde_json::Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let items = items.into_iter().map(stored).collect::<Result<_, _>>()?;
    let payment_status: Option<String> = row.try_get("payment_status")?;
    Ok((Some((stored(subscription)?, items, payment_status)), head))
}

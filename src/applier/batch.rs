//! One applier batch, in one transaction: read pending inbox rows in arrival order, load the
//! stored state of everything they touch (one query per table), apply the rules in memory,
//! write back what changed with set-based SQL, append the changes with gap-free seqs taken from
//! `log_head` (each marked with the batch's last seq, so readers take the batch whole), mark
//! each inbox row applied / skipped / failed, and NOTIFY.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use super::event::{self, Action, InboxEvent};
use super::rules::{Origin, Slot, WorkingSet};
use crate::store::{MembershipRecord, OrganizationRecord, UserRecord, Version, Versioned};

/// The channel the applier notifies after each batch that appended changes (a wake-up only).
pub const CHANGES_CHANNEL: &str = "clerk_mirror_changes";

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Inbox rows taken.
    pub events: usize,
    pub applied: usize,
    pub skipped: usize,
    /// Dead letters.
    pub failed: usize,
    /// Changes appended.
    pub changes: usize,
    /// Each row taken: its event type, its new status and Clerk's event time (for metrics).
    pub rows: Vec<(String, &'static str, Option<chrono::DateTime<chrono::Utc>>)>,
}

#[derive(sqlx::FromRow)]
struct VersionColumns {
    version_updated_ms: Option<i64>,
    version_event_ms: Option<i64>,
    version_key: Option<String>,
    update_cursor: i64,
}

impl VersionColumns {
    fn version(&self) -> Option<Version> {
        Some(Version {
            updated_ms: self.version_updated_ms?,
            event_ms: self.version_event_ms?,
            key: self.version_key.clone()?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct Loaded<T> {
    #[sqlx(flatten)]
    record: T,
    #[sqlx(flatten)]
    version: VersionColumns,
}

impl<T> Loaded<T> {
    fn into_slot(self) -> Slot<T> {
        let version = self.version.version();
        Slot {
            current: Some(Versioned {
                record: self.record,
                version,
                update_cursor: self.version.update_cursor,
            }),
            dirty: false,
        }
    }
}

impl BatchOutcome {
    /// Adds another batch's outcome to this one.
    pub fn add(&mut self, other: BatchOutcome) {
        self.events += other.events;
        self.applied += other.applied;
        self.skipped += other.skipped;
        self.failed += other.failed;
        self.changes += other.changes;
        self.rows.extend(other.rows);
    }
}

/// Applies up to `limit` pending inbox rows in one transaction on `conn`.
pub async fn apply_batch(conn: &mut PgConnection, limit: i64) -> Result<BatchOutcome, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut tx = sqlx::Connection::begin(conn).await?;
    let head: i64 = sqlx::query_scalar("SELECT head_seq FROM log_head FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    let rows: Vec<InboxEvent> = sqlx::query_as(
        "SELECT id, source, event_key, event_type, event_time, received_at, body
           FROM inbox WHERE status = 'pending' ORDER BY id LIMIT $1 FOR UPDATE",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(BatchOutcome::default());
    }
    let read = started.elapsed();
    let parsed: Vec<(InboxEvent, Result<Action, event::ParseError>)> = rows
        .into_iter()
        .map(|row| {
            let action = event::parse(&row);
            (row, action)
        })
        .collect();

    let parse = started.elapsed();
    let mut ws = load(&mut tx, &parsed, head).await?;
    let loaded = started.elapsed();
    let mut outcome = BatchOutcome {
        events: parsed.len(),
        ..Default::default()
    };
    let mut statuses = Vec::with_capacity(parsed.len());
    for (row, action) in parsed {
        let (status, error) = match action {
            Ok(Action::Skip) => {
                outcome.skipped += 1;
                ("skipped", None)
            }
            Ok(action) => {
                ws.apply(
                    action,
                    &Origin {
                        source: row.change_source(),
                        inbox_id: Some(row.id),
                    },
                );
                outcome.applied += 1;
                ("applied", None)
            }
            Err(e) => {
                tracing::warn!(inbox_id = row.id, error = %e, "dead letter");
                outcome.failed += 1;
                ("failed", Some(e.0.replace('\0', "")))
            }
        };
        statuses.push(json!({ "id": row.id, "status": status, "error": error }));
        outcome.rows.push((
            row.event_type.clone().unwrap_or_else(|| "none".into()),
            status,
            row.event_time,
        ));
    }
    outcome.changes = ws.changes.len();
    let ruled = started.elapsed();
    write(&mut tx, &ws).await?;
    let written = started.elapsed();
    sqlx::query(
        "UPDATE inbox SET status = r.status, error = r.error, processed_at = now(), attempts = inbox.attempts + 1
           FROM jsonb_to_recordset($1) AS r(id bigint, status text, error text)
          WHERE inbox.id = r.id",
    )
    .bind(Json(Value::Array(statuses)))
    .execute(&mut *tx)
    .await?;
    if ws.head != head {
        sqlx::query("UPDATE log_head SET head_seq = $1")
            .bind(ws.head)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANGES_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    tracing::debug!(
        events = outcome.events,
        read_ms = ms(read),
        parse_ms = ms(parse - read),
        load_ms = ms(loaded - parse),
        rules_ms = ms(ruled - loaded),
        write_ms = ms(written - ruled),
        finish_ms = ms(started.elapsed() - written),
        "batch applied"
    );
    Ok(outcome)
}

/// Loads every entity the batch may touch: the entities its events name, the organizations and
/// users of its membership events, and every membership of a deleted organization or user.
async fn load(
    tx: &mut PgConnection,
    parsed: &[(InboxEvent, Result<Action, event::ParseError>)],
    head: i64,
) -> Result<WorkingSet, sqlx::Error> {
    let mut users = BTreeSet::new();
    let mut orgs = BTreeSet::new();
    let mut memberships = BTreeSet::new();
    let mut deleted_users = BTreeSet::new();
    let mut deleted_orgs = BTreeSet::new();
    for (_, action) in parsed {
        match action {
            Ok(Action::UpsertUser(u, _)) => {
                users.insert(u.id.clone());
            }
            Ok(Action::DeleteUser { id, .. }) => {
                users.insert(id.clone());
                deleted_users.insert(id.clone());
            }
            Ok(Action::UpsertOrganization(o, _)) => {
                orgs.insert(o.id.clone());
            }
            Ok(Action::DeleteOrganization { id, .. }) => {
                orgs.insert(id.clone());
                deleted_orgs.insert(id.clone());
            }
            Ok(Action::UpsertMembership(m, _)) => {
                memberships.insert(m.id.clone());
                orgs.insert(m.organization_id.clone());
                users.insert(m.user_id.clone());
            }
            Ok(Action::DeleteMembership {
                id,
                organization_id,
                user_id,
                ..
            }) => {
                memberships.insert(id.clone());
                orgs.insert(organization_id.clone());
                users.insert(user_id.clone());
            }
            Ok(Action::Skip) | Err(_) => {}
        }
    }
    let vec = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>();
    let mut ws = WorkingSet::new(head);
    let loaded: Vec<Loaded<UserRecord>> = sqlx::query_as("SELECT * FROM users WHERE id = ANY($1)")
        .bind(vec(users))
        .fetch_all(&mut *tx)
        .await?;
    ws.users = loaded
        .into_iter()
        .map(|l| (l.record.id.clone(), l.into_slot()))
        .collect();
    let loaded: Vec<Loaded<OrganizationRecord>> = sqlx::query_as("SELECT * FROM organizations WHERE id = ANY($1)")
        .bind(vec(orgs))
        .fetch_all(&mut *tx)
        .await?;
    ws.organizations = loaded
        .into_iter()
        .map(|l| (l.record.id.clone(), l.into_slot()))
        .collect();
    let loaded: Vec<Loaded<MembershipRecord>> = sqlx::query_as(
        "SELECT * FROM memberships WHERE id = ANY($1) OR organization_id = ANY($2) OR user_id = ANY($3)",
    )
    .bind(vec(memberships))
    .bind(vec(deleted_orgs))
    .bind(vec(deleted_users))
    .fetch_all(&mut *tx)
    .await?;
    ws.memberships = loaded
        .into_iter()
        .map(|l| (l.record.id.clone(), l.into_slot()))
        .collect();
    Ok(ws)
}

/// The JSON row of a versioned record for `jsonb_to_recordset`.
fn row_of<T: serde::Serialize>(v: &Versioned<T>) -> Value {
    let mut row = serde_json::to_value(&v.record).expect("records serialise");
    let map = row.as_object_mut().expect("records are objects");
    map.insert(
        "version_updated_ms".into(),
        json!(v.version.as_ref().map(|x| x.updated_ms)),
    );
    map.insert("version_event_ms".into(), json!(v.version.as_ref().map(|x| x.event_ms)));
    map.insert("version_key".into(), json!(v.version.as_ref().map(|x| x.key.clone())));
    map.insert("update_cursor".into(), json!(v.update_cursor));
    row
}

fn dirty<T: serde::Serialize>(slots: &std::collections::BTreeMap<String, Slot<T>>) -> Vec<Value> {
    slots
        .values()
        .filter(|s| s.dirty)
        .filter_map(|s| s.current.as_ref().map(row_of))
        .collect()
}

const VERSION_COLUMNS: &str =
    "version_updated_ms bigint, version_event_ms bigint, version_key text, update_cursor bigint";

/// Writes the dirty entities and the changes.
async fn write(tx: &mut PgConnection, ws: &WorkingSet) -> Result<(), sqlx::Error> {
    let users = dirty(&ws.users);
    if !users.is_empty() {
        upsert(
            tx,
            "users",
            "id text, external_id text, username text, first_name text, last_name text, image_url text, \
             primary_email_address text, banned boolean, locked boolean, created_at timestamptz, \
             updated_at timestamptz, last_sign_in_at timestamptz, deleted_at timestamptz, data jsonb",
            users,
        )
        .await?;
        // The lookup rows of every written user are rebuilt from its new state.
        let written: Vec<&UserRecord> = ws
            .users
            .values()
            .filter(|s| s.dirty)
            .filter_map(|s| s.current.as_ref())
            .map(|v| &v.record)
            .collect();
        let ids: Vec<&str> = written.iter().map(|u| u.id.as_str()).collect();
        let emails: Vec<Value> = written
            .iter()
            .flat_map(|u| u.email_addresses().into_iter().map(move |(id, a)| json!([u.id, id, a])))
            .collect();
        let phones: Vec<Value> = written
            .iter()
            .flat_map(|u| u.phone_numbers().into_iter().map(move |(id, n)| json!([u.id, id, n])))
            .collect();
        for (table, key, value, rows) in [
            ("user_email_addresses", "email_id", "email_address", emails),
            ("user_phone_numbers", "phone_id", "phone_number", phones),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE user_id = ANY($1)"
            )))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
            if !rows.is_empty() {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO {table} (user_id, {key}, {value})
                     SELECT r->>0, r->>1, r->>2 FROM jsonb_array_elements($1) AS r"
                )))
                .bind(Json(Value::Array(rows)))
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    let orgs = dirty(&ws.organizations);
    if !orgs.is_empty() {
        upsert(
            tx,
            "organizations",
            "id text, name text, slug text, image_url text, members_count integer, created_at timestamptz, \
             updated_at timestamptz, deleted_at timestamptz, data jsonb",
            orgs,
        )
        .await?;
    }
    let memberships = dirty(&ws.memberships);
    if !memberships.is_empty() {
        upsert(
            tx,
            "memberships",
            "id text, organization_id text, user_id text, role text, role_name text, permissions text[], \
             created_at timestamptz, updated_at timestamptz, deleted_at timestamptz, data jsonb",
            memberships,
        )
        .await?;
    }
    if !ws.changes.is_empty() {
        let rows: Vec<Value> = ws
            .changes
            .iter()
            .map(|c| {
                json!({
                    "seq": c.seq, "entity_type": c.entity_type.as_str(), "entity_id": c.entity_id,
                    "operation": c.operation.as_str(), "organization_id": c.organization_id,
                    "user_id": c.user_id, "state": c.state, "previous": c.previous,
                    "source": c.source, "inbox_id": c.inbox_id, "batch_last": ws.head,
                })
            })
            .collect();
        sqlx::query(
            "INSERT INTO changes (seq, entity_type, entity_id, operation, organization_id, user_id, state, previous, source, inbox_id, batch_last)
             SELECT seq, entity_type, entity_id, operation, organization_id, user_id, state, previous, source, inbox_id, batch_last
               FROM jsonb_to_recordset($1) AS r(seq bigint, entity_type text, entity_id text, operation text,
                    organization_id text, user_id text, state jsonb, previous jsonb, source text, inbox_id bigint,
                    batch_last bigint)",
        )
        .bind(Json(Value::Array(rows)))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// `INSERT … ON CONFLICT (id) DO UPDATE` of JSON rows into `table`, whose record columns are
/// `columns` (name and type, as for `jsonb_to_recordset`).
async fn upsert(tx: &mut PgConnection, table: &str, columns: &str, rows: Vec<Value>) -> Result<(), sqlx::Error> {
    let definition = format!("{columns}, {VERSION_COLUMNS}");
    let names: Vec<&str> = definition
        .split(',')
        .map(|c| c.split_whitespace().next().unwrap_or_default())
        .collect();
    let list = names.join(", ");
    let updates: Vec<String> = names
        .iter()
        .filter(|n| **n != "id")
        .map(|n| format!("{n} = EXCLUDED.{n}"))
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({list}) SELECT {list} FROM jsonb_to_recordset($1) AS r({definition})
         ON CONFLICT (id) DO UPDATE SET {}",
        updates.join(", ")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(Json(Value::Array(rows)))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Marks the oldest pending row failed with `error` (used when a batch of one cannot commit).
pub async fn dead_letter_first_pending(conn: &mut PgConnection, error: &str) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE inbox SET status = 'failed', error = $1, processed_at = now(), attempts = attempts + 1
          WHERE id = (SELECT id FROM inbox WHERE status = 'pending' ORDER BY id LIMIT 1)
          RETURNING id",
    )
    .bind(error.replace('\0', ""))
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| r.get::<i64, _>(0)))
}

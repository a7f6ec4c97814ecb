//! One applier batch, in one transaction: read pending inbox rows in arrival order, load the
//! stored state of everything they touch (one query per table), apply the rules in memory,
//! write back what changed with set-based SQL, append the changes with gap-free seqs taken from
//! `log_head` (each marked with the batch's last seq, so readers take the batch whole), mark
//! each inbox row applied / skipped / failed, and NOTIFY.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use super::event::{self, Action, InboxEvent};
use super::rules::{Origin, Slot, WorkingSet};
use crate::db::CHANGES_CHANNEL;
use crate::store::kind::{for_each_kind, match_record};
use crate::store::{EntityType, Kind, Record, Version, Versioned};

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
    /// Values this build does not know in what was written (`Kind::unrecognised`), by kind.
    pub unrecognised: Vec<(EntityType, String)>,
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
    let (head, log_id): (i64, String) = sqlx::query_as("SELECT head_seq, log_id FROM log_head FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    let rows: Vec<InboxEvent> = crate::inbox::pending(&mut tx, limit).await?;
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
    // The raw event types some destination selects, read once a batch has a row not applied
    // (after `log_head` is locked: a destination created meanwhile starts after this batch).
    let mut selected: Option<Vec<String>> = None;
    let mut raw_events = Vec::new();
    for (row, action) in parsed {
        let (status, error) = match action {
            Ok(Action::Skip) => {
                outcome.skipped += 1;
                if let (Some(t), Some(body)) = (row.event_type.as_deref(), row.body.as_deref()) {
                    let selections = match &selected {
                        Some(s) => s,
                        None => selected.insert(selected_event_types(&mut tx).await?),
                    };
                    if crate::outbound::events::selected(selections, t) {
                        ws.head += 1;
                        raw_events.push(raw_event(ws.head, &row, t, body));
                    }
                }
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
    for_each_kind!(K => {
        if let Some(slots) = ws.slots::<K>() {
            let written = slots.values().filter(|s| s.dirty).filter_map(|s| s.current.as_ref());
            for value in written.filter_map(|v| v.record.unrecognised()) {
                outcome.unrecognised.push((K::TYPE, value.to_string()));
            }
        }
    });
    let ruled = started.elapsed();
    write(&mut tx, &ws, &log_id).await?;
    write_raw_events(&mut tx, raw_events, ws.head).await?;
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

/// The ids a batch names, by kind: the entities its events name and their parents, and which
/// of them it deletes.
#[derive(Default)]
struct Touched {
    ids: BTreeMap<EntityType, BTreeSet<String>>,
    deleted: BTreeMap<EntityType, BTreeSet<String>>,
}

impl Touched {
    fn add<K: Kind>(&mut self, record: &K, deletes: bool) {
        self.ids.entry(K::TYPE).or_default().insert(record.id().to_string());
        if deletes {
            self.deleted.entry(K::TYPE).or_default().insert(record.id().to_string());
        }
        for (parent, _) in K::PARENTS {
            if let Some(id) = record.parent(*parent) {
                self.ids.entry(*parent).or_default().insert(id.to_string());
            }
        }
    }

    fn ids(map: &BTreeMap<EntityType, BTreeSet<String>>, t: EntityType) -> Vec<String> {
        map.get(&t).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

/// Loads every entity the batch may touch: the entities its events name, their parents, and
/// every child of a deleted entity (one query per kind).
async fn load(
    tx: &mut PgConnection,
    parsed: &[(InboxEvent, Result<Action, event::ParseError>)],
    head: i64,
) -> Result<WorkingSet, sqlx::Error> {
    let mut touched = Touched::default();
    for (_, action) in parsed {
        match action {
            Ok(Action::Upsert(record, _)) => match_record!(record, r => touched.add(r, false)),
            Ok(Action::UpsertAll(all)) => {
                for (record, _) in all {
                    match_record!(record, r => touched.add(r, false));
                }
            }
            Ok(Action::Delete(record)) => match_record!(record, r => touched.add(r, true)),
            Ok(Action::Derive(d)) => {
                touched.ids.entry(d.entity_type).or_default().insert(d.id.clone());
            }
            Ok(Action::Skip) | Err(_) => {}
        }
    }
    let mut ws = WorkingSet::new(head);
    for_each_kind!(K => {
        let ids = Touched::ids(&touched.ids, K::TYPE);
        let parents: Vec<(&str, Vec<String>)> = K::PARENTS
            .iter()
            .map(|(parent, column)| (*column, Touched::ids(&touched.deleted, *parent)))
            .filter(|(_, ids)| !ids.is_empty())
            .collect();
        if !ids.is_empty() || !parents.is_empty() {
            let mut sql = format!("SELECT * FROM {} WHERE id = ANY($1)", K::TABLE);
            for (i, (column, _)) in parents.iter().enumerate() {
                sql.push_str(&format!(" OR {column} = ANY(${})", i + 2));
            }
            let mut query = sqlx::query_as::<_, Loaded<K>>(sqlx::AssertSqlSafe(sql)).bind(ids);
            for (_, ids) in parents {
                query = query.bind(ids);
            }
            let loaded = query.fetch_all(&mut *tx).await?;
            ws.slots_mut::<K>()
                .extend(loaded.into_iter().map(|l| (l.record.id().to_string(), l.into_slot())));
        }
    });
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

/// The raw event types selected by any destination (paused ones too: they resume where they
/// stopped).
async fn selected_event_types(tx: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT t FROM destinations, unnest(event_types) t")
        .fetch_all(&mut *tx)
        .await
}

/// A raw event's row of the log (see `store::changes::RAW_EVENT`): keyed by the Clerk object it
/// is about (`data.id`, else the delivery's key), naming the user and organization it concerns.
fn raw_event(seq: i64, row: &super::event::InboxEvent, event_type: &str, body: &[u8]) -> Value {
    let data = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("data").cloned());
    let field = |name: &str| data.as_ref().and_then(|d| d.get(name)).and_then(Value::as_str).map(str::to_string);
    use base64::Engine as _;
    json!({
        "seq": seq, "entity_id": field("id").unwrap_or_else(|| row.event_key.clone()),
        "organization_id": field("organization_id"), "user_id": field("user_id"),
        "state": {"type": event_type, "key": row.event_key},
        "raw": base64::engine::general_purpose::STANDARD.encode(body),
        "source": row.change_source(), "inbox_id": row.id,
    })
}

/// Appends the batch's raw events (each marked with the batch's last seq, like its changes).
async fn write_raw_events(tx: &mut PgConnection, rows: Vec<Value>, batch_last: i64) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO changes (seq, entity_type, entity_id, operation, organization_id, user_id, state, raw, source, inbox_id, batch_last)
         SELECT seq, 'event', entity_id, 'received', organization_id, user_id, state, decode(raw, 'base64'), source, inbox_id, $2
           FROM jsonb_to_recordset($1) AS r(seq bigint, entity_id text, organization_id text, user_id text, state jsonb,
                raw text, source text, inbox_id bigint)",
    )
    .bind(Json(Value::Array(rows)))
    .bind(batch_last)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Writes the dirty entities and the changes.
async fn write(tx: &mut PgConnection, ws: &WorkingSet, log_id: &str) -> Result<(), sqlx::Error> {
    for_each_kind!(K => {
        if let Some(slots) = ws.slots::<K>() {
            let rows = match K::STORES_MESSAGE {
                true => dirty_with_messages(slots, log_id),
                false => dirty(slots),
            };
            if !rows.is_empty() {
                upsert(tx, K::TABLE, K::COLUMNS, K::STORES_MESSAGE, rows).await?;
                let written: Vec<&K> = slots
                    .values()
                    .filter(|s| s.dirty)
                    .filter_map(|s| s.current.as_ref())
                    .map(|v| &v.record)
                    .collect();
                K::after_write(tx, &written).await?;
            }
        }
    });
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

/// [`dirty`]'s rows, each with the message a read sends of it, encoded now (base64 in the
/// JSON row; see `Kind::STORES_MESSAGE`), written by the same upsert.
fn dirty_with_messages<K: Kind>(slots: &std::collections::BTreeMap<String, Slot<K>>, log_id: &str) -> Vec<Value> {
    use base64::Engine;
    use prost::Message;
    slots
        .values()
        .filter(|s| s.dirty)
        .filter_map(|s| s.current.as_ref())
        .map(|v| {
            let mut row = row_of(v);
            let message = v.record.message(v.update_cursor, log_id).encode_to_vec();
            let map = row.as_object_mut().expect("records are objects");
            map.insert(
                "message".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(message)),
            );
            map.insert("message_format".into(), json!(crate::store::kind::MESSAGE_FORMAT));
            row
        })
        .collect()
}

/// `INSERT … ON CONFLICT (id) DO UPDATE` of JSON rows into `table`, whose record columns are
/// `columns` (name and type, as for `jsonb_to_recordset`), and with `messages` its stored
/// message (base64 in the row).
async fn upsert(
    tx: &mut PgConnection,
    table: &str,
    columns: &str,
    messages: bool,
    rows: Vec<Value>,
) -> Result<(), sqlx::Error> {
    let mut definition = format!("{columns}, {VERSION_COLUMNS}");
    if messages {
        definition.push_str(", message text, message_format integer");
    }
    let names: Vec<&str> = definition
        .split(',')
        .map(|c| c.split_whitespace().next().unwrap_or_default())
        .collect();
    let list = names.join(", ");
    let values = names
        .iter()
        .map(|n| match *n {
            "message" => "decode(message, 'base64')",
            n => n,
        })
        .collect::<Vec<_>>()
        .join(", ");
    let updates: Vec<String> = names
        .iter()
        .filter(|n| **n != "id")
        .map(|n| format!("{n} = EXCLUDED.{n}"))
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({list}) SELECT {values} FROM jsonb_to_recordset($1) AS r({definition})
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

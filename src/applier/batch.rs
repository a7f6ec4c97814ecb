//! One applier batch, in one transaction: read pending inbox rows in arrival order, load the
//! stored state of everything they touch (one query per table), apply the rules in memory,
//! write back what changed with set-based SQL, append the changes with gap-free seqs taken from
//! `log_head` (each marked with the batch's last seq, so readers take the batch whole), mark
//! each inbox row applied / skipped / failed, and NOTIFY.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::value::RawValue;
use serde_json::{Value, json};
use sqlx::{PgConnection, Row};
use tracing::Instrument;

use super::event::{self, Action, InboxEvent};
use super::rules::{Change, Origin, Slot, Slots, WorkingSet};
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
    // A span for batches that apply something (an empty look at the inbox is not traced).
    let span = tracing::info_span!("apply_batch", otel.name = "apply batch", events = rows.len());
    // Linked to each traced webhook it applies (not their child: one batch serves many traces);
    // each change keeps its webhook's trace context, which the hub's fan-out continues.
    let mut traces = std::collections::HashMap::new();
    for row in &rows {
        if let Some(t) = &row.trace_context {
            crate::telemetry::link_to(&span, t);
            traces.insert(row.id, t.clone());
        }
    }
    async move {
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
        let mut statuses: (Vec<i64>, Vec<&str>, Vec<Option<String>>) = Default::default();
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
            statuses.0.push(row.id);
            statuses.1.push(status);
            statuses.2.push(error);
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
        write(&mut tx, &ws, &log_id, &traces).await?;
        write_raw_events(&mut tx, raw_events, ws.head).await?;
        let written = started.elapsed();
        sqlx::query(
            "UPDATE inbox SET status = r.status, error = r.error, processed_at = now(), attempts = inbox.attempts + 1
               FROM unnest($1::bigint[], $2::text[], $3::text[]) AS r(id, status, error)
              WHERE inbox.id = r.id",
        )
        .bind(statuses.0)
        .bind(statuses.1)
        .bind(statuses.2)
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
    .instrument(span)
    .await
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

/// The dirty entities of one kind, each with its fields as JSON text: the state of the change
/// that made it, when this batch made one (the record a change states is the record its slot
/// then holds, with the change's seq as its `update_cursor`), else serialised now.
fn dirty<'a, T: Kind>(slots: &'a Slots<T>, changes: &'a [Change]) -> Vec<(&'a Versioned<T>, Cow<'a, str>)> {
    let first = changes.first().map_or(0, |c| c.seq);
    let made_by = |v: &Versioned<T>| {
        let c = changes.get(usize::try_from(v.update_cursor - first).ok()?)?;
        (c.seq == v.update_cursor && c.entity_type == T::TYPE && c.entity_id == v.record.id()).then_some(c)
    };
    slots
        .values()
        .filter(|s| s.dirty)
        .filter_map(|s| s.current.as_ref())
        .map(|v| {
            let json = match made_by(v) {
                Some(c) => Cow::Borrowed(c.state.as_str()),
                None => Cow::Owned(serde_json::to_string(&v.record).expect("records serialise")),
            };
            (v, json)
        })
        .collect()
}

/// The raw event types selected by any destination (paused ones too: they resume where they
/// stopped).
async fn selected_event_types(tx: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT t FROM destinations, unnest(event_types) t")
        .fetch_all(&mut *tx)
        .await
}

/// A raw event's row of the log (see `store::changes::RAW_EVENT`): keyed by the Clerk object it
/// is about (`data.id`, else the delivery's key), naming the user and organization it concerns.
struct RawEvent {
    seq: i64,
    entity_id: String,
    organization_id: Option<String>,
    user_id: Option<String>,
    state: String,
    raw: Vec<u8>,
    source: String,
    inbox_id: i64,
}

fn raw_event(seq: i64, row: &super::event::InboxEvent, event_type: &str, body: &[u8]) -> RawEvent {
    let data = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("data").cloned());
    let field = |name: &str| data.as_ref().and_then(|d| d.get(name)).and_then(Value::as_str).map(str::to_string);
    RawEvent {
        seq,
        entity_id: field("id").unwrap_or_else(|| row.event_key.clone()),
        organization_id: field("organization_id"),
        user_id: field("user_id"),
        state: json!({"type": event_type, "key": row.event_key}).to_string(),
        raw: body.to_vec(),
        source: row.change_source(),
        inbox_id: row.id,
    }
}

/// Appends the batch's raw events (each marked with the batch's last seq, like its changes).
async fn write_raw_events(tx: &mut PgConnection, rows: Vec<RawEvent>, batch_last: i64) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&RawEvent) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO changes (seq, entity_type, entity_id, operation, organization_id, user_id, state, raw, source, inbox_id, batch_last)
         SELECT seq, 'event', entity_id, 'received', organization_id, user_id, state::jsonb, raw, source, inbox_id, $9
           FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[], $8::bigint[])
                AS r(seq, entity_id, organization_id, user_id, state, raw, source, inbox_id)",
    )
    .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
    .bind(column(|r| Some(r.entity_id.clone())))
    .bind(column(|r| r.organization_id.clone()))
    .bind(column(|r| r.user_id.clone()))
    .bind(column(|r| Some(r.state.clone())))
    .bind(rows.iter().map(|r| r.raw.as_slice()).collect::<Vec<_>>())
    .bind(column(|r| Some(r.source.clone())))
    .bind(rows.iter().map(|r| r.inbox_id).collect::<Vec<_>>())
    .bind(batch_last)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Writes the dirty entities and the changes.
/// `traces`: the trace context of each traced inbox row, by id, kept with its changes.
async fn write(
    tx: &mut PgConnection,
    ws: &WorkingSet,
    log_id: &str,
    traces: &std::collections::HashMap<i64, String>,
) -> Result<(), sqlx::Error> {
    for_each_kind!(K => {
        if let Some(slots) = ws.slots::<K>() {
            let rows = dirty(slots, &ws.changes);
            if !rows.is_empty() {
                upsert::<K>(tx, &rows, log_id).await?;
                let written: Vec<&K> = rows.iter().map(|(v, _)| &v.record).collect();
                K::after_write(tx, &written).await?;
            }
        }
    });
    if !ws.changes.is_empty() {
        let changes = &ws.changes;
        let text = |f: fn(&Change) -> Option<&str>| changes.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO changes (seq, entity_type, entity_id, operation, organization_id, user_id, state, previous, source, inbox_id, batch_last, trace_context)
             SELECT seq, entity_type, entity_id, operation, organization_id, user_id, state::jsonb, previous::jsonb, source, inbox_id, $11, trace
               FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                           $9::text[], $10::bigint[], $12::text[])
                    AS r(seq, entity_type, entity_id, operation, organization_id, user_id, state, previous, source, inbox_id, trace)",
        )
        .bind(changes.iter().map(|c| c.seq).collect::<Vec<_>>())
        .bind(text(|c| Some(c.entity_type.as_str())))
        .bind(text(|c| Some(&c.entity_id)))
        .bind(text(|c| Some(c.operation.as_str())))
        .bind(text(|c| c.organization_id.as_deref()))
        .bind(text(|c| c.user_id.as_deref()))
        .bind(text(|c| Some(&c.state)))
        .bind(text(|c| c.previous.as_deref()))
        .bind(text(|c| Some(&c.source)))
        .bind(changes.iter().map(|c| c.inbox_id).collect::<Vec<_>>())
        .bind(ws.head)
        .bind(
            changes
                .iter()
                .map(|c| c.inbox_id.and_then(|id| traces.get(&id)).map(String::as_str))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// A record's field (its JSON text) as the text PostgreSQL casts to `column_type` (`None`: NULL,
/// as JSON `null` is): strings unquoted, `jsonb` and arrays as JSON, other scalars as written.
fn text_of(value: Option<&RawValue>, column_type: &str) -> Option<String> {
    let json = value?.get();
    match json {
        "null" => None,
        s if s.starts_with('"') && column_type != "jsonb" => serde_json::from_str(s).ok(),
        s => Some(s.to_string()),
    }
}

/// How the statement reads a column sent as text: a cast, or for a `text[]` (sent as a JSON
/// array) its elements.
fn cast(name: &str, column_type: &str) -> String {
    match column_type {
        "text[]" => format!("CASE WHEN {name} IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text({name}::jsonb)) END"),
        t => format!("{name}::{t}"),
    }
}

/// `INSERT … ON CONFLICT (id) DO UPDATE` of `K`'s dirty rows (each with its `serde` fields),
/// sent as one array per column (binary, `unnest`ed: no JSON document for PostgreSQL to parse
/// whole), with the stored message of kinds that keep one (`Kind::STORES_MESSAGE`), encoded now.
async fn upsert<K: Kind>(
    tx: &mut PgConnection,
    rows: &[(&Versioned<K>, Cow<'_, str>)],
    log_id: &str,
) -> Result<(), sqlx::Error> {
    let fields: Vec<BTreeMap<&str, &RawValue>> = rows
        .iter()
        .map(|(_, json)| serde_json::from_str(json).expect("a record's JSON is an object of plain names"))
        .collect();
    let columns: Vec<(&str, &str)> = K::COLUMNS
        .split(',')
        .filter_map(|c| {
            let mut words = c.split_whitespace();
            Some((words.next()?, words.next()?))
        })
        .collect();
    let mut names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    let mut values: Vec<String> = columns.iter().map(|(n, t)| cast(n, t)).collect();
    let mut arrays: Vec<String> = (1..=columns.len()).map(|i| format!("${i}::text[]")).collect();
    let n = columns.len();
    for (i, (name, t)) in [
        ("version_updated_ms", "bigint"),
        ("version_event_ms", "bigint"),
        ("version_key", "text"),
        ("update_cursor", "bigint"),
        ("message", "bytea"),
    ]
    .into_iter()
    .enumerate()
    {
        if name == "message" && !K::STORES_MESSAGE {
            continue;
        }
        names.push(name);
        values.push(name.to_string());
        arrays.push(format!("${}::{t}[]", n + i + 1));
    }
    if K::STORES_MESSAGE {
        names.push("message_format");
        values.push(format!("${}::integer", n + 6));
    }
    let updates: Vec<String> = names
        .iter()
        .filter(|n| **n != "id")
        .map(|n| format!("{n} = EXCLUDED.{n}"))
        .collect();
    let aliases: Vec<&str> = names.iter().copied().filter(|n| *n != "message_format").collect();
    let sql = format!(
        "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS r({})
         ON CONFLICT (id) DO UPDATE SET {}",
        K::TABLE,
        names.join(", "),
        values.join(", "),
        arrays.join(", "),
        aliases.join(", "),
        updates.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (name, t) in &columns {
        let column: Vec<Option<String>> = fields.iter().map(|f| text_of(f.get(*name).copied(), t)).collect();
        query = query.bind(column);
    }
    let version = |f: fn(&Version) -> i64| rows.iter().map(|(v, _)| v.version.as_ref().map(f)).collect::<Vec<_>>();
    query = query
        .bind(version(|x| x.updated_ms))
        .bind(version(|x| x.event_ms))
        .bind(rows.iter().map(|(v, _)| v.version.as_ref().map(|x| x.key.clone())).collect::<Vec<_>>())
        .bind(rows.iter().map(|(v, _)| v.update_cursor).collect::<Vec<_>>());
    if K::STORES_MESSAGE {
        use prost::Message;
        let messages: Vec<Vec<u8>> = rows
            .iter()
            .map(|(v, _)| v.record.message(v.update_cursor, log_id).encode_to_vec())
            .collect();
        query = query.bind(messages).bind(crate::store::kind::MESSAGE_FORMAT);
    }
    query.execute(&mut *tx).await?;
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

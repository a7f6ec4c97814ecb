//! Destinations and their delivery attempts in PostgreSQL (shared by every replica): creating
//! one at a position of the log, reading, changing, pausing, resuming, resetting and rotating,
//! and the sender's fenced writes (a lane's cursor moves only from the value the sender read,
//! and only under the sender epoch it holds).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Attempts kept per destination (older ones are deleted as new ones come).
pub const ATTEMPTS_KEPT: i64 = 500;

/// One destination as stored (its secrets sealed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Destination {
    pub id: String,
    #[sqlx(flatten)]
    pub settings: Settings,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_until: Option<DateTime<Utc>>,
    pub state: String,
    pub paused_reason: Option<String>,
    pub lane_cursors: Vec<i64>,
    pub generation: i64,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub delivered: i64,
    pub failed_attempts: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Destination {
    /// Every selected change up to this seq is delivered (the least lane cursor).
    pub fn cursor(&self) -> i64 {
        self.lane_cursors.iter().copied().min().unwrap_or(0)
    }

    pub fn active(&self) -> bool {
        self.state == "active"
    }
}

/// What a destination is sent, and where.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Settings {
    pub url: String,
    /// Entity type names (`user`, …).
    pub entity_types: Vec<String>,
    pub filter: String,
    pub event_types: Vec<String>,
    pub fields: Vec<String>,
    pub lanes: i32,
    pub batch_size: i32,
}

impl Settings {
    /// The entity types as wire values (`pb::EntityType`).
    pub fn wire_entity_types(&self) -> Vec<i32> {
        use crate::store::Kind;
        use crate::store::kind::with_kind;
        self.entity_types
            .iter()
            .filter_map(|t| crate::store::EntityType::from_name(t))
            .map(|t| with_kind!(t, K => K::WIRE_TYPE as i32))
            .collect()
    }
}

/// Where deliveries start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After the head: only what comes next.
    Head,
    /// From the oldest retained change.
    Oldest,
    /// After this seq.
    After(i64),
}

/// Why a destination cannot be written as asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no destination `{0}`")]
    NotFound(String),
    /// A start before what the log retains: those changes cannot be delivered.
    #[error("changes up to {oldest} are pruned; the cursor is before them")]
    Expired { oldest: i64 },
    /// A start after the head.
    #[error("the cursor is after the log's head {head}")]
    Ahead { head: i64 },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The log's head and the seq before the oldest retained change, locked against the applier's
/// next batch (`FOR SHARE` conflicts with its `FOR UPDATE`) until `tx` ends.
async fn bounds_locked(tx: &mut sqlx::PgConnection) -> Result<(i64, i64), sqlx::Error> {
    let (head, oldest): (i64, i64) = sqlx::query_as("SELECT head_seq, oldest_seq FROM log_head FOR SHARE")
        .fetch_one(&mut *tx)
        .await?;
    Ok((head, oldest - 1))
}

fn start_seq(start: Start, head: i64, before_oldest: i64) -> Result<i64, StoreError> {
    match start {
        Start::Head => Ok(head),
        Start::Oldest => Ok(before_oldest),
        Start::After(seq) if seq < before_oldest => Err(StoreError::Expired {
            oldest: before_oldest + 1,
        }),
        Start::After(seq) if seq > head => Err(StoreError::Ahead { head }),
        Start::After(seq) => Ok(seq),
    }
}

/// A new destination's id: `dst_` and 24 random hex digits.
pub fn new_id() -> String {
    let mut bytes = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).expect("the system's random source");
    format!("dst_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

type RowQuery<'q> = sqlx::query::QueryAs<'q, sqlx::Postgres, Destination, sqlx::postgres::PgArguments>;

/// `q` with `$1` the id and `$2`–`$8` the settings (url, entity types, filter, event types,
/// fields, lanes, batch size).
fn bind_settings<'q>(q: RowQuery<'q>, id: &'q str, s: &'q Settings) -> RowQuery<'q> {
    q.bind(id)
        .bind(&s.url)
        .bind(&s.entity_types)
        .bind(&s.filter)
        .bind(&s.event_types)
        .bind(&s.fields)
        .bind(s.lanes)
        .bind(s.batch_size)
}

/// Creates destination `id` with its sealed secret, starting at `start`. The applier's batches
/// and this insert are ordered by `log_head`'s lock, so a raw event type it selects is recorded
/// for every batch after its start.
pub async fn create(
    pool: &PgPool,
    id: &str,
    settings: &Settings,
    sealed_secret: &str,
    start: Start,
) -> Result<Destination, StoreError> {
    let mut tx = pool.begin().await?;
    let (head, before_oldest) = bounds_locked(&mut tx).await?;
    let at = start_seq(start, head, before_oldest)?;
    let row = bind_settings(
        sqlx::query_as(
            "INSERT INTO destinations (id, url, entity_types, filter, event_types, fields, lanes, batch_size, secret, lane_cursors)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, array_fill($10::bigint, ARRAY[$7]))
             RETURNING *",
        ),
        id,
        settings,
    )
    .bind(sealed_secret)
    .bind(at)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Destination, StoreError> {
    sqlx::query_as("SELECT * FROM destinations WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(id.to_string()))
}

/// Up to `limit` destinations after id `after`, oldest id first.
pub async fn list(pool: &PgPool, after: &str, limit: i64) -> Result<Vec<Destination>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM destinations WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Every destination (the sender's view).
pub async fn all(pool: &PgPool) -> Result<Vec<Destination>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM destinations ORDER BY id").fetch_all(pool).await
}

/// Replaces what is sent and where. A change of `lanes` restarts every lane from the least
/// lane cursor (what another lane had delivered past it is delivered again).
pub async fn update(pool: &PgPool, id: &str, settings: &Settings) -> Result<Destination, StoreError> {
    bind_settings(
        sqlx::query_as(
            "UPDATE destinations SET url = $2, entity_types = $3, filter = $4, event_types = $5, fields = $6,
                    lane_cursors = CASE WHEN lanes = $7 THEN lane_cursors
                                        ELSE array_fill((SELECT min(c) FROM unnest(lane_cursors) c), ARRAY[$7]) END,
                    lanes = $7, batch_size = $8, generation = generation + 1, updated_at = now()
              WHERE id = $1 RETURNING *",
        ),
        id,
        settings,
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| StoreError::NotFound(id.to_string()))
}

pub async fn delete(pool: &PgPool, id: &str) -> Result<(), StoreError> {
    let deleted = sqlx::query("DELETE FROM destinations WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected();
    match deleted {
        0 => Err(StoreError::NotFound(id.to_string())),
        _ => Ok(()),
    }
}

/// Pauses (with why) or resumes a destination. Resuming clears the failure streak, so the
/// horizon counts afresh.
pub async fn set_paused(pool: &PgPool, id: &str, paused: Option<&str>) -> Result<Destination, StoreError> {
    sqlx::query_as(
        "UPDATE destinations SET state = CASE WHEN $2::text IS NULL THEN 'active' ELSE 'paused' END,
                paused_reason = $2, next_attempt_at = NULL,
                failing_since = CASE WHEN $2::text IS NULL THEN NULL ELSE failing_since END,
                generation = generation + 1, updated_at = now()
          WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(paused)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| StoreError::NotFound(id.to_string()))
}

/// Moves every lane's cursor to `start`.
pub async fn reset(pool: &PgPool, id: &str, start: Start) -> Result<Destination, StoreError> {
    let mut tx = pool.begin().await?;
    let (head, before_oldest) = bounds_locked(&mut tx).await?;
    let at = start_seq(start, head, before_oldest)?;
    let row = sqlx::query_as(
        "UPDATE destinations SET lane_cursors = array_fill($2::bigint, ARRAY[lanes]), next_attempt_at = NULL,
                failing_since = NULL, generation = generation + 1, updated_at = now()
          WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(at)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
    tx.commit().await?;
    Ok(row)
}

/// Replaces the secret; the current one stays valid (signs too) until `previous_until`.
pub async fn rotate(
    pool: &PgPool,
    id: &str,
    sealed_secret: &str,
    sealed_previous: Option<&str>,
    previous_until: Option<DateTime<Utc>>,
) -> Result<Destination, StoreError> {
    sqlx::query_as(
        "UPDATE destinations SET secret = $2, previous_secret = $3, previous_until = $4,
                generation = generation + 1, updated_at = now()
          WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(sealed_secret)
    .bind(sealed_previous)
    .bind(previous_until)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| StoreError::NotFound(id.to_string()))
}

/// The log's head, and for each cursor the commit time of the oldest change after it (for lag),
/// in the cursors' order; one round trip.
pub async fn lags(pool: &PgPool, after: &[i64]) -> Result<(i64, Vec<Option<DateTime<Utc>>>), sqlx::Error> {
    sqlx::query_as(
        "SELECT h.head_seq, array(SELECT (SELECT commit_time FROM changes WHERE seq > c ORDER BY seq LIMIT 1)
                                    FROM unnest($1::bigint[]) WITH ORDINALITY AS u(c, o) ORDER BY o)
           FROM log_head h",
    )
    .bind(after)
    .fetch_one(pool)
    .await
}

/// One attempt as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    pub id: i64,
    pub seq: i64,
    pub webhook_id: String,
    pub attempt_time: DateTime<Utc>,
    pub duration_ms: i32,
    pub delivered: bool,
    pub http_status: Option<i32>,
    pub error: Option<String>,
}

/// Up to `limit` attempts of destination `id` before attempt `before` (0: the newest), newest
/// first.
pub async fn attempts(pool: &PgPool, id: &str, before: i64, limit: i64) -> Result<Vec<Attempt>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, seq, webhook_id, attempt_time, duration_ms, delivered, http_status, error FROM delivery_attempts
          WHERE destination_id = $1 AND ($2 = 0 OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The sender's fence: takes the next epoch for `holder` (the applier lock's holder, after it
/// waited out the delivery timeout). Every cursor write of an older epoch fails from now on.
pub async fn take_epoch(pool: &PgPool, holder: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("UPDATE outbound_sender SET epoch = epoch + 1, holder = $1, since = now() RETURNING epoch")
        .bind(holder)
        .fetch_one(pool)
        .await
}

/// Whether a previous sender may still be in an attempt: one ever took an epoch, and there is a
/// destination it could have been sending to.
pub async fn another_may_be_sending(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT epoch > 0 AND EXISTS (SELECT 1 FROM destinations) FROM outbound_sender")
        .fetch_one(pool)
        .await
}

/// Whether `epoch` is still the sender's.
pub async fn holds_epoch(pool: &PgPool, epoch: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT epoch = $1 FROM outbound_sender")
        .bind(epoch)
        .fetch_one(pool)
        .await
}

/// What one attempt found, for the record.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub seq: i64,
    pub webhook_id: String,
    pub duration_ms: i32,
    pub http_status: Option<i32>,
    pub error: Option<String>,
}

/// Moves lane `lane` (0-based) of destination `id` from `from` to `to` without a delivery (the
/// changes between were not selected). `false`: fenced (another epoch, or the cursor moved).
pub async fn advance(pool: &PgPool, epoch: i64, id: &str, lane: usize, from: i64, to: i64) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE destinations d SET lane_cursors[$3] = $5 FROM outbound_sender s
          WHERE d.id = $2 AND d.lane_cursors[$3] = $4 AND s.epoch = $1",
    )
    .bind(epoch)
    .bind(id)
    .bind(lane as i32 + 1)
    .bind(from)
    .bind(to)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// Records a delivered attempt and moves the lane's cursor from `from` to `to`, as one
/// statement. `false`: fenced, nothing written.
pub async fn delivered(
    pool: &PgPool,
    epoch: i64,
    id: &str,
    lane: usize,
    from: i64,
    to: i64,
    a: &Attempted,
) -> Result<bool, sqlx::Error> {
    let written: Option<i64> = sqlx::query_scalar(
        "WITH moved AS (
            UPDATE destinations d SET lane_cursors[$3] = $5, delivered = d.delivered + 1, last_status = $8,
                   last_error = NULL, last_attempt_at = now(), next_attempt_at = NULL, failing_since = NULL
              FROM outbound_sender s
             WHERE d.id = $2 AND d.lane_cursors[$3] = $4 AND s.epoch = $1 RETURNING d.id)
         INSERT INTO delivery_attempts (destination_id, seq, webhook_id, duration_ms, delivered, http_status)
         SELECT id, $5, $6, $7, true, $8 FROM moved RETURNING id",
    )
    .bind(epoch)
    .bind(id)
    .bind(lane as i32 + 1)
    .bind(from)
    .bind(to)
    .bind(&a.webhook_id)
    .bind(a.duration_ms)
    .bind(a.http_status)
    .fetch_optional(pool)
    .await?;
    Ok(written.is_some())
}

/// Records a failed attempt, when the next one is due, and since when the destination fails.
/// With `pause`, pauses it (why) instead. `false`: fenced, nothing written.
pub async fn failed(
    pool: &PgPool,
    epoch: i64,
    id: &str,
    a: &Attempted,
    next: Option<DateTime<Utc>>,
    pause: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let written: Option<i64> = sqlx::query_scalar(
        "WITH failed AS (
            UPDATE destinations d SET failed_attempts = d.failed_attempts + 1, last_status = $5, last_error = $6,
                   last_attempt_at = now(), next_attempt_at = $7, failing_since = coalesce(d.failing_since, now()),
                   state = CASE WHEN $8::text IS NULL THEN d.state ELSE 'paused' END,
                   paused_reason = coalesce($8, d.paused_reason),
                   generation = d.generation + (CASE WHEN $8::text IS NULL THEN 0 ELSE 1 END)
              FROM outbound_sender s
             WHERE d.id = $2 AND s.epoch = $1 RETURNING d.id)
         INSERT INTO delivery_attempts (destination_id, seq, webhook_id, duration_ms, delivered, http_status, error)
         SELECT id, $9, $3, $4, false, $5, $6 FROM failed RETURNING id",
    )
    .bind(epoch)
    .bind(id)
    .bind(&a.webhook_id)
    .bind(a.duration_ms)
    .bind(a.http_status)
    .bind(&a.error)
    .bind(next)
    .bind(pause)
    .bind(a.seq)
    .fetch_optional(pool)
    .await?;
    Ok(written.is_some())
}

/// Pauses a destination for the sender (an expired cursor, a refused address), under its epoch.
pub async fn pause_fenced(pool: &PgPool, epoch: i64, id: &str, why: &str) -> Result<bool, sqlx::Error> {
    set_fenced(
        pool,
        epoch,
        id,
        why,
        "state = 'paused', paused_reason = $3, next_attempt_at = NULL, last_error = $3,
         generation = d.generation + 1, updated_at = now()",
    )
    .await
}

/// Records why this sender cannot send to a destination (without pausing it), under its epoch.
pub async fn note_error(pool: &PgPool, epoch: i64, id: &str, why: &str) -> Result<bool, sqlx::Error> {
    set_fenced(pool, epoch, id, why, "last_error = $3").await
}

/// `UPDATE destinations d SET <set>` of destination `id` (`$3`: `why`), under `epoch`; `false`:
/// fenced, nothing written.
async fn set_fenced(pool: &PgPool, epoch: i64, id: &str, why: &str, set: &'static str) -> Result<bool, sqlx::Error> {
    let sql = format!("UPDATE destinations d SET {set} FROM outbound_sender s WHERE d.id = $2 AND s.epoch = $1");
    let updated = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(epoch)
        .bind(id)
        .bind(why)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(updated == 1)
}

/// Deletes all but the newest [`ATTEMPTS_KEPT`] attempts of destination `id`.
pub async fn trim_attempts(pool: &PgPool, id: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM delivery_attempts WHERE destination_id = $1 AND id <
            (SELECT id FROM delivery_attempts WHERE destination_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
    )
    .bind(id)
    .bind(ATTEMPTS_KEPT - 1)
    .execute(pool)
    .await?
    .rows_affected())
}

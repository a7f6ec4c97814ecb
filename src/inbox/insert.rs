//! The one way rows enter the inbox: an INSERT that skips keys already stored and, when it stored
//! any, NOTIFYs the applier in the same transaction (so the wake-up comes with the commit).

use sqlx::{PgConnection, PgPool};

use super::{InboxRow, redact};
use crate::db::INBOX_CHANNEL;

/// Inserts `rows` in one transaction of their own (duplicates of stored keys are skipped) and
/// notifies the applier; returns the `(source, event_key)`s newly stored.
pub async fn insert(pool: &PgPool, rows: &[&InboxRow]) -> Result<Vec<(String, String)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let inserted = insert_in(&mut tx, rows).await?;
    tx.commit().await?;
    Ok(inserted)
}

/// As [`insert`], inside the caller's transaction on `conn`: the rows and the applier's wake-up
/// are committed (or rolled back) with it. Each body is stored as `redact::stored_body` keeps it
/// (no one-time codes, no invitation tokens), whoever wrote the row.
pub async fn insert_in(conn: &mut PgConnection, rows: &[&InboxRow]) -> Result<Vec<(String, String)>, sqlx::Error> {
    let mut source = Vec::with_capacity(rows.len());
    let mut key = Vec::with_capacity(rows.len());
    let mut event_type = Vec::with_capacity(rows.len());
    let mut event_time = Vec::with_capacity(rows.len());
    let mut instance = Vec::with_capacity(rows.len());
    let mut body = Vec::with_capacity(rows.len());
    let mut redacted = Vec::with_capacity(rows.len());
    let mut trace = Vec::with_capacity(rows.len());
    for row in rows {
        trace.push(row.trace_context.as_deref());
        source.push(row.source.as_str());
        key.push(row.event_key.clone());
        event_type.push(row.event_type.as_deref().map(text));
        event_time.push(row.event_time);
        instance.push(row.instance_id.as_deref().map(text));
        let (kept, was_redacted) = redact::stored_body(row.event_type.as_deref(), row.body.as_deref());
        body.push(kept);
        redacted.push(was_redacted);
    }
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO inbox (source, event_key, event_type, event_time, instance_id, body, body_redacted, trace_context)
         SELECT source, event_key, event_type, event_time, instance_id, body, redacted, trace
           FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bytea[], $7::boolean[], $8::text[])
             AS r(source, event_key, event_type, event_time, instance_id, body, redacted, trace)
         ON CONFLICT (source, event_key) DO NOTHING
         RETURNING source, event_key",
    )
    .bind(&source)
    .bind(&key)
    .bind(&event_type)
    .bind(&event_time)
    .bind(&instance)
    .bind(&body)
    .bind(&redacted)
    .bind(&trace)
    .fetch_all(&mut *conn)
    .await?;
    if !inserted.is_empty() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(INBOX_CHANNEL)
            .execute(&mut *conn)
            .await?;
    }
    Ok(inserted)
}

/// PostgreSQL text cannot hold NUL: such characters in indexed fields are dropped (the raw body
/// keeps them).
fn text(s: &str) -> String {
    s.replace('\0', "")
}

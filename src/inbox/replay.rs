//! Replaying: dead letters (or chosen deliveries) are copied into the inbox again as `replay`
//! rows, through the one [`insert_in`](super::insert_in), for the one applier to apply with the
//! usual rules; a replayed dead letter becomes `replayed`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{InboxRow, Source, insert_in};

/// What to replay.
#[derive(Debug, Clone)]
pub enum Replay {
    AllDeadLetters,
    SvixIds(Vec<String>),
}

/// Rows copied per INSERT (bodies are held in memory meanwhile; each is at most 1 MiB).
const CHUNK: usize = 100;

/// A stored row as a replay copies it.
#[derive(sqlx::FromRow)]
struct Copied {
    replay_key: String,
    event_type: Option<String>,
    event_time: Option<DateTime<Utc>>,
    instance_id: Option<String>,
    body: Option<Vec<u8>>,
}

/// Enqueues the selected rows again as `replay` rows (the applier applies them with the usual
/// rules); replayed dead letters become `replayed`. Returns how many, and the svix-ids not held.
/// All in one transaction: the selected rows are locked until the copies are committed.
pub async fn replay(pool: &PgPool, what: &Replay) -> Result<(i64, Vec<String>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (ids, not_found): (Vec<i64>, Vec<String>) = match what {
        Replay::AllDeadLetters => (
            sqlx::query_scalar("SELECT id FROM inbox WHERE status = 'failed' ORDER BY id FOR UPDATE")
                .fetch_all(&mut *tx)
                .await?,
            Vec::new(),
        ),
        Replay::SvixIds(keys) => {
            let found: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, event_key FROM inbox WHERE source = 'webhook' AND event_key = ANY($1) ORDER BY id FOR UPDATE",
            )
            .bind(keys)
            .fetch_all(&mut *tx)
            .await?;
            let missing = keys
                .iter()
                .filter(|k| !found.iter().any(|(_, f)| f == *k))
                .cloned()
                .collect();
            (found.into_iter().map(|(id, _)| id).collect(), missing)
        }
    };
    let mut replayed = 0;
    for chunk in ids.chunks(CHUNK) {
        // The copy's key names the original and the moment (the database's clock), so a row
        // may be replayed again later.
        let copied: Vec<Copied> = sqlx::query_as(
            "SELECT source || ':' || event_key || '@' || (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS replay_key,
                    event_type, event_time, instance_id, body
               FROM inbox WHERE id = ANY($1) AND status <> 'pending' ORDER BY id",
        )
        .bind(chunk)
        .fetch_all(&mut *tx)
        .await?;
        let rows: Vec<InboxRow> = copied
            .into_iter()
            .map(|c| InboxRow {
                source: Source::Replay,
                event_key: c.replay_key,
                event_type: c.event_type,
                event_time: c.event_time,
                instance_id: c.instance_id,
                body: c.body.map(Into::into),
                // A replay is an operator's act, not the webhook's trace.
                trace_context: None,
            })
            .collect();
        let refs: Vec<&InboxRow> = rows.iter().collect();
        if !refs.is_empty() {
            replayed += insert_in(&mut tx, &refs).await?.len() as i64;
        }
    }
    sqlx::query("UPDATE inbox SET status = 'replayed' WHERE id = ANY($1) AND status = 'failed'")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((replayed, not_found))
}

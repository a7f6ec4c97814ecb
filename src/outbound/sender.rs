//! The sender: on the replica holding the applier lock, delivers each active destination's
//! selected changes in log order, fenced. It waits out the delivery timeout after taking the
//! lock (a sender that lost it may still be mid-attempt), then takes the next sender epoch; a
//! lane's cursor moves only by a compare-and-set on (that epoch, the cursor it read), and before
//! every attempt it checks that it still leads and still holds the epoch. So a change is sent
//! again only when a sender died or lost the lock between a 2xx and the cursor's commit.
//!
//! A destination runs `lanes` lanes; a change goes to the lane of its entity (a hash of its
//! type and id), so each entity's changes stay in order while different entities' are in flight
//! at once. Each lane sends one delivery at a time (a change, or with `batch_size` above 1 the
//! changes it has ready, up to that many) and retries it (backoff, throttling, the horizon: see
//! `outcome`) before the next.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, error, info, warn};

use super::address::Policy;
use super::client;
use super::destinations::{self as store, Attempted, Destination};
use super::outcome::{Next, Schedule};
use super::sealed::SealingKey;
use super::sign::{self, SigningSecret};
use crate::db::CHANGES_CHANNEL;
use crate::filter::selection::Selection;
use crate::pb;
use crate::store::EntityType;
use crate::store::changes::{self, ChangeRow, Ends, RAW_EVENT, Scope};

/// Notified when a destination is created, changed or deleted.
pub const DESTINATIONS_CHANNEL: &str = "clerk_mirror_destinations";

/// Changes read per page by a lane.
const PAGE: i64 = 200;

/// The sender's clock: the system's, shifted by an offset a test may set (signatures carry its
/// time).
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Shifts the clock by `by` from the system's.
    pub fn shift(&self, by: chrono::Duration) {
        self.offset_ms.store(by.num_milliseconds(), Ordering::Relaxed);
    }
}

/// How the sender runs.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Where deliveries may go.
    pub policy: Policy,
    /// Opens the destinations' secrets (`None`: none can be opened; the sender says so).
    pub key: Option<Arc<SealingKey>>,
    /// The longest one attempt waits for an answer (15 s).
    pub timeout: Duration,
    /// How long a new lock holder waits before its first send (the delivery timeout).
    pub takeover_wait: Duration,
    pub schedule: Schedule,
    /// How often it looks for work when no notification came.
    pub poll: Duration,
    /// Who sends (`<pid>@<host>`), recorded with the epoch.
    pub holder: String,
    pub clock: Arc<Clock>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            policy: Policy::default(),
            key: None,
            timeout: client::DELIVERY_TIMEOUT,
            takeover_wait: client::DELIVERY_TIMEOUT,
            schedule: Schedule::default(),
            poll: Duration::from_secs(1),
            holder: format!("{}@{}", std::process::id(), hostname()),
            clock: Arc::new(Clock::default()),
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
}

/// Runs the sender until `stop`: sends while this replica leads (`leading`).
pub async fn run(
    pool: PgPool,
    log_id: String,
    config: SenderConfig,
    mut leading: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let config = Arc::new(config);
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        // A sender that lost the lock may still be in an attempt: wait it out (unless none ever
        // sent, or there is nothing it could have been sending).
        let takeover_wait = match store::another_may_be_sending(&pool).await {
            Ok(false) => Duration::ZERO,
            _ => config.takeover_wait,
        };
        tokio::select! {
            () = tokio::time::sleep(takeover_wait) => {}
            _ = leading.wait_for(|l| !*l) => continue,
            _ = stop.wait_for(|s| *s) => return,
        }
        let epoch = match store::take_epoch(&pool, &config.holder).await {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "the sender cannot take its epoch; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        info!(epoch, "sending outbound webhooks");
        let ctx = Arc::new(Ctx {
            pool: pool.clone(),
            log_id: log_id.clone(),
            config: config.clone(),
            epoch,
            leading: leading.clone(),
        });
        let span = tracing::info_span!("sender", epoch);
        if let Err(e) = lead(ctx, &mut leading, &mut stop).instrument(span).await {
            warn!(error = %e, "the sender lost its database connection; retrying");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// What every lane of one sender shares.
struct Ctx {
    pool: PgPool,
    log_id: String,
    config: Arc<SenderConfig>,
    epoch: i64,
    leading: watch::Receiver<bool>,
}

/// One destination's running lanes.
struct Running {
    generation: i64,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Sends under `ctx.epoch` until this replica no longer leads, `stop`, or another sender's
/// epoch fences this one.
async fn lead(
    ctx: Arc<Ctx>,
    leading: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), sqlx::Error> {
    // Notifications are listened for only while there are destinations (a listener holds a
    // connection of the pool).
    let mut listener: Option<PgListener> = None;
    let (tick, _) = watch::channel(0u64);
    let (fenced_tx, mut fenced) = watch::channel(false);
    let fenced_tx = Arc::new(fenced_tx);
    let mut running: HashMap<String, Running> = HashMap::new();
    // Destinations are read again when one changed (its NOTIFY) and at every poll; a change
    // of the log only wakes the lanes.
    let mut poll = tokio::time::interval(ctx.config.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reload = true;
    let result = loop {
        if std::mem::take(&mut reload) {
            match store::all(&ctx.pool).await {
                Ok(rows) => {
                    if rows.is_empty() {
                        listener = None;
                    } else if listener.is_none() {
                        let mut l = match PgListener::connect_with(&ctx.pool).await {
                            Ok(l) => l,
                            Err(e) => break Err(e),
                        };
                        if let Err(e) = l.listen_all([CHANGES_CHANNEL, DESTINATIONS_CHANNEL]).await {
                            break Err(e);
                        }
                        listener = Some(l);
                        // What was committed before it listened.
                        tick.send_modify(|t| *t += 1);
                    }
                    reconcile(&ctx, &rows, &mut running, &tick, &fenced_tx);
                }
                Err(e) => break Err(e),
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|n| n.channel() == DESTINATIONS_CHANNEL),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            n = notified => match n {
                Ok(destinations) => {
                    reload = destinations;
                    tick.send_modify(|t| *t += 1);
                }
                Err(e) => break Err(e),
            },
            _ = poll.tick() => {
                reload = true;
                tick.send_modify(|t| *t += 1);
            }
            _ = leading.wait_for(|l| !*l) => break Ok(()),
            _ = stop.wait_for(|s| *s) => break Ok(()),
            _ = fenced.wait_for(|f| *f) => {
                warn!(epoch = ctx.epoch, "another sender took over: this one stops");
                break Ok(());
            }
        }
    };
    for (_, r) in running.drain() {
        r.stop.send_replace(true);
        let _ = r.task.await;
    }
    result
}

/// Starts, restarts and stops destinations' lanes to match `rows`.
fn reconcile(
    ctx: &Arc<Ctx>,
    rows: &[Destination],
    running: &mut HashMap<String, Running>,
    tick: &watch::Sender<u64>,
    fenced: &Arc<watch::Sender<bool>>,
) {
    let wanted: HashMap<&str, &Destination> = rows.iter().filter(|d| d.active()).map(|d| (d.id.as_str(), d)).collect();
    let gone: Vec<String> = running
        .iter()
        .filter(|(id, r)| wanted.get(id.as_str()).is_none_or(|d| d.generation != r.generation))
        .map(|(id, _)| id.clone())
        .collect();
    let mut previous: HashMap<String, JoinHandle<()>> = HashMap::new();
    for id in gone {
        let r = running.remove(&id).expect("listed");
        r.stop.send_replace(true);
        previous.insert(id, r.task);
    }
    for (id, d) in wanted {
        if running.contains_key(id) {
            continue;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let before = previous.remove(id);
        let (ctx, d, tick, fenced) = (ctx.clone(), d.clone(), tick.subscribe(), fenced.clone());
        let span = tracing::info_span!("destination", destination = %d.id);
        let generation = d.generation;
        let task = tokio::spawn(
            async move {
                // The previous generation's lanes finish their attempts first: one sender per lane.
                if let Some(before) = before {
                    let _ = before.await;
                }
                destination(ctx, d, stop_rx, tick, fenced).await;
            }
            .instrument(span),
        );
        running.insert(
            id.to_string(),
            Running {
                generation,
                stop: stop_tx,
                task,
            },
        );
    }
    // Stopped destinations' lanes finish on their own.
    drop(previous);
}

/// Why a destination cannot be sent to now.
enum Unsendable {
    /// Its settings (a URL the policy now refuses): it is paused, saying why.
    Destination(String),
    /// This replica's configuration (no key, another key): it is not paused (a replica with the
    /// right key sends it); its `last_error` says why.
    Replica(String),
}

/// What one destination's lanes share.
struct Prepared {
    row: Destination,
    sender: client::Sender,
    secret: SigningSecret,
    previous: Option<(SigningSecret, DateTime<Utc>)>,
    selection: Selection,
    scope: Scope,
}

impl Prepared {
    fn make(ctx: &Ctx, row: Destination) -> Result<Prepared, Unsendable> {
        let key = ctx.config.key.as_ref().ok_or_else(|| {
            Unsendable::Replica(
                "this replica's serve has no destinations key (--destinations-key): it cannot open the destination's \
                 secret; give every replica the same key"
                    .into(),
            )
        })?;
        let open = |sealed: &str| {
            key.open(&row.id, sealed)
                .map_err(|e| Unsendable::Replica(e.to_string()))
        };
        let secret = open(&row.secret)?;
        let previous = match (&row.previous_secret, row.previous_until) {
            (Some(sealed), Some(until)) => Some((open(sealed)?, until)),
            _ => None,
        };
        let sender = client::Sender::new(&row.settings.url, ctx.config.policy.clone(), ctx.config.timeout)
            .map_err(|e| Unsendable::Destination(e.to_string()))?;
        let wire = row.settings.wire_entity_types();
        let selection =
            Selection::new(&wire, &row.settings.filter, "", "").map_err(|e| Unsendable::Destination(e.to_string()))?;
        let mut scope = Scope::default();
        let changes_selected = !row.settings.entity_types.is_empty() || row.settings.event_types.is_empty();
        if changes_selected {
            scope.entity_types = selection.scope.entity_types.clone();
            if scope.entity_types.is_empty() {
                scope.entity_types = EntityType::ALL.iter().map(|t| t.as_str().to_string()).collect();
            }
        }
        if !row.settings.event_types.is_empty() {
            scope.entity_types.push(RAW_EVENT.to_string());
        }
        Ok(Prepared {
            row,
            sender,
            secret,
            previous,
            selection,
            scope,
        })
    }

    /// Whether `c` is sent: a raw event of a selected type, or a selected change.
    fn selects(&self, c: &ChangeRow) -> Option<bool> {
        if c.is_raw_event() {
            let t = c.state.get("type").and_then(|t| t.as_str()).unwrap_or("");
            return super::events::selected(&self.row.settings.event_types, t).then_some(false);
        }
        if !self.scope.contains(c) {
            return None;
        }
        self.selection.select(c)
    }

    /// The secrets that sign now: the current one, and the previous one in its transition.
    fn secrets(&self, now: DateTime<Utc>) -> Vec<SigningSecret> {
        let mut secrets = vec![self.secret.clone()];
        if let Some((previous, until)) = &self.previous
            && *until > now
        {
            secrets.push(previous.clone());
        }
        secrets
    }
}

/// The lane of a change: a hash of its entity (type and id).
fn lane_of(c: &ChangeRow, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&c.entity_type, &c.entity_id).hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

/// Runs one destination's lanes until `stop` (or a lane ends them: paused, fenced).
async fn destination(
    ctx: Arc<Ctx>,
    row: Destination,
    stop: watch::Receiver<bool>,
    tick: watch::Receiver<u64>,
    fenced: Arc<watch::Sender<bool>>,
) {
    let prepared = match Prepared::make(&ctx, row.clone()) {
        Ok(p) => Arc::new(p),
        Err(Unsendable::Destination(why)) => {
            warn!(destination = %row.id, why, "the destination cannot be sent to: pausing it");
            let _ = store::pause_fenced(&ctx.pool, ctx.epoch, &row.id, &why).await;
            return;
        }
        Err(Unsendable::Replica(why)) => {
            error!(destination = %row.id, why, "this replica cannot send to the destination");
            let _ = store::note_error(&ctx.pool, ctx.epoch, &row.id, &why).await;
            return;
        }
    };
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..row.settings.lanes.max(1) as usize {
        let cursor = row.lane_cursors.get(lane).copied().unwrap_or(0);
        lanes
            .spawn(run_lane(ctx.clone(), prepared.clone(), lane, cursor, stop.clone(), tick.clone()).in_current_span());
    }
    while let Some(end) = lanes.join_next().await {
        if end.is_ok_and(|e| e == LaneEnd::Fenced) {
            fenced.send_replace(true);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneEnd {
    Stopped,
    Paused,
    Fenced,
}

/// Sends lane `lane`'s changes after `cursor`, one at a time, until it ends.
async fn run_lane(
    ctx: Arc<Ctx>,
    d: Arc<Prepared>,
    lane: usize,
    mut cursor: i64,
    mut stop: watch::Receiver<bool>,
    mut tick: watch::Receiver<u64>,
) -> LaneEnd {
    let lanes = d.row.settings.lanes.max(1) as usize;
    let mut failing_since = d.row.failing_since;
    loop {
        if *stop.borrow() {
            return LaneEnd::Stopped;
        }
        tick.borrow_and_update();
        let page = match changes::page(&ctx.pool, cursor, &d.scope, PAGE, Ends::Limit).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "a lane cannot read the log; retrying");
                if wait(&mut stop, &mut tick, Some(Duration::from_secs(1))).await {
                    return LaneEnd::Stopped;
                }
                continue;
            }
        };
        if cursor < page.bounds.oldest - 1 {
            let why = format!(
                "the destination's cursor expired: changes {} to {} were pruned before they were delivered; \
                 ResetDestination (from_oldest) goes on from the oldest retained change, knowing those are lost",
                cursor + 1,
                page.bounds.oldest - 1
            );
            warn!(destination = %d.row.id, lane, "cursor expired: pausing");
            return match store::pause_fenced(&ctx.pool, ctx.epoch, &d.row.id, &why).await {
                Ok(true) => LaneEnd::Paused,
                Ok(false) => LaneEnd::Fenced,
                Err(_) => LaneEnd::Stopped,
            };
        }
        // The lane's selected changes of the page, sent `batch_size` at a time (what is ready:
        // a batch never waits for more).
        let mine: Vec<(&ChangeRow, bool)> = page
            .changes
            .iter()
            .filter(|c| lane_of(c, lanes) == lane)
            .filter_map(|c| Some((c, d.selects(c)?)))
            .collect();
        for batch in mine.chunks(d.row.settings.batch_size.max(1) as usize) {
            let span = delivery_span(&d.row.id, batch);
            match deliver(&ctx, &d, lane, cursor, batch, &mut failing_since, &mut stop)
                .instrument(span)
                .await
            {
                Delivery::Delivered => cursor = batch.last().expect("a chunk is never empty").0.seq,
                Delivery::Ended(end) => return end,
            }
        }
        if page.end > cursor {
            match store::advance(&ctx.pool, ctx.epoch, &d.row.id, lane, cursor, page.end).await {
                Ok(true) => cursor = page.end,
                Ok(false) => return LaneEnd::Fenced,
                Err(e) => {
                    warn!(error = %e, "a lane cannot move its cursor; retrying");
                    if wait(&mut stop, &mut tick, Some(Duration::from_secs(1))).await {
                        return LaneEnd::Stopped;
                    }
                    continue;
                }
            }
        }
        if page.at_head() && wait(&mut stop, &mut tick, None).await {
            return LaneEnd::Stopped;
        }
    }
}

/// Waits for news (a tick), `after` at most; `true` when stopped.
async fn wait(stop: &mut watch::Receiver<bool>, tick: &mut watch::Receiver<u64>, after: Option<Duration>) -> bool {
    let sleep = async {
        match after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tick.changed() => r.is_err(),
        () = sleep => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

enum Delivery {
    Delivered,
    Ended(LaneEnd),
}

/// The body of `c` as delivered.
async fn body_of(ctx: &Ctx, d: &Prepared, c: &ChangeRow, left_filter: bool) -> Result<Vec<u8>, String> {
    let cursor = pb::cursor::Cursor::text(&ctx.log_id, c.seq);
    if c.is_raw_event() {
        let raw: Option<Vec<u8>> = sqlx::query_scalar("SELECT raw FROM changes WHERE seq = $1")
            .bind(c.seq)
            .fetch_optional(&ctx.pool)
            .await
            .map_err(|e| e.to_string())?
            .flatten();
        let t = c.state.get("type").and_then(|t| t.as_str()).unwrap_or("unknown");
        return Ok(super::body::clerk_event(&cursor, t, raw.as_deref().unwrap_or(b"null")));
    }
    let change = crate::store::change_message::to_change(c, &ctx.log_id, left_filter, None)?;
    Ok(super::body::change(&change, &d.row.settings.fields))
}

/// The span of one delivery (every attempt of it): in the trace of its first traced change (the
/// webhook that made it), linked to the others' when it carries several.
fn delivery_span(destination: &str, batch: &[(&ChangeRow, bool)]) -> tracing::Span {
    let span = tracing::info_span!(
        "deliver",
        otel.name = "deliver to destination",
        otel.kind = "client",
        destination,
        changes = batch.len(),
    );
    let mut traced = batch.iter().filter_map(|(c, _)| c.trace_context.as_deref());
    if let Some(first) = traced.next() {
        crate::telemetry::continue_trace(&span, first);
        for other in traced {
            crate::telemetry::link_to(&span, other);
        }
    }
    span
}

/// Sends `batch` (one change, or up to `batch_size` of them) until it is delivered (the lane's
/// cursor moves from `from` to its last), or the lane ends: stopped, paused (410, the horizon),
/// or fenced.
async fn deliver(
    ctx: &Ctx,
    d: &Prepared,
    lane: usize,
    from: i64,
    batch: &[(&ChangeRow, bool)],
    failing_since: &mut Option<DateTime<Utc>>,
    stop: &mut watch::Receiver<bool>,
) -> Delivery {
    let mut bodies = Vec::with_capacity(batch.len());
    for (c, left_filter) in batch {
        match body_of(ctx, d, c, *left_filter).await {
            Ok(b) => bodies.push(b),
            Err(why) => {
                let why = format!("change {} cannot be delivered: {why}", c.seq);
                warn!(destination = %d.row.id, seq = c.seq, "a change cannot be made into a delivery: pausing");
                let _ = store::pause_fenced(&ctx.pool, ctx.epoch, &d.row.id, &why).await;
                return Delivery::Ended(LaneEnd::Paused);
            }
        }
    }
    let (first, last) = (batch[0].0, batch[batch.len() - 1].0);
    let cursor = |c: &ChangeRow| pb::cursor::Cursor::text(&ctx.log_id, c.seq);
    let (body, webhook_id) = match bodies.len() {
        1 => (bodies.pop().expect("one"), super::body::webhook_id(&cursor(first))),
        n => (
            super::body::batch(&cursor(last), &bodies),
            super::body::batch_id(&cursor(first), n),
        ),
    };
    let body = bytes::Bytes::from(body);
    let c = last;
    let mut attempt = 1u32;
    loop {
        if *stop.borrow() {
            return Delivery::Ended(LaneEnd::Stopped);
        }
        // The fence, before every attempt: still leading, still this epoch.
        let leads = *ctx.leading.borrow();
        match (leads, store::holds_epoch(&ctx.pool, ctx.epoch).await) {
            (true, Ok(true)) => {}
            (_, Err(_)) => return Delivery::Ended(LaneEnd::Stopped),
            _ => return Delivery::Ended(LaneEnd::Fenced),
        }
        let now = ctx.config.clock.now();
        let headers = sign::headers(&d.secrets(now), &webhook_id, now.timestamp(), &body);
        let started = std::time::Instant::now();
        let answer = d.sender.post(&headers, body.clone()).await;
        let duration_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
        let now = ctx.config.clock.now();
        let failing_for = failing_since
            .map(|s| (now - s).to_std().unwrap_or_default())
            .unwrap_or_default();
        let next = ctx.config.schedule.next(&answer, attempt, failing_for, jitter(), now);
        let (http_status, error) = match &answer {
            super::outcome::Answer::Status { code, .. } => (Some(*code as i32), None),
            other => (None, Some(other.to_string())),
        };
        let attempted = Attempted {
            seq: c.seq,
            webhook_id: webhook_id.clone(),
            duration_ms,
            http_status,
            error: error.clone().or_else(|| match &answer {
                super::outcome::Answer::Status { code: 200..=299, .. } => None,
                a => Some(a.to_string()),
            }),
        };
        debug!(destination = %d.row.id, seq = c.seq, attempt, answer = %answer, "attempted");
        let written = match &next {
            Next::Delivered => {
                store::delivered(&ctx.pool, ctx.epoch, &d.row.id, lane, from, last.seq, &attempted).await
            }
            Next::Retry { after, .. } => {
                let at = now + chrono::Duration::from_std(*after).unwrap_or_default();
                store::failed(&ctx.pool, ctx.epoch, &d.row.id, &attempted, Some(at), None).await
            }
            Next::Pause(why) => store::failed(&ctx.pool, ctx.epoch, &d.row.id, &attempted, None, Some(why)).await,
        };
        match written {
            Ok(true) => {}
            Ok(false) => return Delivery::Ended(LaneEnd::Fenced),
            Err(e) => {
                warn!(error = %e, "an attempt cannot be recorded");
                return Delivery::Ended(LaneEnd::Stopped);
            }
        }
        if attempt % 100 == 0 || c.seq % 100 == 0 {
            let _ = store::trim_attempts(&ctx.pool, &d.row.id).await;
        }
        match next {
            Next::Delivered => {
                *failing_since = None;
                return Delivery::Delivered;
            }
            Next::Pause(why) => {
                warn!(destination = %d.row.id, why, "paused");
                return Delivery::Ended(LaneEnd::Paused);
            }
            Next::Retry { after, .. } => {
                failing_since.get_or_insert(now);
                attempt += 1;
                tokio::select! {
                    () = tokio::time::sleep(after) => {}
                    _ = stop.wait_for(|s| *s) => return Delivery::Ended(LaneEnd::Stopped),
                }
            }
        }
    }
}

/// A factor in [0.5, 1.5) spreading retries.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    0.5 + u32::from_le_bytes(b) as f64 / (u32::MAX as f64 + 1.0)
}

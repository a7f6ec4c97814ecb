//! `WatchService.WatchChanges`: the replica's feed of the log (`hub::Feed`) narrowed to the
//! request: a backlog read from PostgreSQL in short pages (the connection released before
//! sending), then `caught_up`, then live changes, in seq order with no gaps or duplicates. A
//! watcher behind the hub's buffer reads the database at its own pace; one that stops reading is
//! dropped with `CONSUMER_TOO_SLOW` and its resume cursor; shutdown ends streams with
//! `UNAVAILABLE`.


use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug};


use super::cursor::{self, Cursor};
use super::error::ApiError;
use crate::cache::ReadCache;
use crate::filter::selection::Selection;
use crate::store::access::Resolved;
use crate::store::change_message::to_change;
use crate::hub::{Batch, Feed, FeedError, Hub, Reader};
use crate::metrics::Metrics;
use crate::pb;
use crate::pb::served::watch_service_server::WatchService;
use crate::pb::served::{self, SharedChange, watch_changes_response::Event};
use crate::store::changes::{self, Scope};
use crate::store::kind::with_kind;
use crate::store::read::{self, ListQuery};
use crate::store::{EntityType, Kind};

/// How watch streams behave.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Changes read per backlog query.
    pub page: i64,
    /// Messages buffered per stream towards the client.
    pub buffer: usize,
    /// How long a stream may stay unread before it is dropped (`CONSUMER_TOO_SLOW`).
    pub send_timeout: Duration,
    /// Most streams open at once on this replica (more: `RESOURCE_EXHAUSTED`).
    pub max_streams: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            page: 500,
            buffer: 64,
            send_timeout: Duration::from_secs(300),
            max_streams: 20_000,
        }
    }
}

/// Counts a stream as open for as long as it lives.
struct OpenStream(Arc<Metrics>);

impl OpenStream {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.watchers.inc();
        OpenStream(metrics)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.watchers.dec();
    }
}

/// The `reason` label of a stream's end.
fn end_reason(end: &Option<ApiError>) -> &'static str {
    match end {
        None => "client_gone",
        Some(ApiError::ConsumerTooSlow { .. }) => "too_slow",
        Some(ApiError::CursorExpired { .. }) => "expired",
        Some(ApiError::ShuttingDown { .. }) => "shutting_down",
        Some(_) => "error",
    }
}

/// The service.
#[derive(Clone)]
pub struct Watcher {
    pool: sqlx::PgPool,
    hub: Hub,
    /// The replica's read cache: its roles and permissions resolve what changes carry.
    cache: ReadCache,
    log_id: String,
    config: WatchConfig,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
}

impl Watcher {
    pub fn new(
        pool: sqlx::PgPool,
        hub: Hub,
        cache: ReadCache,
        log_id: String,
        config: WatchConfig,
        stop: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Watcher {
            pool,
            hub,
            cache,
            log_id,
            config,
            stop,
            metrics,
        }
    }
}

fn heartbeat_interval(d: Option<&prost_types::Duration>) -> Result<Duration, ApiError> {
    let Some(d) = d else { return Ok(Duration::from_secs(10)) };
    let ms = d
        .seconds
        .saturating_mul(1000)
        .saturating_add(d.nanos as i64 / 1_000_000);
    if !(1000..=60_000).contains(&ms) {
        return Err(ApiError::invalid(
            "heartbeat_interval",
            "INVALID_HEARTBEAT_INTERVAL",
            "must be between 1 s and 60 s",
        ));
    }
    Ok(Duration::from_millis(ms as u64))
}

/// One page of current entities of kind `K`, each with its id, as a change's entity.
async fn listed<K: Kind>(
    pool: &sqlx::PgPool,
    query: &ListQuery<'_>,
    log_id: &str,
) -> Result<Vec<(String, pb::change::Entity)>, sqlx::Error> {
    let snapshot = read::list::<K>(pool, query).await?;
    Ok(snapshot
        .items
        .iter()
        .flatten()
        .map(|item| {
            (
                item.record.id().to_string(),
                K::change_entity(item.record.message(item.update_cursor, log_id)),
            )
        })
        .collect())
}

/// How a watch's scope narrows the initial state of kind `K`: `(organization_id, user_id, id)`
/// for the list query, or `None` when the scope leaves nothing of the kind (a watch of one
/// organization's changes reads no users).
fn initial_scope<K: Kind>(scope: &Scope) -> Option<(Option<String>, Option<String>, Option<String>)> {
    let mut narrow = (None, None, None);
    for (wanted, column, organization) in [
        (&scope.organization_id, K::ORGANIZATION_COLUMN, true),
        (&scope.user_id, K::USER_COLUMN, false),
    ] {
        let Some(wanted) = wanted else { continue };
        // Roles and permissions concern every organization: an organization's watch has them all.
        if organization && K::IN_EVERY_ORGANIZATION {
            continue;
        }
        match column? {
            "id" => narrow.2 = Some(wanted.clone()),
            "organization_id" => narrow.0 = Some(wanted.clone()),
            "user_id" => narrow.1 = Some(wanted.clone()),
            other => unreachable!("a scope column `{other}` that ListQuery cannot narrow"),
        }
    }
    Some(narrow)
}

/// The stream handed to tonic: what the watcher task queued, then the error it ended with.
pub struct ChangeStream {
    /// Boxed: a channel allocates its slots in blocks of 32 at once, and an idle stream should
    /// hold 32 pointers, not 32 messages (#27).
    rx: mpsc::Receiver<Box<served::WatchChangesResponse>>,
    end: Arc<Mutex<Option<Status>>>,
}

impl tokio_stream::Stream for ChangeStream {
    type Item = Result<served::WatchChangesResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(m)) => Poll::Ready(Some(Ok(*m))),
            Poll::Ready(None) => Poll::Ready(self.end.lock().expect("not poisoned").take().map(Err)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[tonic::async_trait]
impl WatchService for Watcher {
    type WatchChangesStream = ChangeStream;

    async fn watch_changes(&self, request: Request<pb::WatchChangesRequest>) -> Result<Response<ChangeStream>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!("rpc", otel.name = "WatchChanges", otel.kind = "server", rpc = "WatchChanges");
        let start = async {
            let selection = Selection::new(&r.entity_types, &r.filter, &r.organization_id, &r.user_id)?;
            let heartbeat = heartbeat_interval(r.heartbeat_interval.as_ref())?;
            if r.send_initial_state && r.start.is_some() {
                return Err(ApiError::invalid(
                    "send_initial_state",
                    "INITIAL_STATE_WITH_START",
                    "the initial state starts from now: give no start_cursor or start_from_oldest",
                ));
            }
            // Bounds from the database itself, not from a hub that may lag.
            let (log_id, bounds) = changes::bounds(&self.pool).await?;
            let oldest_cursor = Cursor::new(&log_id, bounds.oldest - 1).encode();
            let position = match &r.start {
                None => bounds.head,
                Some(pb::watch_changes_request::Start::StartFromOldest(_)) => bounds.oldest - 1,
                Some(pb::watch_changes_request::Start::StartCursor(text)) => {
                    let Some(seq) = cursor::seq_in_log("start_cursor", text, &log_id)? else {
                        return Err(ApiError::cursor_of_another_log(oldest_cursor));
                    };
                    if seq < bounds.oldest - 1 {
                        return Err(ApiError::CursorExpired {
                            why: "the cursor is older than the retained change log".into(),
                            oldest_cursor,
                        });
                    }
                    if seq > bounds.head {
                        return Err(ApiError::CursorInFuture {
                            head_cursor: Cursor::new(&log_id, bounds.head).encode(),
                        });
                    }
                    seq
                }
            };
            Ok::<_, ApiError>((selection, heartbeat, position))
        };
        if self.metrics.watchers.get() as usize >= self.config.max_streams {
            return Err(ApiError::TooManyWatchers {
                limit: self.config.max_streams,
            }
            .into());
        }
        let (selection, heartbeat, position) = start.instrument(span.clone()).await.map_err(Status::from)?;
        // Subscribed now, before the backlog is read: what the hub publishes meanwhile is kept.
        let feed = self.hub.feed(
            position,
            Reader {
                scope: selection.scope.clone(),
                page: self.config.page,
                // Changes go out one by one: a long batch in parts keeps a stream's memory to a page.
                whole_batches: false,
                rows_read: Some(self.metrics.changes_read.with_label_values(&["stream"])),
                recent_read: Some(self.metrics.changes_from_recent.with_label_values(&["stream"])),
                catch_ups: Some(self.metrics.watch_catch_ups.clone()),
                idle_check: None,
            },
        );
        let (tx, rx) = mpsc::channel(self.config.buffer.max(1));
        let end = Arc::new(Mutex::new(None));
        let stream = Stream {
            pool: self.pool.clone(),
            cache: self.cache.clone(),
            log_id: self.log_id.clone(),
            config: self.config.clone(),
            selection,
            heartbeat,
            position,
            tx,
            last_sent: Instant::now(),
            initial: r.send_initial_state,
        };
        let open = OpenStream::new(self.metrics.clone());
        let metrics = self.metrics.clone();
        let stop = self.stop.clone();
        let end_slot = end.clone();
        tokio::spawn(
            async move {
                let _open = open;
                // Keep the channel open until the end is recorded, so the client sees the error,
                // never a clean end.
                let _keep_open = stream.tx.clone();
                if let Err(end) = stream.run(feed, stop).await {
                    metrics.watchers_ended.with_label_values(&[end_reason(&end)]).inc();
                    if let Some(e) = end {
                        *end_slot.lock().expect("not poisoned") = Some(Status::from(e));
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ChangeStream { rx, end }))
    }
}

/// One stream's state; `position` is the last seq it has passed.
struct Stream {
    pool: sqlx::PgPool,
    cache: ReadCache,
    log_id: String,
    config: WatchConfig,
    selection: Selection,
    heartbeat: Duration,
    position: i64,
    tx: mpsc::Sender<Box<served::WatchChangesResponse>>,
    last_sent: Instant,
    /// Send the current state first.
    initial: bool,
}

/// How a stream ends early: `None` when the client went away (nothing to tell it).
type End = Option<ApiError>;

impl Stream {
    fn cursor(&self) -> String {
        Cursor::text(&self.log_id, self.position)
    }

    async fn send(&mut self, event: Event) -> Result<(), End> {
        let message = Box::new(served::WatchChangesResponse { event: Some(event) });
        // With room in the channel (the usual case), no timer is set (#27: one per delivery
        // showed in the fan-out's profile).
        let message = match self.tx.try_send(message) {
            Ok(()) => {
                self.last_sent = Instant::now();
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(None),
            Err(mpsc::error::TrySendError::Full(message)) => message,
        };
        match tokio::time::timeout(self.config.send_timeout, self.tx.send(message)).await {
            Ok(Ok(())) => {
                self.last_sent = Instant::now();
                Ok(())
            }
            Ok(Err(_)) => Err(None),
            Err(_) => {
                debug!("watcher too slow; dropping it");
                // The resume cursor is the last position queued to the client.
                Err(Some(ApiError::ConsumerTooSlow {
                    resume_cursor: self.cursor(),
                }))
            }
        }
    }

    async fn heartbeat(&mut self) -> Result<(), End> {
        let cursor = self.cursor();
        self.send(Event::Heartbeat(pb::Heartbeat { cursor }))
            .await
    }

    /// Sends the batch's selected changes, and moves past it. Each change is converted and
    /// encoded once per replica (`ChangeRow::wire`); a stream sends those bytes and its own
    /// `left_filter`.
    async fn offer(&mut self, batch: &Batch) -> Result<(), End> {
        for c in &batch.changes {
            if let Some(left_filter) = self.selection.select(c) {
                let converted = c.wire.get_or_init(|| {
                    let resolved = c
                        .entity_type()
                        .is_some_and(|t| with_kind!(t, K => K::RESOLVED_AT_READ));
                    let now = || to_change(c, &self.log_id, false, None);
                    let change = match resolved {
                        true => self
                            .cache
                            .read(|i| to_change(c, &self.log_id, false, Some(i.access())))
                            .unwrap_or_else(now),
                        false => now(),
                    };
                    change.map(|c| pb::Encoded::of(&c))
                });
                let change = match converted {
                    Ok(change) => SharedChange {
                        change: change.clone(),
                        left_filter,
                    },
                    Err(why) => return Err(Some(ApiError::Internal(anyhow::anyhow!("{why}")))),
                };
                // The position moves only once the change is queued, so a resume cursor never
                // skips it.
                self.send(Event::Change(change)).await?;
            }
            self.position = c.seq;
        }
        self.position = self.position.max(batch.end);
        Ok(())
    }

    /// How a feed's error ends the stream.
    fn feed_ended(&self, e: FeedError) -> End {
        Some(match e {
            FeedError::CursorExpired { oldest, .. } => ApiError::CursorExpired {
                why: "the stream fell behind the retained change log".into(),
                oldest_cursor: Cursor::new(&self.log_id, oldest - 1).encode(),
            },
            FeedError::Database(e) => ApiError::from(e),
            FeedError::Closed => ApiError::ShuttingDown {
                resume_cursor: self.cursor(),
            },
        })
    }

    /// The current state of everything selected, as `created` changes without cursors, read page
    /// by page (each page its own short snapshot). What changes meanwhile follows from the log.
    async fn send_initial_state(&mut self) -> Result<(), End> {
        for entity in self.selection.watched.clone() {
            let scope = &self.selection.scope;
            let Some(narrow) = with_kind!(entity, K => initial_scope::<K>(scope)) else {
                continue;
            };
            let table = with_kind!(entity, K => K::READ_FROM);
            let (organization_id, user_id, id) = narrow;
            let filter = self.selection.filters.get(&entity).cloned();
            let mut after = String::new();
            loop {
                let query = ListQuery {
                    table,
                    after: &after,
                    limit: self.config.page,
                    show_deleted: false,
                    organization_id: organization_id.as_deref(),
                    user_id: user_id.as_deref(),
                    id: id.as_deref(),
                    filter: filter.as_ref(),
                };
                let (changes, last) = self
                    .initial_page(entity, &query)
                    .await
                    .map_err(|e| Some(ApiError::from(e)))?;
                let full = changes.len() as i64 >= self.config.page;
                for change in changes {
                    let change = SharedChange {
                        change: pb::Encoded::of(&change),
                        left_filter: false,
                    };
                    self.send(Event::Change(change)).await?;
                }
                match last {
                    Some(last) if full => after = last,
                    _ => break,
                }
            }
        }
        Ok(())
    }

    async fn initial_page(
        &self,
        entity: EntityType,
        query: &ListQuery<'_>,
    ) -> Result<(Vec<pb::Change>, Option<String>), sqlx::Error> {
        let log_id = &self.log_id;
        let (entity_type, items) =
            with_kind!(entity, K => (K::WIRE_TYPE, listed::<K>(&self.pool, query, log_id).await?));
        let last = items.last().map(|(id, _)| id.clone());
        let changes = items
            .into_iter()
            .map(|(_, entity)| pb::Change {
                cursor: String::new(),
                operation: pb::Operation::Created as i32,
                entity_type: entity_type as i32,
                entity: Some(entity),
                previous: None,
                commit_time: None,
                left_filter: false,
                source: "initial_state".into(),
            })
            .collect();
        Ok((changes, last))
    }

    async fn run(mut self, mut feed: Feed, mut stop: watch::Receiver<bool>) -> Result<(), End> {
        Box::pin(self.heartbeat()).await?;
        if self.initial {
            // Boxed: a future is as large as its largest state, and an idle stream lives in
            // this one; only the wait for the feed should size it (#27).
            Box::pin(self.send_initial_state()).await?;
        }
        // The backlog, from the database up to the head, then live: heartbeats only once caught
        // up, and never cancelling a read of the feed (a page from the database goes on).
        let mut caught_up = false;
        loop {
            let next = {
                let mut next = std::pin::pin!(feed.next());
                loop {
                    let beat = self.last_sent + self.heartbeat;
                    tokio::select! {
                        biased;
                        () = async { let _ = stop.wait_for(|s| *s).await; } => {
                            return Err(Some(ApiError::ShuttingDown { resume_cursor: self.cursor() }));
                        }
                        next = &mut next => break next,
                        () = tokio::time::sleep_until(beat), if caught_up => Box::pin(self.heartbeat()).await?,
                    }
                }
            };
            let batch = next.map_err(|e| self.feed_ended(e))?;
            Box::pin(self.offer(&batch)).await?;
            if batch.at_head && !caught_up {
                caught_up = true;
                let cursor = self.cursor();
                Box::pin(self.send(Event::CaughtUp(pb::CaughtUp { cursor }))).await?;
            } else if batch.at_head {
                debug!(position = batch.end, "caught up from the database");
            }
        }
    }
}

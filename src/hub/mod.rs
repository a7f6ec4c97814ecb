//! The change hub, one per replica: wakes on the applier's NOTIFY (a wake-up only, and lost on
//! reconnect, so it always re-reads `seq > last` from the database, and also polls), reads each
//! new change once, and fans it out to this replica's readers through a bounded broadcast
//! buffer (counted in changes, shared by every reader), and keeps the same changes in a ring
//! (see `recent`) for readers that start behind. Readers never take either directly: each
//! follows the log through a [`Feed`] (see `feed`), which reads the ring when it starts or falls
//! behind and the ring reaches back to it, and the database otherwise.

pub mod feed;
pub mod recent;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};

pub use feed::{Batch, Feed, FeedError, Reader};
pub use recent::Recent;

use crate::db::CHANGES_CHANNEL;
use crate::metrics::Metrics;
use crate::store::changes::{self, ChangeRow, Ends, Scope};

/// Changes read per query (the hub publishes changes one by one: readers put batches together).
const PAGE: i64 = 1000;

/// A handle to the hub: follow the log from a cursor, or ask how far it has read.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<ChangeRow>>,
    recent: Recent,
    latest: watch::Receiver<i64>,
    pool: PgPool,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// Starts the hub on `pool`, publishing changes after the current head; `capacity` changes
    /// are buffered for readers (shared, so memory does not grow with slow readers).
    pub async fn spawn(
        pool: PgPool,
        capacity: usize,
        poll: Duration,
        stop: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) -> Result<(Hub, tokio::task::JoinHandle<()>), sqlx::Error> {
        let (_, bounds) = changes::bounds(&pool).await?;
        let (tx, _) = broadcast::channel(capacity.max(1));
        let recent = Recent::new(capacity);
        let (latest_tx, latest) = watch::channel(bounds.head);
        let task = tokio::spawn(run(
            pool.clone(),
            tx.clone(),
            recent.clone(),
            latest_tx,
            bounds.head,
            poll,
            stop,
            metrics.clone(),
        ));
        Ok((
            Hub {
                tx,
                recent,
                latest,
                pool,
                metrics,
            },
            task,
        ))
    }

    /// The log after `after`, in whole batches, with no gap: see [`Feed`].
    pub fn feed(&self, after: i64, reader: Reader) -> Feed {
        Feed::new(
            self.pool.clone(),
            self.tx.subscribe(),
            self.recent.clone(),
            after,
            reader,
            self.metrics.change_log_rows_skipped.clone(),
        )
    }

    /// The last seq the hub has published.
    pub fn latest(&self) -> i64 {
        *self.latest.borrow()
    }
}

async fn run(
    pool: PgPool,
    tx: broadcast::Sender<Arc<ChangeRow>>,
    recent: Recent,
    latest: watch::Sender<i64>,
    mut last: i64,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let read = metrics.changes_read.with_label_values(&["hub"]);
    let mut listener: Option<PgListener> = None;
    loop {
        if listener.is_none() {
            // Listen before reading, so nothing committed after the read is missed.
            match PgListener::connect_with(&pool).await {
                Ok(mut l) => match l.listen(CHANGES_CHANNEL).await {
                    Ok(()) => listener = Some(l),
                    Err(e) => warn!(error = %e, "the change hub cannot LISTEN; polling"),
                },
                Err(e) => warn!(error = %e, "the change hub cannot connect; polling"),
            }
        }
        loop {
            match changes::page(&pool, last, &Scope::default(), PAGE, Ends::Limit).await {
                Ok(page) => {
                    read.inc_by(page.changes.len() as u64);
                    let at_head = page.at_head();
                    for row in page.changes {
                        last = row.seq;
                        // One span per traced change per replica (not one per watcher), in the
                        // trace of the webhook that made it.
                        let span = match &row.trace_context {
                            Some(t) => {
                                let span = tracing::info_span!(
                                    "fan_out",
                                    otel.name = "fan out change",
                                    seq = row.seq,
                                    entity_type = %row.entity_type,
                                    receivers = tracing::field::Empty,
                                );
                                crate::telemetry::continue_trace(&span, t);
                                span
                            }
                            None => tracing::Span::none(),
                        };
                        let _entered = span.enter();
                        let row = Arc::new(row);
                        recent.push(row.clone());
                        // No receivers is fine: nobody is following.
                        let receivers = tx.send(row).unwrap_or(0);
                        span.record("receivers", receivers);
                    }
                    latest.send_replace(last);
                    if at_head {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "the change hub cannot read the log");
                    break;
                }
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.try_recv().await.map(|n| n.is_some()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = notified => match r {
                // The next round reads everything committed: the notifications already sent
                // for it are taken now, not one per round.
                Ok(true) => {
                    if let Some(Err(e)) = listener.as_mut().map(crate::db::drain_notifications) {
                        warn!(error = %e, "the change hub's LISTEN failed");
                        listener = None;
                    }
                }
                // Ok(None): the connection was lost (notifications in between are lost too);
                // the next round re-reads from the database anyway.
                Ok(false) => debug!("the change hub's LISTEN connection was lost"),
                Err(e) => {
                    warn!(error = %e, "the change hub's LISTEN failed");
                    listener = None;
                }
            },
            () = tokio::time::sleep(poll) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

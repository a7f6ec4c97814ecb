//! The group-commit inbox writer: webhook handlers hand it their row and wait; it writes every
//! row that is waiting in one transaction (through the inbox's one insert) and answers each
//! handler once that transaction has committed. One bad row never fails the rest of its batch.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use opentelemetry::trace::TraceContextExt as _;
use tracing::{Instrument, debug, error, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::db::is_unavailable;
use crate::inbox::{self, InboxRow};

/// What became of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Newly stored.
    New,
    /// A row with the same source and key was already stored (a redelivery).
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The database could not be reached or the transaction failed for reasons not specific to
    /// this row: the sender should retry.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database refused this row itself.
    #[error("the database refused the row: {0}")]
    Refused(#[source] sqlx::Error),
    /// The writer has stopped (shutdown).
    #[error("the inbox writer has stopped")]
    Stopped,
}

struct Request {
    row: InboxRow,
    done: oneshot::Sender<Result<Stored, WriteError>>,
    span: tracing::Span,
}

/// A handle to the writer task; cheap to clone. The task ends once every handle is dropped and
/// the rows already handed over are written.
#[derive(Clone)]
pub struct InboxWriter {
    tx: mpsc::Sender<Request>,
}

impl InboxWriter {
    /// Starts the writer task on `pool`, writing at most `max_batch` rows per transaction.
    pub fn spawn(pool: PgPool, max_batch: usize) -> (InboxWriter, tokio::task::JoinHandle<()>) {
        let max_batch = max_batch.max(1);
        let (tx, rx) = mpsc::channel(max_batch * 4);
        let task = tokio::spawn(run(pool, rx, max_batch));
        (InboxWriter { tx }, task)
    }

    /// Stores `row`; returns once the transaction holding it has committed.
    pub async fn write(&self, row: InboxRow) -> Result<Stored, WriteError> {
        let (done, wait) = oneshot::channel();
        let request = Request {
            row,
            done,
            span: tracing::Span::current(),
        };
        self.tx.send(request).await.map_err(|_| WriteError::Stopped)?;
        wait.await.map_err(|_| WriteError::Stopped)?
    }
}

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Request>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let span = tracing::info_span!("inbox_commit", otel.name = "inbox group commit", rows = batch.len());
        // Linked (not parented) to every webhook it commits: one commit serves many traces.
        if crate::telemetry::exporting() {
            for request in &batch {
                let linked = request.span.context().span().span_context().clone();
                if linked.is_valid() {
                    span.add_link(linked);
                }
            }
        }
        write_batch(&pool, std::mem::take(&mut batch)).instrument(span).await;
    }
}

async fn write_batch(pool: &PgPool, batch: Vec<Request>) {
    let rows: Vec<&InboxRow> = batch.iter().map(|r| &r.row).collect();
    let started = std::time::Instant::now();
    match inbox::insert(pool, &rows).await {
        Ok(inserted) => {
            let commit_ms = started.elapsed().as_secs_f64() * 1000.0;
            debug!(rows = rows.len(), inserted = inserted.len(), commit_ms, "inbox batch committed");
            let mut fresh = inserted;
            for request in batch {
                let key = (request.row.source.as_str(), request.row.event_key.as_str());
                // A key stored by this batch is new for its first request only.
                let outcome = match fresh.iter().position(|(s, k)| (s.as_str(), k.as_str()) == key) {
                    Some(i) => {
                        fresh.swap_remove(i);
                        Stored::New
                    }
                    None => Stored::Duplicate,
                };
                let _ = request.done.send(Ok(outcome));
            }
        }
        Err(e) if is_unavailable(&e) || batch.len() == 1 => {
            let row_error = !is_unavailable(&e);
            for request in batch {
                let _entered = request.span.enter();
                let err = if row_error {
                    error!(error = %e, "the database refused an inbox row");
                    WriteError::Refused(clone_error(&e))
                } else {
                    warn!(error = %e, "inbox write failed: database unavailable");
                    WriteError::Unavailable(clone_error(&e))
                };
                let _ = request.done.send(Err(err));
            }
        }
        Err(e) => {
            // Something in the batch was refused: write each row alone, so only that one fails.
            warn!(error = %e, rows = batch.len(), "inbox batch refused; retrying its rows one by one");
            for request in batch {
                Box::pin(write_batch(pool, vec![request])).await;
            }
        }
    }
}

/// sqlx errors are not `Clone`; keep the message for every waiter.
fn clone_error(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Protocol(e.to_string())
}

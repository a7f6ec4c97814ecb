//! One reader's way through the change log: from any cursor, every change after it, in seq
//! order, with no gap and no repeat, handed out in whole applier batches. It reads the backlog
//! first — from the hub's ring of recent changes when the ring reaches back to its cursor (then
//! one small query confirms the log's head is no further), else from PostgreSQL in pages that
//! end on batch boundaries — then the hub's shared broadcast (live); a gap in what the hub
//! publishes, a lag behind its buffer or a quiet spell that hides a lost wake-up sends it back
//! to the backlog at its own cursor, and a cursor the log no longer retains ends it with
//! [`FeedError::CursorExpired`]. Changes of an entity type this binary does
//! not know (written by a newer replica) are skipped and counted.
//!
//! Memory: at most one page read from PostgreSQL, plus the part of one batch already received
//! live; the broadcast buffer is the hub's, shared by every reader. A batch is as long as the
//! applier made it (deleting an organization ends every membership in the same batch), so a
//! reader that does not need batches whole (a watch stream, which sends changes one by one) takes
//! a long one in parts of a page, and an unread stream holds no more than a page.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec};
use sqlx::PgPool;
use tokio::sync::broadcast::{self, error::RecvError};

use super::Recent;
use crate::store::changes::{self, ChangeRow, Ends, Scope};

/// What a reader follows and how it is counted.
#[derive(Debug, Clone)]
pub struct Reader {
    /// The changes handed out (others are passed over); SQL narrows the pages by it too.
    pub scope: Scope,
    /// Changes per page read from PostgreSQL (more when a batch is longer and `whole_batches`).
    pub page: i64,
    /// Hand out every batch whole, however long (the read cache, which applies each
    /// atomically). Without it a batch longer than `page` comes in parts of about `page`
    /// changes, in order, the last ending where the batch ends.
    pub whole_batches: bool,
    /// Counts the rows this reader reads from PostgreSQL itself.
    pub rows_read: Option<IntCounter>,
    /// Counts the changes this reader takes from the hub's ring of recent changes.
    pub recent_read: Option<IntCounter>,
    /// Counts the times this reader fell behind the hub (a gap or a lag) and read PostgreSQL.
    pub catch_ups: Option<IntCounter>,
    /// How long without a live change before the log's head is compared with the reader's
    /// position (one small query): the hub may miss a wake-up, or never publish changes pruned
    /// before it read them. `None`: rely on the hub alone.
    pub idle_check: Option<Duration>,
}

impl Reader {
    /// Every change in whole batches, pages of `page`, counted nowhere, without idle checks.
    pub fn everything(page: i64) -> Reader {
        Reader {
            scope: Scope::default(),
            page,
            whole_batches: true,
            rows_read: None,
            recent_read: None,
            catch_ups: None,
            idle_check: None,
        }
    }
}

/// One applier batch (the first may be the tail of one when the cursor was inside it; without
/// `whole_batches`, a part of a long one), or the news that nothing in scope happened up to `end`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Its changes in the reader's scope, in seq order (possibly none).
    pub changes: Vec<Arc<ChangeRow>>,
    /// The last seq it covers: the reader's position once it has handled the batch.
    pub end: i64,
    /// Reaching the log's head as of a read of it (the backlog is done): a page from PostgreSQL
    /// that did, or the empty batch that ends a backlog taken from the ring.
    pub at_head: bool,
}

/// Why a feed cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The log was pruned past the feed's position: what came after it is gone.
    #[error("the change log no longer holds the changes after {after} (oldest retained: {oldest})")]
    CursorExpired { after: i64, oldest: i64 },
    /// PostgreSQL refused a read; the feed is unchanged, and `next` again retries it.
    #[error("cannot read the change log: {0}")]
    Database(#[from] sqlx::Error),
    /// The hub is gone.
    #[error("the change hub stopped")]
    Closed,
}

/// The log after a cursor, for one reader (made by `Hub::feed`).
pub struct Feed {
    pool: PgPool,
    live: broadcast::Receiver<Arc<ChangeRow>>,
    recent: Recent,
    reader: Reader,
    skipped: IntCounterVec,
    /// Handed out up to here.
    position: i64,
    /// Queued in `ready` up to here (a batch end, the starting cursor, or the end of a part).
    read_to: i64,
    /// Received live up to here (past `read_to` while a batch is being assembled).
    received: i64,
    /// The in-scope changes received of the batch being assembled.
    pending: Vec<Arc<ChangeRow>>,
    /// Batches read, not handed out yet.
    ready: VecDeque<Batch>,
    /// Reading the backlog until it reaches the head.
    behind: bool,
    /// The backlog came from the ring: the log's head is to be compared with what was received
    /// before the backlog is done.
    confirm_head: bool,
}

impl Feed {
    pub(super) fn new(
        pool: PgPool,
        live: broadcast::Receiver<Arc<ChangeRow>>,
        recent: Recent,
        after: i64,
        reader: Reader,
        skipped: IntCounterVec,
    ) -> Feed {
        Feed {
            pool,
            live,
            recent,
            reader,
            skipped,
            position: after,
            read_to: after,
            received: after,
            pending: Vec::new(),
            ready: VecDeque::new(),
            // Subscribed first, then the ring or the database: what the hub published before is
            // in them.
            behind: true,
            confirm_head: false,
        }
    }

    /// The last seq handed out (or the starting cursor).
    pub fn position(&self) -> i64 {
        self.position
    }

    /// The next batch after the position. Cancel-safe: dropped before it completes, nothing is
    /// lost, and the next call goes on from the same place. With `idle_check`, a quiet spell
    /// with nothing new ends in an empty batch at the position.
    pub async fn next(&mut self) -> Result<Batch, FeedError> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                self.position = batch.end;
                return Ok(batch);
            }
            if self.behind {
                if !self.take_recent() {
                    // Boxed, like every read of the database here: a future is as large as its
                    // largest state, and an idle watcher waits in this one (#27).
                    Box::pin(self.read_page()).await?;
                }
                continue;
            }
            if self.confirm_head {
                // The ring ends where the hub has read: the log may be further.
                let (_, bounds) = Box::pin(changes::bounds(&self.pool)).await?;
                self.confirm_head = false;
                if bounds.head > self.received {
                    self.fall_behind();
                    continue;
                }
                return Ok(Batch {
                    changes: Vec::new(),
                    end: self.position,
                    at_head: true,
                });
            }
            let received = match self.reader.idle_check {
                None => self.live.recv().await,
                Some(idle) => match tokio::time::timeout(idle, self.live.recv()).await {
                    Ok(received) => received,
                    Err(_) => {
                        if Box::pin(self.head_passed()).await {
                            self.fall_behind();
                            continue;
                        }
                        return Ok(Batch {
                            changes: Vec::new(),
                            end: self.position,
                            at_head: false,
                        });
                    }
                },
            };
            match received {
                Ok(change) => {
                    if let Some(batch) = self.take_live(change) {
                        self.position = batch.end;
                        return Ok(batch);
                    }
                }
                Err(RecvError::Lagged(_)) => self.fall_behind(),
                Err(RecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }

    /// A change from the hub: `Some` when it ends a batch.
    fn take_live(&mut self, change: Arc<ChangeRow>) -> Option<Batch> {
        if change.seq <= self.received {
            // Already read from the database.
            return None;
        }
        if change.seq != self.received + 1 {
            // The hub skipped (pruned before it read them, or it lost its place): the log has them.
            self.fall_behind();
            return None;
        }
        self.received = change.seq;
        let end = change.batch_end();
        if self.keep(&change) {
            self.pending.push(change);
        }
        let part_full = !self.reader.whole_batches && self.pending.len() as i64 >= self.reader.page;
        if self.received < end && !part_full {
            return None;
        }
        self.read_to = self.received;
        Some(Batch {
            changes: std::mem::take(&mut self.pending),
            end: self.read_to,
            at_head: false,
        })
    }

    /// Whether a change is handed out: in scope, and of a type this binary knows.
    fn keep(&self, change: &ChangeRow) -> bool {
        if !self.reader.scope.contains(change) {
            return false;
        }
        if change.is_raw_event() {
            return false;
        }
        if change.entity_type().is_none() {
            self.skipped.with_label_values(&[label(&change.entity_type)]).inc();
            return false;
        }
        true
    }

    /// Takes the backlog from the hub's ring, if it reaches back to what was received: queues
    /// its batches as if they had come live, and leaves the head to be confirmed.
    fn take_recent(&mut self) -> bool {
        let Some(changes) = self.recent.after(self.received) else {
            return false;
        };
        if let Some(c) = &self.reader.recent_read {
            c.inc_by(changes.len() as u64);
        }
        self.behind = false;
        self.confirm_head = true;
        for change in changes {
            if let Some(batch) = self.take_live(change) {
                self.ready.push_back(batch);
            }
        }
        true
    }

    /// Drops the batch being assembled and reads the backlog from the last whole batch.
    fn fall_behind(&mut self) {
        self.pending.clear();
        self.received = self.read_to;
        self.behind = true;
        self.confirm_head = false;
        if let Some(c) = &self.reader.catch_ups {
            c.inc();
        }
    }

    /// Whether the log's head is past what was received (a failed query says no: the hub or
    /// the next check will tell).
    async fn head_passed(&self) -> bool {
        match changes::bounds(&self.pool).await {
            Ok((_, bounds)) => bounds.head > self.received,
            Err(_) => false,
        }
    }

    /// Reads one page after `read_to` and queues it as batches.
    async fn read_page(&mut self) -> Result<(), FeedError> {
        let ends = if self.reader.whole_batches {
            Ends::Batch
        } else {
            Ends::Limit
        };
        let page = changes::page(&self.pool, self.read_to, &self.reader.scope, self.reader.page, ends).await?;
        if self.read_to < page.bounds.oldest - 1 {
            return Err(FeedError::CursorExpired {
                after: self.read_to,
                oldest: page.bounds.oldest,
            });
        }
        if let Some(c) = &self.reader.rows_read {
            c.inc_by(page.changes.len() as u64);
        }
        let at_head = page.at_head();
        let mut changes = page.changes.into_iter().peekable();
        let mut batch = Vec::new();
        while let Some(change) = changes.next() {
            let end = change.batch_end().min(page.end);
            if self.keep(&change) {
                batch.push(Arc::new(change));
            }
            // The page's last batch is queued below, ending where the page ends.
            if changes.peek().is_some_and(|next| next.seq > end) {
                self.ready.push_back(Batch {
                    changes: std::mem::take(&mut batch),
                    end,
                    at_head: false,
                });
            }
        }
        self.ready.push_back(Batch {
            changes: batch,
            end: page.end,
            at_head,
        });
        self.read_to = page.end;
        self.received = page.end;
        self.behind = !at_head;
        Ok(())
    }
}

/// The metric label of an entity type (bounded: it comes from the database).
fn label(entity_type: &str) -> &str {
    match entity_type.char_indices().nth(64) {
        Some((i, _)) => &entity_type[..i],
        None => entity_type,
    }
}

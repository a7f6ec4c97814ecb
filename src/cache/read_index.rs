//! The read index (etcd's ReadIndex; Kubernetes' consistent reads from the watch cache): a
//! `fully_consistent` read learns the change log's head with one small query, waits until the
//! replica's cache has applied that position, and answers from memory. The answer then reflects
//! every change committed before the read arrived, as a read of PostgreSQL would.
//!
//! The query is shared: reads that arrive while one is in flight wait for the next one, which is
//! issued after they arrived (joining a query issued before a read arrived could miss a commit
//! made in between); every read waiting when a query is issued takes its answer. Under load that
//! is one query per round trip to PostgreSQL, however many reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::oneshot;

use crate::store::read;

/// Learns the log's head for consistent reads, one shared query at a time.
#[derive(Clone)]
pub struct ReadIndex {
    pool: PgPool,
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Head queries issued (each answers every read waiting when it was issued).
    queries: AtomicU64,
}

#[derive(Default)]
struct Pending {
    /// Whether a task is issuing queries for the waiting reads.
    running: bool,
    /// Reads waiting for a query issued after they arrived.
    waiting: Vec<oneshot::Sender<Option<i64>>>,
}

impl ReadIndex {
    pub fn new(pool: PgPool) -> Self {
        ReadIndex {
            pool,
            shared: Arc::new(Shared {
                pending: Mutex::new(Pending::default()),
                queries: AtomicU64::new(0),
            }),
        }
    }

    /// The log's head as of a query issued after this call began.
    pub async fn head(&self) -> Result<i64, sqlx::Error> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut p = self.shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.waiting.push(tx);
            !std::mem::replace(&mut p.running, true)
        };
        if start {
            // Its own task: a read that gives up (a cancelled RPC) does not strand the others.
            tokio::spawn(issue(self.pool.clone(), self.shared.clone()));
        }
        match rx.await {
            Ok(Some(head)) => Ok(head),
            // The shared query failed: this read's own says why.
            _ => read::head(&self.pool).await,
        }
    }

    /// How many head queries have been issued.
    pub fn queries(&self) -> u64 {
        self.shared.queries.load(Ordering::Relaxed)
    }
}

/// Issues head queries until no read waits, each answering the reads waiting when it was issued.
async fn issue(pool: PgPool, shared: Arc<Shared>) {
    loop {
        let batch = {
            let mut p = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.waiting.is_empty() {
                p.running = false;
                return;
            }
            std::mem::take(&mut p.waiting)
        };
        shared.queries.fetch_add(1, Ordering::Relaxed);
        let head = read::head(&pool).await.ok();
        for read in batch {
            let _ = read.send(head);
        }
    }
}

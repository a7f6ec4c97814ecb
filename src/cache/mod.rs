//! The read cache of one replica: an in-memory index of the projections at a change-log cursor
//! (see `index`), loaded from one snapshot and kept current from the replica's hub (see
//! `follow`). Reads ask it first; until it is loaded (and for what it does not hold) they read
//! PostgreSQL. Readers wait on its cursor for `at_least_as_fresh`.

pub mod billing;
pub mod follow;
pub mod index;
pub mod read_index;
pub mod size;
pub mod table;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

pub use index::{Answer, Held, Index};
pub use read_index::ReadIndex;

use crate::metrics::Metrics;

/// Whether the cache serves, and the cursor it has applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Loaded and following the log (false while disabled, loading or reloading).
    pub ready: bool,
    pub cursor: i64,
}

/// How a wait for a cursor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The cache has applied the cursor.
    Reached,
    /// The cache stopped serving (disabled, reloading): read PostgreSQL.
    NotServing,
    /// The time ran out; the cache's cursor then.
    TimedOut(i64),
}

struct Shared {
    index: RwLock<Option<Index>>,
    state: watch::Sender<State>,
    metrics: Arc<Metrics>,
    /// The read counters by outcome, resolved once (a label lookup per read costs a hash and a lock).
    outcomes: Vec<(&'static str, prometheus::IntCounter)>,
}

/// The outcomes `count` knows.
const OUTCOMES: [&str; 5] = ["hit", "absent", "fallback", "not_ready", "fully_consistent"];

/// A handle to the cache (cheap to clone).
#[derive(Clone)]
pub struct ReadCache {
    shared: Arc<Shared>,
}

impl ReadCache {
    /// A cache that serves nothing until `install` (and never, if `follow` is not started).
    pub fn new(metrics: Arc<Metrics>) -> ReadCache {
        let (state, _) = watch::channel(State {
            ready: false,
            cursor: 0,
        });
        let outcomes = OUTCOMES
            .iter()
            .map(|o| (*o, metrics.cache_reads.with_label_values(&[o])))
            .collect();
        ReadCache {
            shared: Arc::new(Shared {
                index: RwLock::new(None),
                state,
                metrics,
                outcomes,
            }),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        *self.shared.state.borrow()
    }

    /// Runs `f` on the index if the cache serves; `None` if it does not.
    pub fn read<T>(&self, f: impl FnOnce(&Index) -> T) -> Option<T> {
        let guard = self.shared.index.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(f)
    }

    /// Counts a read's outcome: `hit`, `absent` (a certain negative), `fallback` (not held, or a
    /// lookup the index cannot answer), `not_ready`, `fully_consistent` (the read index's reads,
    /// each also counted as how memory or PostgreSQL then answered).
    pub fn count(&self, outcome: &str) {
        match self.shared.outcomes.iter().find(|(o, _)| *o == outcome) {
            Some((_, counter)) => counter.inc(),
            None => self.shared.metrics.cache_reads.with_label_values(&[outcome]).inc(),
        }
    }

    /// Serves `index` from now on.
    pub(crate) fn install(&self, index: Index) {
        let cursor = index.cursor();
        *self.shared.index.write().unwrap_or_else(|e| e.into_inner()) = Some(index);
        self.shared.state.send_replace(State { ready: true, cursor });
        self.gauges();
    }

    /// Stops serving (reads go to PostgreSQL) and drops the index.
    pub(crate) fn uninstall(&self) {
        let old = self.shared.index.write().unwrap_or_else(|e| e.into_inner()).take();
        self.shared.state.send_modify(|s| s.ready = false);
        // Freeing a large index takes a while: not under the lock readers wait on.
        drop(old);
        self.gauges();
    }

    /// Changes the index under the write lock, then publishes its cursor.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut Index) -> T) -> Option<T> {
        let (out, cursor) = {
            let mut guard = self.shared.index.write().unwrap_or_else(|e| e.into_inner());
            let index = guard.as_mut()?;
            let out = f(index);
            (out, index.cursor())
        };
        self.shared.state.send_modify(|s| s.cursor = cursor);
        Some(out)
    }

    /// Sets the entry, byte and completeness gauges from the index.
    pub(crate) fn gauges(&self) {
        let m = &self.shared.metrics.cache;
        let (entries, access, bytes, complete, cursor) = self
            .read(|i| (i.entries(), i.access().counts(), i.bytes(), i.complete(), i.cursor()))
            .unwrap_or(((0, 0, 0), (0, 0), 0, false, 0));
        m.with_label_values(&["users"]).set(entries.0 as i64);
        m.with_label_values(&["organizations"]).set(entries.1 as i64);
        m.with_label_values(&["memberships"]).set(entries.2 as i64);
        // Held outside the budget.
        m.with_label_values(&["roles"]).set(access.0 as i64);
        m.with_label_values(&["permissions"]).set(access.1 as i64);
        m.with_label_values(&["bytes"]).set(bytes as i64);
        m.with_label_values(&["complete"]).set(i64::from(complete));
        m.with_label_values(&["cursor"]).set(cursor);
    }

    /// Sets the lag gauge: changes the hub has published that the cache has not applied.
    pub(crate) fn lag(&self, hub_latest: i64) {
        let cursor = self.state().cursor;
        self.shared
            .metrics
            .cache
            .with_label_values(&["cursor_lag"])
            .set((hub_latest - cursor).max(0));
    }

    /// Waits until the cache serves, or `timeout` passes; whether it serves.
    pub async fn wait_until_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.state.subscribe();
        matches!(tokio::time::timeout(timeout, rx.wait_for(|s| s.ready)).await, Ok(Ok(_)))
    }

    /// Waits until the cache has applied `seq`, it stops serving, or `timeout` passes.
    pub async fn wait_for(&self, seq: i64, timeout: Duration) -> Waited {
        let mut rx = self.shared.state.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|s| !s.ready || s.cursor >= seq)).await;
        match waited {
            Ok(Ok(s)) if s.ready => Waited::Reached,
            Ok(_) => Waited::NotServing,
            Err(_) => Waited::TimedOut(self.state().cursor),
        }
    }
}

//! The hub's ring of recent changes: the last changes it published, in seq order with no gap
//! (the same rows its broadcast buffer holds, shared, so the ring costs a pointer per change). A
//! feed that starts or falls behind reads what it needs from here when the ring reaches back to
//! its position, instead of reading PostgreSQL: a watcher resuming from a recent cursor, the
//! read cache after a reload.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::store::changes::ChangeRow;

/// A handle to the ring (cheap to clone).
#[derive(Clone)]
pub struct Recent {
    inner: Arc<Mutex<VecDeque<Arc<ChangeRow>>>>,
    capacity: usize,
}

impl Recent {
    pub fn new(capacity: usize) -> Recent {
        Recent {
            inner: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(4096)))),
            capacity: capacity.max(1),
        }
    }

    /// Adds the change the hub publishes next; a gap (changes pruned before the hub read
    /// them) empties the ring first, so it only ever holds a run with no gap.
    pub fn push(&self, change: Arc<ChangeRow>) {
        let mut ring = self.inner.lock().expect("the ring's lock is never poisoned");
        if ring.back().is_some_and(|last| last.seq + 1 != change.seq) {
            ring.clear();
        }
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(change);
    }

    /// Every change after `after`, if the ring holds the one right after it and some: `None`
    /// when it does not reach back that far, or holds nothing newer.
    pub fn after(&self, after: i64) -> Option<Vec<Arc<ChangeRow>>> {
        let ring = self.inner.lock().expect("the ring's lock is never poisoned");
        let first = ring.front()?.seq;
        let last = ring.back()?.seq;
        if first > after + 1 || last <= after {
            return None;
        }
        let from = usize::try_from(after + 1 - first).expect("within the ring");
        Some(ring.range(from..).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: i64) -> Arc<ChangeRow> {
        Arc::new(ChangeRow {
            seq,
            entity_type: "user".into(),
            entity_id: format!("user_{seq}"),
            operation: "updated".into(),
            organization_id: None,
            user_id: None,
            state: serde_json::Value::Null,
            previous: None,
            source: "webhook".into(),
            commit_time: chrono::DateTime::UNIX_EPOCH,
            batch_last: None,
            trace_context: None,
            wire: Default::default(),
        })
    }

    fn seqs(v: Option<Vec<Arc<ChangeRow>>>) -> Option<Vec<i64>> {
        v.map(|v| v.iter().map(|c| c.seq).collect())
    }

    #[test]
    fn the_ring_gives_what_follows_a_position_it_reaches_back_to() {
        let ring = Recent::new(3);
        assert_eq!(seqs(ring.after(0)), None);
        for seq in 1..=5 {
            ring.push(change(seq));
        }
        // Holds 3, 4, 5.
        assert_eq!(seqs(ring.after(1)), None, "2 is gone");
        assert_eq!(seqs(ring.after(2)), Some(vec![3, 4, 5]));
        assert_eq!(seqs(ring.after(4)), Some(vec![5]));
        assert_eq!(seqs(ring.after(5)), None, "nothing newer");
        // A gap starts the ring over.
        ring.push(change(9));
        assert_eq!(seqs(ring.after(5)), None);
        assert_eq!(seqs(ring.after(8)), Some(vec![9]));
    }
}

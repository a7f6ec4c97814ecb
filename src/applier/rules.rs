//! The ordering and idempotency rules, as pure functions over the batch's working set: the
//! stored state of every entity the batch touches, changed in memory and written back at the
//! end. Whatever order a set of events arrives in, these rules end in the same state. They are
//! written once for every kind (`store::Kind`); a kind's parents (`Kind::PARENTS`) give the
//! cascades.
//!
//! - Upserts: last writer wins by `Version` (Clerk's `updated_at`, envelope time, event key); a
//!   losing event changes nothing and emits no change.
//! - Deletes win by type, whatever the timestamps; after a delete nothing changes that id. The
//!   delete time is the earliest delete seen (an explicit delete, or the end of a parent), so
//!   it does not depend on the order either.
//! - Deleting an entity ends its children (an organization's or a user's memberships), each a
//!   change of its own; an event for a child whose parent is already deleted stores it as ended.
//! - Membership events carry snapshots of their organization and user: those are kept on the
//!   membership only and never written over the `organizations` or `users` projections.

use std::any::Any;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::event::{Action, Derived};
use crate::store::kind::{for_each_kind, match_record, with_kind};
use crate::store::{EntityType, Kind, Version, Versioned};

/// created / updated / deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Created,
    Updated,
    Deleted,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Created => "created",
            Operation::Updated => "updated",
            Operation::Deleted => "deleted",
        }
    }
}

/// A change to append to the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub seq: i64,
    pub entity_type: EntityType,
    pub entity_id: String,
    pub operation: Operation,
    pub organization_id: Option<String>,
    pub user_id: Option<String>,
    /// The entity after the change, as JSON text (serialised once, sent as is).
    pub state: String,
    pub previous: Option<String>,
    pub source: String,
    pub inbox_id: Option<i64>,
}

/// One entity of the working set: its state (`None`: not stored) and whether it must be written.
#[derive(Debug, Clone)]
pub struct Slot<T> {
    pub current: Option<Versioned<T>>,
    pub dirty: bool,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            current: None,
            dirty: false,
        }
    }
}

/// The slots of one kind, by id.
pub type Slots<K> = BTreeMap<String, Slot<K>>;

/// The stored state of every entity a batch touches (the slots of each kind), and the changes
/// the batch makes.
pub struct WorkingSet {
    slots: BTreeMap<EntityType, Box<dyn Any + Send + Sync>>,
    pub changes: Vec<Change>,
    /// The last seq assigned.
    pub head: i64,
}

/// Where a change came from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub source: String,
    pub inbox_id: Option<i64>,
}

fn state_of<T: serde::Serialize>(record: &T) -> String {
    serde_json::to_string(record).expect("records serialise")
}

impl WorkingSet {
    /// A working set whose next change gets `head + 1`.
    pub fn new(head: i64) -> Self {
        WorkingSet {
            slots: BTreeMap::new(),
            changes: Vec::new(),
            head,
        }
    }

    /// The slots of kind `K`, if any were loaded or touched.
    pub fn slots<K: Kind>(&self) -> Option<&Slots<K>> {
        self.slots
            .get(&K::TYPE)
            .map(|s| s.downcast_ref().expect("a kind's slots have its record type"))
    }

    /// The slots of kind `K`.
    pub fn slots_mut<K: Kind>(&mut self) -> &mut Slots<K> {
        kind_slots(&mut self.slots)
    }

    /// Applies one event's action.
    pub fn apply(&mut self, action: Action, origin: &Origin) {
        match action {
            Action::Upsert(record, version) => match_record!(record, r => self.upsert(r, version, origin)),
            Action::UpsertAll(all) => {
                for (record, version) in all {
                    match_record!(record, r => self.upsert(r, version, origin));
                }
            }
            Action::Delete(record) => match_record!(record, r => self.delete_event(r, origin)),
            Action::Derive(d) => with_kind!(d.entity_type, K => {
                let slot = kind_slots::<K>(&mut self.slots).entry(d.id.clone()).or_default();
                derive(slot, &d, origin, &mut self.head, &mut self.changes)
            }),
            Action::Skip => {}
        }
    }

    /// When the entity `id` of kind `t` was deleted, if it is in the working set and deleted.
    fn deleted_at_of(&self, t: EntityType, id: &str) -> Option<DateTime<Utc>> {
        with_kind!(t, P => self.slots::<P>().and_then(|s| s.get(id)).and_then(deleted_at))
    }

    /// The earliest end among the parents of `record`.
    fn parents_ended<K: Kind>(&self, record: &K) -> Option<DateTime<Utc>> {
        K::PARENTS
            .iter()
            .filter_map(|(t, _)| self.deleted_at_of(*t, record.parent(*t)?))
            .min()
    }

    /// An upsert; under a deleted parent, the entity is stored as ended instead.
    fn upsert<K: Kind>(&mut self, record: K, version: Version, origin: &Origin) {
        match self.parents_ended(&record) {
            Some(at) => {
                let tombstone = record.tombstone(at);
                self.delete(tombstone, origin, at);
            }
            None => {
                let id = record.id().to_string();
                let slot = kind_slots::<K>(&mut self.slots).entry(id).or_default();
                upsert(slot, record, version, origin, &mut self.head, &mut self.changes);
            }
        }
    }

    /// A delete event: ended no later than its parents, if those are gone.
    fn delete_event<K: Kind>(&mut self, mut tombstone: K, origin: &Origin) {
        let Some(at) = tombstone.deleted_at() else {
            return;
        };
        let at = self.parents_ended(&tombstone).map_or(at, |ended| ended.min(at));
        tombstone.set_deleted_at(at);
        self.delete(tombstone, origin, at);
    }

    /// Deletes (or ends earlier) one entity, then ends its children.
    fn delete<K: Kind>(&mut self, tombstone: K, origin: &Origin, at: DateTime<Utc>) {
        let id = tombstone.id().to_string();
        let slot = kind_slots::<K>(&mut self.slots).entry(id.clone()).or_default();
        delete(slot, tombstone, at, origin, &mut self.head, &mut self.changes);
        self.end_children(K::TYPE, &id, at, origin);
    }

    /// Ends every child of the entity `id` of kind `parent` (the working set holds all of them:
    /// the loader reads every child of a deleted parent).
    fn end_children(&mut self, parent: EntityType, id: &str, at: DateTime<Utc>, origin: &Origin) {
        for_each_kind!(C => {
            if C::PARENTS.iter().any(|(t, _)| *t == parent) {
                let children: Vec<C> = self
                    .slots::<C>()
                    .into_iter()
                    .flat_map(|slots| slots.values())
                    .filter_map(|slot| slot.current.as_ref())
                    .filter(|c| c.record.parent(parent) == Some(id))
                    .map(|c| c.record.tombstone(at))
                    .collect();
                for child in children {
                    self.delete(child, origin, at);
                }
            }
        });
    }
}

fn kind_slots<K: Kind>(slots: &mut BTreeMap<EntityType, Box<dyn Any + Send + Sync>>) -> &mut Slots<K> {
    slots
        .entry(K::TYPE)
        .or_insert_with(|| Box::new(Slots::<K>::new()))
        .downcast_mut()
        .expect("a kind's slots have its record type")
}

fn deleted_at<T: Kind>(slot: &Slot<T>) -> Option<DateTime<Utc>> {
    slot.current.as_ref().and_then(|c| c.record.deleted_at())
}

fn push_change<T: Kind>(
    changes: &mut Vec<Change>,
    head: &mut i64,
    operation: Operation,
    record: &T,
    previous: Option<&T>,
    origin: &Origin,
) -> i64 {
    *head += 1;
    changes.push(Change {
        seq: *head,
        entity_type: T::TYPE,
        entity_id: record.id().to_string(),
        operation,
        organization_id: record.organization_id(),
        user_id: record.user_id(),
        state: state_of(record),
        previous: previous.map(state_of),
        source: origin.source.clone(),
        inbox_id: origin.inbox_id,
    });
    *head
}

/// Last writer wins; nothing changes a tombstone (but what its kind lets it learn, see
/// [`learn`]); an identical state emits no change.
fn upsert<T: Kind>(
    slot: &mut Slot<T>,
    record: T,
    version: Version,
    origin: &Origin,
    head: &mut i64,
    changes: &mut Vec<Change>,
) {
    let operation = match &slot.current {
        Some(current) if current.record.deleted_at().is_some() => {
            return learn(slot, record, version, origin, head, changes);
        }
        // A state that only follows another in Clerk outranks it first (`Kind::precedence`).
        Some(current)
            if current
                .version
                .as_ref()
                .is_some_and(|v| (current.record.precedence(), v) >= (record.precedence(), &version)) =>
        {
            return;
        }
        Some(current) if current.record == record || current.record.underived().is_some_and(|u| u == record) => {
            // Same state under a newer version (what the mirror derived in it kept): remember
            // the version, tell nobody.
            let (update_cursor, kept) = (current.update_cursor, current.record.clone());
            slot.current = Some(Versioned {
                record: kept,
                version: Some(version),
                update_cursor,
            });
            slot.dirty = true;
            return;
        }
        Some(_) => Operation::Updated,
        None => Operation::Created,
    };
    let previous = slot.current.as_ref().map(|c| &c.record);
    let seq = push_change(changes, head, operation, &record, previous, origin);
    slot.current = Some(Versioned {
        record,
        version: Some(version),
        update_cursor: seq,
    });
    slot.dirty = true;
}

/// A create or update after the delete: the tombstone learns what its kind lets it learn, when
/// the version is newer than what it learned from before (a change of operation `deleted`).
fn learn<T: Kind>(
    slot: &mut Slot<T>,
    record: T,
    version: Version,
    origin: &Origin,
    head: &mut i64,
    changes: &mut Vec<Change>,
) {
    let Some(current) = &slot.current else { return };
    if current.version.as_ref().is_some_and(|v| *v >= version) {
        return;
    }
    let Some(learned) = T::learned(&current.record, &record) else {
        return;
    };
    let update_cursor = if learned == current.record {
        current.update_cursor
    } else {
        push_change(changes, head, Operation::Deleted, &learned, Some(&current.record), origin)
    };
    slot.current = Some(Versioned {
        record: learned,
        version: Some(version),
        update_cursor,
    });
    slot.dirty = true;
}

/// A state the mirror derives (docs/inbox.md, "Ranking"): only over a stored, live entity whose
/// version is exactly the row's basis; it keeps that version, so whatever Clerk says next wins
/// over it as it would have over the basis. Never creates, never deletes.
fn derive<T: Kind>(slot: &mut Slot<T>, d: &Derived, origin: &Origin, head: &mut i64, changes: &mut Vec<Change>) {
    let Some(current) = &slot.current else { return };
    if current.record.deleted_at().is_some() || current.version.as_ref() != Some(&d.basis) {
        return;
    }
    let Some(derived) = T::derive(&current.record, &d.event_type, &d.data) else {
        return;
    };
    if derived == current.record {
        return;
    }
    let seq = push_change(changes, head, Operation::Updated, &derived, Some(&current.record), origin);
    let version = current.version.clone();
    slot.current = Some(Versioned {
        record: derived,
        version,
        update_cursor: seq,
    });
    slot.dirty = true;
}

/// A delete always wins; the earliest delete time stands.
fn delete<T: Kind>(
    slot: &mut Slot<T>,
    tombstone: T,
    at: DateTime<Utc>,
    origin: &Origin,
    head: &mut i64,
    changes: &mut Vec<Change>,
) {
    let record = match &slot.current {
        Some(current) => match current.record.deleted_at() {
            Some(existing) if existing <= at => {
                // Already deleted: a kind whose tombstones learn may learn from this delete (a
                // domain's organization, from the organization's delete that ends it).
                let learned = T::learned(&current.record, &tombstone).filter(|l| *l != current.record);
                match learned {
                    Some(learned) if T::TOMBSTONE_LEARNS => learned,
                    _ => return,
                }
            }
            Some(_) => {
                let mut earlier = match T::TOMBSTONE_LEARNS {
                    true => T::learned(&current.record, &tombstone).unwrap_or_else(|| current.record.clone()),
                    false => current.record.clone(),
                };
                earlier.set_deleted_at(at);
                earlier
            }
            None => T::delete_of(&current.record, tombstone),
        },
        None => tombstone,
    };
    let previous = slot.current.as_ref().map(|c| &c.record);
    let seq = push_change(changes, head, Operation::Deleted, &record, previous, origin);
    // A kind whose tombstones learn keeps the version its tombstone's content came from.
    let version = match T::TOMBSTONE_LEARNS {
        true => slot.current.as_ref().and_then(|c| c.version.clone()),
        false => None,
    };
    slot.current = Some(Versioned {
        record,
        version,
        update_cursor: seq,
    });
    slot.dirty = true;
}

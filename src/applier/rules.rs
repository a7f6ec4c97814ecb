//! The ordering and idempotency rules, as pure functions over the batch's working set: the
//! stored state of every entity the batch touches, changed in memory and written back at the
//! end. Whatever order a set of events arrives in, these rules end in the same state.
//!
//! - Upserts: last writer wins by `Version` (Clerk's `updated_at`, envelope time, event key); a
//!   losing event changes nothing and emits no change.
//! - Deletes win by type, whatever the timestamps; after a delete nothing changes that id. The
//!   delete time is the earliest delete seen (an explicit delete, or the end of its
//!   organization or user), so it does not depend on the order either.
//! - Deleting an organization or a user ends its memberships, each a change of its own; a
//!   membership event for an organization or user already deleted is stored as ended.
//! - Membership events carry snapshots of their organization and user: those are kept on the
//!   membership only and never written over the `organizations` or `users` projections.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::event::Action;
use crate::store::{EntityType, MembershipRecord, OrganizationRecord, Record, UserRecord, Version, Versioned};

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
    pub state: Value,
    pub previous: Option<Value>,
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

/// The stored state of every entity a batch touches, and the changes the batch makes.
#[derive(Debug, Default)]
pub struct WorkingSet {
    pub users: BTreeMap<String, Slot<UserRecord>>,
    pub organizations: BTreeMap<String, Slot<OrganizationRecord>>,
    pub memberships: BTreeMap<String, Slot<MembershipRecord>>,
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

trait Entity: Record + Clone + PartialEq + serde::Serialize {
    const TYPE: EntityType;
    fn deleted_at(&self) -> Option<DateTime<Utc>>;
    fn set_deleted_at(&mut self, at: DateTime<Utc>);
    fn organization_id(&self) -> Option<String>;
    fn user_id(&self) -> Option<String>;
}

impl Entity for UserRecord {
    const TYPE: EntityType = EntityType::User;
    fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.deleted_at
    }
    fn set_deleted_at(&mut self, at: DateTime<Utc>) {
        self.deleted_at = Some(at);
    }
    fn organization_id(&self) -> Option<String> {
        None
    }
    fn user_id(&self) -> Option<String> {
        Some(self.id.clone())
    }
}

impl Entity for OrganizationRecord {
    const TYPE: EntityType = EntityType::Organization;
    fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.deleted_at
    }
    fn set_deleted_at(&mut self, at: DateTime<Utc>) {
        self.deleted_at = Some(at);
    }
    fn organization_id(&self) -> Option<String> {
        Some(self.id.clone())
    }
    fn user_id(&self) -> Option<String> {
        None
    }
}

impl Entity for MembershipRecord {
    const TYPE: EntityType = EntityType::Membership;
    fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.deleted_at
    }
    fn set_deleted_at(&mut self, at: DateTime<Utc>) {
        self.deleted_at = Some(at);
    }
    fn organization_id(&self) -> Option<String> {
        Some(self.organization_id.clone())
    }
    fn user_id(&self) -> Option<String> {
        Some(self.user_id.clone())
    }
}

fn state_of<T: serde::Serialize>(record: &T) -> Value {
    serde_json::to_value(record).expect("records serialise")
}

impl WorkingSet {
    /// A working set whose next change gets `head + 1`.
    pub fn new(head: i64) -> Self {
        WorkingSet {
            head,
            ..Default::default()
        }
    }

    /// Applies one event's action.
    pub fn apply(&mut self, action: Action, origin: &Origin) {
        match action {
            Action::UpsertUser(record, version) => {
                let id = record.id.clone();
                upsert(
                    self.users.entry(id).or_default(),
                    record,
                    version,
                    origin,
                    &mut self.head,
                    &mut self.changes,
                );
            }
            Action::UpsertOrganization(record, version) => {
                let id = record.id.clone();
                upsert(
                    self.organizations.entry(id).or_default(),
                    record,
                    version,
                    origin,
                    &mut self.head,
                    &mut self.changes,
                );
            }
            Action::UpsertMembership(record, version) => {
                // A membership of an organization or user already deleted is stored as ended.
                let ended = [
                    self.organizations.get(&record.organization_id).and_then(deleted_at),
                    self.users.get(&record.user_id).and_then(deleted_at),
                ]
                .into_iter()
                .flatten()
                .min();
                match ended {
                    Some(at) => self.delete_membership(record.id, record.organization_id, record.user_id, at, origin),
                    None => {
                        let id = record.id.clone();
                        upsert(
                            self.memberships.entry(id).or_default(),
                            record,
                            version,
                            origin,
                            &mut self.head,
                            &mut self.changes,
                        );
                    }
                }
            }
            Action::DeleteUser { id, external_id, at } => {
                let slot = self.users.entry(id.clone()).or_default();
                let external_id = slot
                    .current
                    .as_ref()
                    .and_then(|c| c.record.external_id.clone())
                    .or(external_id);
                delete(
                    slot,
                    || UserRecord::tombstone(id.clone(), external_id, at),
                    at,
                    origin,
                    &mut self.head,
                    &mut self.changes,
                );
                self.end_memberships(|m| m.user_id == id, at, origin);
            }
            Action::DeleteOrganization { id, at } => {
                let slot = self.organizations.entry(id.clone()).or_default();
                delete(
                    slot,
                    || OrganizationRecord::tombstone(id.clone(), at),
                    at,
                    origin,
                    &mut self.head,
                    &mut self.changes,
                );
                self.end_memberships(|m| m.organization_id == id, at, origin);
            }
            Action::DeleteMembership {
                id,
                organization_id,
                user_id,
                at,
            } => {
                // Ended no later than its organization or user, if those are gone.
                let at = [
                    Some(at),
                    self.organizations.get(&organization_id).and_then(deleted_at),
                    self.users.get(&user_id).and_then(deleted_at),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(at);
                self.delete_membership(id, organization_id, user_id, at, origin)
            }
            Action::Skip => {}
        }
    }

    fn delete_membership(
        &mut self,
        id: String,
        organization_id: String,
        user_id: String,
        at: DateTime<Utc>,
        origin: &Origin,
    ) {
        let slot = self.memberships.entry(id.clone()).or_default();
        delete(
            slot,
            || MembershipRecord::tombstone(id, organization_id, user_id, at),
            at,
            origin,
            &mut self.head,
            &mut self.changes,
        );
    }

    /// Ends every membership `matches` selects (the working set holds all of them: the loader
    /// reads every membership of a deleted organization or user).
    fn end_memberships(&mut self, matches: impl Fn(&MembershipRecord) -> bool, at: DateTime<Utc>, origin: &Origin) {
        let ids: Vec<(String, String, String)> = self
            .memberships
            .iter()
            .filter_map(|(id, slot)| {
                let m = &slot.current.as_ref()?.record;
                matches(m).then(|| (id.clone(), m.organization_id.clone(), m.user_id.clone()))
            })
            .collect();
        for (id, organization_id, user_id) in ids {
            self.delete_membership(id, organization_id, user_id, at, origin);
        }
    }
}

fn deleted_at<T: Entity>(slot: &Slot<T>) -> Option<DateTime<Utc>> {
    slot.current.as_ref().and_then(|c| c.record.deleted_at())
}

fn push_change<T: Entity>(
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

/// Last writer wins; nothing changes a tombstone; an identical state emits no change.
fn upsert<T: Entity>(
    slot: &mut Slot<T>,
    record: T,
    version: Version,
    origin: &Origin,
    head: &mut i64,
    changes: &mut Vec<Change>,
) {
    let operation = match &slot.current {
        Some(current) if current.record.deleted_at().is_some() => return,
        Some(current) if current.version.as_ref().is_some_and(|v| *v >= version) => return,
        Some(current) if current.record == record => {
            // Same state under a newer version: remember the version, tell nobody.
            let update_cursor = current.update_cursor;
            slot.current = Some(Versioned {
                record,
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

/// A delete always wins; the earliest delete time stands.
fn delete<T: Entity>(
    slot: &mut Slot<T>,
    tombstone: impl FnOnce() -> T,
    at: DateTime<Utc>,
    origin: &Origin,
    head: &mut i64,
    changes: &mut Vec<Change>,
) {
    let record = match &slot.current {
        Some(current) => match current.record.deleted_at() {
            Some(existing) if existing <= at => return,
            Some(_) => {
                let mut earlier = current.record.clone();
                earlier.set_deleted_at(at);
                earlier
            }
            None => tombstone(),
        },
        None => tombstone(),
    };
    let previous = slot.current.as_ref().map(|c| &c.record);
    let seq = push_change(changes, head, Operation::Deleted, &record, previous, origin);
    slot.current = Some(Versioned {
        record,
        version: None,
        update_cursor: seq,
    });
    slot.dirty = true;
}

//! The in-memory index of one replica: users (by id, email, username, external id, phone
//! number), organizations (by id, slug) and memberships (by id, by organization + user), at one
//! change-log cursor. Users and organizations are held encoded (`pb::Encoded`, made once when
//! the change is applied, shared by every response that sends them: see [`Held`]), with their
//! lookup keys packed beside them (see `table`: the containers hold no id of their own, the
//! encoding has it); a membership as its encoding without the fields a read derives (its
//! effective permissions, added as it is read: see [`MembershipEntry`]). It
//! answers exactly what the PostgreSQL reads of `store::read` answer at that cursor, or says it
//! does not know (then the caller reads PostgreSQL). How each kind is held is [`Cached`]: a kind
//! without lookups of its own is held by id only.

use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;

use std::sync::Arc;

use super::billing::Billing;
use crate::pb;
use crate::store::changes::ChangeRow;
use crate::store::convert;
use crate::store::kind::{match_record, with_kind};
use crate::store::access::{Access, Member, Standing};
use crate::store::{AnyRecord, EntityType, Kind, MembershipRecord, OrganizationRecord, PermissionRecord, RoleRecord, UserRecord};

// How the read cache holds each kind. `Cached::put` replaces what the index holds of one
// entity; a kind with lookups of its own (users by email, username, external id and phone,
// organizations by slug, memberships by organization and user) keeps them in `Index`, and any
// other kind is held by id only, which is the default: `impl Cached for X {}` is all a new kind
// needs here.

/// A kind the read cache holds.
pub trait Cached: Kind {
    /// Holds `record` (the state after the change `update_cursor`), replacing what was held.
    fn put(index: &mut Index, record: &Self, update_cursor: i64) {
        index.put_by_id(record, update_cursor);
    }
}

impl Cached for UserRecord {
    fn put(index: &mut Index, record: &Self, update_cursor: i64) {
        index.put_user(record, update_cursor);
    }
}

impl Cached for OrganizationRecord {
    fn put(index: &mut Index, record: &Self, update_cursor: i64) {
        index.put_organization(record, update_cursor);
    }
}

impl Cached for MembershipRecord {
    fn put(index: &mut Index, record: &Self, update_cursor: i64) {
        index.put_membership(record, update_cursor);
    }
}

/// Roles and permissions are held whatever the budget (they are few, and every permission
/// check and membership read needs them): see [`Index::access`].
impl Cached for RoleRecord {
    fn put(index: &mut Index, record: &Self, update_cursor: i64) {
        let message = record.message(update_cursor, &index.log_id);
        index.access.put_role(record, message);
    }
}

impl Cached for PermissionRecord {
    fn put(index: &mut Index, record: &Self, _update_cursor: i64) {
        index.access.put_permission(record);
    }
}

impl Cached for crate::store::DomainRecord {}
impl Cached for crate::store::InvitationRecord {}
/// Clerk Billing's kinds are held by id (within the budget) for gets, and what entitlement
/// checks and GetSubscription need is held whatever the budget: see [`Index::billing`].
macro_rules! held_for_billing {
    ($($kind:ty => $put:ident),* $(,)?) => {$(
        impl Cached for $kind {
            fn put(index: &mut Index, record: &Self, update_cursor: i64) {
                index.billing.$put(record);
                index.put_by_id(record, update_cursor);
            }
        }
    )*};
}

held_for_billing! {
    crate::store::SubscriptionItemRecord => put_item,
    crate::store::SubscriptionRecord => put_subscription,
    crate::store::PaymentAttemptRecord => put_payment_attempt,
    crate::store::PlanRecord => put_plan,
}

#[cfg(test)]
impl Cached for crate::store::test_kind::WidgetRecord {}

/// An entity as a read gets it from the index: its encoding and whether it is a tombstone
/// (cheap to clone: the bytes are shared).
#[derive(Debug, Clone, PartialEq)]
pub struct Held<M> {
    pub message: pb::Encoded<M>,
    pub deleted: bool,
}

impl<M: prost::Message + Default> Held<M> {
    pub fn of(message: &M, deleted: bool) -> Self {
        Held {
            message: pb::Encoded::of(message),
            deleted,
        }
    }

    /// The message decoded (tests).
    #[cfg(test)]
    pub fn open(&self) -> M {
        self.message.decode().expect("the index holds encodings of its messages")
    }
}

/// What the index says about a read.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<T> {
    /// The entity (possibly a tombstone, for gets), at the index's cursor.
    Found(T, i64),
    /// Certainly nothing, at the index's cursor.
    Absent(i64),
    /// The index does not hold what the answer needs: read PostgreSQL.
    Unknown,
}

/// A change of the log read into its record, ready to apply.
pub struct Parsed {
    pub seq: i64,
    record: AnyRecord,
}

/// A change the index cannot apply.
#[derive(Debug, thiserror::Error)]
#[error("change {seq} cannot be applied: {why}")]
pub struct ApplyError {
    pub seq: i64,
    pub why: String,
}

use super::size;
use super::table::{Keys, Packed, Slot, Table};

/// How a lookup key matches: exactly, or folding ASCII case (a value that is not ASCII is held
/// aside then: PostgreSQL's `lower()` depends on the database's locale for those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fold {
    Exact,
    Ascii,
}

impl Fold {
    /// The key `value` is indexed under; `None` if it cannot be folded.
    fn key(self, value: &str) -> Option<Cow<'_, str>> {
        match self {
            Fold::Exact => Some(Cow::Borrowed(value)),
            Fold::Ascii if !value.is_ascii() => None,
            Fold::Ascii if value.bytes().any(|b| b.is_ascii_uppercase()) => Some(Cow::Owned(value.to_ascii_lowercase())),
            Fold::Ascii => Some(Cow::Borrowed(value)),
        }
    }
}

/// The tag bit of a packed key that could not be folded: held (to be counted out when it
/// goes), not indexed.
const UNFOLDABLE: u8 = 0x80;

/// One lookup of a kind: its index, how it folds, and how many held values it could not fold
/// (while there are any, its lookups go to PostgreSQL).
struct Lookup {
    keys: Keys,
    fold: Fold,
    unfoldable: usize,
}

/// A user or an organization as the index holds it: its encoding, its id and lookup keys
/// (packed, folded), its accounted bytes.
struct Entity<M> {
    message: pb::Encoded<M>,
    packed: Packed,
    bytes: u32,
    deleted: bool,
}

impl<M> Slot for Entity<M> {
    fn id(&self) -> &str {
        self.message.string(ID)
    }
}

impl<M> Entity<M> {
    fn held(&self) -> Held<M> {
        Held {
            message: self.message.clone(),
            deleted: self.deleted,
        }
    }
}

/// The entities of one kind held encoded, with their lookups: keys tagged `t` (1, 2, ...) are
/// indexed by `lookups[t - 1]`.
struct Entities<M> {
    table: Table<Entity<M>>,
    lookups: Vec<Lookup>,
}

impl<M> Entities<M> {
    fn new(folds: &[Fold]) -> Self {
        Entities {
            table: Table::default(),
            lookups: folds
                .iter()
                .map(|&fold| Lookup {
                    keys: Keys::default(),
                    fold,
                    unfoldable: 0,
                })
                .collect(),
        }
    }

    fn lookup(&self, tag: u8) -> &Lookup {
        &self.lookups[usize::from(tag & !UNFOLDABLE) - 1]
    }

    /// An entity to hold: `keys` as `(tag, value)`, folded, each once.
    fn entity(&self, message: pb::Encoded<M>, deleted: bool, keys: &[(u8, String)]) -> Entity<M> {
        let mut items: Vec<(u8, Cow<str>)> = keys
            .iter()
            .map(|(tag, value)| match self.lookup(*tag).fold.key(value) {
                Some(key) => (*tag, key),
                None => (tag | UNFOLDABLE, Cow::Borrowed(value.as_str())),
            })
            .collect();
        items.sort();
        items.dedup();
        let packed = Packed::new(items.iter().map(|(tag, key)| (*tag, key.as_ref())));
        let indexed = items.iter().filter(|(tag, _)| tag & UNFOLDABLE == 0).count();
        let bytes = Table::<Entity<M>>::PER_ENTITY
            + size::encoded(message.len())
            + size::boxed(packed.len())
            + indexed * Keys::PER_KEY;
        Entity {
            message,
            packed,
            bytes: bytes as u32,
            deleted,
        }
    }

    fn insert(&mut self, entity: Entity<M>) {
        let n = self.table.insert(entity);
        let entity = self.table.at(n);
        for (tag, key) in entity.packed.iter() {
            let lookup = &mut self.lookups[usize::from(tag & !UNFOLDABLE) - 1];
            if tag & UNFOLDABLE != 0 {
                lookup.unfoldable += 1;
            } else {
                lookup.keys.insert(lookup.keys.hash(key), n);
            }
        }
    }

    /// Takes out the entity `id`; its accounted bytes.
    fn remove(&mut self, id: &str) -> Option<usize> {
        let (n, old) = self.table.remove(id)?;
        for (tag, key) in old.packed.iter() {
            let lookup = &mut self.lookups[usize::from(tag & !UNFOLDABLE) - 1];
            if tag & UNFOLDABLE != 0 {
                lookup.unfoldable -= 1;
            } else {
                lookup.keys.remove(lookup.keys.hash(key), n);
            }
        }
        Some(old.bytes as usize)
    }

    fn get(&self, id: &str) -> Option<&Entity<M>> {
        self.table.get(id)
    }

    /// The entity holding key `value` of `tag` (the smallest id when several do): `Some(None)`
    /// for none, `None` when the index cannot know.
    fn first(&self, tag: u8, value: &str) -> Option<Option<&Entity<M>>> {
        let lookup = self.lookup(tag);
        if lookup.unfoldable > 0 {
            return None;
        }
        let key = lookup.fold.key(value)?;
        let found = lookup
            .keys
            .candidates(lookup.keys.hash(key.as_ref()))
            .map(|n| self.table.at(n))
            .filter(|e| e.packed.has(tag, &key))
            .min_by(|a, b| a.id().cmp(b.id()));
        Some(found)
    }

    fn shrink(&mut self) {
        self.table.shrink();
        for lookup in &mut self.lookups {
            lookup.keys.shrink();
        }
    }
}

/// The tags of a user's lookup keys, in `Index::users`' order of lookups.
const EMAIL: u8 = 1;
const USERNAME: u8 = 2;
const EXTERNAL_ID: u8 = 3;
const PHONE: u8 = 4;
/// The tag of an organization's slug.
const SLUG: u8 = 1;

/// The lookup keys of a live user (a tombstone has none that a lookup matches).
fn user_keys(r: &UserRecord) -> Vec<(u8, String)> {
    if r.deleted_at.is_some() {
        return Vec::new();
    }
    let emails = r.email_addresses().into_iter().map(|(_, a)| (EMAIL, a));
    let phones = r.phone_numbers().into_iter().map(|(_, n)| (PHONE, n));
    emails
        .chain(phones)
        .chain(r.username.clone().map(|u| (USERNAME, u)))
        .chain(r.external_id.clone().map(|x| (EXTERNAL_ID, x)))
        .collect()
}

/// The field numbers the index reads from the encodings it holds: the `id` of a user, an
/// organization and a membership; a membership's organization, user and role.
const ID: u32 = 2;
const ORGANIZATION_ID: u32 = 3;
const USER_ID: u32 = 4;
const ROLE: u32 = 5;

/// The tags of a membership's packed items: the role name and permissions Clerk sent (its
/// snapshot, which a live one's encoding leaves out).
const ROLE_NAME: u8 = 1;
const PERMISSION: u8 = 2;

/// A membership as the index holds it. A read derives three of its fields (`role_name`,
/// `permissions`, `permissions_source`: see [`Access::effective`]), so a live one is held as
/// its encoding without them, split where the first two go (the third goes last); a
/// tombstone is shown as it is.
struct MembershipEntry {
    encoded: Bytes,
    split: u32,
    bytes: u32,
    /// Its role name and permissions as Clerk sent them.
    packed: Packed,
    /// `updated_at`, for "the current membership" (latest first, none last, then by id).
    updated: Option<(i64, u32)>,
    live: bool,
}

impl Slot for MembershipEntry {
    fn id(&self) -> &str {
        pb::encoded::string_field(&self.encoded, ID)
    }
}

impl MembershipEntry {
    fn of(m: &pb::Membership, live: bool, updated: Option<(i64, u32)>) -> MembershipEntry {
        let role_name = Some((ROLE_NAME, m.role_name.as_str())).filter(|_| live);
        let permissions = m.permissions.iter().filter(|_| live).map(|p| (PERMISSION, p.as_str()));
        let packed = Packed::new(role_name.into_iter().chain(permissions));
        let (encoded, split) = if live {
            let derived = pb::Membership {
                role_name: String::new(),
                permissions: Vec::new(),
                permissions_source: 0,
                ..m.clone()
            };
            let head = pb::Membership {
                name: m.name.clone(),
                id: m.id.clone(),
                organization_id: m.organization_id.clone(),
                user_id: m.user_id.clone(),
                role: m.role.clone(),
                ..Default::default()
            };
            (derived.encode_to_vec(), head.encoded_len())
        } else {
            (m.encode_to_vec(), 0)
        };
        let bytes = Table::<MembershipEntry>::PER_ENTITY
            + size::encoded(encoded.len())
            + size::boxed(packed.len())
            + if live { Keys::PER_KEY } else { 0 };
        MembershipEntry {
            encoded: Bytes::from(encoded),
            split: split as u32,
            bytes: bytes as u32,
            packed,
            updated,
            live,
        }
    }

    fn organization_id(&self) -> &str {
        pb::encoded::string_field(&self.encoded, ORGANIZATION_ID)
    }

    fn user_id(&self) -> &str {
        pb::encoded::string_field(&self.encoded, USER_ID)
    }

    fn role(&self) -> &str {
        pb::encoded::string_field(&self.encoded, ROLE)
    }

    /// As reads show it: a live one with its effective permissions now (encoded per read, as
    /// prost would: the fields in their order, defaults left out).
    fn shown(&self, access: &Access) -> Held<pb::Membership> {
        use prost::encoding::{int32, string};
        if !self.live {
            return Held {
                message: pb::Encoded::from_bytes(self.encoded.clone()),
                deleted: true,
            };
        }
        fn nonempty(s: Option<&str>) -> Option<&str> {
            s.filter(|s| !s.is_empty())
        }
        let snapshot: Vec<String> = self.packed.all(PERMISSION).map(str::to_string).collect();
        let e = access.effective(
            nonempty(Some(self.role())),
            &snapshot,
            nonempty(self.packed.first(ROLE_NAME)),
        );
        let source = e.source.wire() as i32;
        let role_name = e.role_name.unwrap_or_default();
        let (head, tail) = self.encoded.split_at(self.split as usize);
        let mut out = Vec::with_capacity(
            self.encoded.len() + role_name.len() + e.permissions.iter().map(|p| p.len() + 3).sum::<usize>() + 16,
        );
        out.extend_from_slice(head);
        if !role_name.is_empty() {
            string::encode(6, &role_name, &mut out);
        }
        string::encode_repeated(7, &e.permissions, &mut out);
        out.extend_from_slice(tail);
        if source != 0 {
            int32::encode(16, &source, &mut out);
        }
        Held {
            message: pb::Encoded::from_bytes(Bytes::from(out)),
            deleted: false,
        }
    }
}

/// The index. Not synchronised: the cache wraps it in a lock.
pub struct Index {
    log_id: String,
    /// The change-log position everything held reflects.
    cursor: i64,
    budget: usize,
    bytes: usize,
    /// Whether everything in the projections is held (a negative answer is valid only then).
    complete: bool,
    /// By id, email, username, external id, phone number.
    users: Entities<pb::User>,
    /// By id, slug.
    organizations: Entities<pb::Organization>,
    memberships: Table<MembershipEntry>,
    /// Live memberships by the hash of (organization, user).
    by_pair: Keys,
    /// Kinds without lookups of their own, by id: each kind's message (`Arc<K::Message>`) and its
    /// accounted bytes.
    by_id: HashMap<EntityType, HashMap<String, (Arc<dyn Any + Send + Sync>, usize)>>,
    /// Every role and permission, outside the budget.
    access: Access,
    /// What entitlement checks need of Clerk Billing, outside the budget.
    billing: Billing,
}

fn updated(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<(i64, u32)> {
    t.map(|t| (t.timestamp(), t.timestamp_subsec_nanos()))
}

impl Index {
    /// An empty index at `cursor` holding at most `budget` accounted bytes.
    pub fn new(log_id: &str, cursor: i64, budget: usize) -> Index {
        Index {
            log_id: log_id.to_string(),
            cursor,
            budget,
            bytes: 0,
            complete: true,
            users: Entities::new(&[Fold::Ascii, Fold::Ascii, Fold::Exact, Fold::Exact]),
            organizations: Entities::new(&[Fold::Exact]),
            memberships: Table::default(),
            by_pair: Keys::default(),
            by_id: HashMap::new(),
            access: Access::default(),
            billing: Billing::default(),
        }
    }

    /// Clerk Billing's items, plans and subscriptions (always all of them: they are held outside
    /// the budget).
    pub fn billing(&self) -> &Billing {
        &self.billing
    }

    /// Every role and permission (always all of them: they are held outside the budget).
    pub fn access(&self) -> &Access {
        &self.access
    }

    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    pub fn set_cursor(&mut self, cursor: i64) {
        self.cursor = cursor;
    }

    /// Accounted bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held: users, organizations, memberships.
    pub fn entries(&self) -> (usize, usize, usize) {
        (self.users.table.len(), self.organizations.table.len(), self.memberships.len())
    }

    /// Whether everything is held (nothing was left out for the budget).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Gives back what a load reserved and did not use (its tables grew by doubling).
    pub fn shrink(&mut self) {
        self.users.shrink();
        self.organizations.shrink();
        self.memberships.shrink();
        self.by_pair.shrink();
    }

    fn fits(&mut self, bytes: usize) -> bool {
        if self.bytes + bytes <= self.budget {
            true
        } else {
            self.complete = false;
            false
        }
    }

    /// Holds `r` (the state after the change `update_cursor`), replacing what was held.
    pub fn put_user(&mut self, r: &UserRecord, update_cursor: i64) {
        if let Some(bytes) = self.users.remove(&r.id) {
            self.bytes -= bytes;
        }
        let message = pb::Encoded::of(&convert::user(r, update_cursor, &self.log_id));
        let entity = self.users.entity(message, r.deleted_at.is_some(), &user_keys(r));
        if self.fits(entity.bytes as usize) {
            self.bytes += entity.bytes as usize;
            self.users.insert(entity);
        }
    }

    pub fn put_organization(&mut self, r: &OrganizationRecord, update_cursor: i64) {
        if let Some(bytes) = self.organizations.remove(&r.id) {
            self.bytes -= bytes;
        }
        let message = pb::Encoded::of(&convert::organization(r, update_cursor, &self.log_id));
        let live = r.deleted_at.is_none();
        let slug: Vec<(u8, String)> = r.slug.clone().filter(|_| live).map(|s| (SLUG, s)).into_iter().collect();
        let entity = self.organizations.entity(message, !live, &slug);
        if self.fits(entity.bytes as usize) {
            self.bytes += entity.bytes as usize;
            self.organizations.insert(entity);
        }
    }

    pub fn put_membership(&mut self, r: &MembershipRecord, update_cursor: i64) {
        self.remove_membership(&r.id);
        let live = r.deleted_at.is_none();
        let entry = MembershipEntry::of(
            &convert::membership(r, update_cursor, &self.log_id),
            live,
            updated(r.updated_at),
        );
        if !self.fits(entry.bytes as usize) {
            return;
        }
        self.bytes += entry.bytes as usize;
        let pair = self.by_pair.hash((r.organization_id.as_str(), r.user_id.as_str()));
        let n = self.memberships.insert(entry);
        if live {
            self.by_pair.insert(pair, n);
        }
    }

    fn remove_membership(&mut self, id: &str) {
        let Some((n, old)) = self.memberships.remove(id) else {
            return;
        };
        if old.live {
            self.by_pair
                .remove(self.by_pair.hash((old.organization_id(), old.user_id())), n);
        }
        self.bytes -= old.bytes as usize;
    }

    /// Reads a change of the log (its state is the entity's new row) into its record: the part
    /// of applying it that needs no lock.
    pub fn parse(c: &ChangeRow) -> Result<Parsed, ApplyError> {
        use serde::Deserialize;
        let bad = |e: serde_json::Error| ApplyError {
            seq: c.seq,
            why: format!("unreadable state: {e}"),
        };
        let Some(t) = c.entity_type() else {
            return Err(ApplyError {
                seq: c.seq,
                why: format!("unknown entity type `{}`", c.entity_type),
            });
        };
        let record = with_kind!(t, K => K::deserialize(&c.state).map_err(bad)?.into_any());
        Ok(Parsed { seq: c.seq, record })
    }

    /// Applies a parsed change and moves the cursor to it.
    pub fn apply(&mut self, p: &Parsed) {
        match_record!(&p.record, r => Cached::put(self, r, p.seq));
        self.cursor = p.seq;
    }

    /// Holds `r` by id only (a kind without lookups of its own), replacing what was held.
    pub fn put_by_id<K: Kind>(&mut self, r: &K, update_cursor: i64) {
        let held = self.by_id.entry(K::TYPE).or_default();
        if let Some((_, bytes)) = held.remove(r.id()) {
            self.bytes -= bytes;
        }
        let message = r.message(update_cursor, &self.log_id);
        let bytes =
            size::slot(r.id(), std::mem::size_of::<(Arc<K::Message>, usize)>()) + prost::Message::encoded_len(&message);
        if !self.fits(bytes) {
            return;
        }
        self.bytes += bytes;
        let message: Arc<dyn Any + Send + Sync> = Arc::new(message);
        self.by_id
            .entry(K::TYPE)
            .or_default()
            .insert(r.id().to_string(), (message, bytes));
    }

    /// The entity of a kind held by id only (a tombstone too; the caller applies `show_deleted`).
    pub fn get<K: Kind>(&self, id: &str) -> Answer<Arc<K::Message>> {
        let held = self.by_id.get(&K::TYPE).and_then(|m| m.get(id));
        self.answer(held.map(|(message, _)| message.clone().downcast().expect("a kind's messages have its type")))
    }

    /// The user with `id` (a tombstone too; the caller applies `show_deleted`).
    pub fn user(&self, id: &str) -> Answer<Held<pb::User>> {
        self.answer(self.users.get(id).map(Entity::held))
    }

    /// What was found by id: absent only if the index is complete.
    fn answer<T>(&self, found: Option<T>) -> Answer<T> {
        match found {
            Some(t) => Answer::Found(t, self.cursor),
            None if self.complete => Answer::Absent(self.cursor),
            None => Answer::Unknown,
        }
    }

    /// Users by id in the order asked, or `None` if any is unknown.
    pub fn users(&self, ids: &[&str]) -> Option<(Vec<Option<Held<pb::User>>>, i64)> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(match self.user(id) {
                Answer::Found(u, _) => Some(u),
                Answer::Absent(_) => None,
                Answer::Unknown => return None,
            });
        }
        Some((out, self.cursor))
    }

    pub fn organization(&self, id: &str) -> Answer<Held<pb::Organization>> {
        self.answer(self.organizations.get(id).map(Entity::held))
    }

    pub fn organizations(&self, ids: &[&str]) -> Option<(Vec<Option<Held<pb::Organization>>>, i64)> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(match self.organization(id) {
                Answer::Found(o, _) => Some(o),
                Answer::Absent(_) => None,
                Answer::Unknown => return None,
            });
        }
        Some((out, self.cursor))
    }

    /// The membership `id` of organization `organization_id` (a tombstone too).
    pub fn membership(&self, organization_id: &str, id: &str) -> Answer<Held<pb::Membership>> {
        match self.memberships.get(id) {
            Some(m) if m.organization_id() == organization_id => Answer::Found(m.shown(&self.access), self.cursor),
            // Ids are unique: held under another organization means none under this one.
            Some(_) => Answer::Absent(self.cursor),
            None => self.answer(None),
        }
    }

    /// The live user with `key` (the smallest id when several share it), as `store::read`.
    pub fn user_by(&self, key: &crate::store::read::UserKey) -> Answer<Held<pb::User>> {
        use crate::store::read::UserKey;
        if !self.complete {
            return Answer::Unknown;
        }
        let (tag, value) = match key {
            UserKey::Email(v) => (EMAIL, v),
            UserKey::Username(v) => (USERNAME, v),
            UserKey::ExternalId(v) => (EXTERNAL_ID, v),
            UserKey::PhoneNumber(v) => (PHONE, v),
        };
        match self.users.first(tag, value) {
            None => Answer::Unknown,
            Some(None) => Answer::Absent(self.cursor),
            Some(Some(e)) => Answer::Found(e.held(), self.cursor),
        }
    }

    /// The live organization with `slug`.
    pub fn organization_by_slug(&self, slug: &str) -> Answer<Held<pb::Organization>> {
        if !self.complete {
            return Answer::Unknown;
        }
        match self.organizations.first(SLUG, slug) {
            None => Answer::Unknown,
            Some(None) => Answer::Absent(self.cursor),
            Some(Some(e)) => Answer::Found(e.held(), self.cursor),
        }
    }

    /// The user's current membership of the organization: the live one updated last (then by id).
    pub fn membership_of(&self, organization_id: &str, user_id: &str) -> Answer<Held<pb::Membership>> {
        if !self.complete {
            return Answer::Unknown;
        }
        match self.current(organization_id, user_id) {
            Some(m) => Answer::Found(m.shown(&self.access), self.cursor),
            None => Answer::Absent(self.cursor),
        }
    }

    /// The user's current live membership of the organization: latest `updated_at` first,
    /// none last, then the smallest id.
    fn current(&self, organization_id: &str, user_id: &str) -> Option<&MembershipEntry> {
        self.by_pair
            .candidates(self.by_pair.hash((organization_id, user_id)))
            .map(|n| self.memberships.at(n))
            .filter(|m| m.organization_id() == organization_id && m.user_id() == user_id)
            .min_by(|a, b| {
                let key = |m: &MembershipEntry| std::cmp::Reverse(m.updated.map(|u| (1, u)).unwrap_or((0, (0, 0))));
                key(a).cmp(&key(b)).then_with(|| a.id().cmp(b.id()))
            })
    }

    /// The role with `id` (a tombstone too), its permissions resolved now.
    pub fn role(&self, id: &str) -> Answer<Held<pb::Role>> {
        match self.access.role(id) {
            Some(r) => Answer::Found(Held::of(&r, r.delete_time.is_some()), self.cursor),
            None => Answer::Absent(self.cursor),
        }
    }

    /// The live role with `key` (or its other spelling).
    pub fn role_by_key(&self, key: &str) -> Answer<Held<pb::Role>> {
        match self.access.live_role_with_key(key) {
            Some(r) => Answer::Found(Held::of(&r, r.delete_time.is_some()), self.cursor),
            None => Answer::Absent(self.cursor),
        }
    }

    /// What a check of `permission` by `user_id` in `organization_id` needs; `None` when the
    /// index does not hold it.
    pub fn standing(&self, organization_id: &str, user_id: &str, permission: &str) -> Option<Standing> {
        if !self.complete {
            return None;
        }
        let user_live = self.users.get(user_id).is_some_and(|e| !e.deleted);
        let organization_live = self.organizations.get(organization_id).is_some_and(|e| !e.deleted);
        let member = self.current(organization_id, user_id).map(|m| {
            let role = m.role();
            let snapshot_has = m.packed.has(PERMISSION, permission);
            let (has, source) = self.access.member_has(role, snapshot_has, permission);
            Member {
                role: role.to_string(),
                has,
                source,
                snapshot_has,
            }
        });
        Some(Standing {
            user_live,
            organization_live,
            member,
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::read::UserKey;
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::json;

    /// A membership as reads show it when no role is known: a live one's permissions are its
    /// snapshot, and say so.
    fn without_roles(m: pb::Membership) -> pb::Membership {
        let source = match m.delete_time {
            None => pb::PermissionsSource::MembershipSnapshot as i32,
            Some(_) => 0,
        };
        pb::Membership {
            permissions_source: source,
            ..m
        }
    }

    fn t(s: i64) -> chrono::DateTime<Utc> {
        Utc.timestamp_opt(1_767_225_600 + s, 0).single().unwrap()
    }

    fn user(id: &str, emails: &[&str], username: Option<&str>, external_id: Option<&str>) -> UserRecord {
        let addresses: Vec<_> = emails
            .iter()
            .enumerate()
            .map(|(i, e)| json!({"id": format!("idn_{i}"), "email_address": e}))
            .collect();
        UserRecord::from_clerk(json!({
            "id": id, "email_addresses": addresses, "primary_email_address_id": "idn_0",
            "username": username, "external_id": external_id, "updated_at": 1_767_225_600_000i64,
        }))
        .unwrap()
    }

    fn membership(id: &str, org: &str, user: &str, updated: Option<i64>) -> MembershipRecord {
        let mut m = MembershipRecord::from_clerk(json!({
            "id": id, "organization": {"id": org}, "public_user_data": {"user_id": user}, "role": "org:member",
        }))
        .unwrap();
        m.updated_at = updated.map(t);
        m
    }

    #[test]
    fn a_held_membership_reads_as_prost_encodes_its_effective_message() {
        let role = |live: bool| {
            let mut r = RoleRecord::from_clerk(json!({
                "id": "role_1", "key": "org:editor", "name": "Editor",
                "permissions": [{"id": "perm_1", "key": "org:posts:edit"}, {"id": "perm_2", "key": "org:posts:read"}],
            }))
            .unwrap();
            if !live {
                r.deleted_at = Some(t(1));
            }
            r
        };
        let variants = [
            json!({"role": "org:editor"}),
            json!({"role": "org:editor", "role_name": "Old name", "permissions": ["org:snap:a", "org:snap:b"]}),
            json!({"role": "org:unknown", "permissions": ["org:snap:a"], "public_metadata": {"plan": "pro", "n": 2}}),
            json!({"role": "org:unknown", "role_name": "Unknown", "private_metadata": {"x": [1, {"y": null}]}}),
            json!({"role": ""}),
        ];
        for roles in [None, Some(true), Some(false)] {
            for (i, variant) in variants.iter().enumerate() {
                for deleted in [false, true] {
                    let mut index = Index::new("log", 0, usize::MAX);
                    if let Some(live) = roles {
                        Cached::put(&mut index, &role(live), 1);
                    }
                    let mut body = json!({
                        "id": format!("orgmem_{i}"), "organization": {"id": "org_1", "name": "Org", "slug": "org"},
                        "public_user_data": {"user_id": "user_1", "first_name": "Ada", "identifier": "ada@example.com"},
                        "created_at": 1_767_225_600_000i64, "updated_at": 1_767_225_600_000i64,
                    });
                    body.as_object_mut().unwrap().extend(variant.as_object().unwrap().clone());
                    let mut r = MembershipRecord::from_clerk(body).unwrap();
                    if deleted {
                        r.deleted_at = Some(t(2));
                    }
                    index.put_membership(&r, 2);
                    let want = pb::Encoded::of(&index.access().effective_membership(&convert::membership(&r, 2, "log")));
                    let Answer::Found(got, _) = index.membership("org_1", &r.id) else {
                        panic!("membership {i} is held");
                    };
                    assert_eq!(got.message, want, "membership {i}, roles {roles:?}, deleted {deleted}");
                    assert_eq!(got.deleted, deleted);
                    if !deleted {
                        let Answer::Found(current, _) = index.membership_of("org_1", "user_1") else {
                            panic!("membership {i} is current");
                        };
                        assert_eq!(current.message, want);
                    }
                }
            }
        }
    }

    #[test]
    fn an_email_that_moves_to_another_user_is_found_under_the_new_user_only() {
        let mut index = Index::new("log", 0, usize::MAX);
        index.put_user(&user("user_a", &["Ada@Example.com"], None, None), 1);
        index.put_user(&user("user_b", &["bob@example.com"], None, None), 2);
        let by = |i: &Index, e: &str| match i.user_by(&UserKey::Email(e.into())) {
            Answer::Found(u, _) => Some(u.open().id),
            Answer::Absent(_) => None,
            Answer::Unknown => panic!("unknown"),
        };
        assert_eq!(by(&index, "ada@EXAMPLE.com"), Some("user_a".into()));
        index.put_user(&user("user_a", &["other@example.com"], None, None), 3);
        index.put_user(&user("user_b", &["bob@example.com", "ada@example.com"], None, None), 4);
        assert_eq!(by(&index, "ADA@example.com"), Some("user_b".into()));
        assert_eq!(by(&index, "other@example.com"), Some("user_a".into()));
        // A tombstone keeps no addresses; the get still finds it (show_deleted is the caller's).
        index.put_user(&UserRecord::tombstone("user_b".into(), None, t(9)), 5);
        assert_eq!(by(&index, "ada@example.com"), None);
        assert!(matches!(index.user("user_b"), Answer::Found(u, _) if u.deleted && u.open().delete_time.is_some()));
    }

    #[test]
    fn lookups_of_values_that_are_not_ascii_go_to_postgresql() {
        let mut index = Index::new("log", 0, usize::MAX);
        index.put_user(&user("user_a", &["ada@example.com"], Some("Ada"), None), 1);
        assert_eq!(
            index.user_by(&UserKey::Email("ÉLODIE@example.com".into())),
            Answer::Unknown
        );
        index.put_user(&user("user_b", &["élodie@example.com"], None, None), 2);
        // With a held value that cannot be folded, even an ASCII miss is not certain.
        assert_eq!(
            index.user_by(&UserKey::Email("nobody@example.com".into())),
            Answer::Unknown
        );
        assert!(matches!(
            index.user_by(&UserKey::Username("ADA".into())),
            Answer::Found(..)
        ));
    }

    #[test]
    fn over_budget_it_holds_no_more_and_answers_only_what_it_holds() {
        let mut index = Index::new("log", 0, 0);
        index.put_user(&user("user_a", &["ada@example.com"], None, None), 1);
        assert!(!index.complete());
        assert_eq!(index.user("user_a"), Answer::Unknown);
        let one = {
            let mut probe = Index::new("log", 0, usize::MAX);
            probe.put_user(&user("user_a", &["ada@example.com"], None, None), 1);
            probe.bytes()
        };
        let mut index = Index::new("log", 0, one);
        index.put_user(&user("user_a", &["ada@example.com"], None, None), 1);
        index.put_user(&user("user_b", &["bob@example.com"], None, None), 2);
        assert!(matches!(index.user("user_a"), Answer::Found(..)));
        assert_eq!(index.user("user_b"), Answer::Unknown);
        assert_eq!(index.user("user_zzz"), Answer::Unknown);
        assert_eq!(
            index.user_by(&UserKey::Email("ada@example.com".into())),
            Answer::Unknown
        );
        assert_eq!(index.bytes(), one);
    }

    #[test]
    fn the_current_membership_is_the_live_one_updated_last_then_the_smallest_id() {
        let mut index = Index::new("log", 0, usize::MAX);
        index.put_membership(&membership("m_2", "org_1", "user_1", Some(5)), 1);
        index.put_membership(&membership("m_1", "org_1", "user_1", Some(5)), 2);
        index.put_membership(&membership("m_3", "org_1", "user_1", None), 3);
        let current = |i: &Index| match i.membership_of("org_1", "user_1") {
            Answer::Found(m, _) => Some(m.open().id),
            _ => None,
        };
        assert_eq!(current(&index), Some("m_1".into()));
        index.put_membership(&membership("m_2", "org_1", "user_1", Some(6)), 4);
        assert_eq!(current(&index), Some("m_2".into()));
        let mut ended = membership("m_2", "org_1", "user_1", Some(6));
        ended.deleted_at = Some(t(7));
        index.put_membership(&ended, 5);
        assert_eq!(current(&index), Some("m_1".into()));
        assert!(matches!(index.membership("org_2", "m_1"), Answer::Absent(_)));
    }

    /// One write of the generated workload.
    #[derive(Debug, Clone)]
    enum Op {
        User {
            id: usize,
            emails: Vec<usize>,
            upper: bool,
            username: Option<usize>,
            external_id: Option<usize>,
            deleted: bool,
        },
        Org {
            id: usize,
            slug: Option<usize>,
            deleted: bool,
        },
        Membership {
            id: usize,
            org: usize,
            user: usize,
            updated: Option<i64>,
            deleted: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                0..5usize,
                proptest::collection::vec(0..4usize, 0..3),
                any::<bool>(),
                proptest::option::of(0..3usize),
                proptest::option::of(0..3usize),
                proptest::bool::weighted(0.2),
            )
                .prop_map(|(id, emails, upper, username, external_id, deleted)| Op::User {
                    id,
                    emails,
                    upper,
                    username,
                    external_id,
                    deleted
                }),
            (
                0..3usize,
                proptest::option::of(0..2usize),
                proptest::bool::weighted(0.2)
            )
                .prop_map(|(id, slug, deleted)| Op::Org { id, slug, deleted }),
            (
                0..4usize,
                0..2usize,
                0..3usize,
                proptest::option::of(0..3i64),
                proptest::bool::weighted(0.2)
            )
                .prop_map(|(id, org, user, updated, deleted)| Op::Membership {
                    id,
                    org,
                    user,
                    updated,
                    deleted
                }),
        ]
    }

    /// The PostgreSQL reads of `store::read`, restated over plain maps.
    #[derive(Default)]
    struct Model {
        users: std::collections::BTreeMap<String, (UserRecord, i64)>,
        orgs: std::collections::BTreeMap<String, (OrganizationRecord, i64)>,
        memberships: std::collections::BTreeMap<String, (MembershipRecord, i64)>,
    }

    fn email(i: usize, upper: bool) -> String {
        let e = format!("person{i}@example.com");
        if upper { e.to_uppercase() } else { e }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_read_of_the_index_equals_the_same_read_of_the_model(ops in proptest::collection::vec(op(), 1..40)) {
            let mut index = Index::new("log", 0, usize::MAX);
            let mut model = Model::default();
            for (seq, op) in ops.iter().enumerate() {
                let seq = seq as i64 + 1;
                match op.clone() {
                    Op::User { id, emails, upper, username, external_id, deleted } => {
                        let id = format!("user_{id}");
                        let r = if deleted {
                            UserRecord::tombstone(id.clone(), external_id.map(|x| format!("ext_{x}")), t(seq))
                        } else {
                            let emails: Vec<String> = emails.iter().map(|e| email(*e, upper)).collect();
                            let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
                            let username = username.map(|u| format!("Name{u}"));
                            let external_id = external_id.map(|x| format!("ext_{x}"));
                            user(&id, &refs, username.as_deref(), external_id.as_deref())
                        };
                        index.put_user(&r, seq);
                        model.users.insert(id, (r, seq));
                    }
                    Op::Org { id, slug, deleted } => {
                        let id = format!("org_{id}");
                        let r = if deleted {
                            OrganizationRecord::tombstone(id.clone(), t(seq))
                        } else {
                            OrganizationRecord::from_clerk(json!({"id": id, "slug": slug.map(|s| format!("slug-{s}"))})).unwrap()
                        };
                        index.put_organization(&r, seq);
                        model.orgs.insert(id, (r, seq));
                    }
                    Op::Membership { id, org, user, updated, deleted } => {
                        let id = format!("m_{id}");
                        let mut r = membership(&id, &format!("org_{org}"), &format!("user_{user}"), updated);
                        if deleted {
                            r = MembershipRecord::tombstone(id.clone(), r.organization_id, r.user_id, t(seq));
                        }
                        index.put_membership(&r, seq);
                        model.memberships.insert(id, (r, seq));
                    }
                }
                index.set_cursor(seq);
            }
            let cursor = index.cursor();
            let found = |a: Answer<Held<pb::User>>| match a {
                Answer::Found(u, c) => {
                    assert_eq!(c, cursor);
                    let message = u.open();
                    assert_eq!(u.deleted, message.delete_time.is_some());
                    Some(message)
                }
                Answer::Absent(c) => { assert_eq!(c, cursor); None }
                Answer::Unknown => panic!("a complete index answered unknown"),
            };
            for i in 0..6 {
                let id = format!("user_{i}");
                let want = model.users.get(&id).map(|(r, c)| convert::user(r, *c, "log"));
                prop_assert_eq!(found(index.user(&id)), want);
            }
            let live = |r: &UserRecord| r.deleted_at.is_none();
            for e in 0..5 {
                for upper in [false, true] {
                    let key = email(e, upper);
                    let want = model.users.values().find(|(r, _)| live(r)
                        && r.email_addresses().iter().any(|(_, a)| a.to_lowercase() == key.to_lowercase()))
                        .map(|(r, c)| convert::user(r, *c, "log"));
                    prop_assert_eq!(found(index.user_by(&UserKey::Email(key))), want);
                }
            }
            for u in 0..4 {
                let key = format!("NAME{u}");
                let want = model.users.values().find(|(r, _)| live(r)
                    && r.username.as_ref().is_some_and(|n| n.to_lowercase() == key.to_lowercase()))
                    .map(|(r, c)| convert::user(r, *c, "log"));
                prop_assert_eq!(found(index.user_by(&UserKey::Username(key))), want);
                let key = format!("ext_{u}");
                let want = model.users.values().find(|(r, _)| live(r) && r.external_id.as_ref() == Some(&key))
                    .map(|(r, c)| convert::user(r, *c, "log"));
                prop_assert_eq!(found(index.user_by(&UserKey::ExternalId(key))), want);
            }
            for s in 0..3 {
                let slug = format!("slug-{s}");
                let want = model.orgs.values().find(|(r, _)| r.deleted_at.is_none() && r.slug.as_ref() == Some(&slug))
                    .map(|(r, c)| convert::organization(r, *c, "log"));
                let got = match index.organization_by_slug(&slug) {
                    Answer::Found(o, _) => Some(o.open()),
                    Answer::Absent(_) => None,
                    Answer::Unknown => panic!("unknown"),
                };
                prop_assert_eq!(got, want);
            }
            for o in 0..3 {
                for u in 0..4 {
                    let (org, user) = (format!("org_{o}"), format!("user_{u}"));
                    let mut live: Vec<&(MembershipRecord, i64)> = model.memberships.values()
                        .filter(|(m, _)| m.organization_id == org && m.user_id == user && m.deleted_at.is_none())
                        .collect();
                    // ORDER BY updated_at DESC NULLS LAST, id
                    live.sort_by(|(a, _), (b, _)| match (a.updated_at, b.updated_at) {
                        (Some(x), Some(y)) => y.cmp(&x),
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (None, None) => std::cmp::Ordering::Equal,
                    }.then_with(|| a.id.cmp(&b.id)));
                    // Byte for byte: the held parts and the derived fields, as prost encodes.
                    let want = live.first().map(|(m, c)| pb::Encoded::of(&without_roles(convert::membership(m, *c, "log"))));
                    let got = match index.membership_of(&org, &user) {
                        Answer::Found(m, _) => Some(m.message),
                        Answer::Absent(_) => None,
                        Answer::Unknown => panic!("unknown"),
                    };
                    prop_assert_eq!(got, want);
                }
                let org = format!("org_{o}");
                for m in 0..5 {
                    let id = format!("m_{m}");
                    let want = model.memberships.get(&id).filter(|(r, _)| r.organization_id == org)
                        .map(|(r, c)| pb::Encoded::of(&without_roles(convert::membership(r, *c, "log"))));
                    let got = match index.membership(&org, &id) {
                        Answer::Found(m, _) => Some(m.message),
                        Answer::Absent(_) => None,
                        Answer::Unknown => panic!("unknown"),
                    };
                    prop_assert_eq!(got, want);
                }
            }
            // Bytes are accounted exactly: rebuilding from the final state gives the same total.
            let mut fresh = Index::new("log", cursor, usize::MAX);
            for (r, c) in model.users.values() { fresh.put_user(r, *c); }
            for (r, c) in model.orgs.values() { fresh.put_organization(r, *c); }
            for (r, c) in model.memberships.values() { fresh.put_membership(r, *c); }
            prop_assert_eq!(fresh.bytes(), index.bytes());
        }
    }
}

//! The in-memory index of one replica: users (by id, email, username, external id, phone
//! number), organizations (by id, slug) and memberships (by id, by organization + user), at one
//! change-log cursor. Users and organizations are held encoded (`pb::Encoded`, made once when
//! the change is applied, shared by every response that sends them: see [`Held`]); memberships
//! as their message, because a read adds their effective permissions. It
//! answers exactly what the PostgreSQL reads of `store::read` answer at that cursor, or says it
//! does not know (then the caller reads PostgreSQL). How each kind is held is [`Cached`]: a kind
//! without lookups of its own is held by id only.

use std::any::Any;
use std::collections::HashMap;

/// The ids holding one key, sorted (usually one: a `Vec` costs one small allocation, a
/// `BTreeSet` a node of eleven slots).
type Ids = Vec<String>;
use std::sync::Arc;

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

/// A key of a secondary index: case-insensitive ones fold ASCII, and hold values that are not
/// ASCII aside (PostgreSQL's `lower()` depends on the database's locale for those).
#[derive(Default)]
struct KeyIndex {
    map: HashMap<String, Ids>,
    /// Held values this index could not fold (their lookups go to PostgreSQL).
    unfoldable: usize,
    fold: bool,
}

impl KeyIndex {
    fn folding() -> Self {
        KeyIndex {
            fold: true,
            ..Default::default()
        }
    }

    fn key(&self, value: &str) -> Option<String> {
        if !self.fold {
            Some(value.to_string())
        } else if value.is_ascii() {
            Some(value.to_ascii_lowercase())
        } else {
            None
        }
    }

    fn insert(&mut self, value: &str, id: &str) {
        match self.key(value) {
            Some(k) => {
                let ids = self.map.entry(k).or_default();
                if let Err(at) = ids.binary_search_by(|x| x.as_str().cmp(id)) {
                    ids.insert(at, id.to_string());
                }
            }
            None => self.unfoldable += 1,
        }
    }

    fn remove(&mut self, value: &str, id: &str) {
        match self.key(value) {
            Some(k) => {
                if let Some(ids) = self.map.get_mut(&k) {
                    ids.retain(|x| x != id);
                    if ids.is_empty() {
                        self.map.remove(&k);
                    }
                }
            }
            None => self.unfoldable -= 1,
        }
    }

    /// The smallest id holding `value`: `Some(None)` for none, `None` when unknown.
    fn first(&self, value: &str) -> Option<Option<&String>> {
        if self.unfoldable > 0 {
            return None;
        }
        let k = self.key(value)?;
        Some(self.map.get(&k).and_then(|ids| ids.first()))
    }
}

/// The lookup keys of a live user (a tombstone has none that a lookup matches).
#[derive(Default, Debug, Clone)]
struct UserKeys {
    emails: Vec<String>,
    username: Option<String>,
    external_id: Option<String>,
    phones: Vec<String>,
}

impl UserKeys {
    fn of(r: &UserRecord) -> UserKeys {
        if r.deleted_at.is_some() {
            return UserKeys::default();
        }
        let mut emails: Vec<String> = r.email_addresses().into_iter().map(|(_, a)| a).collect();
        emails.sort();
        emails.dedup();
        let mut phones: Vec<String> = r.phone_numbers().into_iter().map(|(_, n)| n).collect();
        phones.sort();
        phones.dedup();
        UserKeys {
            emails,
            username: r.username.clone(),
            external_id: r.external_id.clone(),
            phones,
        }
    }

    /// What the user's keys cost in the secondary indexes.
    fn bytes(&self, id: &str) -> usize {
        self.emails
            .iter()
            .chain(&self.phones)
            .chain(&self.username)
            .chain(&self.external_id)
            .map(|k| size::index_key(k, id))
            .sum()
    }
}

struct UserEntry {
    held: Held<pb::User>,
    keys: UserKeys,
    bytes: usize,
}

struct OrgEntry {
    held: Held<pb::Organization>,
    /// The slug of a live organization.
    slug: Option<String>,
    bytes: usize,
}

struct MembershipEntry {
    message: Arc<pb::Membership>,
    organization_id: String,
    user_id: String,
    live: bool,
    /// `updated_at`, for "the current membership" (latest first, none last, then by id).
    updated: Option<(i64, u32)>,
    bytes: usize,
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
    users: HashMap<String, UserEntry>,
    emails: KeyIndex,
    usernames: KeyIndex,
    external_ids: KeyIndex,
    phones: KeyIndex,
    organizations: HashMap<String, OrgEntry>,
    slugs: KeyIndex,
    memberships: HashMap<String, MembershipEntry>,
    /// Live memberships by (organization, user).
    /// (Keyed organization, then user: a lookup borrows both ids instead of building a key.)
    by_pair: HashMap<String, HashMap<String, Ids>>,
    /// Kinds without lookups of their own, by id: each kind's message (`Arc<K::Message>`) and its
    /// accounted bytes.
    by_id: HashMap<EntityType, HashMap<String, (Arc<dyn Any + Send + Sync>, usize)>>,
    /// Every role and permission, outside the budget.
    access: Access,
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
            users: HashMap::new(),
            emails: KeyIndex::folding(),
            usernames: KeyIndex::folding(),
            external_ids: KeyIndex::default(),
            phones: KeyIndex::default(),
            organizations: HashMap::new(),
            slugs: KeyIndex::default(),
            memberships: HashMap::new(),
            by_pair: HashMap::new(),
            by_id: HashMap::new(),
            access: Access::default(),
        }
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
        (self.users.len(), self.organizations.len(), self.memberships.len())
    }

    /// Whether everything is held (nothing was left out for the budget).
    pub fn complete(&self) -> bool {
        self.complete
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
        self.remove_user(&r.id);
        let held = Held::of(&convert::user(r, update_cursor, &self.log_id), r.deleted_at.is_some());
        let keys = UserKeys::of(r);
        let bytes =
            size::slot(&r.id, std::mem::size_of::<UserEntry>()) + size::encoded(held.message.len()) + keys.bytes(&r.id);
        if !self.fits(bytes) {
            return;
        }
        for e in &keys.emails {
            self.emails.insert(e, &r.id);
        }
        for p in &keys.phones {
            self.phones.insert(p, &r.id);
        }
        if let Some(u) = &keys.username {
            self.usernames.insert(u, &r.id);
        }
        if let Some(x) = &keys.external_id {
            self.external_ids.insert(x, &r.id);
        }
        self.bytes += bytes;
        self.users.insert(
            r.id.clone(),
            UserEntry {
                held,
                keys,
                bytes,
            },
        );
    }

    fn remove_user(&mut self, id: &str) {
        let Some(old) = self.users.remove(id) else {
            return;
        };
        for e in &old.keys.emails {
            self.emails.remove(e, id);
        }
        for p in &old.keys.phones {
            self.phones.remove(p, id);
        }
        if let Some(u) = &old.keys.username {
            self.usernames.remove(u, id);
        }
        if let Some(x) = &old.keys.external_id {
            self.external_ids.remove(x, id);
        }
        self.bytes -= old.bytes;
    }

    pub fn put_organization(&mut self, r: &OrganizationRecord, update_cursor: i64) {
        self.remove_organization(&r.id);
        let held = Held::of(&convert::organization(r, update_cursor, &self.log_id), r.deleted_at.is_some());
        let slug = r.slug.clone().filter(|_| r.deleted_at.is_none());
        let bytes = size::slot(&r.id, std::mem::size_of::<OrgEntry>())
            + size::encoded(held.message.len())
            + slug.as_ref().map_or(0, |s| size::index_key(s, &r.id));
        if !self.fits(bytes) {
            return;
        }
        if let Some(s) = &slug {
            self.slugs.insert(s, &r.id);
        }
        self.bytes += bytes;
        self.organizations.insert(
            r.id.clone(),
            OrgEntry {
                held,
                slug,
                bytes,
            },
        );
    }

    fn remove_organization(&mut self, id: &str) {
        let Some(old) = self.organizations.remove(id) else {
            return;
        };
        if let Some(s) = &old.slug {
            self.slugs.remove(s, id);
        }
        self.bytes -= old.bytes;
    }

    pub fn put_membership(&mut self, r: &MembershipRecord, update_cursor: i64) {
        self.remove_membership(&r.id);
        let message = convert::membership(r, update_cursor, &self.log_id);
        let bytes = size::slot(&r.id, std::mem::size_of::<MembershipEntry>())
            + size::membership(&message)
            + size::index_key(&r.organization_id, &r.id)
            + r.user_id.len();
        if !self.fits(bytes) {
            return;
        }
        let live = r.deleted_at.is_none();
        if live {
            let ids = self
                .by_pair
                .entry(r.organization_id.clone())
                .or_default()
                .entry(r.user_id.clone())
                .or_default();
            if let Err(at) = ids.binary_search(&r.id) {
                ids.insert(at, r.id.clone());
            }
        }
        self.bytes += bytes;
        self.memberships.insert(
            r.id.clone(),
            MembershipEntry {
                message: Arc::new(message),
                organization_id: r.organization_id.clone(),
                user_id: r.user_id.clone(),
                live,
                updated: updated(r.updated_at),
                bytes,
            },
        );
    }

    fn remove_membership(&mut self, id: &str) {
        let Some(old) = self.memberships.remove(id) else {
            return;
        };
        if old.live
            && let Some(users) = self.by_pair.get_mut(&old.organization_id)
        {
            if let Some(ids) = users.get_mut(&old.user_id) {
                ids.retain(|x| x != id);
                if ids.is_empty() {
                    users.remove(&old.user_id);
                }
            }
            if users.is_empty() {
                self.by_pair.remove(&old.organization_id);
            }
        }
        self.bytes -= old.bytes;
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
        match held {
            Some((message, _)) => Answer::Found(
                message.clone().downcast().expect("a kind's messages have its type"),
                self.cursor,
            ),
            None if self.complete => Answer::Absent(self.cursor),
            None => Answer::Unknown,
        }
    }

    fn by_id<E, T: Clone>(&self, map: &HashMap<String, E>, id: &str, message: impl Fn(&E) -> &T) -> Answer<T> {
        match map.get(id) {
            Some(e) => Answer::Found(message(e).clone(), self.cursor),
            None if self.complete => Answer::Absent(self.cursor),
            None => Answer::Unknown,
        }
    }

    /// The user with `id` (a tombstone too; the caller applies `show_deleted`).
    pub fn user(&self, id: &str) -> Answer<Held<pb::User>> {
        self.by_id(&self.users, id, |e| &e.held)
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
        self.by_id(&self.organizations, id, |e| &e.held)
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
            Some(m) if m.organization_id == organization_id => Answer::Found(self.effective(&m.message), self.cursor),
            // Ids are unique: held under another organization means none under this one.
            Some(_) => Answer::Absent(self.cursor),
            None if self.complete => Answer::Absent(self.cursor),
            None => Answer::Unknown,
        }
    }

    /// The live user with `key` (the smallest id when several share it), as `store::read`.
    pub fn user_by(&self, key: &crate::store::read::UserKey) -> Answer<Held<pb::User>> {
        use crate::store::read::UserKey;
        if !self.complete {
            return Answer::Unknown;
        }
        let (index, value) = match key {
            UserKey::Email(v) => (&self.emails, v),
            UserKey::Username(v) => (&self.usernames, v),
            UserKey::ExternalId(v) => (&self.external_ids, v),
            UserKey::PhoneNumber(v) => (&self.phones, v),
        };
        match index.first(value) {
            None => Answer::Unknown,
            Some(None) => Answer::Absent(self.cursor),
            Some(Some(id)) => self.user(id),
        }
    }

    /// The live organization with `slug`.
    pub fn organization_by_slug(&self, slug: &str) -> Answer<Held<pb::Organization>> {
        if !self.complete {
            return Answer::Unknown;
        }
        match self.slugs.first(slug) {
            None => Answer::Unknown,
            Some(None) => Answer::Absent(self.cursor),
            Some(Some(id)) => self.organization(id),
        }
    }

    /// The user's current membership of the organization: the live one updated last (then by id).
    pub fn membership_of(&self, organization_id: &str, user_id: &str) -> Answer<Held<pb::Membership>> {
        if !self.complete {
            return Answer::Unknown;
        }
        let current = self.live_of(organization_id, user_id).and_then(|ids| self.current(ids));
        match current {
            Some(m) => Answer::Found(self.effective(m), self.cursor),
            None => Answer::Absent(self.cursor),
        }
    }

    /// The live memberships of the user in the organization.
    fn live_of(&self, organization_id: &str, user_id: &str) -> Option<&Ids> {
        self.by_pair.get(organization_id)?.get(user_id)
    }

    /// The current one of the live memberships `ids`: latest `updated_at` first, none last, then
    /// the smallest id.
    fn current(&self, ids: &Ids) -> Option<&Arc<pb::Membership>> {
        ids.iter()
            .filter_map(|id| self.memberships.get(id).map(|m| (id, m)))
            .min_by(|(a_id, a), (b_id, b)| {
                let key = |m: &MembershipEntry| std::cmp::Reverse(m.updated.map(|u| (1, u)).unwrap_or((0, (0, 0))));
                key(a).cmp(&key(b)).then_with(|| a_id.cmp(b_id))
            })
            .map(|(_, m)| &m.message)
    }

    /// A held membership as reads show it: with its effective permissions (encoded per read).
    fn effective(&self, m: &Arc<pb::Membership>) -> Held<pb::Membership> {
        Held::of(&self.access.effective_membership(m), m.delete_time.is_some())
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
        let user_live = self.users.get(user_id).is_some_and(|e| !e.held.deleted);
        let organization_live = self.organizations.get(organization_id).is_some_and(|e| !e.held.deleted);
        let member = self
            .live_of(organization_id, user_id)
            .and_then(|ids| self.current(ids))
            .map(|m| {
                let (has, source) = self.access.member_has(&m.role, &m.permissions, permission);
                Member {
                    role: m.role.clone(),
                    has,
                    source,
                    snapshot_has: m.permissions.iter().any(|p| p == permission),
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
                    let want = live.first().map(|(m, c)| without_roles(convert::membership(m, *c, "log")));
                    let got = match index.membership_of(&org, &user) {
                        Answer::Found(m, _) => Some(m.open()),
                        Answer::Absent(_) => None,
                        Answer::Unknown => panic!("unknown"),
                    };
                    prop_assert_eq!(got, want);
                }
                let org = format!("org_{o}");
                for m in 0..5 {
                    let id = format!("m_{m}");
                    let want = model.memberships.get(&id).filter(|(r, _)| r.organization_id == org)
                        .map(|(r, c)| without_roles(convert::membership(r, *c, "log")));
                    let got = match index.membership(&org, &id) {
                        Answer::Found(m, _) => Some(m.open()),
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

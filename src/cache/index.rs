//! The in-memory index of one replica: users (by id, email, username, external id, phone
//! number), organizations (by id, slug) and memberships (by id, by organization + user), each
//! held as the protobuf message a read returns, behind `Arc`, at one change-log cursor. It
//! answers exactly what the PostgreSQL reads of `store::read` answer at that cursor, or says it
//! does not know (then the caller reads PostgreSQL).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use prost::Message;

use crate::grpc::convert;
use crate::pb;
use crate::store::changes::ChangeRow;
use crate::store::{EntityType, MembershipRecord, OrganizationRecord, UserRecord};

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

/// A change the index cannot apply.
#[derive(Debug, thiserror::Error)]
#[error("change {seq} cannot be applied: {why}")]
pub struct ApplyError {
    pub seq: i64,
    pub why: String,
}

/// Bookkeeping per entry beyond its message: the map slots, the `Arc`, the index sets.
const ENTRY_OVERHEAD: usize = 192;
/// A decoded message takes about this many times its encoded size (strings, maps, vectors);
/// `bench lookup` compares the accounted bytes with the server's RSS.
const DECODED_FACTOR: usize = 3;

/// A key of a secondary index: case-insensitive ones fold ASCII, and hold values that are not
/// ASCII aside (PostgreSQL's `lower()` depends on the database's locale for those).
#[derive(Default)]
struct KeyIndex {
    map: HashMap<String, BTreeSet<String>>,
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
                self.map.entry(k).or_default().insert(id.to_string());
            }
            None => self.unfoldable += 1,
        }
    }

    fn remove(&mut self, value: &str, id: &str) {
        match self.key(value) {
            Some(k) => {
                if let Some(ids) = self.map.get_mut(&k) {
                    ids.remove(id);
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
        Some(self.map.get(&k).and_then(|ids| ids.iter().next()))
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

    fn bytes(&self) -> usize {
        self.emails.iter().chain(&self.phones).map(String::len).sum::<usize>()
            + self.username.as_ref().map_or(0, String::len)
            + self.external_id.as_ref().map_or(0, String::len)
    }
}

struct UserEntry {
    message: Arc<pb::User>,
    keys: UserKeys,
    bytes: usize,
}

struct OrgEntry {
    message: Arc<pb::Organization>,
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
    by_pair: HashMap<(String, String), BTreeSet<String>>,
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
        }
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
        let message = convert::user(r, update_cursor, &self.log_id);
        let keys = UserKeys::of(r);
        let bytes = ENTRY_OVERHEAD + DECODED_FACTOR * message.encoded_len() + 2 * (r.id.len() + keys.bytes());
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
                message: Arc::new(message),
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
        let message = convert::organization(r, update_cursor, &self.log_id);
        let slug = r.slug.clone().filter(|_| r.deleted_at.is_none());
        let bytes = ENTRY_OVERHEAD
            + DECODED_FACTOR * message.encoded_len()
            + 2 * (r.id.len() + slug.as_ref().map_or(0, String::len));
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
                message: Arc::new(message),
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
        let bytes = ENTRY_OVERHEAD
            + DECODED_FACTOR * message.encoded_len()
            + 2 * (r.id.len() + r.organization_id.len() + r.user_id.len());
        if !self.fits(bytes) {
            return;
        }
        let live = r.deleted_at.is_none();
        if live {
            self.by_pair
                .entry((r.organization_id.clone(), r.user_id.clone()))
                .or_default()
                .insert(r.id.clone());
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
        if old.live {
            let pair = (old.organization_id, old.user_id);
            if let Some(ids) = self.by_pair.get_mut(&pair) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_pair.remove(&pair);
                }
            }
        }
        self.bytes -= old.bytes;
    }

    /// Applies one change of the log (its state is the entity's new row) and moves the cursor.
    pub fn apply(&mut self, c: &ChangeRow) -> Result<(), ApplyError> {
        let bad = |e: serde_json::Error| ApplyError {
            seq: c.seq,
            why: format!("unreadable state: {e}"),
        };
        match c.entity_type() {
            Some(EntityType::User) => {
                let r: UserRecord = serde_json::from_value(c.state.clone()).map_err(bad)?;
                self.put_user(&r, c.seq);
            }
            Some(EntityType::Organization) => {
                let r: OrganizationRecord = serde_json::from_value(c.state.clone()).map_err(bad)?;
                self.put_organization(&r, c.seq);
            }
            Some(EntityType::Membership) => {
                let r: MembershipRecord = serde_json::from_value(c.state.clone()).map_err(bad)?;
                self.put_membership(&r, c.seq);
            }
            None => {
                return Err(ApplyError {
                    seq: c.seq,
                    why: format!("unknown entity type `{}`", c.entity_type),
                });
            }
        }
        self.cursor = c.seq;
        Ok(())
    }

    fn by_id<E, T: Clone>(&self, map: &HashMap<String, E>, id: &str, message: impl Fn(&E) -> &T) -> Answer<T> {
        match map.get(id) {
            Some(e) => Answer::Found(message(e).clone(), self.cursor),
            None if self.complete => Answer::Absent(self.cursor),
            None => Answer::Unknown,
        }
    }

    /// The user with `id` (a tombstone too; the caller applies `show_deleted`).
    pub fn user(&self, id: &str) -> Answer<Arc<pb::User>> {
        self.by_id(&self.users, id, |e| &e.message)
    }

    /// Users by id in the order asked, or `None` if any is unknown.
    pub fn users(&self, ids: &[&str]) -> Option<(Vec<Option<Arc<pb::User>>>, i64)> {
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

    pub fn organization(&self, id: &str) -> Answer<Arc<pb::Organization>> {
        self.by_id(&self.organizations, id, |e| &e.message)
    }

    pub fn organizations(&self, ids: &[&str]) -> Option<(Vec<Option<Arc<pb::Organization>>>, i64)> {
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
    pub fn membership(&self, organization_id: &str, id: &str) -> Answer<Arc<pb::Membership>> {
        match self.memberships.get(id) {
            Some(m) if m.organization_id == organization_id => Answer::Found(m.message.clone(), self.cursor),
            // Ids are unique: held under another organization means none under this one.
            Some(_) => Answer::Absent(self.cursor),
            None if self.complete => Answer::Absent(self.cursor),
            None => Answer::Unknown,
        }
    }

    /// The live user with `key` (the smallest id when several share it), as `store::read`.
    pub fn user_by(&self, key: &crate::store::read::UserKey) -> Answer<Arc<pb::User>> {
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
    pub fn organization_by_slug(&self, slug: &str) -> Answer<Arc<pb::Organization>> {
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
    pub fn membership_of(&self, organization_id: &str, user_id: &str) -> Answer<Arc<pb::Membership>> {
        if !self.complete {
            return Answer::Unknown;
        }
        let Some(ids) = self.by_pair.get(&(organization_id.to_string(), user_id.to_string())) else {
            return Answer::Absent(self.cursor);
        };
        let best = ids
            .iter()
            .filter_map(|id| self.memberships.get(id).map(|m| (id, m)))
            // Latest `updated_at` first, none last, then the smallest id.
            .min_by(|(a_id, a), (b_id, b)| {
                let key = |m: &MembershipEntry| std::cmp::Reverse(m.updated.map(|u| (1, u)).unwrap_or((0, (0, 0))));
                key(a).cmp(&key(b)).then_with(|| a_id.cmp(b_id))
            });
        match best {
            Some((_, m)) => Answer::Found(m.message.clone(), self.cursor),
            None => Answer::Absent(self.cursor),
        }
    }
}

//! An entity kind, declared once: the [`Kind`] trait says what a kind is (its name, table,
//! columns, the events that write it, its parents, what a tombstone keeps), and the list in
//! [`declare_kinds!`]'s one invocation (in `store/mod.rs`) names every kind. From that list come
//! [`EntityType`], [`AnyRecord`] (one record of any kind) and the dispatch macros
//! `for_each_kind!` and `with_kind!`, so code that handles "every kind" is written once, generic
//! over `K: Kind`, instead of a `match` per kind in each layer.
//!
//! Adding a kind: a record type in `records.rs` (or a file of its own), its `impl Kind`, a
//! migration for its table, and one line in the list.
//!
//! What the trait leaves room for (the kinds the next issues add):
//! - a delete whose parent is unknown: a parent column may be absent (`parent` returns `None`);
//! - kinds that are never tombstoned: `deleted_at` may always be `None` (no event deletes them);
//! - statuses as strings: records keep Clerk's values as they come, unknown ones included.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::convert;
use super::fields::Field;
use super::records::{MembershipRecord, OrganizationRecord, Record, RecordError, UserRecord};
pub use super::{AnyRecord, EntityType};
pub(crate) use super::{for_each_kind, match_record, with_kind};
use crate::pb;

/// The encoding of the messages projections keep (`Kind::STORES_MESSAGE`). Raise it whenever
/// what a stored kind's message holds changes (a field added to `User` or `Organization`, a
/// change to how `convert` fills one): rows of another format are converted from `data` on
/// read, as if they kept no message. `store::kind`'s test of the messages' descriptors fails
/// until it is raised.
pub const MESSAGE_FORMAT: i32 = 1;

/// What the mirror knows of one kind of entity.
pub trait Kind:
    Record
    + Clone
    + PartialEq
    + std::fmt::Debug
    + Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + Unpin
    + 'static
    + for<'r> sqlx::FromRow<'r, PgRow>
{
    /// The kind's name in the change log and the API (`user`).
    const TYPE: EntityType;
    /// The projection table, with a text primary key `id`.
    const TABLE: &'static str;
    /// What the API reads the kind from: the table, or a view of it that adds what is derived
    /// at read time (a role's resolved permission keys, a membership's effective permissions).
    const READ_FROM: &'static str = Self::TABLE;
    /// Whether the projection also keeps the message a read sends (`message`, in
    /// [`MESSAGE_FORMAT`]), written by the applier: only for kinds whose message is not
    /// resolved at read time.
    const STORES_MESSAGE: bool = false;
    /// Whether a change of this kind concerns every organization (roles and permissions decide
    /// what every organization's members may do): an organization-scoped watch includes it.
    const IN_EVERY_ORGANIZATION: bool = false;
    /// The fields a filter of this kind may name (lists and watches).
    const FIELDS: &'static [Field];
    /// The record's columns as `jsonb_to_recordset` declares them (`id text, …`), in the order
    /// the record serialises them.
    const COLUMNS: &'static str;
    /// The webhook event types that create or update an entity of this kind.
    const UPSERTED_BY: &'static [&'static str];
    /// The webhook event types that delete one.
    const DELETED_BY: &'static [&'static str];
    /// The kinds an entity of this kind belongs to, with the column naming each. Deleting a
    /// parent ends every child of it (each a change of its own), a child written under a
    /// deleted parent is stored as ended, and a child's delete is no later than its parents'.
    const PARENTS: &'static [(EntityType, &'static str)] = &[];

    /// A record from Clerk's object (already cleaned).
    fn from_clerk(data: Value) -> Result<Self, RecordError>;
    /// The tombstone a delete event's `data` names, deleted at `at`.
    fn from_delete(data: Value, at: DateTime<Utc>) -> Result<Self, RecordError>;
    /// What a tombstone keeps of this record, deleted at `at`.
    fn tombstone(&self, at: DateTime<Utc>) -> Self;
    /// The tombstone a delete event makes of `current`, the stored state (the event's own
    /// tombstone unless the kind keeps something of the stored state).
    fn delete_of(current: &Self, event: Self) -> Self {
        let _ = current;
        event
    }
    /// What a tombstone learns from a create or update that arrives after it (or from another
    /// delete: a domain's organization from the organization's), for a kind whose delete event
    /// names less than a tombstone keeps (a role's delete has no key): `None`, the default,
    /// learns nothing. The applier keeps what the newest version says, so every order
    /// of the same events ends alike (a kind that learns keeps its tombstone's version).
    fn learned(tombstone: &Self, late: &Self) -> Option<Self> {
        let _ = (tombstone, late);
        None
    }
    /// Whether [`Kind::learned`] can learn anything (its tombstones then keep their version).
    const TOMBSTONE_LEARNS: bool = false;
    /// Where a state ranks before its version in last-writer-wins: a state that only ever
    /// follows another in Clerk (an invitation accepted, revoked or expired, after pending) ranks
    /// above it whatever the timestamps say, so every delivery order ends alike. `0` for every
    /// state by default.
    fn precedence(&self) -> u8 {
        0
    }
    /// This state as Clerk said it, when the mirror derived something in it (`Kind::derive`):
    /// an upsert of exactly that state is the same state under another version, and keeps what
    /// was derived. `None`, the default: nothing derived.
    fn underived(&self) -> Option<Self> {
        None
    }
    /// The event types of rows the mirror produces itself (sources `clock`, `api`) that derive a
    /// new state of a stored entity from exactly the state their basis names (an invitation
    /// expired: docs/inbox.md, "Ranking"). Honoured only from rows that rank as the mirror's.
    const DERIVED_BY: &'static [&'static str] = &[];
    /// The state the mirror derives from `current` for a row of type `event_type` with `data`;
    /// `None` when nothing follows any more. The applier calls it only when the stored version is
    /// the row's basis, and keeps that version.
    fn derive(current: &Self, event_type: &str, data: &Value) -> Option<Self> {
        let _ = (current, event_type, data);
        None
    }
    /// The event types of another object that carries entities of this kind (a subscription
    /// carries its items): each is upserted as if its own event had come, versioned by its own
    /// `updated_at`.
    const CARRIED_BY: &'static [&'static str] = &[];
    /// The objects of this kind `data` (the body of a `CARRIED_BY` event) carries, completed
    /// with what they inherit from it.
    fn carried(data: &Value) -> Vec<Value> {
        let _ = data;
        Vec::new()
    }
    /// Whether the kind came after the watch's first kinds (users, organizations,
    /// memberships): a watch that names no `entity_types` but has a filter includes it only when
    /// the filter is valid for it, so that a request valid before the kind existed stays valid
    /// and means what it meant.
    const ADDED_LATER: bool = false;
    fn deleted_at(&self) -> Option<DateTime<Utc>>;
    fn set_deleted_at(&mut self, at: DateTime<Utc>);
    /// The id of this entity's parent of kind `parent` (one of `PARENTS`), if it names one.
    fn parent(&self, parent: EntityType) -> Option<&str> {
        let _ = parent;
        None
    }
    /// The organization a change of this entity is scoped to (watch and log filters).
    fn organization_id(&self) -> Option<String>;
    /// The user a change of this entity is scoped to.
    fn user_id(&self) -> Option<String>;
    /// This record as one of any kind.
    fn into_any(self) -> AnyRecord;
    /// The API's message for this kind.
    type Message: prost::Message + Clone + Default + Send + Sync + 'static;
    /// The record as the API shows it; `update_cursor` is the seq of the change that last
    /// touched it, in the log `log_id`.
    fn message(&self, update_cursor: i64, log_id: &str) -> Self::Message;
    /// Whether a message shows a tombstone.
    fn message_deleted(message: &Self::Message) -> bool;
    /// The message without its update cursor (a previous state's: which change made it is not
    /// known).
    fn without_cursor(message: Self::Message) -> Self::Message;
    /// The API's name of this kind in watch requests and changes.
    const WIRE_TYPE: pb::EntityType;
    /// A change's entity, as the API's oneof.
    fn change_entity(message: Self::Message) -> pb::change::Entity;
    /// A change's previous state, as the API's oneof.
    fn change_previous(message: Self::Message) -> pb::change::Previous;
    /// The column that holds the organization an entity belongs to (`id` for an
    /// organization), if any: a watch scoped to one organization reads only its entities.
    const ORGANIZATION_COLUMN: Option<&'static str>;
    /// The column that holds the user an entity belongs to (`id` for a user), if any.
    const USER_COLUMN: Option<&'static str>;
    /// A value this build does not know in a field Clerk extends over time (a subscription's
    /// new status), if the record holds one: applied as any other, and counted.
    fn unrecognised(&self) -> Option<&str> {
        None
    }
    /// Writes what the kind keeps beside its table for the records just written (a user's
    /// email and phone lookup rows).
    fn after_write<'a>(
        tx: &'a mut PgConnection,
        written: &'a [&'a Self],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        let _ = (tx, written);
        async { Ok(()) }
    }
}

/// What a kind whose records are Clerk's objects and that no event deletes has in its `Kind`:
/// Clerk's object is the record, and a delete-shaped body (a repair) names it and is its
/// tombstone.
macro_rules! never_deleted {
    () => {
        fn from_clerk(data: Value) -> Result<Self, RecordError> {
            Self::from_clerk(data)
        }
        fn from_delete(data: Value, at: DateTime<Utc>) -> Result<Self, RecordError> {
            Ok(Self::from_clerk(data)?.tombstone(at))
        }
        fn tombstone(&self, at: DateTime<Utc>) -> Self {
            Self {
                deleted_at: Some(at),
                ..self.clone()
            }
        }
        fn deleted_at(&self) -> Option<DateTime<Utc>> {
            self.deleted_at
        }
        fn set_deleted_at(&mut self, at: DateTime<Utc>) {
            self.deleted_at = Some(at);
        }
    };
}
pub(crate) use never_deleted;

/// Declares the kinds: `Variant(RecordType) = "name"`, one line each. The leading `$` passes
/// the dollar sign to the dispatch macros it defines.
macro_rules! declare_kinds {
    ($d:tt $( $(#[$attr:meta])* $variant:ident($ty:ty) = $name:literal ),+ $(,)?) => {
        /// The kinds of entity the mirror keeps.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum EntityType {
            $( $(#[$attr])* $variant, )+
        }

        impl EntityType {
            /// Every kind, in the list's order.
            pub const ALL: &'static [EntityType] = &[ $( $(#[$attr])* EntityType::$variant, )+ ];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( $(#[$attr])* EntityType::$variant => $name, )+
                }
            }

            /// The kind named `name` (as the change log and the API spell it).
            pub fn from_name(name: &str) -> Option<EntityType> {
                match name {
                    $( $(#[$attr])* $name => Some(EntityType::$variant), )+
                    _ => None,
                }
            }
        }

        /// One record of any kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AnyRecord {
            $( $(#[$attr])* $variant($ty), )+
        }

        impl AnyRecord {
            pub fn entity_type(&self) -> EntityType {
                match self {
                    $( $(#[$attr])* AnyRecord::$variant(_) => EntityType::$variant, )+
                }
            }
        }

        /// Runs `$body` once per kind, with `$k` naming the kind's record type.
        macro_rules! for_each_kind {
            ($d k:ident => $d body:block) => {{
                $( $(#[$attr])* { type $d k = $ty; $d body } )+
            }};
        }

        /// Evaluates `$body` with `$k` the record type of the kind `$t` (an `EntityType`).
        macro_rules! with_kind {
            ($d t:expr, $d k:ident => $d body:expr) => {
                match $d t {
                    $( $(#[$attr])* $crate::store::EntityType::$variant => { type $d k = $ty; $d body } )+
                }
            };
        }

        /// Evaluates `$body` with `$r` bound to the record inside an `AnyRecord` (its own type).
        macro_rules! match_record {
            ($d any:expr, $d r:ident => $d body:expr) => {
                match $d any {
                    $( $(#[$attr])* $crate::store::AnyRecord::$variant($d r) => $d body, )+
                }
            };
        }

        pub(crate) use {for_each_kind, match_record, with_kind};
    };
}
pub(crate) use declare_kinds;

impl Kind for UserRecord {
    const TYPE: EntityType = EntityType::User;
    const TABLE: &'static str = "users";
    const STORES_MESSAGE: bool = true;
    const FIELDS: &'static [Field] = &[
        Field::text("id"),
        Field::text("external_id"),
        Field::text("username"),
        Field::text("first_name"),
        Field::text("last_name"),
        Field::text("image_url"),
        Field::text("primary_email_address"),
        Field::email("email"),
        Field::boolean("banned"),
        Field::boolean("locked"),
        Field::time("create_time").column("created_at"),
        Field::time("update_time").column("updated_at"),
        Field::time("last_sign_in_time").column("last_sign_in_at"),
        Field::time("delete_time").column("deleted_at"),
        Field::json("public_metadata"),
        Field::json("private_metadata"),
        Field::json("unsafe_metadata"),
    ];
    const COLUMNS: &'static str = "id text, external_id text, username text, first_name text, last_name text, \
         image_url text, primary_email_address text, banned boolean, locked boolean, created_at timestamptz, \
         updated_at timestamptz, last_sign_in_at timestamptz, deleted_at timestamptz, data jsonb";
    const UPSERTED_BY: &'static [&'static str] = &["user.created", "user.updated"];
    const DELETED_BY: &'static [&'static str] = &["user.deleted"];

    fn from_clerk(data: Value) -> Result<Self, RecordError> {
        UserRecord::from_clerk(data)
    }
    fn from_delete(data: Value, at: DateTime<Utc>) -> Result<Self, RecordError> {
        let id = super::records::required_id(&data, "`user.deleted`")?;
        let external_id = data.get("external_id").and_then(Value::as_str).map(str::to_string);
        Ok(UserRecord::tombstone(id, external_id, at))
    }
    fn tombstone(&self, at: DateTime<Utc>) -> Self {
        UserRecord::tombstone(self.id.clone(), self.external_id.clone(), at)
    }
    /// The stored external_id outlives the user (the delete event may not carry it).
    fn delete_of(current: &Self, mut event: Self) -> Self {
        event.external_id = current.external_id.clone().or(event.external_id);
        event
    }
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
    fn into_any(self) -> AnyRecord {
        AnyRecord::User(self)
    }
    type Message = pb::User;
    fn message(&self, update_cursor: i64, log_id: &str) -> pb::User {
        convert::user(self, update_cursor, log_id)
    }
    fn message_deleted(message: &pb::User) -> bool {
        message.delete_time.is_some()
    }
    fn without_cursor(message: pb::User) -> pb::User {
        pb::User {
            update_cursor: String::new(),
            ..message
        }
    }
    const WIRE_TYPE: pb::EntityType = pb::EntityType::User;
    fn change_entity(message: pb::User) -> pb::change::Entity {
        pb::change::Entity::User(message)
    }
    fn change_previous(message: pb::User) -> pb::change::Previous {
        pb::change::Previous::PreviousUser(message)
    }
    const ORGANIZATION_COLUMN: Option<&'static str> = None;
    const USER_COLUMN: Option<&'static str> = Some("id");
    fn after_write<'a>(
        tx: &'a mut PgConnection,
        written: &'a [&'a Self],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        super::records::write_user_lookups(tx, written)
    }
}

impl Kind for OrganizationRecord {
    const TYPE: EntityType = EntityType::Organization;
    const TABLE: &'static str = "organizations";
    const STORES_MESSAGE: bool = true;
    const FIELDS: &'static [Field] = &[
        Field::text("id"),
        Field::text("display_name").column("name"),
        Field::text("slug"),
        Field::text("image_url"),
        Field::int("members_count"),
        Field::time("create_time").column("created_at"),
        Field::time("update_time").column("updated_at"),
        Field::time("delete_time").column("deleted_at"),
        Field::json("public_metadata"),
        Field::json("private_metadata"),
    ];
    const COLUMNS: &'static str = "id text, name text, slug text, image_url text, members_count integer, \
         created_at timestamptz, updated_at timestamptz, deleted_at timestamptz, data jsonb";
    const UPSERTED_BY: &'static [&'static str] = &["organization.created", "organization.updated"];
    const DELETED_BY: &'static [&'static str] = &["organization.deleted"];

    fn from_clerk(data: Value) -> Result<Self, RecordError> {
        OrganizationRecord::from_clerk(data)
    }
    fn from_delete(data: Value, at: DateTime<Utc>) -> Result<Self, RecordError> {
        let id = super::records::required_id(&data, "`organization.deleted`")?;
        Ok(OrganizationRecord::tombstone(id, at))
    }
    fn tombstone(&self, at: DateTime<Utc>) -> Self {
        OrganizationRecord::tombstone(self.id.clone(), at)
    }
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
    fn into_any(self) -> AnyRecord {
        AnyRecord::Organization(self)
    }
    type Message = pb::Organization;
    fn message(&self, update_cursor: i64, log_id: &str) -> pb::Organization {
        convert::organization(self, update_cursor, log_id)
    }
    fn message_deleted(message: &pb::Organization) -> bool {
        message.delete_time.is_some()
    }
    fn without_cursor(message: pb::Organization) -> pb::Organization {
        pb::Organization {
            update_cursor: String::new(),
            ..message
        }
    }
    const WIRE_TYPE: pb::EntityType = pb::EntityType::Organization;
    fn change_entity(message: pb::Organization) -> pb::change::Entity {
        pb::change::Entity::Organization(message)
    }
    fn change_previous(message: pb::Organization) -> pb::change::Previous {
        pb::change::Previous::PreviousOrganization(message)
    }
    const ORGANIZATION_COLUMN: Option<&'static str> = Some("id");
    const USER_COLUMN: Option<&'static str> = None;
}

impl Kind for MembershipRecord {
    const TYPE: EntityType = EntityType::Membership;
    const TABLE: &'static str = "memberships";
    const READ_FROM: &'static str = "membership_view";
    const FIELDS: &'static [Field] = &[
        Field::text("id"),
        Field::text("organization_id"),
        Field::text("user_id"),
        Field::text("role"),
        Field::text("role_name"),
        Field::text_list("permissions"),
        Field::time("create_time").column("created_at"),
        Field::time("update_time").column("updated_at"),
        Field::time("delete_time").column("deleted_at"),
        Field::json("public_metadata"),
        Field::json("private_metadata"),
    ];
    const COLUMNS: &'static str = "id text, organization_id text, user_id text, role text, role_name text, \
         permissions text[], created_at timestamptz, updated_at timestamptz, deleted_at timestamptz, data jsonb";
    const UPSERTED_BY: &'static [&'static str] = &["organizationMembership.created", "organizationMembership.updated"];
    const DELETED_BY: &'static [&'static str] = &["organizationMembership.deleted"];
    const PARENTS: &'static [(EntityType, &'static str)] = &[
        (EntityType::Organization, "organization_id"),
        (EntityType::User, "user_id"),
    ];

    fn from_clerk(data: Value) -> Result<Self, RecordError> {
        MembershipRecord::from_clerk(data)
    }
    /// The deleted membership is a full object whose `updated_at` is not the delete time: the
    /// type decides, and the envelope timestamp is when it ended.
    fn from_delete(data: Value, at: DateTime<Utc>) -> Result<Self, RecordError> {
        Ok(MembershipRecord::from_clerk(data)?.tombstone(at))
    }
    fn tombstone(&self, at: DateTime<Utc>) -> Self {
        MembershipRecord::tombstone(self.id.clone(), self.organization_id.clone(), self.user_id.clone(), at)
    }
    fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.deleted_at
    }
    fn set_deleted_at(&mut self, at: DateTime<Utc>) {
        self.deleted_at = Some(at);
    }
    fn parent(&self, parent: EntityType) -> Option<&str> {
        match parent {
            EntityType::Organization => Some(&self.organization_id),
            EntityType::User => Some(&self.user_id),
            _ => None,
        }
    }
    fn organization_id(&self) -> Option<String> {
        Some(self.organization_id.clone())
    }
    fn user_id(&self) -> Option<String> {
        Some(self.user_id.clone())
    }
    fn into_any(self) -> AnyRecord {
        AnyRecord::Membership(self)
    }
    type Message = pb::Membership;
    fn message(&self, update_cursor: i64, log_id: &str) -> pb::Membership {
        convert::membership(self, update_cursor, log_id)
    }
    fn message_deleted(message: &pb::Membership) -> bool {
        message.delete_time.is_some()
    }
    fn without_cursor(message: pb::Membership) -> pb::Membership {
        pb::Membership {
            update_cursor: String::new(),
            ..message
        }
    }
    const WIRE_TYPE: pb::EntityType = pb::EntityType::Membership;
    fn change_entity(message: pb::Membership) -> pb::change::Entity {
        pb::change::Entity::Membership(message)
    }
    fn change_previous(message: pb::Membership) -> pb::change::Previous {
        pb::change::Previous::PreviousMembership(message)
    }
    const ORGANIZATION_COLUMN: Option<&'static str> = Some("organization_id");
    const USER_COLUMN: Option<&'static str> = Some("user_id");
}

/// The event types the mirror applies: every kind's.
pub static APPLIED_TYPES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut types = Vec::new();
    for_each_kind!(K => {
        types.extend(K::UPSERTED_BY.iter().chain(K::DELETED_BY).chain(K::CARRIED_BY));
    });
    types
});

/// The kinds whose changes concern every organization (see `Kind::IN_EVERY_ORGANIZATION`).
pub fn instance_wide() -> Vec<String> {
    let mut kinds = Vec::new();
    for_each_kind!(K => {
        if K::IN_EVERY_ORGANIZATION {
            kinds.push(K::TYPE.as_str().to_string());
        }
    });
    kinds
}

/// The kind whose state the mirror's own rows of `event_type` derive (see `Kind::DERIVED_BY`).
pub fn kind_deriving(event_type: &str) -> Option<EntityType> {
    let mut found = None;
    for_each_kind!(K => {
        if found.is_none() && K::DERIVED_BY.contains(&event_type) {
            found = Some(K::TYPE);
        }
    });
    found
}

/// The kind whose entities events of `event_type` carry (`Kind::CARRIED_BY`).
pub fn kind_carried_by(event_type: &str) -> Option<EntityType> {
    let mut found = None;
    for_each_kind!(K => {
        if found.is_none() && K::CARRIED_BY.contains(&event_type) {
            found = Some(K::TYPE);
        }
    });
    found
}

/// The kind whose events include `event_type`, and whether it deletes.
pub fn kind_of_event(event_type: &str) -> Option<(EntityType, bool)> {
    let mut found = None;
    for_each_kind!(K => {
        if found.is_none() {
            if K::UPSERTED_BY.contains(&event_type) {
                found = Some((K::TYPE, false));
            } else if K::DELETED_BY.contains(&event_type) {
                found = Some((K::TYPE, true));
            }
        }
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_named_once_and_its_name_reads_back() {
        for t in EntityType::ALL {
            assert_eq!(EntityType::from_name(t.as_str()), Some(*t));
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(t.as_str()));
        }
        assert_eq!(EntityType::from_name("widget_of_the_future"), None);
    }

    #[test]
    fn every_event_type_belongs_to_one_kind() {
        let mut seen = std::collections::BTreeSet::new();
        for_each_kind!(K => {
            for t in K::UPSERTED_BY.iter().chain(K::DELETED_BY) {
                assert!(seen.insert(*t), "{t} is named by two kinds");
                assert_eq!(kind_of_event(t).map(|k| k.0), Some(K::TYPE));
            }
            for t in K::DERIVED_BY {
                assert!(seen.insert(*t), "{t} is named by two kinds");
                assert_eq!(kind_deriving(t), Some(K::TYPE));
                assert!(t.starts_with("clerkmirror."), "{t}: the mirror's own types are spelled apart from Clerk's");
            }
        });
        assert_eq!(kind_of_event("session.created"), None);
    }

    #[test]
    fn each_kind_has_its_own_wire_type_and_its_scope_columns_are_its_columns() {
        let mut wire = std::collections::BTreeSet::new();
        for_each_kind!(K => {
            assert!(wire.insert(K::WIRE_TYPE as i32), "{:?} twice", K::WIRE_TYPE);
            for column in [K::ORGANIZATION_COLUMN, K::USER_COLUMN].into_iter().flatten() {
                assert!(K::COLUMNS.split(',').any(|c| c.split_whitespace().next() == Some(column)), "{column}");
            }
        });
    }

    #[test]
    fn a_parents_column_is_one_of_the_kinds_columns() {
        for_each_kind!(K => {
            for (_, column) in K::PARENTS {
                assert!(K::COLUMNS.split(',').any(|c| c.split_whitespace().next() == Some(column)), "{column}");
            }
        });
    }

    /// The descriptors of `User` and `Organization` and of every message they hold, as a
    /// stable FNV-1a hash of their encodings.
    fn stored_messages_hash() -> u64 {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET).unwrap();
        let mut all = std::collections::BTreeMap::new();
        for file in &set.file {
            for m in &file.message_type {
                all.insert(format!(".{}.{}", file.package(), m.name()), m.clone());
            }
        }
        let mut todo = vec![".clerkmirror.v1.User".to_string(), ".clerkmirror.v1.Organization".to_string()];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let m = &all[&name];
            todo.extend(m.field.iter().filter_map(|f| f.type_name.clone()).filter(|t| all.contains_key(t)));
            todo.extend(m.nested_type.iter().map(|n| format!("{name}.{}", n.name())).filter(|t| all.contains_key(t)));
        }
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for name in &seen {
            for byte in name.bytes().chain(all[name].encode_to_vec()) {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }

    #[test]
    fn the_stored_messages_format_is_raised_when_their_descriptors_change() {
        // Stored messages (`Kind::STORES_MESSAGE`) are sent as they are: a row written with
        // another definition of these messages must not be read as this binary's.
        let hash = stored_messages_hash();
        assert_eq!(
            (MESSAGE_FORMAT, hash),
            (1, 0xd367_df4c_58b9_644e),
            "User, Organization or a message they hold changed: raise store::kind::MESSAGE_FORMAT, \
             then pin ({{new format}}, {hash:#x}) here"
        );
    }
}

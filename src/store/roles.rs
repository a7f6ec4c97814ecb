//! Roles and permissions: their records (from Clerk's `Role` and `Permission` objects, as the
//! webhooks and the Backend API send them), their `Kind`s, and their messages.
//!
//! A role keeps its permissions by id, with the key each had when the role was written: keys are
//! resolved through the permissions projection when read (a renamed permission shows its new
//! key, a deleted one is dropped; see `store::access` and the `role_view` of the migration).

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;

use super::convert::timestamp;
use super::fields::Field;
use super::kind::{AnyRecord, EntityType, Kind};
use super::records::{self, Record, RecordError, str_at as text, time_at as time};
use crate::pb::{self, cursor::Cursor};

/// A role as the `roles` projection keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct RoleRecord {
    pub id: String,
    /// The key memberships name it by; a tombstone keeps it.
    pub key: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub is_creator_eligible: bool,
    /// The ids of the permissions the role grants, in byte order, distinct.
    pub permission_ids: Vec<String>,
    /// The key each of `permission_ids` had when the role was written (same order).
    pub permission_keys: Vec<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub data: Option<Value>,
    /// The resolved keys, when read from `role_view` (not stored, not in the change log).
    #[sqlx(default)]
    #[serde(skip)]
    pub permissions: Option<Vec<String>>,
}

/// A permission as the `permissions` projection keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct PermissionRecord {
    pub id: String,
    pub key: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Clerk's `type`, as sent.
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub permission_type: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub data: Option<Value>,
}

impl Record for RoleRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for PermissionRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// `(id, key)` of each permission a role object lists: an object with an `id` (its key, empty if
/// none), or a bare key string (legacy: carried under a made-up id no permission has).
fn listed_permissions(data: &Value) -> Vec<(String, String)> {
    let Some(items) = data.get("permissions").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = items
        .iter()
        .filter_map(|p| match p {
            Value::String(key) if !key.is_empty() => Some((format!("key:{key}"), key.clone())),
            Value::Object(_) => match (text(p, "id"), text(p, "key")) {
                (Some(id), key) if records::is_valid_id(&id) => Some((id, key.unwrap_or_default())),
                (_, Some(key)) if !key.is_empty() => Some((format!("key:{key}"), key)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

impl RoleRecord {
    pub fn from_clerk(data: Value) -> Result<RoleRecord, RecordError> {
        let id = records::required_id(&data, "the role")?;
        let (permission_ids, permission_keys) = listed_permissions(&data).into_iter().unzip();
        Ok(RoleRecord {
            id,
            key: text(&data, "key"),
            name: text(&data, "name"),
            description: text(&data, "description"),
            is_creator_eligible: data.get("is_creator_eligible").and_then(Value::as_bool).unwrap_or(false),
            permission_ids,
            permission_keys,
            created_at: time(&data, "created_at"),
            updated_at: time(&data, "updated_at"),
            deleted_at: None,
            data: Some(data),
            permissions: None,
        })
    }

    /// What a tombstone keeps: the id, the key (members still naming it are denied) and the
    /// delete time.
    pub fn tombstone(id: String, key: Option<String>, deleted_at: DateTime<Utc>) -> RoleRecord {
        RoleRecord {
            id,
            key,
            name: None,
            description: None,
            is_creator_eligible: false,
            permission_ids: Vec::new(),
            permission_keys: Vec::new(),
            created_at: None,
            updated_at: None,
            deleted_at: Some(deleted_at),
            data: None,
            permissions: None,
        }
    }

    /// The keys a role grants without the permissions projection: the carried ones.
    pub fn carried_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.permission_keys.iter().filter(|k| !k.is_empty()).cloned().collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

impl PermissionRecord {
    pub fn from_clerk(data: Value) -> Result<PermissionRecord, RecordError> {
        Ok(PermissionRecord {
            id: records::required_id(&data, "the permission")?,
            key: text(&data, "key"),
            name: text(&data, "name"),
            description: text(&data, "description"),
            permission_type: text(&data, "type"),
            created_at: time(&data, "created_at"),
            updated_at: time(&data, "updated_at"),
            deleted_at: None,
            data: Some(data),
        })
    }

    /// What a tombstone keeps: the id, the key and the delete time.
    pub fn tombstone(id: String, key: Option<String>, deleted_at: DateTime<Utc>) -> PermissionRecord {
        PermissionRecord {
            id,
            key,
            name: None,
            description: None,
            permission_type: None,
            created_at: None,
            updated_at: None,
            deleted_at: Some(deleted_at),
            data: None,
        }
    }
}

/// A role as the API shows it, granting `permissions` (resolved keys).
pub fn role_message(r: &RoleRecord, permissions: Vec<String>, update_cursor: i64, log_id: &str) -> pb::Role {
    pb::Role {
        name: format!("roles/{}", r.id),
        id: r.id.clone(),
        key: r.key.clone().unwrap_or_default(),
        display_name: r.name.clone().unwrap_or_default(),
        description: r.description.clone().unwrap_or_default(),
        permissions,
        is_creator_eligible: r.is_creator_eligible,
        create_time: timestamp(r.created_at),
        update_time: timestamp(r.updated_at),
        delete_time: timestamp(r.deleted_at),
        update_cursor: Cursor::new(log_id, update_cursor).encode(),
        permission_ids: r.permission_ids.iter().filter(|id| !id.starts_with("key:")).cloned().collect(),
    }
}

pub fn permission_message(r: &PermissionRecord, update_cursor: i64, log_id: &str) -> pb::Permission {
    pb::Permission {
        name: format!("permissions/{}", r.id),
        id: r.id.clone(),
        key: r.key.clone().unwrap_or_default(),
        display_name: r.name.clone().unwrap_or_default(),
        description: r.description.clone().unwrap_or_default(),
        r#type: r.permission_type.clone().unwrap_or_default(),
        create_time: timestamp(r.created_at),
        update_time: timestamp(r.updated_at),
        delete_time: timestamp(r.deleted_at),
        update_cursor: Cursor::new(log_id, update_cursor).encode(),
    }
}

impl Kind for RoleRecord {
    const TYPE: EntityType = EntityType::Role;
    const TABLE: &'static str = "roles";
    const READ_FROM: &'static str = "role_view";
    const FIELDS: &'static [Field] = &[
        Field::text("id"),
        Field::text("key"),
        Field::text("display_name").column("name"),
        Field::text("description"),
        Field::text_list("permissions"),
        Field::text_list("permission_ids"),
        Field::boolean("is_creator_eligible"),
        Field::time("create_time").column("created_at"),
        Field::time("update_time").column("updated_at"),
        Field::time("delete_time").column("deleted_at"),
    ];
    const COLUMNS: &'static str = "id text, key text, name text, description text, is_creator_eligible boolean, \
         permission_ids text[], permission_keys text[], created_at timestamptz, updated_at timestamptz, \
         deleted_at timestamptz, data jsonb";
    const UPSERTED_BY: &'static [&'static str] = &["role.created", "role.updated"];
    const DELETED_BY: &'static [&'static str] = &["role.deleted"];
    const IN_EVERY_ORGANIZATION: bool = true;

    fn from_clerk(data: Value) -> Result<Self, RecordError> {
        RoleRecord::from_clerk(data)
    }
    /// A role's delete names only the role (`{"id", "object", "deleted"}`; the spec's example
    /// adds `slug: null`).
    fn from_delete(data: Value, at: DateTime<Utc>) -> Result<Self, RecordError> {
        let id = records::required_id(&data, "`role.deleted`")?;
        Ok(RoleRecord::tombstone(id, text(&data, "key"), at))
    }
    fn tombstone(&self, at: DateTime<Utc>) -> Self {
        RoleRecord::tombstone(self.id.clone(), self.key.clone(), at)
    }
    /// The stored key outlives the role (the delete does not carry it).
    fn delete_of(current: &Self, mut event: Self) -> Self {
        event.key = current.key.clone().or(event.key);
        event
    }
    /// A role deleted before its create (or an update) arrived learns its key from it: members
    /// still naming the key are then denied in every delivery order.
    /// Stores the written roles' resolved keys (`resolved_permissions`, read by the views).
    fn after_write<'a>(
        tx: &'a mut PgConnection,
        written: &'a [&'a Self],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        let ids: Vec<String> = written.iter().map(|r| r.id.clone()).collect();
        async move {
            sqlx::query(
                "UPDATE roles SET resolved_permissions = clerk_mirror_role_permissions(permission_ids, permission_keys)
                  WHERE id = ANY($1)",
            )
            .bind(ids)
            .execute(&mut *tx)
            .await
            .map(|_| ())
        }
    }
    fn learned(tombstone: &Self, late: &Self) -> Option<Self> {
        Some(RoleRecord {
            key: late.key.clone().or(tombstone.key.clone()),
            ..tombstone.clone()
        })
    }
    const TOMBSTONE_LEARNS: bool = true;
    const ADDED_LATER: bool = true;
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
        None
    }
    fn into_any(self) -> AnyRecord {
        AnyRecord::Role(self)
    }
    type Message = pb::Role;
    /// With the keys read from `role_view` when there, else the carried ones (a change's state:
    /// the watch resolves them against the replica's permissions).
    fn message(&self, update_cursor: i64, log_id: &str) -> pb::Role {
        let permissions = self.permissions.clone().unwrap_or_else(|| self.carried_keys());
        role_message(self, permissions, update_cursor, log_id)
    }
    fn message_deleted(message: &pb::Role) -> bool {
        message.delete_time.is_some()
    }
    fn without_cursor(message: pb::Role) -> pb::Role {
        pb::Role {
            update_cursor: String::new(),
            ..message
        }
    }
    const WIRE_TYPE: pb::EntityType = pb::EntityType::Role;
    fn change_entity(message: pb::Role) -> pb::change::Entity {
        pb::change::Entity::Role(message)
    }
    fn change_previous(message: pb::Role) -> pb::change::Previous {
        pb::change::Previous::PreviousRole(message)
    }
    const ORGANIZATION_COLUMN: Option<&'static str> = None;
    const USER_COLUMN: Option<&'static str> = None;
}

impl Kind for PermissionRecord {
    const TYPE: EntityType = EntityType::Permission;
    const TABLE: &'static str = "permissions";
    const FIELDS: &'static [Field] = &[
        Field::text("id"),
        Field::text("key"),
        Field::text("display_name").column("name"),
        Field::text("description"),
        Field::text("type"),
        Field::time("create_time").column("created_at"),
        Field::time("update_time").column("updated_at"),
        Field::time("delete_time").column("deleted_at"),
    ];
    const COLUMNS: &'static str = "id text, key text, name text, description text, type text, \
         created_at timestamptz, updated_at timestamptz, deleted_at timestamptz, data jsonb";
    const UPSERTED_BY: &'static [&'static str] = &["permission.created", "permission.updated"];
    const DELETED_BY: &'static [&'static str] = &["permission.deleted"];
    const IN_EVERY_ORGANIZATION: bool = true;

    fn from_clerk(data: Value) -> Result<Self, RecordError> {
        PermissionRecord::from_clerk(data)
    }
    fn from_delete(data: Value, at: DateTime<Utc>) -> Result<Self, RecordError> {
        let id = records::required_id(&data, "`permission.deleted`")?;
        Ok(PermissionRecord::tombstone(id, text(&data, "key"), at))
    }
    fn tombstone(&self, at: DateTime<Utc>) -> Self {
        PermissionRecord::tombstone(self.id.clone(), self.key.clone(), at)
    }
    fn delete_of(current: &Self, mut event: Self) -> Self {
        event.key = current.key.clone().or(event.key);
        event
    }
    /// A permission renamed or deleted changes the keys of every role granting it.
    fn after_write<'a>(
        tx: &'a mut PgConnection,
        written: &'a [&'a Self],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        let ids: Vec<String> = written.iter().map(|p| p.id.clone()).collect();
        async move {
            sqlx::query(
                "UPDATE roles SET resolved_permissions = clerk_mirror_role_permissions(permission_ids, permission_keys)
                  WHERE permission_ids && $1",
            )
            .bind(ids)
            .execute(&mut *tx)
            .await
            .map(|_| ())
        }
    }
    fn learned(tombstone: &Self, late: &Self) -> Option<Self> {
        Some(PermissionRecord {
            key: late.key.clone().or(tombstone.key.clone()),
            ..tombstone.clone()
        })
    }
    const TOMBSTONE_LEARNS: bool = true;
    const ADDED_LATER: bool = true;
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
        None
    }
    fn into_any(self) -> AnyRecord {
        AnyRecord::Permission(self)
    }
    type Message = pb::Permission;
    fn message(&self, update_cursor: i64, log_id: &str) -> pb::Permission {
        permission_message(self, update_cursor, log_id)
    }
    fn message_deleted(message: &pb::Permission) -> bool {
        message.delete_time.is_some()
    }
    fn without_cursor(message: pb::Permission) -> pb::Permission {
        pb::Permission {
            update_cursor: String::new(),
            ..message
        }
    }
    const WIRE_TYPE: pb::EntityType = pb::EntityType::Permission;
    fn change_entity(message: pb::Permission) -> pb::change::Entity {
        pb::change::Entity::Permission(message)
    }
    fn change_previous(message: pb::Permission) -> pb::change::Previous {
        pb::change::Previous::PreviousPermission(message)
    }
    const ORGANIZATION_COLUMN: Option<&'static str> = None;
    const USER_COLUMN: Option<&'static str> = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_role_keeps_its_permissions_by_id_with_their_keys_and_a_bare_key_under_a_made_up_id() {
        let r = RoleRecord::from_clerk(json!({
            "id": "role_1", "key": "org:editor", "name": "Editor", "description": null,
            "permissions": [
                {"object": "permission", "id": "perm_b", "key": "org:posts:edit"},
                {"object": "permission", "id": "perm_a", "key": "org:posts:create"},
                {"object": "permission", "id": "perm_a", "key": "org:posts:create"},
                "org:legacy:read", {"key": "org:no_id:read"}, {"id": "bad/id"}, 7
            ],
            "created_at": 2000, "updated_at": 1000
        }))
        .unwrap();
        assert_eq!(r.permission_ids, ["key:org:legacy:read", "key:org:no_id:read", "perm_a", "perm_b"]);
        assert_eq!(r.permission_keys, ["org:legacy:read", "org:no_id:read", "org:posts:create", "org:posts:edit"]);
        assert_eq!(r.description, None);
        let m = r.message(3, "log");
        assert_eq!(m.permission_ids, ["perm_a", "perm_b"], "made-up ids are not shown");
        assert_eq!(m.permissions.len(), 4);
        assert!(m.update_time.unwrap().seconds < m.create_time.unwrap().seconds, "Clerk's times are kept as sent");
    }

    #[test]
    fn a_role_tombstone_keeps_its_key_from_the_stored_role() {
        let at = records::time_from_ms(5000).unwrap();
        let stored = RoleRecord::from_clerk(json!({"id": "role_1", "key": "org:editor"})).unwrap();
        let event = <RoleRecord as Kind>::from_delete(json!({"id": "role_1", "deleted": true, "slug": null}), at).unwrap();
        let t = RoleRecord::delete_of(&stored, event);
        assert_eq!((t.key.as_deref(), t.deleted_at), (Some("org:editor"), Some(at)));
        assert!(t.permission_ids.is_empty() && t.data.is_none());
    }

    #[test]
    fn a_permission_keeps_clerks_type_as_sent() {
        let p = PermissionRecord::from_clerk(json!({"id": "perm_1", "key": "org:x:y", "type": "user"})).unwrap();
        assert_eq!(p.message(1, "log").r#type, "user");
        assert_eq!(serde_json::to_value(&p).unwrap()["type"], "user");
    }
}

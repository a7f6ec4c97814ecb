//! Organization invitations: the record (from Clerk's `OrganizationInvitation`, as the webhooks
//! and the Backend API send it), its `Kind`, its message, and the expiry the mirror derives.
//!
//! What Clerk sends, and what the mirror makes of it:
//! - `organizationInvitation.created`, `.accepted` and `.revoked` each carry the whole
//!   invitation; there is no delete event, and no event when an invitation expires. An
//!   invitation ends (a tombstone) only with its organization.
//! - The acceptance `url` carries a token. The inbox never keeps it (`inbox::redact` removes it
//!   before a body is stored), and the record removes it again from whatever it is given, so no
//!   column, change, message or log holds it.
//! - Expiry: when `expires_at` passes while Clerk's word is still `pending`, the applier-lock
//!   holder enqueues a row of source `clock` (type [`EXPIRED`], see `applier::expiry`) whose basis
//!   is the stored version; applied, it sets `status` to `expired` and keeps that version, so any
//!   later word of Clerk's replaces it. A state other than `pending` in Clerk's word (accepted,
//!   revoked, Clerk's own `expired`) only ever follows `pending`, so it ranks above it whatever
//!   its `updated_at` ([`Kind::precedence`]): the mirror's expiry never stands over it, in any
//!   delivery order. No `expires_at`: never expired by the mirror.
//! - A tombstone keeps what every version of an invitation shares (organization, address, role,
//!   expiry, creation), so it does not depend on which version arrived first.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::convert::{timestamp, to_struct};
use super::fields::Field;
use super::kind::{AnyRecord, EntityType, Kind};
use super::records::{self, Record, RecordError};
use crate::pb::{self, cursor::Cursor};

/// The type of the mirror's own expiry rows (source `clock`).
pub const EXPIRED: &str = "clerkmirror.invitation.expired";

/// Clerk's status of an invitation not yet answered.
pub const PENDING: &str = "pending";

/// An invitation as the `invitations` projection keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct InvitationRecord {
    pub id: String,
    pub organization_id: Option<String>,
    pub email_address: Option<String>,
    pub role: Option<String>,
    pub role_name: Option<String>,
    /// What the mirror shows: Clerk's status, or `expired` when the mirror expired it.
    pub status: Option<String>,
    /// Clerk's own word.
    pub clerk_status: Option<String>,
    pub user_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Clerk's object without its `url`.
    pub data: Option<Value>,
}

impl Record for InvitationRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

fn text(data: &Value, key: &str) -> Option<String> {
    data.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Removes every `url` member at any depth of `value` (the acceptance URL, and any nested copy
/// of the invitation); says whether it removed any.
pub fn remove_urls(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            let mut removed = map.remove("url").is_some();
            for v in map.values_mut() {
                removed |= remove_urls(v);
            }
            removed
        }
        Value::Array(items) => items.iter_mut().fold(false, |removed, v| remove_urls(v) | removed),
        _ => false,
    }
}

impl InvitationRecord {
    pub fn from_clerk(mut data: Value) -> Result<InvitationRecord, RecordError> {
        remove_urls(&mut data);
        let id = records::required_id(&data, "the invitation")?;
        // The spec nests the organization's data under `data.data`; the SDK puts it at the top.
        let organization_id = text(&data, "organization_id")
            .or_else(|| data.get("public_organization_data").and_then(|o| text(o, "id")))
            .or_else(|| {
                data.get("data")
                    .and_then(|d| d.get("public_organization_data"))
                    .and_then(|o| text(o, "id"))
            })
            .filter(|o| records::is_valid_id(o));
        let status = text(&data, "status");
        let time = |key: &str| records::ms_at(&data, key).and_then(records::time_from_ms);
        Ok(InvitationRecord {
            id,
            organization_id,
            email_address: text(&data, "email_address"),
            role: text(&data, "role"),
            role_name: text(&data, "role_name"),
            status: status.clone(),
            clerk_status: status,
            user_id: text(&data, "user_id").filter(|u| records::is_valid_id(u)),
            expires_at: time("expires_at"),
            created_at: time("created_at"),
            updated_at: time("updated_at"),
            deleted_at: None,
            data: Some(data),
        })
    }

    /// Whether the mirror expired it (Clerk still says pending).
    pub fn expired_by_mirror(&self) -> bool {
        self.status.as_deref() == Some("expired") && self.clerk_status.as_deref() == Some(PENDING)
    }
}

impl Kind for InvitationRecord {
    const TYPE: EntityType = EntityType::Invitation;
    const TABLE: &'static str = "invitations";
    const FIELDS: &'static [Field] = &[
        Field::text("id"),
        Field::text("organization_id"),
        Field::folded_text("email_address"),
        Field::text("role"),
        Field::text("role_name"),
        Field::text("status"),
        Field::text("user_id"),
        Field::time("expire_time").column("expires_at"),
        Field::time("create_time").column("created_at"),
        Field::time("update_time").column("updated_at"),
        Field::time("delete_time").column("deleted_at"),
        Field::json("public_metadata"),
        Field::json("private_metadata"),
    ];
    const COLUMNS: &'static str = "id text, organization_id text, email_address text, role text, role_name text, \
         status text, clerk_status text, user_id text, expires_at timestamptz, created_at timestamptz, \
         updated_at timestamptz, deleted_at timestamptz, data jsonb";
    const UPSERTED_BY: &'static [&'static str] = &[
        "organizationInvitation.created",
        "organizationInvitation.accepted",
        "organizationInvitation.revoked",
    ];
    /// Clerk deletes no invitation; one ends with its organization.
    const DELETED_BY: &'static [&'static str] = &[];
    const DERIVED_BY: &'static [&'static str] = &[EXPIRED];
    const PARENTS: &'static [(EntityType, &'static str)] = &[(EntityType::Organization, "organization_id")];
    const ADDED_LATER: bool = true;

    fn from_clerk(data: Value) -> Result<Self, RecordError> {
        InvitationRecord::from_clerk(data)
    }
    /// No event deletes an invitation; a delete-shaped body (a repair) names the invitation.
    fn from_delete(data: Value, at: DateTime<Utc>) -> Result<Self, RecordError> {
        Ok(InvitationRecord::from_clerk(data)?.tombstone(at))
    }
    /// What every version of the invitation shares, deleted at `at`.
    fn tombstone(&self, at: DateTime<Utc>) -> Self {
        InvitationRecord {
            id: self.id.clone(),
            organization_id: self.organization_id.clone(),
            email_address: self.email_address.clone(),
            role: self.role.clone(),
            role_name: self.role_name.clone(),
            status: None,
            clerk_status: None,
            user_id: None,
            expires_at: self.expires_at,
            created_at: self.created_at,
            updated_at: None,
            deleted_at: Some(at),
            data: None,
        }
    }
    fn precedence(&self) -> u8 {
        match self.clerk_status.as_deref() {
            None | Some(PENDING) => 0,
            Some(_) => 1,
        }
    }
    /// Clerk's pending, under the mirror's expiry.
    fn underived(&self) -> Option<Self> {
        self.expired_by_mirror().then(|| InvitationRecord {
            status: self.clerk_status.clone(),
            ..self.clone()
        })
    }
    /// Expired, from Clerk's pending with the expiry the row names.
    fn derive(current: &Self, event_type: &str, data: &Value) -> Option<Self> {
        let expires_at = records::ms_at(data, "expires_at").and_then(records::time_from_ms);
        let holds = event_type == EXPIRED
            && current.clerk_status.as_deref() == Some(PENDING)
            && current.status.as_deref() == Some(PENDING)
            && current.expires_at.is_some()
            && current.expires_at == expires_at;
        holds.then(|| InvitationRecord {
            status: Some("expired".into()),
            ..current.clone()
        })
    }
    fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.deleted_at
    }
    fn set_deleted_at(&mut self, at: DateTime<Utc>) {
        self.deleted_at = Some(at);
    }
    fn parent(&self, parent: EntityType) -> Option<&str> {
        (parent == EntityType::Organization)
            .then_some(self.organization_id.as_deref())
            .flatten()
    }
    fn organization_id(&self) -> Option<String> {
        self.organization_id.clone()
    }
    fn user_id(&self) -> Option<String> {
        None
    }
    fn into_any(self) -> AnyRecord {
        AnyRecord::Invitation(self)
    }
    type Message = pb::Invitation;
    fn message(&self, update_cursor: i64, log_id: &str) -> pb::Invitation {
        let organization = self.organization_id.clone().unwrap_or_default();
        let data = self.data.as_ref();
        pb::Invitation {
            name: format!(
                "organizations/{}/invitations/{}",
                if organization.is_empty() { "-" } else { &organization },
                self.id
            ),
            id: self.id.clone(),
            organization_id: organization,
            email_address: self.email_address.clone().unwrap_or_default(),
            role: self.role.clone().unwrap_or_default(),
            role_name: self.role_name.clone().unwrap_or_default(),
            status: self.status.clone().unwrap_or_default(),
            public_metadata: to_struct(data.and_then(|d| d.get("public_metadata"))),
            private_metadata: to_struct(data.and_then(|d| d.get("private_metadata"))),
            expire_time: timestamp(self.expires_at),
            create_time: timestamp(self.created_at),
            update_time: timestamp(self.updated_at),
            delete_time: timestamp(self.deleted_at),
            update_cursor: Cursor::new(log_id, update_cursor).encode(),
            user_id: self.user_id.clone().unwrap_or_default(),
            expired_by_mirror: self.expired_by_mirror(),
        }
    }
    fn message_deleted(message: &pb::Invitation) -> bool {
        message.delete_time.is_some()
    }
    fn without_cursor(message: pb::Invitation) -> pb::Invitation {
        pb::Invitation {
            update_cursor: String::new(),
            ..message
        }
    }
    const WIRE_TYPE: pb::EntityType = pb::EntityType::Invitation;
    fn change_entity(message: pb::Invitation) -> pb::change::Entity {
        pb::change::Entity::Invitation(message)
    }
    fn change_previous(message: pb::Invitation) -> pb::change::Previous {
        pb::change::Previous::PreviousInvitation(message)
    }
    const ORGANIZATION_COLUMN: Option<&'static str> = Some("organization_id");
    const USER_COLUMN: Option<&'static str> = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn invitation(status: &str, updated: i64) -> InvitationRecord {
        InvitationRecord::from_clerk(json!({
            "id": "orginv_1", "organization_id": "org_1", "email_address": "Jane@Acme.com", "role": "org:member",
            "status": status, "url": "https://accounts.example/accept?token=secret", "expires_at": 2000,
            "created_at": 1000, "updated_at": updated,
            "data": {"public_organization_data": {"id": "org_1"}, "url": "https://x/?ticket=secret"}
        }))
        .unwrap()
    }

    #[test]
    fn the_acceptance_url_is_removed_at_every_depth() {
        let r = invitation("pending", 1000);
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(!text.contains("\"url\""), "{text}");
        assert_eq!(r.email_address.as_deref(), Some("Jane@Acme.com"));
    }

    #[test]
    fn the_organization_is_read_from_where_the_spec_or_the_sdk_puts_it() {
        let nested = InvitationRecord::from_clerk(json!({"id": "orginv_1", "data": {"public_organization_data": {"id": "org_9"}}}));
        assert_eq!(nested.unwrap().organization_id.as_deref(), Some("org_9"));
        let top = InvitationRecord::from_clerk(json!({"id": "orginv_1", "public_organization_data": {"id": "org_8"}}));
        assert_eq!(top.unwrap().organization_id.as_deref(), Some("org_8"));
    }

    #[test]
    fn only_a_pending_invitation_with_the_named_expiry_is_expired_and_clerks_answers_outrank_pending() {
        let pending = invitation("pending", 1000);
        let expired = InvitationRecord::derive(&pending, EXPIRED, &json!({"expires_at": 2000})).unwrap();
        assert_eq!(expired.status.as_deref(), Some("expired"));
        assert!(expired.expired_by_mirror());
        assert_eq!(expired.precedence(), pending.precedence(), "the expiry keeps its basis' rank");
        assert!(InvitationRecord::derive(&pending, EXPIRED, &json!({"expires_at": 3000})).is_none());
        assert!(InvitationRecord::derive(&expired, EXPIRED, &json!({"expires_at": 2000})).is_none());
        for answered in ["accepted", "revoked", "expired", "some_new_status"] {
            let r = invitation(answered, 500);
            assert!(r.precedence() > pending.precedence(), "{answered}");
            assert!(InvitationRecord::derive(&r, EXPIRED, &json!({"expires_at": 2000})).is_none());
        }
        let mut no_expiry = pending.clone();
        no_expiry.expires_at = None;
        assert!(InvitationRecord::derive(&no_expiry, EXPIRED, &json!({"expires_at": null})).is_none());
    }
}

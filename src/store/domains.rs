//! Organization domains: the record (from Clerk's `OrganizationDomain`, as the webhooks and the
//! Backend API send it), its `Kind` and its message.
//!
//! What Clerk sends, and what the mirror makes of it:
//! - a domain's delete is a DeletedObject naming only the domain: the tombstone keeps the
//!   organization the mirror held, and learns it from a create or update that arrives after the
//!   delete, so every delivery order ends alike;
//! - "verified" is the *affiliation* verification's status (`affiliation_verification.status`,
//!   or the deprecated `verification.status` it replaces, which webhooks still send); the
//!   ownership (DNS) verification is kept in `data` but does not decide `verification_status`;
//! - the domain name is compared in lower case (`domain`), as DNS names are.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::convert::timestamp;
use super::fields::Field;
use super::kind::{AnyRecord, EntityType, Kind};
use super::records::{self, Record, RecordError, str_at as text};
use crate::pb::{self, cursor::Cursor};

/// A domain as the `domains` projection keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct DomainRecord {
    pub id: String,
    pub organization_id: Option<String>,
    /// The domain name, in lower case.
    pub domain: Option<String>,
    pub enrollment_mode: Option<String>,
    pub verification_status: Option<String>,
    pub affiliation_email_address: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub data: Option<Value>,
}

impl Record for DomainRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The affiliation verification's status: `affiliation_verification`, else the deprecated
/// `verification` (an explicit null in the first falls back to the second).
fn verification_status(data: &Value) -> Option<String> {
    ["affiliation_verification", "verification"]
        .iter()
        .find_map(|k| data.get(*k).and_then(|v| v.get("status")).and_then(Value::as_str))
        .map(str::to_string)
}

impl DomainRecord {
    pub fn from_clerk(data: Value) -> Result<DomainRecord, RecordError> {
        let id = records::required_id(&data, "the domain")?;
        let organization_id = text(&data, "organization_id")
            .or_else(|| data.get("public_organization_data").and_then(|o| text(o, "id")))
            .filter(|o| records::is_valid_id(o));
        Ok(DomainRecord {
            id,
            organization_id,
            domain: text(&data, "name").map(|d| d.to_lowercase()),
            enrollment_mode: text(&data, "enrollment_mode"),
            verification_status: verification_status(&data),
            affiliation_email_address: text(&data, "affiliation_email_address"),
            created_at: records::ms_at(&data, "created_at").and_then(records::time_from_ms),
            updated_at: records::ms_at(&data, "updated_at").and_then(records::time_from_ms),
            deleted_at: None,
            data: Some(data),
        })
    }

    /// What a tombstone keeps: the id, the organization and the delete time.
    pub fn tombstone(id: String, organization_id: Option<String>, deleted_at: DateTime<Utc>) -> DomainRecord {
        DomainRecord {
            id,
            organization_id,
            domain: None,
            enrollment_mode: None,
            verification_status: None,
            affiliation_email_address: None,
            created_at: None,
            updated_at: None,
            deleted_at: Some(deleted_at),
            data: None,
        }
    }
}

impl Kind for DomainRecord {
    const TYPE: EntityType = EntityType::Domain;
    const TABLE: &'static str = "domains";
    const FIELDS: &'static [Field] = &[
        Field::text("id"),
        Field::text("organization_id"),
        Field::text("domain"),
        Field::text("enrollment_mode"),
        Field::text("verification_status"),
        Field::text("affiliation_email_address"),
        Field::time("create_time").column("created_at"),
        Field::time("update_time").column("updated_at"),
        Field::time("delete_time").column("deleted_at"),
    ];
    const COLUMNS: &'static str = "id text, organization_id text, domain text, enrollment_mode text, \
         verification_status text, affiliation_email_address text, created_at timestamptz, updated_at timestamptz, \
         deleted_at timestamptz, data jsonb";
    const UPSERTED_BY: &'static [&'static str] = &["organizationDomain.created", "organizationDomain.updated"];
    const DELETED_BY: &'static [&'static str] = &["organizationDomain.deleted"];
    const PARENTS: &'static [(EntityType, &'static str)] = &[(EntityType::Organization, "organization_id")];
    const TOMBSTONE_LEARNS: bool = true;
    const ADDED_LATER: bool = true;

    fn from_clerk(data: Value) -> Result<Self, RecordError> {
        DomainRecord::from_clerk(data)
    }
    /// The delete names only the domain.
    fn from_delete(data: Value, at: DateTime<Utc>) -> Result<Self, RecordError> {
        let id = records::required_id(&data, "`organizationDomain.deleted`")?;
        let organization_id = text(&data, "organization_id").filter(|o| records::is_valid_id(o));
        Ok(DomainRecord::tombstone(id, organization_id, at))
    }
    fn tombstone(&self, at: DateTime<Utc>) -> Self {
        DomainRecord::tombstone(self.id.clone(), self.organization_id.clone(), at)
    }
    /// The stored organization outlives the domain (its delete does not say it).
    fn delete_of(current: &Self, mut event: Self) -> Self {
        event.organization_id = current.organization_id.clone().or(event.organization_id);
        event
    }
    /// A domain deleted before its create arrived learns its organization from it.
    fn learned(tombstone: &Self, late: &Self) -> Option<Self> {
        Some(DomainRecord {
            organization_id: late.organization_id.clone().or(tombstone.organization_id.clone()),
            ..tombstone.clone()
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
        AnyRecord::Domain(self)
    }
    type Message = pb::Domain;
    fn message(&self, update_cursor: i64, log_id: &str) -> pb::Domain {
        let organization = self.organization_id.clone().unwrap_or_default();
        pb::Domain {
            // A tombstone whose organization the mirror never knew sits under `organizations/-`.
            name: format!(
                "organizations/{}/domains/{}",
                if organization.is_empty() { "-" } else { &organization },
                self.id
            ),
            id: self.id.clone(),
            organization_id: organization,
            domain: self.domain.clone().unwrap_or_default(),
            enrollment_mode: self.enrollment_mode.clone().unwrap_or_default(),
            verification_status: self.verification_status.clone().unwrap_or_default(),
            affiliation_email_address: self.affiliation_email_address.clone().unwrap_or_default(),
            create_time: timestamp(self.created_at),
            update_time: timestamp(self.updated_at),
            delete_time: timestamp(self.deleted_at),
            update_cursor: Cursor::new(log_id, update_cursor).encode(),
        }
    }
    fn message_deleted(message: &pb::Domain) -> bool {
        message.delete_time.is_some()
    }
    fn without_cursor(message: pb::Domain) -> pb::Domain {
        pb::Domain {
            update_cursor: String::new(),
            ..message
        }
    }
    const WIRE_TYPE: pb::EntityType = pb::EntityType::Domain;
    fn change_entity(message: pb::Domain) -> pb::change::Entity {
        pb::change::Entity::Domain(message)
    }
    fn change_previous(message: pb::Domain) -> pb::change::Previous {
        pb::change::Previous::PreviousDomain(message)
    }
    const ORGANIZATION_COLUMN: Option<&'static str> = Some("organization_id");
    const USER_COLUMN: Option<&'static str> = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_affiliation_verification_decides_verified_and_the_deprecated_field_still_counts() {
        let d = |v: Value| DomainRecord::from_clerk(v).unwrap().verification_status;
        assert_eq!(d(json!({"id": "orgdmn_1", "verification": {"status": "verified"}})).as_deref(), Some("verified"));
        assert_eq!(
            d(json!({"id": "orgdmn_1", "affiliation_verification": {"status": "unverified"}, "verification": {"status": "verified"},
                     "ownership_verification": {"status": "verified"}})).as_deref(),
            Some("unverified")
        );
        assert_eq!(d(json!({"id": "orgdmn_1", "affiliation_verification": null, "verification": {"status": "failed"}})).as_deref(), Some("failed"));
        assert_eq!(d(json!({"id": "orgdmn_1", "verification": null})), None);
    }

    #[test]
    fn a_domain_is_kept_in_lower_case_under_its_organization_and_its_delete_keeps_the_organization() {
        let stored = DomainRecord::from_clerk(json!({"id": "orgdmn_1", "name": "Acme.COM",
            "public_organization_data": {"id": "org_1"}}))
        .unwrap();
        assert_eq!((stored.domain.as_deref(), stored.organization_id.as_deref()), (Some("acme.com"), Some("org_1")));
        let at = records::time_from_ms(9).unwrap();
        let event = <DomainRecord as Kind>::from_delete(json!({"id": "orgdmn_1", "deleted": true}), at).unwrap();
        assert_eq!(event.message(1, "log").name, "organizations/-/domains/orgdmn_1");
        let t = DomainRecord::delete_of(&stored, event);
        assert_eq!(t.organization_id.as_deref(), Some("org_1"));
        assert_eq!(t.message(1, "log").name, "organizations/org_1/domains/orgdmn_1");
    }
}

//! Turns one inbox row into what the applier does with it: an upsert or a delete of one entity,
//! a skip (a type the mirror does not apply), or an error (a dead letter). Parsing is lenient:
//! a missing optional field or `null` metadata never dead-letters an event.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::ingest::envelope;
use crate::store::records::{self, MembershipRecord, OrganizationRecord, UserRecord, Version};

/// The inbox columns the applier reads.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxEvent {
    pub id: i64,
    pub source: String,
    pub event_key: String,
    pub event_type: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub body: Option<Vec<u8>>,
}

impl InboxEvent {
    /// What a change made by this row names as its source: `webhook:<svix-id>` and so on.
    pub fn change_source(&self) -> String {
        format!("{}:{}", self.source, self.event_key)
    }
}

/// What one event asks of the projections.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    UpsertUser(UserRecord, Version),
    DeleteUser {
        id: String,
        external_id: Option<String>,
        at: DateTime<Utc>,
    },
    UpsertOrganization(OrganizationRecord, Version),
    DeleteOrganization {
        id: String,
        at: DateTime<Utc>,
    },
    UpsertMembership(MembershipRecord, Version),
    DeleteMembership {
        id: String,
        organization_id: String,
        user_id: String,
        at: DateTime<Utc>,
    },
    /// Stored, not applied (session.*, billing, unknown types, …).
    Skip,
}

/// Why a verified event cannot be applied (recorded on its dead letter).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl From<records::RecordError> for ParseError {
    fn from(e: records::RecordError) -> Self {
        ParseError(e.0)
    }
}

/// The event types the mirror applies.
pub const APPLIED_TYPES: [&str; 9] = [
    "user.created",
    "user.updated",
    "user.deleted",
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "organizationMembership.created",
    "organizationMembership.updated",
    "organizationMembership.deleted",
];

/// The strings at the places an event names ids: `id`, `organization.id`, `organization_id`,
/// `public_user_data.user_id`, `user_id`.
fn id_paths(data: &Value) -> impl Iterator<Item = &str> {
    [
        data.get("id"),
        data.get("organization").and_then(|o| o.get("id")),
        data.get("organization_id"),
        data.get("public_user_data").and_then(|u| u.get("user_id")),
        data.get("user_id"),
    ]
    .into_iter()
    .filter_map(|v| v?.as_str())
}

/// Decides what `event` asks for.
pub fn parse(event: &InboxEvent) -> Result<Action, ParseError> {
    let Some(event_type) = event.event_type.as_deref().filter(|t| APPLIED_TYPES.contains(t)) else {
        return Ok(Action::Skip);
    };
    let body = event
        .body
        .as_deref()
        .ok_or_else(|| ParseError(format!("`{event_type}` stored without its body")))?;
    let envelope: Value = serde_json::from_slice(body).map_err(|e| ParseError(format!("the body is not JSON: {e}")))?;
    let data = match envelope.get("data") {
        // Cleaning removes NUL characters, which would silently turn a bad id into another one.
        Some(d @ Value::Object(_)) if id_paths(d).any(|id| id.contains('\0')) => {
            return Err(ParseError(format!("`{event_type}` has an invalid id: it contains NUL")));
        }
        Some(d @ Value::Object(_)) => records::clean(d.clone()),
        _ => return Err(ParseError(format!("`{event_type}` has no `data` object"))),
    };
    // The envelope timestamp (ms; seconds below 10^12); the arrival time when absent.
    let event_time = envelope
        .get("timestamp")
        .and_then(envelope::event_time)
        .or(event.event_time)
        .unwrap_or(event.received_at);
    let version = |data: &Value| Version {
        updated_ms: records::ms_at(data, "updated_at").unwrap_or(0),
        event_ms: event_time.timestamp_millis(),
        key: event.event_key.clone(),
    };
    let id = || records::required_id(&data, &format!("`{event_type}`")).map_err(ParseError::from);
    Ok(match event_type {
        "user.created" | "user.updated" => {
            let v = version(&data);
            Action::UpsertUser(UserRecord::from_clerk(data)?, v)
        }
        "user.deleted" => Action::DeleteUser {
            id: id()?,
            external_id: data.get("external_id").and_then(Value::as_str).map(str::to_string),
            at: event_time,
        },
        "organization.created" | "organization.updated" => {
            let v = version(&data);
            Action::UpsertOrganization(OrganizationRecord::from_clerk(data)?, v)
        }
        "organization.deleted" => Action::DeleteOrganization {
            id: id()?,
            at: event_time,
        },
        "organizationMembership.created" | "organizationMembership.updated" => {
            let v = version(&data);
            Action::UpsertMembership(MembershipRecord::from_clerk(data)?, v)
        }
        // The deleted membership is a full object whose `updated_at` is not the delete time: the
        // type decides, and the envelope timestamp is when it ended.
        "organizationMembership.deleted" => {
            let m = MembershipRecord::from_clerk(data)?;
            Action::DeleteMembership {
                id: m.id,
                organization_id: m.organization_id,
                user_id: m.user_id,
                at: event_time,
            }
        }
        _ => Action::Skip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(event_type: &str, body: Value) -> InboxEvent {
        InboxEvent {
            id: 1,
            source: "webhook".into(),
            event_key: "msg_1".into(),
            event_type: Some(event_type.into()),
            event_time: None,
            received_at: Utc::now(),
            body: Some(body.to_string().into_bytes()),
        }
    }

    #[test]
    fn a_session_event_with_an_embedded_user_is_skipped() {
        let r = row(
            "session.created",
            json!({"type": "session.created", "data": {"user": {"id": "user_1"}}}),
        );
        assert_eq!(parse(&r), Ok(Action::Skip));
    }

    #[test]
    fn a_membership_delete_takes_the_envelope_time_not_updated_at() {
        let r = row(
            "organizationMembership.deleted",
            json!({"type": "organizationMembership.deleted", "timestamp": 1767225900000i64, "data": {
                "id": "orgmem_1", "organization": {"id": "org_1"}, "public_user_data": {"user_id": "user_1"},
                "updated_at": 1767225600000i64}}),
        );
        let Ok(Action::DeleteMembership { at, .. }) = parse(&r) else {
            panic!()
        };
        assert_eq!(at.timestamp_millis(), 1767225900000);
    }

    #[test]
    fn null_metadata_and_missing_optional_fields_do_not_fail_an_event() {
        let r = row(
            "user.created",
            json!({"type": "user.created", "data": {"id": "user_1", "private_metadata": null}}),
        );
        let Ok(Action::UpsertUser(u, v)) = parse(&r) else {
            panic!()
        };
        assert_eq!(u.data.unwrap()["private_metadata"], json!({}));
        assert_eq!(v.updated_ms, 0);
    }

    #[test]
    fn an_applied_type_without_data_is_a_dead_letter() {
        assert!(parse(&row("user.updated", json!({"type": "user.updated"}))).is_err());
        assert!(
            parse(&row(
                "user.deleted",
                json!({"type": "user.deleted", "data": {"deleted": true}})
            ))
            .is_err()
        );
        assert!(
            parse(&row(
                "organizationMembership.created",
                json!({"data": {"id": "orgmem_1"}})
            ))
            .is_err()
        );
    }
}

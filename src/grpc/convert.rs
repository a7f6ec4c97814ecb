//! Projection records → protobuf messages (`User`, `Organization`, `Membership`), with metadata as
//! `google.protobuf.Struct` and times as `google.protobuf.Timestamp`.

use chrono::{DateTime, Utc};
use prost_types::value::Kind;
use serde_json::Value;

use super::cursor::Cursor;
use crate::pb;
use crate::store::{MembershipRecord, OrganizationRecord, UserRecord};

/// JSON → `google.protobuf.Value`.
pub fn to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object → `google.protobuf.Struct` (anything else → absent).
pub fn to_struct(v: Option<&Value>) -> Option<prost_types::Struct> {
    match v? {
        Value::Object(map) => Some(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }),
        _ => None,
    }
}

pub fn timestamp(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

fn text(v: Option<&Value>, key: &str) -> String {
    v.and_then(|v| v.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn verification_status(entry: &Value) -> String {
    text(entry.get("verification"), "status")
}

/// A user as the API shows it; `update_cursor` is the seq of the change that last touched it.
pub fn user(r: &UserRecord, update_cursor: i64, log_id: &str) -> pb::User {
    let data = r.data.as_ref();
    let list = |key: &str| {
        data.and_then(|d| d.get(key))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    pb::User {
        name: format!("users/{}", r.id),
        id: r.id.clone(),
        external_id: r.external_id.clone().unwrap_or_default(),
        username: r.username.clone().unwrap_or_default(),
        first_name: r.first_name.clone().unwrap_or_default(),
        last_name: r.last_name.clone().unwrap_or_default(),
        image_url: r.image_url.clone().unwrap_or_default(),
        primary_email_address: r.primary_email_address.clone().unwrap_or_default(),
        email_addresses: list("email_addresses")
            .iter()
            .map(|e| pb::EmailAddress {
                id: text(Some(e), "id"),
                email_address: text(Some(e), "email_address"),
                verification_status: verification_status(e),
            })
            .collect(),
        phone_numbers: list("phone_numbers")
            .iter()
            .map(|p| pb::PhoneNumber {
                id: text(Some(p), "id"),
                phone_number: text(Some(p), "phone_number"),
                verification_status: verification_status(p),
            })
            .collect(),
        public_metadata: to_struct(data.and_then(|d| d.get("public_metadata"))),
        private_metadata: to_struct(data.and_then(|d| d.get("private_metadata"))),
        unsafe_metadata: to_struct(data.and_then(|d| d.get("unsafe_metadata"))),
        banned: r.banned,
        locked: r.locked,
        create_time: timestamp(r.created_at),
        update_time: timestamp(r.updated_at),
        last_sign_in_time: timestamp(r.last_sign_in_at),
        delete_time: timestamp(r.deleted_at),
        update_cursor: Cursor::new(log_id, update_cursor).encode(),
    }
}

pub fn organization(r: &OrganizationRecord, update_cursor: i64, log_id: &str) -> pb::Organization {
    let data = r.data.as_ref();
    pb::Organization {
        name: format!("organizations/{}", r.id),
        id: r.id.clone(),
        display_name: r.name.clone().unwrap_or_default(),
        slug: r.slug.clone().unwrap_or_default(),
        image_url: r.image_url.clone().unwrap_or_default(),
        members_count: r.members_count.unwrap_or_default(),
        public_metadata: to_struct(data.and_then(|d| d.get("public_metadata"))),
        private_metadata: to_struct(data.and_then(|d| d.get("private_metadata"))),
        create_time: timestamp(r.created_at),
        update_time: timestamp(r.updated_at),
        delete_time: timestamp(r.deleted_at),
        update_cursor: Cursor::new(log_id, update_cursor).encode(),
    }
}

pub fn membership(r: &MembershipRecord, update_cursor: i64, log_id: &str) -> pb::Membership {
    let data = r.data.as_ref();
    let org = data.and_then(|d| d.get("organization"));
    let user = data.and_then(|d| d.get("public_user_data"));
    pb::Membership {
        name: format!("organizations/{}/memberships/{}", r.organization_id, r.id),
        id: r.id.clone(),
        organization_id: r.organization_id.clone(),
        user_id: r.user_id.clone(),
        role: r.role.clone().unwrap_or_default(),
        role_name: r.role_name.clone().unwrap_or_default(),
        permissions: r.permissions.clone(),
        public_metadata: to_struct(data.and_then(|d| d.get("public_metadata"))),
        private_metadata: to_struct(data.and_then(|d| d.get("private_metadata"))),
        organization: org.map(|o| pb::OrganizationSummary {
            id: text(Some(o), "id"),
            display_name: text(Some(o), "name"),
            slug: text(Some(o), "slug"),
            image_url: text(Some(o), "image_url"),
        }),
        public_user_data: user.map(|u| pb::PublicUserData {
            user_id: text(Some(u), "user_id"),
            first_name: text(Some(u), "first_name"),
            last_name: text(Some(u), "last_name"),
            image_url: text(Some(u), "image_url"),
            identifier: text(Some(u), "identifier"),
            username: text(Some(u), "username"),
        }),
        create_time: timestamp(r.created_at),
        update_time: timestamp(r.updated_at),
        delete_time: timestamp(r.deleted_at),
        update_cursor: Cursor::new(log_id, update_cursor).encode(),
    }
}

//! Projection records → protobuf messages (`User`, `Organization`, `Membership`), with metadata as
//! `google.protobuf.Struct` and times as `google.protobuf.Timestamp`.

use serde_json::Value;

use super::{MembershipRecord, OrganizationRecord, UserRecord};
pub use crate::pb::json::{MAX_STRUCT_DEPTH, timestamp, to_struct, to_value};
use crate::pb::{self, cursor::Cursor};

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
        permissions_source: r.permissions_source.as_deref().map_or(0, |s| permissions_source(s) as i32),
    }
}

/// The API's name of where a membership's permissions come from (`membership_view`'s words).
pub fn permissions_source(source: &str) -> pb::PermissionsSource {
    match source {
        "role" => pb::PermissionsSource::Role,
        "membership_snapshot" => pb::PermissionsSource::MembershipSnapshot,
        "deleted_role" => pb::PermissionsSource::DeletedRole,
        _ => pb::PermissionsSource::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use serde_json::json;

    use prost_types::value::Kind;

    use super::*;

    /// `{"a": {"a": … "bottom" …}}`, `depth` objects deep.
    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!("bottom"), |inner, _| json!({ "a": inner }))
    }

    #[test]
    fn deeply_nested_metadata_reaches_clients_that_decode_with_the_usual_recursion_limit() {
        let data = json!({"id": "user_1", "public_metadata": nested(120), "unsafe_metadata": {"list": [[[[[[1]]]]]]}});
        let user = user(&UserRecord::from_clerk(data).unwrap(), 7, "log");
        let response = pb::WatchChangesResponse {
            event: Some(pb::watch_changes_response::Event::Change(pb::Change {
                entity: Some(pb::change::Entity::User(user.clone())),
                previous: Some(pb::change::Previous::PreviousUser(user)),
                ..Default::default()
            })),
        };
        // prost stops at depth 100, as protobuf's C++, Java and Python runtimes do.
        let decoded = pb::WatchChangesResponse::decode(response.encode_to_vec().as_slice()).expect("decodes");
        let Some(pb::watch_changes_response::Event::Change(change)) = decoded.event else {
            panic!()
        };
        let Some(pb::change::Entity::User(user)) = change.entity else {
            panic!()
        };
        // Twenty levels as Structs, then the rest as its JSON text: nothing is lost.
        let mut level = user.public_metadata.unwrap().fields["a"].clone();
        for _ in 1..MAX_STRUCT_DEPTH {
            let Some(Kind::StructValue(s)) = level.kind else {
                panic!("{level:?}")
            };
            level = s.fields["a"].clone();
        }
        let Some(Kind::StringValue(rest)) = level.kind else {
            panic!("{level:?}")
        };
        assert_eq!(
            serde_json::from_str::<Value>(&rest).unwrap(),
            nested(120 - MAX_STRUCT_DEPTH)
        );
        // Shallow metadata is untouched.
        let list = &user.unsafe_metadata.unwrap().fields["list"];
        assert!(matches!(list.kind, Some(Kind::ListValue(_))));
    }
}

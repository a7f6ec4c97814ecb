//! `DirectoryService` through the generated client: gets, batch gets, lookups, every error code
//! with its `ErrorInfo`, cursors, and large users round-tripping intact.

use clerk_mirror::grpc::cursor::Cursor;
use clerk_mirror::pb;
use clerk_mirror::pb::directory_service_client::DirectoryServiceClient;
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::events::*;
use crate::helpers::*;

async fn client(app: &TestApp) -> DirectoryServiceClient<Channel> {
    DirectoryServiceClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .expect("connect")
}

/// Asserts a status's code and its ErrorInfo reason (domain `clerkmirror`).
pub(crate) fn assert_error(status: &tonic::Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        (reason, "clerkmirror"),
        "{status:?}"
    );
}

/// A story: two users, an org, a membership; user_z2 then deleted.
async fn seeded() -> TestApp {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        user_event("created", "user_z1", T, T, "Zed"),
        user_event("created", "user_z2", T, T, "Zoe"),
        org_event("created", "org_z", T, T, "Zeta"),
        membership_event("created", "orgmem_z1", "org_z", "user_z1", T, T, "org:admin"),
        membership_event("created", "orgmem_z2", "org_z", "user_z2", T, T, "org:member"),
        user_deleted("user_z2", T + 10),
    ])
    .await;
    app
}

#[tokio::test]
async fn get_user_returns_the_user_and_the_cursor_its_read_reflects() {
    let app = seeded().await;
    let mut c = client(&app).await;
    let r = c
        .get_user(pb::GetUserRequest {
            name: "users/user_z1".into(),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let u = r.user.unwrap();
    assert_eq!(
        (u.name.as_str(), u.first_name.as_str(), u.external_id.as_str()),
        ("users/user_z1", "Zed", "ext-user_z1")
    );
    assert_eq!(u.primary_email_address, "user_z1@Example.com");
    assert_eq!(u.email_addresses.len(), 2);
    assert_eq!(u.email_addresses[0].verification_status, "verified");
    assert_eq!(u.phone_numbers[0].phone_number, "+15555550100");
    assert_eq!(u.create_time.unwrap().seconds, T / 1000);
    assert!(u.delete_time.is_none());
    let public = u.public_metadata.unwrap();
    assert_eq!(
        public.fields["plan"].kind,
        Some(prost_types::value::Kind::StringValue("free".into()))
    );
    assert!(
        u.private_metadata.unwrap().fields.is_empty(),
        "null private metadata reads as {{}}"
    );
    // The cursor is the head of the log at that read; update_cursor the change that made the user.
    let head: i64 = sqlx::query_scalar("SELECT head_seq FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let log_id: String = sqlx::query_scalar("SELECT log_id FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(Cursor::decode(&r.cursor).unwrap(), Cursor::new(&log_id, head));
    let made: i64 = sqlx::query_scalar("SELECT update_cursor FROM users WHERE id = 'user_z1'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(Cursor::decode(&u.update_cursor).unwrap().seq, made);
    app.stop().await;
}

#[tokio::test]
async fn gets_answer_not_found_for_unknown_and_deleted_entities_unless_show_deleted() {
    let app = seeded().await;
    let mut c = client(&app).await;
    let e = c
        .get_user(pb::GetUserRequest {
            name: "users/user_nobody".into(),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    let info = e.get_details_error_info().unwrap();
    assert_eq!(info.metadata["resourceName"], "users/user_nobody");
    // The miss says which snapshot it read, so a caller can watch from there for the user.
    let head: i64 = sqlx::query_scalar("SELECT head_seq FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(Cursor::decode(&info.metadata["cursor"]).unwrap().seq, head);
    let e = c
        .get_user(pb::GetUserRequest {
            name: "users/user_z2".into(),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    let tomb = c
        .get_user(pb::GetUserRequest {
            name: "users/user_z2".into(),
            show_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let u = tomb.user.unwrap();
    assert_eq!(u.delete_time.unwrap().seconds, (T + 10) / 1000);
    assert_eq!(
        (u.first_name.as_str(), u.email_addresses.len(), u.external_id.as_str()),
        ("", 0, "ext-user_z2")
    );

    let o = c
        .get_organization(pb::GetOrganizationRequest {
            name: "organizations/org_z".into(),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap();
    let o = o.into_inner().organization.unwrap();
    assert_eq!(
        (o.display_name.as_str(), o.slug.as_str(), o.members_count),
        ("Zeta", "slug-org_z", 2)
    );
    let e = c
        .get_organization(pb::GetOrganizationRequest {
            name: "organizations/org_none".into(),
            show_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");

    let m = c
        .get_membership(pb::GetMembershipRequest {
            name: "organizations/org_z/memberships/orgmem_z1".into(),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .membership
        .unwrap();
    assert_eq!(
        (
            m.role.as_str(),
            m.user_id.as_str(),
            m.organization.unwrap().display_name.as_str()
        ),
        ("org:admin", "user_z1", "Snapshot name")
    );
    assert_eq!(m.public_user_data.unwrap().first_name, "Snap");
    // Ended with its user: NOT_FOUND, or the tombstone with show_deleted.
    let name = "organizations/org_z/memberships/orgmem_z2".to_string();
    let e = c
        .get_membership(pb::GetMembershipRequest {
            name: name.clone(),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    let ended = c
        .get_membership(pb::GetMembershipRequest {
            name,
            show_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.membership.unwrap().delete_time.unwrap().seconds, (T + 10) / 1000);
    // The right id under the wrong organization is not found.
    let e = c
        .get_membership(pb::GetMembershipRequest {
            name: "organizations/org_x/memberships/orgmem_z1".into(),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn malformed_names_are_invalid_arguments_naming_the_field() {
    let app = spawn_app().await;
    let mut c = client(&app).await;
    for name in ["user_z1", "users/", "users/a/b", "organizations/org_z", ""] {
        let e = c
            .get_user(pb::GetUserRequest {
                name: name.into(),
                show_deleted: false,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_error(&e, Code::InvalidArgument, "INVALID_NAME");
        assert_eq!(e.get_details_error_info().unwrap().metadata["field"], "name");
        assert_eq!(e.get_details_bad_request().unwrap().field_violations[0].field, "name");
    }
    let e = c
        .get_organization(pb::GetOrganizationRequest {
            name: "users/x".into(),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::InvalidArgument, "INVALID_NAME");
    let e = c
        .get_membership(pb::GetMembershipRequest {
            name: "organizations/o/members/m".into(),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::InvalidArgument, "INVALID_NAME");
    let e = c
        .batch_get_users(pb::BatchGetUsersRequest {
            names: vec!["users/a".into(), "nope".into()],
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.get_details_error_info().unwrap().metadata["field"], "names[1]");
    app.stop().await;
}

#[tokio::test]
async fn batch_gets_return_request_order_and_name_the_first_missing_entity() {
    let app = seeded().await;
    let mut c = client(&app).await;
    let names = |ids: &[&str]| ids.iter().map(|i| format!("users/{i}")).collect::<Vec<_>>();
    let r = c
        .batch_get_users(pb::BatchGetUsersRequest {
            names: names(&["user_z1", "user_z2", "user_z1"]),
            show_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<_> = r.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(got, ["user_z1", "user_z2", "user_z1"]);
    assert!(r.users[1].delete_time.is_some());
    let e = c
        .batch_get_users(pb::BatchGetUsersRequest {
            names: names(&["user_z1", "user_z2", "user_q"]),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    assert_eq!(
        e.get_details_error_info().unwrap().metadata["resourceName"],
        "users/user_z2"
    );
    let e = c
        .batch_get_users(pb::BatchGetUsersRequest {
            names: names(&["user_z1", "user_q"]),
            show_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.get_details_error_info().unwrap().metadata["resourceName"],
        "users/user_q"
    );
    let too_many: Vec<String> = (0..501).map(|i| format!("users/user_{i}")).collect();
    let e = c
        .batch_get_users(pb::BatchGetUsersRequest {
            names: too_many,
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::InvalidArgument, "TOO_MANY_NAMES");
    let max: Vec<String> = (0..500).map(|_| "users/user_z1".to_string()).collect();
    assert_eq!(
        c.batch_get_users(pb::BatchGetUsersRequest {
            names: max,
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .users
        .len(),
        500
    );
    let empty = c
        .batch_get_users(pb::BatchGetUsersRequest {
            names: vec![],
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.users.is_empty() && !empty.cursor.is_empty());

    let r = c
        .batch_get_organizations(pb::BatchGetOrganizationsRequest {
            names: vec!["organizations/org_z".into()],
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.organizations[0].display_name, "Zeta");
    let e = c
        .batch_get_organizations(pb::BatchGetOrganizationsRequest {
            names: vec!["organizations/org_q".into()],
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    let e = c
        .batch_get_organizations(pb::BatchGetOrganizationsRequest {
            names: (0..501).map(|i| format!("organizations/o{i}")).collect(),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::InvalidArgument, "TOO_MANY_NAMES");
    app.stop().await;
}

#[tokio::test]
async fn lookup_user_finds_by_any_email_case_insensitively_external_id_username_and_phone() {
    let app = seeded().await;
    let mut c = client(&app).await;
    use pb::lookup_user_request::Key;
    for key in [
        Key::Email("USER_Z1@example.COM".into()),
        Key::Email("Second.User_Z1@Example.org".into()),
        Key::ExternalId("ext-user_z1".into()),
        Key::Username("NAME-user_z1".into()),
        Key::PhoneNumber("+15555550100".into()),
    ] {
        let r = c
            .lookup_user(pb::LookupUserRequest {
                key: Some(key.clone()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{key:?}: {e:?}"));
        assert_eq!(r.into_inner().user.unwrap().id, "user_z1", "{key:?}");
    }
    // A deleted user is found by none of its old keys.
    for key in [
        Key::Email("user_z2@example.com".into()),
        Key::ExternalId("ext-user_z2".into()),
        Key::Username("name-user_z2".into()),
    ] {
        let e = c
            .lookup_user(pb::LookupUserRequest {
                key: Some(key),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    }
    let e = c
        .lookup_user(pb::LookupUserRequest {
            key: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::InvalidArgument, "MISSING_KEY");
    let e = c
        .lookup_user(pb::LookupUserRequest {
            key: Some(Key::Email(String::new())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::InvalidArgument, "INVALID_KEY");
    app.stop().await;
}

#[tokio::test]
async fn lookup_organization_and_membership_answer_who_belongs_with_which_role() {
    let app = seeded().await;
    let mut c = client(&app).await;
    let o = c
        .lookup_organization(pb::LookupOrganizationRequest {
            slug: "slug-org_z".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(o.organization.unwrap().id, "org_z");
    let e = c
        .lookup_organization(pb::LookupOrganizationRequest {
            slug: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    let e = c
        .lookup_organization(pb::LookupOrganizationRequest {
            slug: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::InvalidArgument, "INVALID_KEY");

    let ask = |user: &str| pb::LookupMembershipRequest {
        organization: "organizations/org_z".into(),
        user: format!("users/{user}"),
        ..Default::default()
    };
    let m = c
        .lookup_membership(ask("user_z1"))
        .await
        .unwrap()
        .into_inner()
        .membership
        .unwrap();
    assert_eq!((m.id.as_str(), m.role.as_str()), ("orgmem_z1", "org:admin"));
    assert_eq!(m.name, "organizations/org_z/memberships/orgmem_z1");
    // Ended (the user was deleted) and never a member: both NOT_FOUND.
    for user in ["user_z2", "user_stranger"] {
        let e = c.lookup_membership(ask(user)).await.unwrap_err();
        assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    }
    let e = c
        .lookup_membership(pb::LookupMembershipRequest {
            organization: "org_z".into(),
            user: "users/user_z1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::InvalidArgument, "INVALID_NAME");
    assert_eq!(e.get_details_error_info().unwrap().metadata["field"], "organization");
    app.stop().await;
}

#[tokio::test]
async fn a_user_with_twenty_addresses_and_50_kb_of_nested_metadata_round_trips_intact() {
    let app = spawn_app().await;
    let mut data = user("user_big", T, "Big");
    data["email_addresses"] = json!(
        (0..20)
            .map(|i| json!({"id": format!("idn_{i}"), "email_address": format!("big{i}@example.com")}))
            .collect::<Vec<_>>()
    );
    let metadata = json!({
        "nested": {"list": [1, "two", null, [3.5, {"deep": [true, false, null]}]], "empty": {}, "nothing": null},
        "blob": "x".repeat(50 * 1024),
    });
    data["public_metadata"] = metadata.clone();
    app.send_all_and_apply(&[envelope("user.created", T, data)]).await;
    let mut c = client(&app).await;
    let u = c
        .get_user(pb::GetUserRequest {
            name: "users/user_big".into(),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(u.email_addresses.len(), 20);
    assert_eq!(u.email_addresses[19].email_address, "big19@example.com");
    assert_eq!(struct_to_json(u.public_metadata.unwrap()), metadata);
    let by_email = c
        .lookup_user(pb::LookupUserRequest {
            key: Some(pb::lookup_user_request::Key::Email("BIG17@example.com".into())),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_email.into_inner().user.unwrap().id, "user_big");
    app.stop().await;
}

pub fn struct_to_json(s: prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(s.fields.into_iter().map(|(k, v)| (k, value_to_json(v))).collect())
}

fn value_to_json(v: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 1e15 => json!(n as i64),
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::ListValue(l)) => serde_json::Value::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

/// Every stored message (`users.message`, `organizations.message`) of a story, against its row
/// converted: the test that the two forms never drift apart.
pub(crate) async fn assert_stored_messages_match_their_rows(pool: &sqlx::PgPool) -> usize {
    use clerk_mirror::store::{Kind, OrganizationRecord, UserRecord};
    use prost::Message;
    use sqlx::{FromRow, Row};
    let log_id: String = sqlx::query_scalar("SELECT log_id FROM log_head").fetch_one(pool).await.unwrap();
    let mut checked = 0;
    for row in sqlx::query("SELECT * FROM users").fetch_all(pool).await.unwrap() {
        let record = UserRecord::from_row(&row).unwrap();
        let want = record.message(row.get("update_cursor"), &log_id);
        let stored: Vec<u8> = row.get("message");
        assert_eq!(pb::User::decode(&stored[..]).unwrap(), want, "{}", record.id);
        assert_eq!(row.get::<i32, _>("message_format"), clerk_mirror::store::kind::MESSAGE_FORMAT);
        checked += 1;
    }
    for row in sqlx::query("SELECT * FROM organizations").fetch_all(pool).await.unwrap() {
        let record = OrganizationRecord::from_row(&row).unwrap();
        let want = record.message(row.get("update_cursor"), &log_id);
        let stored: Vec<u8> = row.get("message");
        assert_eq!(pb::Organization::decode(&stored[..]).unwrap(), want, "{}", record.id);
        checked += 1;
    }
    checked
}

#[tokio::test]
async fn reads_from_postgresql_send_the_stored_message_which_matches_its_row_and_convert_rows_of_another_format() {
    let app = spawn_app_with(|c| c.read_cache_bytes = 0).await;
    app.send_all_and_apply(&[
        user_event("created", "user_m1", T, T, "Mia"),
        user_event("updated", "user_m1", T + 5, T + 5, "Mira"),
        user_event("created", "user_m2", T, T, "Max"),
        org_event("created", "org_m", T, T, "Mu"),
        user_deleted("user_m2", T + 10),
    ])
    .await;
    assert_eq!(assert_stored_messages_match_their_rows(&app.pool).await, 3);
    let mut c = client(&app).await;
    let get = |name: &str, show_deleted: bool| pb::GetUserRequest {
        name: name.into(),
        show_deleted,
        ..Default::default()
    };
    let stored = c.get_user(get("users/user_m1", false)).await.unwrap().into_inner();
    assert_eq!(stored.user.as_ref().unwrap().first_name, "Mira");
    let org = c
        .get_organization(pb::GetOrganizationRequest {
            name: "organizations/org_m".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(org.organization.unwrap().display_name, "Mu");
    // A tombstone: NOT_FOUND unless show_deleted, as from the row.
    let e = c.get_user(get("users/user_m2", false)).await.unwrap_err();
    assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    let gone = c.get_user(get("users/user_m2", true)).await.unwrap().into_inner().user.unwrap();
    assert!(gone.delete_time.is_some());
    let e = c.get_user(get("users/user_nobody", false)).await.unwrap_err();
    assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");

    // Rows of another format (written by another version): their bytes are not read, the row
    // is converted, and the answer is the same.
    sqlx::query("UPDATE users SET message = '\\x0a'::bytea, message_format = 0")
        .execute(&app.pool)
        .await
        .unwrap();
    let converted = c.get_user(get("users/user_m1", false)).await.unwrap().into_inner();
    assert_eq!(converted.user, stored.user);
    let gone_again = c.get_user(get("users/user_m2", true)).await.unwrap().into_inner().user.unwrap();
    assert_eq!(gone_again, gone);
    sqlx::query("UPDATE users SET message = NULL, message_format = NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(c.get_user(get("users/user_m1", false)).await.unwrap().into_inner().user, stored.user);
    // The next write of the user stores its message again.
    app.send_all_and_apply(&[user_event("updated", "user_m1", T + 20, T + 20, "Mina")]).await;
    let format: Option<i32> = sqlx::query_scalar("SELECT message_format FROM users WHERE id = 'user_m1'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(format, Some(clerk_mirror::store::kind::MESSAGE_FORMAT));
    app.stop().await;
}

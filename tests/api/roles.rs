//! Roles, permissions and permission checks: roles and permissions read by name, key and list;
//! a membership's permissions follow its role's current permissions (keys renamed, permissions
//! deleted, roles deleted while held, roles not yet known, legacy keys); CheckPermission and
//! CheckPermissions from memory and from PostgreSQL, alike; Billing-gated custom permissions;
//! organization-scoped watches that carry role changes.

use std::time::Duration;

use clerk_mirror::pb;
use clerk_mirror::pb::directory_service_client::DirectoryServiceClient;
use clerk_mirror::pb::watch_changes_response::Event;
use clerk_mirror::pb::watch_service_client::WatchServiceClient;
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

fn memory() -> Option<pb::Consistency> {
    None
}

fn postgres() -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::FullyConsistent(true)),
    })
}

const POSTS_CREATE: (&str, &str) = ("perm_create", "org:posts:create");
const POSTS_PUBLISH: (&str, &str) = ("perm_publish", "org:posts:publish");
const MEMBERS_READ: (&str, &str) = ("perm_members", "org:sys_memberships:read");

/// A user and an organization, both live, and the user's membership there with `role` and
/// Clerk's snapshot `snapshot`.
fn member(user: &str, org: &str, role: &str, snapshot: &[&str]) -> Vec<String> {
    vec![
        user_event("created", user, T, T, "Member"),
        org_event("created", org, T, T, "Org"),
        membership_with(&format!("orgmem_{user}_{org}"), org, user, T, role, snapshot),
    ]
}

/// The permissions and the `org:editor` role granting `grants`.
fn editor(grants: &[(&str, &str)], updated: i64) -> Vec<String> {
    let mut events: Vec<String> = [POSTS_CREATE, POSTS_PUBLISH, MEMBERS_READ]
        .iter()
        .map(|(id, key)| permission_event("created", id, key, T, T))
        .collect();
    events.push(role_event("created", "role_editor", "org:editor", updated, updated, grants));
    events
}

/// Asks CheckPermission at `consistency`: (allowed, role, source).
async fn check_at(
    c: &mut DirectoryServiceClient<Channel>,
    org: &str,
    user: &str,
    permission: &str,
    consistency: Option<pb::Consistency>,
) -> (bool, String, pb::CheckSource) {
    let r = c
        .check_permission(pb::CheckPermissionRequest {
            organization: format!("organizations/{org}"),
            user: format!("users/{user}"),
            permission: permission.into(),
            consistency,
        })
        .await
        .expect("CheckPermission")
        .into_inner();
    let source = r.source();
    (r.allowed, r.role, source)
}

/// Asks from memory and from PostgreSQL, asserts they agree, and returns the answer.
async fn check(c: &mut DirectoryServiceClient<Channel>, org: &str, user: &str, permission: &str) -> (bool, String, pb::CheckSource) {
    let from_memory = check_at(c, org, user, permission, memory()).await;
    let from_postgres = check_at(c, org, user, permission, postgres()).await;
    assert_eq!(from_memory, from_postgres, "memory and PostgreSQL disagree on {permission} for {user} in {org}");
    from_memory
}

/// The user's current membership, from memory and from PostgreSQL (asserted alike, cursors aside).
async fn membership_of(c: &mut DirectoryServiceClient<Channel>, org: &str, user: &str) -> pb::Membership {
    let read = |consistency| {
        let mut c = c.clone();
        async move {
            c.lookup_membership(pb::LookupMembershipRequest {
                organization: format!("organizations/{org}"),
                user: format!("users/{user}"),
                consistency,
            })
            .await
            .expect("LookupMembership")
            .into_inner()
            .membership
            .unwrap()
        }
    };
    let from_memory = read(memory()).await;
    let from_postgres = read(postgres()).await;
    assert_eq!(from_memory, from_postgres, "memory and PostgreSQL show the membership differently");
    from_memory
}

async fn role(c: &mut DirectoryServiceClient<Channel>, id: &str, consistency: Option<pb::Consistency>) -> pb::Role {
    c.get_role(pb::GetRoleRequest {
        name: format!("roles/{id}"),
        show_deleted: true,
        consistency,
    })
    .await
    .expect("GetRole")
    .into_inner()
    .role
    .unwrap()
}

#[tokio::test]
async fn roles_and_permissions_are_read_by_name_by_key_and_in_lists_from_memory_and_postgresql_alike() {
    let app = spawn_app().await;
    let mut events = editor(&[POSTS_CREATE, POSTS_PUBLISH], T + 5);
    // Clerk's spec: a `user` type besides `system` and `custom`, kept as sent.
    events.push(envelope(
        "permission.created",
        T,
        serde_json::json!({"object": "permission", "id": "perm_user", "key": "org:profile:edit", "name": "Edit",
                           "description": "", "type": "user", "created_at": T, "updated_at": T}),
    ));
    app.send_all_and_apply(&events).await;
    let mut c = client(&app).await;

    let from_memory = role(&mut c, "role_editor", memory()).await;
    assert_eq!(from_memory, role(&mut c, "role_editor", postgres()).await);
    assert_eq!(
        (from_memory.name.as_str(), from_memory.key.as_str(), from_memory.display_name.as_str()),
        ("roles/role_editor", "org:editor", "Role org:editor")
    );
    assert_eq!(from_memory.description, "", "a null description reads as empty");
    assert_eq!(from_memory.permissions, ["org:posts:create", "org:posts:publish"]);
    assert_eq!(from_memory.permission_ids, ["perm_create", "perm_publish"]);
    assert!(from_memory.update_cursor.len() > 4 && from_memory.delete_time.is_none());

    for consistency in [memory(), postgres()] {
        let found = c
            .lookup_role(pb::LookupRoleRequest {
                key: "org:editor".into(),
                consistency: consistency.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .role
            .unwrap();
        assert_eq!(found.id, "role_editor");
        let missing = c
            .lookup_role(pb::LookupRoleRequest {
                key: "org:nobody".into(),
                consistency,
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    }

    let roles = c
        .list_roles(pb::ListRolesRequest {
            filter: r#"permissions:"org:posts:publish""#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(roles.roles, [from_memory.clone()]);
    let custom = c
        .list_permissions(pb::ListPermissionsRequest {
            filter: r#"type = "user""#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<(&str, &str)> = custom.permissions.iter().map(|p| (p.key.as_str(), p.r#type.as_str())).collect();
    assert_eq!(keys, [("org:profile:edit", "user")]);
    let all = c.list_permissions(pb::ListPermissionsRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.permissions.len(), 4);
    // The read cache holds them all (outside its budget), and says so.
    let metrics = get(&format!("http://{}/metrics", app.admin_addr)).await.body;
    for line in [r#"clerk_mirror_read_cache{what="roles"} 1"#, r#"clerk_mirror_read_cache{what="permissions"} 4"#] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in:\n{metrics}");
    }
    assert_eq!(all.permissions[0].name, "permissions/perm_create");

    // Bad names and keys are refused with their reasons.
    let bad = c
        .get_role(pb::GetRoleRequest {
            name: "permissions/perm_create".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(bad.get_details_error_info().unwrap().reason, "INVALID_NAME");
    let bad = c.lookup_role(pb::LookupRoleRequest::default()).await.unwrap_err();
    assert_eq!(bad.get_details_error_info().unwrap().reason, "INVALID_KEY");
    let bad = c
        .list_roles(pb::ListRolesRequest {
            filter: r#"email = "x""#.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_members_permissions_follow_the_roles_current_permissions_without_a_membership_event() {
    let app = spawn_app().await;
    let mut events = editor(&[POSTS_CREATE], T + 5);
    events.extend(member("user_e", "org_e", "org:editor", &["org:sys_memberships:read"]));
    app.send_all_and_apply(&events).await;
    let mut c = client(&app).await;

    assert_eq!(check(&mut c, "org_e", "user_e", "org:posts:create").await, (true, "org:editor".into(), pb::CheckSource::Role));
    // The role decides, not Clerk's snapshot sent with the membership.
    assert_eq!(check(&mut c, "org_e", "user_e", "org:sys_memberships:read").await.0, false);
    assert_eq!(check(&mut c, "org_e", "user_e", "org:posts:publish").await.0, false);
    let m = membership_of(&mut c, "org_e", "user_e").await;
    assert_eq!((m.permissions.as_slice(), m.permissions_source()), (&["org:posts:create".to_string()][..], pb::PermissionsSource::Role));
    assert_eq!(m.role_name, "Role org:editor", "the role's name now");

    // One role.updated, no membership event: every member's answer changes.
    app.send_all_and_apply(&[role_event("updated", "role_editor", "org:editor", T + 9, T + 9, &[POSTS_CREATE, POSTS_PUBLISH, MEMBERS_READ])])
        .await;
    for p in ["org:posts:create", "org:posts:publish", "org:sys_memberships:read"] {
        assert_eq!(check(&mut c, "org_e", "user_e", p).await, (true, "org:editor".into(), pb::CheckSource::Role), "{p}");
    }
    assert_eq!(membership_of(&mut c, "org_e", "user_e").await.permissions.len(), 3);
    // Lists filter on the effective set: "who here can publish", "where can user_e publish".
    for parent in ["organizations/org_e", "organizations/-"] {
        let listed = c
            .list_memberships(pb::ListMembershipsRequest {
                parent: parent.into(),
                filter: r#"permissions:"org:posts:publish" AND user_id = "user_e""#.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.memberships.len(), 1, "{parent}");
        assert_eq!(listed.memberships[0].permissions_source(), pb::PermissionsSource::Role);
    }
    // An older role.updated (redelivered late) changes nothing.
    app.send_all_and_apply(&[role_event("updated", "role_editor", "org:editor", T + 7, T + 20, &[])]).await;
    assert!(check(&mut c, "org_e", "user_e", "org:posts:publish").await.0);
    app.stop().await;
}

#[tokio::test]
async fn a_renamed_permission_key_and_a_renamed_role_key_are_followed() {
    let app = spawn_app().await;
    let mut events = editor(&[POSTS_CREATE], T + 5);
    events.extend(member("user_r", "org_r", "org:editor", &[]));
    app.send_all_and_apply(&events).await;
    let mut c = client(&app).await;

    // The Backend API renames the permission's key: the role (kept by permission id) follows.
    app.send_all_and_apply(&[permission_event("updated", "perm_create", "org:articles:create", T + 10, T + 10)]).await;
    assert_eq!(check(&mut c, "org_r", "user_r", "org:posts:create").await.0, false);
    assert_eq!(check(&mut c, "org_r", "user_r", "org:articles:create").await, (true, "org:editor".into(), pb::CheckSource::Role));
    assert_eq!(role(&mut c, "role_editor", memory()).await.permissions, ["org:articles:create"]);
    assert_eq!(role(&mut c, "role_editor", postgres()).await.permissions, ["org:articles:create"]);

    // The role's key is renamed: a membership names its role by key among live roles only, so
    // the old key finds none (the snapshot answers) until Clerk's membership event names the new.
    app.send_all_and_apply(&[role_event("updated", "role_editor", "org:writer", T + 11, T + 11, &[POSTS_CREATE])]).await;
    let missing = c
        .lookup_role(pb::LookupRoleRequest {
            key: "org:editor".into(),
            consistency: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(check(&mut c, "org_r", "user_r", "org:articles:create").await.2, pb::CheckSource::MembershipSnapshot);
    let mut renamed = member("user_r", "org_r", "org:writer", &[]);
    renamed[2] = renamed[2].replace("organizationMembership.created", "organizationMembership.updated").replace(&format!("\"updated_at\":{T}"), &format!("\"updated_at\":{}", T + 12));
    app.send_all_and_apply(&renamed[2..]).await;
    assert_eq!(check(&mut c, "org_r", "user_r", "org:articles:create").await, (true, "org:writer".into(), pb::CheckSource::Role));
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_permission_is_dropped_from_its_roles_without_a_role_update() {
    let app = spawn_app().await;
    let mut events = editor(&[POSTS_CREATE, POSTS_PUBLISH], T + 5);
    events.extend(member("user_d", "org_d", "org:editor", &["org:posts:publish"]));
    app.send_all_and_apply(&events).await;
    let mut c = client(&app).await;
    assert!(check(&mut c, "org_d", "user_d", "org:posts:publish").await.0);

    app.send_all_and_apply(&[permission_deleted("perm_publish", T + 20)]).await;
    assert_eq!(check(&mut c, "org_d", "user_d", "org:posts:publish").await, (false, "org:editor".into(), pb::CheckSource::Role));
    assert!(check(&mut c, "org_d", "user_d", "org:posts:create").await.0);
    assert_eq!(role(&mut c, "role_editor", memory()).await.permissions, ["org:posts:create"]);
    assert_eq!(membership_of(&mut c, "org_d", "user_d").await.permissions, ["org:posts:create"]);
    app.stop().await;
}

#[tokio::test]
async fn a_role_deleted_while_held_denies_and_a_role_not_yet_known_answers_from_the_snapshot() {
    let app = spawn_app().await;
    let mut events = editor(&[POSTS_CREATE], T + 5);
    events.extend(member("user_h", "org_h", "org:editor", &["org:posts:create"]));
    // A membership whose role the mirror has never seen (not yet imported).
    events.extend(member("user_u", "org_h", "org:auditor", &["org:reports:read"]));
    app.send_all_and_apply(&events).await;
    let mut c = client(&app).await;

    assert_eq!(
        check(&mut c, "org_h", "user_u", "org:reports:read").await,
        (true, "org:auditor".into(), pb::CheckSource::MembershipSnapshot)
    );
    assert_eq!(check(&mut c, "org_h", "user_u", "org:posts:create").await.0, false);
    assert_eq!(membership_of(&mut c, "org_h", "user_u").await.permissions_source(), pb::PermissionsSource::MembershipSnapshot);

    app.send_all_and_apply(&[role_deleted("role_editor", T + 30)]).await;
    // Fail closed: the snapshot still lists the permission, but the role is gone.
    assert_eq!(check(&mut c, "org_h", "user_h", "org:posts:create").await, (false, "org:editor".into(), pb::CheckSource::Role));
    let m = membership_of(&mut c, "org_h", "user_h").await;
    assert_eq!((m.permissions.len(), m.permissions_source()), (0, pb::PermissionsSource::DeletedRole));
    let tombstone = role(&mut c, "role_editor", memory()).await;
    assert_eq!((tombstone.key.as_str(), tombstone.delete_time.is_some()), ("org:editor", true), "a tombstone keeps its key");
    // A new role under the key is live again.
    app.send_all_and_apply(&[role_event("created", "role_editor2", "org:editor", T + 40, T + 40, &[POSTS_CREATE])]).await;
    assert_eq!(check(&mut c, "org_h", "user_h", "org:posts:create").await.0, true);
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_membership_user_or_organization_denies_and_a_legacy_role_key_finds_its_default_role() {
    let app = spawn_app().await;
    let mut events = vec![
        permission_event("created", MEMBERS_READ.0, MEMBERS_READ.1, T, T),
        role_event("created", "role_admin", "org:admin", T, T, &[MEMBERS_READ]),
    ];
    // A legacy instance names the admin role `admin`.
    events.extend(member("user_1", "org_1", "admin", &[]));
    events.extend(member("user_2", "org_2", "org:admin", &[]));
    events.extend(member("user_3", "org_3", "org:admin", &[]));
    events.extend(member("user_4", "org_4", "org:admin", &[]));
    app.send_all_and_apply(&events).await;
    let mut c = client(&app).await;
    let p = "org:sys_memberships:read";
    assert_eq!(check(&mut c, "org_1", "user_1", p).await, (true, "admin".into(), pb::CheckSource::Role));
    for (org, user) in [("org_2", "user_2"), ("org_3", "user_3"), ("org_4", "user_4")] {
        assert!(check(&mut c, org, user, p).await.0);
    }

    app.send_all_and_apply(&[
        membership_event("deleted", "orgmem_user_2_org_2", "org_2", "user_2", T, T + 50, "org:admin"),
        user_deleted("user_3", T + 50),
        org_deleted("org_4", T + 50),
    ])
    .await;
    for (org, user) in [("org_2", "user_2"), ("org_3", "user_3"), ("org_4", "user_4"), ("org_1", "user_never"), ("org_never", "user_1")] {
        assert_eq!(check(&mut c, org, user, p).await, (false, String::new(), pb::CheckSource::NoMembership), "{user} in {org}");
    }
    app.stop().await;
}

#[tokio::test]
async fn with_billing_gating_custom_permissions_are_answered_by_the_snapshot_and_system_ones_by_the_role() {
    let app = spawn_app_with(|c| c.billing_gates_permissions = true).await;
    let mut events = editor(&[POSTS_CREATE, MEMBERS_READ], T + 5);
    events.extend(member("user_b", "org_b", "org:editor", &["org:posts:publish"]));
    app.send_all_and_apply(&events).await;
    let mut c = client(&app).await;
    // The plan (not yet mirrored) decides custom permissions: Clerk's snapshot reflects it.
    assert_eq!(
        check(&mut c, "org_b", "user_b", "org:posts:publish").await,
        (true, "org:editor".into(), pb::CheckSource::MembershipSnapshot)
    );
    assert_eq!(check(&mut c, "org_b", "user_b", "org:posts:create").await.0, false);
    // System permissions are never gated by Billing: the role answers.
    assert_eq!(
        check(&mut c, "org_b", "user_b", "org:sys_memberships:read").await,
        (true, "org:editor".into(), pb::CheckSource::Role)
    );
    // A role deleted while held denies even what the snapshot lists.
    app.send_all_and_apply(&[role_deleted("role_editor", T + 30)]).await;
    assert_eq!(
        check(&mut c, "org_b", "user_b", "org:posts:publish").await,
        (false, "org:editor".into(), pb::CheckSource::Role)
    );
    app.stop().await;
}

#[tokio::test]
async fn with_billing_gating_and_plans_held_a_custom_permission_needs_its_feature_in_the_organizations_plan() {
    let (cluster, name) = shared_database().await;
    let app = spawn_app_on(cluster, &name, |c| c.billing_gates_permissions = true).await;
    // A replica of the same database without a read cache: PostgreSQL answers.
    let postgres = spawn_app_on(cluster, &name, |c| {
        c.billing_gates_permissions = true;
        c.read_cache_bytes = 0;
    })
    .await;
    let mut events = editor(&[POSTS_CREATE, POSTS_PUBLISH, MEMBERS_READ], T + 5);
    events.extend(member("user_g", "org_g", "org:editor", &["org:posts:publish"]));
    app.send_all_and_apply(&events).await;
    crate::billing::store_plans(&app).await;
    let (mut m, mut p) = (client(&app).await, client(&postgres).await);
    let mut both = async |permission: &str| {
        let from_memory = check_at(&mut m, "org_g", "user_g", permission, memory()).await;
        let from_postgres = check_at(&mut p, "org_g", "user_g", permission, memory()).await;
        assert_eq!(from_memory, from_postgres, "{permission}: memory and PostgreSQL disagree");
        from_memory
    };
    // On the default plan (no item): `posts` is Pro's, so the role's grant is not enough.
    assert_eq!(both("org:posts:publish").await, (false, "org:editor".into(), pb::CheckSource::Plan));
    assert_eq!(both("org:sys_memberships:read").await, (true, "org:editor".into(), pb::CheckSource::Role));
    assert_eq!(both("org:posts:delete").await, (false, "org:editor".into(), pb::CheckSource::Role));
    // On Pro: allowed, and the plan said so.
    app.send_all_and_apply(&[crate::billing::item_on("active", "csub_item_g", "active", "organizations/org_g", "cplan_pro", T + 1, None, false)])
        .await;
    postgres.wait_until_applied().await;
    assert_eq!(both("org:posts:publish").await, (true, "org:editor".into(), pb::CheckSource::Plan));
    assert_eq!(both("org:posts:create").await, (true, "org:editor".into(), pb::CheckSource::Plan));
    // Pro ended: back on the default plan.
    app.send_all_and_apply(&[crate::billing::item_on("ended", "csub_item_g", "ended", "organizations/org_g", "cplan_pro", T + 2, None, false)])
        .await;
    postgres.wait_until_applied().await;
    assert_eq!(both("org:posts:publish").await, (false, "org:editor".into(), pb::CheckSource::Plan));
    app.stop().await;
    postgres.stop().await;
}

#[tokio::test]
async fn check_permissions_answers_up_to_a_hundred_checks_in_order_at_one_cursor_and_refuses_bad_ones() {
    let app = spawn_app().await;
    let mut events = editor(&[POSTS_CREATE], T + 5);
    events.extend(member("user_c", "org_c", "org:editor", &[]));
    app.send_all_and_apply(&events).await;
    let mut c = client(&app).await;
    let one = |permission: &str| pb::PermissionCheck {
        organization: "organizations/org_c".into(),
        user: "users/user_c".into(),
        permission: permission.into(),
    };
    let checks: Vec<pb::PermissionCheck> = (0..100)
        .map(|i| one(if i % 2 == 0 { "org:posts:create" } else { "org:posts:publish" }))
        .collect();
    let mut answers = Vec::new();
    for consistency in [memory(), postgres()] {
        let r = c
            .check_permissions(pb::CheckPermissionsRequest {
                checks: checks.clone(),
                consistency,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.results.len(), 100);
        for (i, result) in r.results.iter().enumerate() {
            assert_eq!(result.allowed, i % 2 == 0, "check {i}");
            assert_eq!((result.role.as_str(), result.source()), ("org:editor", pb::CheckSource::Role));
        }
        answers.push(r);
    }
    assert_eq!(answers[0], answers[1], "memory and PostgreSQL answer alike, at the same cursor");

    let refused = |r: Result<tonic::Response<pb::CheckPermissionsResponse>, tonic::Status>| {
        let s = r.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        let info = s.get_details_error_info().unwrap();
        (info.reason.clone(), s.message().to_string())
    };
    let (reason, message) = refused(
        c.check_permissions(pb::CheckPermissionsRequest {
            checks: (0..101).map(|_| one("org:x:y")).collect(),
            consistency: None,
        })
        .await,
    );
    assert_eq!(reason, "INVALID_CHECK_COUNT");
    assert!(message.contains("101"), "{message}");
    assert_eq!(refused(c.check_permissions(pb::CheckPermissionsRequest::default()).await).0, "INVALID_CHECK_COUNT");
    let mut bad = checks[..3].to_vec();
    bad[2].user = "user_c".into();
    let (reason, message) = refused(c.check_permissions(pb::CheckPermissionsRequest { checks: bad, consistency: None }).await);
    assert_eq!(reason, "INVALID_NAME");
    assert!(message.contains("checks[2].user"), "{message}");
    for permission in ["", "a\0b"] {
        let s = c
            .check_permission(pb::CheckPermissionRequest {
                organization: "organizations/org_c".into(),
                user: "users/user_c".into(),
                permission: permission.into(),
                consistency: None,
            })
            .await
            .unwrap_err();
        assert_eq!(s.get_details_error_info().unwrap().reason, "INVALID_KEY", "{permission:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn memory_and_postgresql_answer_every_check_alike_through_a_story_of_role_and_permission_changes() {
    let app = spawn_app().await;
    let mut events = editor(&[POSTS_CREATE], T + 5);
    events.push(role_event("created", "role_member", "org:member", T, T, &[MEMBERS_READ]));
    events.extend(member("user_1", "org_s", "org:editor", &["org:posts:publish"]));
    events.extend(member("user_2", "org_s", "basic_member", &[]));
    events.extend(member("user_3", "org_s", "org:ghost", &["org:posts:create"]));
    app.send_all_and_apply(&events).await;
    let steps = [
        role_event("updated", "role_editor", "org:editor", T + 10, T + 10, &[POSTS_CREATE, POSTS_PUBLISH]),
        permission_event("updated", "perm_members", "org:sys_memberships:manage", T + 11, T + 11),
        permission_deleted("perm_create", T + 12),
        role_deleted("role_member", T + 13),
        role_event("created", "role_ghost", "org:ghost", T + 14, T + 14, &[("perm_unseen", "org:unseen:do")]),
    ];
    let users = ["user_1", "user_2", "user_3", "user_none"];
    let permissions = [
        "org:posts:create",
        "org:posts:publish",
        "org:sys_memberships:read",
        "org:sys_memberships:manage",
        "org:unseen:do",
    ];
    let mut c = client(&app).await;
    let mut seen = std::collections::BTreeSet::new();
    for step in std::iter::once(None).chain(steps.iter().map(Some)) {
        if let Some(step) = step {
            app.send_all_and_apply(std::slice::from_ref(step)).await;
        }
        for user in users {
            for p in permissions {
                seen.insert(check(&mut c, "org_s", user, p).await);
            }
            if user != "user_none" {
                membership_of(&mut c, "org_s", user).await;
            }
        }
        for id in ["role_editor", "role_member"] {
            assert_eq!(role(&mut c, id, memory()).await, role(&mut c, id, postgres()).await);
        }
    }
    // The story reaches every kind of answer.
    let sources: std::collections::BTreeSet<_> = seen.iter().map(|(allowed, _, s)| (*allowed, *s as i32)).collect();
    for wanted in [
        (true, pb::CheckSource::Role),
        (false, pb::CheckSource::Role),
        (true, pb::CheckSource::MembershipSnapshot),
        (false, pb::CheckSource::MembershipSnapshot),
        (false, pb::CheckSource::NoMembership),
    ] {
        assert!(sources.contains(&(wanted.0, wanted.1 as i32)), "{wanted:?} never answered: {seen:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_organization_watch_carries_role_and_permission_changes_with_their_keys_resolved() {
    let app = spawn_app().await;
    let mut events = editor(&[POSTS_CREATE], T + 5);
    events.extend(member("user_w", "org_w", "org:editor", &[]));
    app.send_all_and_apply(&events).await;
    let mut w = WatchServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    let mut stream = w
        .watch_changes(pb::WatchChangesRequest {
            organization_id: "org_w".into(),
            start: Some(pb::watch_changes_request::Start::StartFromOldest(true)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    app.send_all_and_apply(&[
        role_event("updated", "role_editor", "org:editor", T + 9, T + 9, &[POSTS_CREATE, POSTS_PUBLISH]),
        org_event("updated", "org_other", T, T, "Not this one"),
    ])
    .await;
    let mut kinds = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a message within 30 s")
            .unwrap()
            .unwrap();
        match m.event.unwrap() {
            Event::Change(c) => {
                kinds.push(c.entity_type());
                if let Some(pb::change::Entity::Role(r)) = &c.entity
                    && c.operation() == pb::Operation::Updated
                {
                    assert_eq!(r.permissions, ["org:posts:create", "org:posts:publish"]);
                    let Some(pb::change::Previous::PreviousRole(before)) = &c.previous else {
                        panic!("the role before: {c:?}")
                    };
                    assert_eq!(before.permissions, ["org:posts:create"]);
                    break;
                }
                if let Some(pb::change::Entity::Organization(o)) = &c.entity {
                    assert_eq!(o.id, "org_w", "another organization's change was sent");
                }
            }
            Event::CaughtUp(_) | Event::Heartbeat(_) => {}
        }
    }
    use pb::EntityType as E;
    assert_eq!(
        kinds,
        [E::Permission, E::Permission, E::Permission, E::Role, E::Organization, E::Membership, E::Role],
        "the instance's roles and permissions, this organization and its membership, in log order"
    );
    // Filtered to roles only.
    let mut roles_only = w
        .watch_changes(pb::WatchChangesRequest {
            entity_types: vec![E::Role as i32],
            start: Some(pb::watch_changes_request::Start::StartFromOldest(true)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut roles = 0;
    while roles < 2 {
        if let Some(Event::Change(c)) = roles_only.message().await.unwrap().unwrap().event {
            assert_eq!(c.entity_type(), E::Role);
            roles += 1;
        }
    }
    app.stop().await;
}

/// Where the README's `buf curl` of `DirectoryService/{method}` stands, and its `--data '…'` (on
/// the line before).
fn printed_request(lines: &[&str], method: &str) -> (usize, serde_json::Value) {
    let at = lines
        .iter()
        .position(|l| l.contains(&format!("DirectoryService/{method}")))
        .unwrap_or_else(|| panic!("the README shows {method}"));
    let data = lines[at - 1].split('\'').nth(1).expect("--data '…' on the line before");
    (at, serde_json::from_str(data).unwrap())
}

#[tokio::test]
async fn the_readmes_example_events_then_its_check_permission_request_answer_as_printed() {
    let app = spawn_app().await;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    // The README's send-event steps, in its order (the redelivery steps aside).
    for line in readme.lines().filter(|l| l.starts_with("cargo run --release -- send-event examples/")) {
        let file = line.rsplit(' ').next().unwrap();
        let body = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let (_, response) = app.send(&body).await;
        assert_eq!(response.status, hyper::StatusCode::OK, "{file}: {}", response.body);
    }
    app.wait_until_applied().await;
    // Its CheckPermission request, as printed.
    let lines: Vec<&str> = readme.lines().collect();
    let (at, asked) = printed_request(&lines, "CheckPermission");
    let r = client(&app)
        .await
        .check_permission(pb::CheckPermissionRequest {
            organization: asked["organization"].as_str().unwrap().into(),
            user: asked["user"].as_str().unwrap().into(),
            permission: asked["permission"].as_str().unwrap().into(),
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner();
    let printed = lines[at + 1];
    assert!(printed.starts_with("# {\"allowed\":true,\"role\":\"org:admin\",\"source\":\"CHECK_SOURCE_ROLE\""), "{printed}");
    assert_eq!((r.allowed, r.role.as_str(), r.source()), (true, "org:admin", pb::CheckSource::Role));
    // Its ListDomains request, as printed.
    let (_, asked) = printed_request(&lines, "ListDomains");
    let domains = client(&app)
        .await
        .list_domains(pb::ListDomainsRequest {
            parent: asked["parent"].as_str().unwrap().into(),
            filter: asked["filter"].as_str().unwrap().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .domains;
    assert_eq!(
        domains.iter().map(|d| d.organization_id.as_str()).collect::<Vec<_>>(),
        ["org_2xAnalyticalEngines000000000"]
    );
    // Its ListInvitations request, as printed: the address matches whatever its case.
    let (_, asked) = printed_request(&lines, "ListInvitations");
    let invitations = client(&app)
        .await
        .list_invitations(pb::ListInvitationsRequest {
            parent: asked["parent"].as_str().unwrap().into(),
            filter: asked["filter"].as_str().unwrap().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .invitations;
    assert_eq!(
        invitations.iter().map(|i| (i.id.as_str(), i.email_address.as_str())).collect::<Vec<_>>(),
        [("orginv_2xCharlesBabbage0000000000", "Charles@Example.com")]
    );
    app.stop().await;
}

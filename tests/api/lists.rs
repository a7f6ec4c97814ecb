//! Lists: pagination (AIP-158), the filter language in SQL and in memory agreeing on every case,
//! walking pages while writes go on, and the list-then-watch recipe.

use std::collections::{BTreeMap, BTreeSet};

use clerk_mirror::filter::Filter;
use clerk_mirror::grpc::cursor::Cursor;
use clerk_mirror::pb;
use clerk_mirror::pb::directory_service_client::DirectoryServiceClient;
use clerk_mirror::pb::watch_changes_response::Event;
use clerk_mirror::pb::watch_service_client::WatchServiceClient;
use clerk_mirror::store::{EntityType, UserRecord};
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::events::*;
use crate::helpers::*;

pub(crate) async fn client(app: &TestApp) -> DirectoryServiceClient<Channel> {
    DirectoryServiceClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .expect("connect")
}

/// Every user a filter lists, walking all pages.
pub(crate) async fn list_all(
    c: &mut DirectoryServiceClient<Channel>,
    filter: &str,
    show_deleted: bool,
    page_size: i32,
) -> Vec<pb::User> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let r = c
            .list_users(pb::ListUsersRequest {
                page_size,
                page_token: token,
                filter: filter.into(),
                show_deleted,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e:?}"))
            .into_inner();
        out.extend(r.users);
        if r.next_page_token.is_empty() {
            return out;
        }
        token = r.next_page_token;
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// A varied population: names, flags, times and metadata of every JSON type.
fn population(rng: &mut Rng, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = format!("user_p{i:04}");
            let name: &str = rng.pick::<&str>(&["Ada", "Bob", "Cy", "ada", "Éva", ""]);
            let mut u = user(&id, T + i as i64, name);
            u["banned"] = json!(rng.next().is_multiple_of(4));
            u["created_at"] = json!(T + (i as i64) * 86_400_000);
            u["external_id"] = rng.pick(&[json!(null), json!(format!("ext-{i}")), json!("")]).clone();
            let mut meta = serde_json::Map::new();
            if let Some(plan) = rng.pick(&[
                Some(json!("pro")),
                Some(json!("free")),
                Some(json!(null)),
                Some(json!(5)),
                None,
            ]) {
                meta.insert("plan".into(), plan.clone());
            }
            if rng.next().is_multiple_of(2) {
                meta.insert("n".into(), json!((rng.next() % 10) as i64));
            }
            let tags: Vec<&str> = ["a", "b", "c"]
                .into_iter()
                .filter(|_| rng.next().is_multiple_of(2))
                .collect();
            meta.insert("tags".into(), json!(tags));
            meta.insert(
                "nested".into(),
                json!({"level": rng.pick(&["x", "y"]), "k": rng.next() % 3}),
            );
            u["public_metadata"] = Value::Object(meta);
            u["email_addresses"][1]["email_address"] = json!(format!("Shared{}@Example.com", i % 7));
            envelope("user.created", T, u)
        })
        .collect()
}

const ATOMS: &[&str] = &[
    r#"public_metadata.plan = "pro""#,
    r#"public_metadata.plan != "pro""#,
    "public_metadata.plan = null",
    "public_metadata.plan:*",
    "public_metadata.plan = 5",
    "public_metadata.n >= 5",
    "public_metadata.n < 3",
    r#"public_metadata.n > "a""#,
    r#"public_metadata.tags:"b""#,
    "public_metadata.tags:*",
    r#"public_metadata.nested.level = "x""#,
    "public_metadata.nested.k = 1",
    r#"public_metadata.missing.deeper = "x""#,
    r#"first_name = "Ada""#,
    r#"first_name > "Bob""#,
    r#"first_name <= "ada""#,
    "first_name:*",
    r#"first_name = """#,
    "external_id = null",
    "external_id:*",
    r#"external_id = "ext-3""#,
    "banned = true",
    "banned != true",
    r#"create_time > "2026-02-01T00:00:00Z""#,
    r#"create_time <= "2026-01-15T00:00:00Z""#,
    "last_sign_in_time = null",
    r#"email = "shared3@example.com""#,
    r#"email:"SHARED5@EXAMPLE.COM""#,
    r#"id >= "user_p0100""#,
    // Wildcards (AIP-160's `*` at either end); `%` and `_` are literals.
    r#"first_name = "A*""#,
    r#"first_name = "*a""#,
    r#"first_name = "*d*""#,
    r#"first_name != "É*""#,
    r#"first_name = "*""#,
    r#"first_name = "%*""#,
    r#"external_id = "ext-1*""#,
    r#"email = "*@example.com""#,
    r#"email = "shared3*""#,
    r#"public_metadata.plan = "*r*""#,
    r#"public_metadata.nested.level != "x*""#,
    // Injection attempts: inert strings.
    r#"first_name = "x' OR '1'='1""#,
    r#"public_metadata."plan'); DROP TABLE users; --" = 1"#,
];

fn random_filter(rng: &mut Rng, depth: u32) -> String {
    match if depth > 2 { 0 } else { rng.next() % 6 } {
        0 => rng.pick(ATOMS).to_string(),
        1 => format!(
            "({} AND {})",
            random_filter(rng, depth + 1),
            random_filter(rng, depth + 1)
        ),
        2 => format!(
            "({} OR {})",
            random_filter(rng, depth + 1),
            random_filter(rng, depth + 1)
        ),
        // Unparenthesized: AIP-160's precedence (OR first) and its implicit AND.
        3 => format!(
            "{} OR {} AND {}",
            random_filter(rng, depth + 1),
            random_filter(rng, depth + 1),
            random_filter(rng, depth + 1)
        ),
        4 => format!("{} {}", random_filter(rng, depth + 1), random_filter(rng, depth + 1)),
        _ => format!("NOT {}", random_filter(rng, depth + 1)),
    }
}

#[tokio::test]
async fn sql_and_in_memory_evaluation_agree_on_every_filter_over_a_generated_population() {
    let app = spawn_app().await;
    let mut rng = Rng(0xf11_7e5);
    let mut bodies = population(&mut rng, 240);
    bodies.push(user_deleted("user_p0007", T + 1));
    enqueue(&app.pool, &bodies).await;
    app.wait_until_applied().await;
    let records: Vec<UserRecord> = sqlx::query_as("SELECT * FROM users ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(records.len(), 240);
    let states: Vec<(String, bool, Value)> = records
        .iter()
        .map(|r| (r.id.clone(), r.deleted_at.is_some(), serde_json::to_value(r).unwrap()))
        .collect();
    let mut c = client(&app).await;
    let mut filters: Vec<String> = ATOMS.iter().map(|s| s.to_string()).collect();
    filters.extend((0..120).map(|_| random_filter(&mut rng, 0)));
    let mut matched_some = 0;
    for f in &filters {
        let parsed = Filter::parse(EntityType::User, f).unwrap().unwrap();
        for show_deleted in [false, true] {
            let expected: Vec<&str> = states
                .iter()
                .filter(|(_, deleted, state)| (show_deleted || !deleted) && parsed.matches(state))
                .map(|(id, ..)| id.as_str())
                .collect();
            let listed = list_all(&mut c, f, show_deleted, 1000).await;
            let got: Vec<&str> = listed.iter().map(|u| u.id.as_str()).collect();
            assert_eq!(
                got, expected,
                "filter {f} (show_deleted {show_deleted}): SQL and memory disagree"
            );
            if !expected.is_empty() && expected.len() < 240 {
                matched_some += 1;
            }
        }
    }
    // The generated cases are not all trivially empty or full.
    assert!(
        matched_some > filters.len(),
        "{matched_some} of {} cases discriminate",
        2 * filters.len()
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(users, 240, "the injection attempts were not inert");
    app.stop().await;
}

#[tokio::test]
async fn bad_filters_are_invalid_arguments_with_the_position() {
    let app = spawn_app().await;
    let mut c = client(&app).await;
    for (filter, position) in [
        ("banned = ", "9"),
        ("nope = 1", "0"),
        // A bare word after a complete comparison is free text, which is refused. (Two
        // comparisons side by side are an implicit AND since AIP-160's grammar; see `filters`.)
        (r#"first_name = "a" Lovelace"#, "17"),
        ("first_name = Ada Lovelace", "13"),
    ] {
        let e = c
            .list_users(pb::ListUsersRequest {
                filter: filter.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let info = e.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.metadata["position"].as_str()),
            ("INVALID_FILTER", position),
            "{filter}"
        );
    }
    let e = c
        .list_memberships(pb::ListMembershipsRequest {
            parent: "organizations/-".into(),
            filter: "banned = true".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("unknown field `banned`"), "{e:?}");
    app.stop().await;
}

#[tokio::test]
async fn page_sizes_default_coerce_and_refuse_negatives_and_tokens_are_bound_to_their_request() {
    let app = spawn_app().await;
    let mut rng = Rng(7);
    enqueue(&app.pool, &population(&mut rng, 1100)).await;
    app.wait_until_applied().await;
    let mut c = client(&app).await;
    let page = |size: i32| pb::ListUsersRequest {
        page_size: size,
        ..Default::default()
    };
    assert_eq!(c.list_users(page(0)).await.unwrap().into_inner().users.len(), 50);
    assert_eq!(c.list_users(page(5000)).await.unwrap().into_inner().users.len(), 1000);
    let e = c.list_users(page(-1)).await.unwrap_err();
    assert_eq!(e.get_details_error_info().unwrap().reason, "INVALID_PAGE_SIZE");

    let first = c
        .list_users(pb::ListUsersRequest {
            page_size: 10,
            filter: "banned = false".into(),
            ..Default::default()
        })
        .await;
    let token = first.unwrap().into_inner().next_page_token;
    assert!(!token.is_empty());
    // page_size may change between pages…
    let second = c
        .list_users(pb::ListUsersRequest {
            page_size: 20,
            page_token: token.clone(),
            filter: "banned = false".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.users.len(), 20);
    // …the filter and show_deleted may not.
    for r in [
        pb::ListUsersRequest {
            page_token: token.clone(),
            filter: "banned = true".into(),
            ..Default::default()
        },
        pb::ListUsersRequest {
            page_token: token.clone(),
            filter: "banned = false".into(),
            show_deleted: true,
            ..Default::default()
        },
        pb::ListUsersRequest {
            page_token: "garbage".into(),
            ..Default::default()
        },
    ] {
        let e = c.list_users(r).await.unwrap_err();
        assert_eq!(e.get_details_error_info().unwrap().reason, "INVALID_PAGE_TOKEN");
    }
    // Nor may a token move between RPCs.
    let e = c
        .list_organizations(pb::ListOrganizationsRequest {
            page_token: token,
            filter: "banned = false".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn a_page_ends_early_before_its_response_would_pass_3_mib() {
    let app = spawn_app().await;
    let bodies: Vec<String> = (0..12)
        .map(|i| {
            let mut u = user(&format!("user_big{i:02}"), T, "Big");
            u["public_metadata"] = json!({"blob": "x".repeat(700 * 1024)});
            envelope("user.created", T, u)
        })
        .collect();
    enqueue(&app.pool, &bodies).await;
    app.wait_until_applied().await;
    let mut c = client(&app).await.max_decoding_message_size(4 * 1024 * 1024);
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let r = c
            .list_users(pb::ListUsersRequest {
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            r.users.len() <= 4,
            "a page of {} users of 700 KiB passes 3 MiB",
            r.users.len()
        );
        assert!(!r.users.is_empty());
        seen.extend(r.users.into_iter().map(|u| u.id));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(seen.len(), 12);
    app.stop().await;
}

#[tokio::test]
async fn memberships_list_by_organization_or_across_organizations_by_user() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        membership_event("created", "orgmem_l1", "org_l1", "user_l1", T, T, "org:admin"),
        membership_event("created", "orgmem_l2", "org_l1", "user_l2", T, T, "org:member"),
        membership_event("created", "orgmem_l3", "org_l2", "user_l1", T, T, "org:member"),
        membership_event("deleted", "orgmem_l2", "org_l1", "user_l2", T, T + 5, "org:member"),
    ])
    .await;
    let mut c = client(&app).await;
    let ids = |r: pb::ListMembershipsResponse| r.memberships.into_iter().map(|m| m.id).collect::<Vec<_>>();
    let members = |parent: &str, filter: &str, show_deleted: bool| pb::ListMembershipsRequest {
        parent: parent.into(),
        filter: filter.into(),
        show_deleted,
        ..Default::default()
    };
    assert_eq!(
        ids(c
            .list_memberships(members("organizations/org_l1", "", false))
            .await
            .unwrap()
            .into_inner()),
        ["orgmem_l1"]
    );
    assert_eq!(
        ids(c
            .list_memberships(members("organizations/org_l1", "", true))
            .await
            .unwrap()
            .into_inner()),
        ["orgmem_l1", "orgmem_l2"]
    );
    assert_eq!(
        ids(c
            .list_memberships(members("organizations/-", r#"user_id = "user_l1""#, false))
            .await
            .unwrap()
            .into_inner()),
        ["orgmem_l1", "orgmem_l3"]
    );
    assert_eq!(
        ids(c
            .list_memberships(members(
                "organizations/-",
                r#"role = "org:admin" AND permissions:*"#,
                false
            ))
            .await
            .unwrap()
            .into_inner()),
        ["orgmem_l1"]
    );
    let e = c.list_memberships(members("org_l1", "", false)).await.unwrap_err();
    assert_eq!(e.get_details_error_info().unwrap().reason, "INVALID_NAME");
    let orgs = c
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(orgs.organizations.is_empty() && !orgs.cursor.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn walking_2500_users_while_500_updates_and_50_deletes_apply_lists_each_survivor_once_and_list_then_watch_rebuilds_the_end_state()
 {
    let app = spawn_app().await;
    let bodies: Vec<String> = (0..2500)
        .map(|i| user_event("created", &format!("user_w{i:04}"), T, T, "Start"))
        .collect();
    enqueue(&app.pool, &bodies).await;
    app.wait_until_applied().await;
    let log_id: String = sqlx::query_scalar("SELECT log_id FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    // The writes: 500 updates and 50 deletes, applied between the page reads (25 per page), so
    // every page is read at a different state.
    let mut rng = Rng(99);
    let mut writes: Vec<String> = Vec::new();
    let mut deleted = BTreeSet::new();
    while deleted.len() < 50 {
        let id = format!("user_w{:04}", rng.next() % 2500);
        if deleted.insert(id.clone()) {
            writes.push(user_deleted(&id, T + 10_000));
        }
    }
    for k in 0..500 {
        let id = format!("user_w{:04}", rng.next() % 2500);
        writes.push(user_event("updated", &id, T + 1 + k, T + 1, &format!("Update {k}")));
    }
    // Shuffle deletes among the updates.
    for i in (1..writes.len()).rev() {
        writes.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut pending_writes = writes.chunks(25);

    let mut c = client(&app).await;
    let mut listed: BTreeMap<String, pb::User> = BTreeMap::new();
    let mut first_cursor = None;
    let mut token = String::new();
    loop {
        let r = c
            .list_users(pb::ListUsersRequest {
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        first_cursor.get_or_insert(r.cursor.clone());
        for u in r.users {
            assert!(listed.insert(u.id.clone(), u).is_none(), "listed twice");
        }
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
        if let Some(chunk) = pending_writes.next() {
            enqueue(&app.pool, chunk).await;
            app.wait_until_applied().await;
        }
    }
    assert!(pending_writes.next().is_none(), "every write landed during the walk");
    for i in 0..2500 {
        let id = format!("user_w{i:04}");
        assert!(
            deleted.contains(&id) || listed.contains_key(&id),
            "{id} existed throughout but was not listed"
        );
    }

    // List-then-watch, exactly as the README says: watch from the first page's cursor and drop
    // each change whose cursor is <= the listed entity's update_cursor (cursors compare as strings).
    let first_cursor = first_cursor.unwrap();
    assert_eq!(Cursor::decode(&first_cursor).unwrap().log_id, log_id);
    let head: i64 = sqlx::query_scalar("SELECT head_seq FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut watcher = WatchServiceClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap();
    let request = pb::WatchChangesRequest {
        start: Some(pb::watch_changes_request::Start::StartCursor(first_cursor)),
        ..Default::default()
    };
    let mut stream = watcher.watch_changes(request).await.unwrap().into_inner();
    let mut state: BTreeMap<String, pb::User> = listed;
    loop {
        let message = stream.message().await.unwrap().unwrap();
        let at = match message.event.unwrap() {
            Event::Change(change) => {
                let Some(pb::change::Entity::User(user)) = change.entity else {
                    panic!("users only here")
                };
                let skip = state
                    .get(&user.id)
                    .is_some_and(|known| change.cursor <= known.update_cursor);
                if !skip {
                    if change.operation == pb::Operation::Deleted as i32 {
                        state.remove(&user.id);
                    } else {
                        state.insert(user.id.clone(), user);
                    }
                }
                change.cursor
            }
            Event::CaughtUp(c) => c.cursor,
            Event::Heartbeat(h) => h.cursor,
        };
        if Cursor::decode(&at).unwrap().seq >= head {
            break;
        }
    }
    let end: BTreeMap<String, pb::User> = list_all(&mut c, "", false, 1000)
        .await
        .into_iter()
        .map(|u| (u.id.clone(), u))
        .collect();
    assert_eq!(end.len(), 2500 - deleted.len());
    assert!(state == end, "list-then-watch did not reproduce the final state");
    app.stop().await;
}

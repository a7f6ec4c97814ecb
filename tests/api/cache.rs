//! The read cache through the API: reads from memory equal reads from PostgreSQL at the same
//! cursor (generated workloads), `consistency` (at_least_as_fresh waits, a passed deadline is
//! NOT_YET_CONSISTENT, cursors past the head or from another log), and the cache following the
//! log through a lagging hub, a lost LISTEN connection and a cursor the log no longer holds.

// Request literals end with `..Default::default()` even when every field is set today.
#![allow(clippy::needless_update)]

use std::time::Duration;

use clerk_mirror::cache::{ReadCache, Waited};
use clerk_mirror::grpc::cursor::Cursor;
use clerk_mirror::pb;
use clerk_mirror::pb::directory_service_client::DirectoryServiceClient;
use proptest::strategy::{Strategy, ValueTree};
use serde_json::{Value, json};
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
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::MinimizeLatency(true)),
    })
}

fn database() -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::FullyConsistent(true)),
    })
}

fn fresh(cursor: &str) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(pb::AtLeastAsFresh {
            cursor: cursor.to_string(),
        })),
    })
}

/// A response or an error, comparable: the encoded message, or the code, reason and metadata.
type Outcome = Result<Vec<u8>, (Code, String, Vec<(String, String)>)>;

fn outcome<T: prost::Message>(r: Result<tonic::Response<T>, tonic::Status>) -> Outcome {
    match r {
        Ok(r) => Ok(r.into_inner().encode_to_vec()),
        Err(s) => {
            let info = s.get_details_error_info().expect("an ErrorInfo");
            let mut metadata: Vec<_> = info.metadata.into_iter().collect();
            metadata.sort();
            Err((s.code(), info.reason, metadata))
        }
    }
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().expect("an ErrorInfo").reason
}

/// Every read the cache answers, with `consistency`, as outcomes in a fixed order.
async fn every_read(
    c: &mut DirectoryServiceClient<Channel>,
    g: usize,
    consistency: Option<pb::Consistency>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    let con = || consistency.clone();
    for u in 0..5 {
        for show_deleted in [false, true] {
            out.push(outcome(
                c.get_user(pb::GetUserRequest {
                    name: format!("users/user_{g}_{u}"),
                    show_deleted,
                    consistency: con(),
                    ..Default::default()
                })
                .await,
            ));
        }
        use pb::lookup_user_request::Key;
        for key in [
            Key::Email(format!("person{u}@example.com")),
            Key::Email(format!("PERSON{u}@EXAMPLE.COM")),
            Key::Username(format!("NAME{u}")),
            Key::ExternalId(format!("ext-user_{g}_{u}")),
            Key::PhoneNumber(format!("+1555555010{u}")),
        ] {
            out.push(outcome(
                c.lookup_user(pb::LookupUserRequest {
                    key: Some(key),
                    consistency: con(),
                    ..Default::default()
                })
                .await,
            ));
        }
    }
    for show_deleted in [false, true] {
        out.push(outcome(
            c.batch_get_users(pb::BatchGetUsersRequest {
                names: (0..5).map(|u| format!("users/user_{g}_{u}")).collect(),
                show_deleted,
                consistency: con(),
                ..Default::default()
            })
            .await,
        ));
        out.push(outcome(
            c.batch_get_organizations(pb::BatchGetOrganizationsRequest {
                names: (0..3).map(|o| format!("organizations/org_{g}_{o}")).collect(),
                show_deleted,
                consistency: con(),
                ..Default::default()
            })
            .await,
        ));
    }
    for o in 0..3 {
        out.push(outcome(
            c.get_organization(pb::GetOrganizationRequest {
                name: format!("organizations/org_{g}_{o}"),
                show_deleted: true,
                consistency: con(),
                ..Default::default()
            })
            .await,
        ));
        out.push(outcome(
            c.lookup_organization(pb::LookupOrganizationRequest {
                slug: format!("slug-{o}"),
                consistency: con(),
                ..Default::default()
            })
            .await,
        ));
        for u in 0..5 {
            out.push(outcome(
                c.lookup_membership(pb::LookupMembershipRequest {
                    organization: format!("organizations/org_{g}_{o}"),
                    user: format!("users/user_{g}_{u}"),
                    consistency: con(),
                    ..Default::default()
                })
                .await,
            ));
        }
        for m in 0..4 {
            for show_deleted in [false, true] {
                out.push(outcome(
                    c.get_membership(pb::GetMembershipRequest {
                        name: format!("organizations/org_{g}_{o}/memberships/mem_{g}_{m}"),
                        show_deleted,
                        consistency: con(),
                    })
                    .await,
                ));
            }
        }
    }
    out
}

/// One generated write.
#[derive(Debug, Clone)]
enum Write {
    User {
        id: u8,
        email: u8,
        upper: bool,
        username: u8,
        phone: u8,
        updated: i64,
    },
    UserDeleted(u8),
    Org {
        id: u8,
        slug: u8,
        updated: i64,
    },
    OrgDeleted(u8),
    Membership {
        id: u8,
        org: u8,
        user: u8,
        updated: i64,
        deleted: bool,
    },
}

fn write() -> impl Strategy<Value = Write> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..5u8, 0..4u8, any::<bool>(), 0..3u8, 0..3u8, 1..6i64).prop_map(|(id, email, upper, username, phone, updated)| {
            Write::User { id, email, upper, username, phone, updated }
        }),
        1 => (0..5u8).prop_map(Write::UserDeleted),
        2 => (0..3u8, 0..3u8, 1..6i64).prop_map(|(id, slug, updated)| Write::Org { id, slug, updated }),
        1 => (0..3u8).prop_map(Write::OrgDeleted),
        3 => (0..4u8, 0..2u8, 0..2u8, 1..3i64, proptest::bool::weighted(0.2)).prop_map(|(id, org, user, updated, deleted)| {
            Write::Membership { id, org, user, updated, deleted }
        }),
    ]
}

/// The event of a write in generation `g` (its own ids: deletes are final), at event time `at`.
/// Emails, usernames, phone numbers and slugs are shared between entities and generations on
/// purpose: they move from one to another.
fn event(w: &Write, g: usize, at: i64) -> String {
    match w {
        Write::User {
            id,
            email,
            upper,
            username,
            phone,
            updated,
        } => {
            let id = format!("user_{g}_{id}");
            let mut u = user(&id, T + updated * 1000, "Gen");
            let address = format!("person{email}@example.com");
            let address = if *upper { address.to_uppercase() } else { address };
            u["email_addresses"][0]["email_address"] = json!(address);
            u["username"] = json!(format!("name{username}"));
            u["phone_numbers"][0]["phone_number"] = json!(format!("+1555555010{phone}"));
            envelope("user.updated", at, u)
        }
        Write::UserDeleted(id) => user_deleted(&format!("user_{g}_{id}"), at),
        Write::Org { id, slug, updated } => {
            let mut o = org(&format!("org_{g}_{id}"), T + updated * 1000, "Gen");
            o["slug"] = json!(format!("slug-{slug}"));
            envelope("organization.updated", at, o)
        }
        Write::OrgDeleted(id) => org_deleted(&format!("org_{g}_{id}"), at),
        Write::Membership {
            id,
            org,
            user,
            updated,
            deleted,
        } => {
            let m = membership(
                &format!("mem_{g}_{id}"),
                &format!("org_{g}_{org}"),
                &format!("user_{g}_{user}"),
                T + updated * 1000,
                "org:member",
            );
            let kind = if *deleted { "deleted" } else { "updated" };
            envelope(&format!("organizationMembership.{kind}"), at, m)
        }
    }
}

#[tokio::test]
async fn every_read_through_memory_equals_the_same_read_through_postgresql_for_generated_workloads() {
    let (cluster, name) = shared_database().await;
    let app = spawn_app_on(cluster, &name, |_| {}).await;
    let mut c = client(&app).await;
    // A second replica on the same database without a cache: its reads are PostgreSQL's.
    let postgres = spawn_app_on(cluster, &name, |c| c.read_cache_bytes = 0).await;
    let mut p = client(&postgres).await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let workload = proptest::collection::vec(write(), 1..30);
    let mut at = T;
    for case in 0..12 {
        let writes = workload.new_tree(&mut runner).expect("a workload").current();
        let bodies: Vec<String> = writes
            .iter()
            .map(|w| {
                at += 1000;
                event(w, case, at)
            })
            .collect();
        enqueue(&app.pool, &bodies).await;
        // The applier has applied everything and the cache has applied the log's head.
        app.wait_until_applied().await;
        let from_memory = every_read(&mut c, case, memory()).await;
        let from_database = every_read(&mut p, case, database()).await;
        // `fully_consistent` through the read index (memory, at the log's head) answers the same.
        let read_index = every_read(&mut c, case, database()).await;
        assert_eq!(read_index, from_database, "case {case}: the read index");
        assert_eq!(from_memory.len(), from_database.len());
        for (i, (m, d)) in from_memory.iter().zip(&from_database).enumerate() {
            assert_eq!(m, d, "case {case}, read {i}, after {writes:?}");
        }
        assert!(from_memory.iter().any(Result::is_ok), "case {case} found nothing");
        // The cache-less replica's gets send the stored messages: each equals its row converted.
        crate::directory::assert_stored_messages_match_their_rows(&app.pool).await;
    }
    // The memory reads were answered from memory (hits and certain negatives), none refused.
    let metrics = get(&format!("http://{}/metrics", app.admin_addr)).await.body;
    let count = |outcome: &str| -> f64 {
        let prefix = format!("clerk_mirror_read_cache_reads_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0.0, |v| v.parse().unwrap())
    };
    assert!(count("hit") > 0.0 && count("absent") > 0.0, "{metrics}");
    assert_eq!(count("not_ready"), 0.0);
}

/// Commits a change of `user_id`'s first name the way the applier does, but without the NOTIFY
/// that wakes the hubs; returns its seq. The row's stored message is dropped (the applier writes
/// the new one; a row without one is converted when PostgreSQL answers a read).
async fn write_behind_the_hubs_back(app: &TestApp, user_id: &str, first_name: &str) -> i64 {
    let mut tx = app.pool.begin().await.unwrap();
    let seq: i64 = sqlx::query_scalar("UPDATE log_head SET head_seq = head_seq + 1 RETURNING head_seq")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let state: Value = sqlx::query_scalar(
        "UPDATE users SET first_name = $2, update_cursor = $3, message = NULL, message_format = NULL WHERE id = $1
         RETURNING to_jsonb(users.*) - 'version_updated_ms' - 'version_event_ms' - 'version_key' - 'update_cursor'
                   - 'message' - 'message_format'",
    )
    .bind(user_id)
    .bind(first_name)
    .bind(seq)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO changes (seq, entity_type, entity_id, operation, user_id, state, source)
         VALUES ($1, 'user', $2, 'updated', $2, $3, 'test')",
    )
    .bind(seq)
    .bind(user_id)
    .bind(&state)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    seq
}

fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(deadline);
    r
}

#[tokio::test]
async fn at_least_as_fresh_waits_until_the_replica_has_applied_the_cursor_and_a_passed_deadline_is_not_yet_consistent()
{
    // The hub never polls: only a NOTIFY wakes it.
    let app = spawn_app_with(|c| {
        c.hub_poll = Duration::from_secs(3600);
    })
    .await;
    app.send_all_and_apply(&[user_event("created", "user_f", T, T, "Before")])
        .await;
    let mut c = client(&app).await;
    let get = |consistency| pb::GetUserRequest {
        name: "users/user_f".into(),
        consistency,
        ..Default::default()
    };
    let seq = write_behind_the_hubs_back(&app, "user_f", "After").await;
    let log_id: String = sqlx::query_scalar("SELECT log_id FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let token = Cursor::new(&log_id, seq).encode();

    // The replica has not seen it: memory still says Before, at an older cursor.
    let stale = c.get_user(get(memory())).await.unwrap().into_inner();
    assert_eq!(stale.user.unwrap().first_name, "Before");
    assert!(stale.cursor < token);
    // Requiring it: the deadline passes, and the error says so (with both cursors).
    let status = c
        .get_user(with_deadline(get(fresh(&token)), Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::Unavailable, "NOT_YET_CONSISTENT")
    );
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.metadata.get("requestedCursor"), Some(&token));
    assert_eq!(info.metadata.get("replicaCursor"), Some(&stale.cursor));
    // PostgreSQL has it.
    let direct = c.get_user(get(database())).await.unwrap().into_inner();
    assert_eq!(direct.user.unwrap().first_name, "After");
    assert_eq!(direct.cursor, token);

    // A read that may wait, then the wake-up the applier would have sent: it is answered, fresh.
    let waiting = {
        let mut c = c.clone();
        let request = with_deadline(get(fresh(&token)), Duration::from_secs(20));
        tokio::spawn(async move { c.get_user(request).await })
    };
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(clerk_mirror::db::CHANGES_CHANNEL)
        .execute(&app.pool)
        .await
        .unwrap();
    let answered = waiting.await.unwrap().unwrap().into_inner();
    assert_eq!(answered.user.unwrap().first_name, "After");
    assert!(answered.cursor >= token);
    // And never older data from then on, from memory.
    let later = c.get_user(get(fresh(&token))).await.unwrap().into_inner();
    assert_eq!(later.user.unwrap().first_name, "After");
    let now = c.get_user(get(memory())).await.unwrap().into_inner();
    assert_eq!(now.user.unwrap().first_name, "After");
}

#[tokio::test]
async fn at_least_as_fresh_rejects_cursors_past_the_head_from_another_log_or_malformed() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[user_event("created", "user_g", T, T, "G")])
        .await;
    let mut c = client(&app).await;
    let head = c
        .get_user(pb::GetUserRequest {
            name: "users/user_g".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .cursor;
    let mut ahead = Cursor::decode(&head).unwrap();
    ahead.seq += 10;
    let mut other = Cursor::decode(&head).unwrap();
    other.log_id = "anotherlog".into();
    for (cursor, code, why) in [
        (ahead.encode(), Code::OutOfRange, "CURSOR_IN_FUTURE"),
        (other.encode(), Code::OutOfRange, "CURSOR_EXPIRED"),
        ("c1.garbage".to_string(), Code::InvalidArgument, "INVALID_CURSOR"),
    ] {
        let status = c
            .lookup_user(pb::LookupUserRequest {
                key: Some(pb::lookup_user_request::Key::Email("user_g@example.com".into())),
                consistency: fresh(&cursor),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!((status.code(), reason(&status).as_str()), (code, why), "{cursor}");
    }
    // The head itself is fine, and so is a cursor from before it.
    let mut before = Cursor::decode(&head).unwrap();
    before.seq -= 1;
    for cursor in [head.clone(), before.encode()] {
        let r = c
            .lookup_user(pb::LookupUserRequest {
                key: Some(pb::lookup_user_request::Key::Email("USER_G@example.com".into())),
                consistency: fresh(&cursor),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.cursor >= cursor);
    }
}

#[tokio::test]
async fn lists_read_postgresql_and_refuse_only_a_cursor_past_the_head() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[user_event("created", "user_l", T, T, "L")])
        .await;
    let mut c = client(&app).await;
    let list = |consistency| pb::ListUsersRequest {
        consistency,
        ..Default::default()
    };
    let page = c.list_users(list(None)).await.unwrap().into_inner();
    assert_eq!(page.users.len(), 1);
    let same = c.list_users(list(fresh(&page.cursor))).await.unwrap().into_inner();
    assert_eq!(same.cursor, page.cursor);
    let mut ahead = Cursor::decode(&page.cursor).unwrap();
    ahead.seq += 1;
    let status = c.list_users(list(fresh(&ahead.encode()))).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::OutOfRange, "CURSOR_IN_FUTURE")
    );
}

#[tokio::test]
async fn over_its_budget_the_cache_holds_what_fits_and_reads_of_the_rest_go_to_postgresql() {
    // Room for about two of these users (each is accounted at 500 to 700 bytes: its encoding,
    // its keys, its slots).
    let app = spawn_app_with(|c| {
        c.read_cache_bytes = 1_500;
    })
    .await;
    let bodies: Vec<String> = (0..5)
        .map(|i| user_event("created", &format!("user_{i}"), T, T, "Budget"))
        .collect();
    app.send_all_and_apply(&bodies).await;
    let cache = app.cache.as_ref().unwrap();
    let (held, bytes, complete) = cache.read(|i| (i.entries().0, i.bytes(), i.complete())).unwrap();
    assert!(
        (1..5).contains(&held) && bytes <= 1_500 && !complete,
        "{held} {bytes} {complete}"
    );
    let mut c = client(&app).await;
    for i in 0..6 {
        let get = |consistency| pb::GetUserRequest {
            name: format!("users/user_{i}"),
            consistency,
            ..Default::default()
        };
        let lookup = |consistency| pb::LookupUserRequest {
            key: Some(pb::lookup_user_request::Key::Email(format!("USER_{i}@example.com"))),
            consistency,
            ..Default::default()
        };
        assert_eq!(
            outcome(c.get_user(get(memory())).await),
            outcome(c.get_user(get(database())).await)
        );
        assert_eq!(
            outcome(c.lookup_user(lookup(memory())).await),
            outcome(c.lookup_user(lookup(database())).await)
        );
    }
    assert_memory_matches_the_database(&app, 5).await;
    let metrics = get(&format!("http://{}/metrics", app.admin_addr)).await.body;
    for outcome in ["hit", "fallback"] {
        let line = format!("clerk_mirror_read_cache_reads_total{{outcome=\"{outcome}\"}} 0");
        assert!(
            metrics.contains(&format!("outcome=\"{outcome}\"")) && !metrics.contains(&line),
            "{outcome}: {metrics}"
        );
    }
}

/// Asserts that memory and PostgreSQL answer the same for `n` users `user_{i}`.
async fn assert_memory_matches_the_database(app: &TestApp, n: usize) {
    let mut c = client(app).await;
    let names: Vec<String> = (0..n).map(|i| format!("users/user_{i}")).collect();
    let batch = |consistency| pb::BatchGetUsersRequest {
        names: names.clone(),
        show_deleted: true,
        consistency,
        ..Default::default()
    };
    let m = c.batch_get_users(batch(memory())).await.unwrap().into_inner();
    let d = c.batch_get_users(batch(database())).await.unwrap().into_inner();
    assert_eq!(m, d);
}

#[tokio::test]
async fn the_cache_survives_a_lagging_hub_buffer_and_a_lost_listen_connection_without_gaps() {
    // A buffer of one change: a burst overruns the cache's subscription.
    let app = spawn_app_with(|c| {
        c.hub_capacity = 1;
    })
    .await;
    let bodies: Vec<String> = (0..60)
        .map(|i| user_event("created", &format!("user_{i}"), T + i, T + i, "Burst"))
        .collect();
    enqueue(&app.pool, &bodies).await;
    app.wait_until_applied().await;
    assert_memory_matches_the_database(&app, 60).await;

    // The hub's LISTEN connection dies; what happens meanwhile still reaches the cache.
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND query ILIKE 'LISTEN%') t",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(killed >= 1, "no LISTEN connection found");
    let bodies: Vec<String> = (0..60)
        .map(|i| user_event("updated", &format!("user_{i}"), T + 1000 + i, T + 1000 + i, "After"))
        .collect();
    enqueue(&app.pool, &bodies).await;
    app.wait_until_applied().await;
    assert_memory_matches_the_database(&app, 60).await;
}

#[tokio::test]
async fn a_cache_whose_cursor_the_log_no_longer_holds_reloads() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[user_event("created", "user_0", T, T, "Old")])
        .await;
    let log_id: String = sqlx::query_scalar("SELECT log_id FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // A replica's index as loaded now…
    let old = clerk_mirror::cache::follow::load(&app.pool, &log_id, usize::MAX)
        .await
        .unwrap();
    let loaded_at = old.cursor();
    // …then changes it never saw, which retention then prunes.
    app.send_all_and_apply(&[
        user_event("updated", "user_0", T + 1, T + 1, "New"),
        user_event("created", "user_1", T, T, "Unseen"),
    ])
    .await;
    sqlx::query("UPDATE log_head SET oldest_seq = head_seq + 1")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM changes").execute(&app.pool).await.unwrap();

    let metrics = clerk_mirror::metrics::Metrics::new();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (hub, hub_task) = clerk_mirror::hub::Hub::spawn(
        app.pool.clone(),
        16,
        Duration::from_secs(3600),
        stop.clone(),
        metrics.clone(),
    )
    .await
    .unwrap();
    let cache = ReadCache::new(metrics);
    let task = tokio::spawn(clerk_mirror::cache::follow::run(
        cache.clone(),
        app.pool.clone(),
        hub,
        log_id.clone(),
        usize::MAX,
        Some(old),
        stop,
    ));
    assert!(cache.wait_until_ready(Duration::from_secs(10)).await);
    let first_name = |cache: &ReadCache, id: &str| {
        cache.read(|i| match i.user(id) {
            clerk_mirror::cache::Answer::Found(u, _) => Some(u.message.decode().unwrap().first_name),
            _ => None,
        })
    };
    // It serves the index it was given until its feed, reading the log from that cursor, finds
    // the gap (which may already have happened: the feed reads the log as it starts).
    let (cursor, name) = cache
        .read(|i| {
            let name = match i.user("user_0") {
                clerk_mirror::cache::Answer::Found(u, _) => Some(u.message.decode().unwrap().first_name),
                _ => None,
            };
            (i.cursor(), name)
        })
        .unwrap();
    let pruned_head = loaded_at + 2;
    assert!(
        (cursor, name.as_deref()) == (loaded_at, Some("Old")) || (cursor, name.as_deref()) == (pruned_head, Some("New")),
        "neither the given index nor a reload: {cursor} {name:?}"
    );
    // The next change shows a gap the log cannot fill: the cache reloads from the projections.
    app.send_all_and_apply(&[user_event("created", "user_2", T, T, "Next")])
        .await;
    let head: i64 = sqlx::query_scalar("SELECT head_seq FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cache.wait_for(head, Duration::from_secs(1)).await != Waited::Reached {
        assert!(std::time::Instant::now() < deadline, "no reload: {:?}", cache.state());
        cache.wait_until_ready(Duration::from_secs(1)).await;
    }
    assert_eq!(first_name(&cache, "user_0"), Some(Some("New".into())));
    assert_eq!(first_name(&cache, "user_1"), Some(Some("Unseen".into())));
    assert_eq!(first_name(&cache, "user_2"), Some(Some("Next".into())));
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    hub_task.await.unwrap();
}

#[tokio::test]
async fn a_lookup_key_with_a_nul_is_invalid_from_memory_and_from_postgresql_alike() {
    // PostgreSQL text cannot hold NUL: the database refused the key (INTERNAL) where memory said
    // NOT_FOUND. Both now refuse it before reading.
    let app = spawn_app().await;
    app.send_all_and_apply(&[user_event("created", "user_n", T, T, "N")])
        .await;
    let mut c = client(&app).await;
    use pb::lookup_user_request::Key;
    for key in [
        Key::Email("user_n\0@example.com".into()),
        Key::Username("name\0".into()),
        Key::ExternalId("ext\0".into()),
        Key::PhoneNumber("+1555\0".into()),
    ] {
        let ask = |consistency| pb::LookupUserRequest {
            key: Some(key.clone()),
            consistency,
            ..Default::default()
        };
        for consistency in [memory(), database()] {
            let status = c.lookup_user(ask(consistency)).await.unwrap_err();
            assert_eq!(
                (status.code(), reason(&status).as_str()),
                (Code::InvalidArgument, "INVALID_KEY"),
                "{key:?}"
            );
        }
    }
    for consistency in [memory(), database()] {
        let status = c
            .lookup_organization(pb::LookupOrganizationRequest {
                slug: "slug\0".into(),
                consistency,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::InvalidArgument, "INVALID_KEY")
        );
    }
}

#[tokio::test]
async fn among_users_sharing_a_key_memory_and_postgresql_answer_the_least_id_in_byte_order_whatever_the_collation() {
    let app = spawn_app().await;
    // A database whose ids sort by ICU's English rules ("user_a" < "user_B"), not by bytes.
    sqlx::query(r#"ALTER TABLE users ALTER COLUMN id TYPE text COLLATE "en-x-icu""#)
        .execute(&app.pool)
        .await
        .expect("an ICU collation (PostgreSQL is built with ICU)");
    let shared = |id: &str| {
        let mut data = user(id, T, "Twin");
        data["external_id"] = json!("ext-shared");
        envelope("user.created", T, data)
    };
    app.send_all_and_apply(&[shared("user_a"), shared("user_B")]).await;
    let mut c = client(&app).await;
    for consistency in [memory(), database()] {
        let found = c
            .lookup_user(pb::LookupUserRequest {
                key: Some(pb::lookup_user_request::Key::ExternalId("ext-shared".into())),
                consistency: consistency.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(found.id, "user_B", "{consistency:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_read_from_memory_never_sees_part_of_a_batch_so_a_deleted_user_never_keeps_active_memberships() {
    let app = spawn_app().await;
    // The deletion's batch (the user's tombstone, then the end of each membership, all in one
    // transaction) longer than any page or buffer: the cache reads it from the database…
    deleting_a_member_of_many_organizations_shows_all_or_nothing(&app, "user_x", 3000).await;
    // …and shorter than the hub's buffer (1,024 changes): the cache takes it live.
    deleting_a_member_of_many_organizations_shows_all_or_nothing(&app, "user_y", 500).await;
}

/// Makes `user` a member of `m` organizations, then deletes it while readers look at memory:
/// none of them sees the user deleted with memberships still active (or the reverse).
async fn deleting_a_member_of_many_organizations_shows_all_or_nothing(app: &TestApp, user: &'static str, m: usize) {
    let cache = app.cache.clone().expect("the cache is on");
    let mut bodies = vec![user_event("created", user, T, T, "X")];
    bodies.extend((0..m).map(|k| {
        membership_event(
            "created",
            &format!("orgmem_{user}_{k}"),
            &format!("org_{k}"),
            user,
            T,
            T,
            "org:member",
        )
    }));
    enqueue(&app.pool, &bodies).await;
    app.wait_until_applied().await;

    // What one read of the index sees: whether the user is deleted, and how many of its
    // memberships are still active.
    let orgs: Vec<String> = (0..m).map(|k| format!("org_{k}")).collect();
    let look = move |cache: &ReadCache| {
        cache.read(|i| {
            let deleted = match i.user(user) {
                clerk_mirror::cache::Answer::Found(u, _) => u.deleted && u.message.decode().unwrap().delete_time.is_some(),
                other => panic!("{user} is held: {other:?}"),
            };
            let active = orgs
                .iter()
                .filter(|o| matches!(i.membership_of(o, user), clerk_mirror::cache::Answer::Found(..)))
                .count();
            (deleted, active, i.cursor())
        })
    };
    assert_eq!(look(&cache), Some((false, m, look(&cache).unwrap().2)));

    // Readers on their own threads look at memory as fast as they can while the deletion
    // applies: from before it (each has looked once before it is sent) until each has seen it.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut started = Vec::new();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, done, look) = (cache.clone(), done.clone(), look.clone());
            let (looked, started_rx) = tokio::sync::oneshot::channel();
            started.push(started_rx);
            std::thread::spawn(move || {
                let (mut before, mut after, mut torn) = (0u64, 0u64, Vec::new());
                let mut looked = Some(looked);
                while !(done.load(std::sync::atomic::Ordering::Acquire) && after > 0) {
                    match look(&cache) {
                        Some((false, active, _)) if active == m => before += 1,
                        Some((true, 0, _)) => after += 1,
                        Some(seen) => torn.push(seen),
                        None => {}
                    }
                    if let Some(tx) = looked.take() {
                        let _ = tx.send(());
                    }
                }
                (before, after, torn)
            })
        })
        .collect();
    for s in started {
        s.await.unwrap();
    }
    enqueue(&app.pool, &[user_deleted(user, T + 1)]).await;
    app.wait_until_applied().await;
    done.store(true, std::sync::atomic::Ordering::Release);
    let (mut before, mut after, mut torn) = (0, 0, Vec::new());
    for r in readers {
        let (b, a, t) = r.join().unwrap();
        (before, after) = (before + b, after + a);
        torn.extend(t);
    }
    eprintln!(
        "{user} in {m} organizations, reads from memory: {before} before the deletion, {after} after, {} torn",
        torn.len()
    );
    assert!(
        torn.is_empty(),
        "reads saw part of the deletion's batch (deleted, active memberships, cursor): {:?}",
        &torn[..torn.len().min(5)]
    );
    assert!(
        before >= 2 && after >= 2,
        "each reader saw both sides: {before} before, {after} after"
    );
    assert_eq!(look(&cache).map(|(d, a, _)| (d, a)), Some((true, 0)));
}

/// Linearizability of `fully_consistent` through the read index: a change committed before a
/// read began is always in its answer, whichever way the replica learns of it (its hub's
/// NOTIFY, or not at all: a commit the hub is never told of makes the read wait, then PostgreSQL
/// answers), while other reads run at the same time; and concurrent reads share head queries.
#[tokio::test]
async fn a_fully_consistent_read_sees_every_change_committed_before_it_began_and_reads_share_their_head_queries() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[user_event("created", "user_lin", T, T, "v0")]).await;
    let c = client(&app).await;
    let read = |mut c: DirectoryServiceClient<Channel>| async move {
        c.get_user(pb::GetUserRequest {
            name: "users/user_lin".into(),
            consistency: database(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    };
    // Background readers keep fully consistent reads in flight throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut background = Vec::new();
    for _ in 0..8 {
        let (c, stop) = (c.clone(), stop.clone());
        background.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                read(c.clone()).await;
                n += 1;
            }
            n
        }));
    }
    for i in 1..=40 {
        let name = format!("v{i}");
        let seq = if i % 4 == 0 {
            // Committed behind the hubs' back: no NOTIFY, nothing tells the cache.
            write_behind_the_hubs_back(&app, "user_lin", &name).await
        } else {
            app.send(&user_event("updated", "user_lin", T + i, T + i, &name)).await;
            wait_until_applied(&app.pool).await;
            sqlx::query_scalar("SELECT head_seq FROM log_head").fetch_one(&app.pool).await.unwrap()
        };
        // The commit is done: a read that begins now must see it.
        let got = read(c.clone()).await;
        let user = got.user.unwrap();
        assert_eq!(user.first_name, name, "read {i} missed a change committed before it began");
        let at = Cursor::decode(&got.cursor).unwrap().seq;
        assert!(at >= seq, "read {i} answered at {at}, before the commit {seq}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut reads = 40;
    for b in background {
        reads += b.await.unwrap();
    }
    // Answered from memory: hits counted, and fewer head queries than reads.
    let metrics = get(&format!("http://{}/metrics", app.admin_addr)).await.body;
    let hits: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("clerk_mirror_read_cache_reads_total{outcome=\"hit\"} "))
        .map_or(0.0, |v| v.parse().unwrap());
    assert!(hits > reads as f64 / 2.0, "{hits} hits for {reads} reads: {metrics}");

    // The read index itself: 200 reads at once share a few queries, and each learns a head no
    // older than the one committed before it asked.
    let index = clerk_mirror::cache::ReadIndex::new(app.pool.clone());
    let before: i64 = sqlx::query_scalar("SELECT head_seq FROM log_head").fetch_one(&app.pool).await.unwrap();
    let heads = futures::future::join_all((0..200).map(|_| index.head())).await;
    assert!(heads.iter().all(|h| *h.as_ref().unwrap() >= before), "{heads:?}");
    assert!(index.queries() < 200 && index.queries() >= 1, "{} queries for 200 reads", index.queries());
    app.stop().await;
}

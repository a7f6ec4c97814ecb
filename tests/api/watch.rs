//! `WatchChanges`: backlog, caught_up, live; resuming; every error; filters and left_filter;
//! many watchers; a watcher that reads nothing; replicas; shutdown.

use std::time::Duration;

use clerk_mirror::grpc::cursor::Cursor;
use clerk_mirror::pb;
use clerk_mirror::pb::watch_changes_response::Event;
use clerk_mirror::pb::watch_service_client::WatchServiceClient;
use tonic::Code;
use tonic::codec::Streaming;
use tonic_types::StatusExt;

use crate::events::*;
use crate::helpers::*;

async fn watch(
    app: &TestApp,
    request: pb::WatchChangesRequest,
) -> Result<Streaming<pb::WatchChangesResponse>, tonic::Status> {
    let mut c = WatchServiceClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap();
    c.watch_changes(request).await.map(|r| r.into_inner())
}

async fn next(stream: &mut Streaming<pb::WatchChangesResponse>) -> Event {
    let m = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a message within 30 s");
    m.expect("no error")
        .expect("the stream goes on")
        .event
        .expect("an event")
}

fn from_oldest() -> pb::WatchChangesRequest {
    pb::WatchChangesRequest {
        start: Some(pb::watch_changes_request::Start::StartFromOldest(true)),
        ..Default::default()
    }
}

fn from(cursor: &str) -> pb::WatchChangesRequest {
    pb::WatchChangesRequest {
        start: Some(pb::watch_changes_request::Start::StartCursor(cursor.into())),
        ..Default::default()
    }
}

fn seq(cursor: &str) -> i64 {
    Cursor::decode(cursor).unwrap().seq
}

async fn head(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT head_seq FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Collects changes (their seqs) until the stream has passed `until`.
async fn changes_until(stream: &mut Streaming<pb::WatchChangesResponse>, until: i64) -> Vec<pb::Change> {
    let mut out = Vec::new();
    // Heartbeats keep a stream alive forever: bound the whole wait, not only each message.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream did not pass seq {until} within 180 s"
        );
        let at = match next(stream).await {
            Event::Change(c) => {
                let s = seq(&c.cursor);
                out.push(c);
                s
            }
            Event::CaughtUp(c) => seq(&c.cursor),
            Event::Heartbeat(h) => seq(&h.cursor),
        };
        if at >= until {
            return out;
        }
    }
}

#[tokio::test]
async fn a_watch_sends_a_heartbeat_at_once_then_the_backlog_then_caught_up_then_live_changes() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        user_event("created", "user_w1", T, T, "One"),
        org_event("created", "org_w1", T, T, "Org"),
        membership_event("created", "orgmem_w1", "org_w1", "user_w1", T, T, "org:admin"),
    ])
    .await;
    let mut s = watch(&app, from_oldest()).await.unwrap();
    let Event::Heartbeat(first) = next(&mut s).await else {
        panic!("the first message is a heartbeat")
    };
    assert_eq!(seq(&first.cursor), 0);
    let mut kinds = Vec::new();
    for expected in 1..=3 {
        let Event::Change(c) = next(&mut s).await else {
            panic!("a change")
        };
        assert_eq!(seq(&c.cursor), expected);
        assert_eq!(c.operation, pb::Operation::Created as i32);
        assert!(c.source.starts_with("webhook:msg_"));
        assert!(c.commit_time.is_some());
        kinds.push(c.entity_type);
    }
    assert_eq!(
        kinds,
        [
            pb::EntityType::User as i32,
            pb::EntityType::Organization as i32,
            pb::EntityType::Membership as i32
        ]
    );
    let Event::CaughtUp(caught) = next(&mut s).await else {
        panic!("caught_up")
    };
    assert_eq!(seq(&caught.cursor), 3);
    app.send_all_and_apply(&[user_event("updated", "user_w1", T + 1, T + 1, "Two")])
        .await;
    let Event::Change(live) = next(&mut s).await else {
        panic!("a live change")
    };
    assert_eq!(seq(&live.cursor), 4);
    assert_eq!(live.operation, pb::Operation::Updated as i32);
    let Some(pb::change::Entity::User(u)) = live.entity else {
        panic!()
    };
    let Some(pb::change::Previous::PreviousUser(before)) = live.previous else {
        panic!()
    };
    assert_eq!((u.first_name.as_str(), before.first_name.as_str()), ("Two", "One"));
    assert_eq!(u.update_cursor, live.cursor);
    app.stop().await;
}

#[tokio::test]
async fn resuming_from_the_last_cursor_seen_misses_nothing_and_repeats_nothing() {
    let app = spawn_app().await;
    let bodies: Vec<String> = (0..30)
        .map(|i| user_event("created", &format!("user_r{i}"), T, T, "R"))
        .collect();
    app.send_all_and_apply(&bodies[..10]).await;
    let mut s = watch(&app, from_oldest()).await.unwrap();
    next(&mut s).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let Event::Change(c) = next(&mut s).await else { panic!() };
        seen.push(c.cursor);
    }
    drop(s);
    app.send_all_and_apply(&bodies[10..]).await;
    let metrics = || async { get(&format!("http://{}/metrics", app.admin_addr)).await.body };
    let series = |text: &str, name: &str| {
        crate::ingest::sample(text, &format!("clerk_mirror_{name}{{reader=\"stream\"}}")).unwrap_or(0.0)
    };
    let before = metrics().await;
    let mut s = watch(&app, from(seen.last().unwrap())).await.unwrap();
    let rest = changes_until(&mut s, head(&app).await).await;
    seen.extend(rest.into_iter().map(|c| c.cursor));
    let seqs: Vec<i64> = seen.iter().map(|c| seq(c)).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    // The hub had read those 26 changes: the resumed stream took them from its ring of recent
    // changes, not from PostgreSQL.
    let after = metrics().await;
    assert_eq!(
        series(&after, "change_log_rows_read_total"),
        series(&before, "change_log_rows_read_total"),
        "{after}"
    );
    assert_eq!(
        series(&after, "change_log_recent_taken_total") - series(&before, "change_log_recent_taken_total"),
        26.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_drops_before_any_change_resumes_from_the_first_heartbeat_and_misses_nothing() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[user_event("created", "user_h0", T, T, "Before")])
        .await;
    let mut s = watch(&app, pb::WatchChangesRequest::default()).await.unwrap();
    let Event::Heartbeat(h) = next(&mut s).await else {
        panic!()
    };
    assert_eq!(seq(&h.cursor), 1, "from now: the current head");
    drop(s);
    app.send_all_and_apply(&[
        user_event("created", "user_h1", T, T, "After"),
        user_event("created", "user_h2", T, T, "After"),
    ])
    .await;
    let mut s = watch(&app, from(&h.cursor)).await.unwrap();
    let got: Vec<i64> = changes_until(&mut s, 3).await.iter().map(|c| seq(&c.cursor)).collect();
    assert_eq!(got, [2, 3]);
    app.stop().await;
}

#[tokio::test]
async fn expired_foreign_future_and_malformed_cursors_and_bad_requests_fail_with_their_reasons() {
    let app = spawn_app().await;
    app.send_all_and_apply(
        &(0..5)
            .map(|i| user_event("created", &format!("user_e{i}"), T, T, "E"))
            .collect::<Vec<_>>(),
    )
    .await;
    let log_id: String = sqlx::query_scalar("SELECT log_id FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let err = |r: Result<_, tonic::Status>| r.expect_err("an error");

    let e = err(watch(&app, from("not-a-cursor")).await);
    assert_eq!(
        (e.code(), e.get_details_error_info().unwrap().reason.as_str()),
        (Code::InvalidArgument, "INVALID_CURSOR")
    );
    let e = err(watch(&app, from(&Cursor::new("0123456789abcdef", 2).encode())).await);
    assert_eq!(
        (e.code(), e.get_details_error_info().unwrap().reason.as_str()),
        (Code::OutOfRange, "CURSOR_EXPIRED")
    );
    assert!(e.message().contains("another database"), "{e:?}");
    let e = err(watch(&app, from(&Cursor::new(&log_id, 6).encode())).await);
    assert_eq!(
        (e.code(), e.get_details_error_info().unwrap().reason.as_str()),
        (Code::OutOfRange, "CURSOR_IN_FUTURE")
    );
    // The head itself is fine (nothing after it yet).
    assert!(watch(&app, from(&Cursor::new(&log_id, 5).encode())).await.is_ok());
    // Pruning moves the oldest retained seq: older cursors expire and say where the log starts.
    sqlx::query("UPDATE log_head SET oldest_seq = 4")
        .execute(&app.pool)
        .await
        .unwrap();
    let e = err(watch(&app, from(&Cursor::new(&log_id, 2).encode())).await);
    let info = e.get_details_error_info().unwrap();
    assert_eq!((e.code(), info.reason.as_str()), (Code::OutOfRange, "CURSOR_EXPIRED"));
    assert_eq!(seq(&info.metadata["oldestCursor"]), 3);
    assert!(watch(&app, from(&info.metadata["oldestCursor"])).await.is_ok());
    let mut s = watch(&app, from_oldest()).await.unwrap();
    assert!(matches!(next(&mut s).await, Event::Heartbeat(h) if seq(&h.cursor) == 3));

    let bad = [
        pb::WatchChangesRequest {
            filter: "plan = ".into(),
            ..Default::default()
        },
        pb::WatchChangesRequest {
            filter: r#"role = "org:admin""#.into(),
            ..Default::default()
        },
        pb::WatchChangesRequest {
            entity_types: vec![0],
            ..Default::default()
        },
        pb::WatchChangesRequest {
            heartbeat_interval: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
            ..Default::default()
        },
        pb::WatchChangesRequest {
            heartbeat_interval: Some(prost_types::Duration { seconds: 61, nanos: 0 }),
            ..Default::default()
        },
    ];
    for r in bad {
        let e = err(watch(&app, r.clone()).await);
        assert_eq!(e.code(), Code::InvalidArgument, "{r:?}: {e:?}");
    }
    // A membership-only field is fine once the watch is narrowed to memberships.
    let narrowed = pb::WatchChangesRequest {
        filter: r#"role = "org:admin""#.into(),
        entity_types: vec![pb::EntityType::Membership as i32],
        ..Default::default()
    };
    assert!(watch(&app, narrowed).await.is_ok());
    app.stop().await;
}

#[tokio::test]
async fn a_filter_matching_nothing_still_advances_through_heartbeats() {
    let app = spawn_app().await;
    let request = pb::WatchChangesRequest {
        filter: r#"public_metadata.plan = "enterprise""#.into(),
        heartbeat_interval: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        ..Default::default()
    };
    let mut s = watch(&app, request).await.unwrap();
    app.send_all_and_apply(
        &(0..5)
            .map(|i| user_event("created", &format!("user_f{i}"), T, T, "F"))
            .collect::<Vec<_>>(),
    )
    .await;
    let got = changes_until(&mut s, 5).await;
    assert!(got.is_empty(), "nothing matched, nothing sent");
    app.stop().await;
}

#[tokio::test]
async fn a_change_that_leaves_the_filter_is_sent_with_left_filter() {
    let app = spawn_app().await;
    let request = pb::WatchChangesRequest {
        filter: r#"public_metadata.plan = "pro""#.into(),
        ..Default::default()
    };
    let mut s = watch(&app, request).await.unwrap();
    next(&mut s).await;
    next(&mut s).await;
    let with_plan = |plan: &str, updated: i64, kind: &str| {
        let mut u = user("user_lf", updated, "Lf");
        u["public_metadata"] = serde_json::json!({"plan": plan});
        envelope(&format!("user.{kind}"), updated, u)
    };
    app.send_all_and_apply(&[
        with_plan("pro", T, "created"),
        with_plan("free", T + 1, "updated"),
        with_plan("basic", T + 2, "updated"),
        with_plan("pro", T + 3, "updated"),
    ])
    .await;
    let got = changes_until(&mut s, 4).await;
    let summary: Vec<(i64, bool)> = got.iter().map(|c| (seq(&c.cursor), c.left_filter)).collect();
    // free → basic matched neither before nor after: not sent.
    assert_eq!(summary, [(1, false), (2, true), (4, false)]);
    app.stop().await;
}

#[tokio::test]
async fn watch_filters_read_or_before_and_and_side_by_side_as_and_as_lists_do() {
    let app = spawn_app().await;
    let filters = [
        // (Karin OR Ada) AND banned; the other reading, Karin OR (Ada AND banned), would also
        // send user_k1.
        r#"first_name = "Karin" OR first_name = "Ada" AND banned = true"#,
        // Ada AND (banned OR Karin): the other reading would also send user_k1.
        r#"first_name = "Ada" AND banned = true OR first_name = "Karin""#,
        // Implicit AND.
        r#"first_name = "Ada" banned = true"#,
        // A suffix wildcard, case-folded: user_k2's address is user_k2@Example.com.
        r#"email = "*_k2@EXAMPLE.COM""#,
        // A prefix wildcard whose `_` is a literal (LIKE would read it as any character).
        r#"first_name = "A_*""#,
    ];
    let mut streams = Vec::new();
    for f in filters {
        let request = pb::WatchChangesRequest {
            filter: f.into(),
            entity_types: vec![pb::EntityType::User as i32],
            // Streams that match nothing late pass the head by their heartbeats.
            heartbeat_interval: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            ..Default::default()
        };
        let mut s = watch(&app, request).await.unwrap();
        next(&mut s).await;
        streams.push(s);
    }
    let person = |id: &str, first: &str, banned: bool| {
        let mut u = user(id, T, first);
        u["banned"] = serde_json::json!(banned);
        envelope("user.created", T, u)
    };
    app.send_all_and_apply(&[
        person("user_k1", "Karin", false),
        person("user_k2", "Ada", true),
        person("user_k3", "Ada", false),
        person("user_k4", "Karin", true),
        person("user_k5", "Ab", false),
    ])
    .await;
    let head = head(&app).await;
    let mut got = Vec::new();
    for s in &mut streams {
        let ids: Vec<String> = changes_until(s, head)
            .await
            .into_iter()
            .map(|c| match c.entity {
                Some(pb::change::Entity::User(u)) => u.id,
                other => panic!("users only here: {other:?}"),
            })
            .collect();
        got.push(ids);
    }
    assert_eq!(
        got,
        [
            vec!["user_k2", "user_k4"],
            vec!["user_k2"],
            vec!["user_k2"],
            vec!["user_k2"],
            Vec::<&str>::new(),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_watchers_each_get_exactly_their_changes_in_order_while_events_arrive() {
    let app = spawn_app().await;
    let start = head(&app).await;
    let orgs = ["org_c0", "org_c1", "org_c2"];
    let users: Vec<String> = (0..10).map(|i| format!("user_c{i}")).collect();
    let mut requests = Vec::new();
    for i in 0..50 {
        let mut r = pb::WatchChangesRequest {
            heartbeat_interval: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            ..Default::default()
        };
        match i % 5 {
            0 => r.entity_types = vec![pb::EntityType::User as i32],
            1 => r.organization_id = orgs[i % 3].into(),
            2 => r.user_id = users[i % 10].clone(),
            3 => r.filter = format!(r#"public_metadata.tier = "t{}""#, i % 3),
            _ => {
                r.entity_types = vec![pb::EntityType::Membership as i32];
                r.filter = r#"role = "org:admin""#.into();
            }
        }
        requests.push(r);
    }
    let mut streams = Vec::new();
    for r in &requests {
        let mut s = watch(&app, r.clone()).await.unwrap();
        next(&mut s).await;
        next(&mut s).await;
        streams.push(s);
    }
    // Events arrive concurrently with the watchers reading.
    let mut bodies = Vec::new();
    for (k, u) in users.iter().enumerate() {
        bodies.push(user_event("created", u, T, T, "C"));
        let org = orgs[k % 3];
        bodies.push(membership_event(
            "created",
            &format!("orgmem_c{k}"),
            org,
            u,
            T,
            T,
            if k % 2 == 0 { "org:admin" } else { "org:member" },
        ));
    }
    for (k, o) in orgs.iter().enumerate() {
        let mut data = org(o, T, "C");
        data["public_metadata"] = serde_json::json!({"tier": format!("t{k}")});
        bodies.push(envelope("organization.created", T, data));
    }
    bodies.push(user_deleted("user_c3", T + 5));
    // The watchers read while the events are sent and applied; each stops once it has passed
    // the final head (heartbeats every second carry the position when nothing matches).
    let (end_tx, end_rx) = tokio::sync::watch::channel(i64::MAX);
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let mut end_rx = end_rx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let at = match next(&mut s).await {
                        Event::Change(c) => {
                            got.push(seq(&c.cursor));
                            seq(&c.cursor)
                        }
                        Event::CaughtUp(c) => seq(&c.cursor),
                        Event::Heartbeat(h) => seq(&h.cursor),
                    };
                    if at >= *end_rx.borrow_and_update() {
                        return got;
                    }
                }
            })
        })
        .collect();
    for b in &bodies {
        let (_, response) = app.send(b).await;
        assert_eq!(response.status, hyper::StatusCode::OK);
    }
    app.wait_until_applied().await;
    let end = head(&app).await;
    end_tx.send_replace(end);
    #[derive(sqlx::FromRow)]
    struct Row {
        seq: i64,
        entity_type: String,
        organization_id: Option<String>,
        user_id: Option<String>,
        state: serde_json::Value,
        previous: Option<serde_json::Value>,
    }
    let log: Vec<Row> = sqlx::query_as(
        "SELECT seq, entity_type, organization_id, user_id, state, previous FROM changes WHERE seq > $1 ORDER BY seq",
    )
    .bind(start)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut results = Vec::new();
    for (reader, r) in readers.into_iter().zip(requests) {
        results.push((reader.await.unwrap(), r));
    }
    for (got, r) in results {
        let expected: Vec<i64> = log
            .iter()
            .filter(|c| {
                let type_ok = r.entity_types.is_empty()
                    || (r.entity_types[0] == pb::EntityType::User as i32 && c.entity_type == "user")
                    || (r.entity_types[0] == pb::EntityType::Membership as i32 && c.entity_type == "membership");
                let org_ok =
                    r.organization_id.is_empty() || c.organization_id.as_deref() == Some(r.organization_id.as_str());
                let user_ok = r.user_id.is_empty() || c.user_id.as_deref() == Some(r.user_id.as_str());
                let filter_ok = r.filter.is_empty() || {
                    let field = |v: &serde_json::Value| {
                        if r.filter.starts_with("role") {
                            v["role"] == "org:admin"
                        } else {
                            v["data"]["public_metadata"]["tier"] == r.filter.split('"').nth(1).unwrap()
                        }
                    };
                    field(&c.state) || c.previous.as_ref().is_some_and(field)
                };
                type_ok && org_ok && user_ok && filter_ok
            })
            .map(|c| c.seq)
            .collect();
        assert_eq!(got, expected, "watcher {r:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn changes_applied_through_one_replica_reach_watchers_on_another() {
    let (cluster, name) = shared_database().await;
    let a = spawn_app_on(cluster, &name, |_| {}).await;
    let b = spawn_app_on(cluster, &name, |_| {}).await;
    let mut s = watch(&b, pb::WatchChangesRequest::default()).await.unwrap();
    next(&mut s).await;
    next(&mut s).await;
    a.send_all_and_apply(&[user_event("created", "user_rep", T, T, "Rep")])
        .await;
    let Event::Change(c) = next(&mut s).await else { panic!() };
    assert_eq!(seq(&c.cursor), 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn stopping_the_server_ends_open_streams_with_unavailable_and_a_resume_cursor() {
    let app = spawn_app().await;
    let mut s = watch(&app, pb::WatchChangesRequest::default()).await.unwrap();
    next(&mut s).await;
    next(&mut s).await;
    let stopping = tokio::spawn(app.stop());
    let end = tokio::time::timeout(Duration::from_secs(30), s.message())
        .await
        .expect("the stream ends promptly");
    let e = end.expect_err("an error, not a clean end");
    assert_eq!(e.code(), Code::Unavailable);
    assert!(!e.get_details_error_info().unwrap().metadata["resumeCursor"].is_empty());
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("the server stops")
        .unwrap();
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_watcher_that_reads_nothing_while_20000_changes_apply_keeps_server_memory_bounded_then_gets_all_in_order() {
    use crate::process::Served;
    let (cluster, name) = shared_database().await;
    let pool = sqlx::PgPool::connect_with(cluster.connect_options(&name))
        .await
        .unwrap();
    let mut args = crate::process::serve_args(cluster, &name);
    // This measures the watch path's memory; the read cache would hold every user.
    args.extend(["--read-cache-bytes".into(), "0".into()]);
    let served = Served::start(&args).await;
    let pid = served.child.id().unwrap();
    let mut c = WatchServiceClient::connect(format!("http://{}", served.grpc_addr))
        .await
        .unwrap();
    let mut s = c
        .watch_changes(pb::WatchChangesRequest::default())
        .await
        .unwrap()
        .into_inner();
    next(&mut s).await;
    next(&mut s).await;
    // Warm up allocations with a first round, then measure across the next 20,000.
    enqueue(
        &pool,
        &(0..500)
            .map(|i| user_event("created", &format!("user_warm{i}"), T, T, "W"))
            .collect::<Vec<_>>(),
    )
    .await;
    wait_until_applied(&pool).await;
    let before = rss_kib(pid);
    for chunk in 0..10 {
        let bodies: Vec<String> = (0..2000)
            .map(|i| user_event("created", &format!("user_s{chunk}_{i}"), T, T, "Slow reader"))
            .collect();
        enqueue(&pool, &bodies).await;
    }
    wait_until_applied(&pool).await;
    let after = rss_kib(pid);
    eprintln!("server RSS: {before} KiB before, {after} KiB after 20,000 changes with an unread watcher");
    // Measured: +32 MiB, a plateau reached after ~6,000 changes (the hub's shared buffer of 1,024
    // changes and the stream's queue are bounded). A backlog kept in memory would hold 20,000
    // parsed changes (each a ~1.5 KiB body as JSON values and a protobuf copy: ~100 MiB or more).
    assert!(
        after < before + 64 * 1024,
        "server memory grew from {before} KiB to {after} KiB"
    );
    let got = changes_until(&mut s, 20_500).await;
    let seqs: Vec<i64> = got.iter().map(|c| seq(&c.cursor)).collect();
    assert_eq!(seqs, (1..=20_500).collect::<Vec<_>>(), "every change, in order, once");
    let metrics = get(&format!("http://{}/metrics", served.admin_addr)).await.body;
    assert!(
        !metrics.contains("clerk_mirror_watch_database_catch_ups_total 0\n"),
        "the watcher never fell back to the database:\n{metrics}"
    );
    drop(s);
    served.terminate().await;
    pool.close().await;
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_dropped_with_consumer_too_slow_and_resumes_exactly() {
    let app = spawn_app_with(|c| {
        c.watch.send_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = small_window_watch(&app).await;
    next(&mut s).await;
    next(&mut s).await;
    let bodies: Vec<String> = (0..1500)
        .map(|i| user_event("created", &format!("user_d{i}"), T, T, "Drop me"))
        .collect();
    enqueue(&app.pool, &bodies).await;
    app.wait_until_applied().await;
    // Wait (polling the metrics) until the server has dropped the stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = get(&format!("http://{}/metrics", app.admin_addr)).await.body;
        if metrics.contains("clerk_mirror_watchers_ended_total{reason=\"too_slow\"} 1\n") {
            assert!(metrics.contains("clerk_mirror_watchers 0\n"), "{metrics}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never dropped:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What was queued arrives, then the error with the cursor to resume from.
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        match tokio::time::timeout_at(deadline, s.message())
            .await
            .expect("the error within 60 s")
        {
            Ok(Some(pb::WatchChangesResponse {
                event: Some(Event::Change(c)),
            })) => seqs.push(seq(&c.cursor)),
            Ok(Some(_)) => {}
            Ok(None) => panic!("a clean end instead of an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "CONSUMER_TOO_SLOW");
    let resume = info.metadata["resumeCursor"].clone();
    assert_eq!(
        seq(&resume),
        *seqs.last().unwrap(),
        "the resume cursor is the last change delivered"
    );
    assert!(seqs.len() < 1500, "the stream was dropped before the end");
    let mut s = watch(&app, from(&resume)).await.unwrap();
    seqs.extend(changes_until(&mut s, 1500).await.iter().map(|c| seq(&c.cursor)));
    assert_eq!(seqs, (1..=1500).collect::<Vec<_>>());
    app.stop().await;
}

async fn wait_until_pruned(app: &TestApp) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (oldest, head): (i64, i64) = sqlx::query_as("SELECT oldest_seq, head_seq FROM log_head")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if oldest == head + 1 {
            return head;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never pruned: oldest {oldest}, head {head}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn pruning_expires_old_cursors_and_applied_inbox_rows_but_keeps_dead_letters() {
    let app = spawn_app_with(|c| {
        keep_for(c, Duration::ZERO);
    })
    .await;
    let mut bodies: Vec<String> = (0..5)
        .map(|i| user_event("created", &format!("user_p{i}"), T, T, "P"))
        .collect();
    bodies.push(envelope("user.updated", T, serde_json::json!({"no": "id"})));
    app.send_all_and_apply(&bodies).await;
    let head = wait_until_pruned(&app).await;
    assert_eq!(head, 5);
    let changes: i64 = sqlx::query_scalar("SELECT count(*) FROM changes")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(changes, 0);
    // The projections are untouched by pruning.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(users, 5);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM inbox")
            .fetch_all(&app.pool)
            .await
            .unwrap();
        if statuses == ["failed"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "inbox not pruned: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log_id: String = sqlx::query_scalar("SELECT log_id FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let e = watch(&app, from(&Cursor::new(&log_id, 2).encode()))
        .await
        .err()
        .unwrap();
    let info = e.get_details_error_info().unwrap();
    assert_eq!((e.code(), info.reason.as_str()), (Code::OutOfRange, "CURSOR_EXPIRED"));
    assert_eq!(seq(&info.metadata["oldestCursor"]), 5);
    let mut s = watch(&app, from_oldest()).await.unwrap();
    assert!(matches!(next(&mut s).await, Event::Heartbeat(h) if seq(&h.cursor) == 5));
    app.stop().await;
}

#[tokio::test]
async fn a_live_watcher_that_falls_behind_the_retained_window_gets_cursor_expired_never_a_gap() {
    let app = spawn_app_with(|c| {
        keep_for(c, Duration::ZERO);
        c.hub_capacity = 4;
        c.watch.buffer = 1;
    })
    .await;
    let mut s = small_window_watch(&app).await;
    next(&mut s).await;
    next(&mut s).await;
    // More than every buffer on the way can hold (h2 windows and send buffers, the stream's
    // queue), so the watcher is certainly left behind the hub's 4 changes.
    let bodies: Vec<String> = (0..3000)
        .map(|i| user_event("created", &format!("user_g{i}"), T, T, "Gap?"))
        .collect();
    enqueue(&app.pool, &bodies).await;
    app.wait_until_applied().await;
    wait_until_pruned(&app).await;
    let mut seqs = Vec::new();
    // A stream that only heartbeats would never end this loop: bound it as a whole.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        match tokio::time::timeout_at(deadline, s.message())
            .await
            .expect("CURSOR_EXPIRED within 60 s")
        {
            Ok(Some(pb::WatchChangesResponse {
                event: Some(Event::Change(c)),
            })) => seqs.push(seq(&c.cursor)),
            Ok(Some(_)) => {}
            Ok(None) => panic!("a clean end"),
            Err(status) => break status,
        }
    };
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "CURSOR_EXPIRED",
        "{status:?}"
    );
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "what arrived before the error has no gap"
    );
    assert!(seqs.len() < 3000);
    app.stop().await;
}

#[tokio::test]
async fn the_initial_state_then_the_changes_made_meanwhile_rebuild_exactly_the_final_state() {
    use std::collections::BTreeMap;
    let app = spawn_app().await;
    let seed: Vec<String> = (0..1200)
        .map(|i| user_event("created", &format!("user_i{i:04}"), T, T, "Initial"))
        .collect();
    enqueue(&app.pool, &seed).await;
    app.wait_until_applied().await;
    // Ignored by the filter: organizations and memberships are not watched here.
    app.send_all_and_apply(&[org_event("created", "org_i", T, T, "Org")])
        .await;

    let request = pb::WatchChangesRequest {
        send_initial_state: true,
        entity_types: vec![pb::EntityType::User as i32],
        ..Default::default()
    };
    let mut s = watch(&app, request).await.unwrap();
    // Writes land while the initial pages are read.
    let pool = app.pool.clone();
    let writer = tokio::spawn(async move {
        for round in 0..20i64 {
            let mut batch = Vec::new();
            for k in 0..10i64 {
                let i = (round * 37 + k * 113) % 1200;
                batch.push(user_event(
                    "updated",
                    &format!("user_i{i:04}"),
                    T + 1 + round * 10 + k,
                    T + 1,
                    &format!("Round {round}"),
                ));
            }
            batch.push(user_deleted(&format!("user_i{:04}", round * 50), T + 9999));
            batch.push(user_event("created", &format!("user_new{round}"), T, T, "New"));
            enqueue(&pool, &batch).await;
            tokio::task::yield_now().await;
        }
    });
    let mut state: BTreeMap<String, pb::User> = BTreeMap::new();
    let mut initial = 0;
    let mut caught_up = false;
    let mut position = 0;
    writer.await.unwrap();
    app.wait_until_applied().await;
    let end = head(&app).await;
    while !(caught_up && position >= end) {
        match next(&mut s).await {
            Event::Change(c) => {
                let Some(pb::change::Entity::User(u)) = c.entity else {
                    panic!("users only")
                };
                if c.cursor.is_empty() {
                    assert!(!caught_up, "initial state after caught_up");
                    assert_eq!(c.source, "initial_state");
                    initial += 1;
                } else {
                    position = seq(&c.cursor);
                }
                if c.operation == pb::Operation::Deleted as i32 {
                    state.remove(&u.id);
                } else {
                    state.insert(u.id.clone(), u);
                }
            }
            Event::CaughtUp(c) => {
                caught_up = true;
                position = seq(&c.cursor);
            }
            Event::Heartbeat(h) => position = position.max(seq(&h.cursor)),
        }
    }
    assert!(initial >= 1000, "the initial state came page by page ({initial} users)");
    let mut c = clerk_mirror::pb::directory_service_client::DirectoryServiceClient::connect(format!(
        "http://{}",
        app.grpc_addr
    ))
    .await
    .unwrap();
    let mut expected = BTreeMap::new();
    let mut token = String::new();
    loop {
        let r = c
            .list_users(pb::ListUsersRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        expected.extend(r.users.into_iter().map(|u| (u.id.clone(), u)));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(state.len(), expected.len());
    assert!(state == expected, "initial state + changes differ from the final state");
    let e = watch(
        &app,
        pb::WatchChangesRequest {
            send_initial_state: true,
            ..from_oldest()
        },
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn the_watch_command_prints_json_lines_and_resumes_across_a_server_restart() {
    use tokio::io::AsyncBufReadExt;
    let (cluster, name) = shared_database().await;
    let first = spawn_app_on(cluster, &name, |_| {}).await;
    let grpc = first.grpc_addr;
    first
        .send_all_and_apply(
            &(0..3)
                .map(|i| user_event("created", &format!("user_cmd{i}"), T, T, "Cmd"))
                .collect::<Vec<_>>(),
        )
        .await;
    let mut child = tokio::process::Command::new(crate::process::binary())
        .args([
            "watch",
            "--from-oldest",
            "--type",
            "user",
            "--heartbeat",
            "1",
            "--url",
            &format!("http://{grpc}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut changes = Vec::new();
    let read_until = async |lines: &mut tokio::io::Lines<_>, want: usize, changes: &mut Vec<i64>| {
        while changes.len() < want {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("a line")
                .unwrap()
                .expect("output");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            if let Some(c) = v.get("change") {
                assert_eq!(c["operation"], "OPERATION_CREATED");
                assert!(
                    c["user"]["createTime"]
                        .as_str()
                        .unwrap()
                        .starts_with("2026-01-01T00:00:00"),
                    "{line}"
                );
                changes.push(seq(c["cursor"].as_str().unwrap()));
            }
        }
    };
    read_until(&mut lines, 3, &mut changes).await;
    // The server goes away and comes back on the same address; the command resumes by itself.
    first.stop().await;
    let second = spawn_app_on(cluster, &name, |c| {
        c.grpc_addr = grpc;
    })
    .await;
    second
        .send_all_and_apply(
            &(3..5)
                .map(|i| user_event("created", &format!("user_cmd{i}"), T, T, "Cmd"))
                .collect::<Vec<_>>(),
        )
        .await;
    read_until(&mut lines, 5, &mut changes).await;
    assert_eq!(
        changes,
        [1, 2, 3, 4, 5],
        "resumed exactly: nothing missed, nothing repeated"
    );
    child.kill().await.unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("resuming from c1."), "{stderr}");
    second.stop().await;
}

/// 1,000 streams here; `clerk-mirror bench watch` runs 10,000 over 100 connections (with
/// latencies and memory per watcher), which takes too long for every test run.
#[tokio::test]
async fn a_thousand_watchers_over_a_hundred_connections_all_get_a_change_and_their_memory_is_bounded() {
    use crate::process::Served;
    let (cluster, name) = shared_database().await;
    let pool = sqlx::PgPool::connect_with(cluster.connect_options(&name))
        .await
        .unwrap();
    let mut args = crate::process::serve_args(cluster, &name);
    // This measures the watch path's memory; the read cache would hold every user.
    args.extend(["--read-cache-bytes".into(), "0".into()]);
    let served = Served::start(&args).await;
    let pid = served.child.id().unwrap();
    let mut channels = Vec::new();
    for _ in 0..100 {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", served.grpc_addr)).unwrap();
        channels.push(endpoint.connect().await.unwrap());
    }
    // Warm up: one watcher per connection, then measure the next 900.
    let open = |channel: tonic::transport::Channel| async move {
        let mut s = WatchServiceClient::new(channel)
            .watch_changes(pb::WatchChangesRequest::default())
            .await
            .unwrap()
            .into_inner();
        next(&mut s).await;
        next(&mut s).await;
        s
    };
    let mut streams = futures::future::join_all(channels.iter().cloned().map(open)).await;
    let before = rss_kib(pid);
    for round in 0..9 {
        let batch = futures::future::join_all(channels.iter().cloned().map(open)).await;
        streams.extend(batch);
        if round == 0 {
            assert_eq!(streams.len(), 200);
        }
    }
    assert_eq!(streams.len(), 1_000);
    let after = rss_kib(pid);
    let per_watcher = (after.saturating_sub(before)) as f64 * 1024.0 / 900.0;
    eprintln!("1,000 watchers: server RSS {before} KiB -> {after} KiB, {per_watcher:.0} bytes per watcher");
    assert!(per_watcher < 64.0 * 1024.0, "{per_watcher} bytes per watcher");
    // One change reaches every one of them.
    enqueue(&pool, &[user_event("created", "user_many", T, T, "Many")]).await;
    let got = futures::future::join_all(streams.iter_mut().map(|s| async move {
        loop {
            if let Event::Change(c) = next(s).await {
                return seq(&c.cursor);
            }
        }
    }))
    .await;
    assert!(got.iter().all(|s| *s == 1));
    drop(streams);
    served.terminate().await;
    pool.close().await;
}

/// A watch from now through a client with small HTTP/2 windows, so the server's side of a stream
/// that is not read fills quickly.
async fn small_window_watch(app: &TestApp) -> Streaming<pb::WatchChangesResponse> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .initial_stream_window_size(Some(64 * 1024))
        .initial_connection_window_size(Some(64 * 1024))
        .connect()
        .await
        .unwrap();
    WatchServiceClient::new(channel)
        .watch_changes(pb::WatchChangesRequest::default())
        .await
        .unwrap()
        .into_inner()
}

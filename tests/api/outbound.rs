//! Outbound webhooks (#26): destinations made through AdminService, and a local receiver that
//! verifies every delivery with an independent Standard Webhooks verifier (the svix crate's
//! `Webhook::verify`) and answers as each test scripts it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use clerk_mirror::pb;
use clerk_mirror::pb::admin_service_client::AdminServiceClient;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::events::*;
use crate::helpers::*;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    /// Whether svix verified it with the secret the receiver holds.
    pub verified: bool,
    pub body: Value,
    pub raw: Vec<u8>,
    /// What the receiver answered.
    pub answered: u16,
}

#[derive(Default)]
struct Inner {
    secret: Option<String>,
    log: Vec<Received>,
    /// Per webhook-id: how many more attempts to answer with the given status.
    fail: HashMap<String, (u32, u16)>,
    /// Fail every delivery with this status (0: none).
    fail_all: u16,
    /// Fail the first attempt of every delivery with this status (0: none).
    fail_first: u16,
    /// Wait this long (ms, per delivery, varied by id) before answering.
    delay_ms: u64,
}

/// A receiver on 127.0.0.1 verifying with svix; unverified deliveries get 401.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

async fn receive(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let id = header("webhook-id");
    let delay = {
        let s = inner.lock().unwrap();
        s.delay_ms * (id.bytes().map(u64::from).sum::<u64>() % 4) / 3
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut s = inner.lock().unwrap();
    let verified = s.secret.as_ref().is_some_and(|secret| {
        let mut map = http::HeaderMap::new();
        for n in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            if let Some(v) = headers.get(n) {
                map.insert(n, v.to_str().unwrap().parse().unwrap());
            }
        }
        svix::webhooks::Webhook::new(secret).unwrap().verify(&body, &map).is_ok()
    });
    let seen_before = s.log.iter().filter(|r| r.id == id).count();
    let status = if !verified {
        401
    } else if s.fail_all != 0 {
        s.fail_all
    } else if let Some((left, status)) = s.fail.get_mut(&id).filter(|(left, _)| *left > 0) {
        *left -= 1;
        *status
    } else if s.fail_first != 0 && seen_before == 0 {
        s.fail_first
    } else {
        204
    };
    s.log.push(Received {
        id,
        timestamp: header("webhook-timestamp").parse().unwrap_or(0),
        signature: header("webhook-signature"),
        verified,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body.to_vec(),
        answered: status,
    });
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn verify_with(&self, secret: &str) {
        self.inner.lock().unwrap().secret = Some(secret.to_string());
    }

    pub fn fail(&self, webhook_id: &str, times: u32, status: u16) {
        self.inner.lock().unwrap().fail.insert(webhook_id.to_string(), (times, status));
    }

    pub fn fail_all(&self, status: u16) {
        self.inner.lock().unwrap().fail_all = status;
    }

    pub fn fail_first(&self, status: u16) {
        self.inner.lock().unwrap().fail_first = status;
    }

    pub fn delay(&self, ms: u64) {
        self.inner.lock().unwrap().delay_ms = ms;
    }

    pub fn log(&self) -> Vec<Received> {
        self.inner.lock().unwrap().log.clone()
    }

    /// The deliveries acknowledged, in the order they were.
    pub fn delivered(&self) -> Vec<Received> {
        self.log().into_iter().filter(|r| (200..300).contains(&r.answered)).collect()
    }

    /// Waits (bounded) until `n` deliveries are acknowledged.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let delivered = self.delivered();
            if delivered.len() >= n {
                return delivered;
            }
            assert!(Instant::now() < deadline, "{} of {n} delivered: {:#?}", delivered.len(), self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn admin(app: &TestApp) -> AdminServiceClient<Channel> {
    AdminServiceClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap()
}

/// Creates a destination to `receiver` and lets the receiver verify with its secret.
pub async fn create(app: &TestApp, receiver: &Receiver, d: pb::Destination) -> pb::Destination {
    let made = admin(app)
        .await
        .create_destination(pb::CreateDestinationRequest {
            destination: Some(pb::Destination {
                url: receiver.url(),
                ..d
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .destination
        .unwrap();
    assert!(made.secret.starts_with("whsec_"), "{made:?}");
    receiver.verify_with(&made.secret);
    made
}

pub async fn get(app: &TestApp, name: &str) -> pb::Destination {
    admin(app)
        .await
        .get_destination(pb::GetDestinationRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .destination
        .unwrap()
}

/// Waits (bounded) until the destination satisfies `done`.
pub async fn wait_until(app: &TestApp, name: &str, done: impl Fn(&pb::Destination) -> bool) -> pb::Destination {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = get(app, name).await;
        if done(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "never reached: {d:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The cursors of the log's changes of these entity types after the start, in order.
async fn log_cursors(app: &TestApp, types: &[&str], after: &str) -> Vec<String> {
    let after = clerk_mirror::grpc::cursor::Cursor::decode(after).unwrap();
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM changes WHERE entity_type = ANY($1) AND seq > $2 ORDER BY seq")
        .bind(types.iter().map(|t| t.to_string()).collect::<Vec<_>>())
        .bind(after.seq)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    seqs.into_iter().map(|s| clerk_mirror::grpc::cursor::Cursor::new(&after.log_id, s).encode()).collect()
}

fn cursor_of(r: &Received) -> String {
    r.body["data"]["cursor"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_receiver_verifying_with_svix_gets_every_change_in_order_and_retries_carry_the_same_id_freshly_signed() {
    let clock = Arc::new(clerk_mirror::outbound::sender::Clock::default());
    let app = spawn_app_with({
        let clock = clock.clone();
        move |c| c.outbound.clock = clock
    })
    .await;
    let receiver = Receiver::start().await;
    let d = create(&app, &receiver, pb::Destination {
        entity_types: vec![pb::EntityType::User as i32, pb::EntityType::Organization as i32],
        ..Default::default()
    })
    .await;
    assert_eq!(d.state, pb::DestinationState::Active as i32);
    // The first attempts are signed 10 minutes in the past: svix refuses them (401), so the
    // retry must be signed afresh.
    clock.shift(chrono::Duration::minutes(-10));
    app.send_all_and_apply(&[
        user_event("created", "user_o1", T, T, "A"),
        org_event("created", "org_o1", T, T, "Acme"),
        user_event("updated", "user_o1", T + 1000, T + 1000, "B"),
        user_event("created", "user_o2", T, T, "C"),
    ])
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.log().is_empty() {
        assert!(Instant::now() < deadline, "no attempt came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    clock.shift(chrono::Duration::zero());
    let expected = log_cursors(&app, &["user", "organization"], &d.cursor).await;
    assert_eq!(expected.len(), 4);
    // The second change fails twice more (500, then 503 with Retry-After handled as throttling).
    receiver.fail(&format!("msg_{}", expected[1]), 2, 500);
    let delivered = receiver.wait_for(4).await;
    assert_eq!(delivered.iter().map(cursor_of).collect::<Vec<_>>(), expected, "every change, in order, once");
    let log = receiver.log();
    let first = &log[0];
    assert!(!first.verified && first.answered == 401, "{first:?}");
    let retries: Vec<&Received> = log.iter().filter(|r| r.id == first.id).collect();
    assert!(retries.len() >= 2);
    let last = retries.last().unwrap();
    assert!(last.verified && last.answered == 204, "{last:?}");
    assert!(last.timestamp - first.timestamp >= 590, "each attempt is signed with its own time: {retries:?}");
    let second: Vec<&Received> = log.iter().filter(|r| r.id == format!("msg_{}", expected[1])).collect();
    assert_eq!(second.iter().map(|r| r.answered).collect::<Vec<_>>(), [500, 500, 204]);
    assert!(second.iter().all(|r| r.verified && r.body == second[0].body));
    for r in &delivered {
        assert_eq!(r.id, format!("msg_{}", cursor_of(r)), "the webhook-id is the position's");
        assert_eq!(r.body["type"], "clerkmirror.change");
        assert!(r.body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(delivered[0].body["data"]["change"]["user"]["id"], "user_o1");
    assert_eq!(delivered[1].body["data"]["change"]["organization"]["id"], "org_o1");
    assert_eq!(delivered[2].body["data"]["change"]["operation"], "OPERATION_UPDATED");

    let shown = wait_until(&app, &d.name, |d| d.cursor == expected[3]).await;
    assert_eq!((shown.delivered, shown.lag, shown.last_status), (4, 0, 204));
    assert!(shown.failed_attempts >= 3, "{shown:?}");
    assert!(shown.secret.is_empty(), "a secret is shown once");
    let metrics = crate::helpers::get(&format!("http://{}/metrics", app.admin_addr)).await.body;
    let id = d.name.trim_start_matches("destinations/");
    for (what, value) in [("delivered", "4"), ("lag_changes", "0"), ("paused", "0")] {
        let line = format!("clerk_mirror_outbound_destination{{destination=\"{id}\",what=\"{what}\"}} {value}");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
    assert!(metrics.contains(&format!("clerk_mirror_outbound_destination{{destination=\"{id}\",what=\"failed_attempts\"}}")));
    let attempts = admin(&app)
        .await
        .list_delivery_attempts(pb::ListDeliveryAttemptsRequest {
            name: d.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .attempts;
    assert_eq!(attempts.len(), log.len(), "every attempt is listed");
    assert!(attempts[0].delivered && attempts[0].cursor == expected[3], "newest first: {attempts:?}");
    assert!(attempts.iter().any(|a| a.http_status == 500 && !a.delivered));
    app.stop().await;
}

#[tokio::test]
async fn a_destination_answering_410_is_paused_at_once_and_resumes_where_it_stopped() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let d = create(&app, &receiver, pb::Destination::default()).await;
    receiver.fail_all(410);
    app.send_all_and_apply(&[user_event("created", "user_p1", T, T, "A")]).await;
    let paused = wait_until(&app, &d.name, |d| d.state == pb::DestinationState::Paused as i32).await;
    assert!(paused.paused_reason.contains("410 Gone"), "{paused:?}");
    assert_eq!(paused.last_status, 410);
    app.send_all_and_apply(&[
        user_event("created", "user_p2", T, T, "B"),
        user_event("created", "user_p3", T, T, "C"),
    ])
    .await;
    receiver.fail_all(0);
    let resumed = admin(&app)
        .await
        .resume_destination(pb::ResumeDestinationRequest { name: d.name.clone() })
        .await
        .unwrap()
        .into_inner()
        .destination
        .unwrap();
    assert_eq!(resumed.state, pb::DestinationState::Active as i32);
    let delivered = receiver.wait_for(3).await;
    let expected = log_cursors(&app, &["user"], &d.cursor).await;
    assert_eq!(delivered.iter().map(cursor_of).collect::<Vec<_>>(), expected, "nothing skipped");
    // An operator's pause holds: nothing is sent until resumed.
    admin(&app)
        .await
        .pause_destination(pb::PauseDestinationRequest {
            name: d.name.clone(),
            reason: "receiver maintenance".into(),
        })
        .await
        .unwrap();
    app.send_all_and_apply(&[user_event("created", "user_p4", T, T, "D")]).await;
    let held = wait_until(&app, &d.name, |d| d.lag >= 1).await;
    assert_eq!((held.state, held.paused_reason.as_str()), (pb::DestinationState::Paused as i32, "receiver maintenance"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.delivered().len(), 3, "nothing while paused");
    app.stop().await;
}

#[tokio::test]
async fn filters_field_masks_and_raw_event_types_select_exactly_what_they_say() {
    let app = spawn_app().await;
    let (ada, masked, sessions) = (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    create(&app, &ada, pb::Destination {
        entity_types: vec![pb::EntityType::User as i32],
        filter: r#"first_name = "Ada""#.into(),
        ..Default::default()
    })
    .await;
    create(&app, &masked, pb::Destination {
        entity_types: vec![pb::EntityType::User as i32],
        field_mask: Some(prost_types::FieldMask {
            paths: vec!["first_name".into(), "private_metadata".into()],
        }),
        ..Default::default()
    })
    .await;
    create(&app, &sessions, pb::Destination {
        event_types: vec!["session.created".into()],
        ..Default::default()
    })
    .await;
    let with_private = |id: &str, name: &str| {
        let mut e: Value = serde_json::from_str(&user_event("created", id, T, T, name)).unwrap();
        e["data"]["private_metadata"] = json!({"stripe_customer": "cus_secret"});
        e.to_string()
    };
    let session = |t: &str, id: &str| {
        json!({"type": t, "object": "event", "timestamp": T, "instance_id": "ins_1",
               "data": {"id": id, "object": "session", "user_id": "user_f1", "status": "active", "z": 1, "a": 2}})
        .to_string()
    };
    let session_created = session("session.created", "sess_1");
    app.send_all_and_apply(&[
        with_private("user_f1", "Ada"),
        session_created.clone(),
        with_private("user_f2", "Grace"),
        session("session.ended", "sess_1"),
        org_event("created", "org_f1", T, T, "Acme"),
        user_event("updated", "user_f1", T + 1000, T + 1000, "Ada B"),
    ])
    .await;

    let only_ada = ada.wait_for(2).await;
    let ids: Vec<(&str, &str)> = only_ada
        .iter()
        .map(|r| {
            let u = &r.body["data"]["change"]["user"];
            (u["id"].as_str().unwrap(), r.body["data"]["change"]["leftFilter"].as_str().unwrap_or("false"))
        })
        .collect();
    assert_eq!(ids.len(), 2, "Ada's creation, then her leaving the filter: {only_ada:?}");
    assert!(only_ada.iter().all(|r| !String::from_utf8_lossy(&r.raw).contains("cus_secret")), "no private_metadata by default");
    assert_eq!(only_ada[1].body["data"]["change"]["leftFilter"], true);

    let narrowed = masked.wait_for(3).await;
    for r in &narrowed {
        let u = r.body["data"]["change"]["user"].as_object().unwrap();
        let mut keys: Vec<&str> = u.keys().map(String::as_str).collect();
        keys.sort();
        assert!(keys.iter().all(|k| ["id", "name", "firstName", "privateMetadata"].contains(k)), "{keys:?}");
    }
    assert_eq!(narrowed[0].body["data"]["change"]["user"]["privateMetadata"]["stripe_customer"], "cus_secret");

    let raw = sessions.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sessions.delivered().len(), 1, "only session.created: {:?}", sessions.log());
    assert_eq!(raw[0].body["type"], "clerk.session.created");
    let text = String::from_utf8(raw[0].raw.clone()).unwrap();
    assert!(text.contains(&session_created), "the event as received, byte for byte: {text}");
    // Raw events never reach a watch or the read cache.
    let watched: i64 = sqlx::query_scalar("SELECT count(*) FROM changes WHERE entity_type = 'event'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(watched, 1, "only the selected type is recorded");
    let mut watch = clerk_mirror::pb::watch_service_client::WatchServiceClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap()
        .watch_changes(pb::WatchChangesRequest {
            start: Some(pb::watch_changes_request::Start::StartFromOldest(true)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.unwrap().unwrap().unwrap();
        match message.event {
            Some(pb::watch_changes_response::Event::Change(c)) => seen.push(c.entity_type),
            Some(pb::watch_changes_response::Event::CaughtUp(_)) => break,
            _ => {}
        }
    }
    assert_eq!(seen.len(), 4, "the users' and the organization's changes, never the raw event: {seen:?}");
    app.stop().await;
}

#[tokio::test]
async fn partitioned_delivery_keeps_each_entitys_order() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.delay(15);
    receiver.fail_first(503);
    let d = create(&app, &receiver, pb::Destination {
        entity_types: vec![pb::EntityType::User as i32],
        lanes: 4,
        ..Default::default()
    })
    .await;
    let mut events = Vec::new();
    for round in 0..4 {
        for u in 0..8 {
            let op = if round == 0 { "created" } else { "updated" };
            events.push(user_event(op, &format!("user_l{u}"), T + round * 1000, T + round * 1000, &format!("N{round}")));
        }
    }
    app.send_all_and_apply(&events).await;
    let expected = log_cursors(&app, &["user"], &d.cursor).await;
    assert_eq!(expected.len(), 32);
    let delivered = receiver.wait_for(32).await;
    let mut per_user: HashMap<String, Vec<String>> = HashMap::new();
    for r in &delivered {
        let id = r.body["data"]["change"]["user"]["id"].as_str().unwrap().to_string();
        per_user.entry(id).or_default().push(cursor_of(r));
    }
    assert_eq!(per_user.len(), 8);
    for (user, cursors) in &per_user {
        let mut sorted = cursors.clone();
        sorted.sort();
        assert_eq!(cursors, &sorted, "{user}'s changes in order");
        assert_eq!(cursors.len(), 4, "{user}: each change once");
    }
    let in_order: Vec<String> = delivered.iter().map(cursor_of).collect();
    assert_ne!(in_order, expected, "lanes overlap (else this test shows nothing)");
    let done = wait_until(&app, &d.name, |d| d.lag == 0).await;
    assert_eq!(done.cursor, expected[31]);
    app.stop().await;
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one_for_the_transition() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let d = create(&app, &receiver, pb::Destination::default()).await;
    let old = d.secret.clone();
    let rotated = admin(&app)
        .await
        .rotate_destination_secret(pb::RotateDestinationSecretRequest {
            name: d.name.clone(),
            transition: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        })
        .await
        .unwrap()
        .into_inner()
        .destination
        .unwrap();
    assert!(rotated.secret.starts_with("whsec_") && rotated.secret != old);
    // The receiver still holds the old secret: it verifies during the transition.
    app.send_all_and_apply(&[user_event("created", "user_r1", T, T, "A")]).await;
    let first = receiver.wait_for(1).await;
    assert_eq!(first[0].signature.split(' ').count(), 2, "both secrets sign: {}", first[0].signature);
    receiver.verify_with(&rotated.secret);
    app.send_all_and_apply(&[user_event("created", "user_r2", T, T, "B")]).await;
    receiver.wait_for(2).await;
    // Without a transition, only the new secret signs.
    let again = admin(&app)
        .await
        .rotate_destination_secret(pb::RotateDestinationSecretRequest {
            name: d.name.clone(),
            transition: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
        })
        .await
        .unwrap()
        .into_inner()
        .destination
        .unwrap();
    receiver.verify_with(&again.secret);
    app.send_all_and_apply(&[user_event("created", "user_r3", T, T, "C")]).await;
    let third = receiver.wait_for(3).await;
    assert_eq!(third[2].signature.split(' ').count(), 1);
    let stored: String = sqlx::query_scalar("SELECT secret FROM destinations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!stored.contains(again.secret.trim_start_matches("whsec_")), "sealed at rest");
    app.stop().await;
}

/// The `ErrorInfo` reason of a failed call.
fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

#[tokio::test]
async fn every_ssrf_case_and_bad_request_is_refused_with_why() {
    let app = spawn_app_with(|c| c.outbound.policy.allow_private = false).await;
    let mut client = admin(&app).await;
    let own = format!("http://{}/x", app.grpc_addr);
    for (url, says) in [
        ("http://10.0.0.1/hook", "--allow-private-destinations"),
        ("https://127.0.0.1/hook", "--allow-private-destinations"),
        ("https://192.168.1.10/hook", "--allow-private-destinations"),
        ("https://169.254.169.254/latest/meta-data", "never a destination"),
        ("https://[::ffff:127.0.0.1]/hook", "never a destination"),
        ("https://100.64.0.1/hook", "never a destination"),
        ("https://0.0.0.0/hook", "never a destination"),
        ("https://[fe80::1]/hook", "never a destination"),
        ("http://example.com/hook", "must use https"),
        ("https://user:pass@example.com/hook", "no user name or password"),
        ("ftp://example.com/hook", "not an absolute http(s) URL"),
        (own.as_str(), "the mirror's own ports"),
    ] {
        let e = client
            .create_destination(pb::CreateDestinationRequest {
                destination: Some(pb::Destination {
                    url: url.into(),
                    ..Default::default()
                }),
            })
            .await
            .expect_err(url);
        assert_eq!((e.code(), reason(&e).as_str()), (Code::InvalidArgument, "INVALID_DESTINATION_URL"), "{url}: {e:?}");
        assert!(e.message().contains(says), "{url}: {}", e.message());
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM destinations").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 0, "nothing refused was stored");
    app.stop().await;

    // With private targets allowed, the mirror's own ports stay refused; a name resolving to a
    // forbidden address is refused when it connects (DNS rebinding), and the attempt says why.
    let app = spawn_app().await;
    let mut client = admin(&app).await;
    let own = format!("http://{}/x", app.grpc_addr);
    let e = client
        .create_destination(pb::CreateDestinationRequest {
            destination: Some(pb::Destination { url: own, ..Default::default() }),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("the mirror's own ports"), "{}", e.message());
    let bad = |d: pb::Destination| pb::CreateDestinationRequest {
        destination: Some(pb::Destination {
            url: "http://127.0.0.1:9/hook".into(),
            ..d
        }),
    };
    for (request, field, code) in [
        (bad(pb::Destination { event_types: vec!["email.created".into()], ..Default::default() }), "destination.event_types", "INVALID_EVENT_TYPE"),
        (bad(pb::Destination { event_types: vec!["user.created".into()], ..Default::default() }), "destination.event_types", "INVALID_EVENT_TYPE"),
        (bad(pb::Destination { lanes: 65, ..Default::default() }), "destination.lanes", "INVALID_LANES"),
        (bad(pb::Destination { entity_types: vec![99], ..Default::default() }), "entity_types", "INVALID_ENTITY_TYPE"),
        (bad(pb::Destination { filter: "nope =".into(), ..Default::default() }), "filter", "INVALID_FILTER"),
        (
            bad(pb::Destination {
                entity_types: vec![pb::EntityType::User as i32],
                field_mask: Some(prost_types::FieldMask { paths: vec!["slug".into()] }),
                ..Default::default()
            }),
            "destination.field_mask",
            "INVALID_FIELD_MASK",
        ),
        (bad(pb::Destination { start_cursor: "nope".into(), ..Default::default() }), "destination.start_cursor", "INVALID_CURSOR"),
        (
            bad(pb::Destination { start_cursor: "c1.00000000000000000001.x".into(), start_from_oldest: true, ..Default::default() }),
            "destination.start_cursor",
            "INVALID_START",
        ),
    ] {
        let e = client.create_destination(request).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::InvalidArgument, code), "{field}: {e:?}");
        let info = e.get_details_error_info().unwrap();
        assert_eq!(info.metadata.get("field").map(String::as_str), Some(field), "{e:?}");
    }
    let e = client
        .get_destination(pb::GetDestinationRequest { name: "destinations/dst_nope".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = client
        .get_destination(pb::GetDestinationRequest { name: "users/u".into() })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "INVALID_NAME");
    let receiver = Receiver::start().await;
    let d = create(&app, &receiver, pb::Destination {
        url: String::new(),
        ..Default::default()
    })
    .await;
    let e = client
        .reset_destination(pb::ResetDestinationRequest { name: d.name.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "INVALID_START");
    let e = client
        .update_destination(pb::UpdateDestinationRequest {
            destination: Some(pb::Destination { name: d.name.clone(), url: "https://169.254.169.254/".into(), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["url".into()] }),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "INVALID_DESTINATION_URL");
    let e = client
        .update_destination(pb::UpdateDestinationRequest {
            destination: Some(pb::Destination { name: d.name.clone(), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["secret".into()] }),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "INVALID_UPDATE_MASK");
    client
        .delete_destination(pb::DeleteDestinationRequest { name: d.name.clone() })
        .await
        .unwrap();
    let e = client
        .delete_destination(pb::DeleteDestinationRequest { name: d.name.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let rebinding = client
        .create_destination(pb::CreateDestinationRequest {
            destination: Some(pb::Destination {
                url: format!("http://localhost:{}/hook", receiver.addr.port()),
                ..Default::default()
            }),
        })
        .await;
    // `localhost` is loopback: allowed here; the refusal of a name resolving to a forbidden
    // address at connect time is `outbound::client`'s unit test (it needs a resolver to lie).
    assert!(rebinding.is_ok(), "{rebinding:?}");
    app.stop().await;
}

#[tokio::test]
async fn without_a_destinations_key_a_destination_cannot_be_made_and_the_error_says_which_flag() {
    let app = spawn_app_with(|c| c.outbound.key = None).await;
    let e = admin(&app)
        .await
        .create_destination(pb::CreateDestinationRequest {
            destination: Some(pb::Destination {
                url: "http://127.0.0.1:9/hook".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::FailedPrecondition, "NO_DESTINATIONS_KEY"));
    assert!(e.message().contains("--destinations-key"), "{}", e.message());
    app.stop().await;
}

#[tokio::test]
async fn an_expired_cursor_pauses_the_destination_with_a_clear_error_never_a_silent_skip() {
    let app = spawn_app_with(|c| keep_for(c, Duration::from_millis(300))).await;
    let receiver = Receiver::start().await;
    let d = create(&app, &receiver, pb::Destination::default()).await;
    admin(&app)
        .await
        .pause_destination(pb::PauseDestinationRequest { name: d.name.clone(), reason: String::new() })
        .await
        .unwrap();
    app.send_all_and_apply(&[user_event("created", "user_x1", T, T, "A")]).await;
    // Wait until the change is pruned.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let oldest: i64 = sqlx::query_scalar("SELECT oldest_seq FROM log_head").fetch_one(&app.pool).await.unwrap();
        if oldest > 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin(&app)
        .await
        .resume_destination(pb::ResumeDestinationRequest { name: d.name.clone() })
        .await
        .unwrap();
    let paused = wait_until(&app, &d.name, |d| d.state == pb::DestinationState::Paused as i32).await;
    assert!(paused.paused_reason.contains("cursor expired") && paused.paused_reason.contains("from_oldest"), "{paused:?}");
    assert!(receiver.log().is_empty());
    // Reset from the oldest: it goes on from there, knowingly.
    let reset = admin(&app)
        .await
        .reset_destination(pb::ResetDestinationRequest { name: d.name.clone(), from_oldest: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .destination
        .unwrap();
    let oldest: i64 = sqlx::query_scalar("SELECT oldest_seq FROM log_head").fetch_one(&app.pool).await.unwrap();
    let seq = clerk_mirror::grpc::cursor::Cursor::decode(&reset.cursor).unwrap().seq;
    assert!(seq >= oldest - 1 && seq > 0, "{reset:?}");
    app.stop().await;
}

/// Runs `clerk-mirror destinations <args>` against `app`; (success, stdout, stderr).
async fn destinations_command(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(crate::process::binary())
        .arg("destinations")
        .args(["--url", &format!("http://{}", app.grpc_addr)])
        .args(args)
        .env_remove("CLERK_MIRROR_TOKEN")
        .env_remove("CLERK_MIRROR_GRPC_URL")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_destinations_command_adds_shows_pauses_resets_rotates_and_removes_and_says_what_to_do_when_refused() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (ok, out, err) = destinations_command(
        &app,
        &["add", "--to", &receiver.url(), "--type", "user,organization", "--event-type", "session.created", "--field", "first_name"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("shown this once"), "{err}");
    let made: Value = serde_json::from_str(out.trim()).unwrap();
    let (name, secret) = (made["name"].as_str().unwrap().to_string(), made["secret"].as_str().unwrap().to_string());
    assert!(secret.starts_with("whsec_"));
    assert_eq!(made["entityTypes"], json!(["ENTITY_TYPE_USER", "ENTITY_TYPE_ORGANIZATION"]));
    assert_eq!(made["eventTypes"], json!(["session.created"]));
    receiver.verify_with(&secret);
    app.send_all_and_apply(&[user_event("created", "user_c1", T, T, "Ada")]).await;
    receiver.wait_for(1).await;

    let id = name.trim_start_matches("destinations/");
    let (ok, out, _) = destinations_command(&app, &["show", id, "--attempts", "5"]).await;
    assert!(ok);
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "the destination, then its one attempt: {out}");
    assert!(lines[0].get("secret").is_none(), "never shown again: {out}");
    assert_eq!(lines[1]["delivered"], true);
    let (ok, out, _) = destinations_command(&app, &["list"]).await;
    assert!(ok && out.lines().count() == 1 && out.contains(&name), "{out}");
    let (ok, out, _) = destinations_command(&app, &["pause", id, "--reason", "maintenance"]).await;
    assert!(ok && out.contains("DESTINATION_STATE_PAUSED") && out.contains("maintenance"), "{out}");
    let (ok, out, _) = destinations_command(&app, &["reset", id, "--from-oldest"]).await;
    assert!(ok, "{out}");
    let (ok, out, _) = destinations_command(&app, &["resume", id]).await;
    assert!(ok && out.contains("DESTINATION_STATE_ACTIVE"), "{out}");
    // Reset to the oldest: the one change is delivered again, with the same webhook-id.
    let again = receiver.wait_for(2).await;
    assert_eq!(again[0].id, again[1].id);
    let (ok, out, err) = destinations_command(&app, &["rotate-secret", &name, "--transition", "0s"]).await;
    assert!(ok && err.contains("shown this once"), "{err}");
    let rotated: Value = serde_json::from_str(out.trim()).unwrap();
    assert_ne!(rotated["secret"], json!(secret));

    let (ok, _, err) = destinations_command(&app, &["add", "--to", "https://169.254.169.254/", "--type", "user"]).await;
    assert!(!ok);
    assert!(
        err.contains("refused to add the destination") && err.contains("never a destination") && err.contains("INVALID_DESTINATION_URL") && err.contains("fix `destination.url`"),
        "{err}"
    );
    let (ok, _, err) = destinations_command(&app, &["add", "--to", &receiver.url(), "--type", "userz"]).await;
    assert!(!ok && err.contains("unknown entity type `userz`"), "{err}");
    let (ok, out, _) = destinations_command(&app, &["remove", id]).await;
    assert!(ok && out.contains("removed"), "{out}");
    let (ok, _, err) = destinations_command(&app, &["show", id]).await;
    assert!(!ok && err.contains("NotFound") && err.contains("destinations list"), "{err}");
    app.stop().await;
}

/// `cursors` with runs of one cursor counted once.
fn without_adjacent_duplicates(cursors: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in cursors {
        if out.last() != Some(c) {
            out.push(c.clone());
        }
    }
    out
}

#[tokio::test]
async fn a_sigkilled_sender_fails_over_to_another_replica_and_the_receiver_sees_the_log_with_at_most_adjacent_duplicates() {
    let (cluster, name) = shared_database().await;
    let key = clerk_mirror::outbound::sealed::SealingKey::generate_text();
    let mut args = crate::process::serve_args(cluster, &name);
    args.extend(
        ["--destinations-key", key.as_str(), "--allow-private-destinations", "--delivery-timeout", "2s"]
            .map(std::ffi::OsString::from),
    );
    let first = crate::process::Served::start(&args).await;
    let receiver = Receiver::start().await;
    receiver.delay(40);
    let mut client = AdminServiceClient::connect(format!("http://{}", first.grpc_addr)).await.unwrap();
    let d = client
        .create_destination(pb::CreateDestinationRequest {
            destination: Some(pb::Destination {
                url: receiver.url(),
                entity_types: vec![pb::EntityType::User as i32],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .destination
        .unwrap();
    receiver.verify_with(&d.secret);
    for i in 0..40 {
        let id = clerk_mirror::cli::send_event::new_message_id();
        let response = first.send_as(&id, &user_event("created", &format!("user_k{i:02}"), T, T, "K")).await;
        assert_eq!(response.status, 200);
    }
    receiver.wait_for(8).await;
    first.kill().await;
    let second = crate::process::Served::start(&args).await;
    let pool = sqlx::PgPool::connect(&cluster.url(&name)).await.unwrap();
    let app_pool = pool.clone();
    // Events the first replica acknowledged but had not applied are applied by the second.
    wait_until_applied(&pool).await;
    let expected = {
        let after = clerk_mirror::grpc::cursor::Cursor::decode(&d.cursor).unwrap();
        let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM changes WHERE entity_type = 'user' AND seq > $1 ORDER BY seq")
            .bind(after.seq)
            .fetch_all(&app_pool)
            .await
            .unwrap();
        seqs.into_iter().map(|s| clerk_mirror::grpc::cursor::Cursor::new(&after.log_id, s).encode()).collect::<Vec<_>>()
    };
    assert_eq!(expected.len(), 40);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: Vec<String> = receiver.delivered().iter().map(cursor_of).collect();
        if without_adjacent_duplicates(&delivered).len() >= 40 {
            assert_eq!(without_adjacent_duplicates(&delivered), expected, "the log, never reordered, nothing skipped");
            assert!(delivered.len() <= 41, "at most the one in flight again: {delivered:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{} of 40 delivered", delivered.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (epoch, holder): (i64, String) = sqlx::query_as("SELECT epoch, holder FROM outbound_sender")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(epoch >= 2, "the second replica took the next epoch: {epoch} {holder}");
    second.terminate().await;
}

#[tokio::test]
async fn a_sender_whose_epoch_was_taken_over_cannot_move_a_cursor_or_record_an_attempt() {
    use clerk_mirror::outbound::destinations as store;
    let app = spawn_app_with(|c| c.applier = None).await;
    let receiver = Receiver::start().await;
    let d = create(&app, &receiver, pb::Destination::default()).await;
    let id = d.name.trim_start_matches("destinations/");
    let old = store::take_epoch(&app.pool, "old@test").await.unwrap();
    let new = store::take_epoch(&app.pool, "new@test").await.unwrap();
    assert!(new > old);
    let row = store::get(&app.pool, id).await.unwrap();
    let at = row.cursor();
    let attempted = store::Attempted {
        seq: at + 1,
        webhook_id: "msg_x".into(),
        duration_ms: 1,
        http_status: Some(204),
        error: None,
    };
    assert!(!store::holds_epoch(&app.pool, old).await.unwrap());
    assert!(!store::advance(&app.pool, old, id, 0, at, at + 1).await.unwrap());
    assert!(!store::delivered(&app.pool, old, id, 0, at, at + 1, &attempted).await.unwrap());
    assert!(!store::failed(&app.pool, old, id, &attempted, None, Some("x")).await.unwrap());
    assert!(!store::advance(&app.pool, new, id, 0, at + 5, at + 6).await.unwrap(), "not from a cursor it did not read");
    assert!(store::delivered(&app.pool, new, id, 0, at, at + 1, &attempted).await.unwrap());
    let row = store::get(&app.pool, id).await.unwrap();
    assert_eq!((row.cursor(), row.delivered, row.state.as_str()), (at + 1, 1, "active"));
    app.stop().await;
}

#[tokio::test]
async fn batched_deliveries_carry_the_changes_a_lane_has_ready_each_as_it_would_be_sent_alone() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let d = create(&app, &receiver, pb::Destination {
        entity_types: vec![pb::EntityType::User as i32],
        batch_size: 5,
        ..Default::default()
    })
    .await;
    assert_eq!(d.batch_size, 5);
    admin(&app)
        .await
        .pause_destination(pb::PauseDestinationRequest { name: d.name.clone(), reason: String::new() })
        .await
        .unwrap();
    let events: Vec<String> = (0..12).map(|i| user_event("created", &format!("user_b{i:02}"), T, T, "B")).collect();
    app.send_all_and_apply(&events).await;
    receiver.fail_first(500);
    admin(&app).await.resume_destination(pb::ResumeDestinationRequest { name: d.name.clone() }).await.unwrap();
    let expected = log_cursors(&app, &["user"], &d.cursor).await;
    let done = wait_until(&app, &d.name, |d| d.lag == 0).await;
    assert_eq!(done.cursor, expected[11]);
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 3, "5 + 5 + 2: {delivered:?}");
    let mut cursors = Vec::new();
    for r in &delivered {
        assert_eq!(r.body["type"], "clerkmirror.batch");
        let items = r.body["data"]["deliveries"].as_array().unwrap();
        assert_eq!(r.body["data"]["cursor"], items.last().unwrap()["data"]["cursor"]);
        let first = items[0]["data"]["cursor"].as_str().unwrap();
        assert_eq!(r.id, format!("msg_{first}_{}", items.len()));
        for item in items {
            assert_eq!(item["type"], "clerkmirror.change");
            cursors.push(item["data"]["cursor"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(cursors, expected, "every change once, in order");
    let retried: Vec<&Received> = receiver.log().into_iter().filter(|r| r.answered == 500).collect::<Vec<_>>().leak().iter().collect();
    assert_eq!(retried.len(), 3, "each batch failed once, then went again whole");
    for r in retried {
        assert!(delivered.iter().any(|d| d.id == r.id && d.raw == r.raw), "the same batch again: {}", r.id);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_replica_with_another_destinations_key_sends_nothing_pauses_nothing_and_says_why() {
    let (cluster, name) = shared_database().await;
    let first = spawn_app_on(cluster, &name, |c| c.applier = None).await;
    let receiver = Receiver::start().await;
    // Made by a replica that does not apply (its key is its own); sent by one with another key.
    let d = create(&first, &receiver, pb::Destination::default()).await;
    let second = spawn_app_on(cluster, &name, |_| {}).await;
    second.send_all_and_apply(&[user_event("created", "user_w1", T, T, "A")]).await;
    let seen = wait_until(&second, &d.name, |d| !d.last_error.is_empty()).await;
    assert!(seen.last_error.contains("does not open with this destinations key"), "{seen:?}");
    assert_eq!(seen.state, pb::DestinationState::Active as i32, "not paused: a replica with the right key sends it");
    assert!(receiver.log().is_empty());
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_new_sender_waits_out_the_delivery_timeout_only_when_another_may_still_be_sending() {
    let (cluster, name) = shared_database().await;
    let long = |c: &mut clerk_mirror::Config| c.outbound.takeover_wait = Duration::from_secs(3600);
    // No sender ever, nothing to send: the first one starts at once.
    let first = spawn_app_on(cluster, &name, long).await;
    let epoch = || async {
        sqlx::query_scalar::<_, i64>("SELECT epoch FROM outbound_sender").fetch_one(&first.pool).await.unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while epoch().await != 1 {
        assert!(Instant::now() < deadline, "the first sender never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let receiver = Receiver::start().await;
    create(&first, &receiver, pb::Destination::default()).await;
    first.stop().await;
    // A sender before it and a destination it may have been sending to: the next one waits.
    let second = spawn_app_on(cluster, &name, long).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM outbound_sender").fetch_one(&second.pool).await.unwrap();
    assert_eq!(epoch, 1, "still waiting out the delivery timeout");
    second.stop().await;
}

#[tokio::test]
async fn a_destination_failing_past_the_horizon_is_paused_with_its_last_answer_and_resumes_where_it_stopped() {
    let app = spawn_app_with(|c| c.outbound.schedule.horizon = Duration::from_millis(400)).await;
    let receiver = Receiver::start().await;
    let d = create(&app, &receiver, pb::Destination::default()).await;
    receiver.fail_all(500);
    app.send_all_and_apply(&[user_event("created", "user_h1", T, T, "A")]).await;
    let paused = wait_until(&app, &d.name, |d| d.state == pb::DestinationState::Paused as i32).await;
    assert!(paused.paused_reason.contains("horizon") && paused.paused_reason.contains("HTTP 500"), "{paused:?}");
    assert!(paused.failed_attempts >= 2 && paused.last_status == 500, "{paused:?}");
    assert!(paused.next_attempt_time.is_none());
    receiver.fail_all(0);
    admin(&app).await.resume_destination(pb::ResumeDestinationRequest { name: d.name.clone() }).await.unwrap();
    let delivered = receiver.wait_for(1).await;
    assert_eq!(delivered[0].body["data"]["change"]["user"]["id"], "user_h1");
    app.stop().await;
}

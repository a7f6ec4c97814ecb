//! `POST /webhooks/clerk`: verification, storage, redelivery, group commit, rejections, and the
//! database going away.

use clerk_mirror::cli::send_event;
use futures::future::join_all;
use hyper::StatusCode;

use crate::helpers::*;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn a_signed_event_is_stored_verbatim_and_acknowledged() {
    let app = spawn_app().await;
    let body = user_created("user_1");
    let (id, response) = app.send(&body).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    let reply: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(reply["duplicate"], false);
    assert_eq!(app.stored_body(&id).await, Some(Some(body.into_bytes())));
    let (event_type, instance, event_time): (Option<String>, Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT event_type, instance_id, event_time FROM inbox WHERE event_key = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(event_type.as_deref(), Some("user.created"));
    assert_eq!(instance.as_deref(), Some("ins_test"));
    assert_eq!(event_time.unwrap().timestamp_millis(), 1767225600000);
    app.stop().await;
}

#[tokio::test]
async fn a_redelivery_is_acknowledged_and_stored_once() {
    let app = spawn_app().await;
    let body = user_created("user_2");
    let (id, first) = app.send(&body).await;
    assert_eq!(first.status, StatusCode::OK);
    // Svix re-signs every retry with a fresh timestamp but the same id.
    let second = app.send_as(&id, &body).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let reply: serde_json::Value = serde_json::from_str(&second.body).unwrap();
    assert_eq!(reply["duplicate"], true);
    assert_eq!(app.inbox_count().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn the_svix_manual_verification_vector_is_accepted_over_http() {
    let app = spawn_app_with(|c| {
        set_secrets(c, &vec!["whsec_plJ3nmyCDGBKInavdOK15jsl"]);
        set_clock(c, fixed_clock(1731705121));
    })
    .await;
    let body = r#"{"event_type":"ping","data":{"success":true}}"#;
    let response = app
        .post(
            &[
                ("svix-id", "msg_loFOjxBNrRLzqYUf"),
                ("svix-timestamp", "1731705121"),
                ("svix-signature", "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0="),
            ],
            body,
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    // Verified JSON without a `type` is kept all the same.
    assert_eq!(
        app.stored_body("msg_loFOjxBNrRLzqYUf").await,
        Some(Some(body.as_bytes().to_vec()))
    );
    app.stop().await;
}

#[tokio::test]
async fn the_svix_crate_vector_is_accepted_with_webhook_header_names_and_a_rotated_secret() {
    // The vector's secret is the second of two: any configured secret may verify.
    let app = spawn_app_with(|c| {
        set_secrets(c, &vec![SECRET, SECOND_SECRET]);
        set_clock(c, fixed_clock(1649367553));
    })
    .await;
    let body = r#"{"email":"test@example.com","username":"test_user"}"#;
    let response = app
        .post(
            &[
                ("webhook-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"),
                ("webhook-timestamp", "1649367553"),
                ("webhook-signature", "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="),
            ],
            body,
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(app.inbox_count().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_signature_header_with_several_entries_verifies_if_any_entry_matches() {
    let app = spawn_app().await;
    let body = user_created("user_3");
    let id = send_event::new_message_id();
    let ts = now();
    let good = app.secrets.sign(&id, ts, body.as_bytes()).unwrap();
    // During rotation Svix signs with the old and the new secret; `v1a` entries are ignored.
    let header = format!("v1a,AAAA v1,bm90IHRoZSBzaWduYXR1cmU= {good}");
    let response = app
        .post(
            &[
                ("svix-id", &id),
                ("svix-timestamp", &ts.to_string()),
                ("svix-signature", &header),
            ],
            body,
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    app.stop().await;
}

#[tokio::test]
async fn every_rejection_returns_its_status_and_stores_nothing() {
    // A fixed clock, so "301 s away" stays 301 s away however slowly the test runs.
    let ts = now();
    let app = spawn_app_with(|c| {
        set_clock(c, fixed_clock(ts));
    })
    .await;
    let body = user_created("user_4");
    let id = "msg_rejected";
    let sign = |ts: i64, body: &str| app.secrets.sign(id, ts, body.as_bytes()).unwrap();
    let good = sign(ts, &body);
    let ts_s = ts.to_string();
    let stale_ts = (ts - 301).to_string();
    let future_ts = (ts + 301).to_string();
    let stale_sig = sign(ts - 301, &body);
    let future_sig = sign(ts + 301, &body);
    let not_json = "this is not json";
    let not_json_sig = sign(ts, not_json);
    let truncated = &body[..body.len() - 1];
    let truncated_sig = sign(ts, truncated);
    let altered = user_created("user_5");
    let other = WebhookSecretsExt::other_signature(id, ts, &body);

    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no id",
            vec![("svix-timestamp", &ts_s), ("svix-signature", &good)],
            &body,
            StatusCode::BAD_REQUEST,
            "missing_header",
        ),
        (
            "no timestamp",
            vec![("svix-id", id), ("svix-signature", &good)],
            &body,
            StatusCode::BAD_REQUEST,
            "missing_header",
        ),
        (
            "no signature",
            vec![("svix-id", id), ("svix-timestamp", &ts_s)],
            &body,
            StatusCode::BAD_REQUEST,
            "missing_header",
        ),
        ("no headers", vec![], &body, StatusCode::BAD_REQUEST, "missing_header"),
        (
            "timestamp not a number",
            vec![("svix-id", id), ("svix-timestamp", "soon"), ("svix-signature", &good)],
            &body,
            StatusCode::BAD_REQUEST,
            "malformed_header",
        ),
        (
            "id with spaces",
            vec![
                ("svix-id", "msg 1"),
                ("svix-timestamp", &ts_s),
                ("svix-signature", &good),
            ],
            &body,
            StatusCode::BAD_REQUEST,
            "malformed_header",
        ),
        (
            "wrong secret",
            vec![("svix-id", id), ("svix-timestamp", &ts_s), ("svix-signature", &other)],
            &body,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            "garbage signature",
            vec![("svix-id", id), ("svix-timestamp", &ts_s), ("svix-signature", "v1,xyz")],
            &body,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            "body altered",
            vec![("svix-id", id), ("svix-timestamp", &ts_s), ("svix-signature", &good)],
            &altered,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            "signature for another id",
            vec![
                ("svix-id", "msg_other"),
                ("svix-timestamp", &ts_s),
                ("svix-signature", &good),
            ],
            &body,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            "stale",
            vec![
                ("svix-id", id),
                ("svix-timestamp", &stale_ts),
                ("svix-signature", &stale_sig),
            ],
            &body,
            StatusCode::UNAUTHORIZED,
            "stale_timestamp",
        ),
        (
            "future",
            vec![
                ("svix-id", id),
                ("svix-timestamp", &future_ts),
                ("svix-signature", &future_sig),
            ],
            &body,
            StatusCode::UNAUTHORIZED,
            "future_timestamp",
        ),
        (
            "not json",
            vec![
                ("svix-id", id),
                ("svix-timestamp", &ts_s),
                ("svix-signature", &not_json_sig),
            ],
            not_json,
            StatusCode::BAD_REQUEST,
            "body_not_json",
        ),
        (
            "truncated json",
            vec![
                ("svix-id", id),
                ("svix-timestamp", &ts_s),
                ("svix-signature", &truncated_sig),
            ],
            truncated,
            StatusCode::BAD_REQUEST,
            "body_not_json",
        ),
    ];
    for (what, headers, body, status, code) in cases {
        let response = app.post(&headers, body.to_string()).await;
        assert_eq!(response.status, status, "{what}: {}", response.body);
        let reply: serde_json::Value = serde_json::from_str(&response.body).expect("a JSON error body");
        assert_eq!(reply["error"]["code"], code, "{what}");
        assert_eq!(app.inbox_count().await, 0, "{what} stored something");
    }

    // Bytes that are not UTF-8 cannot be JSON.
    let bytes = vec![0xff, 0xfe, b'{', b'}'];
    let response = app
        .post(
            &[("svix-id", id), ("svix-timestamp", &ts_s), ("svix-signature", &good)],
            bytes,
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST, "{}", response.body);
    assert_eq!(app.inbox_count().await, 0);
    app.stop().await;
}

/// Signatures made with a secret the app does not know.
struct WebhookSecretsExt;
impl WebhookSecretsExt {
    fn other_signature(id: &str, ts: i64, body: &str) -> String {
        clerk_mirror::ingest::verify::WebhookSecrets::parse(&["whsec_plJ3nmyCDGBKInavdOK15jsl"])
            .unwrap()
            .sign(id, ts, body.as_bytes())
            .unwrap()
    }
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_and_is_not_stored() {
    let app = spawn_app_with(|c| {
        c.max_body_bytes = 4096;
    })
    .await;
    let big = serde_json::json!({"type": "user.updated", "data": {"blob": "x".repeat(5000)}}).to_string();
    let (_, response) = app.send(&big).await;
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", response.body);
    assert!(response.body.contains("body_too_large"));
    // Just under the limit is fine.
    let fits = serde_json::json!({"type": "user.updated", "data": {"blob": "x".repeat(4000)}}).to_string();
    let (_, response) = app.send(&fits).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(app.inbox_count().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_1_mib_limit_is_the_default() {
    let app = spawn_app().await;
    let big = serde_json::json!({"type": "user.updated", "blob": "x".repeat(1024 * 1024)}).to_string();
    let (_, response) = app.send(&big).await;
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
    let fits = serde_json::json!({"type": "user.updated", "blob": "x".repeat(1000 * 1000)}).to_string();
    let (_, response) = app.send(&fits).await;
    assert_eq!(response.status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn odd_but_valid_json_is_stored_byte_for_byte() {
    let app = spawn_app().await;
    let bodies = [
        r#"{"type":"user.updated","data":{"first_name":"a\u0000b","id":"user_nul"}}"#.to_string(),
        r#"{"type":"user.\u0000updated","instance_id":"ins_\u0000","timestamp":1.5e12}"#.to_string(),
        "  {\"type\" : \"user.updated\" ,\n \"data\":{\"emoji\":\"\u{1F600}\", \"esc\":\"\\ud83d\\ude00\", \"dup\":1, \"dup\":2}}  ".to_string(),
        r#"[1,2,3]"#.to_string(),
        r#"{"type":"organizationInvitation.created","data":{"n":-0.0,"big":123456789012345678901234567890}}"#.to_string(),
    ];
    for body in &bodies {
        let (id, response) = app.send(body).await;
        assert_eq!(response.status, StatusCode::OK, "{body}: {}", response.body);
        assert_eq!(
            app.stored_body(&id).await,
            Some(Some(body.as_bytes().to_vec())),
            "{body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_event_types_are_stored_and_acknowledged() {
    let app = spawn_app().await;
    let body = r#"{"type":"subscriptionItem.freeTrialEnding","object":"event","data":{"id":"csi_1"}}"#;
    let (id, response) = app.send(body).await;
    assert_eq!(response.status, StatusCode::OK);
    let t: Option<String> = sqlx::query_scalar("SELECT event_type FROM inbox WHERE event_key = $1")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(t.as_deref(), Some("subscriptionItem.freeTrialEnding"));
    app.stop().await;
}

#[tokio::test]
async fn email_and_sms_events_are_acknowledged_without_their_bodies() {
    let app = spawn_app().await;
    for t in ["email.created", "sms.created"] {
        let body =
            serde_json::json!({"type": t, "timestamp": 1767225600000i64, "data": {"otp_code": "123456"}}).to_string();
        let (id, response) = app.send(&body).await;
        assert_eq!(response.status, StatusCode::OK);
        let (stored, redacted, event_type): (Option<Vec<u8>>, bool, Option<String>) =
            sqlx::query_as("SELECT body, body_redacted, event_type FROM inbox WHERE event_key = $1")
                .bind(&id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(stored, None);
        assert!(redacted);
        assert_eq!(event_type.as_deref(), Some(t));
    }
    app.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_webhooks_are_each_stored_before_their_2xx() {
    let app = spawn_app().await;
    let bodies: Vec<String> = (0..200).map(|i| user_created(&format!("user_c{i}"))).collect();
    let responses = join_all(bodies.iter().map(|b| app.send(b))).await;
    let mut acked = Vec::new();
    for (id, response) in &responses {
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        acked.push(id.clone());
    }
    let stored: Vec<String> = sqlx::query_scalar("SELECT event_key FROM inbox WHERE event_key = ANY($1)")
        .bind(&acked)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 200);
    app.stop().await;
}

#[tokio::test]
async fn health_and_readiness_answer_without_detail_and_other_paths_are_not_found() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.body, r#"{"status":"ready"}"#);
    // Operator endpoints are never on the public webhook port.
    for path in ["/metrics", "/reconcile", "/clerkmirror.v1.AdminService/GetSyncStatus"] {
        assert_eq!(app.get(path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(app.get("/webhooks/clerk").await.status, StatusCode::METHOD_NOT_ALLOWED);
    // Metrics live on the admin port.
    let metrics = get(&format!("http://{}/metrics", app.admin_addr)).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics.body.contains("clerk_mirror_log{what=\"head_seq\"} 0"),
        "{}",
        metrics.body
    );
    app.stop().await;
}

/// The value of one sample in Prometheus text, e.g. `clerk_mirror_webhooks_total{outcome="stored",reason="ok"}`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[tokio::test]
async fn metrics_move_with_traffic_and_live_only_on_the_admin_port() {
    use crate::events::*;
    let app = spawn_app().await;
    let metrics = || async { get(&format!("http://{}/metrics", app.admin_addr)).await.body };
    let before = metrics().await;
    assert_eq!(
        sample(&before, r#"clerk_mirror_log{what="head_seq"}"#),
        Some(0.0),
        "{before}"
    );
    let (id, _) = app.send(&user_event("created", "user_m", T, T, "M")).await;
    app.send_as(&id, &user_event("created", "user_m", T, T, "M")).await;
    app.post(&[("svix-id", "msg_x")], "{}").await;
    app.send(&envelope("user.updated", T, serde_json::json!({"no": "id"})))
        .await;
    app.wait_until_applied().await;
    let mut c = clerk_mirror::pb::directory_service_client::DirectoryServiceClient::connect(format!(
        "http://{}",
        app.grpc_addr
    ))
    .await
    .unwrap();
    c.get_user(clerk_mirror::pb::GetUserRequest {
        name: "users/user_m".into(),
        show_deleted: false,
        ..Default::default()
    })
    .await
    .unwrap();
    c.get_user(clerk_mirror::pb::GetUserRequest {
        name: "users/nobody".into(),
        show_deleted: false,
        ..Default::default()
    })
    .await
    .unwrap_err();
    let after = metrics().await;
    for (series, value) in [
        (r#"clerk_mirror_webhooks_total{outcome="stored",reason="ok"}"#, 2.0),
        (r#"clerk_mirror_webhooks_total{outcome="duplicate",reason="ok"}"#, 1.0),
        (
            r#"clerk_mirror_webhooks_total{outcome="rejected",reason="missing_header"}"#,
            1.0,
        ),
        (
            r#"clerk_mirror_events_total{status="applied",type="user.created"}"#,
            1.0,
        ),
        (r#"clerk_mirror_events_total{status="failed",type="user.updated"}"#, 1.0),
        (r#"clerk_mirror_log{what="head_seq"}"#, 1.0),
        (r#"clerk_mirror_log{what="dead_letters"}"#, 1.0),
        (r#"clerk_mirror_log{what="inbox_pending"}"#, 0.0),
        ("clerk_mirror_changes_total", 1.0),
        ("clerk_mirror_apply_lag_seconds_count", 1.0),
        (
            r#"clerk_mirror_grpc_requests_total{code="0",method="clerkmirror.v1.DirectoryService/GetUser"}"#,
            1.0,
        ),
        (
            r#"clerk_mirror_grpc_requests_total{code="5",method="clerkmirror.v1.DirectoryService/GetUser"}"#,
            1.0,
        ),
        (
            r#"clerk_mirror_grpc_request_seconds_count{method="clerkmirror.v1.DirectoryService/GetUser"}"#,
            2.0,
        ),
    ] {
        assert_eq!(sample(&after, series), Some(value), "{series} in\n{after}");
    }
    assert_eq!(app.get("/metrics").await.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

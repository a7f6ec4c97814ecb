//! Hostile and broken webhooks, table-driven: each refused request gets its status and code and
//! changes nothing; each verified event the mirror cannot apply is acknowledged, then
//! dead-lettered with its error (or skipped), never applied; odd but valid content (NUL
//! characters, deep nesting, unusual Unicode) is applied and reads back as sent.

use clerk_mirror::pb;
use clerk_mirror::pb::directory_service_client::DirectoryServiceClient;
use hyper::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::events::*;
use crate::helpers::*;

/// A digest of every projection and of the change log: equal digests, nothing changed.
async fn projections(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT concat_ws(' ',
            (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM users t),
            (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM organizations t),
            (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM memberships t),
            (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.email_address), '')) FROM user_email_addresses t),
            (SELECT count(*)::text FROM changes))",
    )
    .fetch_one(pool)
    .await
    .expect("digest the projections")
}

/// An app on a fixed clock with one user, one organization and one membership applied.
async fn seeded(now: i64) -> TestApp {
    let app = spawn_app_with(|c| {
        set_clock(c, fixed_clock(now));
    })
    .await;
    enqueue(
        &app.pool,
        &[
            user_event("created", "user_h1", T, T, "Hana"),
            org_event("created", "org_h", T, T, "Hostile Inc"),
            membership_event("created", "orgmem_h1", "org_h", "user_h1", T, T, "org:admin"),
        ],
    )
    .await;
    app.wait_until_applied().await;
    app
}

/// `depth` nested arrays around `inner`.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn every_refused_webhook_gets_its_status_and_code_and_stores_and_changes_nothing() {
    let ts = chrono::Utc::now().timestamp();
    let app = seeded(ts).await;
    let before = (app.inbox_count().await, projections(&app.pool).await);

    let id = "msg_hostile";
    let body = user_event("updated", "user_h1", T + 1, T + 1, "Changed");
    let sign = |id: &str, ts: i64, body: &[u8]| app.secrets.sign(id, ts, body).unwrap();
    let ts_s = ts.to_string();
    let good = sign(id, ts, body.as_bytes());
    let signature = good.strip_prefix("v1,").unwrap();
    let other_secret = clerk_mirror::ingest::verify::WebhookSecrets::parse(&["whsec_plJ3nmyCDGBKInavdOK15jsl"])
        .unwrap()
        .sign(id, ts, body.as_bytes())
        .unwrap();
    let long_id = format!("msg_{}", "x".repeat(300));
    let six_minutes = 6 * 60;
    let (past, future) = ((ts - six_minutes).to_string(), (ts + six_minutes).to_string());
    let deep = format!(r#"{{"type":"user.updated","data":{}}}"#, nested(100_000, "1"));
    let too_big =
        json!({"type": "user.updated", "data": {"id": "user_h1", "blob": "x".repeat(1024 * 1024)}}).to_string();

    struct Case {
        what: &'static str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        status: StatusCode,
        code: &'static str,
    }
    let headers = |id: &str, ts: &str, sig: &str| {
        vec![
            ("svix-id".to_string(), id.to_string()),
            ("svix-timestamp".to_string(), ts.to_string()),
            ("svix-signature".to_string(), sig.to_string()),
        ]
    };
    let with = |mut h: Vec<(String, String)>, name: &str, value: &str| {
        h.push((name.to_string(), value.to_string()));
        h
    };
    let signed = |what, body: Vec<u8>, status, code| Case {
        what,
        headers: headers(id, &ts_s, &sign(id, ts, &body)),
        body,
        status,
        code,
    };
    let b = || body.clone().into_bytes();
    let cases = vec![
        Case {
            what: "svix-id sent twice",
            headers: with(headers(id, &ts_s, &good), "svix-id", "msg_other"),
            body: b(),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_header",
        },
        Case {
            what: "svix-timestamp sent twice",
            headers: with(headers(id, &ts_s, &good), "svix-timestamp", &ts_s),
            body: b(),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_header",
        },
        Case {
            what: "svix-signature sent twice",
            headers: with(headers(id, &ts_s, &good), "svix-signature", &good),
            body: b(),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_header",
        },
        Case {
            what: "webhook-id sent twice beside svix-id",
            headers: with(
                with(headers(id, &ts_s, &good), "webhook-id", id),
                "webhook-id",
                "msg_other",
            ),
            body: b(),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_header",
        },
        Case {
            what: "an id of 300 characters",
            headers: headers(&long_id, &ts_s, &sign(&long_id, ts, body.as_bytes())),
            body: b(),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_header",
        },
        Case {
            what: "an id that is not ASCII",
            headers: headers("msg_é", &ts_s, &sign("msg_é", ts, body.as_bytes())),
            body: b(),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_header",
        },
        Case {
            what: "an empty id",
            headers: headers("", &ts_s, &good),
            body: b(),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_header",
        },
        Case {
            what: "a signature header of 20 KiB",
            headers: headers(id, &ts_s, &format!("{good} {}", "v1,AAAA".repeat(3000))),
            body: b(),
            // hyper refuses the head itself, without a body.
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            code: "",
        },
        Case {
            what: "signed by another secret",
            headers: headers(id, &ts_s, &other_secret),
            body: b(),
            status: StatusCode::UNAUTHORIZED,
            code: "bad_signature",
        },
        Case {
            what: "a v1a signature only",
            headers: headers(id, &ts_s, &format!("v1a,{signature}")),
            body: b(),
            status: StatusCode::UNAUTHORIZED,
            code: "bad_signature",
        },
        Case {
            what: "a signature without its version",
            headers: headers(id, &ts_s, signature),
            body: b(),
            status: StatusCode::UNAUTHORIZED,
            code: "bad_signature",
        },
        Case {
            what: "a timestamp 6 minutes old",
            headers: headers(id, &past, &sign(id, ts - six_minutes, body.as_bytes())),
            body: b(),
            status: StatusCode::UNAUTHORIZED,
            code: "stale_timestamp",
        },
        Case {
            what: "a timestamp 6 minutes ahead",
            headers: headers(id, &future, &sign(id, ts + six_minutes, body.as_bytes())),
            body: b(),
            status: StatusCode::UNAUTHORIZED,
            code: "future_timestamp",
        },
        Case {
            what: "a timestamp past i64",
            headers: headers(id, "99999999999999999999", &good),
            body: b(),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_header",
        },
        // Svix signs text only: bytes that are not UTF-8 are refused before any signature.
        Case {
            what: "a body that is not UTF-8",
            headers: headers(id, &ts_s, &good),
            body: vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
            status: StatusCode::BAD_REQUEST,
            code: "body_not_json",
        },
        signed(
            "a body that is not JSON",
            b"type=user.created".to_vec(),
            StatusCode::BAD_REQUEST,
            "body_not_json",
        ),
        signed(
            "a JSON document with trailing garbage",
            format!("{body} {{}}").into_bytes(),
            StatusCode::BAD_REQUEST,
            "body_not_json",
        ),
        signed(
            "JSON nested 100,000 deep",
            deep.into_bytes(),
            StatusCode::BAD_REQUEST,
            "body_not_json",
        ),
        signed("an empty body", Vec::new(), StatusCode::BAD_REQUEST, "body_not_json"),
        signed(
            "1 MiB + 1 bytes",
            {
                let mut b = too_big.into_bytes();
                b.truncate(1024 * 1024 + 1);
                b
            },
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for case in cases {
        let response = send_event_post(&app, &case.headers, case.body).await;
        assert_eq!(response.status, case.status, "{}: {}", case.what, response.body);
        if !case.code.is_empty() {
            let reply: Value = serde_json::from_str(&response.body)
                .unwrap_or_else(|_| panic!("{}: a JSON error body, got {:?}", case.what, response.body));
            assert_eq!(reply["error"]["code"], case.code, "{}", case.what);
            if case.what.contains("twice") {
                assert!(
                    reply["error"]["message"].as_str().unwrap().contains("more than once"),
                    "{reply}"
                );
            }
        }
        assert_eq!(
            (app.inbox_count().await, projections(&app.pool).await),
            before,
            "{} stored or changed something",
            case.what
        );
        assert_eq!(app.get("/healthz").await.status, StatusCode::OK, "{}", case.what);
    }

    // After all that, the genuine delivery is accepted and applied.
    let response = send_event_post(&app, &headers(id, &ts_s, &good), b()).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    app.wait_until_applied().await;
    assert_ne!(projections(&app.pool).await, before.1);
    app.stop().await;
}

/// Posts raw bytes with exactly these headers (names may repeat).
async fn send_event_post(
    app: &TestApp,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> clerk_mirror::cli::send_event::Response {
    clerk_mirror::cli::send_event::post(&app.webhook_url(), headers, body.into())
        .await
        .expect("post")
}

#[tokio::test]
async fn verified_events_the_mirror_cannot_apply_are_acked_then_dead_lettered_with_their_error_never_applied() {
    let ts = chrono::Utc::now().timestamp();
    let app = seeded(ts).await;
    let before = projections(&app.pool).await;

    let user = |f: &dyn Fn(&mut Value)| {
        let mut data = crate::events::user("user_h1", T + 5, "Changed");
        f(&mut data);
        envelope("user.updated", T + 5, data)
    };
    let member = |f: &dyn Fn(&mut Value)| {
        let mut data = membership("orgmem_h1", "org_h", "user_h1", T + 5, "org:member");
        f(&mut data);
        envelope("organizationMembership.updated", T + 5, data)
    };
    // (what, body, the status it ends in, a word its error must contain)
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "no data",
            json!({"type": "user.updated", "timestamp": T}).to_string(),
            "failed",
            "data",
        ),
        (
            "data is null",
            envelope("user.updated", T, Value::Null),
            "failed",
            "data",
        ),
        (
            "data is an array",
            envelope("user.created", T, json!([{"id": "user_h1"}])),
            "failed",
            "data",
        ),
        (
            "data is a string",
            envelope("organization.updated", T, json!("org_h")),
            "failed",
            "data",
        ),
        (
            "no id",
            user(&|d| drop(d.as_object_mut().unwrap().remove("id"))),
            "failed",
            "id",
        ),
        ("a numeric id", user(&|d| d["id"] = json!(42)), "failed", "id"),
        ("an empty id", user(&|d| d["id"] = json!("")), "failed", "id"),
        (
            "an id with a slash",
            user(&|d| d["id"] = json!("user_h1/../org_h")),
            "failed",
            "id",
        ),
        (
            "an id with a space",
            user(&|d| d["id"] = json!("user h1")),
            "failed",
            "id",
        ),
        (
            "an id that is not ASCII",
            user(&|d| d["id"] = json!("user_hé")),
            "failed",
            "id",
        ),
        (
            "an id with a NUL",
            user(&|d| d["id"] = json!("user_h1\u{0}x")),
            "failed",
            "id",
        ),
        (
            "an id of 200 characters",
            user(&|d| d["id"] = json!("u".repeat(200))),
            "failed",
            "id",
        ),
        (
            "a deleted user without an id",
            envelope("user.deleted", T, json!({"deleted": true, "object": "user"})),
            "failed",
            "id",
        ),
        (
            "an organization with an object for an id",
            envelope("organization.updated", T, json!({"id": {"id": "org_h"}, "name": "x"})),
            "failed",
            "id",
        ),
        (
            "a membership without its organization",
            member(&|d| drop(d.as_object_mut().unwrap().remove("organization"))),
            "failed",
            "organization",
        ),
        (
            "a membership without its user",
            member(&|d| drop(d.as_object_mut().unwrap().remove("public_user_data"))),
            "failed",
            "user_id",
        ),
        (
            "a membership whose organization id has a slash",
            member(&|d| d["organization"]["id"] = json!("org_h/memberships/x")),
            "failed",
            "id",
        ),
        (
            "a membership whose user id is a number",
            member(&|d| d["public_user_data"]["user_id"] = json!(7)),
            "failed",
            "user_id",
        ),
        (
            "an unknown type",
            envelope("user.renamed", T, json!({"id": "user_h1"})),
            "skipped",
            "",
        ),
        (
            "a session event",
            envelope("session.created", T, json!({"id": "sess_1", "user_id": "user_h1"})),
            "skipped",
            "",
        ),
        ("no type", json!({"data": {"id": "user_h1"}}).to_string(), "skipped", ""),
        (
            "a JSON array",
            json!([{"type": "user.deleted"}]).to_string(),
            "skipped",
            "",
        ),
        ("a JSON string", json!("user.deleted").to_string(), "skipped", ""),
        (
            "a type that is a number",
            json!({"type": 3, "data": {"id": "user_h1"}}).to_string(),
            "skipped",
            "",
        ),
    ];
    for (what, body, outcome, word) in cases {
        let (id, response) = app.send(&body).await;
        assert_eq!(response.status, StatusCode::OK, "{what}: {}", response.body);
        app.wait_until_applied().await;
        let (status, error): (String, Option<String>) =
            sqlx::query_as("SELECT status, error FROM inbox WHERE event_key = $1")
                .bind(&id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(status, outcome, "{what}: {error:?}");
        if outcome == "failed" {
            let error = error.unwrap_or_default();
            assert!(
                error.contains(word),
                "{what}: the error {error:?} does not name {word:?}"
            );
        }
        assert_eq!(projections(&app.pool).await, before, "{what} changed a projection");
    }

    // The body of each dead letter is kept, byte for byte, for a replay once it is fixed.
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE status = 'failed' AND body IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(kept, 18);
    app.stop().await;
}

#[tokio::test]
async fn an_update_for_a_user_never_created_is_applied_as_that_user_since_clerk_sends_whole_objects() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[user_event("updated", "user_late", T + 9, T + 9, "Late")])
        .await;
    let mut c = DirectoryServiceClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap();
    let user = c
        .get_user(pb::GetUserRequest {
            name: "users/user_late".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.first_name, "Late");
    // …and the create that arrives after it, older, changes nothing.
    let before = projections(&app.pool).await;
    app.send_all_and_apply(&[user_event("created", "user_late", T, T, "Early")])
        .await;
    assert_eq!(projections(&app.pool).await, before);
    app.stop().await;
}

#[tokio::test]
async fn nul_characters_deep_nesting_and_unusual_unicode_are_applied_and_read_back_as_sent() {
    let app = spawn_app().await;
    let odd_names = [
        "Ada\u{0}Lovelace",           // NUL: PostgreSQL text cannot hold it; it is removed
        "Zoë 🧑‍🚀",                     // combining-free accents, a ZWJ sequence
        "e\u{301}\u{301}\u{301}",     // stacked combining accents
        "\u{202E}evilcod\u{202C}",    // bidi overrides
        "Ｆｕｌｌｗｉｄｔｈ",         // fullwidth forms
        "\u{FEFF}\u{200B}zero-width", // BOM and zero-width space
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈",                  // astral plane
        "'; DROP TABLE users; --",    // SQL in a value is just text
    ];
    let mut bodies = Vec::new();
    for (i, name) in odd_names.iter().enumerate() {
        let mut data = user(&format!("user_u{i}"), T, name);
        data["public_metadata"] = json!({"deep": serde_json::from_str::<Value>(&nested(100, r#""bottom""#)).unwrap(), "k\u{0}ey": "v\u{0}al"});
        data["email_addresses"][0]["email_address"] = json!(format!("Ünï{i}@Exämple.com"));
        bodies.push(envelope("user.created", T, data));
    }
    app.send_all_and_apply(&bodies).await;
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE status <> 'applied'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(failed, 0);

    let mut c = DirectoryServiceClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap();
    for (i, name) in odd_names.iter().enumerate() {
        let user = c
            .get_user(pb::GetUserRequest {
                name: format!("users/user_u{i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(user.first_name, name.replace('\0', ""), "{name:?}");
        let metadata = crate::directory::struct_to_json(user.public_metadata.clone().unwrap());
        assert_eq!(metadata["key"], "val", "{name:?}");
        // Nested past what protobuf decoders accept, the rest comes as its JSON text.
        let mut deep = metadata["deep"].clone();
        for _ in 0..100 {
            if let Some(text) = deep.as_str() {
                deep = serde_json::from_str(text).unwrap();
            }
            deep = deep[0].clone();
        }
        assert_eq!(deep, "bottom", "{name:?}");
        // The address as sent, and case-insensitively (ASCII and beyond).
        for email in [format!("Ünï{i}@Exämple.com"), format!("üNÏ{i}@exÄmple.COM")] {
            let found = c
                .lookup_user(pb::LookupUserRequest {
                    key: Some(pb::lookup_user_request::Key::Email(email.clone())),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{email}: {e:?}"))
                .into_inner()
                .user
                .unwrap();
            assert_eq!(found.id, format!("user_u{i}"), "{email}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn envelope_timestamps_at_the_ends_of_every_range_are_stored_and_never_fail_the_batch() {
    let app = spawn_app().await;
    let extremes = [
        json!(i64::MIN),
        json!(i64::MAX),
        json!(-8_000_000_000_000_000i64), // before 4713 BC: chrono has it, PostgreSQL does not
        json!(8_000_000_000_000_000i64),
        json!(-1),
        json!(1e300),
        json!(-1.5e-300),
        json!("1767225600000"),
        json!(null),
    ];
    // All at once, so they share the inbox writer's commits with an ordinary event.
    let mut bodies: Vec<String> = extremes
        .iter()
        .enumerate()
        .map(|(i, ts)| {
            let mut body: Value =
                serde_json::from_str(&user_event("created", &format!("user_t{i}"), T, T, "Tim")).unwrap();
            body["timestamp"] = ts.clone();
            body["data"]["updated_at"] = ts.clone();
            body.to_string()
        })
        .collect();
    bodies.push(user_event("created", "user_plain", T, T, "Plain"));
    let responses = futures::future::join_all(bodies.iter().map(|b| app.send(b))).await;
    for ((_, response), ts) in responses.iter().zip(extremes.iter().chain([&json!(T)])) {
        assert_eq!(response.status, StatusCode::OK, "timestamp {ts}: {}", response.body);
    }
    app.wait_until_applied().await;
    let outcomes: Vec<(String, Option<String>)> = sqlx::query_as("SELECT status, error FROM inbox ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), bodies.len());
    for (status, error) in &outcomes {
        assert_eq!(status, "applied", "{error:?}");
    }
    app.stop().await;
}

//! Organization invitations: listed by organization and by address (case-insensitively), read
//! one by one, watched by organization; the acceptance URL's token kept nowhere; and the expiry
//! Clerk never sends, produced once by the mirror and never over Clerk's own answer.

use std::time::Duration;

use clerk_mirror::applier::{self, expiry};
use clerk_mirror::pb;
use clerk_mirror::pb::directory_service_client::DirectoryServiceClient;
use clerk_mirror::pb::watch_changes_response::Event;
use clerk_mirror::pb::watch_service_client::WatchServiceClient;
use sqlx::{Connection, PgConnection, PgPool};
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

/// The ids ListInvitations answers under `parent` with `filter`.
async fn listed(c: &mut DirectoryServiceClient<Channel>, parent: &str, filter: &str, show_deleted: bool) -> Vec<String> {
    c.list_invitations(pb::ListInvitationsRequest {
        parent: parent.into(),
        filter: filter.into(),
        show_deleted,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("ListInvitations {parent} {filter}: {e:?}"))
    .into_inner()
    .invitations
    .into_iter()
    .map(|i| i.id)
    .collect()
}

/// GetInvitation of `name`, answered from PostgreSQL at the log's head.
async fn get(c: &mut DirectoryServiceClient<Channel>, name: &str) -> Result<pb::Invitation, tonic::Status> {
    c.get_invitation(pb::GetInvitationRequest {
        name: name.into(),
        show_deleted: true,
        consistency: Some(pb::Consistency {
            requirement: Some(pb::consistency::Requirement::FullyConsistent(true)),
        }),
    })
    .await
    .map(|r| r.into_inner().invitation.expect("an invitation"))
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn pending_invitations_are_listed_by_organization_and_by_address_whatever_its_case() {
    let app = spawn_app().await;
    let far = Some(now_ms() + 86_400_000);
    app.send_all_and_apply(&[
        org_event("created", "org_a", T, T, "A"),
        org_event("created", "org_b", T, T, "B"),
        invitation_event("created", "orginv_1", "org_a", "Jane@Acme.com", far, T + 1),
        invitation_event("created", "orginv_2", "org_b", "jane@acme.com", far, T + 2),
        invitation_event("created", "orginv_3", "org_a", "joe@acme.com", far, T + 3),
        invitation_event("accepted", "orginv_3", "org_a", "joe@acme.com", far, T + 4),
        invitation_event("created", "orginv_4", "org_a", "JANE@ACME.COM", None, T + 5),
        invitation_event("revoked", "orginv_4", "org_a", "JANE@ACME.COM", None, T + 6),
    ])
    .await;
    let mut c = client(&app).await;
    let jane = r#"status = "pending" AND email_address = "jane@ACME.com""#;
    assert_eq!(listed(&mut c, "organizations/-", jane, false).await, ["orginv_1", "orginv_2"]);
    assert_eq!(listed(&mut c, "organizations/org_a", jane, false).await, ["orginv_1"]);
    assert_eq!(listed(&mut c, "organizations/-", r#"email_address = "JANE@acme.com""#, false).await, ["orginv_1", "orginv_2", "orginv_4"]);
    assert_eq!(listed(&mut c, "organizations/-", r#"email_address = "*@Acme.com" AND status != "pending""#, false).await, ["orginv_3", "orginv_4"]);
    assert_eq!(listed(&mut c, "organizations/org_a", "", false).await, ["orginv_1", "orginv_3", "orginv_4"]);

    let one = get(&mut c, "organizations/org_a/invitations/orginv_3").await.unwrap();
    assert_eq!(
        (one.name.as_str(), one.email_address.as_str(), one.role.as_str(), one.status.as_str(), one.user_id.as_str()),
        ("organizations/org_a/invitations/orginv_3", "joe@acme.com", "org:member", "accepted", "user_of_orginv_3")
    );
    assert_eq!(one.expire_time.unwrap().seconds * 1000, far.unwrap() / 1000 * 1000);
    assert_eq!(one.public_metadata.unwrap().fields["team"], prost_types::Value::from("blue".to_string()));
    assert!(!one.expired_by_mirror);
    let none = get(&mut c, "organizations/org_a/invitations/orginv_4").await.unwrap();
    assert!(none.expire_time.is_none(), "no expiry sent: none shown");
    // From memory too (the default consistency), and under another organization it is not found.
    let cached = c
        .get_invitation(pb::GetInvitationRequest {
            name: "organizations/org_a/invitations/orginv_1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .invitation
        .unwrap();
    assert_eq!(cached.email_address, "Jane@Acme.com", "the address as Clerk sent it");
    for name in ["organizations/org_b/invitations/orginv_1", "organizations/org_a/invitations/orginv_9"] {
        for consistency in [None, Some(true)] {
            let e = c
                .get_invitation(pb::GetInvitationRequest {
                    name: name.into(),
                    consistency: consistency.map(|f| pb::Consistency {
                        requirement: Some(pb::consistency::Requirement::FullyConsistent(f)),
                    }),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::NotFound, "{name}: {e:?}");
            assert!(e.message().contains(name), "the error names what was asked: {}", e.message());
        }
    }
    for (name, field) in [("organizations/org_a/memberships/orginv_1", "name"), ("orginv_1", "name")] {
        let e = get(&mut c, name).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
        assert_eq!(e.get_details_bad_request().unwrap().field_violations[0].field, field);
    }
    for (parent, filter) in [("org_a", ""), ("organizations/-", "domain = \"acme.com\""), ("organizations/-", "email_address > \"a\"")] {
        let e = c
            .list_invitations(pb::ListInvitationsRequest {
                parent: parent.into(),
                filter: filter.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{parent} {filter}: {e:?}");
        assert!(e.get_details_error_info().is_some());
    }
    app.stop().await;
}

#[tokio::test]
async fn an_organizations_delete_ends_its_invitations_each_a_change_and_its_watch_sees_them() {
    let app = spawn_app().await;
    let mut w = WatchServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    let mut stream = w
        .watch_changes(pb::WatchChangesRequest {
            organization_id: "org_w".into(),
            entity_types: vec![pb::EntityType::Invitation as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    app.send_all_and_apply(&[
        org_event("created", "org_w", T, T, "W"),
        invitation_event("created", "orginv_x", "org_x", "x@example.com", None, T + 1),
        invitation_event("created", "orginv_w1", "org_w", "w1@example.com", None, T + 1),
        invitation_event("created", "orginv_w2", "org_w", "w2@example.com", None, T + 2),
        invitation_event("accepted", "orginv_w2", "org_w", "w2@example.com", None, T + 3),
        org_deleted("org_w", T + 10),
    ])
    .await;
    let mut got = Vec::new();
    while got.len() < 5 {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a message within 30 s")
            .unwrap()
            .unwrap();
        if let Some(Event::Change(c)) = m.event {
            let operation = c.operation();
            let Some(pb::change::Entity::Invitation(i)) = c.entity else {
                panic!("an invitation: {c:?}")
            };
            assert!(!format!("{i:?}").contains("tkn_"), "a watch carried a token: {i:?}");
            got.push((i.id, operation, i.status, i.email_address));
        }
    }
    use pb::Operation as O;
    let s = |s: &str| s.to_string();
    assert_eq!(
        got,
        [
            (s("orginv_w1"), O::Created, s("pending"), s("w1@example.com")),
            (s("orginv_w2"), O::Created, s("pending"), s("w2@example.com")),
            (s("orginv_w2"), O::Updated, s("accepted"), s("w2@example.com")),
            (s("orginv_w1"), O::Deleted, s(""), s("w1@example.com")),
            (s("orginv_w2"), O::Deleted, s(""), s("w2@example.com")),
        ],
        "ended with their organization, each a change keeping the address"
    );
    let mut c = client(&app).await;
    assert!(listed(&mut c, "organizations/org_w", "", false).await.is_empty());
    assert_eq!(listed(&mut c, "organizations/org_w", "", true).await, ["orginv_w1", "orginv_w2"]);
    app.stop().await;
}

#[tokio::test]
async fn the_acceptance_url_and_its_token_are_kept_nowhere_and_never_answered() {
    let app = spawn_app().await;
    let ids = app
        .send_all_and_apply(&[
            org_event("created", "org_t", T, T, "T"),
            invitation_event("created", "orginv_t", "org_t", "t@example.com", None, T + 1),
            invitation_event("revoked", "orginv_t", "org_t", "t@example.com", None, T + 2),
            // An instance invitation (not projected, kept): its URL carries a ticket too.
            envelope(
                "invitation.created",
                T,
                serde_json::json!({"object": "invitation", "id": "inv_1", "email_address": "i@example.com",
                                   "url": "https://accounts.example.com/?__clerk_ticket=tkn_inv_1", "status": "pending"}),
            ),
        ])
        .await;
    assert_eq!(token_traces(&app.pool).await, 0, "a token was stored");
    for id in &ids[1..] {
        let (body, redacted): (Option<Vec<u8>>, bool) =
            sqlx::query_as("SELECT body, body_redacted FROM inbox WHERE event_key = $1")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body.expect("the rest of the body is kept")).unwrap();
        assert!(redacted, "{id}: marked redacted");
        assert!(body["data"]["email_address"].is_string(), "{body}");
        assert!(body["data"].get("url").is_none() && !body.to_string().contains("tkn_"), "{body}");
        if body["type"] != "invitation.created" {
            assert!(body["data"]["data"].get("url").is_none(), "the nested copy too: {body}");
        }
    }
    let mut c = client(&app).await;
    let answered = format!("{:?}", get(&mut c, "organizations/org_t/invitations/orginv_t").await.unwrap());
    assert!(!answered.contains("tkn_") && answered.contains("revoked"), "{answered}");
    let mut w = WatchServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    let mut stream = w
        .watch_changes(pb::WatchChangesRequest {
            start: Some(pb::watch_changes_request::Start::StartFromOldest(true)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a message within 30 s")
            .unwrap()
            .unwrap();
        assert!(!format!("{m:?}").contains("tkn_"), "{m:?}");
        if matches!(m.event, Some(Event::CaughtUp(_))) {
            break;
        }
    }
    app.stop().await;
}

/// Pending invitations, one per case, on a database of their own with no applier running.
async fn database() -> (PgPool, PgConnection, String) {
    let (cluster, name) = shared_database().await;
    let pool = PgPool::connect_with(cluster.connect_options(&name)).await.unwrap();
    let conn = PgConnection::connect_with(&cluster.connect_options(&name)).await.unwrap();
    (pool, conn, name)
}

async fn status(pool: &PgPool, id: &str) -> (String, String) {
    sqlx::query_as("SELECT coalesce(status, ''), coalesce(clerk_status, '') FROM invitations WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The changes of `id`: (operation, status, source).
async fn changes_of(pool: &PgPool, id: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT operation, coalesce(state->>'status', ''), split_part(source, ':', 1) FROM changes
          WHERE entity_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_expiry_is_produced_once_across_replicas_and_failover_and_only_for_a_pending_invitation_past_its_expiry() {
    let (pool, mut conn, _) = database().await;
    let past = Some(now_ms() - 60_000);
    let future = Some(now_ms() + 3_600_000);
    let events = [
        invitation_event("created", "orginv_due", "org_e", "due@example.com", past, T + 1),
        invitation_event("created", "orginv_later", "org_e", "later@example.com", future, T + 1),
        invitation_event("created", "orginv_never", "org_e", "never@example.com", None, T + 1),
        invitation_event("created", "orginv_taken", "org_e", "taken@example.com", past, T + 1),
        // Accepted before it expired, and said so before the mirror looked: never expired.
        invitation_event("accepted", "orginv_taken", "org_e", "taken@example.com", past, T + 2),
    ];
    for (i, e) in events.iter().enumerate() {
        crate::applier::insert_inbox(&mut conn, &format!("msg_exp_{i}"), e).await;
    }
    applier::drain(&mut conn, 100).await.unwrap();

    // Two replicas look at once (or a new leader repeats what its predecessor did before it
    // died, before applying): one row.
    let mut other = PgConnection::connect_with(&pool.connect_options()).await.unwrap();
    let first = expiry::sweep(&mut conn).await.unwrap();
    let second = expiry::sweep(&mut other).await.unwrap();
    assert_eq!((first.stored, second.stored), (1, 0));
    let next = first.next_in.expect("orginv_later is due later");
    assert!(next > Duration::from_secs(3_000) && next <= Duration::from_secs(3_600), "{next:?}");
    applier::drain(&mut other, 100).await.unwrap();
    assert_eq!(expiry::sweep(&mut conn).await.unwrap().stored, 0, "nothing more is due");
    applier::drain(&mut conn, 100).await.unwrap();

    assert_eq!(status(&pool, "orginv_due").await, ("expired".into(), "pending".into()));
    assert_eq!(
        changes_of(&pool, "orginv_due").await,
        [
            ("created".into(), "pending".into(), "webhook".into()),
            ("updated".into(), "expired".into(), "clock".into())
        ],
        "one expiry"
    );
    for id in ["orginv_later", "orginv_never"] {
        assert_eq!(status(&pool, id).await, ("pending".into(), "pending".into()), "{id}");
    }
    assert_eq!(status(&pool, "orginv_taken").await, ("accepted".into(), "accepted".into()));
    let clock: Vec<(String, String, String)> =
        sqlx::query_as("SELECT event_key, event_type, status FROM inbox WHERE source = 'clock'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(clock.len(), 1, "{clock:?}");
    assert!(clock[0].0.starts_with("expiry:orginv_due:"), "{clock:?}");
    assert_eq!((clock[0].1.as_str(), clock[0].2.as_str()), ("clerkmirror.invitation.expired", "applied"));

    // A Clerk-ranked row of the mirror's type is not the mirror's word: skipped.
    let forged = clock_body("orginv_later", future.unwrap(), &pool).await;
    sqlx::query("INSERT INTO inbox (source, event_key, event_type, body) VALUES ('webhook', 'msg_forged', $1, $2)")
        .bind(clerk_mirror::store::invitations::EXPIRED)
        .bind(forged.as_bytes())
        .execute(&pool)
        .await
        .unwrap();
    applier::drain(&mut conn, 100).await.unwrap();
    assert_eq!(status(&pool, "orginv_later").await.0, "pending");
    pool.close().await;
}

/// Delivers `body` under a fresh svix-id and applies it.
async fn deliver(conn: &mut PgConnection, body: String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::applier::insert_inbox(conn, &format!("msg_deliver_{n}"), &body).await;
    applier::drain(conn, 100).await.unwrap();
}

/// The body of an expiry row for the invitation `id` as stored now.
async fn clock_body(id: &str, expires_ms: i64, pool: &PgPool) -> String {
    let (updated_ms, event_ms, key): (i64, i64, String) =
        sqlx::query_as("SELECT version_updated_ms, version_event_ms, version_key FROM invitations WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    serde_json::json!({"type": clerk_mirror::store::invitations::EXPIRED, "timestamp": expires_ms,
        "data": {"id": id, "expires_at": expires_ms, "basis": {"updated_ms": updated_ms, "event_ms": event_ms, "key": key}}})
    .to_string()
}

#[tokio::test]
async fn clerks_accepted_or_revoked_replaces_the_mirrors_expiry_whatever_its_updated_at_and_a_redelivery_does_not_undo_it() {
    let (pool, mut conn, _) = database().await;
    let past = now_ms() - 60_000;
    for id in ["orginv_a", "orginv_r", "orginv_p"] {
        deliver(&mut conn, invitation_event("created", id, "org_r", "r@example.com", Some(past), T + 10)).await;
    }
    assert_eq!(expiry::sweep(&mut conn).await.unwrap().stored, 3);
    applier::drain(&mut conn, 100).await.unwrap();
    for id in ["orginv_a", "orginv_r", "orginv_p"] {
        assert_eq!(status(&pool, id).await, ("expired".into(), "pending".into()), "{id}");
    }
    // The pending state again (replayed under another key, same content): the expiry stands.
    deliver(&mut conn, invitation_event("created", "orginv_p", "org_r", "r@example.com", Some(past), T + 10)).await;
    assert_eq!(status(&pool, "orginv_p").await.0, "expired");
    // Accepted before its expiry, with an updated_at even older than the pending one's; revoked
    // likewise: Clerk's answer wins.
    deliver(&mut conn, invitation_event("accepted", "orginv_a", "org_r", "r@example.com", Some(past), T + 5)).await;
    deliver(&mut conn, invitation_event("revoked", "orginv_r", "org_r", "r@example.com", Some(past), T + 11)).await;
    assert_eq!(status(&pool, "orginv_a").await, ("accepted".into(), "accepted".into()));
    assert_eq!(status(&pool, "orginv_r").await, ("revoked".into(), "revoked".into()));
    // A newer pending word of Clerk's (its metadata edited) replaces the expiry; still past its
    // expiry, the next sweep expires it again from that state.
    deliver(&mut conn, invitation_event("created", "orginv_p", "org_r", "r@example.com", Some(past), T + 20)).await;
    assert_eq!(status(&pool, "orginv_p").await.0, "pending");
    assert_eq!(expiry::sweep(&mut conn).await.unwrap().stored, 1);
    applier::drain(&mut conn, 100).await.unwrap();
    assert_eq!(status(&pool, "orginv_p").await.0, "expired");
    // An expiry computed from a state that is no longer stored is skipped.
    let stale = clock_body("orginv_a", past, &pool).await.replace("\"updated_ms\":", "\"updated_ms\":1");
    sqlx::query("INSERT INTO inbox (source, event_key, event_type, body) VALUES ('clock', 'stale', $1, $2)")
        .bind(clerk_mirror::store::invitations::EXPIRED)
        .bind(stale.as_bytes())
        .execute(&pool)
        .await
        .unwrap();
    applier::drain(&mut conn, 100).await.unwrap();
    assert_eq!(status(&pool, "orginv_a").await.0, "accepted");
    pool.close().await;
}

#[tokio::test]
async fn serve_expires_a_pending_invitation_when_its_expiry_passes_and_says_the_mirror_did() {
    let app = spawn_app().await;
    let expires = now_ms() + 1_500;
    app.send_all_and_apply(&[invitation_event("created", "orginv_s", "org_s", "s@example.com", Some(expires), T + 1)])
        .await;
    let mut c = client(&app).await;
    let name = "organizations/org_s/invitations/orginv_s";
    assert_eq!(get(&mut c, name).await.unwrap().status, "pending");
    // Polled (bounded): the applier-lock holder wakes when the expiry is due.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let expired = loop {
        let i = get(&mut c, name).await.unwrap();
        if i.status == "expired" {
            break i;
        }
        assert!(std::time::Instant::now() < deadline, "not expired 30 s after its expiry: {i:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(expired.expired_by_mirror);
    assert!(now_ms() >= expires, "expired before its time");
    assert_eq!(
        listed(&mut c, "organizations/-", r#"status = "expired""#, false).await,
        ["orginv_s"]
    );
    // Clerk's word arrives after all: it replaces the mirror's.
    app.send_all_and_apply(&[invitation_event("accepted", "orginv_s", "org_s", "s@example.com", Some(expires), T + 2)])
        .await;
    let accepted = get(&mut c, name).await.unwrap();
    assert_eq!((accepted.status.as_str(), accepted.expired_by_mirror), ("accepted", false));
    app.stop().await;
}

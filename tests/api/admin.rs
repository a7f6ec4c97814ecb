//! `AdminService` and the `status` / `replay` commands: where the mirror stands, the inbox, and a
//! dead letter replayed after an "upgrade".

use clerk_mirror::grpc::cursor::Cursor;
use clerk_mirror::pb;
use clerk_mirror::pb::admin_service_client::AdminServiceClient;
use tokio::process::Command;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::events::*;
use crate::helpers::*;

async fn client(app: &TestApp) -> AdminServiceClient<Channel> {
    AdminServiceClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap()
}

/// A dead letter as an older version would have left it: a valid event marked failed.
async fn old_dead_letter(app: &TestApp, key: &str, body: &str) {
    sqlx::query(
        "INSERT INTO inbox (source, event_key, event_type, body, status, error, processed_at, attempts)
         VALUES ('webhook', $1, 'user.created', $2, 'failed', 'unsupported by an older version', now(), 1)",
    )
    .bind(key)
    .bind(body.as_bytes())
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn sync_status_says_where_the_mirror_stands_and_which_replica_applies() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        user_event("created", "user_a1", T, T, "A"),
        user_event("created", "user_a2", T, T, "A"),
    ])
    .await;
    old_dead_letter(&app, "msg_dead", &user_event("created", "user_dead", T, T, "Dead")).await;
    let s = client(&app)
        .await
        .get_sync_status(pb::GetSyncStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(Cursor::decode(&s.head_cursor).unwrap().seq, 2);
    assert_eq!(Cursor::decode(&s.oldest_cursor).unwrap().seq, 0);
    assert_eq!((s.inbox_pending, s.dead_letters), (0, 1));
    assert!(s.last_event_receive_time.is_some() && s.last_event_apply_time.is_some());
    assert!(
        s.applier
            .starts_with(&format!("clerk-mirror applier {}@", std::process::id())),
        "{}",
        s.applier
    );
    app.stop().await;
}

#[tokio::test]
async fn inbox_events_list_newest_first_by_status_and_type_without_bodies() {
    let app = spawn_app().await;
    let mut bodies: Vec<String> = (0..5)
        .map(|i| user_event("created", &format!("user_l{i}"), T, T, "L"))
        .collect();
    bodies.push(envelope("session.created", T, serde_json::json!({"id": "sess_1"})));
    app.send_all_and_apply(&bodies).await;
    let mut c = client(&app).await;
    let page = c
        .list_inbox_events(pb::ListInboxEventsRequest {
            page_size: 2,
            status: pb::InboxStatus::Applied as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 2);
    assert!(page.events[0].id > page.events[1].id, "newest first");
    assert!(
        page.events
            .iter()
            .all(|e| e.status == pb::InboxStatus::Applied as i32 && e.event_type == "user.created")
    );
    let rest = c
        .list_inbox_events(pb::ListInboxEventsRequest {
            page_size: 10,
            page_token: page.next_page_token,
            status: pb::InboxStatus::Applied as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.events.len(), 3);
    assert!(rest.next_page_token.is_empty());
    let skipped = c
        .list_inbox_events(pb::ListInboxEventsRequest {
            event_type: "session.created".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(skipped.events.len(), 1);
    assert_eq!(skipped.events[0].status, pb::InboxStatus::Skipped as i32);
    let e = c
        .list_inbox_events(pb::ListInboxEventsRequest {
            status: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn a_dead_letter_replayed_after_an_upgrade_is_applied_once_through_the_inbox() {
    let app = spawn_app().await;
    old_dead_letter(&app, "msg_old", &user_event("created", "user_replayed", T, T, "Back")).await;
    let mut c = client(&app).await;
    let r = c
        .replay_events(pb::ReplayEventsRequest {
            all_dead_letters: true,
            svix_ids: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.replayed, 1);
    app.wait_until_applied().await;
    let name: Option<String> = sqlx::query_scalar("SELECT first_name FROM users WHERE id = 'user_replayed'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("Back"));
    let source: String = sqlx::query_scalar("SELECT source FROM changes WHERE entity_id = 'user_replayed'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(source.starts_with("replay:webhook:msg_old@"), "{source}");
    let status: String = sqlx::query_scalar("SELECT status FROM inbox WHERE event_key = 'msg_old'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "replayed");
    // Nothing left to replay; by id, unknown ids are reported.
    let r = c
        .replay_events(pb::ReplayEventsRequest {
            all_dead_letters: true,
            svix_ids: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.replayed, 0);
    let r = c
        .replay_events(pb::ReplayEventsRequest {
            all_dead_letters: false,
            svix_ids: vec!["msg_old".into(), "msg_nope".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.replayed, r.not_found), (1, vec!["msg_nope".to_string()]));
    app.wait_until_applied().await;
    // Replaying an applied event changes nothing: same state, no new change.
    let changes: i64 = sqlx::query_scalar("SELECT count(*) FROM changes")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(changes, 1);
    for bad in [
        pb::ReplayEventsRequest {
            all_dead_letters: false,
            svix_ids: vec![],
        },
        pb::ReplayEventsRequest {
            all_dead_letters: true,
            svix_ids: vec!["msg_old".into()],
        },
    ] {
        let e = c.replay_events(bad).await.unwrap_err();
        assert_eq!(e.get_details_error_info().unwrap().reason, "INVALID_SELECTION");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_status_and_replay_commands_work_on_the_database() {
    let (cluster, name) = shared_database().await;
    let app = spawn_app_on(cluster, &name, |_| {}).await;
    old_dead_letter(&app, "msg_cli", &user_event("created", "user_cli", T, T, "Cli")).await;
    let url = cluster.url(&name);
    let run = |args: Vec<&'static str>| {
        let url = url.clone();
        async move {
            Command::new(crate::process::binary())
                .args(args)
                .args(["--database-url", &url])
                .output()
                .await
                .unwrap()
        }
    };
    let status = run(vec!["status", "--json"]).await;
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["dead_letters"], 1);
    let replay = run(vec!["replay", "--id", "msg_cli"]).await;
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    assert!(String::from_utf8_lossy(&replay.stdout).contains("replayed 1"));
    app.wait_until_applied().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id = 'user_cli'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let missing = run(vec!["replay", "--id", "msg_missing"]).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stdout).contains("not found: msg_missing"));
    let text = run(vec!["status"]).await;
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("dead letters:       0"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    app.stop().await;
}

//! The proof that an entity kind is declared once (issue #21): the test-only kind
//! `store::test_kind::WidgetRecord`, declared in its own file and on one line of the kinds'
//! list, goes through a real server (webhook → inbox → applier → list → watch → read cache)
//! without any code of its own in those layers. It lives on the top floor because it drives the
//! whole server.

use std::time::Duration;

use serde_json::json;
use tokio_stream::StreamExt;

use crate::cache::Answer;
use crate::cli::send_event;
use crate::config::{Config, DatabaseConfig};
use crate::filter::Filter;
use crate::ingest::verify::WebhookSecrets;
use crate::pb;
use crate::pg::{Cluster, ClusterOptions};
use crate::store::EntityType;
use crate::store::read::{self, ListQuery};
use crate::store::test_kind::{WIDGETS_TABLE, WidgetRecord};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Polls `done` every 50 ms until it holds, for at most 30 s.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_declared_only_in_its_own_file_goes_through_inbox_applier_list_watch_and_cache() {
    let data_dir = std::env::temp_dir().join(format!("cm-kind-proof-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut cluster = Cluster::start(ClusterOptions {
        data_dir: data_dir.clone(),
        durable: false,
        die_with_parent: true,
    })
    .await
    .expect("start a cluster");
    let options = cluster.connect_options("postgres");

    // What a migration of a new kind does: its table, and its name in the change log.
    let pool = sqlx::PgPool::connect_with(options.clone()).await.expect("connect");
    crate::db::migrate(&pool).await.expect("migrate");
    sqlx::query(WIDGETS_TABLE)
        .execute(&pool)
        .await
        .expect("the widgets table");
    sqlx::query("ALTER TABLE changes DROP CONSTRAINT changes_entity_type_check")
        .execute(&pool)
        .await
        .expect("the change log takes widgets");

    let mut config = Config::new(
        DatabaseConfig::Options(Box::new(options)),
        WebhookSecrets::parse(&[SECRET]).expect("a secret"),
    );
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    (config.http_addr, config.grpc_addr, config.admin_addr) = (loopback, loopback, loopback);
    config.max_connections = 6;
    if let Some(applier) = config.applier.as_mut() {
        applier.idle_poll = Duration::from_millis(100);
    }
    let secrets = config.webhook_secrets.clone();
    let app = crate::Application::build(config).await.expect("build the server");
    let (http, grpc, cache) = (
        app.http_addr(),
        app.grpc_addr(),
        app.read_cache().expect("a read cache"),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    // Webhooks, as Clerk would send them: widgets of an organization, an update, the
    // organization's delete (which ends its widgets) and a delete of a widget never seen,
    // which names no organization.
    let url = format!("http://{http}/webhooks/clerk");
    let events = [
        json!({"type": "organization.created", "timestamp": 1000, "data": {"id": "org_1", "name": "Org", "updated_at": 1000}}),
        json!({"type": "widget.created", "timestamp": 1001, "data": {"id": "wid_1", "organization_id": "org_1", "status": "active", "name": "one", "updated_at": 1001}}),
        json!({"type": "widget.created", "timestamp": 1002, "data": {"id": "wid_2", "organization_id": "org_1", "status": "active", "name": "two", "updated_at": 1002}}),
        json!({"type": "widget.updated", "timestamp": 1003, "data": {"id": "wid_1", "organization_id": "org_1", "status": "paused", "name": "one", "updated_at": 1003}}),
        json!({"type": "organization.deleted", "timestamp": 1004, "data": {"id": "org_1", "deleted": true}}),
        json!({"type": "widget.deleted", "timestamp": 1005, "data": {"id": "wid_3", "deleted": true}}),
    ];
    let send = |from: usize, to: usize| {
        let (url, secrets) = (url.clone(), secrets.clone());
        let events = events[from..to].to_vec();
        async move {
            for (i, event) in events.iter().enumerate() {
                let id = format!("msg_widget_{}", from + i);
                let answer = send_event::send(&url, &secrets, &id, event.to_string().as_bytes())
                    .await
                    .expect("post a webhook");
                assert!(answer.status.is_success(), "{}: {}", answer.status, answer.body);
            }
        }
    };
    let applied = || async {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE status <> 'applied'")
            .fetch_one(&pool)
            .await
            .expect("count");
        pending == 0
    };
    send(0, 4).await;
    until("the first webhooks are applied", applied).await;

    // A list, with a filter on the kind's own fields.
    let filter = Filter::parse(EntityType::Widget, r#"status = "paus*""#)
        .expect("a widget filter")
        .expect("not empty");
    let listed = read::list::<WidgetRecord>(
        &pool,
        &ListQuery {
            table: "widgets",
            after: "",
            limit: 10,
            show_deleted: false,
            organization_id: Some("org_1"),
            user_id: None,
            id: None,
            filter: Some(&filter),
        },
    )
    .await
    .expect("list widgets");
    let ids: Vec<&str> = listed.items.iter().flatten().map(|s| s.record.id.as_str()).collect();
    assert_eq!(ids, ["wid_1"]);
    assert!(
        Filter::parse(EntityType::Widget, r#"email = "x""#).is_err(),
        "users' fields are not widgets'"
    );

    send(4, events.len()).await;
    until("every webhook is applied", applied).await;

    // The applier: the cascade from the organization (tombstones keep their organization) and
    // a tombstone without a parent.
    let widgets: Vec<(String, Option<String>, Option<String>, bool)> =
        sqlx::query_as("SELECT id, organization_id, status, deleted_at IS NOT NULL FROM widgets ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("widgets");
    let org = Some("org_1".to_string());
    assert_eq!(
        widgets,
        [
            ("wid_1".into(), org.clone(), None, true),
            ("wid_2".into(), org, None, true),
            ("wid_3".into(), None, None, true),
        ]
    );

    // The watch: every widget change, in order, as the API's messages.
    let mut client = pb::watch_service_client::WatchServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    let mut stream = client
        .watch_changes(pb::WatchChangesRequest {
            start: Some(pb::watch_changes_request::Start::StartFromOldest(true)),
            entity_types: vec![<WidgetRecord as crate::store::Kind>::WIRE_TYPE as i32],
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    let mut head = String::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the watch answers")
    {
        match message.expect("a message").event {
            Some(pb::watch_changes_response::Event::Change(c)) => {
                let Some(pb::change::Entity::Organization(w)) = c.entity else {
                    panic!("a widget travels as its message: {c:?}")
                };
                seen.push((w.id, c.operation, w.slug, c.previous.is_some()));
            }
            Some(pb::watch_changes_response::Event::CaughtUp(c)) => {
                head = c.cursor;
                break;
            }
            _ => {}
        }
    }
    let (created, updated, deleted) = (
        pb::Operation::Created as i32,
        pb::Operation::Updated as i32,
        pb::Operation::Deleted as i32,
    );
    assert_eq!(
        seen,
        [
            ("wid_1".to_string(), created, "active".to_string(), false),
            ("wid_2".to_string(), created, "active".to_string(), false),
            ("wid_1".to_string(), updated, "paused".to_string(), true),
            ("wid_1".to_string(), deleted, String::new(), true),
            ("wid_2".to_string(), deleted, String::new(), true),
            ("wid_3".to_string(), deleted, String::new(), false),
        ]
    );

    // The read cache: followed live, and loaded from the projections.
    let seq = crate::pb::cursor::Cursor::decode(&head).expect("a cursor").seq;
    assert_eq!(
        cache.wait_for(seq, Duration::from_secs(30)).await,
        crate::cache::Waited::Reached
    );
    let held = cache
        .read(|i| i.get::<WidgetRecord>("wid_2"))
        .expect("the cache serves");
    let Answer::Found(widget, _) = held else {
        panic!("{held:?}")
    };
    assert!(widget.delete_time.is_some() && widget.display_name.is_empty());
    let loaded = crate::cache::follow::load(&pool, "log", usize::MAX)
        .await
        .expect("load");
    assert!(matches!(loaded.get::<WidgetRecord>("wid_1"), Answer::Found(w, _) if w.id == "wid_1"));
    assert!(matches!(loaded.get::<WidgetRecord>("wid_9"), Answer::Absent(_)));

    let _ = stop.send(());
    server
        .await
        .expect("the server task")
        .expect("the server stops cleanly");
    pool.close().await;
    cluster.stop().await.expect("stop the cluster");
    let _ = std::fs::remove_dir_all(&data_dir);
}

//! The inbox's one insert: every source (webhooks, backfill, reconcile, replay) enqueues through
//! it, it wakes the applier only when it stored something, and replay copies rows through it in
//! their order.

use std::sync::Arc;
use std::time::Duration;

use clerk_mirror::backfill::{self, ClerkApi, rate::RateLimiter};
use clerk_mirror::db::INBOX_CHANNEL;
use clerk_mirror::inbox::{self, InboxRow, Replay, Source};
use sqlx::PgPool;

use crate::backfill::{KEY, fake_api};
use crate::events::*;
use crate::helpers::*;

/// A server whose applier never polls nor prunes within a test: only an inbox notification can
/// wake it before `wait_until_applied` gives up (30 s).
async fn app_woken_only_by_notifications() -> TestApp {
    let app = spawn_app_with(|c| {
        let applier = c.applier.as_mut().expect("an applier");
        applier.idle_poll = Duration::from_secs(3600);
        applier.prune_every = Duration::from_secs(3600);
    })
    .await;
    // One webhook handled (a type the mirror skips, so reconcile sees no drift from it): the
    // applier has caught up and gone to wait.
    let session =
        serde_json::json!({"object": "event", "type": "session.created", "timestamp": T, "data": {"id": "sess_1"}});
    app.send_all_and_apply(&[session.to_string()]).await;
    app
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

fn api(url: &str) -> ClerkApi {
    ClerkApi::new(url, KEY, Arc::new(RateLimiter::new(1000, Duration::from_secs(1))))
}

#[tokio::test]
async fn reconcile_backfill_and_replay_rows_wake_an_idle_applier_through_the_one_insert() {
    let app = app_woken_only_by_notifications().await;
    let (url, _fake) = fake_api(8).await;

    // Reconcile on a mirror that lacks everything Clerk lists: every object is a repair.
    let report = backfill::reconcile::run(&app.pool, &api(&url), Default::default())
        .await
        .unwrap();
    assert_eq!(report.drift["users"].missing.len(), 8);
    app.wait_until_applied().await;
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM users WHERE id LIKE 'user_b%'").await,
        8
    );

    // Backfill the same objects: new rows of their own source, applied (changing nothing).
    let summary = backfill::run(&app.pool, &api(&url), &mut |_| {}).await.unwrap();
    // Users, organizations, memberships, domains, invitations, permissions, roles, items.
    assert_eq!(summary.iter().map(|(_, s)| s.enqueued).sum::<i64>(), 8 + 2 + 8 + 1 + 1 + 3 + 2 + 1);
    app.wait_until_applied().await;

    // Replay a dead letter left by an older version.
    sqlx::query(
        "INSERT INTO inbox (source, event_key, event_type, body, status, error, processed_at, attempts)
         VALUES ('webhook', 'msg_dead', 'user.created', $1, 'failed', 'unsupported by an older version', now(), 1)",
    )
    .bind(user_event("created", "user_dead", T, T, "Dead").into_bytes())
    .execute(&app.pool)
    .await
    .unwrap();
    let (replayed, not_found) = inbox::replay(&app.pool, &Replay::AllDeadLetters).await.unwrap();
    assert_eq!((replayed, not_found.len()), (1, 0));
    app.wait_until_applied().await;
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM users WHERE id = 'user_dead'").await,
        1
    );

    let by_source: Vec<(String, i64)> = sqlx::query_as(
        "SELECT source, count(*) FROM inbox WHERE status IN ('applied', 'skipped') GROUP BY source ORDER BY source",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let expect = |s: Source, n: i64| (s.as_str().to_string(), n);
    assert_eq!(
        by_source,
        [
            expect(Source::Backfill, 26),
            expect(Source::Reconcile, 26),
            expect(Source::Replay, 1),
            expect(Source::Webhook, 1),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn an_insert_that_stores_nothing_new_wakes_nobody() {
    let app = spawn_app_with(|c| c.applier = None).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool).await.unwrap();
    listener.listen_all([INBOX_CHANNEL, "test_marker"]).await.unwrap();
    let row = InboxRow {
        source: Source::Backfill,
        event_key: "users:user_once:1".into(),
        event_type: Some("user.created".into()),
        event_time: None,
        instance_id: None,
        body: Some(user_event("created", "user_once", T, T, "Once").into_bytes().into()),
        trace_context: None,
    };
    let first = inbox::insert(&app.pool, &[&row]).await.unwrap();
    assert_eq!(first, [("backfill".to_string(), "users:user_once:1".to_string())]);
    let again = inbox::insert(&app.pool, &[&row]).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    // Notifications arrive in commit order: had the duplicate notified, it would come before
    // the marker.
    sqlx::query("SELECT pg_notify('test_marker', '')")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let note = tokio::time::timeout(Duration::from_secs(30), listener.recv())
            .await
            .expect("a notification within 30 s")
            .unwrap();
        seen.push(note.channel().to_string());
    }
    assert_eq!(seen, [INBOX_CHANNEL, "test_marker"]);
    app.stop().await;
}

#[tokio::test]
async fn a_replay_copies_many_dead_letters_in_their_order_in_one_transaction() {
    // More than one chunk of copies (100).
    const N: usize = 250;
    let app = spawn_app_with(|c| c.applier = None).await;
    let keys: Vec<String> = (0..N).map(|i| format!("msg_dead{i:03}")).collect();
    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| user_event("created", &format!("user_d{i:03}"), T, T, "Dead").into_bytes())
        .collect();
    sqlx::query(
        "INSERT INTO inbox (source, event_key, event_type, body, status, error, processed_at, attempts)
         SELECT 'webhook', k, 'user.created', b, 'failed', 'unsupported by an older version', now(), 1
           FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS r(k, b, n) ORDER BY n",
    )
    .bind(&keys)
    .bind(&bodies)
    .execute(&app.pool)
    .await
    .unwrap();
    let (replayed, _) = inbox::replay(&app.pool, &Replay::AllDeadLetters).await.unwrap();
    assert_eq!(replayed, N as i64);
    let copies: Vec<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT source, event_key, body FROM inbox WHERE status = 'pending' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(copies.len(), N);
    for ((i, (source, key, body)), original) in copies.iter().enumerate().zip(&bodies) {
        assert_eq!(source, "replay");
        assert!(key.starts_with(&format!("webhook:{}@", keys[i])), "{key}");
        assert_eq!(body, original, "copy {i} keeps its body byte for byte");
    }
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM inbox WHERE status = 'replayed'").await,
        N as i64
    );
    // Nothing left to replay: a second replay copies nothing.
    let (again, _) = inbox::replay(&app.pool, &Replay::AllDeadLetters).await.unwrap();
    assert_eq!(again, 0);
    app.stop().await;
}

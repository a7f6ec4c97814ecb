//! The feed of the change log (`hub::Feed`): whole applier batches, live and from PostgreSQL,
//! from any cursor; pages that never cut a batch; changes from before batches were recorded;
//! a cursor behind the retained log; and changes of an entity type this binary does not know,
//! skipped by the cache and by watchers and counted.

use std::sync::Arc;
use std::time::Duration;

use clerk_mirror::hub::{Batch, Feed, FeedError, Hub, Reader};
use clerk_mirror::metrics::Metrics;
use clerk_mirror::pb;
use clerk_mirror::pb::watch_changes_response::Event;
use clerk_mirror::store::changes::{self, Ends, Scope};
use sqlx::PgPool;

use crate::events::*;
use crate::helpers::*;

/// The log's batches as stored: the seqs of each, in order.
async fn stored_batches(pool: &PgPool) -> Vec<Vec<i64>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT seq, coalesce(batch_last, seq) FROM changes ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap();
    let mut batches: Vec<(i64, Vec<i64>)> = Vec::new();
    for (seq, last) in rows {
        match batches.last_mut() {
            Some((l, seqs)) if *l == last => seqs.push(seq),
            _ => batches.push((last, vec![seq])),
        }
    }
    batches.into_iter().map(|(_, seqs)| seqs).collect()
}

async fn head(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT head_seq FROM log_head")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A user in `n` organizations, created in one batch, then deleted in another (its tombstone and
/// the end of each membership: `n + 1` changes).
fn user_in_organizations(user: &str, n: usize) -> (Vec<String>, String) {
    let mut created = vec![user_event("created", user, T, T, "Member")];
    created.extend((0..n).map(|k| {
        membership_event(
            "created",
            &format!("orgmem_{user}_{k}"),
            &format!("org_{user}_{k}"),
            user,
            T,
            T,
            "org:member",
        )
    }));
    (created, user_deleted(user, T + 1))
}

/// Applies each group of events as one enqueue (the applier takes a group whole).
async fn apply_groups(app: &TestApp, groups: &[Vec<String>]) {
    for group in groups {
        enqueue(&app.pool, group).await;
        wait_until_applied(&app.pool).await;
    }
}

/// Three users created in one batch, then `user` in `n` organizations (one batch), then its
/// delete (another).
async fn three_users_then_one_in_organizations(app: &TestApp, user: &str, n: usize) {
    let (created, deleted) = user_in_organizations(user, n);
    apply_groups(
        app,
        &[
            (0..3)
                .map(|i| user_event("created", &format!("user_{i}"), T, T, "U"))
                .collect(),
            created,
            vec![deleted],
        ],
    )
    .await;
}

async fn hub(app: &TestApp, capacity: usize) -> (Hub, Arc<Metrics>, tokio::sync::watch::Sender<bool>) {
    hub_polling(app, capacity, Duration::from_secs(1)).await
}

/// A hub that also reads the log every `poll` (besides when NOTIFY tells it).
async fn hub_polling(
    app: &TestApp,
    capacity: usize,
    poll: Duration,
) -> (Hub, Arc<Metrics>, tokio::sync::watch::Sender<bool>) {
    let metrics = Metrics::new();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (hub, _task) = Hub::spawn(app.pool.clone(), capacity, poll, stop, metrics.clone())
        .await
        .unwrap();
    (hub, metrics, stop_tx)
}

/// The feed's batches until one ends at `until`, each as its seqs and end.
async fn batches_until(feed: &mut Feed, until: i64) -> Vec<(Vec<i64>, i64)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let Batch { changes, end, .. } = tokio::time::timeout_at(deadline, feed.next())
            .await
            .expect("the feed reaches the end within 60 s")
            .expect("no error");
        out.push((changes.iter().map(|c| c.seq).collect(), end));
        if end >= until {
            return out;
        }
    }
}

#[tokio::test]
async fn the_applier_marks_each_change_with_its_batchs_last_seq_and_a_page_never_cuts_a_batch() {
    let app = spawn_app().await;
    let (created, deleted) = user_in_organizations("user_a", 5);
    apply_groups(
        &app,
        &[
            vec![user_event("created", "user_0", T, T, "Zero")],
            created,
            vec![deleted],
        ],
    )
    .await;
    let batches = stored_batches(&app.pool).await;
    assert_eq!(
        batches,
        [vec![1], (2..=7).collect::<Vec<_>>(), (8..=13).collect()],
        "each enqueue is one batch"
    );
    // A page of two from the start: the first batch is short, so the page takes the whole
    // second one rather than stopping inside it.
    let page = changes::page(&app.pool, 0, &Scope::default(), 2, Ends::Batch)
        .await
        .unwrap();
    assert_eq!(
        page.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!((page.end, page.at_head()), (7, false));
    // A page to its limit (for readers that take changes one by one) stops inside the batch.
    let page = changes::page(&app.pool, 0, &Scope::default(), 2, Ends::Limit)
        .await
        .unwrap();
    assert_eq!(page.changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!((page.end, page.at_head()), (2, false));
    // From inside a batch: its tail, whole to its end.
    let page = changes::page(&app.pool, 9, &Scope::default(), 1, Ends::Batch)
        .await
        .unwrap();
    assert_eq!(
        page.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
        (10..=13).collect::<Vec<_>>()
    );
    assert_eq!((page.end, page.at_head()), (13, true));
    // Narrowed to users: the page covers the batch of its last user change, and says so.
    let users = Scope {
        entity_types: vec!["user".into()],
        ..Default::default()
    };
    let page = changes::page(&app.pool, 0, &users, 2, Ends::Batch).await.unwrap();
    assert_eq!(page.changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(page.end, 7);
    let page = changes::page(&app.pool, 7, &users, 2, Ends::Batch).await.unwrap();
    assert_eq!(page.changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [8]);
    assert_eq!((page.end, page.at_head()), (13, true));
    app.stop().await;
}

/// The stored batches after `after`, each as its seqs and end.
async fn stored_after(pool: &PgPool, after: i64) -> Vec<(Vec<i64>, i64)> {
    stored_batches(pool)
        .await
        .into_iter()
        .filter(|seqs| seqs[0] > after)
        .map(|seqs| {
            let end = *seqs.last().unwrap();
            (seqs, end)
        })
        .collect()
}

fn counter(name: &str) -> prometheus::IntCounter {
    prometheus::IntCounter::new(name, name).unwrap()
}

#[tokio::test]
async fn a_feed_hands_out_exactly_the_stored_batches_from_the_database_and_live_even_through_a_lagging_buffer() {
    let app = spawn_app().await;
    three_users_then_one_in_organizations(&app, "user_b", 40).await;
    let start = head(&app.pool).await;
    // The backlog, from the database in pages of 7 (each taking whole batches).
    let (big, _metrics, stop_big) = hub(&app, 1024).await;
    let mut backlog = big.feed(0, Reader::everything(7));
    assert_eq!(
        batches_until(&mut backlog, start).await,
        stored_after(&app.pool, 0).await
    );

    // Live: feeds waiting at the head, one through a buffer that holds every change, one through
    // a buffer of one change (which a batch of 31 always overruns).
    let (small, _metrics, stop_small) = hub(&app, 1).await;
    // And one that takes long batches in parts of 7, through the big buffer.
    let mut waiting = Vec::new();
    for (hub, whole_batches) in [(&big, true), (&small, true), (&big, false)] {
        let (rows_read, catch_ups) = (counter("rows_read"), counter("catch_ups"));
        let mut feed = hub.feed(
            start,
            Reader {
                rows_read: Some(rows_read.clone()),
                catch_ups: Some(catch_ups.clone()),
                whole_batches,
                ..Reader::everything(7)
            },
        );
        // The first batch: nothing after the head, read from the database; then it is live.
        let first = feed.next().await.unwrap();
        assert_eq!((first.changes.len(), first.end, first.at_head), (0, start, true));
        waiting.push((feed, rows_read, catch_ups));
    }
    let (created, deleted) = user_in_organizations("user_c", 30);
    let until = start + 1 + 31 + 31;
    let tasks: Vec<_> = waiting
        .into_iter()
        .map(|(mut feed, rows_read, catch_ups)| {
            tokio::spawn(async move {
                let got = batches_until(&mut feed, until).await;
                (got, rows_read.get(), catch_ups.get())
            })
        })
        .collect();
    apply_groups(
        &app,
        &[
            vec![user_event("updated", "user_0", T + 1, T + 1, "Again")],
            created,
            vec![deleted],
        ],
    )
    .await;
    assert_eq!(head(&app.pool).await, until);
    let expected = stored_after(&app.pool, start).await;
    assert_eq!(expected.len(), 3);
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let (got, rows_read, catch_ups) = &results[0];
    assert_eq!(got, &expected, "through the big buffer");
    assert_eq!(
        (*rows_read, *catch_ups),
        (0, 0),
        "all live: nothing read from the database"
    );
    let (got, rows_read, catch_ups) = &results[1];
    // Behind the small buffer, the feed read the database at its own pace; an empty batch may
    // mark where it found nothing new.
    let got: Vec<_> = got.iter().filter(|(seqs, _)| !seqs.is_empty()).cloned().collect();
    assert_eq!(got, expected, "through the buffer of one");
    assert!(
        *rows_read > 0 && *catch_ups > 0,
        "{rows_read} rows read, {catch_ups} catch-ups"
    );
    let (got, rows_read, catch_ups) = &results[2];
    let parts: Vec<(Vec<i64>, i64)> = expected
        .iter()
        .flat_map(|(seqs, _)| seqs.chunks(7).map(|part| (part.to_vec(), *part.last().unwrap())))
        .collect();
    assert_eq!(got, &parts, "in parts of 7");
    assert_eq!((*rows_read, *catch_ups), (0, 0), "all live");
    stop_big.send(true).unwrap();
    stop_small.send(true).unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_feed_from_inside_a_batch_starts_with_its_tail_one_narrowed_to_users_covers_every_batch_and_parts_end_where_they_end()
 {
    let app = spawn_app().await;
    let (created, deleted) = user_in_organizations("user_d", 4);
    apply_groups(&app, &[created, vec![deleted]]).await;
    // Batches: 1..=5 (created), 6..=10 (deleted).
    let (hub, _metrics, stop) = hub(&app, 1024).await;
    let mut feed = hub.feed(7, Reader::everything(100));
    assert_eq!(batches_until(&mut feed, 10).await, [(vec![8, 9, 10], 10)]);
    // Only user changes: each batch's share, and the position moves to each batch's end.
    let mut users = hub.feed(
        0,
        Reader {
            scope: Scope {
                entity_types: vec!["user".into()],
                ..Default::default()
            },
            ..Reader::everything(1)
        },
    );
    assert_eq!(batches_until(&mut users, 10).await, [(vec![1], 5), (vec![6], 10)]);
    assert_eq!(users.position(), 10);
    // In parts of two from the database: a long batch is cut, each part ending where it ends.
    let mut parts = hub.feed(
        0,
        Reader {
            whole_batches: false,
            ..Reader::everything(2)
        },
    );
    assert_eq!(
        batches_until(&mut parts, 10).await,
        [
            (vec![1, 2], 2),
            (vec![3, 4], 4),
            (vec![5], 5),
            (vec![6], 6),
            (vec![7, 8], 8),
            (vec![9, 10], 10)
        ]
    );
    stop.send(true).unwrap();
    app.stop().await;
}

#[tokio::test]
async fn changes_written_before_batches_were_recorded_are_each_a_batch_of_their_own() {
    let app = spawn_app().await;
    apply_groups(
        &app,
        &[(0..3)
            .map(|i| user_event("created", &format!("user_{i}"), T, T, "U"))
            .collect()],
    )
    .await;
    // As the log reads after the migration that added the column: no batch recorded.
    sqlx::query("UPDATE changes SET batch_last = NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    let (hub, _metrics, stop) = hub(&app, 1024).await;
    let mut feed = hub.feed(0, Reader::everything(2));
    assert_eq!(
        batches_until(&mut feed, 3).await,
        [(vec![1], 1), (vec![2], 2), (vec![3], 3)]
    );
    stop.send(true).unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_feed_behind_the_retained_log_ends_with_cursor_expired() {
    let app = spawn_app().await;
    apply_groups(
        &app,
        &[(0..3)
            .map(|i| user_event("created", &format!("user_{i}"), T, T, "U"))
            .collect()],
    )
    .await;
    sqlx::query("DELETE FROM changes WHERE seq < 3")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE log_head SET oldest_seq = 3")
        .execute(&app.pool)
        .await
        .unwrap();
    let (hub, _metrics, stop) = hub(&app, 1024).await;
    let mut feed = hub.feed(1, Reader::everything(100));
    match feed.next().await {
        Err(FeedError::CursorExpired { after: 1, oldest: 3 }) => {}
        other => panic!("expected CursorExpired after 1, oldest 3: {other:?}"),
    }
    // The oldest cursor still retained (2: every change after it is there) reads on.
    let mut feed = hub.feed(2, Reader::everything(100));
    assert_eq!(batches_until(&mut feed, 3).await, [(vec![3], 3)]);
    stop.send(true).unwrap();
    app.stop().await;
}

/// Appends a change of an entity type this binary does not know, as a newer replica's applier
/// would (its migration having widened the type's check first), with the NOTIFY; its seq.
async fn append_unknown_change(pool: &PgPool) -> i64 {
    sqlx::query("ALTER TABLE changes DROP CONSTRAINT IF EXISTS changes_entity_type_check")
        .execute(pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let seq: i64 = sqlx::query_scalar("UPDATE log_head SET head_seq = head_seq + 1 RETURNING head_seq")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO changes (seq, entity_type, entity_id, operation, organization_id, state, source, batch_last)
         VALUES ($1, 'coupon', 'cpn_1', 'created', 'org_1', '{\"id\": \"cpn_1\", \"code\": \"SAVE10\"}', 'webhook:msg_new', $1)",
    )
    .bind(seq)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(clerk_mirror::db::CHANGES_CHANNEL)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    seq
}

#[tokio::test]
async fn a_change_of_an_entity_type_this_binary_does_not_know_is_skipped_by_the_cache_and_watchers_and_counted() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[user_event("created", "user_1", T, T, "Before")])
        .await;
    let mut client = pb::watch_service_client::WatchServiceClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap();
    let mut stream = client
        .watch_changes(pb::WatchChangesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a message within 30 s")
            .expect("no error")
            .expect("the stream goes on")
            .event
            .expect("an event")
    };
    assert!(matches!(next().await, Event::Heartbeat(_)));
    assert!(matches!(next().await, Event::CaughtUp(_)));

    let unknown = append_unknown_change(&app.pool).await;
    assert_eq!(unknown, 2);
    app.send_all_and_apply(&[user_event("updated", "user_1", T + 1, T + 1, "After")])
        .await;
    // The watcher gets the next known change (the unknown one passed over, no error).
    match next().await {
        Event::Change(c) => {
            assert_eq!(clerk_mirror::grpc::cursor::Cursor::decode(&c.cursor).unwrap().seq, 3);
            assert_eq!(c.entity_type, pb::EntityType::User as i32);
        }
        other => panic!("expected the user's update: {other:?}"),
    }
    // The cache went past it too (wait_until_applied waited for it to reach the head) and serves.
    let cache = app.cache.clone().unwrap();
    assert!(cache.state().ready && cache.state().cursor == 3, "{:?}", cache.state());
    let name = cache.read(|i| match i.user("user_1") {
        clerk_mirror::cache::Answer::Found(u, _) => u.message.decode().unwrap().first_name,
        other => panic!("{other:?}"),
    });
    assert_eq!(name.as_deref(), Some("After"));
    // A watcher starting before it, reading it from the database, passes over it as well.
    let log_id: String = sqlx::query_scalar("SELECT log_id FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut from_oldest = client
        .watch_changes(pb::WatchChangesRequest {
            start: Some(pb::watch_changes_request::Start::StartFromOldest(true)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), from_oldest.message())
            .await
            .expect("a message within 30 s")
            .expect("no error")
            .expect("the stream goes on")
            .event
            .expect("an event");
        match event {
            Event::Change(c) => seqs.push(clerk_mirror::grpc::cursor::Cursor::decode(&c.cursor).unwrap().seq),
            Event::CaughtUp(c) => {
                assert_eq!(c.cursor, clerk_mirror::grpc::cursor::Cursor::new(&log_id, 3).encode());
                break;
            }
            Event::Heartbeat(_) => {}
        }
    }
    assert_eq!(seqs, [1, 3]);
    // Each reader counted it once: the cache, the live watcher, the one from the oldest.
    let metrics = get(&format!("http://{}/metrics", app.admin_addr)).await.body;
    assert!(
        metrics.contains("clerk_mirror_change_log_rows_skipped_total{entity_type=\"coupon\"} 3\n"),
        "{metrics}"
    );
    app.stop().await;
}

/// Appends a change of a user as the applier would, but with no NOTIFY (a hub that does not
/// poll has not read it); its seq.
async fn append_quietly(pool: &PgPool) -> i64 {
    let mut tx = pool.begin().await.unwrap();
    let seq: i64 = sqlx::query_scalar("UPDATE log_head SET head_seq = head_seq + 1 RETURNING head_seq")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO changes (seq, entity_type, entity_id, operation, state, source, batch_last)
         VALUES ($1, 'user', 'user_quiet', 'created', '{\"id\": \"user_quiet\"}', 'webhook:msg_quiet', $1)",
    )
    .bind(seq)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    seq
}

#[tokio::test]
async fn a_feed_that_starts_within_the_hubs_ring_takes_its_backlog_from_memory_and_reads_postgresql_only_for_what_the_hub_has_not_read()
 {
    let app = spawn_app().await;
    // A hub that never polls: it reads the log only when told (NOTIFY).
    let (ringed, _metrics, stop_tx) = hub_polling(&app, 1024, Duration::from_secs(3600)).await;
    three_users_then_one_in_organizations(&app, "user_r", 4).await;
    let top = head(&app.pool).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ringed.latest() < top {
        assert!(tokio::time::Instant::now() < deadline, "the hub reads the log within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A hub started now has nothing in its ring: its feeds read PostgreSQL.
    let (plain, _metrics, stop_plain) = hub(&app, 1024).await;
    let readers = || {
        [
            Reader::everything(100),
            Reader {
                whole_batches: false,
                ..Reader::everything(2)
            },
            Reader {
                scope: Scope {
                    entity_types: vec!["user".into()],
                    ..Default::default()
                },
                ..Reader::everything(1)
            },
        ]
    };
    for start in [0, 2, top - 2, top - 1] {
        for (i, reader) in readers().into_iter().enumerate() {
            let (rows_read, recent_read) = (counter("rows_read"), counter("recent_read"));
            let mut from_ring = ringed.feed(
                start,
                Reader {
                    rows_read: Some(rows_read.clone()),
                    recent_read: Some(recent_read.clone()),
                    ..reader.clone()
                },
            );
            let whole = reader.whole_batches;
            let want = batches_until(&mut plain.feed(start, reader), top).await;
            let got = batches_until(&mut from_ring, top).await;
            if whole {
                assert_eq!(got, want, "from {start}, reader {i}");
            } else {
                // Parts are cut where pages end in the database, where batches end live: the
                // same changes in order, each part of at most 2 within one batch, ending on its
                // last change.
                let flat = |b: &[(Vec<i64>, i64)]| b.iter().flat_map(|(s, _)| s.clone()).collect::<Vec<_>>();
                assert_eq!(flat(&got), flat(&want), "from {start}, reader {i}");
                let batches = stored_batches(&app.pool).await;
                for (seqs, end) in &got {
                    assert!(seqs.len() <= 2 && seqs.last() == Some(end), "{got:?}");
                    assert!(batches.iter().any(|b| seqs.iter().all(|s| b.contains(s))), "{got:?}");
                }
            }
            assert_eq!(
                (rows_read.get(), recent_read.get()),
                (0, (top - start) as u64),
                "from {start}, reader {i}: all from the ring"
            );
            // Then one query finds the log's head no further: the backlog is done.
            let done = from_ring.next().await.unwrap();
            assert_eq!((done.changes.len(), done.end, done.at_head), (0, top, true));
        }
    }
    // A change the hub has not read (no NOTIFY, no polling): the ring ends before it, the head
    // says so, and the feed reads it from PostgreSQL before its backlog is done.
    let quiet = append_quietly(&app.pool).await;
    let (rows_read, recent_read) = (counter("rows_read"), counter("recent_read"));
    let mut feed = ringed.feed(
        0,
        Reader {
            rows_read: Some(rows_read.clone()),
            recent_read: Some(recent_read.clone()),
            ..Reader::everything(100)
        },
    );
    let got = batches_until(&mut feed, quiet).await;
    assert_eq!(got, stored_after(&app.pool, 0).await);
    assert_eq!((rows_read.get(), recent_read.get()), (1, top as u64));
    stop_tx.send(true).unwrap();
    stop_plain.send(true).unwrap();
    app.stop().await;
}

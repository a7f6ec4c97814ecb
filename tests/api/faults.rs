//! Faults with real processes: PostgreSQL stopped during a burst, `serve` SIGKILLed in the middle
//! of a batch, PostgreSQL restarted under streaming watchers, and a soak. After each: every
//! acknowledged webhook applied exactly once, and every watcher's changes equal the change log's
//! (its filter's part of it), in order, without a gap or a repeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clerk_mirror::grpc::cursor::Cursor;
use clerk_mirror::ingest::verify::WebhookSecrets;
use clerk_mirror::pb;
use clerk_mirror::pb::watch_changes_response::Event;
use clerk_mirror::pb::watch_service_client::WatchServiceClient;
use futures::StreamExt;
use hyper::StatusCode;
use sqlx::PgPool;
use tokio::sync::watch;
use tonic::Code;

use crate::events::*;
use crate::helpers::*;
use crate::process::Served;

/// Event `i` of a workload `w`: each creates one entity of its own (users, organizations, and
/// memberships of earlier ones), so each applied event makes exactly one change.
fn event(w: &str, i: usize) -> String {
    match i % 3 {
        0 => user_event("created", &format!("user_{w}{i}"), T, T, "Load"),
        1 => org_event("created", &format!("org_{w}{i}"), T, T, "Load Inc"),
        _ => membership_event(
            "created",
            &format!("orgmem_{w}{i}"),
            &format!("org_{w}{}", i - 1),
            &format!("user_{w}{}", i - 2),
            T,
            T,
            "org:member",
        ),
    }
}

fn delivery_id(w: &str, i: usize) -> String {
    format!("msg_{w}{i}")
}

/// Posts events `range` of workload `w`, `concurrency` at a time, to whatever `url` holds when
/// each is sent; returns the indexes acknowledged with a 2xx, and the statuses of the others
/// (`None`: no answer at all). `acked` counts 2xx as they come.
async fn send_events(
    url: &watch::Receiver<String>,
    w: &str,
    range: impl Iterator<Item = usize>,
    concurrency: usize,
    acked: &AtomicUsize,
) -> (Vec<usize>, Vec<Option<StatusCode>>) {
    let secrets = WebhookSecrets::parse(&[SECRET]).unwrap();
    let results: Vec<(usize, Option<StatusCode>)> = futures::stream::iter(range)
        .map(|i| {
            let (url, secrets) = (url.borrow().clone(), &secrets);
            async move {
                let body = event(w, i);
                let status = clerk_mirror::cli::send_event::send(&url, secrets, &delivery_id(w, i), body.as_bytes())
                    .await
                    .ok()
                    .map(|r| r.status);
                if status.is_some_and(|s| s.is_success()) {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                (i, status)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for (i, status) in results {
        match status {
            Some(s) if s.is_success() => ok.push(i),
            other => refused.push(other),
        }
    }
    ok.sort_unstable();
    (ok, refused)
}

/// What a watcher saw: the seq of each change, in order, and how each of its streams ended.
#[derive(Debug, Default)]
struct Seen {
    seqs: Vec<i64>,
    ends: Vec<Code>,
}

/// A client that watches `types` (all when empty) from the oldest change, and on any end
/// reconnects to whatever `addr` holds, resuming from the last cursor it received, until its
/// position reaches `until`.
fn spawn_watcher(
    addr: watch::Receiver<String>,
    types: Vec<pb::EntityType>,
    mut until: watch::Receiver<Option<i64>>,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut cursor: Option<String> = None;
        let mut position = 0i64;
        let done = |position: i64, until: &watch::Receiver<Option<i64>>| until.borrow().is_some_and(|t| position >= t);
        'connect: loop {
            if done(position, &until) {
                return seen;
            }
            let url = addr.borrow().clone();
            let request = pb::WatchChangesRequest {
                start: Some(match &cursor {
                    Some(c) => pb::watch_changes_request::Start::StartCursor(c.clone()),
                    None => pb::watch_changes_request::Start::StartFromOldest(true),
                }),
                entity_types: types.iter().map(|t| *t as i32).collect(),
                heartbeat_interval: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
                ..Default::default()
            };
            let stream = match WatchServiceClient::connect(url).await {
                Ok(mut c) => c.watch_changes(request).await.map(|r| r.into_inner()),
                // The server is not there (yet): the retry below, as any client would.
                Err(_) => Err(tonic::Status::unavailable("connect")),
            };
            let mut stream = match stream {
                Ok(s) => s,
                Err(status) => {
                    seen.ends.push(status.code());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    _ = until.changed() => {
                        if done(position, &until) { return seen; }
                        continue;
                    }
                };
                let at = match message {
                    Ok(Some(pb::WatchChangesResponse { event: Some(event) })) => match event {
                        Event::Change(c) => {
                            let seq = Cursor::decode(&c.cursor).unwrap().seq;
                            seen.seqs.push(seq);
                            cursor = Some(c.cursor);
                            seq
                        }
                        Event::CaughtUp(pb::CaughtUp { cursor: c }) | Event::Heartbeat(pb::Heartbeat { cursor: c }) => {
                            let seq = Cursor::decode(&c).unwrap().seq;
                            cursor = Some(c);
                            seq
                        }
                    },
                    Ok(Some(_)) => continue,
                    Ok(None) => {
                        seen.ends.push(Code::Ok);
                        continue 'connect;
                    }
                    Err(status) => {
                        seen.ends.push(status.code());
                        continue 'connect;
                    }
                };
                position = position.max(at);
                if done(position, &until) {
                    return seen;
                }
            }
        }
    })
}

const WATCHED: [&[pb::EntityType]; 4] = [
    &[],
    &[pb::EntityType::User],
    &[pb::EntityType::Organization],
    &[pb::EntityType::Membership, pb::EntityType::User],
];

/// `n` watchers, each of one of the `WATCHED` selections in turn.
fn spawn_watchers(
    grpc: &watch::Receiver<String>,
    until: &watch::Receiver<Option<i64>>,
    n: usize,
) -> Vec<(Vec<pb::EntityType>, tokio::task::JoinHandle<Seen>)> {
    (0..n)
        .map(|i| {
            let types = WATCHED[i % WATCHED.len()].to_vec();
            (types.clone(), spawn_watcher(grpc.clone(), types, until.clone()))
        })
        .collect()
}

/// The seqs of the changes a watcher of `types` must see, from the log itself.
async fn expected(pool: &PgPool, types: &[pb::EntityType]) -> Vec<i64> {
    let names: Vec<&str> = types
        .iter()
        .map(|t| match t {
            pb::EntityType::User => "user",
            pb::EntityType::Organization => "organization",
            _ => "membership",
        })
        .collect();
    sqlx::query_scalar(
        "SELECT seq FROM changes WHERE cardinality($1::text[]) = 0 OR entity_type = ANY($1) ORDER BY seq",
    )
    .bind(names)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits for the applier, then sets every watcher's goal to the head and checks what each saw.
async fn finish_watchers(
    pool: &PgPool,
    until: &watch::Sender<Option<i64>>,
    watchers: Vec<(Vec<pb::EntityType>, tokio::task::JoinHandle<Seen>)>,
    allowed_ends: &[Code],
) -> Vec<Seen> {
    let mut all = Vec::new();
    wait_until_applied(pool).await;
    let head: i64 = sqlx::query_scalar("SELECT head_seq FROM log_head")
        .fetch_one(pool)
        .await
        .unwrap();
    until.send(Some(head)).unwrap();
    for (types, watcher) in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(60), watcher)
            .await
            .expect("the watcher reaches the head within 60 s")
            .unwrap();
        let want = expected(pool, &types).await;
        assert!(!want.is_empty());
        assert!(
            seen.seqs == want,
            "watcher of {types:?}: saw {} changes, the log has {}; first difference at {:?}",
            seen.seqs.len(),
            want.len(),
            seen.seqs.iter().zip(&want).position(|(a, b)| a != b)
        );
        for code in &seen.ends {
            assert!(
                allowed_ends.contains(code),
                "watcher of {types:?}: a stream ended with {code:?}"
            );
        }
        all.push(seen);
    }
    all
}

/// Every acknowledged delivery of workload `w` (and every other stored one) was applied, each
/// made exactly one change, and the log is gap-free.
async fn assert_applied_exactly_once(pool: &PgPool, w: &str, acked: &[usize]) {
    wait_until_applied(pool).await;
    let ids: Vec<String> = acked.iter().map(|&i| delivery_id(w, i)).collect();
    let (stored, applied): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'applied') FROM inbox WHERE event_key = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(stored as usize, ids.len(), "an acknowledged webhook was lost");
    assert_eq!(applied, stored, "an acknowledged webhook was not applied");
    let not_once: Vec<(String, i64)> = sqlx::query_as(
        "SELECT i.event_key, count(c.seq) FROM inbox i LEFT JOIN changes c ON c.source = 'webhook:' || i.event_key
          GROUP BY i.event_key HAVING count(c.seq) <> 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(not_once.is_empty(), "deliveries not applied exactly once: {not_once:?}");
    let (count, max, head): (i64, Option<i64>, i64) =
        sqlx::query_as("SELECT count(*), max(seq), (SELECT head_seq FROM log_head) FROM changes")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((max.unwrap_or(0), head), (count, count), "the change log has a gap");
}

#[tokio::test]
async fn with_postgresql_stopped_during_a_burst_nothing_gets_a_2xx_and_on_its_return_every_acked_event_is_applied_once()
{
    let mut cluster = start_cluster("faults-dbstop").await;
    let name = fresh_database(&cluster).await;
    let app = spawn_app_on(&cluster, &name, |_| {}).await;
    app.send_all_and_apply(&[user_event("created", "user_before", T, T, "Before")])
        .await;
    app.pool.close().await;
    let url = watch::channel(app.webhook_url()).1;
    let acked = AtomicUsize::new(0);

    // A burst; PostgreSQL stops once a third of it is acknowledged.
    let burst = send_events(&url, "s", 0..1000, 16, &acked);
    let stop = async {
        while acked.load(Ordering::SeqCst) < 200 {
            tokio::task::yield_now().await;
        }
        cluster.stop().await.expect("stop the cluster");
    };
    let ((mut ok, refused), ()) = tokio::join!(burst, stop);
    assert!(ok.len() >= 200 && !refused.is_empty(), "{} acked", ok.len());
    for status in &refused {
        assert_eq!(*status, Some(StatusCode::SERVICE_UNAVAILABLE));
    }
    // While it is down, every delivery gets 503, and readiness says so.
    let (during, refused) = send_events(&url, "s", 1000..1050, 8, &acked).await;
    assert!(
        during.is_empty(),
        "acknowledged while the database was down: {during:?}"
    );
    assert!(refused.iter().all(|s| *s == Some(StatusCode::SERVICE_UNAVAILABLE)));
    assert_eq!(app.get("/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let directory = pb::directory_service_client::DirectoryServiceClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap();
    // Reads from the replica's memory go on answering (nothing can be applied meanwhile, so it is
    // as fresh as the log); reads that must see the database get UNAVAILABLE.
    let read = |consistency| {
        let mut directory = directory.clone();
        async move {
            let request = pb::GetUserRequest {
                name: "users/user_before".into(),
                consistency: Some(pb::Consistency {
                    requirement: Some(consistency),
                }),
                ..Default::default()
            };
            directory.get_user(request).await
        }
    };
    let from_memory = read(pb::consistency::Requirement::MinimizeLatency(true)).await.unwrap();
    assert_eq!(from_memory.into_inner().user.unwrap().id, "user_before");
    let from_database = read(pb::consistency::Requirement::FullyConsistent(true)).await;
    assert_eq!(from_database.unwrap_err().code(), Code::Unavailable);

    // It comes back; the same server recovers by itself, and Svix's retries (same ids) land.
    let cluster = restart_cluster(&cluster).await;
    let retried: Vec<usize> = (0..1050).filter(|i| ok.binary_search(i).is_err()).collect();
    let (again, refused) = send_events(&url, "s", retried.iter().copied(), 16, &acked).await;
    assert!(refused.is_empty(), "refused after the database returned: {refused:?}");
    ok.extend(again);
    assert_eq!(ok.len(), 1050);
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    let pool = PgPool::connect_with(cluster.connect_options(&name)).await.unwrap();
    assert_applied_exactly_once(&pool, "s", &ok).await;
    pool.close().await;
    app.stop().await;
    let _ = std::fs::remove_dir_all(cluster.data_dir());
}

#[tokio::test]
async fn serve_sigkilled_mid_batch_and_restarted_applies_every_acked_event_once_and_watchers_resume_without_a_gap() {
    let (cluster, name) = shared_database().await;
    let pool = PgPool::connect_with(cluster.connect_options(&name)).await.unwrap();
    let args = crate::process::serve_args(cluster, &name);
    let first = Served::start(&args).await;
    let (url_tx, url) = watch::channel(format!("http://{}/webhooks/clerk", first.http_addr));
    let (grpc_tx, grpc) = watch::channel(format!("http://{}", first.grpc_addr));
    let (until_tx, until) = watch::channel(None);
    let watchers = spawn_watchers(&grpc, &until, WATCHED.len());

    // A burst; `serve` is SIGKILLed while its applier has a batch's transaction open.
    let acked = AtomicUsize::new(0);
    let burst = send_events(&url, "k", 0..1500, 32, &acked);
    let kill = async {
        while acked.load(Ordering::SeqCst) < 300 {
            tokio::task::yield_now().await;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let writing: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE application_name LIKE 'clerk-mirror applier%' AND backend_xid IS NOT NULL",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if writing > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the applier never had a batch open"
            );
        }
        first.kill().await;
    };
    let ((mut ok, _), ()) = tokio::join!(burst, kill);
    assert!(ok.len() >= 300 && ok.len() < 1500, "{} acked", ok.len());

    // Restarted, it finishes the batch's events, takes Svix's retries, and the watchers resume.
    let second = Served::start(&args).await;
    url_tx
        .send(format!("http://{}/webhooks/clerk", second.http_addr))
        .unwrap();
    grpc_tx.send(format!("http://{}", second.grpc_addr)).unwrap();
    let retried: Vec<usize> = (0..1500).filter(|i| ok.binary_search(i).is_err()).collect();
    let (again, refused) = send_events(&url, "k", retried.into_iter().chain(1500..1800), 32, &acked).await;
    assert!(refused.is_empty(), "refused after the restart: {refused:?}");
    ok.extend(again);
    assert_eq!(ok.len(), 1800);
    assert_applied_exactly_once(&pool, "k", &ok).await;
    // A killed server ends streams with a transport error; nothing else is acceptable.
    let seen = finish_watchers(
        &pool,
        &until_tx,
        watchers,
        &[Code::Unavailable, Code::Unknown, Code::Cancelled],
    )
    .await;
    assert!(
        seen.iter().all(|s| !s.ends.is_empty()),
        "every stream ended when serve died"
    );
    second.terminate().await;
    pool.close().await;
}

#[tokio::test]
async fn postgresql_restarted_under_streaming_watchers_ends_streams_with_unavailable_or_continues_never_with_a_gap() {
    let mut cluster = start_cluster("faults-dbrestart").await;
    let name = fresh_database(&cluster).await;
    let app = spawn_app_on(&cluster, &name, |_| {}).await;
    app.pool.close().await;
    let url = watch::channel(app.webhook_url()).1;
    let grpc = watch::channel(format!("http://{}", app.grpc_addr)).1;
    let (until_tx, until) = watch::channel(None);
    let watchers = spawn_watchers(&grpc, &until, WATCHED.len());
    let acked = AtomicUsize::new(0);
    let (mut ok, refused) = send_events(&url, "r", 0..300, 16, &acked).await;
    assert!(refused.is_empty());

    // Restart PostgreSQL while changes stream, then go on.
    let burst = send_events(&url, "r", 300..600, 16, &acked);
    let bounce = async {
        while acked.load(Ordering::SeqCst) < 400 {
            tokio::task::yield_now().await;
        }
        cluster.stop().await.expect("stop the cluster");
        restart_cluster(&cluster).await
    };
    let ((during, _), cluster) = tokio::join!(burst, bounce);
    ok.extend(during);
    let retried: Vec<usize> = (300..600).filter(|i| !ok.contains(i)).collect();
    let (again, refused) = send_events(&url, "r", retried.into_iter().chain(600..750), 16, &acked).await;
    assert!(refused.is_empty(), "refused after the restart: {refused:?}");
    ok.extend(again);
    ok.sort_unstable();
    assert_eq!(ok.len(), 750);

    let pool = PgPool::connect_with(cluster.connect_options(&name)).await.unwrap();
    assert_applied_exactly_once(&pool, "r", &ok).await;
    finish_watchers(&pool, &until_tx, watchers, &[Code::Unavailable]).await;
    pool.close().await;
    app.stop().await;
    let _ = std::fs::remove_dir_all(cluster.data_dir());
}

/// How long the soak runs: `CLERK_MIRROR_SOAK_SECONDS` (default 20; CI keeps the default).
fn soak_duration() -> Duration {
    let seconds = std::env::var("CLERK_MIRROR_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_of_sustained_ingest_a_hundred_watchers_and_lookups_ends_with_acked_equal_applied_and_every_watcher_complete()
 {
    let app = spawn_app().await;
    let url = watch::channel(app.webhook_url()).1;
    let grpc = watch::channel(format!("http://{}", app.grpc_addr)).1;
    let (until_tx, until) = watch::channel(None);
    let watchers = spawn_watchers(&grpc, &until, 100);
    let deadline = tokio::time::Instant::now() + soak_duration();
    let acked = Arc::new(AtomicUsize::new(0));

    // Ingest in rounds of 150 events (8 in flight), while lookups run beside it.
    let ingest = async {
        let mut ok = Vec::new();
        let mut next = 0;
        while tokio::time::Instant::now() < deadline {
            let (round, refused) = send_events(&url, "soak", next..next + 150, 8, &acked).await;
            assert!(refused.is_empty(), "refused during the soak: {refused:?}");
            ok.extend(round);
            next += 150;
        }
        ok
    };
    let lookups = async {
        let mut c = pb::directory_service_client::DirectoryServiceClient::connect(format!("http://{}", app.grpc_addr))
            .await
            .unwrap();
        let (mut found, mut calls) = (0usize, 0usize);
        while tokio::time::Instant::now() < deadline {
            let seen = acked.load(Ordering::SeqCst);
            let i = 3 * (calls % (seen / 3).max(1));
            calls += 1;
            let r = c
                .get_user(pb::GetUserRequest {
                    name: format!("users/user_soak{i}"),
                    ..Default::default()
                })
                .await;
            match r {
                Ok(r) => {
                    assert_eq!(r.into_inner().user.unwrap().id, format!("user_soak{i}"));
                    found += 1;
                }
                // Acknowledged, not applied yet: the only acceptable miss.
                Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
            }
        }
        (found, calls)
    };
    let (ok, (found, calls)) = tokio::join!(ingest, lookups);
    assert!(
        ok.len() >= 150 && found > 0,
        "{} acked, {found} of {calls} lookups found",
        ok.len()
    );
    assert_applied_exactly_once(&app.pool, "soak", &ok).await;
    let inbox = app.inbox_count().await;
    assert_eq!(inbox as usize, ok.len(), "acked = stored = applied");
    finish_watchers(&app.pool, &until_tx, watchers, &[]).await;
    println!(
        "soak: {} events acked and applied, {calls} lookups ({found} found), 100 watchers complete",
        ok.len()
    );
    app.stop().await;
}

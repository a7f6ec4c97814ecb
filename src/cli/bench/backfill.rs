//! `bench backfill`: objects per second imported by `backfill` from a local fake Backend API
//! with no rate limit (pages served from memory), until the applier has applied them all —
//! against a bulk `COPY` of the same projection rows into tables of the same shape and indexes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio_stream::StreamExt;

use super::env::{self, Postgres};
use super::fixtures;
use super::stats::{Report, Row, Target};
use crate::backfill::{self, ClerkApi, rate::RateLimiter};

#[derive(Debug, Clone)]
pub struct Options {
    pub users: u64,
}

/// The projection tables a backfill fills (the baseline copies these).
const TABLES: [&str; 5] = [
    "users",
    "user_email_addresses",
    "user_phone_numbers",
    "organizations",
    "memberships",
];

pub async fn run(pg: &Postgres, opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("backfill");
    let (db, server, probe) = pg.scenario("bench_backfill").await?;
    let pool = env::pool(&db.options, 4).await?;
    let monitor = env::monitor(&db.options).await?;
    let users = opts.users;
    let organizations = (users / 100).max(10);
    let memberships = (users / 5).max(10);
    let objects = users + organizations + memberships;
    let api_url = fake_api(users, organizations, memberships).await?;
    report.setup(
        "data",
        format!("{users} users (1–5 KB), {organizations} organizations, {memberships} memberships: {objects} objects"),
    );
    report.setup(
        "fake Backend API",
        "in this process, every page pre-rendered (limit=500), no rate limit",
    );
    report.setup(
        "baseline",
        format!(
            "`COPY … FROM STDIN` (text format, one transaction) of the same rows into empty tables of the same shape and indexes: of the three things a backfill writes (inbox, {}, changes), and of the projections alone",
            TABLES.join(", ")
        ),
    );
    report.setup("postgres", pg.settings().await?);

    let api = ClerkApi::new(
        &api_url,
        "sk_test_bench",
        Arc::new(RateLimiter::new(1_000_000, Duration::from_secs(1))),
    );
    let before = probe.cpu();
    let started = Instant::now();
    let summary = backfill::run(&pool, &api, &mut |_| {}).await?;
    let fetched_in = started.elapsed();
    let fetched: i64 = summary.iter().map(|(_, s)| s.fetched).sum();
    anyhow::ensure!(fetched as u64 == objects, "fetched {fetched} of {objects} objects");
    env::drained(&monitor, Duration::from_millis(50)).await?;
    let elapsed = started.elapsed();
    let cpu = probe.cpu() - before;
    let applied: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM organizations) + (SELECT count(*) FROM memberships)",
    )
    .fetch_one(&pool)
    .await?;
    anyhow::ensure!(applied as u64 == objects, "{applied} of {objects} objects were applied");

    // The baselines: the same rows, copied out and bulk-loaded: the projections alone, and the
    // three things a backfill must write (the inbox, the projections, the change log).
    let mut conn = sqlx::PgConnection::connect_with(&db.options).await?;
    let projections = copy_baseline(&mut conn, &TABLES, "bench_", probe).await?;
    let written: Vec<&str> = TABLES.iter().copied().chain(["inbox", "changes"]).collect();
    let all_three = copy_baseline(&mut conn, &written, "bench3_", probe).await?;
    conn.close().await?;

    let base = Row::new("COPY of the projection rows", 1, objects, 0, projections.0)
        .cpu(projections.1)
        .baseline()
        .note(format!("{:.1} MiB of rows", projections.2 as f64 / 1048576.0));
    let base3 = Row::new("COPY of the inbox, projection and change-log rows", 1, objects, 0, all_three.0)
        .cpu(all_three.1)
        .baseline()
        .note(format!("{:.1} MiB of rows", all_three.2 as f64 / 1048576.0));
    let mut row = Row::new("backfill until applied", 1, objects, 0, elapsed)
        .cpu(cpu)
        .note(format!(
            "fetched and enqueued in {:.1} s ({:.0} objects/s), applied {:.1} s later",
            fetched_in.as_secs_f64(),
            objects as f64 / fetched_in.as_secs_f64(),
            (elapsed - fetched_in).as_secs_f64()
        ));
    row.versus(&base3);
    row.versus(&base);
    report.targets.push(Target::at_least(
        "backfill objects/s vs a COPY into the three tables it writes (#27)",
        row.vs[0].1,
        0.6,
    ));
    report
        .targets
        .push(Target::at_least("backfill objects/s vs a COPY of the projections alone", row.vs[1].1, 0.3));
    report.rows.push(base3);
    report.rows.push(base);
    report.rows.push(row);
    pool.close().await;
    server.stop().await?;
    Ok(report)
}

/// Copies `tables` out, makes empty `<prefix><table>` tables of the same shape and indexes,
/// and times one transaction of `COPY … FROM STDIN` into them: the elapsed time, the CPU, the
/// bytes.
async fn copy_baseline(
    conn: &mut sqlx::PgConnection,
    tables: &[&str],
    prefix: &str,
    probe: env::Probe,
) -> anyhow::Result<(Duration, super::stats::Cpu, usize)> {
    let mut data = Vec::new();
    for table in tables {
        let mut out = Vec::new();
        let mut stream = conn.copy_out_raw(&format!("COPY {table} TO STDOUT")).await?;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        drop(stream);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {prefix}{table} (LIKE {table} INCLUDING ALL)"
        )))
        .execute(&mut *conn)
        .await?;
        data.push((table, Bytes::from(out)));
    }
    let before = probe.cpu();
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    for (table, bytes) in &data {
        let mut copy = tx.copy_in_raw(&format!("COPY {prefix}{table} FROM STDIN")).await?;
        for chunk in bytes.chunks(1 << 20) {
            copy.send(chunk).await?;
        }
        copy.finish().await?;
    }
    tx.commit().await?;
    let elapsed = started.elapsed();
    Ok((elapsed, probe.cpu() - before, data.iter().map(|(_, b)| b.len()).sum()))
}

#[derive(serde::Deserialize)]
struct Page {
    #[serde(default)]
    offset: u64,
}

/// Pre-rendered pages by (resource, offset).
type Pages = Arc<HashMap<(&'static str, u64), Bytes>>;

/// Serves the objects as Clerk's Backend API lists them; its base URL.
async fn fake_api(users: u64, organizations: u64, memberships: u64) -> anyhow::Result<String> {
    const LIMIT: u64 = backfill::PAGE as u64;
    let mut pages: HashMap<(&'static str, u64), Bytes> = HashMap::new();
    let mut add = |name: &'static str, n: u64, object: &dyn Fn(u64) -> Value, bare: bool| {
        let mut offset = 0;
        loop {
            let items: Vec<Value> = (offset..(offset + LIMIT).min(n)).map(object).collect();
            let len = items.len() as u64;
            let body = if bare {
                json!(items)
            } else {
                json!({"data": items, "total_count": n})
            };
            pages.insert(
                (name, offset),
                Bytes::from(serde_json::to_vec(&body).expect("serialises")),
            );
            if len < LIMIT {
                break;
            }
            offset += LIMIT;
        }
    };
    add("users", users, &|i| fixtures::user(i, fixtures::user_size(i)), true);
    add("organizations", organizations, &fixtures::organization, false);
    add(
        "organization_memberships",
        memberships,
        &|m| fixtures::membership(m, m % organizations, m % users),
        false,
    );
    let pages: Pages = Arc::new(pages);
    let page = |name: &'static str| {
        move |State(pages): State<Pages>, Query(p): Query<Page>| async move {
            match pages.get(&(name, p.offset)) {
                Some(body) => ([("content-type", "application/json")], body.clone()).into_response(),
                None => ([("content-type", "application/json")], Bytes::from_static(b"[]")).into_response(),
            }
        }
    };
    let app = axum::Router::new()
        .route(
            "/v1/instance",
            get(|| async { axum::Json(json!({"object": "instance", "id": fixtures::INSTANCE})) }),
        )
        .route(
            "/v1/users/count",
            get(move || async move { axum::Json(json!({"object": "total_count", "total_count": users})) }),
        )
        .route("/v1/users", get(page("users")))
        .route("/v1/organizations", get(page("organizations")))
        .route("/v1/organization_memberships", get(page("organization_memberships")))
        .route("/v1/organization_permissions", get(page("organization_permissions")))
        .route("/v1/organization_domains", get(page("organization_domains")))
        .route("/v1/organization_invitations", get(page("organization_invitations")))
        .route("/v1/organization_roles", get(page("organization_roles")))
        .with_state(pages);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/v1"))
}

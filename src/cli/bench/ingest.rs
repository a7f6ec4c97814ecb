//! `bench ingest`: signed 1–5 KB `user.created` webhooks from concurrent senders (acked/s, ack
//! latency; applied/s, apply lag, backlog), against the same rows inserted by sqlx one durable
//! `INSERT … COMMIT` each, at the same concurrency, in the same database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sqlx::PgPool;

use super::env::{self, Postgres, Probe, Server};
use super::fixtures;
use super::load::{Until, check, drive};
use super::stats::{Latencies, Report, Row, Target};

#[derive(Debug, Clone)]
pub struct Options {
    /// Events per run at the highest concurrency (a tenth, at least 200, at concurrency 1).
    pub events: u64,
    /// The concurrencies measured (the targets are read at the highest).
    pub concurrency: Vec<usize>,
}

pub async fn run(pg: &Postgres, opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("ingest");
    let (db, server, probe) = pg.scenario("bench_ingest").await?;
    let top = opts.concurrency.iter().copied().max().unwrap_or(1);
    let pool = env::pool(&db.options, top as u32 + 2).await?;
    let monitor = env::monitor(&db.options).await?;
    sqlx::query("CREATE TABLE bench_inbox (LIKE inbox INCLUDING ALL)")
        .execute(&pool)
        .await?;
    let total: u64 = opts.concurrency.iter().map(|&c| events_at(opts, c)).sum();
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..total).map(|i| Bytes::from(fixtures::user_created(i))).collect());
    let mean = bodies.iter().map(Bytes::len).sum::<usize>() / bodies.len().max(1);
    report.setup(
        "events",
        format!("user.created, 1–5 KB (mean {mean} B), distinct svix-ids, signed per request"),
    );
    report.setup(
        "server",
        "`clerk-mirror serve` child process, default settings (group commit ≤ 500 rows)",
    );
    report.setup(
        "baseline",
        "the same rows inserted by sqlx into a copy of `inbox` (same indexes), one `INSERT` per autocommit transaction, same concurrency",
    );
    report.setup("postgres", pg.settings().await?);

    let mut offset = 0;
    for &c in &opts.concurrency {
        let n = events_at(opts, c);
        let baseline = baseline(probe, &pool, bodies.clone(), c, offset, n).await?;
        let mut served = ingest(probe, &server, &monitor, bodies.clone(), c, offset, n).await?;
        served.versus(&baseline);
        if c == top {
            let (t, p99) = report_ratio(&served);
            report.targets.push(Target::at_least(
                format!("acked/s at c={c} vs one INSERT per commit"),
                t,
                1.0,
            ));
            report.targets.push(Target::at_most(
                format!("ack p99 at c={c} vs one INSERT per commit"),
                p99,
                3.0,
            ));
        }
        report.rows.push(baseline);
        report.rows.push(served);
        offset += n;
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE status = 'applied'")
        .fetch_one(&pool)
        .await?;
    report.fact("applied inbox rows / events acked", format!("{stored} / {total}"));
    pool.close().await;
    server.stop().await?;
    Ok(report)
}

fn events_at(opts: &Options, c: usize) -> u64 {
    let top = opts.concurrency.iter().copied().max().unwrap_or(1);
    if c == top {
        opts.events
    } else {
        (opts.events / 10).max(200)
    }
}

fn report_ratio(row: &Row) -> (f64, f64) {
    row.vs.first().map_or((f64::NAN, f64::NAN), |(_, t, p)| (*t, *p))
}

/// One durable autocommit INSERT per row.
async fn baseline(
    probe: Probe,
    pool: &PgPool,
    bodies: Arc<Vec<Bytes>>,
    c: usize,
    offset: u64,
    n: u64,
) -> anyhow::Result<Row> {
    let pool = pool.clone();
    let before = probe.cpu();
    let m = drive(c, offset, Until::Count(n), move |i| {
        let (pool, bodies) = (pool.clone(), bodies.clone());
        async move {
            sqlx::query(
                "INSERT INTO bench_inbox (source, event_key, event_type, event_time, instance_id, body)
                 VALUES ('webhook', $1, 'user.created', $2, $3, $4)",
            )
            .bind(format!("msg_bench{i}"))
            .bind(crate::store::records::time_from_ms(fixtures::T0 + i as i64))
            .bind(fixtures::INSTANCE)
            .bind(&bodies[i as usize][..])
            .execute(&pool)
            .await?;
            Ok(())
        }
    })
    .await;
    let cpu = probe.cpu() - before;
    check("sqlx INSERT per commit", &m)?;
    Ok(
        Row::new(format!("sqlx INSERT per commit c={c}"), c, m.ops, m.errors, m.elapsed)
            .latencies(m.latencies)
            .cpu(cpu)
            .baseline(),
    )
}

/// Webhooks to the server, with the backlog sampled (on the `monitor` pool) while they are sent.
async fn ingest(
    probe: Probe,
    server: &Server,
    pool: &PgPool,
    bodies: Arc<Vec<Bytes>>,
    c: usize,
    offset: u64,
    n: u64,
) -> anyhow::Result<Row> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(c)
        .build(connector);
    let url: Arc<str> = server.webhook_url().into();
    let secrets = server.secrets.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(sample_backlog(pool.clone(), stop_rx));
    let first_id: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM inbox")
        .fetch_one(pool)
        .await?;
    let started = Instant::now();
    let before = probe.cpu();
    let m = drive(c, offset, Until::Count(n), move |i| {
        let (client, url, secrets, bodies) = (client.clone(), url.clone(), secrets.clone(), bodies.clone());
        async move {
            let body = bodies[i as usize].clone();
            let id = format!("msg_bench{i}");
            let headers = crate::cli::send_event::svix_headers(&secrets, &id, chrono::Utc::now().timestamp(), &body)?;
            let mut request = hyper::Request::post(&*url).header("content-type", "application/json");
            for (k, v) in &headers {
                request = request.header(k.as_str(), v.as_str());
            }
            let response = client.request(request.body(Full::new(body))?).await?;
            let status = response.status();
            // Read the (small) body so the connection is reused.
            http_body_util::BodyExt::collect(response.into_body()).await?;
            anyhow::ensure!(status.is_success(), "answered {status}");
            Ok(())
        }
    })
    .await;
    let acked_in = started.elapsed();
    let cpu = probe.cpu() - before;
    check("webhooks", &m)?;
    // Applied: the backlog drains.
    let drained = loop {
        if env::pending(pool).await? == 0 {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = stop_tx.send(true);
    let samples = sampler.await.context("the backlog sampler failed")?;
    let max = samples.iter().map(|(_, b)| *b).max().unwrap_or(0);
    let at_end = samples
        .iter()
        .rev()
        .find(|(t, _)| *t <= acked_in)
        .map_or(0, |(_, b)| *b);
    let quarter = |q: f64| {
        samples
            .iter()
            .find(|(t, _)| t.as_secs_f64() >= acked_in.as_secs_f64() * q)
            .map_or(0, |(_, b)| *b)
    };
    let (lag, per_commit) = inbox_stats(pool, first_id).await?;
    Ok(Row::new(format!("webhooks c={c}"), c, m.ops, m.errors, m.elapsed)
        .latencies(m.latencies)
        .cpu(cpu)
        .note(format!("{per_commit:.1} rows per group commit"))
        .note(lag)
        .note(format!(
            "applied {:.0}/s, drained {:.2} s after the last ack",
            n as f64 / drained.as_secs_f64(),
            (drained - acked_in).as_secs_f64()
        ))
        .note(format!(
            "backlog at 25/50/75/100 % of sending: {}/{}/{}/{}, max {max}",
            quarter(0.25),
            quarter(0.5),
            quarter(0.75),
            at_end
        )))
}

/// The inbox backlog every 100 ms until told to stop.
async fn sample_backlog(pool: PgPool, mut stop: tokio::sync::watch::Receiver<bool>) -> Vec<(Duration, i64)> {
    let started = Instant::now();
    let mut out = Vec::new();
    loop {
        if let Ok(b) = env::pending(&pool).await {
            out.push((started.elapsed(), b));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.wait_for(|s| *s) => return out,
        }
    }
}

/// Apply lag (the inbox row's commit → the applier's transaction) and rows per group commit,
/// read from the inbox rows after `first_id`.
async fn inbox_stats(pool: &PgPool, first_id: i64) -> anyhow::Result<(String, f64)> {
    let lags: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM processed_at - received_at)::float8 FROM inbox
          WHERE id > $1 AND processed_at IS NOT NULL",
    )
    .bind(first_id)
    .fetch_all(pool)
    .await?;
    let mut l = Latencies(lags.iter().map(|s| (s * 1e6).max(0.0) as u64).collect());
    let (p50, p99, max) = l.summary();
    let (rows, commits): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT received_at) FROM inbox WHERE id > $1")
            .bind(first_id)
            .fetch_one(pool)
            .await?;
    Ok((
        format!("apply lag (inbox commit → applier transaction) p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"),
        rows as f64 / commits.max(1) as f64,
    ))
}

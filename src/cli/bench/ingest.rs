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
use sqlx::{Connection, PgPool};

use super::env::{self, Database, Postgres, Probe, Server};
use super::fixtures;
use super::load::{Until, check, drive};
use super::stats::{Latencies, Report, Row, Target};

#[derive(Debug, Clone)]
pub struct Options {
    /// Events per run at the highest concurrency (a tenth, at least 200, at concurrency 1).
    pub events: u64,
    /// The concurrencies measured (the targets are read at the highest).
    pub concurrency: Vec<usize>,
    /// How long pgbench's baseline runs.
    pub pgbench: Duration,
    /// How long each try of the sustained rate runs, and the run that confirms the rate found.
    pub sustained: (Duration, Duration),
}

/// How many rates the sustained row tries, from pgbench's INSERT per commit down.
const SUSTAINED_TRIES: usize = 8;

/// How many times the rate found is run for the confirmation's length, each below the pace
/// applied in the one before while they fall behind.
const SUSTAINED_CONFIRMS: usize = 3;

/// How many (pgbench, webhooks) pairs the ack p99 target is the median of.
const P99_PAIRS: usize = 3;

/// An event is applied "at once" if within this of its ack.
const SUSTAINED_LAG: Duration = Duration::from_secs(1);

pub async fn run(pg: &Postgres, opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("ingest");
    let db = pg.fresh_database("bench_ingest").await?;
    // The applier is paused for the first row: this connection holds its lock while the server
    // starts (its applier waits, as a standby replica's does).
    let mut held = sqlx::PgConnection::connect_with(&db.options)
        .await
        .context("cannot connect to the benchmark database")?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(crate::db::APPLIER_LOCK_KEY)
        .execute(&mut held)
        .await?;
    let server = Server::start(&db, &[]).await?;
    let probe = Probe {
        server: Some(server.pid),
        postgres: pg.is_private(),
    };
    let top = opts.concurrency.iter().copied().max().unwrap_or(1);
    let pool = env::pool(&db.options, top as u32 + 2).await?;
    let monitor = env::monitor(&db.options).await?;
    sqlx::query("CREATE TABLE bench_inbox (LIKE inbox INCLUDING ALL)")
        .execute(&pool)
        .await?;
    sqlx::query("CREATE SEQUENCE bench_keys").execute(&pool).await?;
    let total: u64 =
        opts.concurrency.iter().map(|&c| events_at(opts, c)).sum::<u64>() + opts.events * (1 + P99_PAIRS as u64);
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
        "baselines",
        "into a copy of `inbox` (same indexes), one `INSERT` per autocommit transaction, same concurrency: \
         `pgbench -M prepared` (PostgreSQL's C client) inserting a body of the mean size, and sqlx inserting the same bodies",
    );
    report.setup(
        "applier paused",
        "a connection of the bench holds the applier's lock while the server starts; released after the row, the applier drains the backlog alone",
    );
    report.setup(
        "sustained",
        format!(
            "webhooks sent at a fixed rate (open loop, at most {top} in flight) with the applier running; a rate is kept when \
             every event is applied within {} s of its ack and all are acked at the rate; tried from pgbench's rate down (a tenth lower a try, or below the pace applied), \
             {} s a try, then the rate found is run for {} s (up to {SUSTAINED_CONFIRMS} times, each below the pace applied in the one before while they fall behind)",
            SUSTAINED_LAG.as_secs(),
            opts.sustained.0.as_secs_f64(),
            opts.sustained.1.as_secs_f64()
        ),
    );
    report.setup(
        "ack p99 pairs",
        format!(
            "{P99_PAIRS} pairs of a pgbench run and, right after it, {} webhooks at c={top} with the applier running; the ack p99 target is the median of their p99 ratios",
            opts.events
        ),
    );
    report.setup("postgres", pg.settings().await?);

    // The ceiling of acks: the applier paused, against pgbench.
    let pgbench = pgbench_baseline(probe, &db, top, &bodies[..], opts.pgbench).await?;
    let mut paused = ingest(probe, &server, &monitor, bodies.clone(), top, 0, opts.events, false).await?;
    paused.name = format!("webhooks c={top}, applier paused");
    paused.versus(&pgbench);
    let released = Instant::now();
    let before = probe.cpu();
    held.close().await?;
    env::drained(&monitor, Duration::from_millis(20)).await?;
    let mut drain = Row::new(
        format!("applier alone, draining the {} paused events", opts.events),
        1,
        opts.events,
        0,
        released.elapsed(),
    )
    .cpu(probe.cpu() - before);
    drain.versus(&pgbench);
    report.targets.push(Target::at_least(
        format!("acked/s at c={top}, applier paused, vs pgbench INSERT per commit"),
        paused.vs[0].1,
        2.0,
    ));
    report.rows.push(pgbench.clone());
    report.rows.push(paused);
    report.rows.push(drain);

    let mut offset = opts.events;
    for &c in &opts.concurrency {
        let n = events_at(opts, c);
        let baseline = baseline(probe, &pool, bodies.clone(), c, offset, n).await?;
        let mut served = ingest(probe, &server, &monitor, bodies.clone(), c, offset, n, true).await?;
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
            served.versus(&pgbench);
        }
        report.rows.push(baseline);
        report.rows.push(served);
        offset += n;
    }

    // The ack p99 with the applier running against pgbench's: pgbench's runs drift by a third
    // from one minute to the next on a shared machine, so each webhook run is paired with a
    // pgbench run just before it, and the target is the median of the pairs' ratios.
    let mut ratios = Vec::new();
    for pair in 1..=P99_PAIRS {
        let mut pg = pgbench_baseline(probe, &db, top, &bodies[..], opts.pgbench).await?;
        pg.name = format!("{}, pair {pair}", pg.name);
        let mut served = ingest(probe, &server, &monitor, bodies.clone(), top, offset, opts.events, true).await?;
        offset += opts.events;
        served.name = format!("webhooks c={top}, pair {pair}");
        served.versus(&pg);
        ratios.push(served.vs[0].2);
        report.rows.push(pg);
        report.rows.push(served);
    }
    ratios.sort_by(f64::total_cmp);
    report.targets.push(Target::at_most(
        format!(
            "ack p99 at c={top}, applier running, vs pgbench INSERT p99 just before (median of {P99_PAIRS} pairs: {})",
            ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
        ),
        ratios[ratios.len() / 2],
        2.0,
    ));

    // The highest rate the applier keeps up with.
    let mut found = None;
    let mut start = total;
    let mut rate = pgbench.per_second;
    for _ in 0..SUSTAINED_TRIES {
        let (row, kept, pace) = sustained(probe, &server, &monitor, top, rate, opts.sustained.0, start).await?;
        start += row.ops;
        report.rows.push(row);
        if kept {
            found = Some(rate);
            break;
        }
        rate = next_rate(rate, pace);
    }
    // A short try does not show a backlog that grows slowly: the rate found is run for the
    // confirmation's length, and stepped down below the pace applied while it falls behind.
    let mut confirmed: Option<Row> = None;
    if let Some(mut rate) = found {
        for _ in 0..SUSTAINED_CONFIRMS {
            let (mut row, kept, pace) = sustained(probe, &server, &monitor, top, rate, opts.sustained.1, start).await?;
            start += row.ops;
            row.name = format!("{} (confirming)", row.name);
            report.rows.push(row.clone());
            if kept {
                confirmed = Some(row);
                break;
            }
            rate = next_rate(rate, pace);
        }
    }
    for row in report.rows.iter_mut().filter(|r| r.name.starts_with("sustained")) {
        row.versus(&pgbench);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    report.targets.push(Target::at_least(
        format!(
            "sustained webhooks/s at c={top}, all applied within {} s for {} s, vs pgbench INSERT per commit{}",
            SUSTAINED_LAG.as_secs(),
            opts.sustained.1.as_secs_f64(),
            confirmed
                .as_ref()
                .map(|row| cpu_bound(row, &pgbench, cores))
                .unwrap_or_default()
        ),
        confirmed.map_or(0.0, |row| row.per_second / pgbench.per_second),
        1.0,
    ));

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE status = 'applied'")
        .fetch_one(&pool)
        .await?;
    report.fact("applied inbox rows / events acked", format!("{stored} / {start}"));
    pool.close().await;
    server.stop().await?;
    Ok(report)
}

/// The next sustained rate after `rate` fell behind: a tenth lower, or below `pace` (the events
/// of the run ÷ the time until the last was applied), whichever is lower.
fn next_rate(rate: f64, pace: f64) -> f64 {
    (rate * 0.9).min(pace * 0.95)
}

/// What bounds a sustained rate on this machine: the CPU an event took from every process (the
/// bench's senders, the server, PostgreSQL), and the rate `cores` give at that cost, ÷ pgbench's.
fn cpu_bound(row: &Row, pgbench: &Row, cores: usize) -> String {
    let per_event = row.cpu_per_op();
    let (bench, server, postgres) = (per_event.bench, per_event.server, per_event.postgres.unwrap_or(0.0));
    let total = bench + server + postgres;
    let most = cores as f64 * 1e6 / total.max(1.0);
    format!(
        " (at it an event took {bench:.0}/{server:.0}/{postgres:.0} µs of CPU, bench/server/PostgreSQL: \
         {cores} cores give at most {most:.0}/s = {:.2}×)",
        most / pgbench.per_second.max(1.0)
    )
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

/// Webhooks to the server, with the backlog sampled (on the `monitor` pool) while they are sent;
/// with `applied`, then waits until they are applied (else the applier is paused).
#[allow(clippy::too_many_arguments)]
async fn ingest(
    probe: Probe,
    server: &Server,
    pool: &PgPool,
    bodies: Arc<Vec<Bytes>>,
    c: usize,
    offset: u64,
    n: u64,
    applied: bool,
) -> anyhow::Result<Row> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(sample_backlog(pool.clone(), stop_rx));
    let first_id: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM inbox")
        .fetch_one(pool)
        .await?;
    let started = Instant::now();
    let before = probe.cpu();
    let sender = Sender::new(server, c);
    let m = drive(c, offset, Until::Count(n), move |i| {
        let (sender, body) = (sender.clone(), bodies[i as usize].clone());
        async move { sender.send(i, body).await }
    })
    .await;
    let acked_in = started.elapsed();
    let cpu = probe.cpu() - before;
    check("webhooks", &m)?;
    if !applied {
        let _ = stop_tx.send(true);
        sampler.await.context("the backlog sampler failed")?;
        return Ok(Row::new(format!("webhooks c={c}"), c, m.ops, m.errors, m.elapsed)
            .latencies(m.latencies)
            .cpu(cpu));
    }
    // Applied: the backlog drains.
    env::drained(pool, Duration::from_millis(20)).await?;
    let drained = started.elapsed();
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

/// Signed webhooks to a server over pooled HTTP/1.1 connections.
#[derive(Clone)]
struct Sender {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Arc<str>,
    secrets: crate::ingest::verify::WebhookSecrets,
}

impl Sender {
    fn new(server: &Server, c: usize) -> Sender {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Sender {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(c)
                .build(connector),
            url: server.webhook_url().into(),
            secrets: server.secrets.clone(),
        }
    }

    /// Sends `body` as the delivery `msg_bench{i}`; an error unless answered 2xx.
    async fn send(&self, i: u64, body: Bytes) -> anyhow::Result<()> {
        let id = format!("msg_bench{i}");
        let headers = crate::cli::send_event::svix_headers(&self.secrets, &id, chrono::Utc::now().timestamp(), &body)?;
        let mut request = hyper::Request::post(&*self.url).header("content-type", "application/json");
        for (k, v) in &headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let response = self.client.request(request.body(Full::new(body))?).await?;
        let status = response.status();
        // Read the (small) body so the connection is reused.
        http_body_util::BodyExt::collect(response.into_body()).await?;
        anyhow::ensure!(status.is_success(), "answered {status}");
        Ok(())
    }
}

/// `pgbench -M prepared` inserting a body of the mean size (hex in the script: pgbench reads
/// `:name` in a statement as a variable) into the copy of `inbox`, one autocommit `INSERT` each.
async fn pgbench_baseline(probe: Probe, db: &Database, c: usize, bodies: &[Bytes], run: Duration) -> anyhow::Result<Row> {
    let exe = super::pgbench::find()?;
    let mean = bodies.iter().map(Bytes::len).sum::<usize>() / bodies.len().max(1);
    let body = bodies.iter().min_by_key(|b| b.len().abs_diff(mean)).context("no bodies")?;
    let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
    let script = format!(
        "INSERT INTO bench_inbox (source, event_key, event_type, event_time, instance_id, body) \
         VALUES ('webhook', 'msg_pgbench' || nextval('bench_keys'), 'user.created', now(), '{}', decode('{hex}', 'hex'));\n",
        fixtures::INSTANCE
    );
    let warmup = (run / 5).max(Duration::from_secs(1));
    let row = super::pgbench::run(
        &exe,
        db,
        probe,
        &format!("pgbench INSERT per commit c={c}"),
        &script,
        c,
        warmup,
        run,
    )
    .await?;
    Ok(row.baseline())
}

/// Webhooks at `rate` for `run` (open loop: each sent at its time, at most `c` in flight), with
/// the applier running: kept if all were acked at the rate and applied within [`SUSTAINED_LAG`];
/// with the pace they were applied at (events ÷ the time until the last was applied).
async fn sustained(
    probe: Probe,
    server: &Server,
    pool: &PgPool,
    c: usize,
    rate: f64,
    run: Duration,
    offset: u64,
) -> anyhow::Result<(Row, bool, f64)> {
    let first_id: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM inbox")
        .fetch_one(pool)
        .await?;
    let sender = Sender::new(server, c);
    let wal = env::Wal::read(pool).await?;
    let started = tokio::time::Instant::now();
    let before = probe.cpu();
    let m = drive(c, offset, Until::Time(run), move |i| {
        let sender = sender.clone();
        async move {
            let at = started + Duration::from_secs_f64((i - offset) as f64 / rate);
            if at >= started + run {
                // Past the run: wait out its end (the loop then stops).
                tokio::time::sleep_until(started + run).await;
                return Ok(());
            }
            tokio::time::sleep_until(at).await;
            sender.send(i, Bytes::from(fixtures::user_created(i))).await
        }
    })
    .await;
    let acked_in = started.elapsed();
    check("webhooks", &m)?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE id > $1")
        .bind(first_id)
        .fetch_one(pool)
        .await?;
    let n = n as u64;
    env::drained(pool, Duration::from_millis(20)).await?;
    let until_applied = started.elapsed();
    let drained_after = until_applied.saturating_sub(acked_in);
    let pace = n as f64 / until_applied.as_secs_f64();
    let cpu = probe.cpu() - before;
    let wal = env::Wal::read(pool).await?.since(&wal, n);
    let mut l = apply_lags(pool, first_id).await?;
    let (p50, p99, max) = l.summary();
    let trend = lag_trend(pool, first_id).await?;
    // Acked at the rate: (almost) every event of the run was sent and acked within it.
    let acked_rate = n as f64 / run.as_secs_f64();
    let kept = max <= SUSTAINED_LAG.as_secs_f64() * 1000.0 && acked_rate >= rate * 0.97;
    // Throughput is the rate acked; latencies are the apply lag (ack → applied).
    let row = Row::new(format!("sustained {rate:.0}/s c={c}"), c, n, m.errors, run)
        .latencies(l)
        .cpu(cpu)
        .note(format!(
            "{}: acked {acked_rate:.0}/s of {rate:.0}/s; apply lag p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (max by sixth of the run {trend} ms); drained {:.2} s after the last ack; {wal}",
            if kept { "kept up" } else { "fell behind" },
            drained_after.as_secs_f64()
        ));
    Ok((row, kept, pace))
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

/// Each applied inbox row's apply lag (its commit → the applier's transaction), after `first_id`.
async fn apply_lags(pool: &PgPool, first_id: i64) -> anyhow::Result<Latencies> {
    let lags: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM processed_at - received_at)::float8 FROM inbox
          WHERE id > $1 AND processed_at IS NOT NULL",
    )
    .bind(first_id)
    .fetch_all(pool)
    .await?;
    Ok(Latencies(lags.iter().map(|s| (s * 1e6).max(0.0) as u64).collect()))
}

/// The highest apply lag in each sixth of the rows after `first_id`, in arrival order (a lag
/// that grows through the run is a pace short of the rate; one that comes and goes, a stall).
async fn lag_trend(pool: &PgPool, first_id: i64) -> anyhow::Result<String> {
    let maxes: Vec<f64> = sqlx::query_scalar(
        "SELECT max(lag) FROM (
             SELECT ntile(6) OVER (ORDER BY id) AS part, extract(epoch FROM processed_at - received_at)::float8 * 1000 AS lag
               FROM inbox WHERE id > $1 AND processed_at IS NOT NULL) t
          GROUP BY part ORDER BY part",
    )
    .bind(first_id)
    .fetch_all(pool)
    .await?;
    Ok(maxes.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join("/"))
}

/// Apply lag (the inbox row's commit → the applier's transaction) and rows per group commit,
/// read from the inbox rows after `first_id`.
async fn inbox_stats(pool: &PgPool, first_id: i64) -> anyhow::Result<(String, f64)> {
    let (p50, p99, max) = apply_lags(pool, first_id).await?.summary();
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

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::stats::Cpu;

    #[test]
    fn a_rate_that_fell_behind_is_followed_by_one_below_both_itself_and_the_pace_applied() {
        assert!((next_rate(10_000.0, 4_000.0) - 3_800.0).abs() < 1e-9);
        assert!((next_rate(4_000.0, 3_990.0) - 3_600.0).abs() < 1e-9);
    }

    #[test]
    fn the_cpu_bound_is_the_rate_the_cores_give_at_the_cpu_an_event_took() {
        // 1,000 events that took 0.1 s of the bench, 0.2 s of the server and 0.2 s of
        // PostgreSQL: 500 µs an event, so two cores give at most 4,000/s, 0.40× of 10,000/s.
        let row = Row::new("sustained", 64, 1_000, 0, Duration::from_secs(1)).cpu(Cpu {
            bench: 0.1,
            server: 0.2,
            postgres: Some(0.2),
        });
        let pgbench = Row::new("pgbench", 64, 10_000, 0, Duration::from_secs(1));
        let bound = cpu_bound(&row, &pgbench, 2);
        assert!(bound.contains("100/200/200 µs"), "{bound}");
        assert!(bound.contains("2 cores give at most 4000/s = 0.40×"), "{bound}");
    }
}

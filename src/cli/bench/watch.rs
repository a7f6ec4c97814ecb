//! `bench watch`: webhooks sent at a fixed rate while N watchers stream every change: ack →
//! delivery latency at every watcher, server RSS (idle with N streams, and peak), and how many
//! rows of the change log the server read per change appended (the hub reads each once per
//! replica). Baseline: one watcher at the same rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

use super::env::{self, Postgres, Probe, Server};
use super::fixtures;
use super::stats::{Latencies, Report, Row, Target};
use crate::pb::watch_changes_response::Event;
use crate::pb::watch_service_client::WatchServiceClient;

#[derive(Debug, Clone)]
pub struct Options {
    /// The watcher counts measured (the first is the baseline), each with its event rate.
    pub phases: Vec<(usize, f64)>,
    /// How long events are sent in each phase.
    pub seconds: f64,
    /// Most connections the watchers share.
    pub connections: usize,
}

pub async fn run(pg: &Postgres, opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("watch");
    let (db, server, probe) = pg.scenario("bench_watch").await?;
    report.setup(
        "events",
        format!(
            "user.created (~1.5 KB) webhooks at a fixed rate for {} s per phase; the rate is lowered as watchers grow so that deliveries/s stay comparable",
            opts.seconds
        ),
    );
    report.setup(
        "watchers",
        format!(
            "WatchChanges from now, every change, over min(watchers, {}) HTTP/2 connections from this process",
            opts.connections
        ),
    );
    report.setup(
        "latency",
        "from the webhook's 2xx at the sender to the change's arrival at each watcher (0 when the change arrived first)",
    );
    let mut next_event = 0u64;
    let mut baseline: Option<Row> = None;
    let mut most_reads = None;
    for &(watchers, rate) in &opts.phases {
        let events = ((rate * opts.seconds).round() as u64).max(1);
        let reads_before = server.metric(CHANGES_READ, "").await?;
        let (mut row, idle_kib) = phase(probe, &server, watchers, rate, next_event, events, opts.connections).await?;
        let per_connection = watchers / watchers.min(opts.connections).max(1);
        if per_connection >= 100 {
            report.targets.push(Target::at_most(
                format!("server memory per idle stream (KiB) at {watchers} watchers, {per_connection} per connection"),
                idle_kib,
                8.0,
            ));
        }
        next_event += events;
        let reads = server.metric(CHANGES_READ, "").await? - reads_before;
        let per_change = reads / events as f64;
        row = row.note(format!(
            "change-log rows read from PostgreSQL per change: {per_change:.2} ({reads} rows for {events} changes)"
        ));
        most_reads = Some(per_change);
        match &baseline {
            None => baseline = Some(row.clone().baseline()),
            Some(base) => {
                row.versus(base);
                if watchers == 1000 {
                    report.targets.push(Target::at_most(
                        "p99 ack→delivery with 1,000 watchers vs one watcher",
                        row.vs[0].2,
                        5.0,
                    ));
                    report.targets.push(Target::at_most(
                        "p99 ack→delivery with 1,000 watchers minus one watcher's (ms)",
                        row.p99_ms - base.p99_ms,
                        10.0,
                    ));
                }
            }
        }
        report
            .rows
            .push(if report.rows.is_empty() { row.baseline() } else { row });
    }
    if let Some(reads) = most_reads {
        report.targets.push(Target::at_most(
            "change-log rows read from PostgreSQL per change appended, with the most watchers (1 = once per replica)",
            reads,
            1.05,
        ));
    }
    let resuming = opts.phases.get(1).map_or(1, |p| p.0);
    resumes(&mut report, &db, &server, probe, resuming, opts.connections, next_event).await?;
    server.stop().await?;
    Ok(report)
}

/// How far back resuming watchers start.
const BACK: u64 = 200;

/// `watchers` streams resuming `BACK` changes back at once: from the hub's ring of recent
/// changes, against the same resumes on a replica of the same database that keeps one recent
/// change (so each reads its backlog from PostgreSQL).
async fn resumes(
    report: &mut Report,
    db: &env::Database,
    server: &Server,
    probe: Probe,
    watchers: usize,
    connections: usize,
    first: u64,
) -> anyhow::Result<()> {
    let plain = Server::start(db, &["--recent-changes", "1"]).await?;
    // Both hubs read these after they started: the ring holds them.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    for i in first..first + BACK + 10 {
        send(&client, &server.webhook_url(), &server.secrets, i).await?;
    }
    let (head, log_id) = {
        let pool = env::pool(&db.options, 1).await?;
        env::drained(&pool, Duration::from_millis(20)).await?;
        let head = crate::store::read::head(&pool).await?;
        let log_id = crate::store::read::log_id(&pool).await?;
        pool.close().await;
        (head, log_id)
    };
    for s in [server, &plain] {
        super::lookup::cache_loaded(s, head).await?;
    }
    let start = crate::pb::cursor::Cursor {
        log_id,
        seq: head - BACK as i64,
    }
    .encode();
    let stream_reads = "reader=\"stream\"";
    let mut rows = Vec::new();
    for (s, cpu_of, from) in [
        (&plain, Probe { server: Some(plain.pid), ..probe }, "PostgreSQL (`--recent-changes 1`)"),
        (server, probe, "the hub's ring of recent changes"),
    ] {
        let (read_before, taken_before) = (
            s.metric(CHANGES_READ, stream_reads).await?,
            s.metric(RECENT_TAKEN, stream_reads).await?,
        );
        let channels = {
            let mut out = Vec::new();
            for _ in 0..watchers.min(connections).max(1) {
                out.push(Endpoint::from_shared(s.grpc_url())?.tcp_nodelay(true).connect().await?);
            }
            out
        };
        let cpu_before = cpu_of.cpu();
        let started = Instant::now();
        let tasks: Vec<_> = (0..watchers)
            .map(|w| tokio::spawn(resume(channels[w % channels.len()].clone(), start.clone())))
            .collect();
        let mut latencies = Latencies::default();
        let mut retried = 0;
        for t in tasks {
            let (took, changes, retries) = t.await??;
            anyhow::ensure!(changes == BACK, "a resumed stream got {changes} changes before caught_up, not {BACK}");
            latencies.push(took);
            retried += retries;
        }
        let elapsed = started.elapsed();
        let cpu = cpu_of.cpu() - cpu_before;
        let read = s.metric(CHANGES_READ, stream_reads).await? - read_before;
        let taken = s.metric(RECENT_TAKEN, stream_reads).await? - taken_before;
        rows.push(
            Row::new(
                format!("{watchers} watchers resume {BACK} changes back, from {from}"),
                watchers,
                watchers as u64,
                0,
                elapsed,
            )
            .latencies(latencies)
            .cpu(cpu)
            .note(format!(
                "per resume: {:.0} change-log rows read from PostgreSQL, {:.0} changes taken from the ring; latency: request to `caught_up`, retries included ({retried} starts again after RESOURCE_EXHAUSTED or UNAVAILABLE)",
                read / watchers as f64,
                taken / watchers as f64
            )),
        );
        if from.starts_with("the hub") {
            report.targets.push(Target::at_most(
                "change-log rows read from PostgreSQL per watcher resuming within the ring",
                read / watchers as f64,
                0.0,
            ));
        }
    }
    plain.stop().await?;
    let base = rows[0].clone().baseline();
    rows[1].versus(&base);
    report.rows.push(base);
    report.rows.push(rows.pop().expect("two rows"));
    Ok(())
}

/// One resuming watcher: how long until `caught_up` (retries included), the changes before it,
/// and how many times it had to start again. A replica that cannot serve every backlog at once
/// answers RESOURCE_EXHAUSTED or UNAVAILABLE; the watcher backs off and resumes from the same
/// cursor, as a client should.
async fn resume(channel: Channel, start: String) -> anyhow::Result<(Duration, u64, u64)> {
    let mut client = WatchServiceClient::new(channel);
    let started = Instant::now();
    let mut retries = 0;
    let retry = |s: &tonic::Status| {
        matches!(s.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable)
    };
    'attempt: loop {
        if retries > 0 {
            tokio::time::sleep(Duration::from_millis(20 * retries.min(50))).await;
        }
        anyhow::ensure!(retries <= 200, "a resumed stream failed 200 times");
        let request = crate::pb::WatchChangesRequest {
            start: Some(crate::pb::watch_changes_request::Start::StartCursor(start.clone())),
            ..Default::default()
        };
        let mut stream = match client.watch_changes(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if retry(&s) => {
                retries += 1;
                continue;
            }
            Err(s) => return Err(s.into()),
        };
        let mut changes = 0;
        loop {
            match stream.message().await {
                Ok(Some(m)) => match m.event {
                    Some(Event::Change(_)) => changes += 1,
                    Some(Event::CaughtUp(_)) => return Ok((started.elapsed(), changes, retries)),
                    _ => {}
                },
                Ok(None) => anyhow::bail!("a resumed stream ended before caught_up"),
                Err(s) if retry(&s) => {
                    retries += 1;
                    continue 'attempt;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }
}

/// Streams opened at once.
const WAVE: usize = 500;

/// The server's count of change-log rows read from PostgreSQL (by its hub and its streams).
const CHANGES_READ: &str = "clerk_mirror_change_log_rows_read_total";

/// The server's count of changes readers took from the hub's ring instead of the database.
const RECENT_TAKEN: &str = "clerk_mirror_change_log_recent_taken_total";

/// The server's count of streams that fell behind the hub and read the database.
const CATCH_UPS: &str = "clerk_mirror_watch_database_catch_ups_total";

async fn phase(
    probe: Probe,
    server: &Server,
    watchers: usize,
    rate: f64,
    first: u64,
    events: u64,
    connections: usize,
) -> anyhow::Result<(Row, f64)> {
    let channels = {
        let mut out = Vec::new();
        for _ in 0..watchers.min(connections).max(1) {
            out.push(
                Endpoint::from_shared(server.grpc_url())?
                    .tcp_nodelay(true)
                    .connect()
                    .await?,
            );
        }
        Arc::new(out)
    };
    let rss_before = server.rss();
    let catch_ups_before = server.metric(CATCH_UPS, "").await?;
    // Open the streams in waves (as clients ramp up; the server sheds RPCs past its in-flight
    // limit), each wave caught up before the next.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(watchers);
    let mut tasks = Vec::with_capacity(watchers);
    for wave in (0..watchers).collect::<Vec<_>>().chunks(WAVE) {
        for &w in wave {
            let channel: Channel = channels[w % channels.len()].clone();
            tasks.push(tokio::spawn(watcher(channel, ready_tx.clone(), first, events)));
        }
        for _ in wave {
            match ready_rx.recv().await {
                Some(Ok(())) => {}
                Some(Err(e)) => anyhow::bail!("a watch stream failed to start: {e}"),
                None => anyhow::bail!("the watchers stopped"),
            }
        }
    }
    drop(ready_tx);
    let rss_idle = server.rss();
    // Send at the rate, recording each ack.
    let acks: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; events as usize]));
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(rss_idle));
    let sampling = {
        let (peak, pid) = (peak.clone(), server.pid);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(env::rss(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let cpu_before = probe.cpu();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let started = Instant::now();
    let mut sends = Vec::new();
    for k in 0..events {
        let at = started + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let (client, acks, url, secrets) = (
            client.clone(),
            acks.clone(),
            server.webhook_url(),
            server.secrets.clone(),
        );
        sends.push(tokio::spawn(async move {
            let at = send(&client, &url, &secrets, first + k).await?;
            acks.lock().await[k as usize] = Some(at);
            Ok::<_, anyhow::Error>(())
        }));
    }
    for s in sends {
        s.await??;
    }
    let sent_in = started.elapsed();
    let mut received = Vec::with_capacity(watchers);
    let deadline = Instant::now() + Duration::from_secs(120);
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        received.push(
            tokio::time::timeout(left, t)
                .await
                .map_err(|_| anyhow::anyhow!("watchers did not receive every change within 120 s"))???,
        );
    }
    let elapsed = started.elapsed();
    let cpu = probe.cpu() - cpu_before;
    sampling.abort();
    let acks = acks.lock().await.clone();
    let mut latencies = Latencies::default();
    let mut early = 0u64;
    for got in &received {
        for (k, at) in got {
            let ack = acks[*k as usize].expect("every event was acked");
            match at.checked_duration_since(ack) {
                Some(d) => latencies.push(d),
                None => {
                    early += 1;
                    latencies.push(Duration::ZERO);
                }
            }
        }
    }
    let delivered = latencies.0.len() as u64;
    let catch_ups = server.metric(CATCH_UPS, "").await? - catch_ups_before;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let idle_kib = (rss_idle.saturating_sub(rss_before)) as f64 / 1024.0 / watchers as f64;
    let mut row = Row::new(format!("{watchers} watchers"), watchers, delivered, 0, elapsed)
        .latencies(latencies)
        .cpu(cpu)
        .note(format!("{events} events at {rate}/s (sent in {:.1} s)", sent_in.as_secs_f64()))
        .note(format!(
            "server RSS {:.1} MiB before the streams, {:.1} MiB with them idle, peak {:.1} MiB; {:.1} KiB per watcher idle",
            mib(rss_before),
            mib(rss_idle),
            mib(peak.load(std::sync::atomic::Ordering::Relaxed)),
            idle_kib
        ))
        .note(format!("{catch_ups} times a stream read the database instead of the hub"));
    if early > 0 {
        row = row.note(format!("{early} deliveries arrived before their ack"));
    }
    Ok((row, idle_kib))
}

/// Sends webhook `i` (a `user.created` of ~1.5 KB, its svix-id `msg_watch{i}`); when it was acked.
async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    secrets: &crate::ingest::verify::WebhookSecrets,
    i: u64,
) -> anyhow::Result<Instant> {
    let body = Bytes::from(
        serde_json::to_vec(&fixtures::event(
            "user.created",
            &fixtures::user(i, 1024),
            fixtures::T0 + i as i64,
        ))
        .expect("serialises"),
    );
    let id = format!("msg_watch{i}");
    let headers = crate::cli::send_event::svix_headers(secrets, &id, chrono::Utc::now().timestamp(), &body)?;
    let mut request = hyper::Request::post(url).header("content-type", "application/json");
    for (name, value) in &headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = client.request(request.body(Full::new(body))?).await?;
    let at = Instant::now();
    anyhow::ensure!(response.status().is_success(), "answered {}", response.status());
    Ok(at)
}

/// One watcher: streams from now, reports when caught up, and records when each of the
/// benchmark's `events` changes (numbered from `first`) arrives.
async fn watcher(
    channel: Channel,
    ready: tokio::sync::mpsc::Sender<Result<(), String>>,
    first: u64,
    events: u64,
) -> anyhow::Result<Vec<(u64, Instant)>> {
    let mut client = WatchServiceClient::new(channel);
    let mut attempt = 0;
    let mut stream = loop {
        match client.watch_changes(crate::pb::WatchChangesRequest::default()).await {
            Ok(r) => break r.into_inner(),
            // Shed at the in-flight limit: back off and retry, as a client should.
            Err(s) if s.code() == tonic::Code::ResourceExhausted && attempt < 50 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(s) => {
                let _ = ready.send(Err(format!("{s}"))).await;
                return Err(s.into());
            }
        }
    };
    let mut got = Vec::with_capacity(events as usize);
    let mut caught_up = false;
    loop {
        let message = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => anyhow::bail!("a watch stream ended after {} of {events} changes", got.len()),
            Err(s) => {
                if !caught_up {
                    let _ = ready.send(Err(format!("{s}"))).await;
                }
                return Err(s.into());
            }
        };
        let now = Instant::now();
        match message.event {
            Some(Event::CaughtUp(_)) if !caught_up => {
                caught_up = true;
                let _ = ready.send(Ok(())).await;
            }
            Some(Event::Change(c)) => {
                if let Some(i) = c
                    .source
                    .strip_prefix("webhook:msg_watch")
                    .and_then(|i| i.parse::<u64>().ok())
                    && (first..first + events).contains(&i)
                {
                    got.push((i - first, now));
                    if got.len() as u64 == events {
                        return Ok(got);
                    }
                }
            }
            _ => {}
        }
    }
}

//! `bench outbound`: deliveries per second from the mirror's change log to a local receiver that
//! verifies every signature (the svix crate, as a receiver would), with 1 and several lanes, at
//! the receiver's own pace and with a delay added to each answer (a remote receiver's round
//! trip). Each row's baseline is measured in the same run: the same signed bodies POSTed to the
//! same receiver from this process with as many in flight as the lanes (what the receiver can
//! take, with no database, cursor or attempt record behind each delivery).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;

use super::env::{self, Postgres, Probe, Server};
use super::fixtures;
use super::stats::{Report, Row, Target};
use crate::outbound::address::Policy;
use crate::outbound::sign::{self, SigningSecret};
use crate::outbound::{body, client};
use crate::pb;
use crate::pb::admin_service_client::AdminServiceClient;
use crate::store::changes::{self, Ends, Scope};

#[derive(Debug, Clone)]
pub struct Options {
    /// Changes delivered per row at the receiver's own pace.
    pub changes: u64,
    /// Changes delivered per row with the added delay.
    pub delayed_changes: u64,
    pub lanes: Vec<usize>,
    /// The delay added to each answer in the delayed rows.
    pub delay: Duration,
    /// Changes a delivery in the batch row (1: no batch row).
    pub batch: i32,
}

/// The receiver's state: the secret it verifies with, its added delay, what it counted.
#[derive(Default)]
struct Receiver {
    secret: std::sync::RwLock<Option<svix::webhooks::Webhook>>,
    delay_ms: AtomicU64,
    verified: AtomicU64,
    refused: AtomicU64,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delay = r.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut map = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        if let Some(v) = headers.get(name) {
            map.insert(name, v.clone());
        }
    }
    let ok = r
        .secret
        .read()
        .expect("not poisoned")
        .as_ref()
        .is_some_and(|w| w.verify(&body, &map).is_ok());
    match ok {
        true => {
            r.verified.fetch_add(1, Ordering::Relaxed);
            StatusCode::NO_CONTENT
        }
        false => {
            r.refused.fetch_add(1, Ordering::Relaxed);
            StatusCode::UNAUTHORIZED
        }
    }
}

pub async fn run(pg: &Postgres, opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("outbound");
    let db = pg.fresh_database("bench_outbound").await?;
    let key = crate::outbound::sealed::SealingKey::generate_text();
    let server = Server::start(
        &db,
        &["--destinations-key", &key, "--allow-private-destinations", "--delivery-timeout", "5s"],
    )
    .await?;
    let probe = Probe {
        server: Some(server.pid),
        postgres: pg.is_private(),
    };
    let pool = env::pool(&db.options, 4).await?;
    let monitor = env::monitor(&db.options).await?;
    let most = opts.changes.max(opts.delayed_changes);
    report.setup(
        "data",
        format!("{most} user.created changes (about 1–5 KB each as delivered) in the log before each row"),
    );
    report.setup(
        "receiver",
        "axum in this process on 127.0.0.1, verifying every delivery with svix's `Webhook::verify`, answering 204",
    );
    report.setup(
        "baseline",
        "the same signed bodies POSTed by this process with the mirror's HTTP client, as many in flight as the row's lanes, no database",
    );
    report.setup("postgres", pg.settings().await?);

    // The sender starts after waiting out the delivery timeout (it may be taking over).
    let deadline = Instant::now() + Duration::from_secs(60);
    while sqlx::query_scalar::<_, i64>("SELECT epoch FROM outbound_sender").fetch_one(&pool).await? == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the server's sender did not start within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The log: `most` user changes, applied.
    let (log_id, before): (String, i64) = sqlx::query_as("SELECT log_id, head_seq FROM log_head")
        .fetch_one(&pool)
        .await?;
    let bodies: Vec<String> = (0..most)
        .map(|i| {
            serde_json::json!({"type": "user.created", "object": "event", "timestamp": fixtures::T0 + i as i64,
                               "instance_id": fixtures::INSTANCE, "data": fixtures::user(i, fixtures::user_size(i))})
            .to_string()
        })
        .collect();
    sqlx::query(
        "INSERT INTO inbox (source, event_key, event_type, body)
         SELECT 'webhook', 'msg_bench_outbound_' || n, 'user.created', convert_to(b, 'UTF8')
           FROM unnest($1::text[]) WITH ORDINALITY AS t(b, n)",
    )
    .bind(&bodies)
    .execute(&pool)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(crate::db::INBOX_CHANNEL)
        .execute(&pool)
        .await?;
    env::drained(&monitor, Duration::from_millis(20)).await?;
    let head: i64 = sqlx::query_scalar("SELECT head_seq FROM log_head").fetch_one(&pool).await?;
    anyhow::ensure!(head - before == most as i64, "{} changes for {most} events", head - before);

    // The bodies as the mirror delivers them (for the baseline).
    let page = changes::page(&pool, before, &Scope::default(), most as i64, Ends::Limit).await?;
    let delivered_bodies: Vec<Bytes> = page
        .changes
        .iter()
        .map(|c| {
            let change = crate::store::change_message::to_change(c, &log_id, false, None).map_err(|e| anyhow::anyhow!(e))?;
            Ok(Bytes::from(body::change(&change, &[])))
        })
        .collect::<anyhow::Result<_>>()?;

    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url())?.connect().await?;
    let mut admin = AdminServiceClient::new(channel);

    // A paused destination throughout: the sender listens for news only while one exists (else
    // it looks every second), and each row's destination should start at once.
    let idle = create(&mut admin, &url, pb::EntityType::Plan, 1, 1).await?;
    admin
        .pause_destination(pb::PauseDestinationRequest {
            name: idle.name,
            reason: "bench: keeps the sender listening".into(),
        })
        .await
        .context("PauseDestination")?;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut timed = Timed {
        admin: &mut admin,
        receiver: &receiver,
        monitor: &monitor,
        url: &url,
        log_id: &log_id,
        probe,
    };
    let mut by_lanes: Vec<(usize, Duration, f64)> = Vec::new();
    for (delay, n) in [(Duration::ZERO, opts.changes), (opts.delay, opts.delayed_changes)] {
        receiver.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
        let label = match delay.is_zero() {
            true => String::new(),
            false => format!(", +{} ms a response", delay.as_millis()),
        };
        for &lanes in &opts.lanes {
            // Baseline: the same bodies, signed, `lanes` in flight.
            let secret = SigningSecret::generate();
            *receiver.secret.write().expect("not poisoned") = Some(svix::webhooks::Webhook::new(&secret.text())?);
            let (verified, refused) = (receiver.verified.load(Ordering::Relaxed), receiver.refused.load(Ordering::Relaxed));
            let started = Instant::now();
            let cpu = probe.cpu();
            post_loop(&url, &secret, &delivered_bodies[delivered_bodies.len() - n as usize..], lanes).await?;
            let (elapsed, cpu) = (started.elapsed(), probe.cpu() - cpu);
            let errors = receiver.refused.load(Ordering::Relaxed) - refused;
            let ok = receiver.verified.load(Ordering::Relaxed) - verified;
            let base = Row::new(format!("signed POSTs, {lanes} in flight{label}"), lanes, ok, errors, elapsed)
                .cpu(cpu)
                .baseline();

            let (elapsed, cpu, ok, errors) = timed.deliver(head - n as i64, head, lanes, 1).await?;
            let mut row = Row::new(format!("mirror, {lanes} lane(s){label}"), lanes, ok, errors, elapsed)
                .cpu(cpu)
                .note(format!("{:.2} ms of server CPU a delivery", cpu.server * 1000.0 / ok.max(1) as f64));
            row.versus(&base);
            if !delay.is_zero() {
                by_lanes.push((lanes, delay, row.per_second));
            }
            report.rows.push(base);
            report.rows.push(row);
        }
        if delay.is_zero() && opts.batch > 1 {
            // Batches: the same changes, `batch` a delivery, one lane (changes/s).
            let base = report.rows.iter().find(|r| r.baseline && r.concurrency == 1).cloned();
            let (elapsed, cpu, deliveries, errors) = timed.deliver(head - n as i64, head, 1, opts.batch).await?;
            let mut row = Row::new(format!("mirror, 1 lane, batches of {}", opts.batch), 1, n, errors, elapsed)
                .cpu(cpu)
                .note(format!("{deliveries} deliveries of up to {} changes; ops are changes", opts.batch));
            if let Some(base) = base {
                row.versus(&base);
            }
            report.rows.push(row);
        }
    }
    if let (Some(one), Some(most)) = (by_lanes.first(), by_lanes.last())
        && most.0 > one.0
    {
        report.targets.push(Target::at_least(
            format!(
                "deliveries/s with {} lanes vs 1 lane, at +{} ms a response",
                most.0,
                most.1.as_millis()
            ),
            most.2 / one.2.max(f64::MIN_POSITIVE),
            (most.0 as f64 / 2.0).max(1.0),
        ));
    }
    pool.close().await;
    monitor.close().await;
    server.stop().await?;
    Ok(report)
}

/// What timing a destination needs.
struct Timed<'a> {
    admin: &'a mut AdminServiceClient<tonic::transport::Channel>,
    receiver: &'a Receiver,
    monitor: &'a sqlx::PgPool,
    url: &'a str,
    log_id: &'a str,
    probe: Probe,
}

impl Timed<'_> {
    /// A destination made at the head (nothing to send), its secret handed to the receiver, then
    /// reset to `from`: timed until its cursor reaches `until`, then deleted. The elapsed time,
    /// the CPU, the deliveries verified and refused.
    async fn deliver(
        &mut self,
        from: i64,
        until: i64,
        lanes: usize,
        batch: i32,
    ) -> anyhow::Result<(Duration, super::stats::Cpu, u64, u64)> {
        let made = create(&mut *self.admin, self.url, pb::EntityType::User, lanes, batch).await?;
        *self.receiver.secret.write().expect("not poisoned") = Some(svix::webhooks::Webhook::new(&made.secret)?);
        let id = made.name.trim_start_matches("destinations/").to_string();
        let (verified, refused) = (
            self.receiver.verified.load(Ordering::Relaxed),
            self.receiver.refused.load(Ordering::Relaxed),
        );
        let started = Instant::now();
        let cpu = self.probe.cpu();
        self.admin
            .reset_destination(pb::ResetDestinationRequest {
                name: made.name.clone(),
                cursor: crate::pb::cursor::Cursor::new(self.log_id, from).encode(),
                ..Default::default()
            })
            .await
            .context("ResetDestination")?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let cursor: i64 = sqlx::query_scalar("SELECT min(c) FROM destinations, unnest(lane_cursors) c WHERE id = $1")
                .bind(&id)
                .fetch_one(self.monitor)
                .await?;
            if cursor >= until {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "{id} reached {cursor} of {until} in 10 minutes");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (elapsed, cpu) = (started.elapsed(), self.probe.cpu() - cpu);
        let ok = self.receiver.verified.load(Ordering::Relaxed) - verified;
        let errors = self.receiver.refused.load(Ordering::Relaxed) - refused;
        self.admin
            .delete_destination(pb::DeleteDestinationRequest { name: made.name })
            .await
            .context("DeleteDestination")?;
        Ok((elapsed, cpu, ok, errors))
    }
}

/// A destination to `url` of changes of `entity_type`, in `lanes` lanes of `batch`-change
/// deliveries, from the head.
async fn create(
    admin: &mut AdminServiceClient<tonic::transport::Channel>,
    url: &str,
    entity_type: pb::EntityType,
    lanes: usize,
    batch: i32,
) -> anyhow::Result<pb::Destination> {
    admin
        .create_destination(pb::CreateDestinationRequest {
            destination: Some(pb::Destination {
                url: url.to_string(),
                entity_types: vec![entity_type as i32],
                lanes: lanes as i32,
                batch_size: batch,
                ..Default::default()
            }),
        })
        .await
        .context("CreateDestination")?
        .into_inner()
        .destination
        .context("the server answered without a destination")
}

/// POSTs each body once, signed afresh, `in_flight` at a time, to `url`.
async fn post_loop(url: &str, secret: &SigningSecret, bodies: &[Bytes], in_flight: usize) -> anyhow::Result<()> {
    let policy = Policy {
        allow_private: true,
        own: Vec::new(),
    };
    let sender = Arc::new(client::Sender::new(url, policy, client::DELIVERY_TIMEOUT).map_err(|e| anyhow::anyhow!(e))?);
    let next = Arc::new(AtomicU64::new(0));
    let bodies: Arc<Vec<Bytes>> = Arc::new(bodies.to_vec());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let (sender, next, bodies, secret) = (sender.clone(), next.clone(), bodies.clone(), secret.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(body) = bodies.get(i) else { return };
                let id = format!("msg_bench_{i}");
                let headers = sign::headers(std::slice::from_ref(&secret), &id, chrono::Utc::now().timestamp(), body);
                sender.post(&headers, body.clone()).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

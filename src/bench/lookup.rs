//! `bench lookup`: GetUser, LookupUser(email), LookupMembership and BatchGetUsers(100) over
//! loopback gRPC against a loaded mirror, next to the same queries run by sqlx from this process
//! (the database's limit) and `grpc.health.v1.Health/Check` on the same server (the transport's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use super::env::{self, Postgres, Server};
use super::fixtures;
use super::load::measure;
use super::stats::{Report, Target};
use crate::ingest::writer::{self, InboxRow};
use crate::pb::directory_service_client::DirectoryServiceClient;
use crate::store::read;

#[derive(Debug, Clone)]
pub struct Options {
    pub users: u64,
    pub concurrency: Vec<usize>,
    pub duration: Duration,
}

/// The server's read pool (`serve`'s default); the direct-SQL baseline uses as many connections.
const READ_POOL: u32 = 16;

/// Most gRPC connections the load generator opens (streams are multiplexed over them).
const MAX_CHANNELS: usize = 8;

pub async fn run(pg: &Postgres, opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("lookup");
    let (db, server, probe) = pg.scenario("bench_lookup").await?;
    let pool = env::pool(&db.options, READ_POOL).await?;
    let d = Dataset::new(opts.users);
    let loaded = load(&pool, &env::monitor(&db.options).await?, &d).await?;
    report.setup(
        "data",
        format!(
            "{} users (~1.5 KB each, one email), {} organizations, {} memberships, loaded through the inbox and applier at {:.0} objects/s",
            d.users, d.organizations, d.memberships, loaded
        ),
    );
    report.setup(
        "clients",
        format!(
            "gRPC over loopback h2c, min(c, {MAX_CHANNELS}) connections; direct SQL: the server's own read functions (`store::read`) through a sqlx pool of {READ_POOL} (the server's read pool size)"
        ),
    );
    report.setup(
        "keys",
        "uniformly random existing users/memberships; BatchGet: 100 random users",
    );
    report.setup("postgres", pg.settings().await?);
    let warmup = opts.duration / 5;
    let d = Arc::new(d);
    for &c in &opts.concurrency {
        let channels = channels(&server, c.min(MAX_CHANNELS)).await?;
        let health = measure(probe, &format!("Health/Check c={c}"), c, warmup, opts.duration, {
            let channels = channels.clone();
            move |i| {
                let mut client = tonic_health::pb::health_client::HealthClient::new(pick(&channels, i));
                async move {
                    client.check(tonic_health::pb::HealthCheckRequest::default()).await?;
                    Ok(())
                }
            }
        })
        .await?
        .baseline();
        report.rows.push(health.clone());
        let pairs = ops(&pool, &channels, &d);
        for (name, sql, grpc) in pairs {
            let mut base = measure(probe, &format!("sql {name} c={c}"), c, warmup, opts.duration, sql)
                .await?
                .baseline();
            base.versus(&health);
            let mut row = measure(probe, &format!("gRPC {name} c={c}"), c, warmup, opts.duration, grpc).await?;
            row.versus(&base);
            row.versus(&health);
            if c == opts.concurrency.iter().copied().max().unwrap_or(c) {
                if name == "GetUser" {
                    report.targets.push(Target::at_least(
                        format!("GetUser at c={c} vs direct SQL"),
                        row.vs[0].1,
                        0.7,
                    ));
                }
                if name == "BatchGetUsers(100)" {
                    report.targets.push(Target::at_least(
                        format!("BatchGetUsers(100) at c={c} vs direct `= ANY($1)`"),
                        row.vs[0].1,
                        0.5,
                    ));
                }
            }
            report.rows.push(base);
            report.rows.push(row);
        }
    }
    report.fact(
        "BatchGetUsers(100) round trips",
        "one SQL statement per call (`unnest($1) … LEFT JOIN users`), the same function as the baseline",
    );
    pool.close().await;
    server.stop().await?;
    Ok(report)
}

/// Which objects exist.
#[derive(Debug, Clone, Copy)]
struct Dataset {
    users: u64,
    organizations: u64,
    memberships: u64,
}

impl Dataset {
    fn new(users: u64) -> Dataset {
        Dataset {
            users,
            organizations: (users / 100).max(10),
            memberships: (users / 5).max(10),
        }
    }

    /// Membership `m`: (organization, user).
    fn membership(&self, m: u64) -> (u64, u64) {
        (m % self.organizations, m % self.users)
    }
}

fn row(source_key: String, kind: &str, data: &serde_json::Value, t: i64) -> InboxRow {
    let body = serde_json::to_vec(&fixtures::event(kind, data, t)).expect("serialises");
    InboxRow {
        source: "bench".into(),
        event_key: source_key,
        event_type: Some(kind.into()),
        event_time: crate::store::records::time_from_ms(t),
        instance_id: Some(fixtures::INSTANCE.into()),
        body: Some(body.into()),
    }
}

/// Enqueues every object (organizations, users, then memberships) and waits until the applier
/// has applied them all; objects per second.
async fn load(pool: &sqlx::PgPool, monitor: &sqlx::PgPool, d: &Dataset) -> anyhow::Result<f64> {
    let started = Instant::now();
    let enqueue = |rows: Vec<InboxRow>| {
        let pool = pool.clone();
        async move {
            let refs: Vec<&InboxRow> = rows.iter().collect();
            writer::insert(&pool, &refs).await
        }
    };
    const CHUNK: u64 = 2000;
    for start in (0..d.organizations).step_by(CHUNK as usize) {
        let rows = (start..(start + CHUNK).min(d.organizations))
            .map(|i| {
                row(
                    format!("o{i}"),
                    "organization.created",
                    &fixtures::organization(i),
                    fixtures::T0 + i as i64,
                )
            })
            .collect();
        enqueue(rows).await?;
    }
    for start in (0..d.users).step_by(CHUNK as usize) {
        let rows = (start..(start + CHUNK).min(d.users))
            .map(|i| {
                row(
                    format!("u{i}"),
                    "user.created",
                    &fixtures::user(i, 1024),
                    fixtures::T0 + i as i64,
                )
            })
            .collect();
        enqueue(rows).await?;
    }
    for start in (0..d.memberships).step_by(CHUNK as usize) {
        let rows = (start..(start + CHUNK).min(d.memberships))
            .map(|m| {
                let (o, u) = d.membership(m);
                row(
                    format!("m{m}"),
                    "organizationMembership.created",
                    &fixtures::membership(m, o, u),
                    fixtures::T0 + m as i64,
                )
            })
            .collect();
        enqueue(rows).await?;
    }
    env::drained(monitor, Duration::from_millis(100)).await?;
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE status <> 'applied'")
        .fetch_one(pool)
        .await?;
    anyhow::ensure!(
        failed == 0,
        "{failed} benchmark objects were not applied (see `status`)"
    );
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok((d.users + d.organizations + d.memberships) as f64 / started.elapsed().as_secs_f64())
}

async fn channels(server: &Server, n: usize) -> anyhow::Result<Arc<Vec<Channel>>> {
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
        out.push(
            Endpoint::from_shared(server.grpc_url())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(Arc::new(out))
}

fn pick(channels: &[Channel], i: u64) -> Channel {
    channels[(i as usize) % channels.len()].clone()
}

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

/// One benchmarked operation, by op number.
type Op = Box<dyn Fn(u64) -> BoxFuture + Send + Sync>;

/// Each operation as (name, direct SQL, gRPC), keyed by the op number.
fn ops(pool: &sqlx::PgPool, channels: &Arc<Vec<Channel>>, d: &Arc<Dataset>) -> Vec<(&'static str, Op, Op)> {
    let user = {
        let d = d.clone();
        move |i: u64| fixtures::mix(i) % d.users
    };
    let mut out: Vec<(&'static str, Op, Op)> = Vec::new();
    let (p, ch) = (pool.clone(), channels.clone());
    out.push((
        "GetUser",
        Box::new({
            let (p, user) = (p.clone(), user.clone());
            move |i| {
                let (p, id) = (p.clone(), fixtures::user_id(user(i)));
                Box::pin(async move {
                    let s = read::users_by_id(&p, &[&id]).await?;
                    anyhow::ensure!(s.items[0].is_some(), "{id} not found");
                    Ok(())
                })
            }
        }),
        Box::new({
            let (ch, user) = (ch.clone(), user.clone());
            move |i| {
                let mut client = DirectoryServiceClient::new(pick(&ch, i));
                let name = format!("users/{}", fixtures::user_id(user(i)));
                Box::pin(async move {
                    client
                        .get_user(crate::pb::GetUserRequest {
                            name,
                            ..Default::default()
                        })
                        .await?;
                    Ok(())
                })
            }
        }),
    ));
    out.push((
        "LookupUser(email)",
        Box::new({
            let (p, user) = (p.clone(), user.clone());
            move |i| {
                let (p, email) = (p.clone(), fixtures::email(user(i)));
                Box::pin(async move {
                    let s = read::user_by_key(&p, &read::UserKey::Email(email)).await?;
                    anyhow::ensure!(s.items[0].is_some(), "not found");
                    Ok(())
                })
            }
        }),
        Box::new({
            let (ch, user) = (ch.clone(), user.clone());
            move |i| {
                let mut client = DirectoryServiceClient::new(pick(&ch, i));
                let email = fixtures::email(user(i));
                Box::pin(async move {
                    client
                        .lookup_user(crate::pb::LookupUserRequest {
                            key: Some(crate::pb::lookup_user_request::Key::Email(email)),
                            ..Default::default()
                        })
                        .await?;
                    Ok(())
                })
            }
        }),
    ));
    let membership = {
        let d = d.clone();
        move |i: u64| d.membership(fixtures::mix(i) % d.memberships)
    };
    out.push((
        "LookupMembership",
        Box::new({
            let (p, membership) = (p.clone(), membership.clone());
            move |i| {
                let p = p.clone();
                let (o, u) = membership(i);
                let (o, u) = (fixtures::organization_id(o), fixtures::user_id(u));
                Box::pin(async move {
                    let s = read::membership_of(&p, &o, &u).await?;
                    anyhow::ensure!(s.items[0].is_some(), "not found");
                    Ok(())
                })
            }
        }),
        Box::new({
            let (ch, membership) = (ch.clone(), membership.clone());
            move |i| {
                let mut client = DirectoryServiceClient::new(pick(&ch, i));
                let (o, u) = membership(i);
                let request = crate::pb::LookupMembershipRequest {
                    organization: format!("organizations/{}", fixtures::organization_id(o)),
                    user: format!("users/{}", fixtures::user_id(u)),
                    ..Default::default()
                };
                Box::pin(async move {
                    client.lookup_membership(request).await?;
                    Ok(())
                })
            }
        }),
    ));
    let hundred = {
        let d = d.clone();
        move |i: u64| -> Vec<String> {
            (0..100)
                .map(|k| fixtures::user_id(fixtures::mix(i * 100 + k) % d.users))
                .collect()
        }
    };
    out.push((
        "BatchGetUsers(100)",
        Box::new({
            let (p, hundred) = (p.clone(), hundred.clone());
            move |i| {
                let (p, ids) = (p.clone(), hundred(i));
                Box::pin(async move {
                    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                    let s = read::users_by_id(&p, &refs).await?;
                    anyhow::ensure!(s.items.iter().all(Option::is_some), "not found");
                    Ok(())
                })
            }
        }),
        Box::new({
            let (ch, hundred) = (ch.clone(), hundred.clone());
            move |i| {
                let mut client = DirectoryServiceClient::new(pick(&ch, i));
                let names = hundred(i).into_iter().map(|id| format!("users/{id}")).collect();
                Box::pin(async move {
                    let r = client
                        .batch_get_users(crate::pb::BatchGetUsersRequest {
                            names,
                            ..Default::default()
                        })
                        .await?;
                    anyhow::ensure!(r.get_ref().users.len() == 100, "not every user was returned");
                    Ok(())
                })
            }
        }),
    ));
    out
}

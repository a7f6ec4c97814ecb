//! `bench lookup`: GetUser, LookupUser(email), LookupMembership, BatchGetUsers(100) and
//! CheckPermission over loopback gRPC against a loaded mirror — from the replica's read cache (the default
//! `minimize_latency`) and from PostgreSQL (`fully_consistent`) — next to the same queries run by
//! sqlx from this process (the database's limit) and `grpc.health.v1.Health/Check` on the same
//! server (the transport's); CheckEntitlement from memory through h2load (one organization in
//! ten pays for Pro or Team, the rest are on the default plan). Also what the cache costs in
//! memory: accounted bytes and RSS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use super::env::{self, Postgres, Server};
use super::fixtures;
use super::load::measure;
use super::stats::{Report, Row, Target};
use crate::inbox::{self, InboxRow, Source};
use crate::pb::directory_service_client::DirectoryServiceClient;
use crate::store::{access, read};

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
    let head = read::head(&pool).await?;
    cache_loaded(&server, head).await?;
    report.setup(
        "data",
        format!(
            "{} users (~1.5 KB each, one email), {} organizations, {} memberships (every tenth `org:admin`, the others `org:member`), {} roles granting {} permissions, loaded through the inbox and applier at {:.0} objects/s",
            d.users,
            d.organizations,
            d.memberships,
            fixtures::ROLES.len(),
            fixtures::PERMISSIONS.len(),
            loaded
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
        format!(
            "uniformly random existing users/memberships; BatchGet: 100 random users; CheckPermission: a random membership's organization and user and one of the {} permission keys at random ({:.0} % allowed by the memberships' roles; every answer is checked against that and must come from the role, `CHECK_SOURCE_ROLE`, else the call counts as an error)",
            fixtures::PERMISSIONS.len(),
            100.0 * allowed_share(&Arc::new(d)),
        ),
    );
    report.setup("postgres", pg.settings().await?);
    report.setup(
        "consistency",
        "`gRPC memory`: no `consistency` (minimize_latency: the replica's read cache); `gRPC fully_consistent`: the read index (the log's head learned by one query shared by concurrent reads, then the cache once it has applied it; PostgreSQL when it cannot answer)",
    );
    let warmup = opts.duration / 5;
    let pgbench = super::pgbench::find()?;
    let h2load = super::h2load::find()?;
    // The user's own limit for a point read: PostgreSQL's C client, one prepared statement.
    let pgbench_get_user = format!(
        "\\set n random(0, {})\nSELECT data FROM users WHERE id = 'user_bench' || lpad(:n::text, 20, '0');\n",
        d.users - 1
    );
    report.setup(
        "pgbench",
        format!(
            "`pgbench -M prepared -n -c C -j min(C, 2)` of `SELECT data FROM users WHERE id = 'user_bench' || lpad(:n::text, 20, '0')` with `:n` uniformly random ({}), latencies from its per-transaction log; its CPU is the `bench` column",
            pgbench.display()
        ),
    );
    let d = Arc::new(d);
    // A second replica on the same database with its read cache off: every read is PostgreSQL's.
    let uncached = Server::start(&db, &["--read-cache-bytes", "0"]).await?;
    let c_client = CClientCalls::new(&server, &uncached, &d).await?;
    let uncached_probe = env::Probe {
        server: Some(uncached.pid),
        ..probe
    };
    report.setup(
        "cache off",
        "`gRPC cache off GetUser`: a second `serve` on the same database with `--read-cache-bytes 0` (its reads are PostgreSQL's), driven by the Rust client; its CPU is that server's",
    );
    report.setup(
        "h2load",
        "`h2load -t 1 -c min(C, 8) -m ⌈C / connections⌉` (nghttp2's C client) repeating one fixed request: Health/Check; GetUser of one user and CheckPermission of one membership, from memory (no `consistency`); GetUser of that user `fully_consistent`, and through the cache-off replica (the C-client counterparts of the `pgbench` row, which reads a random user); each answer checked once through the Rust client first; the CPU per call of the server (the cache-off one for its row) and of PostgreSQL in the notes",
    );
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
        let pgbench_name = format!("pgbench -M prepared GetUser c={c}");
        let pgbench_row = || {
            super::pgbench::run(
                &pgbench,
                &db,
                probe,
                &pgbench_name,
                &pgbench_get_user,
                c,
                warmup,
                opts.duration,
            )
        };
        let mut prepared = pgbench_row().await?.baseline();
        prepared.versus(&health);
        report.rows.push(prepared.clone());
        let top = c == opts.concurrency.iter().copied().max().unwrap_or(c);
        let mut cache_off = Vec::new();
        for (name, sql, memory, postgres) in ops(&pool, &channels, &d) {
            let mut base = measure(probe, &format!("sql {name} c={c}"), c, warmup, opts.duration, sql)
                .await?
                .baseline();
            base.versus(&health);
            let mut from_memory = measure(
                probe,
                &format!("gRPC memory {name} c={c}"),
                c,
                warmup,
                opts.duration,
                memory,
            )
            .await?;
            from_memory.versus(&base);
            from_memory.versus(&health);
            let mut from_postgres = measure(
                probe,
                &format!("gRPC fully_consistent {name} c={c}"),
                c,
                warmup,
                opts.duration,
                postgres,
            )
            .await?;
            from_postgres.versus(&base);
            from_postgres.versus(&health);
            if name == "GetUser" {
                from_memory.versus(&prepared);
                from_postgres.versus(&prepared);
                let uncached_channels = self::channels(&uncached, c.min(MAX_CHANNELS)).await?;
                let user = user_of(&d);
                let mut off = measure(
                    uncached_probe,
                    &format!("gRPC cache off GetUser c={c}"),
                    c,
                    warmup,
                    opts.duration,
                    move |i| {
                        let mut client = DirectoryServiceClient::new(pick(&uncached_channels, i));
                        let request = crate::pb::GetUserRequest {
                            name: format!("users/{}", fixtures::user_id(user(i))),
                            ..Default::default()
                        };
                        async move {
                            client.get_user(request).await?;
                            Ok(())
                        }
                    },
                )
                .await?;
                off.versus(&prepared);
                off.versus(&base);
                if top {
                    report.targets.push(Target::at_least(
                        format!("GetUser at c={c} with the read cache off (Rust client) vs pgbench -M prepared (#24)"),
                        off.vs[0].1,
                        0.35,
                    ));
                }
                cache_off.push(off);
            }
            if name == "CheckPermission" {
                if c == 1 {
                    report.targets.push(Target::at_most(
                        "CheckPermission at c=1 from memory: p99 in ms",
                        from_memory.p99_ms,
                        1.0,
                    ));
                }
                if top {
                    let (throughput, _) = ratio(&from_memory, &health);
                    report.targets.push(Target::at_least(
                        format!("CheckPermission at c={c} from memory vs Health/Check: throughput"),
                        throughput,
                        0.9,
                    ));
                }
            } else if top {
                report.targets.push(Target::at_least(
                    format!("{name} at c={c} from memory vs direct SQL"),
                    from_memory.vs[0].1,
                    1.5,
                ));
                if name == "GetUser" {
                    report.targets.push(Target::at_least(
                        format!("GetUser at c={c} fully_consistent (read index) vs direct SQL"),
                        from_postgres.vs[0].1,
                        0.7,
                    ));
                    report.targets.push(Target::at_least(
                        format!("GetUser at c={c} fully_consistent (Rust client) vs pgbench -M prepared (#24)"),
                        from_postgres.vs[2].1,
                        0.9,
                    ));
                }
                if name == "BatchGetUsers(100)" {
                    report.targets.push(Target::at_least(
                        format!("BatchGetUsers(100) at c={c} fully_consistent vs direct `= ANY($1)`"),
                        from_postgres.vs[0].1,
                        0.5,
                    ));
                }
            }
            report.rows.push(base);
            report.rows.push(from_memory);
            report.rows.push(from_postgres);
        }
        report.rows.append(&mut cache_off);
        // The same server driven by a C client: what it serves when the load generator's CPU
        // is not the Rust client's.
        let (url, uncached_url) = (server.grpc_url(), uncached.grpc_url());
        let row_of = |name: &str, method: &'static str, body: Vec<u8>, url: &str, probe: env::Probe| {
            let (h2load, url, name) = (h2load.clone(), url.to_string(), format!("h2load {name} c={c}"));
            async move {
                let row = super::h2load::run(&h2load, &url, probe, &name, method, &body, c, warmup, opts.duration).await?;
                let per_call = row.cpu.server / row.ops.max(1) as f64 * 1e6;
                let per_call_pg = row.cpu.postgres.unwrap_or(0.0) / row.ops.max(1) as f64 * 1e6;
                anyhow::Ok(row.note(format!(
                    "CPU per call: server {per_call:.1} µs, PostgreSQL {per_call_pg:.1} µs"
                )))
            }
        };
        let row = |name: &str, method: &'static str, body: Vec<u8>| row_of(name, method, body, &url, probe);
        // The C-client rows, in this order: one round (`pgbench`: with its own pgbench row, run
        // between the memory rows and the PostgreSQL-bound ones, as the first round's is).
        let c_rows = async |pgbench: bool| -> anyhow::Result<CRows> {
            Ok(CRows {
                health: row("Health/Check", "/grpc.health.v1.Health/Check", c_client.health.clone()).await?,
                get: row("gRPC memory GetUser", "/clerkmirror.v1.DirectoryService/GetUser", c_client.get_user.clone()).await?,
                check: row(
                    "gRPC memory CheckPermission",
                    "/clerkmirror.v1.DirectoryService/CheckPermission",
                    c_client.check.clone(),
                )
                .await?,
                entitlement: row(
                    "gRPC memory CheckEntitlement",
                    "/clerkmirror.v1.BillingService/CheckEntitlement",
                    c_client.entitlement.clone(),
                )
                .await?,
                prepared: match pgbench {
                    true => Some(pgbench_row().await?),
                    false => None,
                },
                // The PostgreSQL-bound reads, against PostgreSQL's own C client (pgbench).
                consistent: row(
                    "gRPC fully_consistent GetUser",
                    "/clerkmirror.v1.DirectoryService/GetUser",
                    c_client.get_user_consistent.clone(),
                )
                .await?,
                off: row_of(
                    "gRPC cache off GetUser",
                    "/clerkmirror.v1.DirectoryService/GetUser",
                    c_client.get_user.clone(),
                    &uncached_url,
                    uncached_probe,
                )
                .await?,
            })
        };
        let first = c_rows(false).await?;
        let round = Round::of(&first, &prepared);
        let CRows { health, mut get, mut check, mut entitlement, mut consistent, mut off, .. } = first;
        let health = health.baseline();
        get.versus(&health);
        check.versus(&health);
        entitlement.versus(&health);
        consistent.versus(&prepared);
        consistent.versus(&health);
        off.versus(&prepared);
        if c == opts.concurrency.iter().copied().max().unwrap_or(c) {
            // One round of rows swings with the machine (±0.1× or more between runs): the rows
            // again, interleaved, each ratio the median over the rounds.
            let mut rounds = vec![round];
            for _ in 1..ROUNDS {
                let r = c_rows(true).await?;
                rounds.push(Round::of(&r, r.prepared.as_ref().expect("asked for")));
            }
            report.fact(
                &format!("#22's, #24's and #25's C-client ratios in {ROUNDS} interleaved rounds (c={c})"),
                rounds
                    .iter()
                    .map(|r| {
                        format!(
                            "GetUser from memory {:.2}× Health/Check at {:+.1} µs of server CPU per call, fully_consistent {:.2}× pgbench, cache off {:.2}×; CheckEntitlement from memory {:.2}× Health/Check; CheckPermission from memory {:.2}× Health/Check",
                            r.memory, r.above, r.consistent, r.off, r.entitlement, r.permission
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            let median = |f: fn(&Round) -> f64| {
                let mut v: Vec<f64> = rounds.iter().map(f).collect();
                v.sort_by(f64::total_cmp);
                (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
            };
            report.targets.push(Target::at_least(
                format!("GetUser at c={c} from memory vs Health/Check, both from h2load (#24): throughput, median of {ROUNDS} rounds"),
                median(|r| r.memory),
                0.9,
            ));
            report.targets.push(Target::at_most(
                format!("GetUser at c={c} from memory: server CPU per call above Health/Check's, in µs (#24), median of {ROUNDS} rounds"),
                median(|r| r.above),
                3.0,
            ));
            report.targets.push(Target::at_least(
                format!("GetUser at c={c} fully_consistent vs pgbench -M prepared, both C clients (h2load, pgbench) (#24), median of {ROUNDS} rounds"),
                median(|r| r.consistent),
                0.9,
            ));
            report.targets.push(Target::at_least(
                format!("GetUser at c={c} with the read cache off vs pgbench -M prepared, both C clients (#24), median of {ROUNDS} rounds"),
                median(|r| r.off),
                0.35,
            ));
            report.targets.push(Target::at_least(
                format!("CheckEntitlement at c={c} from memory vs Health/Check, both from h2load (#25): throughput, median of {ROUNDS} rounds"),
                median(|r| r.entitlement),
                0.9,
            ));
            report.targets.push(Target::at_least(
                format!("CheckPermission at c={c} from memory vs Health/Check, both from h2load (#22): throughput, median of {ROUNDS} rounds"),
                median(|r| r.permission),
                0.9,
            ));
        }
        if c == 1 {
            report.targets.push(Target::at_most(
                "CheckEntitlement at c=1 from memory (h2load): p99 in ms (#25)",
                entitlement.p99_ms,
                1.0,
            ));
        }
        report.rows.extend([health, get, check, entitlement, consistent, off]);
    }
    let hits = server
        .metric("clerk_mirror_read_cache_reads_total", "outcome=\"hit\"")
        .await?;
    let fallbacks = server
        .metric("clerk_mirror_read_cache_reads_total", "outcome=\"fallback\"")
        .await?;
    report.fact(
        "read cache answers during the run",
        format!("{:.0} hits, {:.0} fallbacks to PostgreSQL", hits.abs(), fallbacks.abs()),
    );
    memory_cost(&mut report, &db, &server, &d).await?;
    report.fact(
        "BatchGetUsers(100) round trips",
        "one SQL statement per call (`unnest($1) … LEFT JOIN users`), the same function as the baseline",
    );
    pool.close().await;
    uncached.stop().await?;
    server.stop().await?;
    Ok(report)
}

/// `row`'s ratio (throughput, p99) to `base`, as recorded by `versus`.
fn ratio(row: &super::stats::Row, base: &super::stats::Row) -> (f64, f64) {
    row.vs
        .iter()
        .find(|(b, _, _)| *b == base.name)
        .map_or((f64::NAN, f64::NAN), |(_, t, p)| (*t, *p))
}

/// Waits until the server's read cache has applied `head` (it loads and follows in the
/// background; reads went to PostgreSQL meanwhile).
/// Rounds of #24's C-client rows (Health/Check, GetUser from memory, pgbench, GetUser
/// fully_consistent and cache off) behind its targets: the first is the table's.
const ROUNDS: usize = 3;

/// #24's ratios in one round.
/// One round of the C-client rows (h2load; the cache-off row against its replica).
struct CRows {
    health: Row,
    get: Row,
    check: Row,
    entitlement: Row,
    /// The round's own pgbench row, when it measures one.
    prepared: Option<Row>,
    consistent: Row,
    off: Row,
}

struct Round {
    memory: f64,
    above: f64,
    consistent: f64,
    off: f64,
    /// CheckEntitlement from memory ÷ Health/Check (#25).
    entitlement: f64,
    /// CheckPermission from memory ÷ Health/Check (#22).
    permission: f64,
}

impl Round {
    /// The ratios of one round, `prepared` the pgbench row measured with it.
    fn of(r: &CRows, prepared: &Row) -> Round {
        let per_call = |r: &Row| r.cpu.server / r.ops.max(1) as f64 * 1e6;
        let over = |a: &Row, b: &Row| a.per_second / b.per_second;
        Round {
            memory: over(&r.get, &r.health),
            above: per_call(&r.get) - per_call(&r.health),
            consistent: over(&r.consistent, prepared),
            off: over(&r.off, prepared),
            entitlement: over(&r.entitlement, &r.health),
            permission: over(&r.check, &r.health),
        }
    }
}

pub(super) async fn cache_loaded(server: &Server, head: i64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let cursor = server.metric("clerk_mirror_read_cache", "what=\"cursor\"").await?;
        let complete = server.metric("clerk_mirror_read_cache", "what=\"complete\"").await?;
        if cursor as i64 >= head && complete == 1.0 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the read cache did not reach {head} in 10 min (at {cursor}, complete {complete})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the cache costs: its accounted bytes per user, and the RSS of a server that loads it
/// next to one without it, on the same data.
async fn memory_cost(report: &mut Report, db: &env::Database, server: &Server, d: &Dataset) -> anyhow::Result<()> {
    let bytes = server.metric("clerk_mirror_read_cache", "what=\"bytes\"").await?;
    let (head, encoded) = {
        let pool = env::pool(&db.options, 1).await?;
        let head = read::head(&pool).await?;
        let log_id = read::log_id(&pool).await?;
        let encoded = encoded_bytes::<crate::store::UserRecord>(&pool, &log_id).await?
            + encoded_bytes::<crate::store::OrganizationRecord>(&pool, &log_id).await?
            + encoded_bytes::<crate::store::MembershipRecord>(&pool, &log_id).await?;
        pool.close().await;
        (head, encoded)
    };
    let without = Server::start(db, &["--read-cache-bytes", "0"]).await?;
    // Both servers have served nothing: their RSS differs by the cache (and the load's garbage).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_without = without.rss();
    without.stop().await?;
    let with = Server::start(db, &[]).await?;
    let load_time = cache_loaded(&with, head).await?;
    let rss_with = with.rss();
    with.stop().await?;
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let rss_per_user = (rss_with as f64 - rss_without as f64) / d.users as f64;
    let encoded_per_user = encoded as f64 / d.users as f64;
    report.fact(
        "read cache memory against the encoded entities",
        format!(
            "users, organizations and memberships encode to {encoded_per_user:.0} bytes per user ({:.1} MiB); the cache's RSS per user is {:.0} bytes above that",
            mib(encoded as f64),
            rss_per_user - encoded_per_user
        ),
    );
    report.targets.push(Target::at_most(
        "read cache RSS per user above its entities' encoded size, in bytes (#24)",
        rss_per_user - encoded_per_user,
        400.0,
    ));
    report.fact(
        "read cache memory",
        format!(
            "{:.0} accounted bytes per user ({:.1} MiB for {} users, {} organizations, {} memberships); RSS {:.1} MiB without the cache, {:.1} MiB with it loaded: {:.0} bytes per user; loaded in {:.1} s (one REPEATABLE READ snapshot, pages of 1,000)",
            bytes / d.users as f64,
            mib(bytes),
            d.users,
            d.organizations,
            d.memberships,
            mib(rss_without as f64),
            mib(rss_with as f64),
            (rss_with as f64 - rss_without as f64) / d.users as f64,
            load_time.as_secs_f64(),
        ),
    );
    Ok(())
}

/// The encoded size of every `K` the projections hold, as a read sends it.
async fn encoded_bytes<K: crate::store::Kind + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>>(
    pool: &sqlx::PgPool,
    log_id: &str,
) -> anyhow::Result<usize> {
    use prost::Message;
    use sqlx::Row;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {}", K::TABLE)))
        .fetch_all(pool)
        .await?;
    let mut total = 0;
    for row in &rows {
        let record = K::from_row(row)?;
        total += record.message(row.try_get("update_cursor")?, log_id).encoded_len();
    }
    Ok(total)
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
        source: Source::Bench,
        event_key: source_key,
        event_type: Some(kind.into()),
        event_time: crate::store::records::time_from_ms(t),
        instance_id: Some(fixtures::INSTANCE.into()),
        body: Some(body.into()),
        trace_context: None,
    }
}

/// Enqueues every object (permissions, roles, organizations, users, then memberships) and waits
/// until the applier has applied them all; objects per second.
async fn load(pool: &sqlx::PgPool, monitor: &sqlx::PgPool, d: &Dataset) -> anyhow::Result<f64> {
    let started = Instant::now();
    let enqueue = |rows: Vec<InboxRow>| {
        let pool = pool.clone();
        async move {
            let refs: Vec<&InboxRow> = rows.iter().collect();
            inbox::insert(&pool, &refs).await
        }
    };
    enqueue(
        (0..fixtures::PERMISSIONS.len())
            .map(|i| {
                row(
                    format!("p{i}"),
                    "permission.created",
                    &fixtures::permission(i),
                    fixtures::T0,
                )
            })
            .chain(
                (0..fixtures::ROLES.len())
                    .map(|i| row(format!("r{i}"), "role.created", &fixtures::role(i), fixtures::T0)),
            )
            .chain((0..fixtures::PLANS.len()).map(|i| {
                row(format!("pl{i}"), crate::store::plans::LISTED, &fixtures::plan(i), fixtures::T0)
            }))
            .collect(),
    )
    .await?;
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
    let items: Vec<InboxRow> = (0..d.organizations)
        .filter_map(|o| {
            let plan = fixtures::paid_plan(o)?;
            Some(row(format!("si{o}"), "subscriptionItem.active", &fixtures::subscription_item(o, plan), fixtures::T0 + o as i64))
        })
        .collect();
    let paying = items.len() as u64;
    for chunk in items.chunks(CHUNK as usize) {
        enqueue(chunk.to_vec()).await?;
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
    let objects = d.users
        + d.organizations
        + d.memberships
        + paying
        + (fixtures::PERMISSIONS.len() + fixtures::ROLES.len() + fixtures::PLANS.len()) as u64;
    Ok(objects as f64 / started.elapsed().as_secs_f64())
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

/// Each operation as (name, direct SQL, gRPC from memory, gRPC from PostgreSQL), keyed by the op
/// number.
fn ops(pool: &sqlx::PgPool, channels: &Arc<Vec<Channel>>, d: &Arc<Dataset>) -> Vec<(&'static str, Op, Op, Op)> {
    let fully = Some(crate::pb::Consistency {
        requirement: Some(crate::pb::consistency::Requirement::FullyConsistent(true)),
    });
    sql_ops(pool, d)
        .into_iter()
        .zip(grpc_ops(channels, d, None))
        .zip(grpc_ops(channels, d, fully))
        .map(|(((name, sql), (_, memory)), (_, postgres))| (name, sql, memory, postgres))
        .collect()
}

/// The random user of op `i`.
fn user_of(d: &Arc<Dataset>) -> impl Fn(u64) -> u64 + Clone + Send + Sync + 'static {
    let d = d.clone();
    move |i: u64| fixtures::mix(i) % d.users
}

/// The random membership (organization, user) of op `i`.
fn membership_of(d: &Arc<Dataset>) -> impl Fn(u64) -> (u64, u64) + Clone + Send + Sync + 'static {
    let d = d.clone();
    move |i: u64| d.membership(fixtures::mix(i) % d.memberships)
}

/// One permission check: organization id, user id, permission key, and whether the membership's
/// role grants it.
#[derive(Debug, Clone)]
struct CheckCase {
    organization: String,
    user: String,
    permission: &'static str,
    allowed: bool,
}

/// The random check of op `i`: a random membership's organization and user, and a random one of
/// the instance's permission keys (drawn from another hash of `i`).
fn check_of(d: &Arc<Dataset>) -> impl Fn(u64) -> CheckCase + Clone + Send + Sync + 'static {
    let d = d.clone();
    move |i: u64| {
        let m = fixtures::mix(i) % d.memberships;
        let (o, u) = d.membership(m);
        let permission =
            fixtures::PERMISSIONS[(fixtures::mix(i ^ 0x5EED_C4EC) % fixtures::PERMISSIONS.len() as u64) as usize].1;
        CheckCase {
            organization: fixtures::organization_id(o),
            user: fixtures::user_id(u),
            permission,
            allowed: fixtures::role_grants(fixtures::membership_role(m), permission),
        }
    }
}

/// The fixed requests the C client (h2load) repeats, as gRPC frames, each answered correctly
/// once through the Rust client first.
struct CClientCalls {
    health: Vec<u8>,
    get_user: Vec<u8>,
    get_user_consistent: Vec<u8>,
    check: Vec<u8>,
    /// CheckEntitlement of `sso` for organization 0 (on Pro: granted by its item).
    entitlement: Vec<u8>,
}

impl CClientCalls {
    async fn new(server: &Server, uncached: &Server, d: &Arc<Dataset>) -> anyhow::Result<CClientCalls> {
        use super::h2load::frame;
        let channel = Endpoint::from_shared(server.grpc_url())?.connect().await?;
        let mut client = DirectoryServiceClient::new(channel);
        let mut uncached = DirectoryServiceClient::new(Endpoint::from_shared(uncached.grpc_url())?.connect().await?);
        let get_user = crate::pb::GetUserRequest {
            name: format!("users/{}", fixtures::user_id(0)),
            ..Default::default()
        };
        let get_user_consistent = crate::pb::GetUserRequest {
            consistency: Some(crate::pb::Consistency {
                requirement: Some(crate::pb::consistency::Requirement::FullyConsistent(true)),
            }),
            ..get_user.clone()
        };
        for (request, cached) in [(&get_user, true), (&get_user_consistent, true), (&get_user, false)] {
            let client = if cached { &mut client } else { &mut uncached };
            let user = client.get_user(request.clone()).await?.into_inner().user;
            anyhow::ensure!(user.is_some_and(|u| u.id == fixtures::user_id(0)), "GetUser of the C client's user failed");
        }
        let case = check_of(d)(0);
        let check = crate::pb::CheckPermissionRequest {
            organization: format!("organizations/{}", case.organization),
            user: format!("users/{}", case.user),
            permission: case.permission.to_string(),
            consistency: None,
        };
        let r = client.check_permission(check.clone()).await?.into_inner();
        verify(&case, r.allowed, r.source())?;
        let entitlement = crate::pb::CheckEntitlementRequest {
            payer: format!("organizations/{}", fixtures::organization_id(0)),
            feature: "sso".into(),
            consistency: None,
        };
        let mut billing =
            crate::pb::billing_service_client::BillingServiceClient::new(Endpoint::from_shared(server.grpc_url())?.connect().await?);
        let r = billing.check_entitlement(entitlement.clone()).await?.into_inner();
        anyhow::ensure!(
            r.entitled && r.source() == crate::pb::EntitlementSource::SubscriptionItem,
            "CheckEntitlement of the C client's organization answered {r:?}, not entitled by its item"
        );
        Ok(CClientCalls {
            health: frame(&tonic_health::pb::HealthCheckRequest::default()),
            get_user: frame(&get_user),
            get_user_consistent: frame(&get_user_consistent),
            check: frame(&check),
            entitlement: frame(&entitlement),
        })
    }
}

/// The share of checks the roles allow, over the first 100,000 op numbers.
fn allowed_share(d: &Arc<Dataset>) -> f64 {
    let check = check_of(d);
    let n = 100_000;
    (0..n).filter(|&i| check(i).allowed).count() as f64 / n as f64
}

/// Whether a check's answer is the one the fixtures' roles give, from the role.
fn verify(case: &CheckCase, allowed: bool, source: crate::pb::CheckSource) -> anyhow::Result<()> {
    anyhow::ensure!(
        source == crate::pb::CheckSource::Role,
        "{} in {} for {}: answered from {source:?}, not the role",
        case.user,
        case.organization,
        case.permission
    );
    anyhow::ensure!(
        allowed == case.allowed,
        "{} in {} for {}: allowed={allowed}, the role says {}",
        case.user,
        case.organization,
        case.permission,
        case.allowed
    );
    Ok(())
}

/// The 100 random users of op `i`.
fn hundred_of(d: &Arc<Dataset>) -> impl Fn(u64) -> Vec<String> + Clone + Send + Sync + 'static {
    let d = d.clone();
    move |i: u64| -> Vec<String> {
        (0..100)
            .map(|k| fixtures::user_id(fixtures::mix(i * 100 + k) % d.users))
            .collect()
    }
}

/// The direct-SQL baselines: the server's own read functions from this process, on connections
/// lent as the server lends them.
fn sql_ops(pool: &sqlx::PgPool, d: &Arc<Dataset>) -> Vec<(&'static str, Op)> {
    let (user, membership, hundred) = (user_of(d), membership_of(d), hundred_of(d));
    let p = Arc::new(crate::lender::Lender::new(
        (*pool.connect_options()).clone(),
        pool.options().get_max_connections() as usize,
        pool.options().get_acquire_timeout(),
    ));
    let mut out: Vec<(&'static str, Op)> = Vec::new();
    out.push(("GetUser", {
        let (p, user) = (p.clone(), user.clone());
        Box::new(move |i| {
            let (p, id) = (p.clone(), fixtures::user_id(user(i)));
            Box::pin(async move {
                let mut lent = p.lend().await?;
                let s = read::by_id::<crate::store::UserRecord>(lent.connection(), &id).await?;
                lent.returned();
                anyhow::ensure!(s.items[0].is_some(), "{id} not found");
                Ok(())
            })
        })
    }));
    out.push(("LookupUser(email)", {
        let (p, user) = (p.clone(), user.clone());
        Box::new(move |i| {
            let (p, email) = (p.clone(), fixtures::email(user(i)));
            Box::pin(async move {
                let mut lent = p.lend().await?;
                let s = read::user_by_key(lent.connection(), &read::UserKey::Email(email)).await?;
                lent.returned();
                anyhow::ensure!(s.items[0].is_some(), "not found");
                Ok(())
            })
        })
    }));
    out.push(("LookupMembership", {
        let p = p.clone();
        Box::new(move |i| {
            let p = p.clone();
            let (o, u) = membership(i);
            let (o, u) = (fixtures::organization_id(o), fixtures::user_id(u));
            Box::pin(async move {
                let mut lent = p.lend().await?;
                let s = read::membership_of(lent.connection(), &o, &u).await?;
                lent.returned();
                anyhow::ensure!(s.items[0].is_some(), "not found");
                Ok(())
            })
        })
    }));
    out.push(("BatchGetUsers(100)", {
        let p = p.clone();
        Box::new(move |i| {
            let (p, ids) = (p.clone(), hundred(i));
            Box::pin(async move {
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let mut lent = p.lend().await?;
                let s = read::users_by_id(lent.connection(), &refs).await?;
                lent.returned();
                anyhow::ensure!(s.items.iter().all(Option::is_some), "not found");
                Ok(())
            })
        })
    }));
    out.push(("CheckPermission", {
        let check = check_of(d);
        let pool = pool.clone();
        Box::new(move |i| {
            let (p, case) = (pool.clone(), check(i));
            Box::pin(async move {
                let mut conn = p.acquire().await?;
                let (standings, _) = read::standings(&mut conn, &[(&case.organization, &case.user, case.permission)]).await?;
                let standing = standings.first().ok_or_else(|| anyhow::anyhow!("no standing"))?;
                // The server's own decision (Billing gates off, `serve`'s default).
                let v = access::check(standing, case.permission, access::Gate::Off);
                verify(&case, v.allowed, v.source)
            })
        })
    }));
    out
}

/// The same reads through the server, with `consistency`, in the order of `sql_ops`.
// Request literals end with `..Default::default()` even when every field is set today.
#[allow(clippy::needless_update)]
fn grpc_ops(
    channels: &Arc<Vec<Channel>>,
    d: &Arc<Dataset>,
    consistency: Option<crate::pb::Consistency>,
) -> Vec<(&'static str, Op)> {
    let (user, membership, hundred) = (user_of(d), membership_of(d), hundred_of(d));
    let ch = channels.clone();
    let mut out: Vec<(&'static str, Op)> = Vec::new();
    out.push(("GetUser", {
        let (ch, user, consistency) = (ch.clone(), user.clone(), consistency.clone());
        Box::new(move |i| {
            let mut client = DirectoryServiceClient::new(pick(&ch, i));
            let request = crate::pb::GetUserRequest {
                name: format!("users/{}", fixtures::user_id(user(i))),
                consistency: consistency.clone(),
                ..Default::default()
            };
            Box::pin(async move {
                client.get_user(request).await?;
                Ok(())
            })
        })
    }));
    out.push(("LookupUser(email)", {
        let (ch, user, consistency) = (ch.clone(), user.clone(), consistency.clone());
        Box::new(move |i| {
            let mut client = DirectoryServiceClient::new(pick(&ch, i));
            let request = crate::pb::LookupUserRequest {
                key: Some(crate::pb::lookup_user_request::Key::Email(fixtures::email(user(i)))),
                consistency: consistency.clone(),
                ..Default::default()
            };
            Box::pin(async move {
                client.lookup_user(request).await?;
                Ok(())
            })
        })
    }));
    out.push(("LookupMembership", {
        let (ch, consistency) = (ch.clone(), consistency.clone());
        Box::new(move |i| {
            let mut client = DirectoryServiceClient::new(pick(&ch, i));
            let (o, u) = membership(i);
            let request = crate::pb::LookupMembershipRequest {
                organization: format!("organizations/{}", fixtures::organization_id(o)),
                user: format!("users/{}", fixtures::user_id(u)),
                consistency: consistency.clone(),
                ..Default::default()
            };
            Box::pin(async move {
                client.lookup_membership(request).await?;
                Ok(())
            })
        })
    }));
    out.push(("BatchGetUsers(100)", {
        let (ch, consistency) = (ch.clone(), consistency.clone());
        Box::new(move |i| {
            let mut client = DirectoryServiceClient::new(pick(&ch, i));
            let request = crate::pb::BatchGetUsersRequest {
                names: hundred(i).into_iter().map(|id| format!("users/{id}")).collect(),
                consistency: consistency.clone(),
                ..Default::default()
            };
            Box::pin(async move {
                let r = client.batch_get_users(request).await?;
                anyhow::ensure!(r.get_ref().users.len() == 100, "not every user was returned");
                Ok(())
            })
        })
    }));
    out.push(("CheckPermission", {
        let check = check_of(d);
        Box::new(move |i| {
            let mut client = DirectoryServiceClient::new(pick(&ch, i));
            let case = check(i);
            let request = crate::pb::CheckPermissionRequest {
                organization: format!("organizations/{}", case.organization),
                user: format!("users/{}", case.user),
                permission: case.permission.to_string(),
                consistency: consistency.clone(),
                ..Default::default()
            };
            Box::pin(async move {
                let r = client.check_permission(request).await?.into_inner();
                verify(&case, r.allowed, r.source())
            })
        })
    }));
    out
}

//! `clerk-mirror bench SCENARIO`: measures the server the way users load it — webhooks in,
//! lookups and watch streams out, a backfill — each against a baseline measured in the same run
//! on the same machine (the database's own limit, the transport's, one watcher), and prints
//! the ratios with the targets. Never part of the tests' assertions: figures drift on a
//! shared machine, ratios much less.

pub mod backfill;
pub mod env;
pub mod fixtures;
pub mod h2load;
pub mod ingest;
pub mod load;
pub mod lookup;
pub mod outbound;
pub mod pgbench;
pub mod stats;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::config::parse_duration;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Signed webhooks from concurrent senders vs one INSERT per commit.
    Ingest,
    /// GetUser, LookupUser, LookupMembership, BatchGetUsers(100), CheckPermission, CheckEntitlement vs direct SQL and Health/Check.
    Lookup,
    /// Ack→delivery latency and server memory with 1, 1,000 and 10,000 watchers.
    Watch,
    /// Objects/s imported from a local fake Backend API vs a bulk COPY of the same rows.
    Backfill,
    /// Outbound webhook deliveries/s to a local verifying receiver, by lanes, vs signed POSTs of the same bodies.
    Outbound,
    /// Every scenario, one after another.
    All,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The scenarios to run.
    #[arg(value_enum, required = true)]
    scenarios: Vec<Scenario>,
    /// PostgreSQL server to use (a database per scenario is created and dropped on it). Without
    /// it, a private durable cluster is made in a temporary directory with the machine's initdb.
    #[arg(long, env = "CLERK_MIRROR_BENCH_DATABASE_URL", hide_env_values = true, value_parser = crate::cli::args::secret)]
    database_url: Option<crate::config::Redacted<String>>,
    /// Print JSON instead of Markdown tables.
    #[arg(long)]
    json: bool,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Small sizes everywhere (a smoke run: seconds, not minutes; its figures mean little).
    #[arg(long)]
    quick: bool,
    /// ingest: webhooks per run at the highest concurrency.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// ingest and lookup: the concurrencies measured.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// backfill: users the fake Backend API holds (organizations: 1 %, memberships: 20 %).
    #[arg(long, default_value_t = 20_000)]
    backfill_users: u64,
    /// lookup: users in the mirror (organizations: 1 %, memberships: 20 % of it).
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// watch: the watcher counts after the one-watcher baseline.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    watchers: Vec<usize>,
    /// watch: deliveries per second to aim at: events/s = this / watchers (at most 100/s), so
    /// every phase moves about as many messages; the one-watcher baseline gets the first
    /// phase's event rate.
    #[arg(long, default_value_t = 20_000.0)]
    deliveries: f64,
    /// watch: seconds of events per phase.
    #[arg(long, default_value_t = 10.0)]
    watch_seconds: f64,
    /// outbound: changes delivered per row at the receiver's own pace (the delayed rows: a
    /// fifth).
    #[arg(long, default_value_t = 5_000)]
    outbound_changes: u64,
    /// outbound: the lanes measured.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    lanes: Vec<usize>,
    /// outbound: milliseconds added to each response in the delayed rows.
    #[arg(long, default_value_t = 20)]
    receiver_delay_ms: u64,
    /// lookup: how long each row runs (after a warm-up of a fifth of it).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
}

/// Runs the benchmarks and prints their reports.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::cli::args::raise_open_file_limit();
    let mut scenarios = args.scenarios.clone();
    if scenarios.contains(&Scenario::All) {
        scenarios = vec![
            Scenario::Ingest,
            Scenario::Lookup,
            Scenario::Watch,
            Scenario::Backfill,
            Scenario::Outbound,
        ];
    }
    let pg = env::Postgres::open(args.database_url.as_ref().map(|u| u.0.as_str())).await?;
    let result = run_all(&args, &scenarios, &pg).await;
    pg.close().await;
    let reports = result?;
    let mut text = format!(
        "# clerk-mirror bench\n\n- machine: {}\n- command: `{}`\n- the load generator runs in the bench process on the same cores as the server and PostgreSQL; its CPU seconds are the `bench` column\n\n",
        env::machine(),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    for r in &reports {
        text.push_str(&r.render());
        text.push('\n');
    }
    if let Some(path) = &args.out {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        println!("{text}");
    }
    Ok(())
}

async fn run_all(args: &BenchArgs, scenarios: &[Scenario], pg: &env::Postgres) -> anyhow::Result<Vec<stats::Report>> {
    let mut reports = Vec::new();
    for scenario in scenarios {
        eprintln!("bench: running {scenario:?}…");
        let report = match scenario {
            Scenario::Ingest => {
                ingest::run(
                    pg,
                    &ingest::Options {
                        events: if args.quick { 300 } else { args.events },
                        concurrency: args.concurrency.clone(),
                        pgbench: Duration::from_secs(if args.quick { 1 } else { 5 }),
                        sustained: match args.quick {
                            true => (Duration::from_secs(1), Duration::from_secs(2)),
                            false => (Duration::from_secs(5), Duration::from_secs(60)),
                        },
                    },
                )
                .await?
            }
            Scenario::Lookup => {
                lookup::run(
                    pg,
                    &lookup::Options {
                        users: if args.quick { 1_000 } else { args.users },
                        concurrency: args.concurrency.clone(),
                        duration: if args.quick {
                            Duration::from_millis(500)
                        } else {
                            args.duration
                        },
                    },
                )
                .await?
            }
            Scenario::Watch => {
                let rate = |w: usize| (args.deliveries / w.max(1) as f64).min(100.0);
                let watchers: Vec<usize> = if args.quick {
                    vec![50, 200]
                } else {
                    args.watchers.clone()
                };
                let first = watchers.first().copied().unwrap_or(1);
                let mut phases = vec![(1, rate(first))];
                phases.extend(watchers.iter().map(|&w| (w, rate(w))));
                watch::run(
                    pg,
                    &watch::Options {
                        phases,
                        seconds: if args.quick { 1.0 } else { args.watch_seconds },
                        connections: 100,
                    },
                )
                .await?
            }
            Scenario::Backfill => {
                backfill::run(
                    pg,
                    &backfill::Options {
                        users: if args.quick { 1_000 } else { args.backfill_users },
                    },
                )
                .await?
            }
            Scenario::Outbound => {
                let changes = if args.quick { 100 } else { args.outbound_changes };
                outbound::run(
                    pg,
                    &outbound::Options {
                        changes,
                        delayed_changes: (changes / 5).max(20),
                        lanes: args.lanes.clone(),
                        delay: Duration::from_millis(args.receiver_delay_ms),
                        batch: 50,
                    },
                )
                .await?
            }
            Scenario::All => continue,
        };
        eprintln!("{}", report.render());
        reports.push(report);
    }
    Ok(reports)
}

//! The benchmark's environment: a PostgreSQL database (a private, durable cluster made with the
//! machine's `initdb`, or `--database-url`), a `clerk-mirror serve` child process on it with
//! ports chosen by the OS, and the counters read off both: CPU seconds and resident memory.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::stats::Cpu;
use crate::ingest::verify::WebhookSecrets;
use crate::pg::{Cluster, ClusterOptions};

/// The signing secret of the benchmark's webhook endpoint.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Where the databases live.
pub struct Postgres {
    /// The `postgres` database (new databases are made next to it).
    base: PgConnectOptions,
    /// Its URL.
    base_url: String,
    cluster: Option<Cluster>,
    /// The temporary directory of the private cluster, removed at the end.
    temp_dir: Option<PathBuf>,
}

impl Postgres {
    /// A private durable cluster in a temporary directory, or the server `url` names.
    pub async fn open(url: Option<&str>) -> anyhow::Result<Postgres> {
        if let Some(url) = url {
            return Ok(Postgres {
                base: url.parse().context("invalid --database-url")?,
                base_url: url.to_string(),
                cluster: None,
                temp_dir: None,
            });
        }
        let dir = std::env::temp_dir().join(format!("clerk-mirror-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = ClusterOptions {
            data_dir: dir.clone(),
            // The same settings as `serve`'s embedded default: fsync and synchronous commit on.
            durable: true,
            die_with_parent: true,
        };
        let mut cluster = Cluster::start(options.clone())
            .await
            .context("cannot start a private PostgreSQL for the benchmark")?;
        // Room for two servers' pools, the bench's own and pgbench's 64 clients at once (the
        // default is 100), then a restart to apply it.
        let mut conn = sqlx::PgConnection::connect_with(&cluster.connect_options("postgres")).await?;
        sqlx::query("ALTER SYSTEM SET max_connections = 300").execute(&mut conn).await?;
        conn.close().await?;
        cluster.stop().await?;
        let cluster = Cluster::start(options)
            .await
            .context("cannot restart the benchmark's PostgreSQL")?;
        Ok(Postgres {
            base: cluster.connect_options("postgres"),
            base_url: cluster.url("postgres"),
            cluster: Some(cluster),
            temp_dir: Some(dir),
        })
    }

    /// Creates the empty database `name` (dropping one left by an earlier run); its connect
    /// options and URL.
    pub async fn fresh_database(&self, name: &str) -> anyhow::Result<Database> {
        let mut conn = self.base.connect().await.context("cannot connect to PostgreSQL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(Database {
            options: self.base.clone().database(name),
            url: with_database(&self.base_url, name),
        })
    }

    /// A scenario's start: the fresh database `name`, a server on it, and the probe of both.
    pub async fn scenario(&self, name: &str) -> anyhow::Result<(Database, Server, Probe)> {
        let db = self.fresh_database(name).await?;
        let server = Server::start(&db, &[]).await?;
        let probe = Probe {
            server: Some(server.pid),
            postgres: self.is_private(),
        };
        Ok((db, server, probe))
    }

    /// PostgreSQL's version and durability settings, for the report.
    pub async fn settings(&self) -> anyhow::Result<String> {
        let mut conn = self.base.connect().await?;
        let mut out = Vec::new();
        for name in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "full_page_writes",
            "shared_buffers",
        ] {
            let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
                .fetch_one(&mut conn)
                .await?;
            out.push(format!("{name}={v}"));
        }
        Ok(out.join(" "))
    }

    /// Whether this is the private cluster (its processes' CPU time is then readable).
    pub fn is_private(&self) -> bool {
        self.cluster.is_some()
    }

    /// Stops the private cluster and removes its directory.
    pub async fn close(mut self) {
        if let Some(cluster) = self.cluster.as_mut() {
            let _ = cluster.stop().await;
        }
        if let Some(dir) = self.temp_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One database of the benchmark.
#[derive(Clone)]
pub struct Database {
    pub options: PgConnectOptions,
    pub url: String,
}

/// `url` naming the database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (head, query) = url.split_once('?').map_or((url, None), |(h, q)| (h, Some(q)));
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let path_start = head[authority_start..]
        .find('/')
        .map_or(head.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &head[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The server's `RUST_LOG`: warnings, and the startup's `serving` line the bench waits for, kept
/// under any filter given in CLERK_MIRROR_BENCH_SERVER_LOG (without it the bench would wait
/// forever).
fn server_log_filter(given: Option<String>) -> String {
    const SERVING: &str = "clerk_mirror::startup=info";
    match given {
        Some(f) if f.contains("clerk_mirror::startup") => f,
        Some(f) if f.trim().is_empty() => format!("warn,{SERVING}"),
        Some(f) => format!("{f},{SERVING}"),
        None => format!("warn,{SERVING}"),
    }
}

/// A pool on `options` with `size` connections.
pub async fn pool(options: &PgConnectOptions, size: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(size)
        // The server's own session settings (see `db::connect`), so the baselines run the same plans.
        .connect_with(
            options
                .clone()
                .application_name("clerk-mirror bench")
                .options([("jit", "off")]),
        )
        .await
        .context("cannot connect to the benchmark database")
}

/// A one-connection pool for watching the inbox drain: it never plans a sequential scan (the
/// count is served by the `inbox_pending` partial index; a scan of the whole growing inbox every
/// few milliseconds would take PostgreSQL's CPU from the server being measured).
pub async fn monitor(options: &PgConnectOptions) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            options
                .clone()
                .application_name("clerk-mirror bench monitor")
                .options([("enable_seqscan", "off"), ("jit", "off")]),
        )
        .await
        .context("cannot connect to the benchmark database")
}

/// Inbox rows not yet applied (on a `monitor` pool).
pub async fn pending(monitor: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM inbox WHERE status = 'pending'")
            .fetch_one(monitor)
            .await?,
    )
}

/// The cluster's write-ahead log and checkpoint counters (cumulative, for differences).
#[derive(Debug, Clone, Copy, Default)]
pub struct Wal {
    pub bytes: f64,
    pub full_page_images: i64,
    pub checkpoints: i64,
    pub backend_writes: i64,
}

impl Wal {
    pub async fn read(monitor: &PgPool) -> anyhow::Result<Wal> {
        let (bytes, full_page_images, checkpoints, backend_writes): (f64, i64, i64, i64) = sqlx::query_as(
            "SELECT w.wal_bytes::float8, w.wal_fpi, b.checkpoints_timed + b.checkpoints_req, b.buffers_backend
               FROM pg_stat_wal w, pg_stat_bgwriter b",
        )
        .fetch_one(monitor)
        .await?;
        Ok(Wal {
            bytes,
            full_page_images,
            checkpoints,
            backend_writes,
        })
    }

    /// What happened since `before`, per event of `events`: WAL bytes, full-page images, and the
    /// checkpoints and buffers written by backends in all.
    pub fn since(&self, before: &Wal, events: u64) -> String {
        let n = events.max(1) as f64;
        format!(
            "WAL {:.1} KB and {:.2} full-page images an event, {} checkpoints, {} buffers written by backends",
            (self.bytes - before.bytes) / n / 1024.0,
            (self.full_page_images - before.full_page_images) as f64 / n,
            self.checkpoints - before.checkpoints,
            self.backend_writes - before.backend_writes
        )
    }
}

/// Waits until every inbox row is applied, polling every `every` for one pending row: counting
/// a backlog of 100,000 rows every 20 ms took a core of PostgreSQL from the applier it waits for.
pub async fn drained(monitor: &PgPool, every: std::time::Duration) -> anyhow::Result<()> {
    loop {
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM inbox WHERE status = 'pending')")
            .fetch_one(monitor)
            .await?;
        if !any {
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

/// A running `clerk-mirror serve` child.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub http: String,
    pub grpc: String,
    pub admin: String,
    pub secrets: WebhookSecrets,
    log: tokio::task::JoinHandle<Vec<String>>,
}

impl Server {
    /// Starts this binary's `serve` on `database` (its own URL form) with `extra` arguments.
    pub async fn start(database: &Database, extra: &[&str]) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let url = &database.url;
        let mut child = Command::new(exe)
            .args(["serve", "--log-format", "json"])
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ])
            .args(["--database-url", url, "--webhook-secret", SECRET])
            .args(extra)
            .env(
                "RUST_LOG",
                server_log_filter(std::env::var("CLERK_MIRROR_BENCH_SERVER_LOG").ok()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `clerk-mirror serve`")?;
        let pid = child.id().context("serve exited at once")?;
        let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
        let mut seen = Vec::new();
        let (http, grpc, admin) = loop {
            let Some(line) = lines.next_line().await? else {
                bail!("serve exited before serving; its log:\n{}", seen.join("\n"));
            };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["fields"]["message"] == "serving"
            {
                let field = |k: &str| v["fields"][k].as_str().unwrap_or_default().to_string();
                break (field("http"), field("grpc"), field("admin"));
            }
            seen.push(line);
        };
        // The server's log is kept (and printed if it fails); with CLERK_MIRROR_BENCH_SERVER_LOG
        // (a RUST_LOG filter for the server, for profiling) it is also written to stderr.
        let echo = std::env::var_os("CLERK_MIRROR_BENCH_SERVER_LOG").is_some();
        let log = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("{line}");
                }
                seen.push(line);
            }
            seen
        });
        Ok(Server {
            child,
            pid,
            http,
            grpc,
            admin,
            secrets: WebhookSecrets::parse(&[SECRET.to_string()])?,
            log,
        })
    }

    pub fn webhook_url(&self) -> String {
        format!("http://{}/webhooks/clerk", self.http)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The server's resident set, in bytes.
    pub fn rss(&self) -> u64 {
        rss(self.pid)
    }

    /// A value of the server's Prometheus metrics (summed over its labels matching `labels`).
    pub async fn metric(&self, name: &str, labels: &str) -> anyhow::Result<f64> {
        let text = crate::cli::send_event::get(&format!("http://{}/metrics", self.admin))
            .await?
            .body;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Stops the server (SIGTERM, then waits); its warnings and errors are printed if it failed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        let status = self.child.wait().await?;
        let log = self.log.await.unwrap_or_default();
        if !status.success() {
            bail!("serve exited with {status}; its log:\n{}", log.join("\n"));
        }
        Ok(())
    }
}

/// Which processes' CPU time a measurement reads.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// The server child.
    pub server: Option<u32>,
    /// Whether PostgreSQL runs on this machine (the private cluster).
    pub postgres: bool,
}

impl Probe {
    /// CPU seconds used so far.
    pub fn cpu(&self) -> Cpu {
        cpu(self.server, self.postgres)
    }
}

/// An empty scratch directory of this process for the files of the load tool `tool`.
pub fn scratch_dir(tool: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("clerk-mirror-{tool}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot make {tool}'s directory"))?;
    Ok(dir)
}

/// Runs a load generator child (a C client: pgbench, h2load) to its end; its output, and the CPU
/// used meanwhile, with the child's own in `bench`.
pub async fn measured_child(probe: Probe, cmd: &mut Command) -> anyhow::Result<(std::process::Output, Cpu)> {
    let before = probe.cpu();
    let children = children_cpu();
    let output = cmd.output().await.context("cannot run the load generator")?;
    let mut cpu = probe.cpu() - before;
    cpu.bench = children_cpu() - children;
    Ok((output, cpu))
}

/// CPU seconds of the finished (waited-for) children of this process.
fn children_cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage with a valid, owned struct.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds used so far by this process, the server and PostgreSQL.
pub fn cpu(server: Option<u32>, postgres: bool) -> Cpu {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage with a valid, owned struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Cpu {
        bench: secs(usage.ru_utime) + secs(usage.ru_stime),
        server: server.map_or(0.0, |pid| proc_cpu(pid).unwrap_or(0.0)),
        postgres: postgres.then(postgres_cpu),
    }
}

fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// The fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: u32) -> Option<(String, Vec<String>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    Some((comm, text[close + 2..].split(' ').map(str::to_string).collect()))
}

/// utime + stime of one process, in seconds.
fn proc_cpu(pid: u32) -> Option<f64> {
    let (_, f) = stat_fields(pid)?;
    // After the name: state is field 3, utime 14, stime 15 (1-based over the whole line).
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks())
}

/// CPU seconds of every `postgres` process, plus what their exited children used (counted by
/// the postmaster that reaped them).
fn postgres_cpu() -> f64 {
    let mut total = 0.0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some((comm, f)) = stat_fields(pid) else {
            continue;
        };
        if comm != "postgres" {
            continue;
        }
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime, stime, cutime, cstime.
        total += (field(11) + field(12) + field(13) + field(14)) / ticks();
    }
    total
}

/// Resident set of `pid` in bytes (0 when unknown).
pub fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A description of the machine: cores, CPU model, memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |m| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next()?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    format!("{cores} cores ({model}), {mem} GiB")
}

#[cfg(test)]
mod tests {
    use super::{server_log_filter, with_database};

    #[test]
    fn a_server_log_filter_keeps_the_line_the_bench_waits_for() {
        assert_eq!(server_log_filter(None), "warn,clerk_mirror::startup=info");
        assert_eq!(
            server_log_filter(Some("warn,clerk_mirror::applier::batch=debug".into())),
            "warn,clerk_mirror::applier::batch=debug,clerk_mirror::startup=info"
        );
        assert_eq!(
            server_log_filter(Some("clerk_mirror::startup=debug".into())),
            "clerk_mirror::startup=debug"
        );
    }

    #[test]
    fn a_url_is_pointed_at_another_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/db?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://postgres@localhost/postgres?host=%2Ftmp%2Fs&port=5", "x"),
            "postgres://postgres@localhost/x?host=%2Ftmp%2Fs&port=5"
        );
    }
}

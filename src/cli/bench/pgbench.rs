//! The baseline a user would otherwise reach: `pgbench -M prepared` (PostgreSQL's own C client)
//! running one prepared statement against the same database, with the same concurrency and
//! duration as a gRPC row, on the same cores. Its latencies come from pgbench's per-transaction
//! log; its CPU (the `bench` column) from the finished child's resource usage.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::env::{self, Database, Probe};
use super::stats::{Latencies, Row};

/// The `pgbench` next to the machine's `initdb`.
pub fn find() -> anyhow::Result<PathBuf> {
    let dir = crate::pg::find_bin_dir(&crate::pg::BinDirSources::from_env())
        .context("cannot find PostgreSQL's binaries for the pgbench baseline")?;
    let exe = dir.join("pgbench");
    if !exe.is_file() {
        bail!("no pgbench in {} (it ships with the PostgreSQL server package)", dir.display());
    }
    Ok(exe)
}

/// Runs `script` (pgbench's script language) with `-M prepared` at `concurrency` clients for
/// `duration` after a warm-up of `warmup`, as the row `name`.
pub async fn run(
    exe: &Path,
    database: &Database,
    probe: Probe,
    name: &str,
    script: &str,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Row> {
    let dir = env::scratch_dir("pgbench")?;
    let script_path = dir.join("script.sql");
    std::fs::write(&script_path, script).context("cannot write pgbench's script")?;
    let once = |seconds: u64, log: bool| {
        let mut cmd = tokio::process::Command::new(exe);
        cmd.current_dir(&dir)
            .args(["-n", "-M", "prepared", "-f"])
            .arg(&script_path)
            .args(["-c", &concurrency.to_string(), "-j", &concurrency.min(2).to_string()])
            .args(["-T", &seconds.max(1).to_string()]);
        if log {
            cmd.args(["-l", "--log-prefix", "tx"]);
        }
        cmd.arg(&database.url);
        cmd
    };
    let output = once(warmup.as_secs(), false).output().await.context("cannot run pgbench")?;
    if !output.status.success() {
        bail!("pgbench failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    // pgbench runs whole seconds.
    let seconds = duration.as_secs().max(1);
    let (output, cpu) = env::measured_child(probe, &mut once(seconds, true)).await?;
    if !output.status.success() {
        bail!("pgbench failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let mut latencies = Latencies::default();
    let mut failed = 0;
    for entry in std::fs::read_dir(&dir).context("cannot read pgbench's logs")? {
        let path = entry?.path();
        if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("tx.")) {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            // client transaction latency_us script epoch us
            match line.split_whitespace().nth(2) {
                Some("failed") | Some("skipped") => failed += 1,
                Some(us) => latencies.0.push(us.parse().with_context(|| format!("pgbench log line `{line}`"))?),
                None => {}
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let ops = latencies.0.len() as u64;
    if ops == 0 {
        bail!("pgbench ran no transaction: {}", String::from_utf8_lossy(&output.stdout).trim());
    }
    Ok(Row::new(name, concurrency, ops + failed, failed, Duration::from_secs(seconds))
        .latencies(latencies)
        .cpu(cpu))
}

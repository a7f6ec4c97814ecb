//! The server's own limit for unary gRPC calls: h2load (nghttp2's C load generator) sends one
//! fixed gRPC request over HTTP/2 to the server, so the client's CPU per call is a fraction of
//! the Rust client's and the row measures the server. Used for Health/Check and the reads it is
//! compared with; the answer to the request is checked once through the Rust client beforehand
//! (h2load sees HTTP statuses, not gRPC's).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::env::{self, Probe};
use super::stats::{Latencies, Row};

/// `h2load` on the PATH.
pub fn find() -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("h2load"))
        .find(|p| p.is_file())
        .context("h2load is not installed (Debian/Ubuntu: apt-get install nghttp2-client); the lookup bench needs it for its C-client gRPC rows")
}

/// A gRPC request body: the uncompressed length-prefixed frame of `message`.
pub fn frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Calls `method` (`/package.Service/Method`) of the server at `url` with `body` (a gRPC frame),
/// `concurrency` streams over at most 8 connections, for `duration` after `warmup`, as the row
/// `name`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    exe: &Path,
    url: &str,
    probe: Probe,
    name: &str,
    method: &str,
    body: &[u8],
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Row> {
    let dir = env::scratch_dir("h2load")?;
    let body_path = dir.join("body");
    std::fs::write(&body_path, body).context("cannot write h2load's request body")?;
    let log_path = dir.join("log");
    let connections = concurrency.clamp(1, 8);
    let streams = concurrency.div_ceil(connections);
    let seconds = duration.as_secs().max(1);
    let once = |seconds: u64, log: bool| {
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(["-t", "1", "-c", &connections.to_string(), "-m", &streams.to_string()])
            .args(["-D", &seconds.to_string()])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers", "-d"])
            .arg(&body_path);
        if log {
            cmd.arg(format!("--log-file={}", log_path.display()));
        }
        cmd.arg(format!("{url}{method}"));
        cmd
    };
    // A warm-up run apart, so the measured run's CPU is its own.
    let warm = once(warmup.as_secs().max(1), false).output().await.context("cannot run h2load")?;
    if !warm.status.success() {
        bail!("h2load failed: {}", String::from_utf8_lossy(&warm.stdout).trim());
    }
    let (output, cpu) = env::measured_child(probe, &mut once(seconds, true)).await?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        bail!("h2load failed: {} {}", stdout.trim(), String::from_utf8_lossy(&output.stderr).trim());
    }
    // "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
    let count = |what: &str| -> Option<u64> {
        let line = stdout.lines().find(|l| l.starts_with("requests:"))?;
        line.split(',').find(|p| p.trim().ends_with(what))?.split_whitespace().next()?.parse().ok()
    };
    let (Some(succeeded), Some(failed)) = (count("succeeded"), count("failed")) else {
        bail!("cannot read h2load's summary: {}", stdout.trim());
    };
    let non_2xx = stdout
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .map_or(0, |l| l.split(',').skip(1).filter_map(|p| p.split_whitespace().next()?.parse::<u64>().ok()).sum());
    let mut latencies = Latencies::default();
    // Tab-separated: start (µs since the epoch), HTTP status, µs until the response ended.
    for line in std::fs::read_to_string(&log_path).unwrap_or_default().lines() {
        if let Some(us) = line.split('\t').nth(2).and_then(|v| v.trim().parse().ok()) {
            latencies.0.push(us);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if succeeded == 0 {
        bail!("h2load completed no request: {}", stdout.trim());
    }
    let errors = failed + non_2xx;
    Ok(Row::new(name, concurrency, succeeded + failed, errors, Duration::from_secs(seconds))
        .latencies(latencies)
        .cpu(cpu)
        .note(format!("{connections} connections × {streams} streams")))
}

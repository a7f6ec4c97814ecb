//! The load generator: runs an operation from `concurrency` tasks until a count or a time is
//! reached, timing each call; a measurement is a warm-up and a run, with the CPU seconds each
//! process spent during the run.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::env::Probe;
use super::stats::{Latencies, Row};

/// When a run ends.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this many operations (numbered 0..n).
    Count(u64),
    /// When this much time has passed (operations in flight finish).
    Time(Duration),
}

/// What one run did.
#[derive(Debug, Default)]
pub struct Measured {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
    pub first_error: Option<String>,
}

/// Runs `op(i)` from `concurrency` tasks, `i` counting from `start`.
pub async fn drive<F, Fut>(concurrency: usize, start: u64, until: Until, op: F) -> Measured
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(start));
    let began = Instant::now();
    let deadline = match until {
        Until::Time(d) => Some(began + d),
        Until::Count(_) => None,
    };
    let end = match until {
        Until::Count(n) => start + n,
        Until::Time(_) => u64::MAX,
    };
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                let mut m = Measured::default();
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    let t = Instant::now();
                    let result = op(i).await;
                    m.latencies.push(t.elapsed());
                    m.ops += 1;
                    if let Err(e) = result {
                        m.errors += 1;
                        m.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
                m
            })
        })
        .collect();
    let mut total = Measured::default();
    for task in tasks {
        let m = task.await.expect("a load task panicked");
        total.ops += m.ops;
        total.errors += m.errors;
        total.latencies.extend(m.latencies);
        if total.first_error.is_none() {
            total.first_error = m.first_error;
        }
    }
    total.elapsed = began.elapsed();
    total
}

/// A warm-up of `warmup`, then a timed run of `duration`: one row.
pub async fn measure<F, Fut>(
    probe: Probe,
    name: &str,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> anyhow::Result<Row>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let o = op.clone();
    let warm = drive(concurrency, 0, Until::Time(warmup), move |i| o(i)).await;
    check(name, &warm)?;
    let before = probe.cpu();
    let run = drive(concurrency, warm.ops, Until::Time(duration), move |i| op(i)).await;
    let cpu = probe.cpu() - before;
    check(name, &run)?;
    Ok(Row::new(name, concurrency, run.ops, run.errors, run.elapsed)
        .latencies(run.latencies)
        .cpu(cpu))
}

/// Fails when every operation failed (a broken setup, not a measurement).
pub fn check(name: &str, m: &Measured) -> anyhow::Result<()> {
    if m.errors > 0 && m.errors == m.ops {
        anyhow::bail!(
            "{name}: every operation failed: {}",
            m.first_error.as_deref().unwrap_or("?")
        );
    }
    if let Some(e) = &m.first_error {
        tracing::warn!(row = name, errors = m.errors, "some operations failed: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_counted_run_does_each_operation_once_and_counts_failures() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let m = drive(8, 10, Until::Count(100), move |i| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(i);
                if i % 10 == 0 {
                    anyhow::bail!("op {i} failed")
                } else {
                    Ok(())
                }
            }
        })
        .await;
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(seen, (10..110).collect::<Vec<_>>());
        assert_eq!((m.ops, m.errors, m.latencies.0.len()), (100, 10, 100));
        assert!(m.first_error.unwrap().contains("failed"));
    }
}

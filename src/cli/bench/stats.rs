//! What a benchmark row measured, and how results are printed: latency percentiles, throughput,
//! CPU seconds per process, ratios to the baseline of the same run, as a table or JSON.

use std::time::Duration;

use serde::Serialize;

/// Latencies of one measured run, in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(pub Vec<u64>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros() as u64);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// p50, p99 and max in milliseconds (zeros when empty).
    pub fn summary(&mut self) -> (f64, f64, f64) {
        if self.0.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        self.0.sort_unstable();
        let at = |q: f64| {
            let i = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len()) - 1;
            self.0[i] as f64 / 1000.0
        };
        (at(0.50), at(0.99), *self.0.last().expect("non-empty") as f64 / 1000.0)
    }
}

/// CPU seconds spent by each process while a row ran.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Cpu {
    /// This process: the load generator (and the direct-SQL client).
    pub bench: f64,
    /// The `clerk-mirror serve` child.
    pub server: f64,
    /// Every PostgreSQL process of the machine (`None` when they cannot be read).
    pub postgres: Option<f64>,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, rhs: Cpu) -> Cpu {
        Cpu {
            bench: self.bench - rhs.bench,
            server: self.server - rhs.server,
            postgres: self.postgres.zip(rhs.postgres).map(|(a, b)| a - b),
        }
    }
}

/// One line of a result table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    /// Baselines are the rows the others are divided by.
    pub baseline: bool,
    pub concurrency: usize,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub cpu: Cpu,
    /// `(baseline name, throughput ratio, p99 ratio)`.
    pub vs: Vec<(String, f64, f64)>,
    /// Anything else measured on this row (`key: value`).
    pub notes: Vec<String>,
}

impl Row {
    /// A row from a run's count, errors, elapsed time and latencies.
    pub fn new(name: impl Into<String>, concurrency: usize, ops: u64, errors: u64, elapsed: Duration) -> Row {
        let seconds = elapsed.as_secs_f64();
        Row {
            name: name.into(),
            baseline: false,
            concurrency,
            ops,
            errors,
            seconds,
            per_second: if seconds > 0.0 { ops as f64 / seconds } else { 0.0 },
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            cpu: Cpu::default(),
            vs: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn latencies(mut self, mut l: Latencies) -> Row {
        (self.p50_ms, self.p99_ms, self.max_ms) = l.summary();
        self
    }

    pub fn baseline(mut self) -> Row {
        self.baseline = true;
        self
    }

    /// The CPU each process spent during the row, also noted per operation.
    pub fn cpu(mut self, cpu: Cpu) -> Row {
        self.cpu = cpu;
        if self.ops > 0 {
            let per_op = self.cpu_per_op();
            let us = |s: f64| format!("{s:.0}");
            self.notes.push(format!(
                "CPU per operation {}/{}/{} µs (bench/server/PostgreSQL)",
                us(per_op.bench),
                us(per_op.server),
                per_op.postgres.map_or("-".into(), us)
            ));
        }
        self
    }

    /// The CPU each process spent per operation, in microseconds.
    pub fn cpu_per_op(&self) -> Cpu {
        let us = |s: f64| s * 1e6 / self.ops.max(1) as f64;
        Cpu {
            bench: us(self.cpu.bench),
            server: us(self.cpu.server),
            postgres: self.cpu.postgres.map(us),
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.notes.push(note.into());
        self
    }

    /// Records this row's throughput and p99 against `base`.
    pub fn versus(&mut self, base: &Row) {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        self.vs.push((
            base.name.clone(),
            ratio(self.per_second, base.per_second),
            ratio(self.p99_ms, base.p99_ms),
        ));
    }
}

/// A target of the issue, checked against this run.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub measured: f64,
    pub bound: f64,
    /// `true` when the measured ratio must be at least the bound, `false` for at most.
    pub at_least: bool,
    pub met: bool,
}

impl Target {
    pub fn at_least(what: impl Into<String>, measured: f64, bound: f64) -> Target {
        Target {
            what: what.into(),
            measured,
            bound,
            at_least: true,
            met: measured >= bound,
        }
    }

    pub fn at_most(what: impl Into<String>, measured: f64, bound: f64) -> Target {
        Target {
            what: what.into(),
            measured,
            bound,
            at_least: false,
            met: measured <= bound,
        }
    }
}

/// Everything one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    /// Settings and facts of the run (`key: value`), printed above the table.
    pub setup: Vec<(String, String)>,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    /// Measurements that are not rows (RSS, reads per change, …).
    pub facts: Vec<(String, String)>,
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.into(),
            setup: Vec::new(),
            rows: Vec::new(),
            targets: Vec::new(),
            facts: Vec::new(),
        }
    }

    pub fn setup(&mut self, key: &str, value: impl ToString) {
        self.setup.push((key.into(), value.to_string()));
    }

    pub fn fact(&mut self, key: &str, value: impl ToString) {
        self.facts.push((key.into(), value.to_string()));
    }

    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// The ratio of row `name` to baseline `base` (throughput, p99), as recorded.
    pub fn ratio(&self, name: &str, base: &str) -> Option<(f64, f64)> {
        self.row(name)?
            .vs
            .iter()
            .find(|(b, _, _)| b == base)
            .map(|(_, t, p)| (*t, *p))
    }

    /// The report as a Markdown table with its setup, facts and targets.
    pub fn render(&self) -> String {
        let mut out = format!("## {}\n\n", self.scenario);
        for (k, v) in &self.setup {
            out.push_str(&format!("- {k}: {v}\n"));
        }
        out.push('\n');
        out.push_str(
            "| row | c | ops | err | ops/s | p50 ms | p99 ms | max ms | vs baseline (throughput ×, p99 ×) | CPU s bench/server/pg |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
        for r in &self.rows {
            let name = if r.baseline {
                format!("{} (baseline)", r.name)
            } else {
                r.name.clone()
            };
            let vs =
                r.vs.iter()
                    .map(|(b, t, p)| match p.is_finite() {
                        true => format!("{t:.2}×, p99 {p:.2}× `{b}`"),
                        false => format!("{t:.2}× `{b}`"),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
            let pg = r.cpu.postgres.map_or("-".to_string(), |p| format!("{p:.1}"));
            let ms = |v: f64| match r.max_ms > 0.0 {
                true => format!("{v:.2}"),
                false => "-".to_string(),
            };
            out.push_str(&format!(
                "| {name} | {} | {} | {} | {:.0} | {} | {} | {} | {vs} | {:.1}/{:.1}/{pg} |\n",
                r.concurrency,
                r.ops,
                r.errors,
                r.per_second,
                ms(r.p50_ms),
                ms(r.p99_ms),
                ms(r.max_ms),
                r.cpu.bench,
                r.cpu.server,
            ));
        }
        let noted: Vec<_> = self.rows.iter().filter(|r| !r.notes.is_empty()).collect();
        if !noted.is_empty() {
            out.push('\n');
        }
        for r in noted {
            out.push_str(&format!("- {}: {}\n", r.name, r.notes.join("; ")));
        }
        if !self.facts.is_empty() {
            out.push('\n');
            for (k, v) in &self.facts {
                out.push_str(&format!("- {k}: {v}\n"));
            }
        }
        if !self.targets.is_empty() {
            out.push_str("\nTargets:\n\n");
            for t in &self.targets {
                out.push_str(&format!(
                    "- {} {}: {:.2} (needs {} {:.2})\n",
                    if t.met { "MET   " } else { "MISSED" },
                    t.what,
                    t.measured,
                    if t.at_least { "≥" } else { "≤" },
                    t.bound,
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut l = Latencies((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!(l.summary(), (50.0, 99.0, 100.0));
        let mut one = Latencies(vec![2500]);
        assert_eq!(one.summary(), (2.5, 2.5, 2.5));
        assert_eq!(Latencies::default().summary(), (0.0, 0.0, 0.0));
    }

    #[test]
    fn ratios_divide_by_the_baseline() {
        let base = Row {
            p99_ms: 2.0,
            ..Row::new("sql", 64, 1000, 0, Duration::from_secs(1))
        };
        let mut row = Row {
            p99_ms: 3.0,
            ..Row::new("grpc", 64, 800, 0, Duration::from_secs(1))
        };
        row.versus(&base);
        assert_eq!(row.vs, vec![("sql".to_string(), 0.8, 1.5)]);
    }
}

//! Prometheus metrics (the `prometheus` crate): one registry per application, exposed on the
//! admin port. Counters are updated where things happen; the gauges read from the database when
//! scraped (the log's head, oldest cursor, inbox backlog, backfill progress, drift) are set by the
//! admin port (`admin::scrape`): this module is a leaf that knows no table.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric of one application.
pub struct Metrics {
    registry: Registry,
    /// Webhook requests by outcome (`stored`, `duplicate`, `rejected`, `unavailable`, `internal`)
    /// and reason (the error code, e.g. `bad_signature`; `ok` when stored).
    pub webhooks: IntCounterVec,
    /// Inbox rows the applier took, by event type and status (`applied`, `skipped`, `failed`).
    pub events: IntCounterVec,
    /// Seconds from Clerk's event time to the commit that applied it.
    pub apply_lag: Histogram,
    /// Changes appended to the log.
    pub changes: IntCounter,
    /// Open watch streams.
    pub watchers: IntGauge,
    /// Watch streams ended, by reason (`client_gone`, `too_slow`, `expired`, `shutting_down`, `error`).
    pub watchers_ended: IntCounterVec,
    /// Times a stream behind the hub's buffer read the database instead.
    pub watch_catch_ups: IntCounter,
    /// Change-log rows read from the database, by reader: `hub` (once per replica) or `stream`
    /// (a watcher's backlog, or a catch-up after falling behind the hub).
    pub changes_read: IntCounterVec,
    /// Values this build does not know, applied as they came (a subscription's new status), by
    /// entity type and value (cut to 64 characters).
    pub unrecognised_values: IntCounterVec,
    /// Changes a reader (the read cache, a watch stream) took from the hub's ring of recent
    /// changes instead of reading the database, by reader.
    pub changes_from_recent: IntCounterVec,
    /// Change-log rows a reader (the read cache, each watch stream) passed over because this
    /// binary does not know their entity type (a newer replica wrote them), by entity type.
    pub change_log_rows_skipped: IntCounterVec,
    /// gRPC requests by method and status code.
    pub rpcs: IntCounterVec,
    /// gRPC latency to the response headers (for streams: to the stream's start), by method.
    pub rpc_seconds: HistogramVec,
    /// The log and the inbox, read from the database at scrape time.
    pub log: IntGaugeVec,
    /// Objects fetched by the backfill in progress, per resource (at scrape time).
    pub backfill_fetched: IntGaugeVec,
    /// The last reconcile's repairs, per resource and kind (at scrape time).
    pub drift: IntGaugeVec,
    /// Directory reads by how the read cache answered: `hit`, `absent` (a certain negative),
    /// `fallback` (read PostgreSQL: not held, or a lookup memory cannot answer), `not_ready`
    /// (not loaded yet, or disabled), `fully_consistent` (the caller asked for everything
    /// committed: the read index; it is then counted once more as the memory read or fallback).
    pub cache_reads: IntCounterVec,
    /// The read cache: entries (`users`, `organizations`, `memberships`, and `roles` and
    /// `permissions`, held outside the budget), accounted `bytes`,
    /// `complete` (1: everything held), `cursor`, `cursor_lag` (behind the hub) and `loads`.
    pub cache: IntGaugeVec,
    /// Outbound webhook destinations, read from the database at scrape time: per destination,
    /// `delivered`, `failed_attempts`, `lag_changes`, `lag_seconds` and `paused` (0 or 1).
    pub destinations: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let r = Registrar::new("clerk_mirror");
        Arc::new(Metrics {
            webhooks: r.counters(
                "webhooks_total",
                "Webhook requests by outcome and reason.",
                &["outcome", "reason"],
            ),
            events: r.counters(
                "events_total",
                "Inbox rows taken by the applier, by event type and status.",
                &["type", "status"],
            ),
            apply_lag: r.histogram(
                "apply_lag_seconds",
                "From Clerk's event time to the commit that applied it.",
                APPLY_LAG_BUCKETS,
            ),
            changes: r.counter("changes_total", "Changes appended to the log."),
            watchers: r.gauge("watchers", "Open watch streams."),
            watchers_ended: r.counters("watchers_ended_total", "Watch streams ended, by reason.", &["reason"]),
            watch_catch_ups: r.counter(
                "watch_database_catch_ups_total",
                "Times a stream behind the hub read the database.",
            ),
            changes_read: r.counters(
                "change_log_rows_read_total",
                "Change-log rows read from the database, by reader (hub or stream).",
                &["reader"],
            ),
            unrecognised_values: r.counters(
                "unrecognised_values_total",
                "Values this build does not know in what it applied (e.g. a subscription status Clerk added), by entity type and value.",
                &["entity_type", "value"],
            ),
            changes_from_recent: r.counters(
                "change_log_recent_taken_total",
                "Changes taken from the hub's ring of recent changes instead of the database, by reader (cache or stream).",
                &["reader"],
            ),
            change_log_rows_skipped: r.counters(
                "change_log_rows_skipped_total",
                "Change-log rows a reader (cache or watch stream) skipped: an entity type this binary does not know.",
                &["entity_type"],
            ),
            rpcs: r.counters(
                "grpc_requests_total",
                "gRPC requests by method and status code.",
                &["method", "code"],
            ),
            rpc_seconds: r.histograms(
                "grpc_request_seconds",
                "gRPC latency to the response headers.",
                &["method"],
                RPC_BUCKETS,
            ),
            log: r.gauges(
                "log",
                "The change log's head and oldest seq, the inbox backlog and dead letters (at scrape).",
                &["what"],
            ),
            backfill_fetched: r.gauges(
                "backfill_fetched",
                "Objects fetched by the backfill in progress.",
                &["resource"],
            ),
            drift: r.gauges(
                "drift",
                "The last reconcile's repairs by resource and kind.",
                &["resource", "kind"],
            ),
            cache_reads: r.counters(
                "read_cache_reads_total",
                "Directory reads by how the read cache answered.",
                &["outcome"],
            ),
            cache: r.gauges(
                "read_cache",
                "The read cache: entries, bytes, completeness, cursor and lag.",
                &["what"],
            ),
            destinations: r.gauges(
                "outbound_destination",
                "Outbound webhook destinations (at scrape): delivered, failed attempts, lag in changes and seconds, paused.",
                &["destination", "what"],
            ),
            registry: r.registry,
        })
    }

    /// Sets the gauges read from the database when scraped: the log's bounds and the inbox.
    pub fn set_log(&self, head: i64, oldest: i64, inbox_pending: i64, dead_letters: i64) {
        self.log.with_label_values(&["head_seq"]).set(head);
        self.log.with_label_values(&["oldest_seq"]).set(oldest);
        self.log.with_label_values(&["inbox_pending"]).set(inbox_pending);
        self.log.with_label_values(&["dead_letters"]).set(dead_letters);
    }

    /// Sets the backfill progress gauges, one per resource (others are removed).
    pub fn set_backfill_fetched(&self, progress: &[(String, i64)]) {
        self.backfill_fetched.reset();
        for (resource, fetched) in progress {
            self.backfill_fetched
                .with_label_values(&[resource.as_str()])
                .set(*fetched);
        }
    }

    /// Sets the last reconcile's drift of `resource` (`kind`: missing, stale or deleted).
    pub fn set_drift(&self, resource: &str, kind: &str, count: usize) {
        self.drift.with_label_values(&[resource, kind]).set(count as i64);
    }

    /// The text exposition format of every metric.
    /// Replaces the destinations' gauges: `(id, [(what, value)])` per destination.
    pub fn set_destinations(&self, rows: &[(String, [(&'static str, i64); 5])]) {
        self.destinations.reset();
        for (id, values) in rows {
            for (what, value) in values {
                self.destinations.with_label_values(&[id.as_str(), what]).set(*value);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Buckets of [`Metrics::apply_lag`], in seconds: from 50 ms to an hour.
const APPLY_LAG_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0];
/// Buckets of [`Metrics::rpc_seconds`], in seconds: from half a millisecond to 5 s.
const RPC_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Creates metrics and registers each on one registry: one call per metric, by type, with its
/// name (without the registry's prefix), help text, label names and buckets.
struct Registrar {
    registry: Registry,
}

impl Registrar {
    /// A registry whose metric names all start with `<prefix>_`.
    fn new(prefix: &str) -> Registrar {
        Registrar {
            registry: Registry::new_custom(Some(prefix.into()), None).expect("a valid prefix"),
        }
    }

    /// Registers `metric` (a name is registered once) and hands it back.
    fn register<M: Collector + Clone + 'static>(&self, metric: Result<M, prometheus::Error>) -> M {
        let metric = metric.expect("valid metric");
        self.registry
            .register(Box::new(metric.clone()))
            .expect("registered once");
        metric
    }

    /// A counter.
    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help))
    }

    /// A counter per combination of `labels`.
    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels))
    }

    /// A gauge.
    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help))
    }

    /// A gauge per combination of `labels`.
    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    /// A histogram with upper bounds `buckets`.
    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        ))
    }

    /// A histogram with upper bounds `buckets` per combination of `labels`.
    fn histograms(&self, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
        self.register(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        ))
    }
}

/// A tower layer counting gRPC requests and timing them to their response headers.
#[derive(Clone)]
pub struct RpcMetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The method is the path's last two segments (service/method), from our own route table.
        let method = request.uri().path().trim_start_matches('/').to_string();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                // A status in the headers (trailers-only responses: errors); else the stream's
                // status comes later, in the trailers.
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_string(),
                Err(_) => "transport".to_string(),
            };
            let known = method.starts_with("clerkmirror.") || method.starts_with("grpc.");
            let label = if known { method.as_str() } else { "other" };
            metrics.rpcs.with_label_values(&[label, &code]).inc();
            metrics
                .rpc_seconds
                .with_label_values(&[label])
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition's shape: every `# HELP` and `# TYPE` line and every series without its
    /// value (so names, help texts, types, label names and histogram buckets), in order.
    fn shape(rendered: &str) -> Vec<&str> {
        rendered
            .lines()
            .map(|line| match line.starts_with('#') {
                true => line,
                false => line.rsplit_once(' ').map_or(line, |(series, _value)| series),
            })
            .collect()
    }

    #[test]
    fn every_metric_keeps_its_name_type_help_text_labels_and_buckets() {
        let m = Metrics::new();
        // A labelled metric is only exposed once it has a series: give each one.
        m.webhooks.with_label_values(&["o", "r"]).inc();
        m.events.with_label_values(&["t", "s"]).inc();
        m.apply_lag.observe(0.0);
        m.changes.inc();
        m.watchers.set(0);
        m.watchers_ended.with_label_values(&["r"]).inc();
        m.watch_catch_ups.inc();
        m.changes_read.with_label_values(&["r"]).inc();
        m.changes_from_recent.with_label_values(&["r"]).inc();
        m.unrecognised_values.with_label_values(&["t", "v"]).inc();
        m.change_log_rows_skipped.with_label_values(&["e"]).inc();
        m.rpcs.with_label_values(&["m", "c"]).inc();
        m.rpc_seconds.with_label_values(&["m"]).observe(0.0);
        m.set_log(0, 0, 0, 0);
        m.set_backfill_fetched(&[("r".to_owned(), 0)]);
        m.set_drift("r", "k", 0);
        m.cache_reads.with_label_values(&["o"]).inc();
        m.cache.with_label_values(&["w"]).set(0);
        let expected = EXPECTED
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>();
        assert_eq!(shape(&m.render()), expected);
    }

    const EXPECTED: &str = r#"
        # HELP clerk_mirror_apply_lag_seconds From Clerk's event time to the commit that applied it.
        # TYPE clerk_mirror_apply_lag_seconds histogram
        clerk_mirror_apply_lag_seconds_bucket{le="0.05"}
        clerk_mirror_apply_lag_seconds_bucket{le="0.1"}
        clerk_mirror_apply_lag_seconds_bucket{le="0.25"}
        clerk_mirror_apply_lag_seconds_bucket{le="0.5"}
        clerk_mirror_apply_lag_seconds_bucket{le="1"}
        clerk_mirror_apply_lag_seconds_bucket{le="2.5"}
        clerk_mirror_apply_lag_seconds_bucket{le="5"}
        clerk_mirror_apply_lag_seconds_bucket{le="10"}
        clerk_mirror_apply_lag_seconds_bucket{le="30"}
        clerk_mirror_apply_lag_seconds_bucket{le="60"}
        clerk_mirror_apply_lag_seconds_bucket{le="300"}
        clerk_mirror_apply_lag_seconds_bucket{le="3600"}
        clerk_mirror_apply_lag_seconds_bucket{le="+Inf"}
        clerk_mirror_apply_lag_seconds_sum
        clerk_mirror_apply_lag_seconds_count
        # HELP clerk_mirror_backfill_fetched Objects fetched by the backfill in progress.
        # TYPE clerk_mirror_backfill_fetched gauge
        clerk_mirror_backfill_fetched{resource="r"}
        # HELP clerk_mirror_change_log_recent_taken_total Changes taken from the hub's ring of recent changes instead of the database, by reader (cache or stream).
        # TYPE clerk_mirror_change_log_recent_taken_total counter
        clerk_mirror_change_log_recent_taken_total{reader="r"}
        # HELP clerk_mirror_change_log_rows_read_total Change-log rows read from the database, by reader (hub or stream).
        # TYPE clerk_mirror_change_log_rows_read_total counter
        clerk_mirror_change_log_rows_read_total{reader="r"}
        # HELP clerk_mirror_change_log_rows_skipped_total Change-log rows a reader (cache or watch stream) skipped: an entity type this binary does not know.
        # TYPE clerk_mirror_change_log_rows_skipped_total counter
        clerk_mirror_change_log_rows_skipped_total{entity_type="e"}
        # HELP clerk_mirror_changes_total Changes appended to the log.
        # TYPE clerk_mirror_changes_total counter
        clerk_mirror_changes_total
        # HELP clerk_mirror_drift The last reconcile's repairs by resource and kind.
        # TYPE clerk_mirror_drift gauge
        clerk_mirror_drift{kind="k",resource="r"}
        # HELP clerk_mirror_events_total Inbox rows taken by the applier, by event type and status.
        # TYPE clerk_mirror_events_total counter
        clerk_mirror_events_total{status="s",type="t"}
        # HELP clerk_mirror_grpc_request_seconds gRPC latency to the response headers.
        # TYPE clerk_mirror_grpc_request_seconds histogram
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="0.0005"}
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="0.001"}
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="0.0025"}
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="0.005"}
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="0.01"}
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="0.025"}
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="0.05"}
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="0.1"}
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="0.25"}
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="0.5"}
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="1"}
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="5"}
        clerk_mirror_grpc_request_seconds_bucket{method="m",le="+Inf"}
        clerk_mirror_grpc_request_seconds_sum{method="m"}
        clerk_mirror_grpc_request_seconds_count{method="m"}
        # HELP clerk_mirror_grpc_requests_total gRPC requests by method and status code.
        # TYPE clerk_mirror_grpc_requests_total counter
        clerk_mirror_grpc_requests_total{code="c",method="m"}
        # HELP clerk_mirror_log The change log's head and oldest seq, the inbox backlog and dead letters (at scrape).
        # TYPE clerk_mirror_log gauge
        clerk_mirror_log{what="dead_letters"}
        clerk_mirror_log{what="head_seq"}
        clerk_mirror_log{what="inbox_pending"}
        clerk_mirror_log{what="oldest_seq"}
        # HELP clerk_mirror_read_cache The read cache: entries, bytes, completeness, cursor and lag.
        # TYPE clerk_mirror_read_cache gauge
        clerk_mirror_read_cache{what="w"}
        # HELP clerk_mirror_read_cache_reads_total Directory reads by how the read cache answered.
        # TYPE clerk_mirror_read_cache_reads_total counter
        clerk_mirror_read_cache_reads_total{outcome="o"}
        # HELP clerk_mirror_unrecognised_values_total Values this build does not know in what it applied (e.g. a subscription status Clerk added), by entity type and value.
        # TYPE clerk_mirror_unrecognised_values_total counter
        clerk_mirror_unrecognised_values_total{entity_type="t",value="v"}
        # HELP clerk_mirror_watch_database_catch_ups_total Times a stream behind the hub read the database.
        # TYPE clerk_mirror_watch_database_catch_ups_total counter
        clerk_mirror_watch_database_catch_ups_total
        # HELP clerk_mirror_watchers Open watch streams.
        # TYPE clerk_mirror_watchers gauge
        clerk_mirror_watchers
        # HELP clerk_mirror_watchers_ended_total Watch streams ended, by reason.
        # TYPE clerk_mirror_watchers_ended_total counter
        clerk_mirror_watchers_ended_total{reason="r"}
        # HELP clerk_mirror_webhooks_total Webhook requests by outcome and reason.
        # TYPE clerk_mirror_webhooks_total counter
        clerk_mirror_webhooks_total{outcome="o",reason="r"}
    "#;
}

//! Prometheus metrics (the `prometheus` crate): one registry per application, exposed on the
//! admin port. Counters are updated where things happen; the gauges read from the database when
//! scraped (the log's head, oldest cursor, inbox backlog, backfill progress, drift) are set by the
//! admin port (`admin::scrape`): this module is a leaf that knows no table.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

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
    /// (not loaded yet, or disabled), `fully_consistent` (the caller asked for PostgreSQL).
    pub cache_reads: IntCounterVec,
    /// The read cache: entries (`users`, `organizations`, `memberships`), accounted `bytes`,
    /// `complete` (1: everything held), `cursor`, `cursor_lag` (behind the hub) and `loads`.
    pub cache: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new_custom(Some("clerk_mirror".into()), None).expect("a valid prefix");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let webhooks = counter_vec(
            "webhooks_total",
            "Webhook requests by outcome and reason.",
            &["outcome", "reason"],
        );
        let events = counter_vec(
            "events_total",
            "Inbox rows taken by the applier, by event type and status.",
            &["type", "status"],
        );
        let watchers_ended = counter_vec("watchers_ended_total", "Watch streams ended, by reason.", &["reason"]);
        let changes_read = counter_vec(
            "change_log_rows_read_total",
            "Change-log rows read from the database, by reader (hub or stream).",
            &["reader"],
        );
        let change_log_rows_skipped = counter_vec(
            "change_log_rows_skipped_total",
            "Change-log rows a reader (cache or watch stream) skipped: an entity type this binary does not know.",
            &["entity_type"],
        );
        let rpcs = counter_vec(
            "grpc_requests_total",
            "gRPC requests by method and status code.",
            &["method", "code"],
        );
        let apply_lag = Histogram::with_opts(
            HistogramOpts::new(
                "apply_lag_seconds",
                "From Clerk's event time to the commit that applied it.",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
            ]),
        )
        .expect("valid metric");
        registry.register(Box::new(apply_lag.clone())).expect("registered once");
        let rpc_seconds = HistogramVec::new(
            HistogramOpts::new("grpc_request_seconds", "gRPC latency to the response headers.").buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
            &["method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(rpc_seconds.clone()))
            .expect("registered once");
        let changes = IntCounter::new("changes_total", "Changes appended to the log.").expect("valid metric");
        registry.register(Box::new(changes.clone())).expect("registered once");
        let watchers = IntGauge::new("watchers", "Open watch streams.").expect("valid metric");
        registry.register(Box::new(watchers.clone())).expect("registered once");
        let watch_catch_ups = IntCounter::new(
            "watch_database_catch_ups_total",
            "Times a stream behind the hub read the database.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(watch_catch_ups.clone()))
            .expect("registered once");
        let log = IntGaugeVec::new(
            Opts::new(
                "log",
                "The change log's head and oldest seq, the inbox backlog and dead letters (at scrape).",
            ),
            &["what"],
        )
        .expect("valid metric");
        registry.register(Box::new(log.clone())).expect("registered once");
        let backfill_fetched = IntGaugeVec::new(
            Opts::new("backfill_fetched", "Objects fetched by the backfill in progress."),
            &["resource"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(backfill_fetched.clone()))
            .expect("registered once");
        let drift = IntGaugeVec::new(
            Opts::new("drift", "The last reconcile's repairs by resource and kind."),
            &["resource", "kind"],
        )
        .expect("valid metric");
        registry.register(Box::new(drift.clone())).expect("registered once");
        let cache_reads = counter_vec(
            "read_cache_reads_total",
            "Directory reads by how the read cache answered.",
            &["outcome"],
        );
        let cache = IntGaugeVec::new(
            Opts::new(
                "read_cache",
                "The read cache: entries, bytes, completeness, cursor and lag.",
            ),
            &["what"],
        )
        .expect("valid metric");
        registry.register(Box::new(cache.clone())).expect("registered once");
        Arc::new(Metrics {
            registry,
            cache_reads,
            cache,
            webhooks,
            events,
            apply_lag,
            changes,
            watchers,
            watchers_ended,
            watch_catch_ups,
            changes_read,
            change_log_rows_skipped,
            rpcs,
            rpc_seconds,
            log,
            backfill_fetched,
            drift,
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
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
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

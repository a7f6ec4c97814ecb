//! The operator port (loopback by default): Prometheus metrics and liveness.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::grpc::watch::WatchCounters;
use crate::ingest::http::IngestCounters;

/// What the metrics read.
#[derive(Clone)]
pub struct Counters {
    pub ingest: Arc<IngestCounters>,
    pub watch: Arc<WatchCounters>,
}

/// The admin router.
pub fn router(counters: Counters) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(counters)
}

async fn metrics(State(all): State<Counters>) -> impl IntoResponse {
    let counters = &all.ingest;
    let mut out = String::new();
    out.push_str("# HELP clerk_mirror_webhooks_total Webhook requests by outcome.\n");
    out.push_str("# TYPE clerk_mirror_webhooks_total counter\n");
    for (outcome, counter) in [
        ("stored", &counters.stored),
        ("duplicate", &counters.duplicates),
        ("rejected", &counters.rejected),
        ("unavailable", &counters.unavailable),
    ] {
        out.push_str(&format!(
            "clerk_mirror_webhooks_total{{outcome=\"{outcome}\"}} {}\n",
            counter.load(Ordering::Relaxed)
        ));
    }
    let w = &all.watch;
    out.push_str("# HELP clerk_mirror_watchers Open WatchChanges streams.\n# TYPE clerk_mirror_watchers gauge\n");
    out.push_str(&format!("clerk_mirror_watchers {}\n", w.open.load(Ordering::Relaxed)));
    out.push_str("# HELP clerk_mirror_watchers_dropped_total Streams dropped for not reading (CONSUMER_TOO_SLOW).\n");
    out.push_str("# TYPE clerk_mirror_watchers_dropped_total counter\n");
    out.push_str(&format!(
        "clerk_mirror_watchers_dropped_total {}\n",
        w.dropped_too_slow.load(Ordering::Relaxed)
    ));
    out.push_str(
        "# HELP clerk_mirror_watch_database_catch_ups_total Times a stream behind the hub read the database.\n",
    );
    out.push_str("# TYPE clerk_mirror_watch_database_catch_ups_total counter\n");
    out.push_str(&format!(
        "clerk_mirror_watch_database_catch_ups_total {}\n",
        w.database_catch_ups.load(Ordering::Relaxed)
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

//! The operator port (loopback by default): Prometheus metrics and liveness.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::ingest::http::IngestCounters;

/// The admin router.
pub fn router(counters: Arc<IngestCounters>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(counters)
}

async fn metrics(State(counters): State<Arc<IngestCounters>>) -> impl IntoResponse {
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

//! The operator port (loopback by default): Prometheus metrics and liveness.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    pool: sqlx::PgPool,
}

/// The admin router.
pub fn router(metrics: Arc<Metrics>, pool: sqlx::PgPool) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(AdminState { metrics, pool })
}

async fn render(State(state): State<AdminState>) -> impl IntoResponse {
    let text = state.metrics.render(&state.pool).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

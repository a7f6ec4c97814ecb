//! The operator port (loopback by default): Prometheus metrics and liveness.

mod scrape;

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::grpc::auth::Tokens;
use crate::metrics::Metrics;

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    pool: sqlx::PgPool,
}

/// The admin router; with tokens configured, every path but `/healthz` needs an admin token.
pub fn router(metrics: Arc<Metrics>, pool: sqlx::PgPool, tokens: Arc<Tokens>) -> axum::Router {
    let guarded = axum::Router::new()
        .route("/metrics", get(render))
        .route("/reconcile", get(last_reconcile))
        .route_layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let tokens = tokens.clone();
                async move {
                    let header = request.headers().get("authorization").and_then(|v| v.to_str().ok());
                    if tokens.is_empty() || tokens.admits_admin(header) {
                        next.run(request).await
                    } else {
                        (
                            axum::http::StatusCode::UNAUTHORIZED,
                            "an admin bearer token is required\n",
                        )
                            .into_response()
                    }
                }
            },
        ));
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(guarded)
        .with_state(AdminState { metrics, pool })
}

async fn render(State(state): State<AdminState>) -> impl IntoResponse {
    let text = scrape::render(&state.metrics, &state.pool).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// The last reconcile's drift report (JSON), or 404 when none ran yet.
async fn last_reconcile(State(state): State<AdminState>) -> axum::response::Response {
    match crate::backfill::reconcile::last_report(&state.pool).await {
        Ok(Some(report)) => axum::Json(report).into_response(),
        Ok(None) => (axum::http::StatusCode::NOT_FOUND, "no reconcile has run yet\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the reconcile report");
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

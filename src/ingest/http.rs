//! The public HTTP port: `POST /webhooks/clerk`, `/healthz`, `/readyz`, and nothing else. Every
//! rejection is mapped to its status here, in one place.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tracing::{Instrument, info, warn};

use super::verify::{VerifyError, WebhookSecrets};
use super::writer::{InboxWriter, Stored, WriteError};
use crate::db;
use crate::inbox::envelope::{self, NotJson};
use crate::inbox::{InboxRow, Source};
use crate::metrics::Metrics;

/// What the handlers share.
#[derive(Clone)]
pub struct IngestState {
    pub secrets: WebhookSecrets,
    pub writer: InboxWriter,
    /// What `/readyz` answers from.
    pub readiness: db::Readiness,
    pub max_body_bytes: usize,
    pub metrics: Arc<Metrics>,
}

/// Why a webhook was not stored; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("could not read the body")]
    UnreadableBody,
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    NotJson(#[from] NotJson),
    #[error("the database is unavailable; retry later")]
    Unavailable,
    #[error("the event could not be stored")]
    Internal,
}

impl IngestError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            IngestError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            IngestError::UnreadableBody => (StatusCode::BAD_REQUEST, "unreadable_body"),
            IngestError::Verify(e) => match e {
                VerifyError::MissingHeader(_) => (StatusCode::BAD_REQUEST, "missing_header"),
                VerifyError::MalformedHeader(_) | VerifyError::RepeatedHeader(_) => {
                    (StatusCode::BAD_REQUEST, "malformed_header")
                }
                VerifyError::BodyNotUtf8 => (StatusCode::BAD_REQUEST, "body_not_json"),
                VerifyError::BadSignature => (StatusCode::UNAUTHORIZED, "bad_signature"),
                VerifyError::StaleTimestamp => (StatusCode::UNAUTHORIZED, "stale_timestamp"),
                VerifyError::FutureTimestamp => (StatusCode::UNAUTHORIZED, "future_timestamp"),
            },
            IngestError::NotJson(_) => (StatusCode::BAD_REQUEST, "body_not_json"),
            IngestError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            IngestError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = (
            status,
            Json(json!({ "error": { "code": code, "message": self.to_string() } })),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("5"));
        }
        response
    }
}

/// The public HTTP router.
pub fn router(state: IngestState) -> axum::Router {
    axum::Router::new()
        .route("/webhooks/clerk", post(receive))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn receive(State(state): State<IngestState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let span = tracing::info_span!(
        "webhook",
        otel.name = "POST /webhooks/clerk",
        otel.kind = "server",
        svix_id = tracing::field::Empty,
        event_type = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let result = ingest(&state, &parts.headers, body).instrument(span.clone()).await;
    let _entered = span.enter();
    let webhooks = &state.metrics.webhooks;
    match result {
        Ok((stored, id)) => {
            let duplicate = stored == Stored::Duplicate;
            let outcome = if duplicate { "duplicate" } else { "stored" };
            webhooks.with_label_values(&[outcome, "ok"]).inc();
            span.record("status", 200);
            info!(duplicate, "webhook stored");
            Json(json!({ "stored": true, "duplicate": duplicate, "id": id })).into_response()
        }
        Err(e) => {
            let (status, code) = e.status_and_code();
            span.record("status", status.as_u16());
            if status.is_server_error() {
                let outcome = if status == StatusCode::SERVICE_UNAVAILABLE {
                    "unavailable"
                } else {
                    "internal"
                };
                webhooks.with_label_values(&[outcome, code]).inc();
                warn!(code, "webhook not stored");
            } else {
                webhooks.with_label_values(&["rejected", code]).inc();
                info!(code, "webhook rejected");
            }
            e.into_response()
        }
    }
}

async fn ingest(state: &IngestState, headers: &HeaderMap, body: Body) -> Result<(Stored, String), IngestError> {
    let body = axum::body::to_bytes(body, state.max_body_bytes).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            IngestError::TooLarge(state.max_body_bytes)
        } else {
            IngestError::UnreadableBody
        }
    })?;
    // Verify before parsing anything.
    let verifying = crate::telemetry::trace_only(|| tracing::info_span!("verify"));
    let delivery = verifying.in_scope(|| state.secrets.verify(headers, &body))?;
    let span = tracing::Span::current();
    span.record("svix_id", delivery.id.as_str());
    let envelope = envelope::parse(&body)?;
    if let Some(t) = &envelope.event_type {
        span.record("event_type", t.as_str());
    }
    let row = InboxRow {
        source: Source::Webhook,
        event_key: delivery.id.clone(),
        event_type: envelope.event_type,
        event_time: envelope.event_time,
        instance_id: envelope.instance_id,
        // What of it is kept (not one-time codes, not invitation tokens) is the inbox's call.
        body: Some(body),
        trace_context: crate::telemetry::current_traceparent(),
    };
    // The wait for the group commit that holds the row (its own span links back here).
    let waiting = crate::telemetry::trace_only(|| tracing::info_span!("inbox_write"));
    match state.writer.write(row).instrument(waiting).await {
        Ok(stored) => Ok((stored, delivery.id)),
        Err(WriteError::Unavailable(e)) => {
            warn!(error = %e, "database unavailable");
            Err(IngestError::Unavailable)
        }
        Err(WriteError::Stopped) => Err(IngestError::Unavailable),
        Err(WriteError::Refused(e)) => {
            tracing::error!(error = %e, "inbox row refused");
            Err(IngestError::Internal)
        }
    }
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<IngestState>) -> Response {
    match state.readiness.check().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reason) => {
            warn!(%reason, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not ready" }))).into_response()
        }
    }
}

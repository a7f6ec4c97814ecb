//! gRPC-Web on the gRPC port (off by default): the CORS policy for the origins an operator
//! names, and reading an HTTP/1.1 request whole before anything answers it. The translation
//! itself is tonic-web's `GrpcWebLayer`, added in startup beside these.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;

/// gRPC-Web on the gRPC port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcWebConfig {
    /// Origins answered with CORS headers (exactly as a browser sends `Origin`, e.g.
    /// `https://app.example.com`). Empty: no CORS headers, which servers and edge runtimes do
    /// not need.
    pub cors_origins: Vec<String>,
}

/// Request headers a gRPC-Web client sends.
const ALLOWED: [&str; 6] = [
    "authorization",
    "content-type",
    "grpc-timeout",
    "x-grpc-web",
    "x-user-agent",
    "connect-protocol-version",
];

/// Response headers a gRPC-Web client must read: the status, when it comes in the headers
/// (an error answered at once), and an error's details.
const EXPOSED: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// The CORS layer for `config`'s origins; `None` when it names none (no CORS headers at all:
/// servers and edge runtimes do not read them, and a browser is then refused by its own rules).
pub fn cors(config: &GrpcWebConfig) -> Option<CorsLayer> {
    if config.cors_origins.is_empty() {
        return None;
    }
    let origins = config
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect::<Vec<_>>();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST])
            .allow_headers(ALLOWED.map(HeaderName::from_static))
            .expose_headers(EXPOSED.map(HeaderName::from_static))
            .max_age(Duration::from_secs(24 * 60 * 60)),
    )
}

/// Reads an HTTP/1.x request's body whole before passing the request on. Over HTTP/1.1 an
/// answer given before the body was read (a refused token, load shedding) makes the server close
/// the connection under a client still writing its body, which then reports a broken pipe
/// instead of the answer. A gRPC-Web request is one message (no client streaming), at most
/// `--max-message-bytes` (a third more as `grpc-web-text`'s base64), so reading it first costs
/// nothing a call would not read anyway. HTTP/2 requests pass as they are.
#[derive(Clone, Copy)]
pub struct WholeRequestLayer {
    /// Most body bytes read.
    limit: usize,
    /// The message limit, as errors name it.
    max_message_bytes: usize,
}

impl WholeRequestLayer {
    pub fn new(max_message_bytes: usize) -> Self {
        WholeRequestLayer {
            // A frame header (5 bytes), then base64's 4 bytes per 3.
            limit: (max_message_bytes + 5).div_ceil(3) * 4,
            max_message_bytes,
        }
    }
}

impl<S> tower::Layer<S> for WholeRequestLayer {
    type Service = WholeRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WholeRequest { inner, layer: *self }
    }
}

#[derive(Clone)]
pub struct WholeRequest<S> {
    inner: S,
    layer: WholeRequestLayer,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for WholeRequest<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.version() >= http::Version::HTTP_2 {
            return Box::pin(self.inner.call(request));
        }
        // The clone that was made ready is the one that serves (tower's rule for services
        // called from a future).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let error = match Limited::new(body, layer.limit).collect().await {
                Ok(whole) => {
                    let body = tonic::body::Body::new(Full::new(whole.to_bytes()));
                    return inner.call(http::Request::from_parts(parts, body)).await;
                }
                Err(e) if e.is::<http_body_util::LengthLimitError>() => ApiError::RequestTooLarge {
                    limit: layer.max_message_bytes,
                },
                Err(e) => ApiError::IncompleteRequest { why: e.to_string() },
            };
            Ok(tonic::Status::from(error).into_http())
        })
    }
}

//! gRPC-Web on the gRPC port (off by default): the CORS policy for the origins an operator
//! names. The translation itself is tonic-web's `GrpcWebLayer`, added in startup beside this.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

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

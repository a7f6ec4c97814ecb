//! A small client for Clerk's Backend API (`https://api.clerk.com/v1`, bearer secret key):
//! paged lists, within a request budget, retrying 429s (honouring `Retry-After`, which pauses
//! every request), 5xx and network errors with jittered exponential backoff, up to a bound.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::RngExt;
use serde_json::Value;

use super::rate::RateLimiter;
use crate::config::Redacted;

/// Clerk's Backend API.
pub const DEFAULT_API_URL: &str = "https://api.clerk.com/v1";
/// The API version the shapes here were read from.
pub const API_VERSION: &str = "2025-11-10";

/// Why a request failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ClerkApiError {
    #[error("Clerk refused the secret key (HTTP {0}): check CLERK_SECRET_KEY")]
    Unauthorized(u16),
    #[error("not found")]
    NotFound,
    #[error("Clerk answered HTTP {status} for {path}: {message}")]
    Refused { status: u16, path: String, message: String },
    #[error("gave up on {path} after {attempts} attempts: {last}")]
    GaveUp { path: String, attempts: u32, last: String },
    #[error("Clerk's answer for {path} is not what was expected: {0}", path = .1)]
    Unexpected(String, String),
}

type HttpClient = Client<hyper_tls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Empty<Bytes>>;

/// The client of one run.
#[derive(Clone)]
pub struct ClerkApi {
    base: String,
    key: Redacted<String>,
    http: HttpClient,
    limiter: Arc<RateLimiter>,
    /// Attempts per request before giving up.
    pub max_attempts: u32,
    /// The first retry's delay (doubling, jittered).
    pub backoff: Duration,
}

impl ClerkApi {
    pub fn new(base: &str, secret_key: &str, limiter: Arc<RateLimiter>) -> Self {
        ClerkApi {
            base: base.trim_end_matches('/').to_string(),
            key: Redacted(secret_key.to_string()),
            http: Client::builder(TokioExecutor::new()).build(hyper_tls::HttpsConnector::new()),
            limiter,
            max_attempts: 8,
            backoff: Duration::from_millis(500),
        }
    }

    /// GET `path` (with its query) and parse the JSON answer.
    pub async fn get(&self, path: &str) -> Result<Value, ClerkApiError> {
        let url = format!("{}{path}", self.base);
        let mut last = String::new();
        for attempt in 1..=self.max_attempts {
            self.limiter.acquire().await;
            let request = hyper::Request::get(&url)
                .header("authorization", format!("Bearer {}", self.key.0))
                .header("clerk-api-version", API_VERSION)
                .header("accept", "application/json")
                .body(Empty::new())
                .map_err(|e| ClerkApiError::Unexpected(e.to_string(), path.to_string()))?;
            let outcome = tokio::time::timeout(Duration::from_secs(30), self.http.request(request)).await;
            let response = match outcome {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    last = format!("network error: {e}");
                    self.sleep_before_retry(attempt).await;
                    continue;
                }
                Err(_) => {
                    last = "timed out after 30 s".into();
                    self.sleep_before_retry(attempt).await;
                    continue;
                }
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = match response.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    last = format!("reading the answer: {e}");
                    self.sleep_before_retry(attempt).await;
                    continue;
                }
            };
            match status {
                200..=299 => {
                    return serde_json::from_slice(&body)
                        .map_err(|e| ClerkApiError::Unexpected(e.to_string(), path.to_string()));
                }
                429 => {
                    // Every request of the run backs off, not only this one.
                    let delay = Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 120));
                    tracing::warn!(path, delay_s = delay.as_secs(), "Clerk rate limit (429); backing off");
                    self.limiter.pause(delay).await;
                    last = "rate limited (429)".into();
                }
                401 | 403 => return Err(ClerkApiError::Unauthorized(status)),
                404 => return Err(ClerkApiError::NotFound),
                500..=599 => {
                    last = format!("HTTP {status}");
                    self.sleep_before_retry(attempt).await;
                }
                _ => {
                    let message = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    return Err(ClerkApiError::Refused {
                        status,
                        path: path.to_string(),
                        message,
                    });
                }
            }
        }
        Err(ClerkApiError::GaveUp {
            path: path.to_string(),
            attempts: self.max_attempts,
            last,
        })
    }

    async fn sleep_before_retry(&self, attempt: u32) {
        let base = self
            .backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(6)));
        let jittered = base
            .mul_f64(rand::rng().random_range(0.5..1.5))
            .min(Duration::from_secs(60));
        tokio::time::sleep(jittered).await;
    }

    /// The instance the key belongs to (`ins_…`).
    pub async fn instance_id(&self) -> Result<String, ClerkApiError> {
        let v = self.get("/instance").await?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClerkApiError::Unexpected("no `id`".into(), "/instance".into()))
    }
}

//! A small client for Clerk's Backend API (`https://api.clerk.com/v1`, bearer secret key):
//! paged lists, within a request budget, retrying 429s (honouring `Retry-After`, which pauses
//! every request), 5xx and network errors with jittered exponential backoff, up to a bound.
//! Every error names the request (never the key), what answered, and what to do.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::RngExt;
use serde_json::Value;

use super::rate::RateLimiter;
use crate::secrets::Redacted;

/// Clerk's Backend API.
pub const DEFAULT_API_URL: &str = "https://api.clerk.com/v1";
/// The API version the shapes here were read from.
pub const API_VERSION: &str = "2025-11-10";
/// How long one attempt may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One request as errors name it: the method and the path with its query (the secret key only
/// ever travels in a header, never here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub target: String,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.target)
    }
}

/// What an answer's body said, as far as an error is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Clerk's own error message (`errors[0].long_message`, else `message`).
    Clerk(String),
    /// Nothing.
    Empty,
    /// Something that is not a Clerk error: its content type and length (no contents: it may
    /// be a whole HTML page).
    Other { content_type: String, bytes: usize },
}

impl Body {
    fn read(content_type: Option<&str>, body: &[u8]) -> Body {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Body::Empty;
        }
        let clerk = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            let error = &v["errors"][0];
            error["long_message"]
                .as_str()
                .or(error["message"].as_str())
                .map(str::to_string)
        });
        match clerk {
            Some(message) => Body::Clerk(message),
            None => Body::Other {
                content_type: content_type.unwrap_or("no content type").to_string(),
                bytes: body.len(),
            },
        }
    }
}

impl std::fmt::Display for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Clerk(message) => write!(f, " (Clerk: \"{message}\")"),
            Body::Empty => f.write_str(" (an empty body)"),
            Body::Other { content_type, bytes } => {
                write!(f, " ({content_type}, {bytes} bytes: not an error of Clerk's API)")
            }
        }
    }
}

/// The last failure of a request that was retried until the attempts ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 429, after waiting as `Retry-After` asked.
    RateLimited,
    /// A 5xx answer.
    Server(u16, Body),
    /// No answer: the connection failed (DNS, TCP, TLS) or broke off; the causes, outermost
    /// first.
    Network(String),
    /// No answer in time.
    Timeout(Duration),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::RateLimited => f.write_str("429 Too Many Requests (rate limited)"),
            Failure::Server(status, body) => write!(f, "{}{body}", status_text(*status)),
            Failure::Network(cause) => write!(f, "no answer: {cause}"),
            Failure::Timeout(after) => write!(f, "no answer within {} s", after.as_secs()),
        }
    }
}

impl Failure {
    /// What the user can do about it.
    fn advice(&self, base: &str) -> String {
        match self {
            Failure::RateLimited => "The instance's rate limit is shared with your application: lower --api-rate \
                 (CLERK_MIRROR_API_RATE) and run again"
                .into(),
            Failure::Server(..) => "Clerk's Backend API is failing: run again later (https://status.clerk.com)".into(),
            Failure::Network(_) | Failure::Timeout(_) => {
                format!("Check that {base} (--api-url, CLERK_API_URL) is reachable from here, then run again")
            }
        }
    }
}

/// An error and its causes, outermost first, on one line.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// `once`, `3 times`.
fn times(n: u32) -> String {
    if n == 1 { "once".into() } else { format!("{n} times") }
}

/// `404 Not Found`.
fn status_text(status: u16) -> String {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{status} {reason}").trim_end().to_string()
}

/// Why a request failed for good: each names the request, what answered, and what to do. (None
/// shows the secret key.)
#[derive(Debug, thiserror::Error)]
pub enum ClerkApiError {
    /// The base URL cannot be requested: nothing was sent.
    #[error(
        "cannot request {base}{path}: --api-url / CLERK_API_URL `{base}` is not an http:// or https:// URL; \
         Clerk's Backend API is {DEFAULT_API_URL}"
    )]
    InvalidUrl { base: String, path: String },
    /// The key cannot travel in a header: nothing was sent.
    #[error(
        "cannot send {request}: the secret key holds characters an HTTP header cannot carry (a line break?); \
         copy the key into CLERK_SECRET_KEY (--secret-key) again"
    )]
    InvalidKey { request: Request },
    /// 401 or 403.
    #[error(
        "{request} answered {}{body}: Clerk refused the secret key; check that CLERK_SECRET_KEY (--secret-key) \
         is this instance's secret key (sk_live_… or sk_test_…, in the Clerk Dashboard under API keys)",
        status_text(*.status)
    )]
    Unauthorized { request: Request, status: u16, body: Body },
    /// 404 (the object does not exist, or the base URL is not the Backend API's).
    #[error(
        "{request} answered {}{body}: is {base} Clerk's Backend API? Set --api-url / CLERK_API_URL to its \
         base, {DEFAULT_API_URL}",
        status_text(*.status)
    )]
    NotFound {
        request: Request,
        status: u16,
        body: Body,
        base: String,
    },
    /// Another 4xx: Clerk refused the request itself.
    #[error(
        "{request} answered {}{body}: Clerk refused the request (sent as API version {API_VERSION}); \
         please report it, with this message",
        status_text(*.status)
    )]
    Refused { request: Request, status: u16, body: Body },
    /// Retried until the attempts ran out.
    #[error("{request} failed {}; the last attempt: {last}. {}", times(*.attempts), .last.advice(.base))]
    GaveUp {
        request: Request,
        attempts: u32,
        last: Failure,
        base: String,
    },
    /// A success whose body is not what the Backend API answers.
    #[error(
        "{request} answered {what}: is {base} Clerk's Backend API ({DEFAULT_API_URL}), of API version \
         {API_VERSION}?"
    )]
    Unexpected {
        request: Request,
        what: String,
        base: String,
    },
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

    /// The request `GET path` as errors name it.
    fn request(&self, path: &str) -> Request {
        let url = format!("{}{path}", self.base);
        let target = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.path_and_query().map(|p| p.to_string()))
            .unwrap_or(url);
        Request { method: "GET", target }
    }

    /// The error for a successful answer to `GET path` that is not what was expected (`what`:
    /// "a page that is not a list", …).
    pub fn unexpected(&self, path: &str, what: impl Into<String>) -> ClerkApiError {
        ClerkApiError::Unexpected {
            request: self.request(path),
            what: what.into(),
            base: self.base.clone(),
        }
    }

    /// GET `path` (with its query) and parse the JSON answer.
    pub async fn get(&self, path: &str) -> Result<Value, ClerkApiError> {
        let url = format!("{}{path}", self.base);
        let uri = url
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
            .ok_or_else(|| ClerkApiError::InvalidUrl {
                base: self.base.clone(),
                path: path.to_string(),
            })?;
        let request_name = || self.request(path);
        let authorization =
            http::HeaderValue::from_str(&format!("Bearer {}", self.key.0)).map_err(|_| ClerkApiError::InvalidKey {
                request: request_name(),
            })?;
        let mut last = Failure::Timeout(REQUEST_TIMEOUT);
        for attempt in 1..=self.max_attempts {
            self.limiter.acquire().await;
            let request = hyper::Request::get(uri.clone())
                .header("authorization", authorization.clone())
                .header("clerk-api-version", API_VERSION)
                .header("accept", "application/json")
                .body(Empty::new())
                .expect("a valid URI and valid headers");
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request)).await;
            let response = match outcome {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    last = Failure::Network(match (e.is_connect(), std::error::Error::source(&e)) {
                        (true, Some(cause)) => format!(
                            "cannot connect to {}: {}",
                            uri.authority().expect("checked above"),
                            causes(cause)
                        ),
                        _ => causes(&e),
                    });
                    self.sleep_before_retry(attempt).await;
                    continue;
                }
                Err(_) => {
                    last = Failure::Timeout(REQUEST_TIMEOUT);
                    self.sleep_before_retry(attempt).await;
                    continue;
                }
            };
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
            let content_type = header("content-type");
            let body = match response.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    last = Failure::Network(format!(
                        "the answer ({}) broke off: {}",
                        status_text(status),
                        causes(&e)
                    ));
                    self.sleep_before_retry(attempt).await;
                    continue;
                }
            };
            let said = || Body::read(content_type.as_deref(), &body);
            match status {
                200..=299 => {
                    return serde_json::from_slice(&body).map_err(|e| {
                        self.unexpected(
                            path,
                            format!(
                                "{} with a body that is not JSON ({}: {e})",
                                status_text(status),
                                content_type.as_deref().unwrap_or("no content type")
                            ),
                        )
                    });
                }
                429 => {
                    // Every request of the run backs off, not only this one.
                    let delay = Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 120));
                    tracing::warn!(path, delay_s = delay.as_secs(), "Clerk rate limit (429); backing off");
                    self.limiter.pause(delay).await;
                    last = Failure::RateLimited;
                }
                401 | 403 => {
                    return Err(ClerkApiError::Unauthorized {
                        request: request_name(),
                        status,
                        body: said(),
                    });
                }
                404 => {
                    return Err(ClerkApiError::NotFound {
                        request: request_name(),
                        status,
                        body: said(),
                        base: self.base.clone(),
                    });
                }
                500..=599 => {
                    last = Failure::Server(status, said());
                    self.sleep_before_retry(attempt).await;
                }
                _ => {
                    return Err(ClerkApiError::Refused {
                        request: request_name(),
                        status,
                        body: said(),
                    });
                }
            }
        }
        Err(ClerkApiError::GaveUp {
            request: request_name(),
            attempts: self.max_attempts,
            last,
            base: self.base.clone(),
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
            .ok_or_else(|| self.unexpected("/instance", "an instance without an `id`"))
    }
}

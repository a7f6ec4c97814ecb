//! One attempt at a delivery: `POST` the body with its signed headers to the destination's URL,
//! resolving its host at connect time and connecting only to addresses the [`Policy`] allows (so
//! DNS rebinding cannot reach a forbidden one), following no redirect, reading at most a few KiB
//! of the answer, within the delivery timeout. What answered is an [`Answer`] for
//! [`super::outcome`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

use super::address::{Policy, Refusal};
use super::outcome::Answer;

/// How long a receiver has to answer (Standard Webhooks' usual 15 s).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Most bytes of an answer read (the rest is dropped with the connection).
const ANSWER_BYTES: usize = 16 * 1024;

/// A resolver that keeps only the addresses the policy allows, at `port`.
#[derive(Clone)]
struct Checked {
    policy: Arc<Policy>,
    port: u16,
}

type Resolved = Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, std::io::Error>> + Send>>;

impl tower::Service<Name> for Checked {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolved;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let (policy, port) = (self.policy.clone(), self.port);
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port)).await?.collect();
            let mut refused = Vec::new();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| match policy.check(*a) {
                    Ok(()) => true,
                    Err(r) => {
                        refused.push(r.to_string());
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{} resolves to no address a delivery may reach: {}", name.as_str(), refused.join("; ")),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// Sends one destination's deliveries.
pub struct Sender {
    uri: http::Uri,
    client: Client<hyper_tls::HttpsConnector<HttpConnector<Checked>>, Full<Bytes>>,
    timeout: Duration,
}

/// The error and its causes, in one line.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

impl Sender {
    /// A sender to `url`, checked against `policy` (again at every connection).
    pub fn new(url: &str, policy: Policy, timeout: Duration) -> Result<Sender, Refusal> {
        let target = policy.check_url(url)?;
        let uri: http::Uri = url.parse().map_err(|_| Refusal::NotAUrl(url.to_string()))?;
        let mut http = HttpConnector::new_with_resolver(Checked {
            policy: Arc::new(policy),
            port: target.port,
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let connector = hyper_tls::HttpsConnector::new_with_connector(http);
        Ok(Sender {
            uri,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }

    /// One attempt: `POST` `body` with `headers`.
    pub async fn post(&self, headers: &[(&'static str, String)], body: Bytes) -> Answer {
        let mut request = http::Request::post(self.uri.clone())
            .header("content-type", "application/json")
            .header("user-agent", concat!("clerk-mirror/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Answer::Unreachable(format!("the request cannot be made: {e}")),
        };
        let attempt = async {
            let response = self.client.request(request).await.map_err(|e| causes(&e))?;
            let code = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // The answer's body says nothing the sender needs; read a little of it, so the
            // connection can be reused when it is short.
            let _ = Limited::new(response.into_body(), ANSWER_BYTES).collect().await;
            Ok::<_, String>(Answer::Status { code, retry_after })
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Err(_) => Answer::Timeout,
            Ok(Err(why)) => Answer::Unreachable(why),
            Ok(Ok(answer)) => answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;

    use super::*;
    use crate::outbound::sign::{SigningSecret, headers};

    /// What the receiver saw: (path, whether the signature verified).
    type Seen = Arc<Mutex<Vec<(String, bool)>>>;

    /// A receiver on 127.0.0.1 verifying with svix: `/ok` answers 204, `/moved` a redirect to
    /// `/ok`, `/busy` 429 with Retry-After, `/hang` never.
    async fn receiver(secret: &str) -> (SocketAddr, Seen) {
        let seen: Seen = Arc::default();
        let verifier = Arc::new(svix::webhooks::Webhook::new(secret).unwrap());
        let record = move |path: &'static str| {
            let verifier = verifier.clone();
            move |State(seen): State<Seen>, headers: HeaderMap, body: Bytes| async move {
                let ok = verifier.verify(&body, &headers).is_ok();
                seen.lock().unwrap().push((path.to_string(), ok));
            }
        };
        let app = axum::Router::new()
            .route("/ok", axum::routing::post({
                let r = record("/ok");
                move |s, h, b| async move {
                    r(s, h, b).await;
                    StatusCode::NO_CONTENT
                }
            }))
            .route("/moved", axum::routing::post({
                let r = record("/moved");
                move |s, h, b| async move {
                    r(s, h, b).await;
                    (StatusCode::FOUND, [("location", "/ok")]).into_response()
                }
            }))
            .route("/busy", axum::routing::post(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")]) }))
            .route("/hang", axum::routing::post(|| std::future::pending::<StatusCode>()))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, seen)
    }

    fn private() -> Policy {
        Policy {
            allow_private: true,
            own: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_signed_delivery_is_verified_by_the_receiver_and_its_answer_is_what_the_sender_sees() {
        let secret = SigningSecret::generate();
        let (addr, seen) = receiver(&secret.text()).await;
        let body = Bytes::from_static(br#"{"type":"clerkmirror.change"}"#);
        let signed = headers(std::slice::from_ref(&secret), "msg_c1.1", chrono::Utc::now().timestamp(), &body);
        let sender = |path: &str, timeout| Sender::new(&format!("http://localhost:{}{path}", addr.port()), private(), timeout).unwrap();
        assert_eq!(
            sender("/ok", DELIVERY_TIMEOUT).post(&signed, body.clone()).await,
            Answer::Status { code: 204, retry_after: None }
        );
        // No redirect is followed: the 302 is the answer, and /ok is not asked again.
        assert_eq!(
            sender("/moved", DELIVERY_TIMEOUT).post(&signed, body.clone()).await,
            Answer::Status { code: 302, retry_after: None }
        );
        assert_eq!(
            sender("/busy", DELIVERY_TIMEOUT).post(&signed, body.clone()).await,
            Answer::Status { code: 429, retry_after: Some("7".into()) }
        );
        assert_eq!(sender("/hang", Duration::from_millis(200)).post(&signed, body.clone()).await, Answer::Timeout);
        assert_eq!(*seen.lock().unwrap(), [("/ok".to_string(), true), ("/moved".to_string(), true)]);
    }

    #[tokio::test]
    async fn a_host_resolving_to_a_refused_address_is_not_connected_to_and_the_answer_says_why() {
        let secret = SigningSecret::generate();
        let (addr, seen) = receiver(&secret.text()).await;
        let body = Bytes::from_static(b"{}");
        let signed = headers(std::slice::from_ref(&secret), "msg_1", chrono::Utc::now().timestamp(), &body);
        // `localhost` passes the URL check (a name) but resolves to loopback, refused without the
        // flag; with https required first, the URL is refused before anything is resolved.
        let strict = Policy::default();
        assert!(matches!(
            Sender::new(&format!("http://localhost:{}/ok", addr.port()), strict.clone(), DELIVERY_TIMEOUT),
            Err(Refusal::NotHttps(_))
        ));
        let sender = Sender::new(&format!("https://localhost:{}/ok", addr.port()), strict, DELIVERY_TIMEOUT).unwrap();
        match sender.post(&signed, body.clone()).await {
            Answer::Unreachable(why) => assert!(why.contains("loopback") && why.contains("--allow-private-destinations"), "{why}"),
            other => panic!("{other:?}"),
        }
        // The mirror's own port, by name.
        let own = Policy {
            allow_private: true,
            own: vec![addr],
        };
        let sender = Sender::new(&format!("http://localhost:{}/ok", addr.port()), own, DELIVERY_TIMEOUT).unwrap();
        match sender.post(&signed, body).await {
            Answer::Unreachable(why) => assert!(why.contains("the mirror's own ports"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(seen.lock().unwrap().is_empty(), "nothing reached the receiver");
    }
}

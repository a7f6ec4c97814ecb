//! Who may call the gRPC APIs: bearer tokens, one per client, each with a name for the logs.
//! Reader tokens open `DirectoryService` and `WatchService`; admin tokens open everything,
//! `AdminService` included. Health and reflection stay open (probes, `buf curl --list-methods`).
//! Tokens are compared in constant time and never logged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::secrets::Redacted;

/// A named token.
#[derive(Clone, Debug)]
pub struct Token {
    pub name: String,
    pub secret: Redacted<String>,
}

impl Token {
    /// Parses `name=token`.
    pub fn parse(text: &str) -> Result<Token, String> {
        match text.split_once('=') {
            Some((name, secret)) if !name.trim().is_empty() && secret.trim().len() >= 16 => Ok(Token {
                name: name.trim().to_string(),
                secret: Redacted(secret.trim().to_string()),
            }),
            _ => Err("a token is `name=secret`, with a secret of at least 16 characters".into()),
        }
    }
}

/// The tokens a server accepts; empty: no authentication.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    pub readers: Vec<Token>,
    pub admins: Vec<Token>,
}

impl Tokens {
    pub fn is_empty(&self) -> bool {
        self.readers.is_empty() && self.admins.is_empty()
    }

    /// Whether an `authorization` header carries an admin token.
    pub fn admits_admin(&self, header: Option<&str>) -> bool {
        matches!(who(self, header), Some((_, true)))
    }
}

/// Equal, in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client a bearer header names: `Some((name, admin))`.
fn who<'a>(tokens: &'a Tokens, header: Option<&str>) -> Option<(&'a str, bool)> {
    let presented = header?.strip_prefix("Bearer ")?.trim().as_bytes();
    let mut found = None;
    // Check every token (no early exit), so timing says nothing about which matched.
    for (token, admin) in tokens
        .readers
        .iter()
        .map(|t| (t, false))
        .chain(tokens.admins.iter().map(|t| (t, true)))
    {
        if constant_time_eq(token.secret.0.as_bytes(), presented) && found.is_none() {
            found = Some((token.name.as_str(), admin));
        }
    }
    found
}

/// What a path needs.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    Nothing,
    Reader,
    Admin,
}

fn need(path: &str) -> Need {
    if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
        Need::Nothing
    } else if path.starts_with("/clerkmirror.v1.AdminService/") {
        Need::Admin
    } else {
        Need::Reader
    }
}

/// The tower layer enforcing the tokens (no-op when there are none).
#[derive(Clone)]
pub struct AuthLayer(pub Arc<Tokens>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            tokens: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Arc<Tokens>,
}

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !self.tokens.is_empty() {
            let needed = need(request.uri().path());
            let header = request.headers().get("authorization").and_then(|v| v.to_str().ok());
            let refusal = match (needed, who(&self.tokens, header)) {
                (Need::Nothing, _) => None,
                (_, None) => Some(tonic::Status::unauthenticated("a valid bearer token is required")),
                (Need::Admin, Some((name, false))) => {
                    tracing::warn!(client = name, "a reader token was used on AdminService");
                    Some(tonic::Status::permission_denied("this token may not call AdminService"))
                }
                (_, Some((name, _))) => {
                    tracing::Span::current().record("client", name);
                    None
                }
            };
            if let Some(status) = refusal {
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_match_and_never_show() {
        let t = Token::parse("billing=0123456789abcdef0123").unwrap();
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        assert!(Token::parse("short=abc").is_err());
        assert!(Token::parse("=0123456789abcdef0123").is_err());
        let tokens = Tokens {
            readers: vec![t],
            admins: vec![Token::parse("ops=ffffffffffffffffffff").unwrap()],
        };
        assert_eq!(
            who(&tokens, Some("Bearer 0123456789abcdef0123")),
            Some(("billing", false))
        );
        assert_eq!(who(&tokens, Some("Bearer ffffffffffffffffffff")), Some(("ops", true)));
        assert_eq!(who(&tokens, Some("Bearer 0123456789abcdef0124")), None);
        assert_eq!(who(&tokens, Some("0123456789abcdef0123")), None);
        assert_eq!(who(&tokens, None), None);
        assert_eq!(need("/grpc.health.v1.Health/Check"), Need::Nothing);
        assert_eq!(need("/clerkmirror.v1.AdminService/ReplayEvents"), Need::Admin);
        assert_eq!(need("/clerkmirror.v1.DirectoryService/GetUser"), Need::Reader);
    }
}

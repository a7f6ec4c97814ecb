//! Svix signature verification over the raw request bytes, against every configured secret
//! (so secrets can rotate), with a 5-minute timestamp tolerance and an injectable clock.

use std::sync::Arc;

use axum::http::HeaderMap;
use svix::webhooks::{Webhook, WebhookError};

/// How far the signed timestamp may be from now, either way.
pub const TOLERANCE_SECONDS: i64 = 5 * 60;
/// Longest delivery id accepted (Svix's are ~30 characters).
pub const MAX_ID_LEN: usize = 256;

/// Seconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp())
}

/// Why a request was not accepted as a genuine delivery.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header `svix-{0}` (or `webhook-{0}`)")]
    MissingHeader(&'static str),
    #[error("malformed header `svix-{0}` (or `webhook-{0}`)")]
    MalformedHeader(&'static str),
    #[error("header `svix-{0}` (or `webhook-{0}`) sent more than once")]
    RepeatedHeader(&'static str),
    #[error("the body is not UTF-8")]
    BodyNotUtf8,
    #[error("no signature matches any configured secret")]
    BadSignature,
    #[error("the signed timestamp is more than 5 minutes old")]
    StaleTimestamp,
    #[error("the signed timestamp is more than 5 minutes in the future")]
    FutureTimestamp,
}

/// A configuration error in a webhook secret (the secret itself is never shown).
#[derive(Debug, thiserror::Error)]
#[error("webhook secret #{position} is not a valid Svix signing secret (`whsec_` followed by base64): {reason}")]
pub struct SecretError {
    pub position: usize,
    reason: String,
}

/// The verified identity of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The `svix-id`: the same on every retry of one message.
    pub id: String,
    /// The signed `svix-timestamp`, in seconds.
    pub timestamp: i64,
}

/// The secrets any of which may sign a webhook, and the clock the tolerance is checked against.
#[derive(Clone)]
pub struct WebhookSecrets {
    secrets: Arc<Vec<Webhook>>,
    clock: Clock,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecrets({} configured)", self.secrets.len())
    }
}

impl WebhookSecrets {
    /// Parses secrets such as `whsec_…`; several may be given separated by commas.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, SecretError> {
        let mut secrets = Vec::new();
        for value in values {
            for raw in value.as_ref().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let position = secrets.len() + 1;
                let webhook = Webhook::new(raw).map_err(|e| SecretError {
                    position,
                    reason: match e {
                        WebhookError::EmptySecret => "it is empty".to_string(),
                        WebhookError::InvalidSecret(e) => format!("invalid base64 ({e})"),
                        other => other.to_string(),
                    },
                })?;
                secrets.push(webhook);
            }
        }
        Ok(WebhookSecrets {
            secrets: Arc::new(secrets),
            clock: system_clock(),
        })
    }

    /// Checks the tolerance against `clock` instead of the system clock (tests, test vectors).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Verifies `body` as signed by any configured secret. Headers are read as `svix-*`, falling
    /// back to `webhook-*` (the Standard Webhooks names).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, VerifyError> {
        let id = header(headers, "id")?;
        if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(VerifyError::MalformedHeader("id"));
        }
        header(headers, "signature")?;
        let timestamp: i64 = header(headers, "timestamp")?
            .parse()
            .map_err(|_| VerifyError::MalformedHeader("timestamp"))?;
        let mut outcome = Err(VerifyError::BadSignature);
        for secret in self.secrets.iter() {
            match secret.verify_ignoring_timestamp(body, headers) {
                Ok(()) => {
                    outcome = Ok(());
                    break;
                }
                Err(WebhookError::InvalidPayload) => return Err(VerifyError::BodyNotUtf8),
                Err(_) => {}
            }
        }
        outcome?;
        // The signature binds the timestamp, so it is checked only once the signature holds.
        let now = (self.clock)();
        if timestamp < now - TOLERANCE_SECONDS {
            return Err(VerifyError::StaleTimestamp);
        }
        if timestamp > now + TOLERANCE_SECONDS {
            return Err(VerifyError::FutureTimestamp);
        }
        Ok(Delivery {
            id: id.to_string(),
            timestamp,
        })
    }

    /// Signs `body` as Svix does, with the first secret: `v1,<base64>` (tools and tests).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
        self.secrets.first()?.sign(id, timestamp, body).ok()
    }
}

/// The `svix-{name}` header, else `webhook-{name}`. A header sent more than once is refused: which
/// copy a proxy or a library would pick is not defined, and Svix sends each once.
fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    let (svix, standard) = (format!("svix-{name}"), format!("webhook-{name}"));
    if headers.get_all(&svix).iter().nth(1).is_some() || headers.get_all(&standard).iter().nth(1).is_some() {
        return Err(VerifyError::RepeatedHeader(name));
    }
    let value = headers
        .get(&svix)
        .or_else(|| headers.get(&standard))
        .ok_or(VerifyError::MissingHeader(name))?;
    value.to_str().map_err(|_| VerifyError::MalformedHeader(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ts: i64, secrets: &[&str]) -> WebhookSecrets {
        WebhookSecrets::parse(secrets).unwrap().with_clock(Arc::new(move || ts))
    }

    fn headers(id: &str, ts: i64, sig: &str, prefix: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            format!("{prefix}-id").parse::<axum::http::HeaderName>().unwrap(),
            id.parse().unwrap(),
        );
        h.insert(
            format!("{prefix}-timestamp").parse::<axum::http::HeaderName>().unwrap(),
            ts.to_string().parse().unwrap(),
        );
        h.insert(
            format!("{prefix}-signature").parse::<axum::http::HeaderName>().unwrap(),
            sig.parse().unwrap(),
        );
        h
    }

    #[test]
    fn the_svix_manual_verification_vector_verifies() {
        let body = br#"{"event_type":"ping","data":{"success":true}}"#;
        let s = at(1731705121, &["whsec_plJ3nmyCDGBKInavdOK15jsl"]);
        let sig = "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0=";
        assert_eq!(s.sign("msg_loFOjxBNrRLzqYUf", 1731705121, body).unwrap(), sig);
        let d = s
            .verify(&headers("msg_loFOjxBNrRLzqYUf", 1731705121, sig, "svix"), body)
            .unwrap();
        assert_eq!(d.id, "msg_loFOjxBNrRLzqYUf");
    }

    #[test]
    fn the_svix_crate_vector_verifies_with_webhook_header_names() {
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let s = at(1649367553, &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]);
        let sig = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        let h = headers("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, sig, "webhook");
        assert!(s.verify(&h, body).is_ok());
    }

    #[test]
    fn a_vector_outside_the_tolerance_is_stale_or_future() {
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let sig = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        let h = headers("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, sig, "svix");
        let secret = ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"];
        assert_eq!(
            at(1649367553 + 301, &secret).verify(&h, body),
            Err(VerifyError::StaleTimestamp)
        );
        assert_eq!(
            at(1649367553 - 301, &secret).verify(&h, body),
            Err(VerifyError::FutureTimestamp)
        );
        assert!(at(1649367553 + 300, &secret).verify(&h, body).is_ok());
    }

    #[test]
    fn a_malformed_secret_is_rejected_without_showing_it() {
        let err = WebhookSecrets::parse(&["whsec_plJ3nmyCDGBKInavdOK15jsl,whsec_!!!"]).unwrap_err();
        assert_eq!(err.position, 2);
        assert!(!err.to_string().contains("!!!"));
    }
}

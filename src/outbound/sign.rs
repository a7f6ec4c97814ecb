//! Standard Webhooks signing (<https://www.standardwebhooks.com>, what Svix does for Clerk): a
//! destination's secret is `whsec_` and the base64 of its key; each attempt carries
//! `webhook-id` (stable per change), `webhook-timestamp` (seconds, the attempt's own) and
//! `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`, one per
//! secret, space-separated, so that a receiver holding either secret verifies during a rotation.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::secrets::Redacted;

/// Bytes of a generated key (Svix's are 24).
const KEY_BYTES: usize = 24;

/// The prefix of a secret's text.
const PREFIX: &str = "whsec_";

/// A destination's signing key.
#[derive(Clone, Debug)]
pub struct SigningSecret(Redacted<Vec<u8>>);

/// Why a text is not a signing secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("a signing secret starts with `whsec_` followed by base64 (as `CreateDestination` shows it)")]
    NotWhsec,
    #[error("a signing secret's key must be 24 to 64 bytes of base64 after `whsec_`")]
    BadKey,
}

impl SigningSecret {
    /// A new random secret.
    pub fn generate() -> SigningSecret {
        let mut key = vec![0u8; KEY_BYTES];
        rand::fill(&mut key[..]);
        SigningSecret(Redacted(key))
    }

    /// The secret `whsec_…` names.
    pub fn parse(text: &str) -> Result<SigningSecret, SecretError> {
        let encoded = text.strip_prefix(PREFIX).ok_or(SecretError::NotWhsec)?;
        SigningSecret::from_key(STANDARD.decode(encoded).map_err(|_| SecretError::BadKey)?)
    }

    /// The secret of key `key` (24 to 64 bytes).
    pub fn from_key(key: Vec<u8>) -> Result<SigningSecret, SecretError> {
        if !(KEY_BYTES..=64).contains(&key.len()) {
            return Err(SecretError::BadKey);
        }
        Ok(SigningSecret(Redacted(key)))
    }

    /// The key's bytes (to seal it).
    pub(super) fn key(&self) -> &[u8] {
        &self.0.0
    }

    /// The text a receiver configures (`whsec_…`): shown once, when made.
    pub fn text(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0.0))
    }

    /// `v1,` and the signature of `body` sent as `id` at `timestamp`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0.0);
        let mut context = ring::hmac::Context::with_key(&key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
    }
}

/// The three headers of one attempt at delivering `body` as `id`, signed now (`timestamp`,
/// seconds) with every secret of the destination (two during a rotation).
pub fn headers(secrets: &[SigningSecret], id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
    let signatures: Vec<String> = secrets.iter().map(|s| s.sign(id, timestamp, body)).collect();
    [
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signatures.join(" ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent verifier: the svix crate's.
    fn verifies(secret: &str, headers: &[(&'static str, String); 3], body: &[u8]) -> bool {
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().unwrap());
        }
        svix::webhooks::Webhook::new(secret).unwrap().verify(body, &map).is_ok()
    }

    #[test]
    fn a_delivery_signed_with_a_generated_secret_verifies_with_svix_and_fails_with_another_secret_or_body() {
        let secret = SigningSecret::generate();
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"type":"clerkmirror.change","timestamp":"2026-12-07T00:00:00Z","data":{"cursor":"c1.1"}}"#;
        let h = headers(std::slice::from_ref(&secret), "chg_c1.1", now, body);
        assert!(h[2].1.starts_with("v1,"));
        assert!(verifies(&secret.text(), &h, body));
        assert!(!verifies(&SigningSecret::generate().text(), &h, body));
        assert!(!verifies(&secret.text(), &h, br#"{"type":"clerkmirror.change"}"#));
        // The text round-trips; a wrong text is refused with what is expected.
        assert_eq!(SigningSecret::parse(&secret.text()).unwrap().text(), secret.text());
        assert_eq!(SigningSecret::parse("sk_live_x").unwrap_err(), SecretError::NotWhsec);
        assert_eq!(SigningSecret::parse("whsec_c2hvcnQ=").unwrap_err(), SecretError::BadKey);
        assert_eq!(SigningSecret::parse("whsec_!!").unwrap_err(), SecretError::BadKey);
    }

    #[test]
    fn svixs_published_test_vector_signs_alike() {
        let secret = SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            secret.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1_649_367_553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn each_attempt_is_signed_afresh_and_during_a_rotation_either_secret_verifies() {
        let (old, new) = (SigningSecret::generate(), SigningSecret::generate());
        let now = chrono::Utc::now().timestamp();
        let body = b"{}";
        let first = headers(&[old.clone(), new.clone()], "chg_1", now - 60, body);
        let retry = headers(&[old.clone(), new.clone()], "chg_1", now, body);
        assert_eq!(first[0], retry[0], "the same webhook-id");
        assert_ne!(first[2], retry[2], "a new signature for the new timestamp");
        for secret in [&old, &new] {
            assert!(verifies(&secret.text(), &retry, body));
        }
        // A timestamp outside the receiver's tolerance (5 minutes) is refused by it: a retry
        // must not reuse the first attempt's headers.
        let stale = headers(&[old.clone()], "chg_1", now - 600, body);
        assert!(!verifies(&old.text(), &stale, body));
        // Svix's own signature of the same message is the same bytes.
        let svix = svix::webhooks::Webhook::new(&old.text()).unwrap().sign("chg_1", now, body).unwrap();
        assert_eq!(svix, old.sign("chg_1", now, body));
    }
}

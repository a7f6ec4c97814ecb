//! A destination's signing secrets as PostgreSQL keeps them: sealed with AES-256-GCM under a
//! key given to `serve`, so that a database dump alone does not reveal them. The text is `v1.`
//! and the base64 of a random 12-byte nonce followed by the ciphertext and its tag; the
//! destination's id is the associated data, so a sealed secret copied to another destination
//! does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::sign::SigningSecret;

/// The prefix of a sealed secret's text (the format's version).
const VERSION: &str = "v1.";

/// The key that seals destinations' secrets.
pub struct SealingKey(LessSafeKey);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(…)")
    }
}

/// Why a key or a sealed secret cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the destinations key must be 32 bytes of base64 (make one with `openssl rand -base64 32`)")]
    BadKey,
    #[error(
        "a destination's stored secret does not open with this destinations key: the key changed, or the row was \
         copied from another destination; rotate the destination's secret"
    )]
    DoesNotOpen,
}

impl SealingKey {
    /// A new key's text: 32 random bytes, base64.
    pub fn generate_text() -> String {
        let mut key = [0u8; 32];
        rand::fill(&mut key[..]);
        STANDARD.encode(key)
    }

    /// The key `text` (base64 of 32 bytes) names.
    pub fn parse(text: &str) -> Result<SealingKey, SealError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| SealError::BadKey)?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealError::BadKey)?;
        Ok(SealingKey(LessSafeKey::new(key)))
    }

    /// `secret`, sealed for destination `destination`.
    pub fn seal(&self, destination: &str, secret: &SigningSecret) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce[..]);
        let mut sealed = secret.key().to_vec();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(destination.as_bytes()), &mut sealed)
            .expect("a secret is far below AES-GCM's length limit");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{VERSION}{}", STANDARD.encode(out))
    }

    /// The secret `sealed` holds for destination `destination`.
    pub fn open(&self, destination: &str, sealed: &str) -> Result<SigningSecret, SealError> {
        let bytes = sealed
            .strip_prefix(VERSION)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or(SealError::DoesNotOpen)?;
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::DoesNotOpen)?;
        let mut buffer = sealed.to_vec();
        let key = self
            .0
            .open_in_place(nonce, Aad::from(destination.as_bytes()), &mut buffer)
            .map_err(|_| SealError::DoesNotOpen)?;
        SigningSecret::from_key(key.to_vec()).map_err(|_| SealError::DoesNotOpen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealingKey {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes[..]);
        SealingKey::parse(&STANDARD.encode(bytes)).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_for_its_destination_and_shows_nothing_of_the_secret() {
        let (k, other) = (key(), key());
        let secret = SigningSecret::generate();
        let sealed = k.seal("dst_1", &secret);
        assert!(sealed.starts_with("v1."));
        assert_eq!(k.open("dst_1", &sealed).unwrap().text(), secret.text());
        // Sealed afresh each time (a random nonce): the same secret never seals alike.
        assert_ne!(k.seal("dst_1", &secret), sealed);
        assert_eq!(other.open("dst_1", &sealed).unwrap_err(), SealError::DoesNotOpen);
        assert_eq!(k.open("dst_2", &sealed).unwrap_err(), SealError::DoesNotOpen, "copied to another destination");
        let key_text = secret.text();
        let raw = key_text.trim_start_matches("whsec_");
        assert!(!sealed.contains(raw));
        // A tampered or truncated text does not open.
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(k.open("dst_1", std::str::from_utf8(&tampered).unwrap()).is_err());
        for bad in ["", "v1.", "v1.AAAA", "v2.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not base64"] {
            assert_eq!(k.open("dst_1", bad).unwrap_err(), SealError::DoesNotOpen, "{bad}");
        }
        // A key of the wrong size is refused, saying what is expected.
        assert_eq!(SealingKey::parse(&STANDARD.encode([0u8; 16])).unwrap_err(), SealError::BadKey);
        assert_eq!(SealingKey::parse("!!").unwrap_err(), SealError::BadKey);
        assert!(format!("{k:?}").contains('…'));
    }
}

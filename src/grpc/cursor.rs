//! Cursors: opaque strings naming a position in one database's change log (its `log_id` and a
//! `seq`), so a cursor from another database is recognised.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A position in a change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub log_id: String,
    pub seq: i64,
}

/// A string that is not a cursor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a clerk-mirror cursor")]
pub struct MalformedCursor;

impl Cursor {
    pub fn new(log_id: &str, seq: i64) -> Self {
        Cursor {
            log_id: log_id.to_string(),
            seq,
        }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1.{}.{}", self.log_id, self.seq))
    }

    pub fn decode(text: &str) -> Result<Cursor, MalformedCursor> {
        let raw = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| MalformedCursor)?;
        let raw = String::from_utf8(raw).map_err(|_| MalformedCursor)?;
        let mut parts = raw.splitn(3, '.');
        let (Some("v1"), Some(log_id), Some(seq)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(MalformedCursor);
        };
        let seq: i64 = seq.parse().map_err(|_| MalformedCursor)?;
        if log_id.is_empty() || seq < 0 {
            return Err(MalformedCursor);
        }
        Ok(Cursor {
            log_id: log_id.to_string(),
            seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_rejected() {
        let c = Cursor::new("abc123", 42);
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        for bad in [
            "",
            "!!",
            "djEuYWJj",
            &URL_SAFE_NO_PAD.encode("v2.x.1"),
            &URL_SAFE_NO_PAD.encode("v1.x.-1"),
        ] {
            assert_eq!(Cursor::decode(bad), Err(MalformedCursor), "{bad}");
        }
    }
}

//! Cursors: strings naming a position in one database's change log (its `log_id` and a `seq`),
//! so a cursor from another database is recognised. The form is `c1.<seq, 20 digits>.<log id>`:
//! clients treat it as opaque, except that two cursors of one log compare as strings in log
//! order (the list-then-watch recipe relies on it).

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
        Cursor::text(&self.log_id, self.seq)
    }

    /// The cursor of `seq` in the log `log_id`, as text (what `encode` gives, without building
    /// a `Cursor`: every read's answer carries one).
    pub fn text(log_id: &str, seq: i64) -> String {
        let Ok(mut n) = u64::try_from(seq) else {
            return format!("c1.{seq:020}.{log_id}");
        };
        let mut digits = [b'0'; 20];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let mut out = String::with_capacity(24 + log_id.len());
        out.push_str("c1.");
        out.push_str(std::str::from_utf8(&digits).expect("ASCII digits"));
        out.push('.');
        out.push_str(log_id);
        out
    }

    pub fn decode(text: &str) -> Result<Cursor, MalformedCursor> {
        let mut parts = text.splitn(3, '.');
        let (Some("c1"), Some(seq), Some(log_id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(MalformedCursor);
        };
        if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MalformedCursor);
        }
        let seq: i64 = seq.parse().map_err(|_| MalformedCursor)?;
        if log_id.is_empty() || log_id.len() > 64 || !log_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
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
    fn a_cursors_text_is_the_seq_in_twenty_digits_then_the_log() {
        for seq in [0, 1, 9, 10, 42, 1_000_000_007, i64::MAX, -1, i64::MIN] {
            assert_eq!(Cursor::text("abc123", seq), format!("c1.{seq:020}.abc123"), "{seq}");
        }
    }

    #[test]
    fn a_cursor_round_trips_and_garbage_is_rejected() {
        let c = Cursor::new("abc123", 42);
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        for bad in [
            "",
            "!!",
            "c1.42.abc",
            "c2.00000000000000000042.abc",
            "c1.0000000000000000004x.abc",
            "c1.00000000000000000042.",
            "c1.00000000000000000042.a-b",
            "c1.99999999999999999999.abc",
        ] {
            assert_eq!(Cursor::decode(bad), Err(MalformedCursor), "{bad}");
        }
    }

    #[test]
    fn cursors_of_one_log_compare_as_strings_in_log_order() {
        let (a, b, c) = (
            Cursor::new("x", 9).encode(),
            Cursor::new("x", 10).encode(),
            Cursor::new("x", 1_000_000).encode(),
        );
        assert!(a < b && b < c);
    }
}

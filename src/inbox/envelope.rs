//! Reads the few envelope fields the inbox indexes (`type`, `timestamp`, `instance_id`) from a
//! verified body, leniently: the body itself is stored verbatim, never re-serialised.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The indexed envelope fields of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// `type`, when the body is an object with a string `type`.
    pub event_type: Option<String>,
    /// `timestamp` (ms since the epoch; read as seconds below 10^12).
    pub event_time: Option<DateTime<Utc>>,
    /// `instance_id` (`ins_…`), when present.
    pub instance_id: Option<String>,
}

/// The body is not a JSON document.
#[derive(Debug, thiserror::Error)]
#[error("the body is not JSON: {0}")]
pub struct NotJson(#[from] serde_json::Error);

#[derive(Deserialize)]
struct Raw {
    #[serde(default, rename = "type")]
    event_type: Option<serde_json::Value>,
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    #[serde(default)]
    instance_id: Option<serde_json::Value>,
}

/// Parses the envelope; any JSON document is accepted, only the indexed fields are read.
pub fn parse(body: &[u8]) -> Result<Envelope, NotJson> {
    // Validate the whole document first: a truncated body must be refused, not half-read.
    let value: serde_json::Value = serde_json::from_slice(body)?;
    let raw: Option<Raw> = if value.is_object() {
        serde_json::from_value(value).ok()
    } else {
        None
    };
    let Some(raw) = raw else {
        return Ok(Envelope {
            event_type: None,
            event_time: None,
            instance_id: None,
        });
    };
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    Ok(Envelope {
        event_type: text(raw.event_type),
        event_time: raw.timestamp.as_ref().and_then(event_time),
        instance_id: text(raw.instance_id),
    })
}

/// Clerk documents the envelope timestamp in milliseconds, its examples use seconds: a value
/// below 10^12 is read as seconds. Outside years 1 to 9999: none.
pub fn event_time(value: &serde_json::Value) -> Option<DateTime<Utc>> {
    let n = value.as_i64().or_else(|| value.as_f64().map(|f| f as i64))?;
    let ms = if n.unsigned_abs() < 1_000_000_000_000 {
        n.checked_mul(1000)?
    } else {
        n
    };
    crate::store::records::time_from_ms(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clerk_envelope_yields_its_indexed_fields() {
        let e = parse(br#"{"type":"user.created","timestamp":1716883200000,"instance_id":"ins_1","data":{}}"#).unwrap();
        assert_eq!(e.event_type.as_deref(), Some("user.created"));
        assert_eq!(e.event_time.unwrap().timestamp(), 1716883200);
        assert_eq!(e.instance_id.as_deref(), Some("ins_1"));
    }

    #[test]
    fn a_ten_digit_timestamp_is_read_as_seconds() {
        let e = parse(br#"{"type":"user.created","timestamp":1716883200}"#).unwrap();
        assert_eq!(e.event_time.unwrap().timestamp(), 1716883200);
    }

    #[test]
    fn json_that_is_not_an_envelope_is_accepted_without_a_type() {
        for body in [
            &br#"[1,2]"#[..],
            br#""x""#,
            br#"{"type":5}"#,
            br#"{"email":"a\u0000b"}"#,
        ] {
            let e = parse(body).unwrap();
            assert_eq!(e.event_type, None);
        }
    }

    #[test]
    fn a_truncated_body_is_not_json() {
        assert!(parse(br#"{"type":"user.created""#).is_err());
        assert!(parse(b"").is_err());
    }
}

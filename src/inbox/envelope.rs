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

/// The indexed members of a body that is a JSON object (the last of a repeated name wins, as in
/// a `serde_json::Value`); `None` for any other JSON document.
#[derive(Default)]
struct Raw {
    event_type: Option<serde_json::Value>,
    timestamp: Option<serde_json::Value>,
    instance_id: Option<serde_json::Value>,
}

/// Reads a whole document in one pass, keeping only [`Raw`]'s members: the rest (`data`, most
/// of the body) is checked and skipped, never built as values (#27: building the body as a
/// `Value` was the largest part of a webhook's parsing).
struct Document(Option<Raw>);

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Document, D::Error> {
        d.deserialize_any(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> serde::de::Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut raw = Raw::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let slot = match &*key {
                "type" => &mut raw.event_type,
                "timestamp" => &mut raw.timestamp,
                "instance_id" => &mut raw.instance_id,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value()?);
        }
        Ok(Document(Some(raw)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Document(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Document, E> {
        Ok(Document(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Document, E> {
        Ok(Document(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Document, E> {
        Ok(Document(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Document, E> {
        Ok(Document(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Document, E> {
        Ok(Document(None))
    }
    fn visit_unit<E>(self) -> Result<Document, E> {
        Ok(Document(None))
    }
}

/// Parses the envelope; any JSON document is accepted, only the indexed fields are read.
pub fn parse(body: &[u8]) -> Result<Envelope, NotJson> {
    // Skipped members are not depth-limited by serde_json as built values are: refuse what the
    // applier could not read (it builds the body as a `Value`).
    if nesting(body) > MAX_NESTING {
        return Err(NotJson(serde::de::Error::custom(format_args!(
            "nested more than {MAX_NESTING} deep"
        ))));
    }
    // The whole document is read (a truncated body must be refused, not half-read).
    let Document(raw) = serde_json::from_slice(body)?;
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

/// The deepest nesting serde_json builds as a `Value` (its recursion limit, 128, counts the top).
const MAX_NESTING: usize = 127;

/// The deepest nesting of arrays and objects in `body` (brackets inside strings not counted).
fn nesting(body: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
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
    fn the_last_of_a_repeated_member_is_read_and_every_other_member_is_checked() {
        let e = parse(br#"{"type":"user.created","data":{"a":[1,{"b":null}]},"type":"user.updated"}"#).unwrap();
        assert_eq!(e.event_type.as_deref(), Some("user.updated"));
        assert!(parse(br#"{"type":"user.created","data":{"a":[1,}}"#).is_err());
        assert!(parse(br#"{"type":"user.created"} x"#).is_err());
        // An escaped member name is still the member.
        let e = parse(br#"{"\u0074ype":"user.created"}"#).unwrap();
        assert_eq!(e.event_type.as_deref(), Some("user.created"));
    }

    #[test]
    fn a_document_nested_deeper_than_a_value_can_be_is_refused() {
        let deep = |n: usize| format!("{{\"type\":\"x\",\"data\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        // Exactly what a `Value` (the applier's reading) accepts.
        for n in 100..140 {
            let body = deep(n);
            let value = serde_json::from_slice::<serde_json::Value>(body.as_bytes());
            assert_eq!(parse(body.as_bytes()).is_ok(), value.is_ok(), "{n} deep");
        }
        assert!(parse(deep(200).as_bytes()).is_err());
        // Brackets in strings are text.
        assert!(parse(format!("{{\"type\":\"{}\\\"{}\"}}", "[".repeat(300), "{".repeat(300)).as_bytes()).is_ok());
    }

    #[test]
    fn a_truncated_body_is_not_json() {
        assert!(parse(br#"{"type":"user.created""#).is_err());
        assert!(parse(b"").is_err());
    }
}

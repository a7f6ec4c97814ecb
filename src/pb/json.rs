//! JSON and times as protobuf's well-known types: `google.protobuf.Value`/`Struct` (bounded in
//! depth so every client can decode them) and `google.protobuf.Timestamp`.

use chrono::{DateTime, Utc};
use prost_types::value::Kind;
use serde_json::Value;

/// How deep JSON is nested in a `Struct` before the rest is sent as its JSON text. Protobuf
/// decoders stop at a recursion depth (100 in prost, C++, Java and Python), and each JSON level
/// costs up to three of them (`Value`, `Struct`, its map entry): metadata nested deeper than this
/// would make every client fail to decode the user, and a watcher fail at that change forever.
pub const MAX_STRUCT_DEPTH: usize = 20;

/// JSON → `google.protobuf.Value`; below `MAX_STRUCT_DEPTH` levels an array or object becomes a
/// string holding its JSON.
pub fn to_value(v: &Value) -> prost_types::Value {
    value_at(v, 1)
}

fn value_at(v: &Value, depth: usize) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(_) | Value::Object(_) if depth > MAX_STRUCT_DEPTH => Kind::StringValue(v.to_string()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(|v| value_at(v, depth + 1)).collect(),
        }),
        Value::Object(map) => Kind::StructValue(struct_at(map, depth)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn struct_at(map: &serde_json::Map<String, Value>, depth: usize) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), value_at(v, depth + 1))).collect(),
    }
}

/// A JSON object → `google.protobuf.Struct` (anything else → absent).
pub fn to_struct(v: Option<&Value>) -> Option<prost_types::Struct> {
    match v? {
        Value::Object(map) => Some(struct_at(map, 1)),
        _ => None,
    }
}

pub fn timestamp(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

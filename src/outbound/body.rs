//! What one delivery says: the Standard Webhooks body `{"type", "timestamp", "data"}` (shared
//! API.md, "Outbound webhooks"). A change is `clerkmirror.change` with its cursor and the change
//! as canonical protobuf JSON (what a watch sends, as `clerk-mirror watch` prints it); a raw
//! Clerk event a destination selects is `clerk.<event type>` with its cursor and the event as
//! received. The `webhook-id` is the position's, so every attempt at one change carries the same.

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage};
use serde_json::json;
#[cfg(test)]
use serde_json::Value;

use crate::pb;

/// `clerkmirror.v1.Change`, from the embedded descriptors.
static CHANGE: LazyLock<MessageDescriptor> = LazyLock::new(|| {
    DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set decodes")
        .get_message_by_name("clerkmirror.v1.Change")
        .expect("it declares clerkmirror.v1.Change")
});

/// The `webhook-id` of the delivery at `cursor` (stable: the same for every attempt).
pub fn webhook_id(cursor: &str) -> String {
    format!("msg_{cursor}")
}

/// The body delivering `change` (whose commit time is the body's `timestamp`).
/// The fields of a change's entity and previous state that are always sent.
const ALWAYS: [&str; 2] = ["name", "id"];

/// What a field mask keeps of an entity's fields: the named ones (and `name`, `id`); an empty
/// mask keeps all but `private_metadata`.
fn kept(fields: &[String], field: &str) -> bool {
    match fields.is_empty() {
        true => field != "private_metadata",
        false => ALWAYS.contains(&field) || fields.iter().any(|f| f == field),
    }
}

/// The entity messages a change of these entity types (wire values; empty: all) may carry.
fn entity_messages(entity_types: &[i32]) -> Vec<MessageDescriptor> {
    let oneof = CHANGE.oneofs().find(|o| o.name() == "entity").expect("Change has its entity oneof");
    oneof
        .fields()
        .filter(|f| {
            entity_types.is_empty()
                || entity_types.iter().any(|t| {
                    pb::EntityType::try_from(*t)
                        .is_ok_and(|t| t.as_str_name().strip_prefix("ENTITY_TYPE_").is_some_and(|n| n.eq_ignore_ascii_case(f.name())))
                })
        })
        .filter_map(|f| f.kind().as_message().cloned())
        .collect()
}

/// Why a field mask cannot be used for these entity types: a path that is no field of any of
/// their messages (top-level fields only, by proto name).
pub fn check_fields(entity_types: &[i32], fields: &[String]) -> Result<(), String> {
    let messages = entity_messages(entity_types);
    for f in fields {
        if !messages.iter().any(|m| m.get_field_by_name(f).is_some()) {
            return Err(format!(
                "`{f}` is no field of the entities selected (a field mask names top-level fields by their proto names, \
                 e.g. `email_addresses`)"
            ));
        }
    }
    Ok(())
}

/// Clears the fields of `message` (an entity) that `fields` does not keep.
fn mask(message: &mut DynamicMessage, fields: &[String]) {
    let drop: Vec<_> = message.descriptor().fields().filter(|f| !kept(fields, f.name())).collect();
    for f in drop {
        message.clear_field(&f);
    }
}

/// A change's delivery body, its entity and previous state narrowed by `fields` (see [`kept`]).
pub fn change(change: &pb::Change, fields: &[String]) -> Vec<u8> {
    let mut dynamic = DynamicMessage::decode(CHANGE.clone(), change.encode_to_vec().as_slice())
        .expect("a Change decodes with its own descriptor");
    let set: Vec<_> = CHANGE
        .oneofs()
        .flat_map(|o| o.fields().collect::<Vec<_>>())
        .filter(|f| dynamic.has_field(f))
        .collect();
    for f in set {
        if let prost_reflect::Value::Message(m) = dynamic.get_field_mut(&f) {
            mask(m, fields);
        }
    }
    let timestamp = change
        .commit_time
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(rfc3339);
    let data = json!({"cursor": change.cursor, "change": serde_json::to_value(&dynamic).expect("canonical JSON")});
    envelope("clerkmirror.change", timestamp, data)
}

/// The Standard Webhooks body every delivery has: `{"type", "timestamp", "data"}`.
fn envelope(r#type: &str, timestamp: Option<String>, data: impl serde::Serialize) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Envelope<'a, D> {
        r#type: &'a str,
        timestamp: Option<String>,
        data: D,
    }
    serde_json::to_vec(&Envelope { r#type, timestamp, data }).expect("serialises")
}

/// A time as a body's `timestamp`: RFC 3339, milliseconds, UTC.
fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The `webhook-id` of a batch: its first position and its size (the same on every attempt at
/// that batch).
pub fn batch_id(first_cursor: &str, size: usize) -> String {
    format!("msg_{first_cursor}_{size}")
}

/// A batch's delivery body: `clerkmirror.batch` with the last cursor and each delivery as it
/// would be sent alone (`deliveries`, in order; its `timestamp` is the last one's).
pub fn batch(last_cursor: &str, deliveries: &[Vec<u8>]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Data<'a> {
        cursor: &'a str,
        deliveries: Vec<&'a serde_json::value::RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Stamp {
        timestamp: Option<String>,
    }
    let items: Vec<&serde_json::value::RawValue> = deliveries
        .iter()
        .filter_map(|d| serde_json::from_slice(d).ok())
        .collect();
    let timestamp = deliveries
        .last()
        .and_then(|d| serde_json::from_slice::<Stamp>(d).ok())
        .and_then(|s| s.timestamp);
    let data = Data {
        cursor: last_cursor,
        deliveries: items,
    };
    envelope("clerkmirror.batch", timestamp, data)
}

/// A raw Clerk event's delivery body: `event` is the body as received, byte for byte.
pub fn clerk_event(cursor: &str, event_type: &str, raw: &[u8]) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        timestamp: Option<i64>,
    }
    let timestamp = serde_json::from_slice::<Envelope>(raw)
        .ok()
        .and_then(|e| e.timestamp)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(rfc3339);
    #[derive(serde::Serialize)]
    struct Data<'a> {
        cursor: &'a str,
        event: Option<&'a serde_json::value::RawValue>,
    }
    let event = std::str::from_utf8(raw)
        .ok()
        .and_then(|text| serde_json::from_str::<&serde_json::value::RawValue>(text.trim()).ok());
    envelope(&format!("clerk.{event_type}"), timestamp, Data { cursor, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_delivered_in_the_standard_webhooks_shape_as_canonical_protobuf_json() {
        let change = pb::Change {
            cursor: "c1.00000000000000000007.log".into(),
            operation: pb::Operation::Created as i32,
            entity_type: pb::EntityType::User as i32,
            entity: Some(pb::change::Entity::User(pb::User {
                name: "users/user_1".into(),
                id: "user_1".into(),
                first_name: "Ada".into(),
                ..Default::default()
            })),
            commit_time: Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 250_000_000 }),
            ..Default::default()
        };
        let body: Value = serde_json::from_slice(&super::change(&change, &[])).unwrap();
        assert_eq!(body["type"], "clerkmirror.change");
        assert_eq!(body["timestamp"], "2026-01-01T00:00:00.250Z");
        assert_eq!(body["data"]["cursor"], "c1.00000000000000000007.log");
        let c = &body["data"]["change"];
        assert_eq!((&c["operation"], &c["entityType"]), (&json!("OPERATION_CREATED"), &json!("ENTITY_TYPE_USER")));
        assert_eq!((&c["user"]["id"], &c["user"]["firstName"]), (&json!("user_1"), &json!("Ada")));
        assert_eq!(c["commitTime"], "2026-01-01T00:00:00.250Z");
        assert_eq!(webhook_id(&change.cursor), "msg_c1.00000000000000000007.log");
    }

    #[test]
    fn a_field_mask_keeps_the_named_fields_and_by_default_private_metadata_never_leaves() {
        let user = pb::User {
            name: "users/user_1".into(),
            id: "user_1".into(),
            first_name: "Ada".into(),
            private_metadata: Some(prost_types::Struct {
                fields: [("plan_secret".to_string(), prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("x".into())) })].into(),
            }),
            public_metadata: Some(prost_types::Struct::default()),
            ..Default::default()
        };
        let change = pb::Change {
            cursor: "c1.1.log".into(),
            entity_type: pb::EntityType::User as i32,
            entity: Some(pb::change::Entity::User(user.clone())),
            previous: Some(pb::change::Previous::PreviousUser(user)),
            ..Default::default()
        };
        let all: Value = serde_json::from_slice(&super::change(&change, &[])).unwrap();
        let c = &all["data"]["change"];
        assert_eq!(c["user"]["firstName"], "Ada");
        assert!(c["user"].get("privateMetadata").is_none() && c["previousUser"].get("privateMetadata").is_none(), "{c}");
        assert!(!String::from_utf8(super::change(&change, &[])).unwrap().contains("plan_secret"));
        let narrowed: Value = serde_json::from_slice(&super::change(&change, &["private_metadata".into()])).unwrap();
        let u = &narrowed["data"]["change"]["user"];
        assert_eq!((&u["id"], &u["name"], &u["privateMetadata"]["plan_secret"]), (&json!("user_1"), &json!("users/user_1"), &json!("x")));
        assert!(u.get("firstName").is_none(), "{u}");

        assert_eq!(check_fields(&[pb::EntityType::User as i32], &["email_addresses".into(), "private_metadata".into()]), Ok(()));
        assert_eq!(check_fields(&[], &["slug".into()]), Ok(()), "an organization's field, with every type selected");
        let why = check_fields(&[pb::EntityType::User as i32], &["slug".into()]).unwrap_err();
        assert!(why.contains("`slug` is no field"), "{why}");
    }

    #[test]
    fn a_batch_carries_each_delivery_as_it_would_be_sent_alone_in_order() {
        let one = clerk_event("c1.1.log", "session.created", br#"{"type":"session.created","timestamp":1767225600000,"data":{}}"#);
        let two = clerk_event("c1.2.log", "session.ended", br#"{"type":"session.ended","timestamp":1767225601000,"data":{}}"#);
        let body: Value = serde_json::from_slice(&batch("c1.2.log", &[one.clone(), two.clone()])).unwrap();
        assert_eq!(body["type"], "clerkmirror.batch");
        assert_eq!(body["timestamp"], "2026-01-01T00:00:01.000Z");
        assert_eq!(body["data"]["cursor"], "c1.2.log");
        let items = body["data"]["deliveries"].as_array().unwrap();
        assert_eq!(items[0], serde_json::from_slice::<Value>(&one).unwrap());
        assert_eq!(items[1], serde_json::from_slice::<Value>(&two).unwrap());
        assert_eq!(batch_id("c1.1.log", 2), "msg_c1.1.log_2");
    }

    #[test]
    fn a_raw_clerk_event_is_delivered_as_received_under_its_own_type() {
        let event = json!({"type": "session.created", "timestamp": 1_767_225_600_000i64, "object": "event",
                           "data": {"id": "sess_1", "user_id": "user_1"}});
        let raw = serde_json::to_vec(&event).unwrap();
        let body: Value = serde_json::from_slice(&clerk_event("c1.9.log", "session.created", &raw)).unwrap();
        assert_eq!(body["type"], "clerk.session.created");
        assert_eq!(body["timestamp"], "2026-01-01T00:00:00.000Z");
        assert_eq!(body["data"], json!({"cursor": "c1.9.log", "event": event}));
        let exact = br#"{"type":"session.created","timestamp":1767225600000,"data":{"z":1,"a":"\u0000"}}"#;
        let text = String::from_utf8(clerk_event("c1.9.log", "session.created", exact)).unwrap();
        assert!(text.contains(std::str::from_utf8(exact).unwrap()), "as received, byte for byte: {text}");
    }
}

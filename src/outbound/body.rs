//! What one delivery says: the Standard Webhooks body `{"type", "timestamp", "data"}` (shared
//! API.md, "Outbound webhooks"). A change is `clerkmirror.change` with its cursor and the change
//! as canonical protobuf JSON (what a watch sends, as `clerk-mirror watch` prints it); a raw
//! Clerk event a destination selects is `clerk.<event type>` with its cursor and the event as
//! received. The `webhook-id` is the position's, so every attempt at one change carries the same.

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::{Value, json};

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
pub fn change(change: &pb::Change) -> Vec<u8> {
    let dynamic = DynamicMessage::decode(CHANGE.clone(), change.encode_to_vec().as_slice())
        .expect("a Change decodes with its own descriptor");
    let timestamp = change
        .commit_time
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let body = json!({
        "type": "clerkmirror.change",
        "timestamp": timestamp,
        "data": {"cursor": change.cursor, "change": serde_json::to_value(&dynamic).expect("canonical JSON")},
    });
    serde_json::to_vec(&body).expect("serialises")
}

/// The body delivering the raw Clerk event `event` (its `type` and `timestamp` in ms, as Clerk
/// sent them) at `cursor`.
pub fn clerk_event(cursor: &str, event: &Value) -> Vec<u8> {
    let event_type = event.get("type").and_then(Value::as_str).unwrap_or("unknown");
    let timestamp = event
        .get("timestamp")
        .and_then(Value::as_i64)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let body = json!({
        "type": format!("clerk.{event_type}"),
        "timestamp": timestamp,
        "data": {"cursor": cursor, "event": event},
    });
    serde_json::to_vec(&body).expect("serialises")
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
        let body: Value = serde_json::from_slice(&super::change(&change)).unwrap();
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
    fn a_raw_clerk_event_is_delivered_as_received_under_its_own_type() {
        let event = json!({"type": "session.created", "timestamp": 1_767_225_600_000i64, "object": "event",
                           "data": {"id": "sess_1", "user_id": "user_1"}});
        let body: Value = serde_json::from_slice(&clerk_event("c1.9.log", &event)).unwrap();
        assert_eq!(body["type"], "clerk.session.created");
        assert_eq!(body["timestamp"], "2026-01-01T00:00:00.000Z");
        assert_eq!(body["data"], json!({"cursor": "c1.9.log", "event": event}));
    }
}

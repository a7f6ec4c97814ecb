//! Turns one inbox row into what the applier does with it: an upsert or a delete of one entity,
//! a skip (a type the mirror does not apply), or an error (a dead letter). Parsing is lenient:
//! a missing optional field or `null` metadata never dead-letters an event.

use serde_json::Value;

pub use crate::inbox::InboxEvent;
use crate::inbox::envelope;
use crate::store::kind::{self, with_kind};
use crate::store::records::{self, Version};
use crate::inbox::Rank;
use crate::store::{AnyRecord, EntityType, Kind};

/// What one event asks of the projections.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create or update an entity (last writer wins by its version).
    Upsert(AnyRecord, Version),
    /// Create or update every entity another object carries, each by its own version (a
    /// subscription's items).
    UpsertAll(Vec<(AnyRecord, Version)>),
    /// Delete an entity: the tombstone the event names, deleted at its `deleted_at`.
    Delete(AnyRecord),
    /// A state the mirror derives itself (an invitation's expiry), applied only over exactly
    /// the stored version it names.
    Derive(Derived),
    /// Stored, not applied (session.*, billing, unknown types, …).
    Skip,
}

/// A row of the mirror's own (`Kind::DERIVED_BY`): which entity, from which version, and what
/// its kind derives from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub entity_type: EntityType,
    pub id: String,
    pub event_type: String,
    /// The stored version it was computed from.
    pub basis: Version,
    pub data: Value,
}

/// Why a verified event cannot be applied (recorded on its dead letter).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl From<records::RecordError> for ParseError {
    fn from(e: records::RecordError) -> Self {
        ParseError(e.0)
    }
}

pub use crate::store::kind::APPLIED_TYPES;

/// The strings at the places an event names ids: `id`, `organization.id`, `organization_id`,
/// `public_user_data.user_id`, `user_id`.
fn id_paths(data: &Value) -> impl Iterator<Item = &str> {
    [
        data.get("id"),
        data.get("organization").and_then(|o| o.get("id")),
        data.get("organization_id"),
        data.get("public_user_data").and_then(|u| u.get("user_id")),
        data.get("user_id"),
    ]
    .into_iter()
    .filter_map(|v| v?.as_str())
}

/// A mirror row's derivation; a Clerk-ranked row of such a type is skipped (only the mirror
/// speaks for itself).
fn derived(event: &InboxEvent, event_type: &str, entity_type: EntityType) -> Result<Action, ParseError> {
    if Rank::of(&event.source, &event.event_key) != Rank::Mirror {
        return Ok(Action::Skip);
    }
    let body = event
        .body
        .as_deref()
        .ok_or_else(|| ParseError(format!("`{event_type}` stored without its body")))?;
    let envelope: Value = serde_json::from_slice(body).map_err(|e| ParseError(format!("the body is not JSON: {e}")))?;
    let data = envelope
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| ParseError(format!("`{event_type}` has no `data` object")))?;
    let id = records::required_id(data, &format!("`{event_type}`"))?;
    let basis = data
        .get("basis")
        .cloned()
        .and_then(|b| serde_json::from_value::<Version>(b).ok())
        .ok_or_else(|| ParseError(format!("`{event_type}` has no `basis` version")))?;
    Ok(Action::Derive(Derived {
        entity_type,
        id,
        event_type: event_type.to_string(),
        basis,
        data: data.clone(),
    }))
}

/// Decides what `event` asks for.
pub fn parse(event: &InboxEvent) -> Result<Action, ParseError> {
    if let Some((event_type, kind)) = event
        .event_type
        .as_deref()
        .and_then(|t| Some((t, kind::kind_deriving(t)?)))
    {
        return derived(event, event_type, kind);
    }
    let Some(event_type) = event.event_type.as_deref() else {
        return Ok(Action::Skip);
    };
    let (own, carrier) = (kind::kind_of_event(event_type), kind::kind_carried_by(event_type));
    if own.is_none() && carrier.is_none() {
        return Ok(Action::Skip);
    }
    let body = body(event, event_type)?;
    // The entities the object carries (a subscription's items), each as if its own event had come.
    let mut all = Vec::new();
    if let Some(kind) = carrier {
        with_kind!(kind, K => {
            for item in K::carried(&body.data) {
                let version = body.version(&item);
                all.push((K::from_clerk(records::clean(item))?.into_any(), version));
            }
        });
    }
    let Some((kind, deletes)) = own else {
        return Ok(Action::UpsertAll(all));
    };
    let version = body.version(&body.data);
    let action = with_kind!(kind, K => {
        if deletes {
            Action::Delete(K::from_delete(body.data, body.event_time)?.into_any())
        } else {
            Action::Upsert(K::from_clerk(body.data)?.into_any(), version)
        }
    });
    Ok(match (carrier, action) {
        (None, action) => action,
        // The object first, then what it carries.
        (Some(_), Action::Upsert(record, version)) => {
            all.insert(0, (record, version));
            Action::UpsertAll(all)
        }
        (Some(_), action) => action,
    })
}

/// An applied event's body: its `data` (cleaned), when it happened, and its key.
struct Body {
    data: Value,
    event_time: chrono::DateTime<chrono::Utc>,
    key: String,
}

impl Body {
    /// The version of `data` (the event's own object, or one it carries) as this event says it.
    fn version(&self, data: &Value) -> Version {
        Version {
            updated_ms: records::ms_at(data, "updated_at").unwrap_or(0),
            event_ms: self.event_time.timestamp_millis(),
            key: self.key.clone(),
        }
    }
}

fn body(event: &InboxEvent, event_type: &str) -> Result<Body, ParseError> {
    let body = event
        .body
        .as_deref()
        .ok_or_else(|| ParseError(format!("`{event_type}` stored without its body")))?;
    let envelope: Value = serde_json::from_slice(body).map_err(|e| ParseError(format!("the body is not JSON: {e}")))?;
    let data = match envelope.get("data") {
        // Cleaning removes NUL characters, which would silently turn a bad id into another one.
        Some(d @ Value::Object(_)) if id_paths(d).any(|id| id.contains('\0')) => {
            return Err(ParseError(format!("`{event_type}` has an invalid id: it contains NUL")));
        }
        Some(d @ Value::Object(_)) => records::clean(d.clone()),
        _ => return Err(ParseError(format!("`{event_type}` has no `data` object"))),
    };
    // The envelope timestamp (ms; seconds below 10^12); the arrival time when absent.
    let event_time = envelope
        .get("timestamp")
        .and_then(envelope::event_time)
        .or(event.event_time)
        .unwrap_or(event.received_at);
    Ok(Body {
        data,
        event_time,
        key: event.event_key.clone(),
    })
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use serde_json::json;

    fn row(event_type: &str, body: Value) -> InboxEvent {
        InboxEvent {
            id: 1,
            source: "webhook".into(),
            event_key: "msg_1".into(),
            event_type: Some(event_type.into()),
            event_time: None,
            received_at: Utc::now(),
            body: Some(body.to_string().into_bytes()),
            trace_context: None,
        }
    }

    #[test]
    fn a_session_event_with_an_embedded_user_is_skipped() {
        let r = row(
            "session.created",
            json!({"type": "session.created", "data": {"user": {"id": "user_1"}}}),
        );
        assert_eq!(parse(&r), Ok(Action::Skip));
    }

    #[test]
    fn a_membership_delete_takes_the_envelope_time_not_updated_at() {
        let r = row(
            "organizationMembership.deleted",
            json!({"type": "organizationMembership.deleted", "timestamp": 1767225900000i64, "data": {
                "id": "orgmem_1", "organization": {"id": "org_1"}, "public_user_data": {"user_id": "user_1"},
                "updated_at": 1767225600000i64}}),
        );
        let Ok(Action::Delete(AnyRecord::Membership(m))) = parse(&r) else {
            panic!()
        };
        assert_eq!(m.deleted_at.unwrap().timestamp_millis(), 1767225900000);
    }

    #[test]
    fn null_metadata_and_missing_optional_fields_do_not_fail_an_event() {
        let r = row(
            "user.created",
            json!({"type": "user.created", "data": {"id": "user_1", "private_metadata": null}}),
        );
        let Ok(Action::Upsert(AnyRecord::User(u), v)) = parse(&r) else {
            panic!()
        };
        assert_eq!(u.data.unwrap()["private_metadata"], json!({}));
        assert_eq!(v.updated_ms, 0);
    }

    #[test]
    fn an_applied_type_without_data_is_a_dead_letter() {
        assert!(parse(&row("user.updated", json!({"type": "user.updated"}))).is_err());
        assert!(
            parse(&row(
                "user.deleted",
                json!({"type": "user.deleted", "data": {"deleted": true}})
            ))
            .is_err()
        );
        assert!(
            parse(&row(
                "organizationMembership.created",
                json!({"data": {"id": "orgmem_1"}})
            ))
            .is_err()
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::store::kind::match_record;
        use crate::store::records::is_valid_id;

        const KEYS: [&str; 16] = [
            "type",
            "timestamp",
            "id",
            "object",
            "organization",
            "organization_id",
            "public_user_data",
            "user_id",
            "email_addresses",
            "email_address",
            "primary_email_address_id",
            "updated_at",
            "created_at",
            "public_metadata",
            "first_name",
            "deleted",
        ];

        /// Any JSON, biased towards the keys and id shapes events use.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                ".{0,10}".prop_map(Value::from),
                "(user|org|orgmem)_[a-zA-Z0-9/ é\\x00]{0,4}".prop_map(Value::from),
            ];
            leaf.prop_recursive(5, 48, 6, |inner| {
                let key = prop_oneof![proptest::sample::select(&KEYS[..]).prop_map(str::to_string), ".{0,6}"];
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                    proptest::collection::vec((key, inner), 0..8)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        fn event_type() -> impl Strategy<Value = Option<String>> {
            prop_oneof![
                8 => proptest::sample::select(&APPLIED_TYPES[..]).prop_map(|t| Some(t.to_string())),
                1 => Just(Some("session.created".to_string())),
                1 => Just(None),
            ]
        }

        fn row_with(event_type: Option<String>, body: Vec<u8>) -> InboxEvent {
            InboxEvent {
                event_type,
                body: Some(body),
                ..row("user.created", json!({}))
            }
        }

        /// An entity's id and its parents' ids.
        fn ids_of<K: Kind>(r: &K) -> Vec<String> {
            let parents = K::PARENTS.iter().filter_map(|(t, _)| r.parent(*t)).map(str::to_string);
            std::iter::once(r.id().to_string()).chain(parents).collect()
        }

        /// What parse made of a row, checked: no record or delete names an id the API cannot address.
        fn check(action: Result<Action, ParseError>) -> Result<(), TestCaseError> {
            let ids: Vec<String> = match action {
                Err(e) => {
                    prop_assert!(!e.0.is_empty(), "a dead letter without its error");
                    return Ok(());
                }
                Ok(Action::Skip) => vec![],
                Ok(Action::Upsert(record, _) | Action::Delete(record)) => match_record!(record, r => ids_of(&r)),
                Ok(Action::UpsertAll(all)) => all
                    .into_iter()
                    .flat_map(|(record, _)| match_record!(record, r => ids_of(&r)))
                    .collect(),
                Ok(Action::Derive(d)) => vec![d.id],
            };
            for id in ids {
                prop_assert!(is_valid_id(&id), "applied with the id {id:?}");
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_verified_body_is_applied_skipped_or_dead_lettered_with_an_error_never_a_panic(
                event_type in event_type(),
                data in json(),
                timestamp in json(),
            ) {
                let body = json!({"type": event_type, "timestamp": timestamp, "data": data}).to_string();
                check(parse(&row_with(event_type, body.into_bytes())))?;
            }

            #[test]
            fn a_well_formed_event_with_any_field_replaced_is_applied_or_dead_lettered_never_a_panic(
                kind in 0..3usize,
                replaced in proptest::collection::vec((proptest::sample::select(&KEYS[..]), json()), 0..3),
            ) {
                let (event_type, mut data) = [
                    ("user.updated", json!({"id": "user_1", "first_name": "Ada", "updated_at": 1,
                        "email_addresses": [{"id": "idn_1", "email_address": "a@example.com"}],
                        "primary_email_address_id": "idn_1", "public_metadata": {"plan": "pro"}})),
                    ("organization.created", json!({"id": "org_1", "name": "Org", "slug": "org", "updated_at": 1})),
                    ("organizationMembership.deleted", json!({"id": "orgmem_1", "role": "org:admin",
                        "organization": {"id": "org_1", "name": "Org"}, "public_user_data": {"user_id": "user_1"}})),
                ][kind].clone();
                for (key, value) in replaced {
                    data[key] = value;
                }
                let body = json!({"type": event_type, "timestamp": 1, "data": data}).to_string();
                check(parse(&row_with(Some(event_type.to_string()), body.into_bytes())))?;
            }

            #[test]
            fn any_bytes_as_a_body_never_panic(event_type in event_type(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
                check(parse(&row_with(event_type, body)))?;
            }

            #[test]
            fn the_envelope_reader_accepts_exactly_the_json_documents(body in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..32),
                json().prop_map(|v| v.to_string().into_bytes()),
            ]) {
                let is_json = serde_json::from_slice::<Value>(&body).is_ok();
                prop_assert_eq!(envelope::parse(&body).is_ok(), is_json);
            }
        }
    }
}

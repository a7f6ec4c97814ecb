//! What a held entity costs in memory: an encoded one its bytes; a message (memberships),
//! estimated from its shape: the struct itself, every string's bytes, every vector's slots and
//! every `Struct`'s B-tree nodes (a node holds up to eleven entries and is allocated whole). The allocator's own overhead is not counted; `bench
//! lookup` compares the total with the server's RSS.

use std::mem::size_of;

use prost_types::value::Kind;

use crate::pb;

/// A B-tree node of a `Struct`: eleven keys and values, the parent link and lengths.
const NODE: usize = 11 * (size_of::<String>() + size_of::<prost_types::Value>()) + 16;

/// Bytes a heap allocation costs beyond its contents (the allocator's header, rounding).
const ALLOCATION: usize = 16;

fn text(s: &str) -> usize {
    if s.is_empty() { 0 } else { s.len() + ALLOCATION }
}

fn value(v: &prost_types::Value) -> usize {
    match &v.kind {
        Some(Kind::StringValue(s)) => text(s),
        Some(Kind::StructValue(s)) => fields(s),
        Some(Kind::ListValue(l)) => {
            l.values.len() * size_of::<prost_types::Value>() + ALLOCATION + l.values.iter().map(value).sum::<usize>()
        }
        _ => 0,
    }
}

fn fields(s: &prost_types::Struct) -> usize {
    if s.fields.is_empty() {
        return 0;
    }
    s.fields.len().div_ceil(11) * (NODE + ALLOCATION) + s.fields.iter().map(|(k, v)| text(k) + value(v)).sum::<usize>()
}

fn metadata(s: &Option<prost_types::Struct>) -> usize {
    s.as_ref().map_or(0, fields)
}

/// The heap bytes of a membership held behind an `Arc` (the message, its strings, lists and maps).
pub fn membership(m: &pb::Membership) -> usize {
    let summary = m.organization.as_ref().map_or(0, |o| {
        size_of::<pb::OrganizationSummary>() + text(&o.id) + text(&o.display_name) + text(&o.slug) + text(&o.image_url)
    });
    let user = m.public_user_data.as_ref().map_or(0, |u| {
        size_of::<pb::PublicUserData>()
            + [
                &u.user_id,
                &u.first_name,
                &u.last_name,
                &u.image_url,
                &u.identifier,
                &u.username,
            ]
            .iter()
            .map(|s| text(s))
            .sum::<usize>()
    });
    size_of::<pb::Membership>()
        + 2 * size_of::<usize>()
        + ALLOCATION
        + [
            &m.name,
            &m.id,
            &m.organization_id,
            &m.user_id,
            &m.role,
            &m.role_name,
            &m.update_cursor,
        ]
        .iter()
        .map(|s| text(s))
        .sum::<usize>()
        + m.permissions
            .iter()
            .map(|p| size_of::<String>() + text(p))
            .sum::<usize>()
        + metadata(&m.public_metadata)
        + metadata(&m.private_metadata)
        + summary
        + user
}

/// An encoded message of `len` bytes held as `bytes::Bytes`: its buffer, and the shared header
/// the first clone of it allocates (`Bytes` made from a `Vec` shares it lazily).
pub fn encoded(len: usize) -> usize {
    len + ALLOCATION + 4 * size_of::<usize>() + ALLOCATION
}

/// One entry of a hash map keyed by a string (the key's bytes, the slot, the control byte).
pub fn slot(key: &str, value_size: usize) -> usize {
    text(key) + size_of::<String>() + value_size + 1
}

/// One key of a secondary index: its slot, and the id it names.
pub fn index_key(key: &str, id: &str) -> usize {
    slot(key, size_of::<Vec<String>>()) + size_of::<String>() + ALLOCATION + text(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_costs_at_least_a_node_and_grows_with_its_content() {
        let empty = membership(&pb::Membership::default());
        let mut m = pb::Membership {
            public_metadata: Some(prost_types::Struct {
                fields: [("plan".to_string(), crate::store::convert::to_value(&"pro".into()))].into(),
            }),
            ..Default::default()
        };
        let one = membership(&m);
        assert!(one >= empty + NODE);
        m.role_name = "x".repeat(1000);
        assert!(membership(&m) >= one + 1000);
    }
}

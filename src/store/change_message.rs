//! A change of the log as the API shows it (`clerkmirror.v1.Change`): what a watch streams and
//! an outbound webhook delivers.


use super::access::{Access, Resolved};
use super::changes::ChangeRow;
use super::kind::with_kind;
use crate::pb;

/// The change as the API shows it; with `access` (the replica's roles and permissions, when its
/// read cache serves), what is derived at read time is resolved as a read would show it now.
pub fn to_change(
    c: &ChangeRow,
    log_id: &str,
    left_filter: bool,
    access: Option<&Access>,
) -> Result<pb::Change, String> {
    let Some(t) = c.entity_type() else {
        return Err(format!("change {} has an unknown entity type", c.seq));
    };
    with_kind!(t, K => change_of::<K>(c, log_id, left_filter, access))
}

/// A change of kind `K`: its new and previous state converted (the previous one without an
/// update cursor: it is not known which change made it).
fn change_of<K: Resolved>(
    c: &ChangeRow,
    log_id: &str,
    left_filter: bool,
    access: Option<&Access>,
) -> Result<pb::Change, String> {
    let bad = |e: serde_json::Error| format!("change {} has an unreadable state: {e}", c.seq);
    // Read from the stored values in place (a `from_value` would take a copy of each first).
    let now = K::deserialize(&c.state).map_err(bad)?;
    let before = c.previous.as_ref().map(K::deserialize).transpose().map_err(bad)?;
    let message = |r: &K, cursor: i64| match access {
        Some(a) => r.message_now(a, cursor, log_id),
        None => r.message(cursor, log_id),
    };
    let operation = match c.operation.as_str() {
        "created" => pb::Operation::Created,
        "updated" => pb::Operation::Updated,
        _ => pb::Operation::Deleted,
    };
    Ok(pb::Change {
        cursor: crate::pb::cursor::Cursor::text(log_id, c.seq),
        operation: operation as i32,
        entity_type: K::WIRE_TYPE as i32,
        entity: Some(K::change_entity(message(&now, c.seq))),
        previous: before.map(|b| K::change_previous(K::without_cursor(message(&b, 0)))),
        commit_time: crate::pb::json::timestamp(Some(c.commit_time)),
        left_filter,
        source: c.source.clone(),
    })
}


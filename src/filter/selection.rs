//! What a change stream selects: entity types (all when none are named), a filter per type in
//! the lists' language (a change is selected when its new or its previous state matches), and
//! an organization and a user to narrow to. Shared by `WatchChanges` and outbound webhook
//! destinations, so both select alike.

use std::collections::HashMap;

use super::Filter;
use crate::store::{EntityType, Kind};
use crate::store::changes::{ChangeRow, Scope};
use crate::store::kind::with_kind;

/// Why a selection cannot be made (mapped to `INVALID_ARGUMENT` by the transports).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectionError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
        message: String,
    },
    #[error("invalid filter at {position}: {message}")]
    Filter { position: usize, message: String },
}

/// What a stream sends: the scope (SQL-side narrowing) and the filter per entity type.
pub struct Selection {
    pub scope: Scope,
    pub filters: HashMap<EntityType, Filter>,
    /// The entity types watched (all three when the request names none).
    pub watched: Vec<EntityType>,
}

impl Selection {
    /// `None`: not for this stream; `Some(left_filter)`: send it. The change is in the stream's
    /// scope (its feed hands out nothing else).
    pub fn select(&self, c: &ChangeRow) -> Option<bool> {
        let Some(filter) = c.entity_type().and_then(|t| self.filters.get(&t)) else {
            return Some(false);
        };
        let now = filter.matches(&c.state);
        let before = c.previous.as_ref().is_some_and(|p| filter.matches(p));
        (now || before).then_some(before && !now)
    }
}

/// The entity type of a wire `EntityType` value.
pub fn entity_type_of(value: i32) -> Result<EntityType, SelectionError> {
    EntityType::ALL
        .iter()
        .copied()
        .find(|t| with_kind!(*t, K => K::WIRE_TYPE as i32 == value))
        .ok_or_else(|| {
SelectionError::Invalid {
                field: "entity_types",
                reason: "INVALID_ENTITY_TYPE",
                message: format!("{value} is not an entity type"),
            }
        })
}

impl Selection {
    /// The selection of `entity_types` (wire values; empty: every type) whose changes match
    /// `filter` (or whose previous state did), narrowed to an organization and a user (empty:
    /// any), as a watch request or a destination names it.
    pub fn new(entity_types: &[i32], filter: &str, organization_id: &str, user_id: &str) -> Result<Selection, SelectionError> {
    let mut types = entity_types
        .iter()
        .map(|t| entity_type_of(*t))
        .collect::<Result<Vec<_>, _>>()?;
    types.sort();
    types.dedup();
    let watched = if types.is_empty() {
        EntityType::ALL.to_vec()
    } else {
        types.clone()
    };
    let mut filters = HashMap::new();
    // An unnarrowed, filtered watch leaves out the kinds added later whose fields the filter
    // does not name (see `Kind::ADDED_LATER`); the scope then names the kinds it keeps.
    let later_left_out = |t: EntityType| {
        types.is_empty() && with_kind!(t, K => K::ADDED_LATER) && Filter::parse(t, filter).is_err()
    };
    let watched: Vec<EntityType> = watched.into_iter().filter(|t| !later_left_out(*t)).collect();
    if watched.len() < EntityType::ALL.len() {
        types = watched.clone();
    }
    for t in watched.iter().copied() {
        if let Some(f) = Filter::parse(t, filter).map_err(|e| SelectionError::Filter {
            position: e.position,
            message: format!(
                "{} (for {}s; narrow entity_types if the field is not theirs)",
                e.message,
                t.as_str()
            ),
        })? {
            filters.insert(t, f);
        }
    }
    let id = |field: &'static str, v: &str| -> Result<Option<String>, SelectionError> {
        match v {
            "" => Ok(None),
            v if v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(v.to_string())),
            _ => Err(SelectionError::Invalid {
                field,
                reason: "INVALID_ID",
                message: "not a Clerk id".into(),
            }),
        }
    };
    Ok(Selection {
        scope: Scope {
            entity_types: types.iter().map(|t| t.as_str().to_string()).collect(),
            organization_id: id("organization_id", organization_id)?,
            user_id: id("user_id", user_id)?,
        },
        filters,
        watched,
    })
}
}

//! A kind that exists only in this crate's own tests (`#[cfg(test)]`): the proof that an entity
//! kind is declared once. It is declared here and on one line of `kind.rs`'s list, and nowhere
//! else; the inbox, the applier, lists, the watch and the read cache handle it through the same
//! generic code as every other kind (the test at the bottom drives it through all of them).
//!
//! It is shaped like the kinds the next issues add: a child of an organization whose delete does
//! not name its organization (as a domain's), and a status kept as the string Clerk sends.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::convert;
use super::fields::Field;
use super::kind::{AnyRecord, EntityType, Kind};
use super::records::{self, Record, RecordError};
use crate::pb;

/// The table a test creates for widgets (no migration has it).
pub const WIDGETS_TABLE: &str = "CREATE TABLE widgets (
    id text PRIMARY KEY, organization_id text, status text, name text,
    created_at timestamptz, updated_at timestamptz, deleted_at timestamptz, data jsonb,
    version_updated_ms bigint, version_event_ms bigint, version_key text, update_cursor bigint NOT NULL)";

/// A widget as its projection keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct WidgetRecord {
    pub id: String,
    pub organization_id: Option<String>,
    pub status: Option<String>,
    pub name: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub data: Option<Value>,
}

impl Record for WidgetRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

fn text(data: &Value, key: &str) -> Option<String> {
    data.get(key).and_then(Value::as_str).map(str::to_string)
}

impl Kind for WidgetRecord {
    const TYPE: EntityType = EntityType::Widget;
    const TABLE: &'static str = "widgets";
    const FIELDS: &'static [Field] = &[
        Field::text("id"),
        Field::text("organization_id"),
        Field::text("status"),
        Field::text("name"),
        Field::time("create_time").column("created_at"),
        Field::time("update_time").column("updated_at"),
        Field::time("delete_time").column("deleted_at"),
    ];
    const COLUMNS: &'static str = "id text, organization_id text, status text, name text, created_at timestamptz, \
         updated_at timestamptz, deleted_at timestamptz, data jsonb";
    const UPSERTED_BY: &'static [&'static str] = &["widget.created", "widget.updated"];
    const DELETED_BY: &'static [&'static str] = &["widget.deleted"];
    const PARENTS: &'static [(EntityType, &'static str)] = &[(EntityType::Organization, "organization_id")];

    fn from_clerk(data: Value) -> Result<Self, RecordError> {
        Ok(WidgetRecord {
            id: records::required_id(&data, "the widget")?,
            organization_id: text(&data, "organization_id"),
            status: text(&data, "status"),
            name: text(&data, "name"),
            created_at: records::ms_at(&data, "created_at").and_then(records::time_from_ms),
            updated_at: records::ms_at(&data, "updated_at").and_then(records::time_from_ms),
            deleted_at: None,
            data: Some(data),
        })
    }
    /// A widget's delete names only the widget (as a domain's does).
    fn from_delete(data: Value, at: DateTime<Utc>) -> Result<Self, RecordError> {
        let id = records::required_id(&data, "`widget.deleted`")?;
        Ok(WidgetRecord {
            id,
            organization_id: None,
            status: None,
            name: None,
            created_at: None,
            updated_at: None,
            deleted_at: Some(at),
            data: None,
        })
    }
    fn tombstone(&self, at: DateTime<Utc>) -> Self {
        WidgetRecord {
            organization_id: self.organization_id.clone(),
            ..Self::from_delete(serde_json::json!({"id": self.id}), at).expect("an id")
        }
    }
    /// The stored organization outlives the widget (its delete does not say it).
    fn delete_of(current: &Self, event: Self) -> Self {
        WidgetRecord {
            organization_id: current.organization_id.clone(),
            ..event
        }
    }
    fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.deleted_at
    }
    fn set_deleted_at(&mut self, at: DateTime<Utc>) {
        self.deleted_at = Some(at);
    }
    fn parent(&self, parent: EntityType) -> Option<&str> {
        (parent == EntityType::Organization)
            .then_some(self.organization_id.as_deref())
            .flatten()
    }
    fn organization_id(&self) -> Option<String> {
        self.organization_id.clone()
    }
    fn user_id(&self) -> Option<String> {
        None
    }
    fn into_any(self) -> AnyRecord {
        AnyRecord::Widget(self)
    }
    /// On the wire a widget borrows the organization's message (the API has no widget): its id,
    /// name and status (as the slug).
    type Message = pb::Organization;
    fn message(&self, update_cursor: i64, log_id: &str) -> pb::Organization {
        pb::Organization {
            name: format!("widgets/{}", self.id),
            id: self.id.clone(),
            display_name: self.name.clone().unwrap_or_default(),
            slug: self.status.clone().unwrap_or_default(),
            delete_time: convert::timestamp(self.deleted_at),
            update_cursor: crate::pb::cursor::Cursor::new(log_id, update_cursor).encode(),
            ..Default::default()
        }
    }
    fn message_deleted(message: &pb::Organization) -> bool {
        message.delete_time.is_some()
    }
    fn without_cursor(message: pb::Organization) -> pb::Organization {
        pb::Organization {
            update_cursor: String::new(),
            ..message
        }
    }
    const WIRE_TYPE: pb::EntityType = pb::EntityType::Unspecified;
    fn change_entity(message: pb::Organization) -> pb::change::Entity {
        pb::change::Entity::Organization(message)
    }
    fn change_previous(message: pb::Organization) -> pb::change::Previous {
        pb::change::Previous::PreviousOrganization(message)
    }
    const ORGANIZATION_COLUMN: Option<&'static str> = Some("organization_id");
    const USER_COLUMN: Option<&'static str> = None;
}

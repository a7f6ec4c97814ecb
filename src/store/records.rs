//! The projection records, built from Clerk's JSON objects, and what a tombstone keeps of them.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;

/// The last-writer-wins order of upserts: Clerk's `updated_at`, then the envelope timestamp,
/// then the event key (the `svix-id`), so every delivery order ends in the same state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    pub updated_ms: i64,
    pub event_ms: i64,
    pub key: String,
}

/// A record with the version that put it there and the seq of the change that last touched it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub record: T,
    pub version: Option<Version>,
    pub update_cursor: i64,
}

/// What every projection record has: an id.
pub trait Record {
    fn id(&self) -> &str;
}

impl Record for UserRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for OrganizationRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for MembershipRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// A user as the `users` projection keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UserRecord {
    pub id: String,
    pub external_id: Option<String>,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub image_url: Option<String>,
    pub primary_email_address: Option<String>,
    pub banned: bool,
    pub locked: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// The full Clerk object; `None` for tombstones.
    pub data: Option<Value>,
}

/// An organization as the `organizations` projection keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OrganizationRecord {
    pub id: String,
    pub name: Option<String>,
    pub slug: Option<String>,
    pub image_url: Option<String>,
    pub members_count: Option<i32>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub data: Option<Value>,
}

/// A membership as the `memberships` projection keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct MembershipRecord {
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    pub role: Option<String>,
    pub role_name: Option<String>,
    pub permissions: Vec<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// The full Clerk membership with the organization and public user data it carried.
    pub data: Option<Value>,
    /// Where `permissions` comes from, when read from `membership_view` (`role`,
    /// `membership_snapshot`, `deleted_role`; not stored, not in the change log).
    #[sqlx(default)]
    #[serde(skip)]
    pub permissions_source: Option<String>,
}

/// A Clerk object that cannot become a record.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct RecordError(pub String);

/// The string at `key`, if a string.
pub(super) fn str_at(v: &Value, key: &str) -> Option<String> {
    match v.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn bool_at(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Milliseconds since the epoch at `key`, if a number.
pub fn ms_at(v: &Value, key: &str) -> Option<i64> {
    let n = v.get(key)?;
    n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))
}

/// A time from milliseconds since the epoch, if within years 1 to 9999: beyond them chrono and
/// PostgreSQL disagree (a time PostgreSQL cannot store would make a verified event unstorable).
pub fn time_from_ms(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .filter(|t| (1..=9999).contains(&chrono::Datelike::year(t)))
}

/// The time at `key` (milliseconds since the epoch), if a number in range.
pub(super) fn time_at(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    ms_at(v, key).and_then(time_from_ms)
}

/// Longest id the mirror stores (Clerk's are ~32 characters).
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` can be a Clerk id here: 1 to 128 printable ASCII characters, no `/`. Every stored
/// id is addressable by a resource name (`users/{id}`), so the applier and the API share this rule.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// `id`, if it is a valid id; else an error naming `what` and `field`.
fn valid_id(id: Option<String>, what: &str, field: &str) -> Result<String, RecordError> {
    match id {
        None => Err(RecordError(format!("{what} has no string `{field}`"))),
        Some(id) if is_valid_id(&id) => Ok(id),
        Some(_) => Err(RecordError(format!(
            "{what} has an invalid `{field}` (1 to {MAX_ID_LEN} printable ASCII characters, no `/`)"
        ))),
    }
}

pub fn required_id(v: &Value, what: &str) -> Result<String, RecordError> {
    valid_id(str_at(v, "id"), what, "id")
}

/// The object, with every `\u0000` removed (jsonb cannot hold it) and null metadata made `{}`.
pub fn clean(mut value: Value) -> Value {
    strip_nul(&mut value);
    if let Value::Object(map) = &mut value {
        for key in ["public_metadata", "private_metadata", "unsafe_metadata"] {
            if matches!(map.get(key), Some(Value::Null)) {
                map.insert(key.to_string(), Value::Object(Default::default()));
            }
        }
    }
    value
}

fn strip_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', ""),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(map);
                for (k, v) in old {
                    map.insert(k.replace('\0', ""), v);
                }
            }
            map.values_mut().for_each(strip_nul);
        }
        _ => {}
    }
}

impl UserRecord {
    /// A record from Clerk's User object (already cleaned).
    pub fn from_clerk(data: Value) -> Result<UserRecord, RecordError> {
        let id = required_id(&data, "the user")?;
        let primary_id = str_at(&data, "primary_email_address_id");
        let primary_email_address = primary_id.and_then(|pid| {
            data.get("email_addresses")?
                .as_array()?
                .iter()
                .find(|e| e.get("id").and_then(Value::as_str) == Some(pid.as_str()))
                .and_then(|e| str_at(e, "email_address"))
        });
        Ok(UserRecord {
            id,
            external_id: str_at(&data, "external_id"),
            username: str_at(&data, "username"),
            first_name: str_at(&data, "first_name"),
            last_name: str_at(&data, "last_name"),
            image_url: str_at(&data, "image_url"),
            primary_email_address,
            banned: bool_at(&data, "banned"),
            locked: bool_at(&data, "locked"),
            created_at: time_at(&data, "created_at"),
            updated_at: time_at(&data, "updated_at"),
            last_sign_in_at: time_at(&data, "last_sign_in_at"),
            deleted_at: None,
            data: Some(data),
        })
    }

    /// What a tombstone keeps: id, external_id and the delete time. Deleted people are not kept.
    pub fn tombstone(id: String, external_id: Option<String>, deleted_at: DateTime<Utc>) -> UserRecord {
        UserRecord {
            id,
            external_id,
            username: None,
            first_name: None,
            last_name: None,
            image_url: None,
            primary_email_address: None,
            banned: false,
            locked: false,
            created_at: None,
            updated_at: None,
            last_sign_in_at: None,
            deleted_at: Some(deleted_at),
            data: None,
        }
    }

    /// Every `(id, address)` of the user's email addresses.
    pub fn email_addresses(&self) -> Vec<(String, String)> {
        identifications(self.data.as_ref(), "email_addresses", "email_address")
    }

    /// Every `(id, number)` of the user's phone numbers.
    pub fn phone_numbers(&self) -> Vec<(String, String)> {
        identifications(self.data.as_ref(), "phone_numbers", "phone_number")
    }
}

/// Rebuilds the email and phone lookup rows of every user in `written` from its new state.
pub(super) async fn write_user_lookups(tx: &mut PgConnection, written: &[&UserRecord]) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = written.iter().map(|u| u.id.as_str()).collect();
    let mut emails: (Vec<&str>, Vec<String>, Vec<String>) = Default::default();
    let mut phones: (Vec<&str>, Vec<String>, Vec<String>) = Default::default();
    for u in written {
        for (rows, items) in [(&mut emails, u.email_addresses()), (&mut phones, u.phone_numbers())] {
            for (id, value) in items {
                rows.0.push(&u.id);
                rows.1.push(id);
                rows.2.push(value);
            }
        }
    }
    for (table, key, value, rows) in [
        ("user_email_addresses", "email_id", "email_address", emails),
        ("user_phone_numbers", "phone_id", "phone_number", phones),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE user_id = ANY($1)"
        )))
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        if !rows.0.is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (user_id, {key}, {value})
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
            )))
            .bind(rows.0)
            .bind(rows.1)
            .bind(rows.2)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

fn identifications(data: Option<&Value>, list: &str, field: &str) -> Vec<(String, String)> {
    let Some(items) = data.and_then(|d| d.get(list)).and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let value = str_at(e, field)?;
            // An entry without an id still gets a stable key of its own.
            Some((str_at(e, "id").unwrap_or_else(|| format!("#{i}")), value))
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

impl OrganizationRecord {
    pub fn from_clerk(data: Value) -> Result<OrganizationRecord, RecordError> {
        let id = required_id(&data, "the organization")?;
        Ok(OrganizationRecord {
            id,
            name: str_at(&data, "name"),
            slug: str_at(&data, "slug"),
            image_url: str_at(&data, "image_url"),
            members_count: data
                .get("members_count")
                .and_then(Value::as_i64)
                .and_then(|n| i32::try_from(n).ok()),
            created_at: time_at(&data, "created_at"),
            updated_at: time_at(&data, "updated_at"),
            deleted_at: None,
            data: Some(data),
        })
    }

    /// What a tombstone keeps: the id and the delete time (the slug is freed).
    pub fn tombstone(id: String, deleted_at: DateTime<Utc>) -> OrganizationRecord {
        OrganizationRecord {
            id,
            name: None,
            slug: None,
            image_url: None,
            members_count: None,
            created_at: None,
            updated_at: None,
            deleted_at: Some(deleted_at),
            data: None,
        }
    }
}

impl MembershipRecord {
    pub fn from_clerk(data: Value) -> Result<MembershipRecord, RecordError> {
        let id = required_id(&data, "the membership")?;
        let organization_id = valid_id(
            data.get("organization")
                .and_then(|o| str_at(o, "id"))
                .or_else(|| str_at(&data, "organization_id")),
            "the membership",
            "organization.id",
        )?;
        let user_id = valid_id(
            data.get("public_user_data")
                .and_then(|u| str_at(u, "user_id"))
                .or_else(|| str_at(&data, "user_id")),
            "the membership",
            "public_user_data.user_id",
        )?;
        let permissions = data
            .get("permissions")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        Ok(MembershipRecord {
            id,
            organization_id,
            user_id,
            role: str_at(&data, "role"),
            role_name: str_at(&data, "role_name"),
            permissions,
            created_at: time_at(&data, "created_at"),
            updated_at: time_at(&data, "updated_at"),
            deleted_at: None,
            data: Some(data),
            permissions_source: None,
        })
    }

    /// What a tombstone keeps: the id, whose membership it was, and when it ended.
    pub fn tombstone(
        id: String,
        organization_id: String,
        user_id: String,
        deleted_at: DateTime<Utc>,
    ) -> MembershipRecord {
        MembershipRecord {
            id,
            organization_id,
            user_id,
            role: None,
            role_name: None,
            permissions: Vec::new(),
            created_at: None,
            updated_at: None,
            deleted_at: Some(deleted_at),
            data: None,
            permissions_source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_characters_are_stripped_from_values_and_keys_and_null_metadata_becomes_empty() {
        let v = clean(json!({"a\u{0}b": ["x\u{0}y", {"k": "\u{0}"}], "private_metadata": null}));
        assert_eq!(v, json!({"ab": ["xy", {"k": ""}], "private_metadata": {}}));
    }

    #[test]
    fn a_user_without_optional_fields_is_still_a_user() {
        let u = UserRecord::from_clerk(json!({"id": "user_1"})).unwrap();
        assert_eq!(u.id, "user_1");
        assert_eq!(u.primary_email_address, None);
        assert!(UserRecord::from_clerk(json!({"first_name": "x"})).is_err());
    }

    #[test]
    fn the_primary_email_address_is_found_by_its_id() {
        let u = UserRecord::from_clerk(json!({
            "id": "user_1", "primary_email_address_id": "idn_2",
            "email_addresses": [{"id": "idn_1", "email_address": "a@x"}, {"id": "idn_2", "email_address": "b@x"}]
        }))
        .unwrap();
        assert_eq!(u.primary_email_address.as_deref(), Some("b@x"));
        assert_eq!(u.email_addresses().len(), 2);
    }
}

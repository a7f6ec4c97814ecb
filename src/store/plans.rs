//! Clerk Billing's plans: the record (from the Backend API's plan list, `GET /billing/plans`),
//! its `Kind` and its message.
//!
//! What Clerk sends, and what the mirror makes of it (clerk/openapi-specs `bapi/…yml`,
//! `CommercePlan`):
//! - plans have no webhooks, and a plan object has no `created_at` or `updated_at`: the mirror
//!   lists them itself (`backfill::plans`) and enqueues a row of its own (source `api`, type
//!   [`LISTED`]) when a listed plan differs from the stored one, versioned by when it was listed;
//! - features live only in that list (`features[].slug`); the plan a webhook's item nests carries
//!   none, so it never writes a plan;
//! - `for_payer_type` is `user` or `org`: the mirror says `user` or `organization`;
//! - money is Clerk's `{amount, currency}` in minor units (cents), an integer: an amount that is
//!   not one (a float) is not read at all, never rounded;
//! - no event deletes a plan: a plan Clerk stops listing stays as it was last listed (items
//!   still name it).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::convert::timestamp;
use super::fields::Field;
use super::kind::{AnyRecord, EntityType, Kind, never_deleted};
use super::records::{self, Record, RecordError, str_at as text};
use crate::pb::{self, cursor::Cursor};

/// The event type of the rows the plan listing enqueues (the mirror's own: Clerk sends none).
pub const LISTED: &str = "clerkmirror.plan.listed";

/// The channel the applier notifies, with a plan id, when it writes an item naming a plan the
/// mirror does not hold (`backfill::plans` lists the plans again).
pub const WANTED_CHANNEL: &str = "clerk_mirror_plans_wanted";

/// A plan as the `plans` projection keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct PlanRecord {
    pub id: String,
    pub slug: Option<String>,
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// `user` or `organization` (Clerk's `for_payer_type` `user` / `org`; another value as sent).
    pub payer_type: Option<String>,
    /// The slugs of its features, distinct, in Clerk's order.
    pub features: Vec<String>,
    pub is_default: bool,
    pub is_recurring: bool,
    pub publicly_visible: bool,
    /// Prices in minor units of `currency`.
    pub fee_amount: Option<i64>,
    pub annual_fee_amount: Option<i64>,
    pub annual_monthly_fee_amount: Option<i64>,
    pub currency: Option<String>,
    pub free_trial_days: Option<i64>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub data: Option<Value>,
}

impl Record for PlanRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The amount (minor units) of Clerk's money object at `key`, only if an integer.
fn amount(data: &Value, key: &str) -> Option<i64> {
    data.get(key)?.get("amount")?.as_i64()
}

/// The slugs of a plan's features, distinct, in Clerk's order.
fn feature_slugs(data: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for slug in data
        .get("features")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("slug").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
    {
        if !out.iter().any(|s| s == slug) {
            out.push(slug.to_string());
        }
    }
    out
}

/// The payer type a plan is for, as the API says it.
pub fn payer_type(for_payer_type: &str) -> &str {
    match for_payer_type {
        "org" | "organization" => "organization",
        other => other,
    }
}

impl PlanRecord {
    pub fn from_clerk(data: Value) -> Result<PlanRecord, RecordError> {
        let id = records::required_id(&data, "the plan")?;
        let currency = ["fee", "annual_monthly_fee", "annual_fee"]
            .iter()
            .find_map(|k| data.get(*k).and_then(|m| text(m, "currency")));
        let flag = |key: &str| data.get(key).and_then(Value::as_bool).unwrap_or(false);
        Ok(PlanRecord {
            id,
            slug: text(&data, "slug"),
            display_name: text(&data, "name"),
            description: text(&data, "description"),
            payer_type: text(&data, "for_payer_type").map(|p| payer_type(&p).to_string()),
            features: feature_slugs(&data),
            is_default: flag("is_default"),
            is_recurring: flag("is_recurring"),
            publicly_visible: flag("publicly_visible"),
            fee_amount: amount(&data, "fee"),
            annual_fee_amount: amount(&data, "annual_fee"),
            annual_monthly_fee_amount: amount(&data, "annual_monthly_fee"),
            currency,
            free_trial_days: data.get("free_trial_days").and_then(Value::as_i64),
            deleted_at: None,
            data: Some(data),
        })
    }
}

impl Kind for PlanRecord {
    const TYPE: EntityType = EntityType::Plan;
    const TABLE: &'static str = "plans";
    /// Plans decide what every organization (and user) is entitled to.
    const IN_EVERY_ORGANIZATION: bool = true;
    const FIELDS: &'static [Field] = &[
        Field::text("id"),
        Field::text("slug"),
        Field::text("display_name"),
        Field::text("payer_type"),
        Field::text_list("features"),
        Field::boolean("is_default"),
        Field::boolean("is_recurring"),
        Field::boolean("publicly_visible"),
        Field::int("fee_amount"),
        Field::text("currency"),
    ];
    const COLUMNS: &'static str = "id text, slug text, display_name text, description text, payer_type text, \
         features text[], is_default boolean, is_recurring boolean, publicly_visible boolean, fee_amount bigint, \
         annual_fee_amount bigint, annual_monthly_fee_amount bigint, currency text, free_trial_days bigint, \
         deleted_at timestamptz, data jsonb";
    const UPSERTED_BY: &'static [&'static str] = &[LISTED];
    /// No event deletes a plan.
    const DELETED_BY: &'static [&'static str] = &[];
    const ADDED_LATER: bool = true;

    never_deleted!();
    fn organization_id(&self) -> Option<String> {
        None
    }
    fn user_id(&self) -> Option<String> {
        None
    }
    fn into_any(self) -> AnyRecord {
        AnyRecord::Plan(self)
    }
    type Message = pb::Plan;
    fn message(&self, update_cursor: i64, log_id: &str) -> pb::Plan {
        pb::Plan {
            name: format!("plans/{}", self.id),
            id: self.id.clone(),
            slug: self.slug.clone().unwrap_or_default(),
            display_name: self.display_name.clone().unwrap_or_default(),
            description: self.description.clone().unwrap_or_default(),
            payer_type: self.payer_type.clone().unwrap_or_default(),
            features: self.features.clone(),
            is_default: self.is_default,
            is_recurring: self.is_recurring,
            publicly_visible: self.publicly_visible,
            fee_amount: self.fee_amount,
            annual_fee_amount: self.annual_fee_amount,
            annual_monthly_fee_amount: self.annual_monthly_fee_amount,
            currency: self.currency.clone().unwrap_or_default(),
            free_trial_days: self.free_trial_days,
            update_cursor: Cursor::new(log_id, update_cursor).encode(),
            delete_time: timestamp(self.deleted_at),
        }
    }
    fn message_deleted(message: &pb::Plan) -> bool {
        message.delete_time.is_some()
    }
    fn without_cursor(message: pb::Plan) -> pb::Plan {
        pb::Plan {
            update_cursor: String::new(),
            ..message
        }
    }
    const WIRE_TYPE: pb::EntityType = pb::EntityType::Plan;
    fn change_entity(message: pb::Plan) -> pb::change::Entity {
        pb::change::Entity::Plan(message)
    }
    fn change_previous(message: pb::Plan) -> pb::change::Previous {
        pb::change::Previous::PreviousPlan(message)
    }
    const ORGANIZATION_COLUMN: Option<&'static str> = None;
    const USER_COLUMN: Option<&'static str> = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listed() -> Value {
        json!({
            "object": "commerce_plan", "id": "cplan_pro", "name": "Pro", "slug": "pro", "description": null,
            "for_payer_type": "org", "is_default": false, "is_recurring": true, "publicly_visible": true,
            "fee": {"amount": 2500, "amount_formatted": "25.00", "currency": "USD", "currency_symbol": "$"},
            "annual_fee": {"amount": 24000, "amount_formatted": "240.00", "currency": "USD", "currency_symbol": "$"},
            "annual_monthly_fee": null, "free_trial_enabled": true, "free_trial_days": 14,
            "features": [{"object": "feature", "id": "feat_1", "slug": "sso", "name": "SSO"},
                         {"object": "feature", "id": "feat_2", "slug": "audit_log", "name": "Audit log"},
                         {"object": "feature", "id": "feat_1", "slug": "sso", "name": "SSO"}],
        })
    }

    #[test]
    fn a_listed_plan_keeps_its_feature_slugs_its_payer_type_and_its_prices_in_minor_units() {
        let p = PlanRecord::from_clerk(listed()).unwrap();
        let m = p.message(4, "log");
        assert_eq!((m.name.as_str(), m.slug.as_str(), m.display_name.as_str()), ("plans/cplan_pro", "pro", "Pro"));
        assert_eq!(m.features, ["sso", "audit_log"]);
        assert_eq!(m.payer_type, "organization");
        assert_eq!((m.fee_amount, m.annual_fee_amount, m.annual_monthly_fee_amount), (Some(2500), Some(24000), None));
        assert_eq!((m.currency.as_str(), m.free_trial_days), ("USD", Some(14)));
        assert!(m.is_recurring && m.publicly_visible && !m.is_default);
    }

    #[test]
    fn money_that_is_not_an_integer_of_minor_units_is_not_read() {
        let mut body = listed();
        body["fee"]["amount"] = json!(25.99);
        let p = PlanRecord::from_clerk(body).unwrap();
        assert_eq!(p.fee_amount, None);
        assert_eq!(p.annual_fee_amount, Some(24000));
    }

    #[test]
    fn a_user_plan_says_user_and_a_plan_without_features_has_none() {
        let p = PlanRecord::from_clerk(json!({"id": "cplan_free", "for_payer_type": "user", "is_default": true})).unwrap();
        assert_eq!(p.payer_type.as_deref(), Some("user"));
        assert!(p.features.is_empty() && p.is_default);
        assert!(PlanRecord::from_clerk(json!({"slug": "x"})).is_err());
    }
}

//! Clerk Billing's subscriptions and subscription items: the records (from the `subscription.*`
//! and `subscriptionItem.*` webhooks), their `Kind`s and their messages.
//!
//! What Clerk sends, and what the mirror makes of it (clerk/openapi-specs
//! `webhooks/2025-04-15.yml`, `BillingSubscriptionItemEventPayload`):
//! - a subscription event carries its items, with null `payer` and `subscription_id`: they
//!   inherit the subscription's, and each is versioned by its own `updated_at`;
//! - no event deletes a subscription or an item: the default plan's item keeps one id and cycles ended →
//!   upcoming → active, so the newest `updated_at` wins and nothing ends it for good;
//! - the payer is an organization when `payer.organization_id` is non-empty, else a user
//!   (`payer.user_id`): Clerk sends `""` for the absent one, and some payers omit the field;
//! - the status is kept as sent, values Clerk adds later included; the event type's spelling
//!   (`pastDue`, formerly `past_due`) does not matter, the body's `status` does;
//! - `period_end` is null for the default plan's items; `seats.quantity` null means unlimited.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;

use super::convert::timestamp;
use super::fields::Field;
use super::kind::{AnyRecord, EntityType, Kind, never_deleted};
use super::plans::WANTED_CHANNEL;
use super::records::{self, Record, RecordError, str_at as text, time_at};
use crate::pb::{self, cursor::Cursor};

/// What the billing kinds paid by someone share in their `Kind`: [`never_deleted!`], and the
/// payer decides the organization or user it belongs to.
macro_rules! paid_and_never_deleted {
    () => {
        never_deleted!();
        fn organization_id(&self) -> Option<String> {
            self.payer_organization_id.clone()
        }
        fn user_id(&self) -> Option<String> {
            self.payer_user_id.clone()
        }
    };
}

/// The statuses Clerk documents for a subscription item (the Backend API's `expired` too).
const ITEM_STATUSES: &[&str] = &["abandoned", "active", "canceled", "ended", "expired", "incomplete", "past_due", "upcoming"];

/// The statuses Clerk documents for a subscription.
const SUBSCRIPTION_STATUSES: &[&str] = &["abandoned", "active", "canceled", "ended", "incomplete", "past_due"];

/// `status`, if it is none of `known`.
fn unknown<'a>(status: &'a Option<String>, known: &[&str]) -> Option<&'a str> {
    status.as_deref().filter(|s| !known.contains(s))
}

/// A subscription item as the `subscription_items` projection keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct SubscriptionItemRecord {
    pub id: String,
    pub subscription_id: Option<String>,
    /// `organizations/{id}` or `users/{id}`.
    pub payer: Option<String>,
    pub payer_organization_id: Option<String>,
    pub payer_user_id: Option<String>,
    /// `organization` or `user`: the payer's type.
    #[serde(default)]
    pub payer_type: Option<String>,
    pub plan_id: Option<String>,
    /// `plans/{plan_id}`.
    #[serde(default)]
    pub plan: Option<String>,
    pub plan_slug: Option<String>,
    /// The status: Clerk's, or `ended` where the mirror saw a canceled item's period end pass
    /// while Clerk still said `canceled` (see [`PERIOD_ENDED`]).
    pub status: Option<String>,
    /// The status as Clerk last said it.
    #[serde(default)]
    pub clerk_status: Option<String>,
    pub is_free_trial: bool,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub interval: Option<String>,
    pub seats: Option<i64>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub data: Option<Value>,
}

impl Record for SubscriptionItemRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// A non-empty, valid id at `key` of `v`.
fn id_at(v: &Value, key: &str) -> Option<String> {
    text(v, key).filter(|id| records::is_valid_id(id))
}

/// Who pays, from Clerk's `payer` object: the organization when it names one, else the user.
#[derive(Debug, Default, PartialEq)]
struct Payer {
    /// `organizations/{id}` or `users/{id}`.
    name: Option<String>,
    organization_id: Option<String>,
    /// Only when no organization pays (an organization payer's user fields are `""`).
    user_id: Option<String>,
}

impl Payer {
    /// `organization` or `user`, when the payer is known.
    fn payer_type(&self) -> Option<String> {
        match (&self.organization_id, &self.user_id) {
            (Some(_), _) => Some("organization".into()),
            (None, Some(_)) => Some("user".into()),
            (None, None) => None,
        }
    }

    fn of(data: &Value) -> Payer {
        let Some(payer) = data.get("payer").filter(|p| p.is_object()) else {
            return Payer::default();
        };
        match (id_at(payer, "organization_id"), id_at(payer, "user_id")) {
            (Some(o), _) => Payer {
                name: Some(format!("organizations/{o}")),
                organization_id: Some(o),
                user_id: None,
            },
            (None, Some(u)) => Payer {
                name: Some(format!("users/{u}")),
                organization_id: None,
                user_id: Some(u),
            },
            (None, None) => Payer::default(),
        }
    }
}

/// The type of the rows the mirror enqueues when a canceled item's period has ended and Clerk
/// still says `canceled` (source `clock`, `applier::expiry`): the item is then `ended`, once,
/// until Clerk says otherwise.
pub const PERIOD_ENDED: &str = "clerkmirror.subscriptionItem.periodEnded";

const CANCELED: &str = "canceled";

impl SubscriptionItemRecord {
    /// Whether the mirror ended it (its period ended while Clerk still said canceled).
    pub fn ended_by_mirror(&self) -> bool {
        self.status.as_deref() == Some("ended") && self.clerk_status.as_deref() == Some(CANCELED)
    }

    pub fn from_clerk(data: Value) -> Result<SubscriptionItemRecord, RecordError> {
        let id = records::required_id(&data, "the subscription item")?;
        let payer = Payer::of(&data);
        let payer_type = payer.payer_type();
        let plan = data.get("plan").filter(|p| p.is_object());
        let plan_id = id_at(&data, "plan_id").or_else(|| plan.and_then(|p| id_at(p, "id")));
        Ok(SubscriptionItemRecord {
            id,
            subscription_id: id_at(&data, "subscription_id"),
            payer: payer.name,
            payer_organization_id: payer.organization_id,
            payer_user_id: payer.user_id,
            payer_type,
            plan: plan_id.as_ref().map(|p| format!("plans/{p}")),
            plan_id,
            plan_slug: plan.and_then(|p| text(p, "slug")),
            status: text(&data, "status"),
            clerk_status: text(&data, "status"),
            is_free_trial: data.get("is_free_trial").and_then(Value::as_bool).unwrap_or(false),
            period_start: time_at(&data, "period_start"),
            period_end: time_at(&data, "period_end"),
            // Webhooks say `interval`; the Backend API's list says `plan_period`.
            interval: text(&data, "interval")
                .or_else(|| text(&data, "plan_period"))
                .filter(|i| !i.is_empty()),
            seats: data.get("seats").and_then(|s| s.get("quantity")).and_then(Value::as_i64),
            created_at: time_at(&data, "created_at"),
            updated_at: time_at(&data, "updated_at"),
            deleted_at: None,
            data: Some(data),
        })
    }
}

impl Kind for SubscriptionItemRecord {
    const TYPE: EntityType = EntityType::SubscriptionItem;
    const TABLE: &'static str = "subscription_items";
    const FIELDS: &'static [Field] = &[
        Field::text("id"),
        Field::text("payer"),
        Field::text("payer_type"),
        Field::text("plan"),
        Field::text("plan_slug"),
        Field::text("status"),
        Field::boolean("is_free_trial"),
        Field::text("interval"),
        Field::time("period_start"),
        Field::time("period_end"),
        Field::time("create_time").column("created_at"),
        Field::time("update_time").column("updated_at"),
    ];
    const COLUMNS: &'static str = "id text, subscription_id text, payer text, payer_organization_id text, \
         payer_user_id text, payer_type text, plan_id text, plan text, plan_slug text, status text, clerk_status text, is_free_trial boolean, \
         period_start timestamptz, period_end timestamptz, interval text, seats bigint, created_at timestamptz, \
         updated_at timestamptz, deleted_at timestamptz, data jsonb";
    const UPSERTED_BY: &'static [&'static str] = &[
        "subscriptionItem.created",
        "subscriptionItem.updated",
        "subscriptionItem.active",
        "subscriptionItem.canceled",
        "subscriptionItem.upcoming",
        "subscriptionItem.ended",
        "subscriptionItem.abandoned",
        "subscriptionItem.incomplete",
        "subscriptionItem.pastDue",
        "subscriptionItem.past_due",
        "subscriptionItem.freeTrialEnding",
    ];
    /// No event deletes a subscription item.
    const DELETED_BY: &'static [&'static str] = &[];
    /// A subscription's events carry its items.
    const CARRIED_BY: &'static [&'static str] = SUBSCRIPTION_EVENTS;
    const DERIVED_BY: &'static [&'static str] = &[PERIOD_ENDED];
    /// Clerk's canceled, under the mirror's end.
    fn underived(&self) -> Option<Self> {
        self.ended_by_mirror().then(|| SubscriptionItemRecord {
            status: self.clerk_status.clone(),
            ..self.clone()
        })
    }
    /// Ended, from Clerk's canceled with the period end the row names.
    fn derive(current: &Self, event_type: &str, data: &Value) -> Option<Self> {
        let period_end = time_at(data, "period_end");
        let holds = event_type == PERIOD_ENDED
            && current.clerk_status.as_deref() == Some(CANCELED)
            && current.status.as_deref() == Some(CANCELED)
            && current.period_end.is_some()
            && current.period_end == period_end;
        holds.then(|| SubscriptionItemRecord {
            status: Some("ended".into()),
            ..current.clone()
        })
    }
    /// The items a subscription carries, each with the subscription's payer and id where its own
    /// are null (Clerk sends them null inside a subscription).
    fn carried(data: &Value) -> Vec<Value> {
        let Some(items) = data.get("items").and_then(Value::as_array) else {
            return Vec::new();
        };
        items
            .iter()
            .filter(|item| item.is_object())
            .map(|item| {
                let mut item = item.clone();
                for (field, from) in [("payer", "payer"), ("subscription_id", "id")] {
                    if item.get(field).is_none_or(Value::is_null)
                        && let Some(v) = data.get(from).filter(|v| !v.is_null())
                    {
                        item[field] = v.clone();
                    }
                }
                item
            })
            .collect()
    }
    const ADDED_LATER: bool = true;
    /// Asks for the plans listed again when an item names one the mirror does not hold (on
    /// [`WANTED_CHANNEL`], one notification per plan, delivered when the batch commits).
    fn after_write<'a>(
        tx: &'a mut PgConnection,
        written: &'a [&'a Self],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        let mut plans: Vec<String> = written.iter().filter_map(|i| i.plan_id.clone()).collect();
        plans.sort();
        plans.dedup();
        async move {
            if plans.is_empty() {
                return Ok(());
            }
            sqlx::query(
                "SELECT pg_notify($2, p) FROM unnest($1::text[]) AS p
                  WHERE NOT EXISTS (SELECT 1 FROM plans WHERE id = p)",
            )
            .bind(plans)
            .bind(WANTED_CHANNEL)
            .execute(&mut *tx)
            .await
            .map(|_| ())
        }
    }

    paid_and_never_deleted!();
    fn into_any(self) -> AnyRecord {
        AnyRecord::SubscriptionItem(self)
    }
    type Message = pb::SubscriptionItem;
    fn message(&self, update_cursor: i64, log_id: &str) -> pb::SubscriptionItem {
        pb::SubscriptionItem {
            name: format!("subscriptionItems/{}", self.id),
            id: self.id.clone(),
            subscription: self
                .subscription_id
                .as_ref()
                .map(|s| format!("subscriptions/{s}"))
                .unwrap_or_default(),
            payer: self.payer.clone().unwrap_or_default(),
            plan: self.plan.clone().unwrap_or_default(),
            plan_slug: self.plan_slug.clone().unwrap_or_default(),
            status: self.status.clone().unwrap_or_default(),
            ended_by_mirror: self.ended_by_mirror(),
            is_free_trial: self.is_free_trial,
            period_start: timestamp(self.period_start),
            period_end: timestamp(self.period_end),
            interval: self.interval.clone().unwrap_or_default(),
            seats: self.seats,
            create_time: timestamp(self.created_at),
            update_time: timestamp(self.updated_at),
            delete_time: timestamp(self.deleted_at),
            update_cursor: Cursor::new(log_id, update_cursor).encode(),
        }
    }
    fn message_deleted(message: &pb::SubscriptionItem) -> bool {
        message.delete_time.is_some()
    }
    fn without_cursor(message: pb::SubscriptionItem) -> pb::SubscriptionItem {
        pb::SubscriptionItem {
            update_cursor: String::new(),
            ..message
        }
    }
    const WIRE_TYPE: pb::EntityType = pb::EntityType::SubscriptionItem;
    fn change_entity(message: pb::SubscriptionItem) -> pb::change::Entity {
        pb::change::Entity::SubscriptionItem(message)
    }
    fn change_previous(message: pb::SubscriptionItem) -> pb::change::Previous {
        pb::change::Previous::PreviousSubscriptionItem(message)
    }
    const ORGANIZATION_COLUMN: Option<&'static str> = Some("payer_organization_id");
    const USER_COLUMN: Option<&'static str> = Some("payer_user_id");
    fn unrecognised(&self) -> Option<&str> {
        unknown(&self.status, ITEM_STATUSES)
    }
}

/// A subscription as the `subscriptions` projection keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct SubscriptionRecord {
    pub id: String,
    /// `organizations/{id}` or `users/{id}`.
    pub payer: Option<String>,
    pub payer_organization_id: Option<String>,
    pub payer_user_id: Option<String>,
    pub status: Option<String>,
    pub active_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub past_due_at: Option<DateTime<Utc>>,
    /// The payment its latest payment attempts are at (their `payment_id`).
    #[serde(default)]
    pub latest_payment_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub data: Option<Value>,
}

impl Record for SubscriptionRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

impl SubscriptionRecord {
    pub fn from_clerk(data: Value) -> Result<SubscriptionRecord, RecordError> {
        let id = records::required_id(&data, "the subscription")?;
        let payer = Payer::of(&data);
        Ok(SubscriptionRecord {
            id,
            payer: payer.name,
            payer_organization_id: payer.organization_id,
            payer_user_id: payer.user_id,
            status: text(&data, "status"),
            active_at: time_at(&data, "active_at"),
            canceled_at: time_at(&data, "canceled_at"),
            ended_at: time_at(&data, "ended_at"),
            past_due_at: time_at(&data, "past_due_at"),
            latest_payment_id: id_at(&data, "latest_payment_id"),
            created_at: time_at(&data, "created_at"),
            updated_at: time_at(&data, "updated_at"),
            deleted_at: None,
            // Its items are kept as items (each its own entity), not twice.
            data: Some(match data {
                Value::Object(mut o) => {
                    o.remove("items");
                    Value::Object(o)
                }
                other => other,
            }),
        })
    }
}

/// The `subscription.*` events (`pastDue` also spelled `past_due`): a subscription's own, which
/// also carry its items.
const SUBSCRIPTION_EVENTS: &[&str] = &[
    "subscription.created",
    "subscription.updated",
    "subscription.active",
    "subscription.pastDue",
    "subscription.past_due",
];

impl Kind for SubscriptionRecord {
    const TYPE: EntityType = EntityType::Subscription;
    const TABLE: &'static str = "subscriptions";
    const FIELDS: &'static [Field] = &[
        Field::text("id"),
        Field::text("payer"),
        Field::text("status"),
        Field::time("active_time").column("active_at"),
        Field::time("cancel_time").column("canceled_at"),
        Field::time("end_time").column("ended_at"),
        Field::time("past_due_time").column("past_due_at"),
        Field::time("create_time").column("created_at"),
        Field::time("update_time").column("updated_at"),
    ];
    const COLUMNS: &'static str = "id text, payer text, payer_organization_id text, payer_user_id text, status text, \
         active_at timestamptz, canceled_at timestamptz, ended_at timestamptz, past_due_at timestamptz, \
         latest_payment_id text, created_at timestamptz, updated_at timestamptz, deleted_at timestamptz, data jsonb";
    const UPSERTED_BY: &'static [&'static str] = SUBSCRIPTION_EVENTS;
    /// No event deletes a subscription.
    const DELETED_BY: &'static [&'static str] = &[];
    const ADDED_LATER: bool = true;

    paid_and_never_deleted!();
    fn into_any(self) -> AnyRecord {
        AnyRecord::Subscription(self)
    }
    type Message = pb::Subscription;
    fn message(&self, update_cursor: i64, log_id: &str) -> pb::Subscription {
        pb::Subscription {
            name: format!("subscriptions/{}", self.id),
            id: self.id.clone(),
            payer: self.payer.clone().unwrap_or_default(),
            status: self.status.clone().unwrap_or_default(),
            active_time: timestamp(self.active_at),
            cancel_time: timestamp(self.canceled_at),
            end_time: timestamp(self.ended_at),
            past_due_time: timestamp(self.past_due_at),
            create_time: timestamp(self.created_at),
            update_time: timestamp(self.updated_at),
            update_cursor: Cursor::new(log_id, update_cursor).encode(),
            delete_time: timestamp(self.deleted_at),
            items: Vec::new(),
            latest_payment_id: self.latest_payment_id.clone().unwrap_or_default(),
            latest_payment_status: String::new(),
        }
    }
    fn message_deleted(message: &pb::Subscription) -> bool {
        message.delete_time.is_some()
    }
    fn without_cursor(message: pb::Subscription) -> pb::Subscription {
        pb::Subscription {
            update_cursor: String::new(),
            ..message
        }
    }
    const WIRE_TYPE: pb::EntityType = pb::EntityType::Subscription;
    fn change_entity(message: pb::Subscription) -> pb::change::Entity {
        pb::change::Entity::Subscription(message)
    }
    fn change_previous(message: pb::Subscription) -> pb::change::Previous {
        pb::change::Previous::PreviousSubscription(message)
    }
    const ORGANIZATION_COLUMN: Option<&'static str> = Some("payer_organization_id");
    const USER_COLUMN: Option<&'static str> = Some("payer_user_id");
    fn unrecognised(&self) -> Option<&str> {
        unknown(&self.status, SUBSCRIPTION_STATUSES)
    }
}

/// A payment attempt as the `payment_attempts` projection keeps it (`paymentAttempt.*`): what a
/// subscription's latest payment shows (its `latest_payment_id` is the attempts' `payment_id`;
/// a retried payment has several attempts, the newest says).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct PaymentAttemptRecord {
    pub id: String,
    /// The payment it is an attempt at (a subscription's `latest_payment_id`).
    pub payment_id: Option<String>,
    /// `organizations/{id}` or `users/{id}`.
    pub payer: Option<String>,
    pub payer_organization_id: Option<String>,
    pub payer_user_id: Option<String>,
    /// Clerk's status as sent: `pending`, `paid`, `failed`, or another value Clerk may add.
    pub status: Option<String>,
    /// `checkout` or `recurring`.
    pub charge_type: Option<String>,
    /// The grand total, in minor units of `currency`.
    pub amount: Option<i64>,
    pub currency: Option<String>,
    /// Why it failed (`failed_reason.code`: `card_declined`, …).
    pub failed_reason: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub billing_date: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Clerk's object without its payment source (card details) and the payer's contact fields.
    pub data: Option<Value>,
}

impl Record for PaymentAttemptRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The statuses Clerk documents for a payment attempt.
const ATTEMPT_STATUSES: &[&str] = &["failed", "paid", "pending"];

impl PaymentAttemptRecord {
    pub fn from_clerk(data: Value) -> Result<PaymentAttemptRecord, RecordError> {
        let id = records::required_id(&data, "the payment attempt")?;
        let payer = Payer::of(&data);
        let total = data.get("totals").and_then(|t| t.get("grand_total"));
        Ok(PaymentAttemptRecord {
            id,
            payment_id: id_at(&data, "payment_id"),
            payer: payer.name,
            payer_organization_id: payer.organization_id,
            payer_user_id: payer.user_id,
            status: text(&data, "status"),
            charge_type: text(&data, "charge_type"),
            amount: total.and_then(|t| t.get("amount")).and_then(Value::as_i64),
            currency: total.and_then(|t| text(t, "currency")),
            failed_reason: data.get("failed_reason").and_then(|r| text(r, "code")),
            paid_at: time_at(&data, "paid_at"),
            failed_at: time_at(&data, "failed_at"),
            billing_date: time_at(&data, "billing_date"),
            created_at: time_at(&data, "created_at"),
            updated_at: time_at(&data, "updated_at"),
            deleted_at: None,
            data: Some(match data {
                Value::Object(mut o) => {
                    o.remove("payment_source");
                    if let Some(Value::Object(payer)) = o.get_mut("payer") {
                        for field in ["email", "first_name", "last_name", "image_url"] {
                            payer.remove(field);
                        }
                    }
                    Value::Object(o)
                }
                other => other,
            }),
        })
    }
}

impl Kind for PaymentAttemptRecord {
    const TYPE: EntityType = EntityType::PaymentAttempt;
    const TABLE: &'static str = "payment_attempts";
    const FIELDS: &'static [Field] = &[
        Field::text("id"),
        Field::text("payment_id"),
        Field::text("payer"),
        Field::text("status"),
        Field::text("charge_type"),
        Field::int("amount"),
        Field::text("currency"),
        Field::text("failed_reason"),
        Field::time("paid_time").column("paid_at"),
        Field::time("fail_time").column("failed_at"),
        Field::time("billing_time").column("billing_date"),
        Field::time("create_time").column("created_at"),
        Field::time("update_time").column("updated_at"),
    ];
    const COLUMNS: &'static str = "id text, payment_id text, payer text, payer_organization_id text, payer_user_id text, \
         status text, charge_type text, amount bigint, currency text, failed_reason text, paid_at timestamptz, \
         failed_at timestamptz, billing_date timestamptz, created_at timestamptz, updated_at timestamptz, \
         deleted_at timestamptz, data jsonb";
    const UPSERTED_BY: &'static [&'static str] = &["paymentAttempt.created", "paymentAttempt.updated"];
    /// No event deletes a payment attempt.
    const DELETED_BY: &'static [&'static str] = &[];
    const ADDED_LATER: bool = true;

    paid_and_never_deleted!();
    fn into_any(self) -> AnyRecord {
        AnyRecord::PaymentAttempt(self)
    }
    type Message = pb::PaymentAttempt;
    fn message(&self, update_cursor: i64, log_id: &str) -> pb::PaymentAttempt {
        pb::PaymentAttempt {
            name: format!("paymentAttempts/{}", self.id),
            id: self.id.clone(),
            payment_id: self.payment_id.clone().unwrap_or_default(),
            payer: self.payer.clone().unwrap_or_default(),
            status: self.status.clone().unwrap_or_default(),
            charge_type: self.charge_type.clone().unwrap_or_default(),
            amount: self.amount,
            currency: self.currency.clone().unwrap_or_default(),
            failed_reason: self.failed_reason.clone().unwrap_or_default(),
            paid_time: timestamp(self.paid_at),
            fail_time: timestamp(self.failed_at),
            billing_time: timestamp(self.billing_date),
            create_time: timestamp(self.created_at),
            update_time: timestamp(self.updated_at),
            update_cursor: Cursor::new(log_id, update_cursor).encode(),
            delete_time: timestamp(self.deleted_at),
        }
    }
    fn message_deleted(message: &pb::PaymentAttempt) -> bool {
        message.delete_time.is_some()
    }
    fn without_cursor(message: pb::PaymentAttempt) -> pb::PaymentAttempt {
        pb::PaymentAttempt {
            update_cursor: String::new(),
            ..message
        }
    }
    const WIRE_TYPE: pb::EntityType = pb::EntityType::PaymentAttempt;
    fn change_entity(message: pb::PaymentAttempt) -> pb::change::Entity {
        pb::change::Entity::PaymentAttempt(message)
    }
    fn change_previous(message: pb::PaymentAttempt) -> pb::change::Previous {
        pb::change::Previous::PreviousPaymentAttempt(message)
    }
    const ORGANIZATION_COLUMN: Option<&'static str> = Some("payer_organization_id");
    const USER_COLUMN: Option<&'static str> = Some("payer_user_id");
    fn unrecognised(&self) -> Option<&str> {
        unknown(&self.status, ATTEMPT_STATUSES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(payer: Value) -> SubscriptionItemRecord {
        SubscriptionItemRecord::from_clerk(json!({
            "object": "commerce_subscription_item", "id": "csub_item_1", "status": "active",
            "is_free_trial": false, "plan_id": "cplan_1", "plan": {"id": "cplan_1", "slug": "pro"},
            "period_start": 1_767_225_600_000i64, "period_end": null, "interval": "month",
            "payer": payer, "subscription_id": "csub_1", "updated_at": 1_767_225_600_000i64,
        }))
        .unwrap()
    }

    #[test]
    fn the_payer_is_the_organization_when_it_is_named_else_the_user() {
        let org = item(json!({"id": "cpayer_1", "organization_id": "org_1", "user_id": "", "first_name": ""}));
        assert_eq!(org.payer.as_deref(), Some("organizations/org_1"));
        assert_eq!((org.organization_id(), org.user_id()), (Some("org_1".into()), None));
        let user = item(json!({"id": "cpayer_2", "organization_id": "", "user_id": "user_1"}));
        assert_eq!(user.payer.as_deref(), Some("users/user_1"));
        assert_eq!((user.organization_id(), user.user_id()), (None, Some("user_1".into())));
        // Some payers omit the organization; a nested item has no payer at all.
        assert_eq!(item(json!({"id": "cpayer_3", "user_id": "user_2"})).payer.as_deref(), Some("users/user_2"));
        assert_eq!(item(Value::Null).payer, None);
    }

    #[test]
    fn a_subscriptions_items_inherit_its_payer_and_id_where_theirs_are_null() {
        let payer = json!({"id": "cpayer_1", "organization_id": "org_1", "user_id": ""});
        let subscription = json!({"object": "commerce_subscription", "id": "csub_1", "payer": payer, "items": [
            {"id": "csub_item_1", "status": "active", "payer": null, "subscription_id": null},
            {"id": "csub_item_2", "status": "ended", "subscription_id": "csub_0",
             "payer": {"id": "cpayer_2", "organization_id": "", "user_id": "user_2"}},
            "not an object",
        ]});
        let items: Vec<SubscriptionItemRecord> = <SubscriptionItemRecord as Kind>::carried(&subscription)
            .into_iter()
            .map(|i| SubscriptionItemRecord::from_clerk(i).unwrap())
            .collect();
        let got: Vec<(&str, Option<&str>, Option<&str>)> = items
            .iter()
            .map(|i| (i.id.as_str(), i.payer.as_deref(), i.subscription_id.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("csub_item_1", Some("organizations/org_1"), Some("csub_1")),
                ("csub_item_2", Some("users/user_2"), Some("csub_0"))
            ]
        );
        assert!(<SubscriptionItemRecord as Kind>::carried(&json!({"id": "csub_1", "items": null})).is_empty());
    }

    #[test]
    fn an_item_keeps_clerks_status_and_its_plan_and_a_default_plan_item_has_no_period_end() {
        let mut body = json!({"id": "csub_item_1", "status": "something_new", "plan": {"id": "cplan_9", "slug": "free_user"},
            "period_end": null, "seats": {"quantity": null}, "is_free_trial": true});
        let r = SubscriptionItemRecord::from_clerk(body.clone()).unwrap();
        let m = r.message(3, "log");
        assert_eq!((m.status.as_str(), m.plan.as_str(), m.plan_slug.as_str()), ("something_new", "plans/cplan_9", "free_user"));
        assert_eq!((m.period_end, m.seats, m.is_free_trial), (None, None, true));
        assert_eq!((m.name.as_str(), m.subscription.as_str()), ("subscriptionItems/csub_item_1", ""));
        body["seats"] = json!({"quantity": 5});
        assert_eq!(SubscriptionItemRecord::from_clerk(body).unwrap().seats, Some(5));
        assert!(SubscriptionItemRecord::from_clerk(json!({"status": "active"})).is_err());
    }
}

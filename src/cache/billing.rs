//! What the read cache holds of Clerk Billing, outside the budget (like roles and permissions:
//! every entitlement check needs it, and it is small): each item's facts by payer, each plan's
//! facts, and each subscription's payer and items, so that CheckEntitlement and GetSubscription
//! are answered from memory. The decision itself is `store::entitlement`'s, shared with the
//! PostgreSQL route.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::store::entitlement::{self, ItemFacts, PlanFacts, Policy, Verdict};
use crate::store::{PaymentAttemptRecord, PlanRecord, SubscriptionItemRecord, SubscriptionRecord};

/// One held item: its facts, its payer and its subscription.
struct HeldItem {
    facts: ItemFacts,
    payer: Option<String>,
    subscription: Option<String>,
}

/// One held subscription: its payer and when Clerk last updated it.
struct HeldSubscription {
    payer: Option<String>,
    updated_at: Option<DateTime<Utc>>,
    deleted: bool,
}

/// Clerk Billing as the read cache holds it.
#[derive(Default)]
pub struct Billing {
    items: HashMap<String, HeldItem>,
    /// Item ids by payer, in id order.
    items_by_payer: HashMap<String, BTreeSet<String>>,
    /// Item ids by subscription, in id order.
    items_by_subscription: HashMap<String, BTreeSet<String>>,
    plans: HashMap<String, PlanFacts>,
    subscriptions: HashMap<String, HeldSubscription>,
    subscriptions_by_payer: HashMap<String, BTreeSet<String>>,
    /// Each payment's attempts: attempt id → (updated_at, status), by payment id.
    payments: HashMap<String, HashMap<String, (Option<DateTime<Utc>>, Option<String>)>>,
    /// Each held attempt's payment.
    attempts: HashMap<String, String>,
}

/// Removes `id` from the set under `key` (dropping an emptied set).
fn unlink(map: &mut HashMap<String, BTreeSet<String>>, key: Option<&String>, id: &str) {
    if let Some(key) = key
        && let Some(set) = map.get_mut(key)
    {
        set.remove(id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// Adds `id` to the set under `key`.
fn link(map: &mut HashMap<String, BTreeSet<String>>, key: Option<&String>, id: &str) {
    if let Some(key) = key {
        map.entry(key.clone()).or_default().insert(id.to_string());
    }
}

impl Billing {
    /// Holds `r`, replacing what was held of it.
    pub fn put_item(&mut self, r: &SubscriptionItemRecord) {
        if let Some(old) = self.items.remove(&r.id) {
            unlink(&mut self.items_by_payer, old.payer.as_ref(), &r.id);
            unlink(&mut self.items_by_subscription, old.subscription.as_ref(), &r.id);
        }
        link(&mut self.items_by_payer, r.payer.as_ref(), &r.id);
        link(&mut self.items_by_subscription, r.subscription_id.as_ref(), &r.id);
        self.items.insert(
            r.id.clone(),
            HeldItem {
                facts: ItemFacts::of(r),
                payer: r.payer.clone(),
                subscription: r.subscription_id.clone(),
            },
        );
    }

    /// Holds `r`, replacing what was held of it.
    pub fn put_plan(&mut self, r: &PlanRecord) {
        self.plans.insert(r.id.clone(), PlanFacts::of(r));
    }

    /// Holds `r`, replacing what was held of it.
    pub fn put_subscription(&mut self, r: &SubscriptionRecord) {
        if let Some(old) = self.subscriptions.remove(&r.id) {
            unlink(&mut self.subscriptions_by_payer, old.payer.as_ref(), &r.id);
        }
        link(&mut self.subscriptions_by_payer, r.payer.as_ref(), &r.id);
        self.subscriptions.insert(
            r.id.clone(),
            HeldSubscription {
                payer: r.payer.clone(),
                updated_at: r.updated_at,
                deleted: r.deleted_at.is_some(),
            },
        );
    }

    /// Holds `r`, replacing what was held of it.
    pub fn put_payment_attempt(&mut self, r: &PaymentAttemptRecord) {
        if let Some(payment) = self.attempts.remove(&r.id)
            && let Some(attempts) = self.payments.get_mut(&payment)
        {
            attempts.remove(&r.id);
            if attempts.is_empty() {
                self.payments.remove(&payment);
            }
        }
        if let Some(payment) = r.payment_id.as_ref().filter(|_| r.deleted_at.is_none()) {
            self.attempts.insert(r.id.clone(), payment.clone());
            self.payments
                .entry(payment.clone())
                .or_default()
                .insert(r.id.clone(), (r.updated_at, r.status.clone()));
        }
    }

    /// The status of the newest attempt (by `updated_at`, then id) at payment `payment_id`.
    pub fn payment_status(&self, payment_id: &str) -> Option<&str> {
        self.payments
            .get(payment_id)?
            .iter()
            .max_by(|(a, (ta, _)), (b, (tb, _))| (ta.is_some(), ta, a).cmp(&(tb.is_some(), tb, b)))
            .and_then(|(_, (_, status))| status.as_deref())
    }

    /// Whether any live plan is for `payer_type` (`user` or `organization`).
    pub fn holds_plans_for(&self, payer_type: &str) -> bool {
        entitlement::holds_plans_for(self.plans.values(), payer_type)
    }

    /// Whether `payer` (`organizations/{id}` or `users/{id}`) has `feature` at `now`.
    pub fn decide(&self, payer: &str, feature: &str, now: DateTime<Utc>, policy: Policy) -> Verdict {
        let items = self
            .items_by_payer
            .get(payer)
            .into_iter()
            .flatten()
            .filter_map(|id| self.items.get(id))
            .map(|i| &i.facts);
        entitlement::decide_for(payer, items, self.plans.values(), |id| self.plans.get(id), feature, now, policy)
    }

    /// The payer's subscription (its most recently updated live one) and its items' ids, in id
    /// order; `None` if it has none.
    pub fn subscription_of(&self, payer: &str) -> Option<(&str, Vec<&str>)> {
        let id = self
            .subscriptions_by_payer
            .get(payer)?
            .iter()
            .filter(|id| self.subscriptions.get(*id).is_some_and(|s| !s.deleted))
            // Newest update first, then the greatest id (PostgreSQL's `ORDER BY updated_at DESC
            // NULLS LAST, id DESC`).
            .max_by(|a, b| {
                let (sa, sb) = (&self.subscriptions[*a], &self.subscriptions[*b]);
                (sa.updated_at.is_some(), sa.updated_at, a).cmp(&(sb.updated_at.is_some(), sb.updated_at, b))
            })?;
        let items = self
            .items_by_subscription
            .get(id)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        Some((id.as_str(), items))
    }
}

//! Who is entitled to a feature, decided once for memory and PostgreSQL alike (README, "Who is
//! entitled"): from the payer's subscription items (their status, plan and period end), the
//! plans' features, and the default plan of the payer's type.
//!
//! - An item entitles when it is `active` (a free trial included), `canceled` before its
//!   `period_end`, or `past_due` if the policy says so (`--billing-past-due-entitles`, on by
//!   default: Clerk retries the payment meanwhile). `upcoming`, `incomplete`, `abandoned`,
//!   `ended`, `expired` and any status this build does not know entitle to nothing, and so does a
//!   canceled item without a period end.
//! - The feature is granted by the first entitling item (in id order) whose plan includes it.
//! - A payer none of whose items entitles (the mirror knows none, or all ended) is on the
//!   default plan of its payer type, and the answer says so.
//! - An entitling item whose plan the mirror does not hold grants nothing until the plan is
//!   listed, and when no other item grants the feature the answer says so (`UnknownPlan`).

use chrono::{DateTime, Utc};

/// What decides an entitlement of one subscription item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemFacts {
    pub id: String,
    pub status: Option<String>,
    pub plan_id: Option<String>,
    pub period_end: Option<DateTime<Utc>>,
    pub deleted: bool,
}

/// What decides an entitlement of one plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFacts {
    pub id: String,
    /// `user` or `organization`.
    pub payer_type: Option<String>,
    pub features: Vec<String>,
    pub is_default: bool,
    pub deleted: bool,
}

impl ItemFacts {
    pub fn of(r: &super::SubscriptionItemRecord) -> ItemFacts {
        ItemFacts {
            id: r.id.clone(),
            status: r.status.clone(),
            plan_id: r.plan_id.clone(),
            period_end: r.period_end,
            deleted: r.deleted_at.is_some(),
        }
    }
}

impl PlanFacts {
    pub fn of(r: &super::PlanRecord) -> PlanFacts {
        PlanFacts {
            id: r.id.clone(),
            payer_type: r.payer_type.clone(),
            features: r.features.clone(),
            is_default: r.is_default,
            deleted: r.deleted_at.is_some(),
        }
    }
}

/// The instance's choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Whether a `past_due` item still entitles.
    pub past_due_entitles: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { past_due_entitles: true }
    }
}

/// What decided a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// One of the payer's entitling items.
    Item,
    /// None of the payer's items entitles: the default plan of its type.
    DefaultPlan,
    /// An entitling item names a plan the mirror does not hold (plans are listed from the
    /// Backend API, with a secret key), and no other item grants the feature: not entitled
    /// until the plan is listed. The verdict names that item and plan.
    UnknownPlan,
}

/// One entitlement check's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub entitled: bool,
    /// The granting item's id.
    pub item: Option<String>,
    /// The plan that includes the feature (the granting item's, or the default plan's), by id.
    pub plan: Option<String>,
    pub period_end: Option<DateTime<Utc>>,
    pub source: Source,
}

/// The payer type of a payer's resource name (`organizations/…` or `users/…`).
pub fn payer_type(payer: &str) -> Option<&'static str> {
    if payer.starts_with("organizations/") {
        Some("organization")
    } else if payer.starts_with("users/") {
        Some("user")
    } else {
        None
    }
}

/// Whether `item` entitles at `now`.
pub fn entitles(item: &ItemFacts, now: DateTime<Utc>, policy: Policy) -> bool {
    if item.deleted {
        return false;
    }
    match item.status.as_deref() {
        Some("active") => true,
        Some("past_due") => policy.past_due_entitles,
        Some("canceled") => item.period_end.is_some_and(|end| now < end),
        _ => false,
    }
}

/// The default plan for `payer_type` among `plans` (live, `is_default`; the smallest id if
/// Clerk had several).
pub fn default_plan<'a>(plans: impl IntoIterator<Item = &'a PlanFacts>, payer_type: &str) -> Option<&'a PlanFacts> {
    plans
        .into_iter()
        .filter(|p| p.is_default && !p.deleted && p.payer_type.as_deref() == Some(payer_type))
        .min_by(|a, b| a.id.cmp(&b.id))
}

/// Whether any live plan in `plans` is for `payer_type` (`user` or `organization`): until one
/// is, the mirror holds no plans for that type of payer.
pub fn holds_plans_for<'a>(plans: impl IntoIterator<Item = &'a PlanFacts>, payer_type: &str) -> bool {
    plans
        .into_iter()
        .any(|p| !p.deleted && p.payer_type.as_deref() == Some(payer_type))
}

/// Whether `payer` (`organizations/{id}` or `users/{id}`), whose items are `items` (in id order),
/// has `feature` at `now`: [`decide`] with the default plan of the payer's type among `plans`
/// (every plan held), `plan` finding one by id.
pub fn decide_for<'a>(
    payer: &str,
    items: impl IntoIterator<Item = &'a ItemFacts>,
    plans: impl IntoIterator<Item = &'a PlanFacts>,
    plan: impl Fn(&str) -> Option<&'a PlanFacts>,
    feature: &str,
    now: DateTime<Utc>,
    policy: Policy,
) -> Verdict {
    let default = payer_type(payer).and_then(|t| default_plan(plans, t));
    decide(items, plan, default, feature, now, policy)
}

/// Decides whether the payer whose items are `items` (in id order) has `feature`, at `now`.
/// `plan` finds a plan by id; `default` is the default plan of the payer's type.
pub fn decide<'a>(
    items: impl IntoIterator<Item = &'a ItemFacts>,
    plan: impl Fn(&str) -> Option<&'a PlanFacts>,
    default: Option<&PlanFacts>,
    feature: &str,
    now: DateTime<Utc>,
    policy: Policy,
) -> Verdict {
    let mut any_entitles = false;
    let mut unknown: Option<&ItemFacts> = None;
    for item in items.into_iter().filter(|i| entitles(i, now, policy)) {
        any_entitles = true;
        let Some(p) = item.plan_id.as_deref().and_then(&plan).filter(|p| !p.deleted) else {
            unknown = unknown.or(Some(item));
            continue;
        };
        if p.features.iter().any(|f| f == feature) {
            return Verdict {
                entitled: true,
                item: Some(item.id.clone()),
                plan: Some(p.id.clone()),
                period_end: item.period_end,
                source: Source::Item,
            };
        }
    }
    if let Some(item) = unknown {
        return Verdict {
            entitled: false,
            item: Some(item.id.clone()),
            plan: item.plan_id.clone(),
            period_end: item.period_end,
            source: Source::UnknownPlan,
        };
    }
    if any_entitles {
        return Verdict {
            entitled: false,
            item: None,
            plan: None,
            period_end: None,
            source: Source::Item,
        };
    }
    let entitled = default.is_some_and(|d| d.features.iter().any(|f| f == feature));
    Verdict {
        entitled,
        item: None,
        plan: default.filter(|_| entitled).map(|d| d.id.clone()),
        period_end: None,
        source: Source::DefaultPlan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + day * 86_400, 0).unwrap()
    }

    fn item(id: &str, status: &str, plan: &str, end: Option<i64>) -> ItemFacts {
        ItemFacts {
            id: id.into(),
            status: Some(status.into()),
            plan_id: Some(plan.into()),
            period_end: end.map(at),
            deleted: false,
        }
    }

    fn plan(id: &str, features: &[&str], is_default: bool) -> PlanFacts {
        PlanFacts {
            id: id.into(),
            payer_type: Some("organization".into()),
            features: features.iter().map(|f| f.to_string()).collect(),
            is_default,
            deleted: false,
        }
    }

    /// README's table, row by row: (status, period end in days from now, past_due policy,
    /// entitles).
    #[test]
    fn each_status_entitles_as_the_readme_table_says() {
        let now = at(10);
        let rows: &[(&str, Option<i64>, bool, bool)] = &[
            ("active", Some(40), true, true),
            ("active", None, true, true),
            ("canceled", Some(11), true, true),
            ("canceled", Some(10), true, false),
            ("canceled", Some(9), true, false),
            ("canceled", None, true, false),
            ("past_due", Some(40), true, true),
            ("past_due", Some(40), false, false),
            ("upcoming", Some(40), true, false),
            ("incomplete", Some(40), true, false),
            ("abandoned", Some(40), true, false),
            ("ended", Some(40), true, false),
            ("expired", Some(40), true, false),
            ("paused_by_a_future_clerk", Some(40), true, false),
        ];
        for (status, end, past_due_entitles, want) in rows {
            let policy = Policy {
                past_due_entitles: *past_due_entitles,
            };
            assert_eq!(entitles(&item("i", status, "p", *end), now, policy), *want, "{status} {end:?} {policy:?}");
        }
        let mut deleted = item("i", "active", "p", None);
        deleted.deleted = true;
        assert!(!entitles(&deleted, now, Policy::default()));
    }

    #[test]
    fn the_first_entitling_item_whose_plan_has_the_feature_grants_it_else_the_default_plan_decides() {
        let plans = [plan("cplan_pro", &["sso", "audit"], false), plan("cplan_free", &["basic"], true)];
        let find = |id: &str| plans.iter().find(|p| p.id == id);
        let default = default_plan(&plans, "organization");
        let now = at(0);
        let items = [item("csub_item_a", "ended", "cplan_pro", Some(5)), item("csub_item_b", "active", "cplan_pro", Some(30))];
        let v = decide(&items, find, default, "sso", now, Policy::default());
        assert_eq!(
            v,
            Verdict {
                entitled: true,
                item: Some("csub_item_b".into()),
                plan: Some("cplan_pro".into()),
                period_end: Some(at(30)),
                source: Source::Item
            }
        );
        // An entitling item without the feature: not entitled, and the default plan is not asked.
        let v = decide(&items, find, default, "basic", now, Policy::default());
        assert_eq!((v.entitled, v.source, v.plan), (false, Source::Item, None));
        // No entitling item: the default plan's features.
        let ended = [item("csub_item_a", "ended", "cplan_pro", Some(5))];
        let v = decide(&ended, find, default, "basic", now, Policy::default());
        assert_eq!((v.entitled, v.source, v.plan.as_deref()), (true, Source::DefaultPlan, Some("cplan_free")));
        let v = decide(&[], find, default, "sso", now, Policy::default());
        assert_eq!((v.entitled, v.source, v.plan), (false, Source::DefaultPlan, None));
        // An item naming a plan the mirror does not hold grants nothing, and the answer says why.
        let unknown = [item("csub_item_c", "active", "cplan_unknown", None)];
        let v = decide(&unknown, find, default, "sso", now, Policy::default());
        assert_eq!((v.entitled, v.source, v.item.as_deref(), v.plan.as_deref()), (false, Source::UnknownPlan, Some("csub_item_c"), Some("cplan_unknown")));
        // … unless another item grants it.
        let both = [item("csub_item_b", "active", "cplan_pro", None), item("csub_item_c", "active", "cplan_unknown", None)];
        let v = decide(&both, find, default, "sso", now, Policy::default());
        assert_eq!((v.entitled, v.source), (true, Source::Item));
        assert_eq!(default_plan(&plans, "user"), None);
        assert_eq!((payer_type("organizations/org_1"), payer_type("users/u"), payer_type("x/y")), (Some("organization"), Some("user"), None));
    }
}

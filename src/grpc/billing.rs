//! `BillingService`: GetSubscription, ListSubscriptionItems, GetPlan, ListPlans,
//! CheckEntitlement and CheckEntitlements. Reads route as every directory read does (memory when
//! `consistency` allows, else one PostgreSQL statement); lists read PostgreSQL; a check is decided
//! by `store::entitlement` from what either read (the cache holds billing whatever its budget).

use tonic::{Request, Response, Status};

use super::access::check_count;
use super::directory::{Directory, ListPage, Route, deadline};
use super::error::ApiError;
use super::{names, traced};
use crate::cache::{Answer, Held};
use crate::pb;
use crate::pb::billing_service_server::BillingService;
use crate::store::convert::timestamp;
use crate::store::entitlement::{self, Policy, Source, Verdict};
use crate::store::{Kind, PlanRecord, SubscriptionItemRecord, SubscriptionRecord, read};

/// Longest feature slug accepted (Clerk's are well under it).
const MAX_FEATURE_BYTES: usize = 512;

/// The service: the directory's reads, and the instance's entitlement policy.
#[derive(Clone)]
pub struct Billing {
    directory: Directory,
    policy: Policy,
}

impl Billing {
    pub fn new(directory: Directory, policy: Policy) -> Self {
        Billing { directory, policy }
    }
}

/// A feature slug: 1 to 512 bytes, no NUL.
fn feature<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.is_empty() || value.len() > MAX_FEATURE_BYTES {
        return Err(ApiError::invalid(
            field,
            "INVALID_FEATURE",
            format!("must be a feature's slug of 1 to {MAX_FEATURE_BYTES} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(ApiError::invalid(field, "INVALID_FEATURE", "must not contain NUL"));
    }
    Ok(value)
}

/// One check's parsed fields (payer, feature); `at` names where they are (`checks[3].`).
fn parse_check<'a>(at: &str, payer: &'a str, slug: &'a str) -> Result<(&'a str, &'a str), ApiError> {
    Ok((names::payer(&format!("{at}payer"), payer)?, feature(&format!("{at}feature"), slug)?))
}

/// A verdict's wire fields: entitled, item, plan, period end, source.
fn wire(v: Verdict) -> (bool, String, String, Option<prost_types::Timestamp>, pb::EntitlementSource) {
    (
        v.entitled,
        v.item.map(|i| format!("subscriptionItems/{i}")).unwrap_or_default(),
        v.plan.map(|p| format!("plans/{p}")).unwrap_or_default(),
        timestamp(v.period_end),
        match v.source {
            Source::Item => pb::EntitlementSource::SubscriptionItem,
            Source::DefaultPlan => pb::EntitlementSource::DefaultPlan,
            Source::UnknownPlan => pb::EntitlementSource::UnknownPlan,
        },
    )
}

impl Billing {
    /// Answers `checks` at one snapshot: from memory on the memory route, else one PostgreSQL
    /// statement. Returns the verdicts and the cursor.
    async fn decide(&self, route: Route, checks: &[(&str, &str)]) -> Result<(Vec<Verdict>, String), ApiError> {
        let d = &self.directory;
        let now = chrono::Utc::now();
        let from_memory = match route {
            Route::Memory => d.cache.read(|i| {
                let verdicts = checks
                    .iter()
                    .map(|(payer, f)| i.billing().decide(payer, f, now, self.policy))
                    .collect::<Vec<_>>();
                (verdicts, i.cursor())
            }),
            Route::Postgres { .. } => None,
        };
        let (verdicts, head) = match from_memory {
            Some(found) => {
                d.cache.count("hit");
                found
            }
            None => {
                if route == Route::Memory {
                    d.cache.count("fallback");
                }
                let payers: Vec<&str> = checks.iter().map(|(p, _)| *p).collect();
                let (items, plans, head) = read::entitlement_facts(&d.pool, &payers).await?;
                d.fresh(route, head)?;
                let verdicts = checks
                    .iter()
                    .zip(&items)
                    .map(|((payer, f), items)| {
                        let find = |id: &str| plans.iter().find(|p| p.id == id);
                        entitlement::decide_for(payer, items, &plans, find, f, now, self.policy)
                    })
                    .collect();
                (verdicts, head)
            }
        };
        Ok((verdicts, d.cursor(head)))
    }

    /// The payer's subscription with its items, from memory when it holds every message.
    fn subscription_in_memory(i: &crate::cache::Index, payer: &str) -> Answer<pb::Subscription> {
        let Some((id, item_ids)) = i.billing().subscription_of(payer) else {
            return Answer::Absent(i.cursor());
        };
        let Answer::Found(subscription, at) = i.get::<SubscriptionRecord>(id) else {
            return Answer::Unknown;
        };
        let mut subscription = (*subscription).clone();
        if let Some(status) = i.billing().payment_status(&subscription.latest_payment_id) {
            subscription.latest_payment_status = status.to_string();
        }
        for item in item_ids {
            match i.get::<SubscriptionItemRecord>(item) {
                Answer::Found(m, _) => subscription.items.push((*m).clone()),
                _ => return Answer::Unknown,
            }
        }
        Answer::Found(subscription, at)
    }
}

#[tonic::async_trait]
impl BillingService for Billing {
    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::GetSubscriptionResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("GetSubscription", async {
            let d = &self.directory;
            let payer = names::payer("payer", &r.payer)?;
            let route = d.route(r.consistency.as_ref(), deadline).await?;
            let not_found = |head: i64| ApiError::NotFound {
                what: "subscription",
                name: format!("{payer}/subscription"),
                cursor: d.cursor(head),
            };
            match d.memory(route, |i| Self::subscription_in_memory(i, payer)) {
                Some(Answer::Found(subscription, head)) => Ok(pb::GetSubscriptionResponse {
                    subscription: Some(subscription),
                    cursor: d.cursor(head),
                }),
                Some(Answer::Absent(head)) => Err(not_found(head)),
                Some(Answer::Unknown) | None => {
                    let (found, head) = read::subscription_of(&d.pool, payer).await?;
                    d.fresh(route, head)?;
                    let Some((subscription, items, payment_status)) = found else {
                        return Err(not_found(head));
                    };
                    let log_id = d.log_id();
                    let mut message = subscription.record.message(subscription.update_cursor, log_id);
                    message.latest_payment_status = payment_status.unwrap_or_default();
                    message.items = items.iter().map(|i| i.record.message(i.update_cursor, log_id)).collect();
                    Ok(pb::GetSubscriptionResponse {
                        subscription: Some(message),
                        cursor: d.cursor(head),
                    })
                }
            }
        })
        .await
    }

    async fn list_subscription_items(
        &self,
        request: Request<pb::ListSubscriptionItemsRequest>,
    ) -> Result<Response<pb::ListSubscriptionItemsResponse>, Status> {
        let r = request.into_inner();
        traced("ListSubscriptionItems", async {
            let page = ListPage::of_instance("ListSubscriptionItems", r.consistency.as_ref());
            let (subscription_items, next_page_token, cursor) = self
                .directory
                .list::<SubscriptionItemRecord>(&page, r.page_size, &r.page_token, &r.filter, false)
                .await?;
            Ok(pb::ListSubscriptionItemsResponse {
                subscription_items,
                next_page_token,
                cursor,
            })
        })
        .await
    }

    async fn get_plan(&self, request: Request<pb::GetPlanRequest>) -> Result<Response<pb::GetPlanResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("GetPlan", async {
            let d = &self.directory;
            let id = names::plan_id("name", &r.name)?;
            let route = d.route(r.consistency.as_ref(), deadline).await?;
            let memory = |i: &crate::cache::Index| match i.get::<PlanRecord>(id) {
                Answer::Found(m, at) => Answer::Found(Held::of(&*m, PlanRecord::message_deleted(&m)), at),
                Answer::Absent(at) => Answer::Absent(at),
                Answer::Unknown => Answer::Unknown,
            };
            let (plan, cursor) = d
                .one::<PlanRecord>(route, &r.name, false, memory, async |c| read::by_id::<PlanRecord>(c, id).await)
                .await?;
            Ok(pb::GetPlanResponse {
                plan: Some(plan.decode().map_err(|e| ApiError::Internal(anyhow::anyhow!("a held plan does not decode: {e}")))?),
                cursor,
            })
        })
        .await
    }

    async fn list_plans(&self, request: Request<pb::ListPlansRequest>) -> Result<Response<pb::ListPlansResponse>, Status> {
        let r = request.into_inner();
        traced("ListPlans", async {
            let page = ListPage::of_instance("ListPlans", r.consistency.as_ref());
            let (plans, next_page_token, cursor) = self
                .directory
                .list::<PlanRecord>(&page, r.page_size, &r.page_token, &r.filter, false)
                .await?;
            Ok(pb::ListPlansResponse {
                plans,
                next_page_token,
                cursor,
            })
        })
        .await
    }

    async fn check_entitlement(
        &self,
        request: Request<pb::CheckEntitlementRequest>,
    ) -> Result<Response<pb::CheckEntitlementResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("CheckEntitlement", async {
            let check = parse_check("", &r.payer, &r.feature)?;
            let route = self.directory.route(r.consistency.as_ref(), deadline).await?;
            let (mut verdicts, cursor) = self.decide(route, &[check]).await?;
            let (entitled, subscription_item, plan, period_end, source) = wire(verdicts.remove(0));
            Ok(pb::CheckEntitlementResponse {
                entitled,
                subscription_item,
                plan,
                period_end,
                cursor,
                source: source as i32,
            })
        })
        .await
    }

    async fn check_entitlements(
        &self,
        request: Request<pb::CheckEntitlementsRequest>,
    ) -> Result<Response<pb::CheckEntitlementsResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("CheckEntitlements", async {
            check_count(r.checks.len())?;
            let checks = r
                .checks
                .iter()
                .enumerate()
                .map(|(i, c)| parse_check(&format!("checks[{i}]."), &c.payer, &c.feature))
                .collect::<Result<Vec<_>, _>>()?;
            let route = self.directory.route(r.consistency.as_ref(), deadline).await?;
            let (verdicts, cursor) = self.decide(route, &checks).await?;
            Ok(pb::CheckEntitlementsResponse {
                results: verdicts
                    .into_iter()
                    .map(|v| {
                        let (entitled, subscription_item, plan, period_end, source) = wire(v);
                        pb::EntitlementCheckResult {
                            entitled,
                            subscription_item,
                            plan,
                            period_end,
                            source: source as i32,
                        }
                    })
                    .collect(),
                cursor,
            })
        })
        .await
    }
}

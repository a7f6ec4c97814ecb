//! Clerk Billing's subscription items: projected from `subscriptionItem.*` in any order (the
//! newest `updated_at` wins, nothing ends an item for good), paid by an organization or a user,
//! and watched, alone or in an organization's watch.

use clerk_mirror::pb;
use clerk_mirror::pb::watch_service_client::WatchServiceClient;

use crate::events::*;
use crate::helpers::*;

#[tokio::test]
async fn an_items_newest_update_wins_in_any_order_and_an_ended_item_comes_back() {
    let app = spawn_app().await;
    // Delivered out of order: the cancel (newest) first, then the older active and past_due
    // (spelled both ways), which change nothing.
    app.send_all_and_apply(&[
        subscription_item_event("canceled", "csub_item_1", "canceled", "org_1", "", T + 3),
        subscription_item_event("active", "csub_item_1", "active", "org_1", "", T + 1),
        subscription_item_event("pastDue", "csub_item_1", "past_due", "org_1", "", T + 2),
        subscription_item_event("past_due", "csub_item_1", "past_due", "org_1", "", T + 2),
    ])
    .await;
    let row: (String, String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT status, payer, payer_organization_id, payer_user_id FROM subscription_items WHERE id = 'csub_item_1'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(row, ("canceled".into(), "organizations/org_1".into(), Some("org_1".into()), None));
    let changes: i64 = sqlx::query_scalar("SELECT count(*) FROM changes WHERE entity_type = 'subscription_item'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(changes, 1, "the older events changed nothing");
    // The default plan's item keeps its id: ended, then upcoming, then active again — and a
    // status Clerk adds later is kept as sent.
    app.send_all_and_apply(&[
        subscription_item_event("ended", "csub_item_1", "ended", "org_1", "", T + 4),
        subscription_item_event("upcoming", "csub_item_1", "upcoming", "org_1", "", T + 5),
        subscription_item_event("active", "csub_item_1", "active", "org_1", "", T + 6),
        subscription_item_event("updated", "csub_item_2", "paused_by_a_future_clerk", "", "user_9", T),
    ])
    .await;
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT id, status FROM subscription_items ORDER BY id").fetch_all(&app.pool).await.unwrap();
    assert_eq!(
        statuses,
        [
            ("csub_item_1".to_string(), "active".to_string()),
            ("csub_item_2".to_string(), "paused_by_a_future_clerk".to_string())
        ]
    );
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE status = 'failed'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(dead, 0, "no billing event is dead-lettered");
    // The status this build does not know is counted (and only it).
    let metrics = get(&format!("http://{}/metrics", app.admin_addr)).await.body;
    let counted: Vec<&str> = metrics.lines().filter(|l| l.starts_with("clerk_mirror_unrecognised_values_total{")).collect();
    assert_eq!(
        counted,
        [r#"clerk_mirror_unrecognised_values_total{entity_type="subscription_item",value="paused_by_a_future_clerk"} 1"#],
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_subscriptions_items_are_applied_from_its_events_with_its_payer_and_each_by_its_own_update_time() {
    let app = spawn_app().await;
    let mut canceled = subscription_item("csub_item_pro", "canceled", "org_9", "", T + 5);
    canceled["subscription_id"] = "csub_9".into();
    app.send_all_and_apply(&[
        // The free plan's item ended and the pro item began: one subscription event.
        subscription_event(
            "updated",
            "csub_9",
            "org_9",
            &[("csub_item_free", "ended", T + 2), ("csub_item_pro", "active", T + 2)],
            T + 2,
        ),
        // The pro item's own, newer event: canceled.
        envelope("subscriptionItem.canceled", T + 5, canceled),
        // A later delivery of an older subscription event changes neither item.
        subscription_event(
            "active",
            "csub_9",
            "org_9",
            &[("csub_item_free", "active", T + 1), ("csub_item_pro", "upcoming", T + 1)],
            T + 1,
        ),
    ])
    .await;
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT id, status, payer, subscription_id FROM subscription_items ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            ("csub_item_free".into(), "ended".into(), "organizations/org_9".into(), "csub_9".into()),
            ("csub_item_pro".into(), "canceled".into(), "organizations/org_9".into(), "csub_9".into()),
        ]
    );
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM inbox ORDER BY id").fetch_all(&app.pool).await.unwrap();
    assert_eq!(statuses, ["applied", "applied", "applied"]);
    // The subscription itself, from its newest event; its items are not kept twice.
    let subscription: (String, String, Option<String>, bool) = sqlx::query_as(
        "SELECT status, payer, payer_organization_id, data ? 'items' FROM subscriptions WHERE id = 'csub_9'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(subscription, ("active".into(), "organizations/org_9".into(), Some("org_9".into()), false));
    let changes: Vec<(String, String)> =
        sqlx::query_as("SELECT entity_type, entity_id FROM changes ORDER BY seq").fetch_all(&app.pool).await.unwrap();
    assert_eq!(
        changes,
        [
            ("subscription".to_string(), "csub_9".to_string()),
            ("subscription_item".into(), "csub_item_free".into()),
            ("subscription_item".into(), "csub_item_pro".into()),
            ("subscription_item".into(), "csub_item_pro".into()),
        ],
        "the subscription, then its items; the older event changes nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_organizations_watch_carries_the_items_it_pays_for_and_a_users_watch_its_own() {
    let app = spawn_app().await;
    let mut w = WatchServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    let mut watch = async |organization_id: &str, user_id: &str| {
        w.watch_changes(pb::WatchChangesRequest {
            organization_id: organization_id.into(),
            user_id: user_id.into(),
            entity_types: vec![pb::EntityType::SubscriptionItem as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    };
    let mut by_org = watch("org_w", "").await;
    let mut by_user = watch("", "user_w").await;
    app.send_all_and_apply(&[
        subscription_item_event("active", "csub_item_x", "active", "org_x", "", T),
        subscription_item_event("active", "csub_item_o", "active", "org_w", "", T),
        subscription_item_event("active", "csub_item_u", "active", "", "user_w", T),
    ])
    .await;
    for (stream, want) in [(&mut by_org, ("csub_item_o", "organizations/org_w")), (&mut by_user, ("csub_item_u", "users/user_w"))] {
        let c = next_change(stream).await;
        assert_eq!(c.entity_type(), pb::EntityType::SubscriptionItem);
        let Some(pb::change::Entity::SubscriptionItem(item)) = c.entity else {
            panic!("a subscription item: {c:?}")
        };
        assert_eq!((item.id.as_str(), item.payer.as_str()), want);
        assert_eq!(
            (item.plan.as_str(), item.plan_slug.as_str(), item.status.as_str(), item.subscription.as_str()),
            ("plans/cplan_pro", "pro", "active", "subscriptions/csub_1")
        );
        assert_eq!((item.interval.as_str(), item.seats, item.delete_time), ("month", None, None));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_subscription_is_watched_as_its_own_entity_type_in_its_payers_watch() {
    let app = spawn_app().await;
    let mut w = WatchServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    let mut stream = w
        .watch_changes(pb::WatchChangesRequest {
            organization_id: "org_s".into(),
            entity_types: vec![pb::EntityType::Subscription as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    app.send_all_and_apply(&[
        subscription_event("created", "csub_other", "org_other", &[("csub_item_o", "active", T)], T),
        subscription_event("pastDue", "csub_s", "org_s", &[("csub_item_s", "past_due", T)], T),
    ])
    .await;
    let c = next_change(&mut stream).await;
    let Some(pb::change::Entity::Subscription(subscription)) = c.entity else {
        panic!("a subscription: {c:?}")
    };
    assert_eq!(
        (subscription.name.as_str(), subscription.payer.as_str(), subscription.status.as_str()),
        ("subscriptions/csub_s", "organizations/org_s", "active")
    );
    assert!(subscription.active_time.is_some() && subscription.cancel_time.is_none());
    app.stop().await;
}

/// A test app whose lock holder lists plans from `url` every `every`.
async fn app_listing_plans(url: &str, every: std::time::Duration) -> TestApp {
    let reconcile = clerk_mirror::config::ReconcileConfig {
        api_url: url.to_string(),
        secret_key: clerk_mirror::config::Redacted(crate::backfill::KEY.to_string()),
        rate: 1000,
        window: std::time::Duration::from_secs(1),
        every: None,
        plans_every: every,
    };
    spawn_app_with(|c| c.reconcile = Some(reconcile)).await
}

/// Waits (polling, at most 30 s) until the stored plan `id` has `features`.
async fn wait_for_plan_features(app: &TestApp, id: &str, features: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let stored: Option<Vec<String>> = sqlx::query_scalar("SELECT features FROM plans WHERE id = $1")
            .bind(id)
            .fetch_optional(&app.pool)
            .await
            .unwrap();
        if stored.as_deref().is_some_and(|s| s == features) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{id} has {stored:?}, not {features:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn plans_are_listed_at_start_and_a_feature_edited_in_clerk_is_seen_after_the_next_poll() {
    let (url, fake) = crate::backfill::fake_api(4).await;
    fake.lock().unwrap().plans = vec![
        plan("cplan_team", "team", "org", &["sso", "audit_log"], false, 4900),
        plan("cplan_free_org", "free_org", "org", &[], true, 0),
    ];
    let app = app_listing_plans(&url, std::time::Duration::from_millis(300)).await;
    let mut w = WatchServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    let mut stream = w
        .watch_changes(pb::WatchChangesRequest {
            organization_id: "org_any".into(),
            entity_types: vec![pb::EntityType::Plan as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    wait_for_plan_features(&app, "cplan_team", &["sso", "audit_log"]).await;
    wait_for_plan_features(&app, "cplan_free_org", &[]).await;
    let row: (String, bool, Option<i64>, Option<i64>, String) = sqlx::query_as(
        "SELECT payer_type, is_default, fee_amount, annual_fee_amount, currency FROM plans WHERE id = 'cplan_team'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(row, ("organization".into(), false, Some(4900), Some(49000), "USD".into()));
    let sources: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT source, event_type FROM inbox").fetch_all(&app.pool).await.unwrap();
    assert!(sources.contains(&("api".to_string(), "clerkmirror.plan.listed".to_string())), "{sources:?}");
    // An organization's watch carries plans (they decide what every organization gets).
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let c = next_change(&mut stream).await;
        let Some(pb::change::Entity::Plan(p)) = c.entity else { panic!("a plan: {c:?}") };
        seen.push(p.name);
    }
    seen.sort();
    assert_eq!(seen, ["plans/cplan_free_org", "plans/cplan_team"]);
    // Polls that find nothing new enqueue nothing; an edited feature list is one change.
    let listings = crate::backfill::plan_listings(&fake);
    while crate::backfill::plan_listings(&fake) < listings + 2 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE source = 'api'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(rows, 2, "unchanged plans are not enqueued again");
    fake.lock().unwrap().plans[0]["features"][1]["slug"] = "audit_log_export".into();
    wait_for_plan_features(&app, "cplan_team", &["sso", "audit_log_export"]).await;
    let c = next_change(&mut stream).await;
    assert_eq!(c.operation(), pb::Operation::Updated);
    let (Some(pb::change::Entity::Plan(now)), Some(pb::change::Previous::PreviousPlan(before))) = (c.entity, c.previous) else {
        panic!("a plan's update")
    };
    assert_eq!((now.features, before.features), (vec!["sso".to_string(), "audit_log_export".into()], vec!["sso".to_string(), "audit_log".into()]));
    app.stop().await;
}

#[tokio::test]
async fn items_naming_a_plan_the_mirror_does_not_know_trigger_one_coalesced_listing() {
    let (url, fake) = crate::backfill::fake_api(4).await;
    fake.lock().unwrap().plans = vec![plan("cplan_free_org", "free_org", "org", &[], true, 0)];
    // Listed at start, then not again for an hour unless asked.
    let app = app_listing_plans(&url, std::time::Duration::from_secs(3600)).await;
    wait_for_plan_features(&app, "cplan_free_org", &[]).await;
    assert_eq!(crate::backfill::plan_listings(&fake), 1);
    // The plan appears in Clerk; a burst of items naming it (cplan_pro) arrives.
    fake.lock().unwrap().plans.insert(0, plan("cplan_pro", "pro", "org", &["sso"], false, 2000));
    let burst: Vec<String> = (0..30)
        .map(|i| subscription_item_event("active", &format!("csub_item_{i}"), "active", &format!("org_{i}"), "", T))
        .collect();
    app.send_all_and_apply(&burst).await;
    wait_for_plan_features(&app, "cplan_pro", &["sso"]).await;
    // One more item naming a plan Clerk does not list: one more listing, after which the
    // burst's asks have all been answered.
    let mut gone = subscription_item("csub_item_gone", "active", "org_g", "", T);
    gone["plan_id"] = "cplan_gone".into();
    gone["plan"]["id"] = "cplan_gone".into();
    app.send_all_and_apply(&[envelope("subscriptionItem.active", T, gone.clone())]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while crate::backfill::plan_listings(&fake) < 3 {
        assert!(std::time::Instant::now() < deadline, "no listing for cplan_gone");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Asked again before the next periodic listing, cplan_gone (still not listed) asks nothing.
    gone["id"] = "csub_item_gone_2".into();
    app.send_all_and_apply(&[envelope("subscriptionItem.active", T, gone)]).await;
    let burst_and_gone = crate::backfill::plan_listings(&fake);
    assert_eq!(burst_and_gone, 3, "one listing at start, one for the burst of 30, one for cplan_gone");
    app.stop().await;
}

/// `subscriptionItem.<kind>` of item `id` for `payer` (`organizations/…` or `users/…`) on `plan`,
/// updated at `updated_ms`, its period ending at `period_end_ms` (none: null, as the default
/// plan's items), in a free trial or not.
pub(crate) fn item_on(kind: &str, id: &str, status: &str, payer: &str, plan: &str, updated_ms: i64, period_end_ms: Option<i64>, trial: bool) -> String {
    let (org, user) = match payer.split_once('/') {
        Some(("organizations", o)) => (o, ""),
        Some((_, u)) => ("", u),
        None => panic!("a payer: {payer}"),
    };
    let mut item = subscription_item(id, status, org, user, updated_ms);
    item["plan_id"] = plan.into();
    item["plan"]["id"] = plan.into();
    item["period_end"] = period_end_ms.into();
    item["is_free_trial"] = trial.into();
    envelope(&format!("subscriptionItem.{kind}"), updated_ms, item)
}

/// The instance's plans: organizations get `basic` free, `sso` and `posts` with Pro, `audit`
/// with Team; users get `notes` free.
pub(crate) async fn store_plans(app: &TestApp) {
    clerk_mirror::backfill::plans::enqueue_changed(
        &app.pool,
        vec![
            plan("cplan_free_org", "free_org", "org", &["basic"], true, 0),
            plan("cplan_pro", "pro", "org", &["basic", "sso", "posts"], false, 2500),
            plan("cplan_team", "team", "org", &["basic", "sso", "audit"], false, 9900),
            plan("cplan_free_user", "free_user", "user", &["notes"], true, 0),
        ],
    )
    .await
    .unwrap();
    app.wait_until_applied().await;
}

/// `(entitled, subscription_item, plan, source)` of one check.
type Answered = (bool, String, String, pb::EntitlementSource);

async fn entitled(
    c: &mut pb::billing_service_client::BillingServiceClient<tonic::transport::Channel>,
    payer: &str,
    feature: &str,
) -> Answered {
    let r = c
        .check_entitlement(pb::CheckEntitlementRequest {
            payer: payer.into(),
            feature: feature.into(),
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner();
    let source = r.source();
    (r.entitled, r.subscription_item, r.plan, source)
}

#[tokio::test]
async fn check_entitlement_answers_each_step_of_a_billing_story_alike_from_memory_and_postgresql() {
    let (cluster, name) = shared_database().await;
    let app = spawn_app_on(cluster, &name, |_| {}).await;
    // A replica of the same database without a read cache: PostgreSQL answers.
    let postgres = spawn_app_on(cluster, &name, |c| c.read_cache_bytes = 0).await;
    let mut m = pb::billing_service_client::BillingServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    let mut p = pb::billing_service_client::BillingServiceClient::connect(format!("http://{}", postgres.grpc_addr)).await.unwrap();
    store_plans(&app).await;
    let now = chrono::Utc::now().timestamp_millis();
    let (day, org, user) = (86_400_000i64, "organizations/org_story", "users/user_story");
    use pb::EntitlementSource::{DefaultPlan, SubscriptionItem as Item};
    let yes = |item: &str, plan: &str| (true, format!("subscriptionItems/{item}"), format!("plans/{plan}"), Item);
    let no_item = (false, String::new(), String::new(), Item);
    let default = |entitled: bool, plan: &str| {
        (entitled, String::new(), if entitled { format!("plans/{plan}") } else { String::new() }, DefaultPlan)
    };
    // Each step: the events, then (payer, feature, answer) checks.
    let steps: Vec<(&str, Vec<String>, Vec<(&str, &str, Answered)>)> = vec![
        ("no subscription: the default plan", vec![], vec![
            (org, "basic", default(true, "cplan_free_org")),
            (org, "sso", default(false, "")),
            (user, "notes", default(true, "cplan_free_user")),
            (user, "basic", default(false, "")),
        ]),
        ("a free trial of Pro", vec![item_on("active", "csub_item_pro", "active", org, "cplan_pro", T + 1, Some(now + 14 * day), true)], vec![
            (org, "sso", yes("csub_item_pro", "cplan_pro")),
            (org, "audit", no_item.clone()),
        ]),
        ("Pro, paid", vec![item_on("updated", "csub_item_pro", "active", org, "cplan_pro", T + 2, Some(now + 30 * day), false)], vec![
            (org, "sso", yes("csub_item_pro", "cplan_pro")),
        ]),
        ("past due (entitles by default)", vec![item_on("pastDue", "csub_item_pro", "past_due", org, "cplan_pro", T + 3, Some(now + 30 * day), false)], vec![
            (org, "sso", yes("csub_item_pro", "cplan_pro")),
        ]),
        ("upgraded mid-period: Pro canceled until its period end, Team active", vec![
            item_on("canceled", "csub_item_pro", "canceled", org, "cplan_pro", T + 4, Some(now + 30 * day), false),
            item_on("active", "csub_item_team", "active", org, "cplan_team", T + 4, Some(now + 60 * day), false),
        ], vec![
            (org, "sso", yes("csub_item_pro", "cplan_pro")),
            (org, "audit", yes("csub_item_team", "cplan_team")),
        ]),
        ("Team canceled, its period over; Pro ended", vec![
            item_on("canceled", "csub_item_team", "canceled", org, "cplan_team", T + 5, Some(now - day), false),
            item_on("ended", "csub_item_pro", "ended", org, "cplan_pro", T + 5, Some(now - day), false),
        ], vec![
            (org, "audit", default(false, "")),
            (org, "basic", default(true, "cplan_free_org")),
        ]),
        ("the default plan's item: ended, upcoming, then active again (a subscription carries it)", vec![
            item_on("ended", "csub_item_free", "ended", org, "cplan_free_org", T + 6, None, false),
            item_on("upcoming", "csub_item_free", "upcoming", org, "cplan_free_org", T + 7, None, false),
        ], vec![
            (org, "basic", default(true, "cplan_free_org")),
        ]),
        ("the subscription's event carries the item, active", vec![{
            let body = subscription_event("active", "csub_story", "org_story", &[("csub_item_free", "active", T + 8)], T + 8);
            body.replace("cplan_pro", "cplan_free_org")
        }], vec![
            (org, "basic", yes("csub_item_free", "cplan_free_org")),
            (org, "sso", no_item.clone()),
        ]),
        ("a user's own item, unknown status: nothing, and not the default plan", vec![
            item_on("updated", "csub_item_user", "paused_by_a_future_clerk", user, "cplan_free_user", T + 9, None, false),
        ], vec![
            (user, "notes", default(true, "cplan_free_user")),
        ]),
    ];
    for (step, events, checks) in steps {
        app.send_all_and_apply(&events).await;
        postgres.wait_until_applied().await;
        for (payer, feature, want) in checks {
            assert_eq!(entitled(&mut m, payer, feature).await, want, "{step}: {payer} {feature}, from memory");
            assert_eq!(entitled(&mut p, payer, feature).await, want, "{step}: {payer} {feature}, from PostgreSQL");
        }
    }
    // CheckEntitlements: several at one snapshot, in order.
    let r = m
        .check_entitlements(pb::CheckEntitlementsRequest {
            checks: vec![
                pb::EntitlementCheck { payer: org.into(), feature: "basic".into() },
                pb::EntitlementCheck { payer: user.into(), feature: "notes".into() },
                pb::EntitlementCheck { payer: "organizations/org_nobody".into(), feature: "sso".into() },
            ],
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(bool, &str)> = r.results.iter().map(|x| (x.entitled, x.plan.as_str())).collect();
    assert_eq!(got, [(true, "plans/cplan_free_org"), (true, "plans/cplan_free_user"), (false, "")]);
    assert!(!r.cursor.is_empty());
    // GetSubscription reads alike from memory and PostgreSQL.
    let get = pb::GetSubscriptionRequest { payer: org.into(), consistency: None };
    let from_memory = m.get_subscription(get.clone()).await.unwrap().into_inner();
    let from_postgres = p.get_subscription(get).await.unwrap().into_inner();
    assert_eq!(from_memory, from_postgres);
    let s = from_memory.subscription.unwrap();
    let items: Vec<&str> = s.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!((s.id.as_str(), items), ("csub_story", vec!["csub_item_free"]));
    app.stop().await;
    postgres.stop().await;
}

#[tokio::test]
async fn the_billing_reads_serve_plans_subscriptions_and_filtered_items_and_refuse_bad_requests_clearly() {
    use tonic::Code;
    use crate::directory::assert_error;
    let app = spawn_app_with(|c| c.entitlements.past_due_entitles = false).await;
    let mut c = pb::billing_service_client::BillingServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    store_plans(&app).await;
    let future = chrono::Utc::now().timestamp_millis() + 86_400_000;
    app.send_all_and_apply(&[
        subscription_event("created", "csub_a", "org_a", &[("csub_item_a1", "ended", T + 1), ("csub_item_a2", "active", T + 2)], T + 2),
        item_on("pastDue", "csub_item_b", "past_due", "organizations/org_b", "cplan_team", T + 3, Some(future), false),
        item_on("active", "csub_item_u", "active", "users/user_u", "cplan_free_user", T + 3, None, false),
    ])
    .await;
    // Past due entitles nothing on this instance: the default plan answers.
    let r = c
        .check_entitlement(pb::CheckEntitlementRequest { payer: "organizations/org_b".into(), feature: "audit".into(), consistency: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.entitled, r.source()), (false, pb::EntitlementSource::DefaultPlan));
    // An item naming a plan the mirror does not hold: not entitled, and the answer says why.
    app.send_all_and_apply(&[item_on("active", "csub_item_n", "active", "organizations/org_n", "cplan_unlisted", T + 4, None, false)])
        .await;
    let r = c
        .check_entitlement(pb::CheckEntitlementRequest { payer: "organizations/org_n".into(), feature: "sso".into(), consistency: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.entitled, r.source(), r.subscription_item.as_str(), r.plan.as_str()),
        (false, pb::EntitlementSource::UnknownPlan, "subscriptionItems/csub_item_n", "plans/cplan_unlisted")
    );
    // GetSubscription: the payer's subscription with its items, in id order.
    let s = c
        .get_subscription(pb::GetSubscriptionRequest { payer: "organizations/org_a".into(), consistency: None })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!((s.name.as_str(), s.payer.as_str()), ("subscriptions/csub_a", "organizations/org_a"));
    let items: Vec<(&str, &str)> = s.items.iter().map(|i| (i.name.as_str(), i.status.as_str())).collect();
    assert_eq!(items, [("subscriptionItems/csub_item_a1", "ended"), ("subscriptionItems/csub_item_a2", "active")]);
    // A payer without a subscription.
    let e = c
        .get_subscription(pb::GetSubscriptionRequest { payer: "organizations/org_b".into(), consistency: None })
        .await
        .unwrap_err();
    assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    assert!(e.message().contains("organizations/org_b/subscription"), "{e:?}");
    // GetPlan and ListPlans with a filter.
    let plan = c
        .get_plan(pb::GetPlanRequest { name: "plans/cplan_team".into(), consistency: None })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    assert_eq!((plan.features, plan.fee_amount, plan.payer_type.as_str()), (vec!["basic".to_string(), "sso".into(), "audit".into()], Some(9900), "organization"));
    let e = c.get_plan(pb::GetPlanRequest { name: "plans/cplan_none".into(), consistency: None }).await.unwrap_err();
    assert_error(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    let e = c.get_plan(pb::GetPlanRequest { name: "cplan_team".into(), consistency: None }).await.unwrap_err();
    assert_error(&e, Code::InvalidArgument, "INVALID_NAME");
    let plans = c
        .list_plans(pb::ListPlansRequest { filter: r#"payer_type = "organization" AND features:"sso""#.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = plans.plans.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["plans/cplan_pro", "plans/cplan_team"]);
    // ListSubscriptionItems by status, plan and payer type.
    let list = async |c: &mut pb::billing_service_client::BillingServiceClient<tonic::transport::Channel>, filter: &str| {
        c.list_subscription_items(pb::ListSubscriptionItemsRequest { filter: filter.into(), ..Default::default() })
            .await
            .map(|r| r.into_inner().subscription_items.into_iter().map(|i| i.id).collect::<Vec<_>>())
    };
    assert_eq!(list(&mut c, r#"status = "active""#).await.unwrap(), ["csub_item_a2", "csub_item_n", "csub_item_u"]);
    assert_eq!(list(&mut c, r#"plan = "plans/cplan_team""#).await.unwrap(), ["csub_item_b"]);
    assert_eq!(list(&mut c, r#"payer_type = "user""#).await.unwrap(), ["csub_item_u"]);
    assert_eq!(
        list(&mut c, r#"status = "active" AND payer_type = "organization""#).await.unwrap(),
        ["csub_item_a2", "csub_item_n"]
    );
    let e = list(&mut c, r#"colour = "red""#).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Bad checks name the field and what is expected.
    let check = async |c: &mut pb::billing_service_client::BillingServiceClient<tonic::transport::Channel>, payer: &str, feature: &str| {
        c.check_entitlement(pb::CheckEntitlementRequest { payer: payer.into(), feature: feature.into(), consistency: None })
            .await
            .unwrap_err()
    };
    let e = check(&mut c, "org_a", "sso").await;
    assert_error(&e, Code::InvalidArgument, "INVALID_NAME");
    assert!(e.message().contains("`organizations/{id}` or `users/{id}`"), "{e:?}");
    let e = check(&mut c, "organizations/org_a", "").await;
    assert_error(&e, Code::InvalidArgument, "INVALID_FEATURE");
    let e = c
        .check_entitlements(pb::CheckEntitlementsRequest {
            checks: (0..101).map(|_| pb::EntitlementCheck { payer: "users/u".into(), feature: "f".into() }).collect(),
            consistency: None,
        })
        .await
        .unwrap_err();
    assert_error(&e, Code::InvalidArgument, "INVALID_CHECK_COUNT");
    let e = c
        .check_entitlements(pb::CheckEntitlementsRequest {
            checks: vec![
                pb::EntitlementCheck { payer: "users/u".into(), feature: "f".into() },
                pb::EntitlementCheck { payer: "teams/t".into(), feature: "f".into() },
            ],
            consistency: None,
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("checks[1].payer"), "{e:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_canceled_items_period_end_is_produced_once_by_the_mirror_and_clerks_word_replaces_it() {
    let app = spawn_app().await;
    let mut w = WatchServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    let mut stream = w
        .watch_changes(pb::WatchChangesRequest {
            entity_types: vec![pb::EntityType::SubscriptionItem as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ended_at = chrono::Utc::now().timestamp_millis() - 1000;
    let org = "organizations/org_c";
    // Canceled, its period already over (Clerk's `ended` not sent yet): the lock holder's sweep
    // ends it.
    app.send_all_and_apply(&[item_on("canceled", "csub_item_c", "canceled", org, "cplan_pro", T + 1, Some(ended_at), false)])
        .await;
    let first = next_change(&mut stream).await;
    let Some(pb::change::Entity::SubscriptionItem(canceled)) = first.entity else { panic!("{first:?}") };
    assert_eq!((canceled.status.as_str(), canceled.ended_by_mirror), ("canceled", false));
    let second = next_change(&mut stream).await;
    assert_eq!(second.operation(), pb::Operation::Updated);
    let Some(pb::change::Entity::SubscriptionItem(ended)) = second.entity else { panic!("{second:?}") };
    assert_eq!((ended.status.as_str(), ended.ended_by_mirror), ("ended", true));
    assert_eq!(ended.period_end, canceled.period_end);
    app.wait_until_applied().await;
    let clock: Vec<(String, String)> =
        sqlx::query_as("SELECT event_type, status FROM inbox WHERE source = 'clock'").fetch_all(&app.pool).await.unwrap();
    assert_eq!(clock, [("clerkmirror.subscriptionItem.periodEnded".to_string(), "applied".to_string())]);
    // Sweeping again produces nothing: once.
    let mut conn = app.pool.acquire().await.unwrap();
    assert_eq!(clerk_mirror::applier::expiry::sweep(&mut conn).await.unwrap().stored, 0);
    drop(conn);
    // The same canceled state redelivered changes nothing; Clerk's own `ended` replaces the
    // mirror's.
    app.send_all_and_apply(&[
        item_on("canceled", "csub_item_c", "canceled", org, "cplan_pro", T + 1, Some(ended_at), false),
        item_on("ended", "csub_item_c", "ended", org, "cplan_pro", T + 2, Some(ended_at), false),
    ])
    .await;
    let third = next_change(&mut stream).await;
    let Some(pb::change::Entity::SubscriptionItem(clerks)) = third.entity else { panic!("{third:?}") };
    assert_eq!((clerks.status.as_str(), clerks.ended_by_mirror), ("ended", false));
    let changes: i64 = sqlx::query_scalar("SELECT count(*) FROM changes WHERE entity_type = 'subscription_item'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(changes, 3, "canceled, ended by the mirror, ended by Clerk");
    app.stop().await;
}

#[tokio::test]
async fn enabling_billing_on_an_existing_instance_a_subscription_burst_for_every_payer_is_applied_and_answered() {
    let (url, fake) = crate::backfill::fake_api(4).await;
    fake.lock().unwrap().plans = vec![
        plan("cplan_free_org", "free_org", "org", &["basic"], true, 0),
        plan("cplan_free_user", "free_user", "user", &["notes"], true, 0),
    ];
    let app = app_listing_plans(&url, std::time::Duration::from_secs(3600)).await;
    wait_for_plan_features(&app, "cplan_free_org", &["basic"]).await;
    // Clerk turns Billing on: every payer gets its subscription on the default plan at once.
    const PAYERS: usize = 300;
    let burst: Vec<String> = (0..PAYERS)
        .map(|i| {
            let body = subscription_event("created", &format!("csub_burst{i}"), &format!("org_burst{i}"), &[(&format!("csub_item_burst{i}"), "active", T)], T);
            body.replace("cplan_pro", "cplan_free_org")
        })
        .collect();
    app.send_all_and_apply(&burst).await;
    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM subscriptions), (SELECT count(*) FROM subscription_items WHERE status = 'active'),
                (SELECT count(*) FROM inbox WHERE status <> 'applied')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(counts, (PAYERS as i64, PAYERS as i64, 0));
    let mut c = pb::billing_service_client::BillingServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    for chunk in (0..PAYERS).collect::<Vec<_>>().chunks(100) {
        let r = c
            .check_entitlements(pb::CheckEntitlementsRequest {
                checks: chunk
                    .iter()
                    .map(|i| pb::EntitlementCheck { payer: format!("organizations/org_burst{i}"), feature: "basic".into() })
                    .collect(),
                consistency: None,
            })
            .await
            .unwrap()
            .into_inner();
        for (i, result) in chunk.iter().zip(&r.results) {
            assert_eq!(
                (result.entitled, result.subscription_item.as_str()),
                (true, format!("subscriptionItems/csub_item_burst{i}").as_str())
            );
        }
    }
    // The plan every item names was known: the burst asked for no listing.
    assert_eq!(crate::backfill::plan_listings(&fake), 1);
    app.stop().await;
}

/// `paymentAttempt.<kind>` of attempt `id` at payment `payment_id`, paid by `org_id`.
pub(crate) fn payment_attempt_event(kind: &str, id: &str, payment_id: &str, org_id: &str, status: &str, updated_ms: i64) -> String {
    envelope(
        &format!("paymentAttempt.{kind}"),
        updated_ms,
        serde_json::json!({
            "id": id, "instance_id": "ins_test", "payment_id": payment_id, "statement_id": "stmt_1",
            "gateway_external_id": "pi_1", "status": status, "created_at": T, "updated_at": updated_ms,
            "paid_at": if status == "paid" { serde_json::json!(updated_ms) } else { serde_json::Value::Null },
            "failed_at": if status == "failed" { serde_json::json!(updated_ms) } else { serde_json::Value::Null },
            "failed_reason": if status == "failed" { serde_json::json!({"code": "card_declined", "decline_code": "generic_decline"}) } else { serde_json::Value::Null },
            "billing_date": T, "charge_type": "recurring",
            "payee": {"id": "cpayee_1", "gateway_type": "stripe"},
            "payer": {"id": "cpayer_1", "organization_id": org_id, "user_id": "", "email": "billing@example.com", "first_name": "Ada"},
            "totals": {"grand_total": {"amount": 2200, "amount_formatted": "$22.00", "currency": "USD", "currency_symbol": "$"}},
            "payment_source": {"id": "card_1", "last4": "4242", "card_type": "visa"},
            "subscription_items": [],
        }),
    )
}

#[tokio::test]
async fn a_subscription_shows_its_latest_payments_newest_attempt_in_any_order_alike_from_memory_and_postgresql() {
    let (cluster, name) = shared_database().await;
    let app = spawn_app_on(cluster, &name, |_| {}).await;
    let postgres = spawn_app_on(cluster, &name, |c| c.read_cache_bytes = 0).await;
    let mut w = WatchServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    let mut stream = w
        .watch_changes(pb::WatchChangesRequest {
            organization_id: "org_p".into(),
            entity_types: vec![pb::EntityType::PaymentAttempt as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let subscription = subscription_event("pastDue", "csub_p", "org_p", &[("csub_item_p", "past_due", T + 1)], T + 1)
        .replace(r#""latest_payment_id":null"#, r#""latest_payment_id":"cpa_1""#);
    assert!(subscription.contains("cpa_1"));
    // The retry (paid) arrives before the first attempt (failed), and before the subscription.
    app.send_all_and_apply(&[
        payment_attempt_event("updated", "pa_2", "cpa_1", "org_p", "paid", T + 3),
        payment_attempt_event("created", "pa_1", "cpa_1", "org_p", "failed", T + 2),
        payment_attempt_event("created", "pa_other", "cpa_0", "org_other", "paid", T + 9),
        subscription,
    ])
    .await;
    postgres.wait_until_applied().await;
    let get = pb::GetSubscriptionRequest { payer: "organizations/org_p".into(), consistency: None };
    let mut m = pb::billing_service_client::BillingServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    let mut p = pb::billing_service_client::BillingServiceClient::connect(format!("http://{}", postgres.grpc_addr)).await.unwrap();
    let from_memory = m.get_subscription(get.clone()).await.unwrap().into_inner();
    let from_postgres = p.get_subscription(get).await.unwrap().into_inner();
    assert_eq!(from_memory, from_postgres);
    let s = from_memory.subscription.unwrap();
    assert_eq!((s.latest_payment_id.as_str(), s.latest_payment_status.as_str()), ("cpa_1", "paid"));
    // The organization's watch carries its attempts (and not another payer's).
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let c = next_change(&mut stream).await;
        let Some(pb::change::Entity::PaymentAttempt(a)) = c.entity else { panic!("{c:?}") };
        seen.push((a.name, a.status, a.amount, a.failed_reason));
    }
    assert_eq!(
        seen,
        [
            ("paymentAttempts/pa_2".to_string(), "paid".to_string(), Some(2200), String::new()),
            ("paymentAttempts/pa_1".into(), "failed".into(), Some(2200), "card_declined".into())
        ]
    );
    // Card details and the payer's contact fields are not kept.
    let kept: Vec<String> = sqlx::query_scalar("SELECT data::text FROM payment_attempts").fetch_all(&app.pool).await.unwrap();
    assert!(kept.iter().all(|d| !d.contains("4242") && !d.contains("billing@example.com") && !d.contains("Ada")), "{kept:?}");
    app.stop().await;
    postgres.stop().await;
}

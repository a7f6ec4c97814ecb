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

//! Backfill against a fake Clerk Backend API served over real HTTP on 127.0.0.1: exact import,
//! 429 and 500 answers within the budget, resume after an interruption, instance mismatch.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clerk_mirror::backfill::{self, BackfillError, ClerkApi, rate::RateLimiter};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::events::*;
use crate::helpers::*;

pub(crate) const KEY: &str = "sk_test_fake";

#[derive(Default)]
pub(crate) struct Fake {
    users: Vec<Value>,
    organizations: Vec<Value>,
    memberships: Vec<Value>,
    permissions: Vec<Value>,
    roles: Vec<Value>,
    domains: Vec<Value>,
    invitations: Vec<Value>,
    /// Clerk Billing's plans (`GET /billing/plans`, newest first).
    pub(crate) plans: Vec<Value>,
    /// Clerk Billing's subscription items (`GET /billing/subscription_items`, newest first).
    pub(crate) items: Vec<Value>,
    /// Answer 404 to the billing lists (an instance without Billing).
    pub(crate) no_billing: bool,
    instance: String,
    /// Every request: when, and the path with its query.
    pub(crate) log: Vec<(Instant, String)>,
    /// Answer 429 (Retry-After: 1) to every n-th request, 500 to every m-th.
    every_429: usize,
    every_500: usize,
    /// Answer 500 to every request after this many.
    broken_after: Option<usize>,
    /// Users left out of the list (as offset paging does when others are deleted mid-scan) but
    /// found by a direct look-up.
    hidden: Vec<String>,
}

pub(crate) type Shared = Arc<Mutex<Fake>>;

#[derive(serde::Deserialize)]
struct Page {
    limit: usize,
    offset: usize,
    order_by: Option<String>,
}

async fn list(State(fake): State<Shared>, headers: HeaderMap, uri: axum::http::Uri, Query(p): Query<Page>) -> Response {
    let mut f = fake.lock().unwrap();
    f.log.push((Instant::now(), uri.to_string()));
    let n = f.log.len();
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}")) {
        return (StatusCode::UNAUTHORIZED, "{}").into_response();
    }
    if f.broken_after.is_some_and(|b| n > b) || (f.every_500 > 0 && n % f.every_500 == 0) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "{}").into_response();
    }
    if f.every_429 > 0 && n % f.every_429 == 0 {
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "{}").into_response();
    }
    assert_eq!(p.order_by.as_deref(), Some("+created_at"));
    assert!(p.limit <= 500);
    let path = uri.path().to_string();
    let all = match path.as_str() {
        "/v1/users" => &f.users,
        "/v1/organizations" => &f.organizations,
        "/v1/organization_roles" => &f.roles,
        "/v1/organization_permissions" => &f.permissions,
        "/v1/organization_domains" => &f.domains,
        "/v1/organization_invitations" => &f.invitations,
        _ => &f.memberships,
    };
    let page: Vec<Value> = all
        .iter()
        .filter(|o| !f.hidden.iter().any(|h| o["id"] == *h))
        .skip(p.offset)
        .take(p.limit)
        .cloned()
        .collect();
    let body = if path == "/v1/users" {
        json!(page)
    } else {
        json!({"data": page, "total_count": all.len()})
    };
    axum::Json(body).into_response()
}

#[derive(serde::Deserialize)]
struct PlanPage {
    limit: usize,
    offset: usize,
}

/// `GET /billing/plans`: `{data, total_count}`, paged by `limit` and `offset` (no `order_by`).
async fn plans(State(fake): State<Shared>, uri: axum::http::Uri, Query(p): Query<PlanPage>) -> Response {
    let mut f = fake.lock().unwrap();
    f.log.push((Instant::now(), uri.to_string()));
    assert!(p.limit <= 500);
    let page: Vec<Value> = f.plans.iter().skip(p.offset).take(p.limit).cloned().collect();
    axum::Json(json!({"data": page, "total_count": f.plans.len()})).into_response()
}

#[derive(serde::Deserialize)]
struct ItemPage {
    limit: usize,
    offset: usize,
    include_free: Option<bool>,
    order_by: Option<String>,
}

/// `GET /billing/subscription_items`: `{data, total_count}`, newest first (no `order_by`), the
/// Backend API's shape (`plan_period`, no `subscription_id`).
async fn subscription_items(State(fake): State<Shared>, uri: axum::http::Uri, Query(p): Query<ItemPage>) -> Response {
    let mut f = fake.lock().unwrap();
    f.log.push((Instant::now(), uri.to_string()));
    if f.no_billing {
        return (StatusCode::NOT_FOUND, r#"{"errors":[{"message":"not found","code":"resource_not_found"}]}"#).into_response();
    }
    assert_eq!((p.include_free, p.order_by.as_deref()), (Some(true), None), "{uri}");
    assert!(p.limit <= 500);
    let page: Vec<Value> = f.items.iter().rev().skip(p.offset).take(p.limit).cloned().collect();
    axum::Json(json!({"data": page, "total_count": f.items.len()})).into_response()
}

/// A subscription item as the Backend API lists it.
pub(crate) fn listed_item(id: &str, org: &str, plan: &str, status: &str, updated_ms: i64) -> Value {
    json!({
        "object": "commerce_subscription_item", "id": id, "instance_id": "ins_test", "status": status,
        "plan_id": plan, "plan": {"id": plan, "slug": plan}, "plan_period": "month", "payer_id": "cpayer_x",
        "payer": {"object": "commerce_payer", "id": "cpayer_x", "organization_id": org, "user_id": null},
        "is_free_trial": false, "period_start": T, "period_end": null, "canceled_at": null, "past_due_at": null,
        "ended_at": null, "created_at": T, "updated_at": updated_ms,
    })
}

/// How many times the plans were listed (each listing: its pages).
pub(crate) fn plan_listings(fake: &Shared) -> usize {
    let f = fake.lock().unwrap();
    f.log.iter().filter(|(_, p)| p.starts_with("/v1/billing/plans?") && p.contains("offset=0")).count()
}

async fn one(State(fake): State<Shared>, uri: axum::http::Uri) -> Response {
    let f = fake.lock().unwrap();
    let path = uri.path();
    let (list, id) = if let Some(id) = path.strip_prefix("/v1/users/") {
        (&f.users, id)
    } else if let Some(id) = path.strip_prefix("/v1/organization_roles/") {
        (&f.roles, id)
    } else if let Some(id) = path.strip_prefix("/v1/organization_permissions/") {
        (&f.permissions, id)
    } else if let Some((_, id)) = path.strip_prefix("/v1/organizations/").and_then(|p| p.split_once("/domains/")) {
        (&f.domains, id)
    } else if let Some((_, id)) = path.strip_prefix("/v1/organizations/").and_then(|p| p.split_once("/invitations/")) {
        (&f.invitations, id)
    } else {
        (
            &f.organizations,
            path.strip_prefix("/v1/organizations/").unwrap_or_default(),
        )
    };
    match list.iter().find(|o| o["id"] == id) {
        Some(o) => axum::Json(o.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"message":"not found","code":"resource_not_found"}]}"#,
        )
            .into_response(),
    }
}

async fn user_count(State(fake): State<Shared>) -> Response {
    let f = fake.lock().unwrap();
    axum::Json(json!({"object": "total_count", "total_count": f.users.len()})).into_response()
}

#[derive(serde::Deserialize)]
struct ByUser {
    user_id: String,
}

async fn members(
    State(fake): State<Shared>,
    axum::extract::Path(org): axum::extract::Path<String>,
    Query(q): Query<ByUser>,
) -> Response {
    let f = fake.lock().unwrap();
    let data: Vec<Value> = f
        .memberships
        .iter()
        .filter(|m| m["organization"]["id"] == org && m["public_user_data"]["user_id"] == q.user_id)
        .cloned()
        .collect();
    axum::Json(json!({"data": data, "total_count": data.len()})).into_response()
}

async fn instance(State(fake): State<Shared>) -> Response {
    let mut f = fake.lock().unwrap();
    f.log.push((Instant::now(), "/v1/instance".into()));
    axum::Json(json!({"object": "instance", "id": f.instance})).into_response()
}

/// A fake Backend API holding `n` users, `n / 4` organizations and `n` memberships.
pub(crate) async fn fake_api(n: usize) -> (String, Shared) {
    let mut fake = Fake {
        instance: "ins_test".into(),
        ..Default::default()
    };
    for i in 0..n {
        let mut u = user(&format!("user_b{i:05}"), T + i as i64, &format!("Name {i}"));
        u["created_at"] = json!(T + i as i64);
        fake.users.push(u);
    }
    for i in 0..n / 4 {
        fake.organizations
            .push(org(&format!("org_b{i:05}"), T + i as i64, &format!("Org {i}")));
    }
    for i in 0..n {
        let org_id = format!("org_b{:05}", i % (n / 4));
        fake.memberships.push(membership(
            &format!("orgmem_b{i:05}"),
            &org_id,
            &format!("user_b{i:05}"),
            T + i as i64,
            "org:member",
        ));
    }
    // The default roles, which Clerk sends no events for, and their permissions.
    fake.permissions = vec![
        permission("perm_b_read", "org:sys_memberships:read", T),
        permission("perm_b_manage", "org:sys_memberships:manage", T),
        permission("perm_b_invoices", "org:invoices:manage", T + 1),
    ];
    fake.roles = vec![
        role(
            "role_b_admin",
            "org:admin",
            T,
            &[("perm_b_read", "org:sys_memberships:read"), ("perm_b_manage", "org:sys_memberships:manage"), ("perm_b_invoices", "org:invoices:manage")],
        ),
        role("role_b_member", "org:member", T, &[("perm_b_read", "org:sys_memberships:read")]),
    ];
    // A domain for every tenth organization, half of them verified.
    for i in (0..n / 4).step_by(10) {
        let status = if i % 20 == 0 { Some("verified") } else { Some("unverified") };
        fake.domains.push(domain(&format!("orgdmn_b{i:05}"), &format!("org_b{i:05}"), &format!("b{i}.example.com"), status, T + i as i64));
    }
    // An invitation for every twentieth organization, of every status, each URL with a token.
    for (k, i) in (0..n / 4).step_by(20).enumerate() {
        let status = ["pending", "accepted", "revoked", "expired"][k % 4];
        fake.invitations.push(invitation(
            &format!("orginv_b{i:05}"),
            &format!("org_b{i:05}"),
            &format!("Invitee{i}@Example.com"),
            status,
            Some(T + 3_650 * 86_400_000),
            T + i as i64,
        ));
    }
    // A Pro item for every tenth organization.
    for i in (0..n / 4).step_by(10) {
        fake.items.push(listed_item(&format!("csub_item_b{i:05}"), &format!("org_b{i:05}"), "cplan_pro", "active", T + i as i64));
    }
    let shared = Arc::new(Mutex::new(fake));
    let app = axum::Router::new()
        .route("/v1/instance", get(instance))
        .route("/v1/billing/plans", get(plans))
        .route("/v1/billing/subscription_items", get(subscription_items))
        .route("/v1/organization_invitations", get(list))
        .route("/v1/organizations/{id}/invitations/{invitation}", get(one))
        .route("/v1/organization_domains", get(list))
        .route("/v1/organizations/{id}/domains/{domain}", get(one))
        .route("/v1/organization_roles", get(list))
        .route("/v1/organization_permissions", get(list))
        .route("/v1/organization_roles/{id}", get(one))
        .route("/v1/organization_permissions/{id}", get(one))
        .route("/v1/users", get(list))
        .route("/v1/organizations", get(list))
        .route("/v1/organization_memberships", get(list))
        .route("/v1/users/count", get(user_count))
        .route("/v1/users/{id}", get(one))
        .route("/v1/organizations/{id}", get(one))
        .route("/v1/organizations/{id}/memberships", get(members))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), shared)
}

fn api(url: &str, limit: usize, window: Duration) -> ClerkApi {
    let mut api = ClerkApi::new(url, KEY, Arc::new(RateLimiter::new(limit, window)));
    api.backoff = Duration::from_millis(20);
    api
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE deleted_at IS NULL"
    )))
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn billing_items_are_imported_keeping_the_subscription_a_webhook_named_and_skipped_where_billing_is_off() {
    let app = spawn_app().await;
    let (url, fake) = fake_api(40).await;
    // A webhook named the item's subscription; the list (newer) names none.
    app.send_all_and_apply(&[subscription_item_event("active", "csub_item_b00000", "active", "org_b00000", "", T - 5)])
        .await;
    let summary = backfill::run(&app.pool, &api(&url, 1000, Duration::from_secs(1)), &mut |_| {})
        .await
        .unwrap();
    let (name, items) = summary.last().unwrap();
    assert_eq!((*name, items.fetched, items.skipped.as_deref()), ("billing/subscription_items", 1, None));
    app.wait_until_applied().await;
    let row: (String, Option<String>, i64) = sqlx::query_as(
        "SELECT status, subscription_id, (extract(epoch FROM updated_at) * 1000)::bigint FROM subscription_items WHERE id = 'csub_item_b00000'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(row, ("active".into(), Some("csub_1".into()), T), "the list's newer version, the webhook's subscription");
    // Reconcile: an item Clerk now lists as ended is repaired; one it does not list is left
    // alone (no event deletes an item), never tombstoned.
    app.send_all_and_apply(&[subscription_item_event("active", "csub_item_unlisted", "active", "org_x", "", T)]).await;
    fake.lock().unwrap().items[0] = listed_item("csub_item_b00000", "org_b00000", "cplan_pro", "ended", T + 50);
    let report = backfill::reconcile::run(&app.pool, &api(&url, 1000, Duration::from_secs(1)), Default::default())
        .await
        .unwrap();
    let drift = &report.drift["billing/subscription_items"];
    assert_eq!((&drift.stale, &drift.unconfirmed, &drift.deleted), (&vec!["csub_item_b00000".to_string()], &vec!["csub_item_unlisted".to_string()], &vec![]));
    app.wait_until_applied().await;
    let items: Vec<(String, String, bool, Option<String>)> = sqlx::query_as(
        "SELECT id, status, deleted_at IS NULL, subscription_id FROM subscription_items ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        items,
        [
            ("csub_item_b00000".to_string(), "ended".to_string(), true, Some("csub_1".to_string())),
            ("csub_item_unlisted".into(), "active".into(), true, Some("csub_1".into()))
        ]
    );
    // An instance without Billing answers 404 to the list: that resource is skipped, and said.
    let other = spawn_app().await;
    fake.lock().unwrap().no_billing = true;
    let summary = backfill::run(&other.pool, &api(&url, 1000, Duration::from_secs(1)), &mut |_| {})
        .await
        .unwrap();
    let (_, items) = summary.last().unwrap();
    assert_eq!(items.fetched, 0);
    assert!(items.skipped.as_deref().is_some_and(|why| why.contains("404")), "{items:?}");
    assert_eq!(summary[0].1.fetched, 40, "the rest came in");
    // Reconcile compares the rest and leaves items alone.
    let report = backfill::reconcile::run(&other.pool, &api(&url, 1000, Duration::from_secs(1)), Default::default())
        .await
        .unwrap();
    assert!(!report.drift.contains_key("billing/subscription_items"), "{report:?}");
    app.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn a_backfill_into_an_empty_mirror_yields_exactly_the_apis_state_with_changes() {
    let app = spawn_app().await;
    let (url, fake) = fake_api(1200).await;
    let summary = backfill::run(&app.pool, &api(&url, 1000, Duration::from_secs(1)), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        summary.iter().map(|(_, s)| s.fetched).collect::<Vec<_>>(),
        [1200, 300, 1200, 30, 15, 3, 2, 30]
    );
    app.wait_until_applied().await;
    assert_eq!(
        (
            count(&app, "users").await,
            count(&app, "organizations").await,
            count(&app, "memberships").await
        ),
        (1200, 300, 1200)
    );
    let name: String = sqlx::query_scalar("SELECT first_name FROM users WHERE id = 'user_b00777'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(name, "Name 777");
    let (changes, sources): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE source LIKE 'backfill:%') FROM changes")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((changes, sources), (2780, 2780));
    // Billing's items, instance-wide, with their payers and the list's `plan_period`.
    let items: (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE payer LIKE 'organizations/org_b%'), count(*) FILTER (WHERE interval = 'month')
           FROM subscription_items",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(items, (30, 30, 30));
    // Invitations of every status came in, none of their tokens did.
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM invitations GROUP BY status ORDER BY status")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let want = [("accepted", 4), ("expired", 3), ("pending", 4), ("revoked", 4)];
    assert_eq!(statuses, want.map(|(s, n)| (s.to_string(), n)));
    assert_eq!(token_traces(&app.pool).await, 0, "an invitation token was stored");
    let redacted: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE body_redacted AND body IS NOT NULL) FROM inbox
          WHERE event_type LIKE 'organizationInvitation.%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(redacted, (15, 15), "kept without their URLs, and marked so");
    // The default roles came from the Backend API: a member's checks answer from the role.
    let mut c = clerk_mirror::pb::directory_service_client::DirectoryServiceClient::connect(format!(
        "http://{}",
        app.grpc_addr
    ))
    .await
    .unwrap();
    for (permission, allowed) in [("org:sys_memberships:read", true), ("org:invoices:manage", false)] {
        let r = c
            .check_permission(clerk_mirror::pb::CheckPermissionRequest {
                organization: "organizations/org_b00007".into(),
                user: "users/user_b00007".into(),
                permission: permission.into(),
                consistency: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (r.allowed, r.role.as_str(), r.source()),
            (allowed, "org:member", clerk_mirror::pb::CheckSource::Role),
            "{permission}"
        );
    }
    // A second run fetches again but enqueues nothing new: the same objects are already in.
    let again = backfill::run(&app.pool, &api(&url, 1000, Duration::from_secs(1)), &mut |_| {})
        .await
        .unwrap();
    assert!(again.iter().all(|(_, s)| s.enqueued == 0), "{again:?}");
    assert!(fake.lock().unwrap().log.len() > 10);
    app.stop().await;
}

#[tokio::test]
async fn answers_429_and_500_are_retried_within_the_request_budget() {
    let app = spawn_app().await;
    let (url, fake) = fake_api(2000).await;
    {
        let mut f = fake.lock().unwrap();
        f.every_429 = 4;
        f.every_500 = 7;
    }
    let (limit, window) = (5, Duration::from_millis(500));
    backfill::run(&app.pool, &api(&url, limit, window), &mut |_| {})
        .await
        .unwrap();
    app.wait_until_applied().await;
    assert_eq!(count(&app, "users").await, 2000);
    assert_eq!(count(&app, "memberships").await, 2000);
    assert_eq!((count(&app, "roles").await, count(&app, "permissions").await), (2, 3));
    let log: Vec<Instant> = fake.lock().unwrap().log.iter().map(|(t, _)| *t).collect();
    for (i, t) in log.iter().enumerate() {
        let in_window = log[i..].iter().take_while(|u| u.duration_since(*t) < window).count();
        assert!(
            in_window <= limit,
            "{in_window} requests within {window:?} (budget {limit})"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn an_interrupted_backfill_resumes_from_its_checkpoint_and_ends_exact() {
    let app = spawn_app().await;
    let (url, fake) = fake_api(2400).await;
    fake.lock().unwrap().broken_after = Some(4);
    let mut interrupted = api(&url, 1000, Duration::from_secs(1));
    interrupted.max_attempts = 2;
    let e = backfill::run(&app.pool, &interrupted, &mut |_| {}).await.unwrap_err();
    assert!(
        matches!(e, BackfillError::Api(backfill::ClerkApiError::GaveUp { .. })),
        "{e}"
    );
    {
        let mut f = fake.lock().unwrap();
        f.broken_after = None;
        f.log.clear();
    }
    let summary = backfill::run(&app.pool, &api(&url, 1000, Duration::from_secs(1)), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        summary[0].1.resumed_at, 1500,
        "users resumed after the three pages already done"
    );
    let first_users_request = fake
        .lock()
        .unwrap()
        .log
        .iter()
        .find(|(_, p)| p.starts_with("/v1/users"))
        .unwrap()
        .1
        .clone();
    assert!(first_users_request.contains("offset=1500"), "{first_users_request}");
    app.wait_until_applied().await;
    assert_eq!(
        (
            count(&app, "users").await,
            count(&app, "organizations").await,
            count(&app, "memberships").await
        ),
        (2400, 600, 2400)
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM backfill_checkpoints")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "a finished run clears its checkpoints");
    app.stop().await;
}

#[tokio::test]
async fn a_key_of_another_instance_is_refused_before_anything_is_imported() {
    let app = spawn_app().await;
    let mut webhook = user_event("created", "user_x", T, T, "X");
    webhook = webhook.replace("ins_test", "ins_production");
    app.send_all_and_apply(&[webhook]).await;
    let (url, fake) = fake_api(40).await;
    let e = backfill::run(&app.pool, &api(&url, 1000, Duration::from_secs(1)), &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, BackfillError::InstanceMismatch { .. }), "{e}");
    assert!(e.to_string().contains("ins_production"));
    assert_eq!(fake.lock().unwrap().log.len(), 1, "only the instance was asked");
    let wrong_key = ClerkApi::new(
        &url,
        "sk_wrong",
        Arc::new(RateLimiter::new(100, Duration::from_secs(1))),
    );
    fake.lock().unwrap().instance = "ins_production".into();
    let e = backfill::run(&app.pool, &wrong_key, &mut |_| {}).await.unwrap_err();
    assert!(e.to_string().contains("CLERK_SECRET_KEY"), "{e}");
    app.stop().await;
}

async fn backfilled(n: usize) -> (TestApp, String, Shared) {
    let app = spawn_app().await;
    let (url, fake) = fake_api(n).await;
    backfill::run(&app.pool, &api(&url, 1000, Duration::from_secs(1)), &mut |_| {})
        .await
        .unwrap();
    app.wait_until_applied().await;
    (app, url, fake)
}

#[tokio::test]
async fn reconcile_repairs_exactly_the_real_drift_and_reports_it() {
    use clerk_mirror::backfill::reconcile::{self, Options};
    let (app, url, fake) = backfilled(400).await;
    // A webhook newer than Clerk's listing (applied meanwhile): never overwritten.
    app.send_all_and_apply(&[user_event(
        "updated",
        "user_b00010",
        T + 99_999,
        T + 99_999,
        "Newer by webhook",
    )])
    .await;
    {
        let mut f = fake.lock().unwrap();
        // Missing: created while no webhook arrived.
        f.users.push(user("user_new", T, "New"));
        // Stale: renamed, the webhook lost.
        let o = f.organizations.iter_mut().find(|o| o["id"] == "org_b00003").unwrap();
        o["name"] = json!("Renamed");
        o["updated_at"] = json!(T + 50_000);
        // Deleted in Clerk while its webhook was lost (its memberships with it).
        f.users.retain(|u| u["id"] != "user_b00020");
        f.memberships
            .retain(|m| m["public_user_data"]["user_id"] != "user_b00020");
        // A membership ended.
        f.memberships.retain(|m| m["id"] != "orgmem_b00030");
        // Skipped by the listing, still present.
        f.hidden.push("user_b00040".into());
        // A role's permissions changed and a permission's key renamed, with no webhook; a
        // permission deleted (its role no longer lists it).
        let member = f.roles.iter_mut().find(|r| r["key"] == "org:member").unwrap();
        member["permissions"] = json!([permission("perm_b_invoices", "org:billing:manage", T + 60_000)]);
        member["updated_at"] = json!(T + 60_000);
        let invoices = f.permissions.iter_mut().find(|p| p["id"] == "perm_b_invoices").unwrap();
        invoices["key"] = json!("org:billing:manage");
        invoices["updated_at"] = json!(T + 60_000);
        f.permissions.retain(|p| p["id"] != "perm_b_read");
        // A domain removed, its webhook lost: found gone under its organization.
        f.domains.retain(|d| d["id"] != "orgdmn_b00010");
        // An invitation accepted and one sent while their webhooks were lost.
        let accepted = f.invitations.iter_mut().find(|i| i["id"] == "orginv_b00000").unwrap();
        accepted["status"] = json!("accepted");
        accepted["updated_at"] = json!(T + 70_000);
        let sent = invitation("orginv_new", "org_b00001", "new@example.com", "pending", None, T + 70_000);
        f.invitations.push(sent);
    }
    let report = reconcile::run(&app.pool, &api(&url, 1000, Duration::from_secs(1)), Options::default())
        .await
        .unwrap();
    let users = &report.drift["users"];
    assert_eq!(users.missing, ["user_new"]);
    assert!(users.stale.is_empty(), "{users:?}");
    assert_eq!(users.deleted, ["user_b00020"]);
    assert_eq!(users.unlisted_but_present, ["user_b00040"]);
    assert_eq!(report.drift["organizations"].stale, ["org_b00003"]);
    assert_eq!(
        report.drift["organization_memberships"].deleted,
        ["orgmem_b00020", "orgmem_b00030"]
    );
    assert_eq!(report.drift["organization_roles"].stale, ["role_b_member"]);
    assert_eq!(report.drift["organization_domains"].deleted, ["orgdmn_b00010"]);
    assert_eq!(report.drift["organization_invitations"].stale, ["orginv_b00000"]);
    assert_eq!(report.drift["organization_invitations"].missing, ["orginv_new"]);
    assert_eq!(report.drift["organization_permissions"].stale, ["perm_b_invoices"]);
    assert_eq!(report.drift["organization_permissions"].deleted, ["perm_b_read"]);
    assert!(report.render(false).contains("deleted"));
    app.wait_until_applied().await;
    let admin: Vec<String> = sqlx::query_scalar("SELECT permissions FROM role_view WHERE id = 'role_b_admin'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(admin, ["org:billing:manage", "org:sys_memberships:manage"], "renamed, and the deleted one dropped");
    let alive = |table: &'static str, id: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(format!(
                "SELECT deleted_at IS NULL FROM {table} WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(alive("users", "user_new").await, Some(true));
    assert_eq!(alive("users", "user_b00020").await, Some(false));
    assert_eq!(
        alive("users", "user_b00040").await,
        Some(true),
        "a live entity is never tombstoned"
    );
    assert_eq!(alive("memberships", "orgmem_b00030").await, Some(false));
    let renamed: String = sqlx::query_scalar("SELECT name FROM organizations WHERE id = 'org_b00003'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(renamed, "Renamed");
    let kept: String = sqlx::query_scalar("SELECT first_name FROM users WHERE id = 'user_b00010'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(kept, "Newer by webhook");
    let sources: i64 = sqlx::query_scalar("SELECT count(*) FROM changes WHERE source LIKE 'reconcile:%'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(sources >= 5, "every repair is an ordinary change");
    // The report is kept; a second run finds nothing left.
    let again = reconcile::run(&app.pool, &api(&url, 1000, Duration::from_secs(1)), Options::default())
        .await
        .unwrap();
    assert!(
        again
            .drift
            .values()
            .all(|d| d.missing.is_empty() && d.stale.is_empty() && d.deleted.is_empty()),
        "{again:?}"
    );
    assert_eq!(reconcile::last_report(&app.pool).await.unwrap(), Some(again));
    app.stop().await;
}

#[tokio::test]
async fn reconcile_refuses_a_mass_delete_unless_allowed() {
    use clerk_mirror::backfill::reconcile::{self, Options, ReconcileError};
    let (app, url, fake) = backfilled(400).await;
    fake.lock().unwrap().users.truncate(340);
    let inbox_before: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let e = reconcile::run(&app.pool, &api(&url, 1000, Duration::from_secs(1)), Options::default())
        .await
        .unwrap_err();
    assert!(matches!(e, ReconcileError::MassDelete { count: 60, .. }), "{e}");
    assert!(e.to_string().contains("--allow-mass-delete"));
    let inbox_after: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(inbox_before, inbox_after, "nothing was changed");
    let report = reconcile::run(
        &app.pool,
        &api(&url, 1000, Duration::from_secs(1)),
        Options {
            allow_mass_delete: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(report.drift["users"].deleted.len(), 60);
    app.stop().await;
}

#[tokio::test]
async fn serve_with_a_secret_key_reads_the_roles_and_permissions_at_start_and_nothing_else() {
    let (url, fake) = fake_api(40).await;
    fake.lock().unwrap().every_429 = 3;
    let reconcile = clerk_mirror::config::ReconcileConfig {
        api_url: url,
        secret_key: clerk_mirror::config::Redacted(KEY.to_string()),
        rate: 1000,
        window: Duration::from_secs(1),
        every: None,
        plans_every: clerk_mirror::backfill::plans::DEFAULT_EVERY,
    };
    let app = spawn_app_with(|c| c.reconcile = Some(reconcile)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (count(&app, "roles").await, count(&app, "permissions").await) != (2, 3) {
        assert!(std::time::Instant::now() < deadline, "the roles were never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.wait_until_applied().await;
    assert_eq!(count(&app, "users").await, 0, "only the roles and permissions, not a whole reconcile");
    let asked: Vec<String> = fake.lock().unwrap().log.iter().map(|(_, p)| p.clone()).collect();
    assert!(asked.iter().all(|p| !p.starts_with("/v1/users")), "{asked:?}");
    assert!(asked.iter().any(|p| p.starts_with("/v1/organization_roles?")), "{asked:?}");
    let mut c = clerk_mirror::pb::directory_service_client::DirectoryServiceClient::connect(format!(
        "http://{}",
        app.grpc_addr
    ))
    .await
    .unwrap();
    let admin = c
        .lookup_role(clerk_mirror::pb::LookupRoleRequest {
            key: "org:admin".into(),
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    assert_eq!(
        admin.permissions,
        ["org:invoices:manage", "org:sys_memberships:manage", "org:sys_memberships:read"]
    );
    // No whole-run report is kept for it.
    let r = crate::helpers::get(&format!("http://{}/reconcile", app.admin_addr)).await;
    assert_ne!(r.status, hyper::StatusCode::OK, "{}", r.body);
    app.stop().await;
}

#[tokio::test]
async fn serve_reconciles_periodically_on_the_lock_holder_and_exposes_the_report() {
    let (url, fake) = fake_api(80).await;
    let reconcile = clerk_mirror::config::ReconcileConfig {
        api_url: url,
        secret_key: clerk_mirror::config::Redacted(KEY.to_string()),
        rate: 1000,
        window: Duration::from_secs(1),
        every: Some(Duration::from_millis(200)),
        plans_every: clerk_mirror::backfill::plans::DEFAULT_EVERY,
    };
    let app = spawn_app_with(|c| {
        c.reconcile = Some(reconcile);
    })
    .await;
    // The first run finds everything missing and imports it; later runs find no drift.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if users == 80 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the periodic reconcile never imported the users ({users})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fake.lock().unwrap().users.retain(|u| u["id"] != "user_b00005");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let r = crate::helpers::get(&format!("http://{}/reconcile", app.admin_addr)).await;
        if r.status == hyper::StatusCode::OK {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            if v["drift"]["users"]["deleted"] == json!(["user_b00005"]) {
                break v;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no report of the deleted user");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(report["finished_at"].is_string());
    let mut c =
        clerk_mirror::pb::admin_service_client::AdminServiceClient::connect(format!("http://{}", app.grpc_addr))
            .await
            .unwrap();
    let status = c
        .get_sync_status(clerk_mirror::pb::GetSyncStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.last_reconcile.is_some());
    let metrics = crate::helpers::get(&format!("http://{}/metrics", app.admin_addr))
        .await
        .body;
    assert!(metrics.contains("clerk_mirror_drift{"), "{metrics}");
    app.stop().await;
}

/// A stand-in Backend API that answers by the first segment of the path (the base URL names the
/// case: `http://…/html404` is a base whose every request answers an HTML 404).
async fn stand_in() -> String {
    async fn answer(uri: axum::http::Uri) -> Response {
        let clerk_error =
            |message: &str| json!({"errors": [{"message": "short", "long_message": message, "code": "x"}]}).to_string();
        let case = uri.path().trim_start_matches('/').split('/').next().unwrap_or_default();
        let html = [("content-type", "text/html")];
        match case {
            "html404" => (StatusCode::NOT_FOUND, html, "<html><body>Not Found</body></html>").into_response(),
            "unauthorized" => (
                StatusCode::UNAUTHORIZED,
                clerk_error("The provided secret key is invalid"),
            )
                .into_response(),
            "unprocessable" => (
                StatusCode::UNPROCESSABLE_ENTITY,
                clerk_error("order_by is not a valid field"),
            )
                .into_response(),
            "broken" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            "limited" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "{}").into_response(),
            "html200" => (StatusCode::OK, html, "<html>a web app</html>").into_response(),
            "noid" => axum::Json(json!({"object": "instance"})).into_response(),
            "notalist" if uri.path().ends_with("/instance") => {
                axum::Json(json!({"object": "instance", "id": "ins_test"})).into_response()
            }
            "notalist" => axum::Json(json!({"object": "list"})).into_response(),
            other => panic!("no case {other}"),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(answer);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A key that must never show in an error.
const SECRET_KEY: &str = "sk_test_never_shown_0123456789";

/// The API at `base` with `attempts` quick attempts and a key that must never show.
fn quick(base: &str, attempts: u32) -> ClerkApi {
    let mut api = ClerkApi::new(
        base,
        SECRET_KEY,
        Arc::new(RateLimiter::new(1000, Duration::from_secs(1))),
    );
    api.backoff = Duration::from_millis(10);
    api.max_attempts = attempts;
    api
}

fn assert_says(e: &impl std::fmt::Display, parts: &[&str]) {
    let text = e.to_string();
    for part in parts {
        assert!(text.contains(part), "`{part}` missing from: {text}");
    }
    assert!(!text.contains(SECRET_KEY), "the key shows in: {text}");
}

#[tokio::test]
async fn backfill_against_an_api_base_that_answers_404_on_instance_names_the_request_the_status_and_the_fix() {
    let base = stand_in().await;
    let (cluster, name) = shared_database().await;
    let output = tokio::process::Command::new(crate::process::binary())
        .args(["backfill", "--api-url", &format!("{base}/html404")])
        .args(["--database-url", &cluster.url(&name)])
        .env("CLERK_SECRET_KEY", SECRET_KEY)
        .env_remove("CLERK_API_URL")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert_says(
        &stderr,
        &[
            "error: GET /html404/instance answered 404 Not Found (text/html, 35 bytes: not an error of Clerk's API)",
            &format!("is {base}/html404 Clerk's Backend API?"),
            "Set --api-url / CLERK_API_URL to its base, https://api.clerk.com/v1",
        ],
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains(SECRET_KEY));

    // The same 404 from Clerk itself (a right base, an instance gone): Clerk's message is quoted.
    let app = axum::Router::new().route(
        "/v1/instance",
        get(|| async {
            (
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"message":"not found","code":"resource_not_found"}]}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let e = quick(&url, 1).instance_id().await.unwrap_err();
    assert!(
        matches!(e, backfill::ClerkApiError::NotFound { status: 404, .. }),
        "{e}"
    );
    assert_says(
        &e,
        &["GET /v1/instance answered 404 Not Found (Clerk: \"not found\"): "],
    );
}

#[tokio::test]
async fn every_backend_api_failure_names_the_request_what_answered_and_what_to_do() {
    let base = stand_in().await;
    let cases: [(&str, u32, &[&str]); 6] = [
        (
            "unauthorized",
            2,
            &[
                "GET /unauthorized/instance answered 401 Unauthorized (Clerk: \"The provided secret key is invalid\")",
                "check that CLERK_SECRET_KEY (--secret-key) is this instance's secret key",
            ],
        ),
        (
            "unprocessable",
            2,
            &[
                "GET /unprocessable/instance answered 422 Unprocessable Entity (Clerk: \"order_by is not a valid field\")",
                "please report it",
            ],
        ),
        (
            "broken",
            2,
            &[
                "GET /broken/instance failed 2 times; the last attempt: 500 Internal Server Error (an empty body)",
                "run again later (https://status.clerk.com)",
            ],
        ),
        (
            "limited",
            1,
            &[
                "GET /limited/instance failed once; the last attempt: 429 Too Many Requests (rate limited)",
                "lower --api-rate (CLERK_MIRROR_API_RATE)",
            ],
        ),
        (
            "html200",
            2,
            &[
                "GET /html200/instance answered 200 OK with a body that is not JSON (text/html: ",
                "Clerk's Backend API (https://api.clerk.com/v1)",
            ],
        ),
        (
            "noid",
            2,
            &["GET /noid/instance answered an instance without an `id`: is "],
        ),
    ];
    for (case, attempts, says) in cases {
        let e = quick(&format!("{base}/{case}"), attempts)
            .instance_id()
            .await
            .unwrap_err();
        assert_says(&e, says);
    }

    // Nothing listening: no answer, and where it tried.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let e = quick(&format!("http://{closed}/v1"), 2)
        .instance_id()
        .await
        .unwrap_err();
    assert_says(
        &e,
        &[
            &format!("GET /v1/instance failed 2 times; the last attempt: no answer: cannot connect to {closed}: "),
            "Connection refused",
            &format!("Check that http://{closed}/v1 (--api-url, CLERK_API_URL) is reachable from here"),
        ],
    );

    // A base that is not a URL, and a key no header can carry: refused before anything is sent.
    let started = std::time::Instant::now();
    let e = quick("api.clerk.com/v1", 8).instance_id().await.unwrap_err();
    assert_says(
        &e,
        &[
            "cannot request api.clerk.com/v1/instance: --api-url / CLERK_API_URL `api.clerk.com/v1` is not an http:// or https:// URL",
        ],
    );
    let mut broken_key = ClerkApi::new(
        &format!("{base}/unauthorized"),
        "sk_test_cut\nin two",
        Arc::new(RateLimiter::new(1000, Duration::from_secs(1))),
    );
    broken_key.max_attempts = 8;
    let e = broken_key.instance_id().await.unwrap_err();
    assert_says(
        &e,
        &["cannot send GET /unauthorized/instance: the secret key holds characters an HTTP header cannot carry"],
    );
    assert!(!e.to_string().contains("sk_test_cut"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "no retries for those");

    // A list that is not one, in a real run: the page's request is named, with its query.
    let app = spawn_app().await;
    let e = backfill::run(&app.pool, &quick(&format!("{base}/notalist"), 2), &mut |_| {})
        .await
        .unwrap_err();
    assert_says(
        &e,
        &["GET /notalist/users?limit=500&offset=0&order_by=%2Bcreated_at answered a body that is neither a list nor"],
    );
    app.stop().await;
}

#[tokio::test]
async fn a_backfill_whose_database_fails_names_the_step_and_says_to_run_again() {
    let (url, _fake) = fake_api(4).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(
            sqlx::postgres::PgConnectOptions::new()
                .host("127.0.0.1")
                .port(closed)
                .username("mirror")
                .password("pg-password-4711"),
        );
    let e = backfill::run(&pool, &api(&url, 1000, Duration::from_secs(1)), &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, BackfillError::Database { .. }), "{e}");
    assert_says(
        &e,
        &[
            "cannot read which instance the mirror's webhooks come from: ",
            "; run again once PostgreSQL answers",
        ],
    );
    assert!(!e.to_string().contains("pg-password-4711"), "{e}");
}

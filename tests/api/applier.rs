//! The applier: the rules of DESIGN's "Ordering and idempotency", each with a test; every order
//! of a story ends in the same state; dead letters; crash safety and takeover.

use std::collections::BTreeMap;

use clerk_mirror::applier;
use clerk_mirror::store::{
    DomainRecord, InvitationRecord, MembershipRecord, OrganizationRecord, PermissionRecord, RoleRecord, SubscriptionItemRecord, SubscriptionRecord,
    UserRecord,
};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};

use crate::events::*;
use crate::helpers::*;

async fn user_row(pool: &PgPool, id: &str) -> Option<UserRecord> {
    sqlx::query_as("SELECT * FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn org_row(pool: &PgPool, id: &str) -> Option<OrganizationRecord> {
    sqlx::query_as("SELECT * FROM organizations WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn row<T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin>(
    pool: &PgPool,
    table: &str,
    id: &str,
) -> Option<T> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT * FROM {table} WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn membership_row(pool: &PgPool, id: &str) -> Option<MembershipRecord> {
    sqlx::query_as("SELECT * FROM memberships WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[derive(Debug, sqlx::FromRow)]
pub struct ChangeRow {
    seq: i64,
    entity_type: String,
    entity_id: String,
    operation: String,
    state: Value,
    previous: Option<Value>,
    source: String,
}

pub async fn changes(pool: &PgPool) -> Vec<ChangeRow> {
    sqlx::query_as("SELECT seq, entity_type, entity_id, operation, state, previous, source FROM changes ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn changes_of(pool: &PgPool, entity_id: &str) -> Vec<ChangeRow> {
    changes(pool)
        .await
        .into_iter()
        .filter(|c| c.entity_id == entity_id)
        .collect()
}

async fn emails_of(pool: &PgPool, user_id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT email_address FROM user_email_addresses WHERE user_id = $1 ORDER BY email_address")
        .bind(user_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

fn ms(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

#[tokio::test]
async fn a_user_created_event_fills_the_projections_and_appends_one_change() {
    let app = spawn_app().await;
    let ids = app
        .send_all_and_apply(&[user_event("created", "user_a", T, T, "Ada")])
        .await;
    let u = user_row(&app.pool, "user_a").await.expect("the user");
    assert_eq!(u.first_name.as_deref(), Some("Ada"));
    assert_eq!(u.external_id.as_deref(), Some("ext-user_a"));
    assert_eq!(u.primary_email_address.as_deref(), Some("user_a@Example.com"));
    assert_eq!(u.data.as_ref().unwrap()["private_metadata"], serde_json::json!({}));
    assert_eq!(
        emails_of(&app.pool, "user_a").await,
        vec!["second.user_a@example.org", "user_a@Example.com"]
    );
    // Lookup rows match case-insensitively through the index on lower(address).
    let found: Option<String> =
        sqlx::query_scalar("SELECT user_id FROM user_email_addresses WHERE lower(email_address) = lower($1)")
            .bind("USER_A@example.COM")
            .fetch_optional(&app.pool)
            .await
            .unwrap();
    assert_eq!(found.as_deref(), Some("user_a"));
    let log = changes(&app.pool).await;
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].seq, log[0].operation.as_str(), log[0].entity_type.as_str()),
        (1, "created", "user")
    );
    assert_eq!(log[0].source, format!("webhook:{}", ids[0]));
    let (status, head): (String, i64) = sqlx::query_as("SELECT status, (SELECT head_seq FROM log_head) FROM inbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!((status.as_str(), head), ("applied", 1));
    let cursor: i64 = sqlx::query_scalar("SELECT update_cursor FROM users WHERE id = 'user_a'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(cursor, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_older_update_arriving_late_changes_nothing_and_emits_no_change() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        user_event("created", "user_b", T, T, "First"),
        user_event("updated", "user_b", T + 20, T + 20, "Newest"),
        user_event("updated", "user_b", T + 10, T + 30, "Older"),
    ])
    .await;
    assert_eq!(
        user_row(&app.pool, "user_b").await.unwrap().first_name.as_deref(),
        Some("Newest")
    );
    assert_eq!(changes_of(&app.pool, "user_b").await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn equal_updated_at_is_decided_by_the_envelope_timestamp_then_the_svix_id() {
    let app = spawn_app().await;
    // Later envelope timestamp wins, whichever arrives first.
    app.send_all_and_apply(&[
        user_event("updated", "user_c", T + 5, T + 7, "Later envelope"),
        user_event("updated", "user_c", T + 5, T + 6, "Earlier envelope"),
    ])
    .await;
    assert_eq!(
        user_row(&app.pool, "user_c").await.unwrap().first_name.as_deref(),
        Some("Later envelope")
    );
    // Same envelope timestamp too: the greater svix-id wins.
    for id in ["msg_b", "msg_a"] {
        let body = user_event("updated", "user_c2", T + 5, T + 5, id);
        assert_eq!(app.send_as(id, &body).await.status, hyper::StatusCode::OK);
    }
    app.wait_until_applied().await;
    assert_eq!(
        user_row(&app.pool, "user_c2").await.unwrap().first_name.as_deref(),
        Some("msg_b")
    );
    assert_eq!(changes_of(&app.pool, "user_c2").await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_delete_before_the_create_leaves_a_tombstone_no_later_create_or_update_undoes() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        user_deleted("user_d", T + 100),
        user_event("created", "user_d", T, T, "Ghost"),
        // Even with timestamps after the delete: Clerk never reuses ids.
        user_event("updated", "user_d", T + 500, T + 500, "Ghost again"),
    ])
    .await;
    let u = user_row(&app.pool, "user_d").await.unwrap();
    assert_eq!(ms(u.deleted_at), Some(T + 100));
    assert_eq!(u.first_name, None);
    let log = changes_of(&app.pool, "user_d").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].operation, "deleted");
    assert!(log[0].previous.is_none());
    app.stop().await;
}

#[tokio::test]
async fn a_tombstone_keeps_only_the_id_external_id_and_delete_time() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        user_event("created", "user_e", T, T, "Eve"),
        user_deleted("user_e", 1_767_225_700),
    ])
    .await;
    let u = user_row(&app.pool, "user_e").await.unwrap();
    // A ten-digit envelope timestamp is seconds.
    assert_eq!(ms(u.deleted_at), Some(1_767_225_700_000));
    assert_eq!(
        u,
        UserRecord::tombstone("user_e".into(), Some("ext-user_e".into()), u.deleted_at.unwrap())
    );
    assert!(
        emails_of(&app.pool, "user_e").await.is_empty(),
        "email lookup rows must go"
    );
    let phones: i64 = sqlx::query_scalar("SELECT count(*) FROM user_phone_numbers WHERE user_id = 'user_e'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(phones, 0);
    let log = changes_of(&app.pool, "user_e").await;
    assert_eq!(log[1].operation, "deleted");
    assert_eq!(log[1].previous.as_ref().unwrap()["first_name"], "Eve");
    assert!(log[1].state.get("data").unwrap().is_null());
    app.stop().await;
}

#[tokio::test]
async fn a_membership_deleted_event_with_an_old_updated_at_still_ends_the_membership() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        membership_event("created", "orgmem_f", "org_f", "user_f", T, T, "org:admin"),
        membership_event("updated", "orgmem_f", "org_f", "user_f", T + 50, T + 50, "org:member"),
        // Clerk's deleted membership carries an updated_at older than the last update.
        membership_event("deleted", "orgmem_f", "org_f", "user_f", T, T + 60, "org:admin"),
    ])
    .await;
    let m = membership_row(&app.pool, "orgmem_f").await.unwrap();
    assert_eq!(ms(m.deleted_at), Some(T + 60));
    assert_eq!(
        (m.organization_id.as_str(), m.user_id.as_str(), m.role.as_deref()),
        ("org_f", "user_f", None)
    );
    let ops: Vec<String> = changes_of(&app.pool, "orgmem_f")
        .await
        .into_iter()
        .map(|c| c.operation)
        .collect();
    assert_eq!(ops, ["created", "updated", "deleted"]);
    app.stop().await;
}

#[tokio::test]
async fn deleting_an_organization_ends_each_of_its_memberships_with_a_change_of_its_own() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        org_event("created", "org_g", T, T, "Gee"),
        membership_event("created", "orgmem_g1", "org_g", "user_g1", T, T, "org:admin"),
        membership_event("created", "orgmem_g2", "org_g", "user_g2", T, T, "org:member"),
        membership_event("created", "orgmem_other", "org_other", "user_g1", T, T, "org:member"),
        org_deleted("org_g", T + 90),
    ])
    .await;
    for id in ["orgmem_g1", "orgmem_g2"] {
        assert_eq!(
            ms(membership_row(&app.pool, id).await.unwrap().deleted_at),
            Some(T + 90),
            "{id}"
        );
        let last = changes_of(&app.pool, id).await.pop().unwrap();
        assert_eq!(last.operation, "deleted");
    }
    assert_eq!(
        membership_row(&app.pool, "orgmem_other").await.unwrap().deleted_at,
        None
    );
    let o = org_row(&app.pool, "org_g").await.unwrap();
    assert_eq!(o, OrganizationRecord::tombstone("org_g".into(), o.deleted_at.unwrap()));
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_user_ends_their_memberships() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        user_event("created", "user_h", T, T, "Hal"),
        membership_event("created", "orgmem_h1", "org_h1", "user_h", T, T, "org:admin"),
        membership_event("created", "orgmem_h2", "org_h2", "user_h", T, T, "org:member"),
        membership_event("created", "orgmem_h3", "org_h1", "user_other", T, T, "org:member"),
        user_deleted("user_h", T + 70),
    ])
    .await;
    for id in ["orgmem_h1", "orgmem_h2"] {
        assert_eq!(
            ms(membership_row(&app.pool, id).await.unwrap().deleted_at),
            Some(T + 70),
            "{id}"
        );
    }
    assert_eq!(membership_row(&app.pool, "orgmem_h3").await.unwrap().deleted_at, None);
    app.stop().await;
}

#[tokio::test]
async fn a_membership_event_for_an_organization_or_user_already_deleted_is_stored_as_ended() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        org_deleted("org_i", T + 40),
        user_deleted("user_i2", T + 30),
        membership_event("created", "orgmem_i1", "org_i", "user_i1", T, T, "org:admin"),
        membership_event("updated", "orgmem_i2", "org_live", "user_i2", T + 5, T + 5, "org:admin"),
    ])
    .await;
    let m1 = membership_row(&app.pool, "orgmem_i1").await.unwrap();
    assert_eq!(ms(m1.deleted_at), Some(T + 40));
    assert_eq!(m1.role, None);
    assert_eq!(
        ms(membership_row(&app.pool, "orgmem_i2").await.unwrap().deleted_at),
        Some(T + 30)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_membership_before_its_user_and_organization_is_stored_and_its_snapshots_never_overwrite_them() {
    let app = spawn_app().await;
    // First the membership alone: stored, with the snapshots it carries.
    app.send_all_and_apply(&[membership_event(
        "created",
        "orgmem_j",
        "org_j",
        "user_j",
        T,
        T,
        "org:admin",
    )])
    .await;
    let m = membership_row(&app.pool, "orgmem_j").await.unwrap();
    assert_eq!(m.data.as_ref().unwrap()["organization"]["name"], "Snapshot name");
    assert_eq!(m.data.as_ref().unwrap()["public_user_data"]["first_name"], "Snap");
    assert!(org_row(&app.pool, "org_j").await.is_none());
    assert!(user_row(&app.pool, "user_j").await.is_none());
    // Then the real ones, then another membership event carrying older snapshots.
    app.send_all_and_apply(&[
        org_event("created", "org_j", T + 10, T + 10, "Real name"),
        user_event("created", "user_j", T + 10, T + 10, "Real"),
        membership_event("updated", "orgmem_j", "org_j", "user_j", T + 20, T + 20, "org:member"),
    ])
    .await;
    assert_eq!(
        org_row(&app.pool, "org_j").await.unwrap().name.as_deref(),
        Some("Real name")
    );
    assert_eq!(
        user_row(&app.pool, "user_j").await.unwrap().first_name.as_deref(),
        Some("Real")
    );
    assert_eq!(changes_of(&app.pool, "org_j").await.len(), 1);
    assert_eq!(
        membership_row(&app.pool, "orgmem_j").await.unwrap().role.as_deref(),
        Some("org:member")
    );
    app.stop().await;
}

#[tokio::test]
async fn session_and_unknown_events_are_kept_in_the_inbox_and_never_touch_the_projections() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[user_event("created", "user_k", T, T, "Kay")])
        .await;
    let session = envelope(
        "session.created",
        T + 100,
        serde_json::json!({"id": "sess_1", "object": "session", "user_id": "user_k", "user": user("user_k", T + 100, "From session")}),
    );
    let other = envelope("waitlistEntry.created", T + 100, serde_json::json!({"id": "wle_1", "email_address": "x@example.com"}));
    app.send_all_and_apply(&[session, other]).await;
    assert_eq!(
        user_row(&app.pool, "user_k").await.unwrap().first_name.as_deref(),
        Some("Kay")
    );
    let skipped: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE status = 'skipped'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(skipped, 2);
    assert_eq!(changes(&app.pool).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_unparsable_verified_event_becomes_a_dead_letter_and_the_next_events_apply() {
    let app = spawn_app().await;
    let bad = envelope("user.updated", T, serde_json::json!({"first_name": "no id"}));
    let ids = app
        .send_all_and_apply(&[bad, user_event("created", "user_l", T, T, "Lee")])
        .await;
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM inbox WHERE event_key = $1")
            .bind(&ids[0])
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("id"));
    assert!(user_row(&app.pool, "user_l").await.is_some());
    app.stop().await;
}

#[tokio::test]
async fn rows_acknowledged_while_no_applier_runs_are_applied_once_one_starts() {
    let (cluster, name) = shared_database().await;
    let idle = spawn_app_with_applier(cluster, &name, false).await;
    idle.send(&user_event("created", "user_m", T, T, "Em")).await;
    idle.send(&org_event("created", "org_m", T, T, "Org")).await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE status = 'pending'")
        .fetch_one(&idle.pool)
        .await
        .unwrap();
    assert_eq!(pending, 2);
    idle.stop().await;
    let app = spawn_app_with_applier(cluster, &name, true).await;
    app.wait_until_applied().await;
    assert!(user_row(&app.pool, "user_m").await.is_some());
    assert!(org_row(&app.pool, "org_m").await.is_some());
    app.stop().await;
}

async fn spawn_app_with_applier(cluster: &clerk_mirror::pg::Cluster, name: &str, applier: bool) -> TestApp {
    spawn_app_on(cluster, name, |c| {
        if !applier {
            c.applier = None;
        }
    })
    .await
}

#[tokio::test]
async fn the_applier_wakes_on_insert_not_by_polling() {
    // With the fallback poll an hour away, only the inbox notification can wake it in time.
    let app = spawn_app_with(|c| {
        c.applier.as_mut().expect("an applier").idle_poll = std::time::Duration::from_secs(3600);
    })
    .await;
    // Let it catch up and go idle first.
    wait_for_lock_holder(&app.pool, None).await;
    app.send_all_and_apply(&[user_event("created", "user_w", T, T, "Wake")])
        .await;
    assert!(user_row(&app.pool, "user_w").await.is_some());
    app.stop().await;
}

#[tokio::test]
async fn changes_are_announced_on_the_changes_channel() {
    let app = spawn_app().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool).await.unwrap();
    listener.listen(clerk_mirror::db::CHANGES_CHANNEL).await.unwrap();
    app.send(&user_event("created", "user_n", T, T, "En")).await;
    let note = tokio::time::timeout(std::time::Duration::from_secs(30), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(note.payload(), "", "the notification is a wake-up only");
    app.stop().await;
}

// ---- every order of a story ends in the same state ------------------------------------------

/// The story over two users, one organization and two memberships (ids suffixed per run).
fn story(s: &str) -> Vec<String> {
    let (u1, u2, o, m1, m2) = (
        format!("user_1{s}"),
        format!("user_2{s}"),
        format!("org_{s}"),
        format!("orgmem_1{s}"),
        format!("orgmem_2{s}"),
    );
    vec![
        user_event("created", &u1, T, T, "Ada"),
        user_event("created", &u2, T + 1, T + 1, "Bob"),
        user_event("updated", &u1, T + 10, T + 10, "Ada two"),
        // A pair with equal updated_at: the later envelope wins.
        user_event("updated", &u1, T + 10, T + 11, "Ada three"),
        org_event("created", &o, T + 2, T + 2, "Org"),
        org_event("updated", &o, T + 20, T + 20, "Org renamed"),
        membership_event("created", &m1, &o, &u1, T + 3, T + 3, "org:admin"),
        membership_event("created", &m2, &o, &u2, T + 4, T + 4, "org:member"),
        // A role change; m1 is then left alone until the organization goes.
        membership_event("updated", &m1, &o, &u1, T + 30, T + 30, "org:member"),
        membership_event("deleted", &m2, &o, &u2, T + 4, T + 50, "org:member"),
        org_deleted(&o, T + 90),
        user_deleted(&u2, T + 100),
    ]
}

/// A tiny deterministic generator (xorshift64*), so failures reproduce from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The projections of one run, as JSON with the run's suffix taken out.
async fn snapshot(pool: &PgPool, s: &str) -> String {
    let ids = [
        format!("user_1{s}"),
        format!("user_2{s}"),
        format!("org_{s}"),
        format!("orgmem_1{s}"),
        format!("orgmem_2{s}"),
    ];
    let mut out = BTreeMap::new();
    out.insert("u1", serde_json::to_value(user_row(pool, &ids[0]).await).unwrap());
    out.insert("u2", serde_json::to_value(user_row(pool, &ids[1]).await).unwrap());
    out.insert("o", serde_json::to_value(org_row(pool, &ids[2]).await).unwrap());
    out.insert("m1", serde_json::to_value(membership_row(pool, &ids[3]).await).unwrap());
    out.insert("m2", serde_json::to_value(membership_row(pool, &ids[4]).await).unwrap());
    out.insert("e1", serde_json::to_value(emails_of(pool, &ids[0]).await).unwrap());
    out.insert("e2", serde_json::to_value(emails_of(pool, &ids[1]).await).unwrap());
    serde_json::to_string(&out).unwrap().replace(s, "")
}

/// Replays a run's changes entity by entity: each change's `previous` is the state before it,
/// no change repeats the state it replaces, and the last state is the projection.
pub async fn check_changes_replay_to_the_projections(pool: &PgPool, all: &[ChangeRow], s: &str) -> usize {
    let log: Vec<&ChangeRow> = all.iter().filter(|c| c.entity_id.ends_with(s)).collect();
    let mut state: BTreeMap<String, Value> = BTreeMap::new();
    for c in log.iter().copied() {
        let before = state.get(&c.entity_id);
        assert_eq!(
            c.previous.as_ref(),
            before,
            "run {s}: change {} has the wrong previous state",
            c.seq
        );
        assert_ne!(Some(&c.state), before, "run {s}: change {} changes nothing", c.seq);
        state.insert(c.entity_id.clone(), c.state.clone());
    }
    for (id, last) in &state {
        let kind = match id {
            _ if id.starts_with("csub_item") => "item",
            _ if id.starts_with("pa_") => "attempt",
            _ => &id[..4],
        };
        let stored = match kind {
            "user" => serde_json::to_value(user_row(pool, id).await.unwrap()).unwrap(),
            "org_" => serde_json::to_value(org_row(pool, id).await.unwrap()).unwrap(),
            "role" => serde_json::to_value(row::<RoleRecord>(pool, "roles", id).await.unwrap()).unwrap(),
            "perm" => serde_json::to_value(row::<PermissionRecord>(pool, "permissions", id).await.unwrap()).unwrap(),
            "orgd" => serde_json::to_value(row::<DomainRecord>(pool, "domains", id).await.unwrap()).unwrap(),
            "orgi" => serde_json::to_value(row::<InvitationRecord>(pool, "invitations", id).await.unwrap()).unwrap(),
            "item" => serde_json::to_value(row::<SubscriptionItemRecord>(pool, "subscription_items", id).await.unwrap())
                .unwrap(),
            "csub" => serde_json::to_value(row::<SubscriptionRecord>(pool, "subscriptions", id).await.unwrap()).unwrap(),
            "attempt" => serde_json::to_value(
                row::<clerk_mirror::store::PaymentAttemptRecord>(pool, "payment_attempts", id).await.unwrap(),
            )
            .unwrap(),
            _ => serde_json::to_value(membership_row(pool, id).await.unwrap()).unwrap(),
        };
        assert_eq!(
            &stored, last,
            "run {s}: the changes of {id} do not end in its projection"
        );
    }
    log.len()
}

pub async fn insert_inbox(conn: &mut PgConnection, key: &str, body: &str) {
    let envelope = clerk_mirror::inbox::envelope::parse(body.as_bytes()).unwrap();
    sqlx::query(
        "INSERT INTO inbox (source, event_key, event_type, event_time, body) VALUES ('webhook', $1, $2, $3, $4)
         ON CONFLICT (source, event_key) DO NOTHING",
    )
    .bind(key)
    .bind(envelope.event_type)
    .bind(envelope.event_time)
    .bind(body.as_bytes())
    .execute(conn)
    .await
    .unwrap();
}

/// Applies `runs` copies of a story (run `n`'s ids suffixed `{prefix}{n}`): run 0 in its natural
/// order, applied alone (the reference); every other shuffled, with random duplicates (Svix
/// redeliveries under the same svix-id, and the same content under another id: a replay), and
/// batch boundaries varied (some runs alone in small batches, others piled up).
async fn apply_in_random_orders(
    conn: &mut PgConnection,
    runs: usize,
    seed: u64,
    prefix: &str,
    story: fn(&str) -> Vec<String>,
) {
    let mut rng = Rng(seed);
    for run in 0..runs {
        let s = format!("{prefix}{run}");
        let events = story(&s);
        let mut order: Vec<usize> = (0..events.len()).collect();
        if run > 0 {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            for _ in 0..rng.below(4) {
                let i = rng.below(events.len());
                order.insert(rng.below(order.len() + 1), i + if rng.below(2) == 0 { 0 } else { 100 });
            }
        }
        for i in order {
            let (key, body) = if i >= 100 {
                (format!("msg{s}_{}_replay", i - 100), &events[i - 100])
            } else {
                (format!("msg{s}_{i}"), &events[i])
            };
            insert_inbox(conn, &key, body).await;
        }
        if run % 3 != 1 {
            applier::drain(conn, 1 + rng.below(12) as i64).await.unwrap();
        }
    }
    applier::drain(conn, 500).await.unwrap();
}

#[tokio::test]
async fn every_order_of_the_story_with_duplicates_ends_in_the_same_state_with_only_effective_changes() {
    let (cluster, name) = shared_database().await;
    let pool = PgPool::connect_with(cluster.connect_options(&name)).await.unwrap();
    let mut conn = PgConnection::connect_with(&cluster.connect_options(&name))
        .await
        .unwrap();
    const RUNS: usize = 320;
    let seed = 0x5eed_1234_u64;
    apply_in_random_orders(&mut conn, RUNS, seed, "_r", story).await;

    let reference = snapshot(&pool, "_r0").await;
    assert!(reference.contains("Ada three"), "{reference}");
    let all = changes(&pool).await;
    let reference_changes = check_changes_replay_to_the_projections(&pool, &all, "_r0").await;
    assert_eq!(reference_changes, 13);
    for run in 1..RUNS {
        let s = format!("_r{run}");
        assert_eq!(
            snapshot(&pool, &s).await,
            reference,
            "run {run} (seed {seed:#x}) ended elsewhere"
        );
        check_changes_replay_to_the_projections(&pool, &all, &s).await;
    }
    // Gap-free, strictly increasing seq, and the head agrees.
    let (count, min, max, head): (i64, i64, i64, i64) =
        sqlx::query_as("SELECT count(*), min(seq), max(seq), (SELECT head_seq FROM log_head) FROM changes")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((min, max, head), (1, count, count));
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE status <> 'applied'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(failed, 0);
    pool.close().await;
}

/// A story of roles and permissions: keys renamed, a tie on `updated_at`, a permission and a
/// role deleted (and an update after the delete), a role whose `updated_at` is before its
/// `created_at`.
fn role_story(s: &str) -> Vec<String> {
    let (p1, p2, r1, r2) = (format!("perm_1{s}"), format!("perm_2{s}"), format!("role_1{s}"), format!("role_2{s}"));
    vec![
        permission_event("created", &p1, "org:a:read", T, T),
        permission_event("created", &p2, "org:b:read", T + 1, T + 1),
        role_event("created", &r1, "org:one", T + 2, T + 2, &[(&p1, "org:a:read")]),
        role_event("updated", &r1, "org:one", T + 10, T + 10, &[(&p1, "org:a:read"), (&p2, "org:b:read")]),
        // Equal updated_at: the later envelope wins.
        role_event("updated", &r1, "org:uno", T + 10, T + 11, &[(&p2, "org:b:read")]),
        permission_event("updated", &p1, "org:a:write", T + 20, T + 20),
        permission_deleted(&p2, T + 30),
        permission_event("updated", &p2, "org:b:late", T + 50, T + 50),
        role_event("created", &r2, "org:two", T - 5, T + 3, &[(&p1, "org:a:read")]),
        role_deleted(&r2, T + 40),
    ]
}

#[tokio::test]
async fn every_order_of_a_role_and_permission_story_with_duplicates_ends_in_the_same_state() {
    let (cluster, name) = shared_database().await;
    let pool = PgPool::connect_with(cluster.connect_options(&name)).await.unwrap();
    let mut conn = PgConnection::connect_with(&cluster.connect_options(&name))
        .await
        .unwrap();
    const RUNS: usize = 120;
    let seed = 0x0012_0e5e_u64;
    apply_in_random_orders(&mut conn, RUNS, seed, "_q", role_story).await;
    let state = |s: String| {
        let pool = pool.clone();
        async move {
            let rows: Vec<(String, Option<String>, Option<bool>, Value)> = sqlx::query_as(
                "SELECT id, key, deleted_at IS NOT NULL, to_jsonb(r) - 'update_cursor' - 'version_key' - 'version_event_ms' - 'version_updated_ms' FROM role_view r WHERE id LIKE '%' || $1
                 UNION ALL
                 SELECT id, key, deleted_at IS NOT NULL, to_jsonb(p) - 'update_cursor' - 'version_key' - 'version_event_ms' - 'version_updated_ms' FROM permissions p WHERE id LIKE '%' || $1
                 ORDER BY 1",
            )
            .bind(&s)
            .fetch_all(&pool)
            .await
            .unwrap();
            serde_json::to_string(&rows).unwrap().replace(&s, "")
        }
    };
    let reference = state("_q0".into()).await;
    let rows: Vec<(String, Option<String>, Option<bool>, Value)> = serde_json::from_str(&reference).unwrap();
    let summary: Vec<(&str, Option<&str>, Option<bool>)> =
        rows.iter().map(|(id, key, deleted, _)| (id.as_str(), key.as_deref(), *deleted)).collect();
    assert_eq!(
        summary,
        [
            ("perm_1", Some("org:a:write"), Some(false)),
            // Deleted, then an update with a newer version: the tombstone learns its key.
            ("perm_2", Some("org:b:late"), Some(true)),
            ("role_1", Some("org:uno"), Some(false)),
            ("role_2", Some("org:two"), Some(true)),
        ],
        "{reference}"
    );
    assert_eq!(rows[2].3["permissions"], serde_json::json!([]), "role_1's only permission was deleted");
    let all = changes(&pool).await;
    check_changes_replay_to_the_projections(&pool, &all, "_q0").await;
    for run in 1..RUNS {
        let s = format!("_q{run}");
        assert_eq!(state(s.clone()).await, reference, "run {run} (seed {seed:#x}) ended elsewhere");
        check_changes_replay_to_the_projections(&pool, &all, &s).await;
    }
    pool.close().await;
}

/// A story of domains: one verified by an update, one deleted before its create arrives (its
/// delete names no organization), and the organization's delete ending the rest.
/// Applies `story` in `runs` random orders (runs `{prefix}0`, `{prefix}1`, …) and checks that
/// every run ends in run 0's rows of `table` and that each run's changes replay to its
/// projections; run 0's rows (suffix removed), parsed and as text, for the caller's assertions.
async fn every_order_ends_alike(
    table: &str,
    runs: usize,
    seed: u64,
    prefix: &str,
    story: fn(&str) -> Vec<String>,
) -> (Vec<(String, Value)>, String) {
    let (cluster, name) = shared_database().await;
    let pool = PgPool::connect_with(cluster.connect_options(&name)).await.unwrap();
    let mut conn = PgConnection::connect_with(&cluster.connect_options(&name))
        .await
        .unwrap();
    apply_in_random_orders(&mut conn, runs, seed, prefix, story).await;
    let reference = state_of(&pool, table, format!("{prefix}0")).await;
    let all = changes(&pool).await;
    for run in 0..runs {
        let s = format!("{prefix}{run}");
        assert_eq!(state_of(&pool, table, s.clone()).await, reference, "run {run} (seed {seed:#x}) ended elsewhere");
        check_changes_replay_to_the_projections(&pool, &all, &s).await;
    }
    pool.close().await;
    (serde_json::from_str(&reference).unwrap(), reference)
}

/// The rows of `table` whose ids end in run suffix `s`, as JSON without the suffix and without
/// what differs between runs (versions, cursors): equal for runs that ended in the same state.
async fn state_of(pool: &PgPool, table: &str, s: String) -> String {
    let rows: Vec<(String, Value)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, to_jsonb(t) - 'update_cursor' - 'version_key' - 'version_event_ms' - 'version_updated_ms'
           FROM {table} t WHERE id LIKE '%' || $1 ORDER BY id"
    )))
    .bind(&s)
    .fetch_all(pool)
    .await
    .unwrap();
    serde_json::to_string(&rows).unwrap().replace(&s, "")
}

fn domain_story(s: &str) -> Vec<String> {
    let (o, d1, d2, d3) = (format!("org_{s}"), format!("orgdmn_1{s}"), format!("orgdmn_2{s}"), format!("orgdmn_3{s}"));
    vec![
        org_event("created", &o, T, T, "Org"),
        domain_event("created", &d1, &o, "one.example", Some("unverified"), T + 1),
        domain_event("updated", &d1, &o, "one.example", Some("verified"), T + 5),
        domain_event("created", &d2, &o, "two.example", None, T + 2),
        domain_deleted(&d2, T + 6),
        domain_event("created", &d3, &o, "three.example", Some("verified"), T + 3),
        org_deleted(&o, T + 9),
    ]
}

#[tokio::test]
async fn every_order_of_a_domain_story_with_duplicates_ends_in_the_same_state() {
    let (rows, reference) = every_order_ends_alike("domains", 80, 0x00d0_a1b5, "_d", domain_story).await;
    let summary: Vec<(&str, &Value, bool)> = rows
        .iter()
        .map(|(id, r)| (id.as_str(), &r["organization_id"], r["deleted_at"].is_string()))
        .collect();
    let org = Value::from("org_");
    assert_eq!(summary, [("orgdmn_1", &org, true), ("orgdmn_2", &org, true), ("orgdmn_3", &org, true)], "{reference}");
}

/// A story of subscription items: the default plan's item cycling ended → upcoming → active
/// (one id, never deleted; its end also carried by a subscription event), a paid item canceled
/// after `pastDue` and `past_due` spellings of one older event.
fn subscription_item_story(s: &str) -> Vec<String> {
    let (free, paid) = (format!("csub_item_free{s}"), format!("csub_item_paid{s}"));
    let org = format!("org_{s}");
    vec![
        subscription_item_event("active", &free, "active", &org, "", T),
        subscription_item_event("ended", &free, "ended", &org, "", T + 3),
        // The same end, carried by the subscription's own event (a tie on `updated_at`).
        subscription_event("updated", &format!("csub{s}"), &org, &[(&free, "ended", T + 3)], T + 3),
        subscription_item_event("upcoming", &free, "upcoming", &org, "", T + 4),
        subscription_item_event("active", &free, "active", &org, "", T + 6),
        subscription_item_event("active", &paid, "active", "", "user_1", T + 1),
        subscription_item_event("pastDue", &paid, "past_due", "", "user_1", T + 2),
        subscription_item_event("past_due", &paid, "past_due", "", "user_1", T + 2),
        subscription_item_event("canceled", &paid, "canceled", "", "user_1", T + 5),
    ]
}

#[tokio::test]
async fn every_order_of_a_subscription_item_story_with_duplicates_ends_in_the_same_state() {
    let (rows, reference) =
        every_order_ends_alike("subscription_items", 60, 0x0b11_1196, "_s", subscription_item_story).await;
    let summary: Vec<(&str, &Value, &Value)> = rows.iter().map(|(id, r)| (id.as_str(), &r["status"], &r["deleted_at"])).collect();
    assert_eq!(
        summary,
        [
            ("csub_item_free", &Value::from("active"), &Value::Null),
            ("csub_item_paid", &Value::from("canceled"), &Value::Null)
        ],
        "{reference}"
    );
}

/// A story of a subscription and its payments: created, past due at a first payment whose
/// attempt failed and then was paid, active again at a second payment still pending; each
/// payment's attempts by their own `updated_at`.
fn subscription_payment_story(s: &str) -> Vec<String> {
    let (org, sub) = (format!("org_{s}"), format!("csub{s}"));
    let with_payment = |kind: &str, item_status: &str, at: i64, payment: &str| {
        subscription_event(kind, &sub, &org, &[(&format!("csub_item{s}"), item_status, at)], at)
            .replace(r#""latest_payment_id":null"#, &format!(r#""latest_payment_id":"{payment}{s}""#))
    };
    let attempt = |kind: &str, id: &str, payment: &str, status: &str, at: i64| {
        crate::billing::payment_attempt_event(kind, &format!("{id}{s}"), &format!("{payment}{s}"), &org, status, at)
    };
    vec![
        subscription_event("created", &sub, &org, &[(&format!("csub_item{s}"), "active", T)], T),
        with_payment("pastDue", "past_due", T + 2, "cpa_1"),
        attempt("created", "pa_1", "cpa_1", "failed", T + 2),
        attempt("updated", "pa_1", "cpa_1", "paid", T + 3),
        with_payment("active", "active", T + 4, "cpa_2"),
        with_payment("past_due", "past_due", T + 2, "cpa_1"),
        attempt("created", "pa_2", "cpa_2", "pending", T + 4),
    ]
}

#[tokio::test]
async fn every_order_of_a_subscription_and_its_payments_ends_in_the_same_state() {
    for table in ["subscriptions", "payment_attempts", "subscription_items"] {
        let (rows, reference) = every_order_ends_alike(table, 30, 0x5ab_9a7, "_p", subscription_payment_story).await;
        let summary: Vec<(&str, &Value)> = rows.iter().map(|(id, r)| (id.as_str(), &r["status"])).collect();
        let want: Vec<(&str, Value)> = match table {
            "subscriptions" => vec![("csub", "active".into())],
            "payment_attempts" => vec![("pa_1", "paid".into()), ("pa_2", "pending".into())],
            _ => vec![("csub_item", "active".into())],
        };
        let want: Vec<(&str, &Value)> = want.iter().map(|(id, v)| (*id, v)).collect();
        assert_eq!(summary, want, "{table}: {reference}");
        if table == "subscriptions" {
            assert_eq!(rows[0].1["latest_payment_id"], "cpa_2", "{reference}");
        }
    }
}

/// A story of invitations: accepted (its webhook dated before the pending one's), revoked,
/// two past their expiry (one answered by Clerk, one not), one with no expiry, and an
/// organization's delete ending the invitations it held.
fn invitation_story(s: &str) -> Vec<String> {
    let (a, b) = (format!("org_a{s}"), format!("org_b{s}"));
    let i = |n: u8| format!("orginv_{n}{s}");
    let past = Some(T);
    let future = Some(T + 100_000 * 86_400_000);
    vec![
        org_event("created", &a, T, T, "A"),
        org_event("created", &b, T, T, "B"),
        invitation_event("created", &i(1), &a, "one@example.com", future, T + 10),
        invitation_event("accepted", &i(1), &a, "one@example.com", future, T + 5),
        invitation_event("created", &i(2), &a, "two@example.com", None, T + 10),
        invitation_event("revoked", &i(2), &a, "two@example.com", None, T + 12),
        invitation_event("created", &i(3), &a, "three@example.com", past, T + 10),
        invitation_event("created", &i(4), &a, "four@example.com", past, T + 10),
        invitation_event("revoked", &i(4), &a, "four@example.com", past, T + 11),
        invitation_event("created", &i(5), &b, "five@example.com", future, T + 10),
        invitation_event("accepted", &i(5), &b, "five@example.com", future, T + 11),
        org_deleted(&b, T + 20),
    ]
}

#[tokio::test]
async fn every_order_of_an_invitation_story_with_duplicates_and_expiries_ends_in_the_same_state() {
    let (cluster, name) = shared_database().await;
    let pool = PgPool::connect_with(cluster.connect_options(&name)).await.unwrap();
    let mut conn = PgConnection::connect_with(&cluster.connect_options(&name))
        .await
        .unwrap();
    const RUNS: usize = 60;
    let seed = 0x1a71_7e5_u64;
    apply_in_random_orders(&mut conn, RUNS, seed, "_i", invitation_story).await;
    // The mirror's expiries, as the lock holder produces them: then every run is alike.
    let swept = clerk_mirror::applier::expiry::sweep(&mut conn).await.unwrap();
    assert_eq!(swept.stored, RUNS, "one expiry per run (orginv_3)");
    applier::drain(&mut conn, 500).await.unwrap();
    assert_eq!(clerk_mirror::applier::expiry::sweep(&mut conn).await.unwrap().stored, 0);
    let state = |s: String| {
        let pool = pool.clone();
        async move {
            let rows: Vec<(String, Value)> = sqlx::query_as(
                "SELECT id, to_jsonb(i) - 'update_cursor' - 'version_key' - 'version_event_ms' - 'version_updated_ms'
                   FROM invitations i WHERE id LIKE '%' || $1 ORDER BY id",
            )
            .bind(&s)
            .fetch_all(&pool)
            .await
            .unwrap();
            serde_json::to_string(&rows).unwrap().replace(&s, "")
        }
    };
    let reference = state("_i0".into()).await;
    let rows: Vec<(String, Value)> = serde_json::from_str(&reference).unwrap();
    let summary: Vec<(&str, &Value, bool)> = rows
        .iter()
        .map(|(id, r)| (id.as_str(), &r["status"], r["deleted_at"].is_string()))
        .collect();
    let (accepted, revoked, expired) = (Value::from("accepted"), Value::from("revoked"), Value::from("expired"));
    assert_eq!(
        summary,
        [
            ("orginv_1", &accepted, false),
            ("orginv_2", &revoked, false),
            ("orginv_3", &expired, false),
            ("orginv_4", &revoked, false),
            ("orginv_5", &Value::Null, true)
        ],
        "{reference}"
    );
    assert!(!reference.contains("tkn_"), "{reference}");
    let all = changes(&pool).await;
    for run in 0..RUNS {
        let s = format!("_i{run}");
        assert_eq!(state(s.clone()).await, reference, "run {run} (seed {seed:#x}) ended elsewhere");
        check_changes_replay_to_the_projections(&pool, &all, &s).await;
    }
    pool.close().await;
}

// ---- one writer, and another takes over when it dies ---------------------------------------

/// The OS pid of the process holding the applier lock, if any.
async fn lock_holder(pool: &PgPool) -> Option<u32> {
    let name: Option<String> = sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted AND l.objid = $1",
    )
    .bind(clerk_mirror::db::APPLIER_LOCK_KEY as i32)
    .fetch_optional(pool)
    .await
    .unwrap();
    name?.rsplit(' ').next()?.split('@').next()?.parse().ok()
}

async fn wait_for_lock_holder(pool: &PgPool, not: Option<u32>) -> u32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(pid) = lock_holder(pool).await
            && Some(pid) != not
        {
            return pid;
        }
        assert!(std::time::Instant::now() < deadline, "no replica took the applier lock");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn killing_the_lock_holder_lets_another_replica_take_over_with_nothing_lost_or_applied_twice() {
    use crate::process::Served;
    let (cluster, name) = shared_database().await;
    let pool = PgPool::connect_with(cluster.connect_options(&name)).await.unwrap();
    let args = crate::process::serve_args(cluster, &name);
    let a = Served::start(&args).await;
    let b = Served::start(&args).await;
    let holder = wait_for_lock_holder(&pool, None).await;
    let (leader, follower) = if a.child.id() == Some(holder) { (a, b) } else { (b, a) };
    assert_eq!(leader.child.id(), Some(holder));
    // A watcher on each replica, from the start of the log.
    let watch_on = |addr: String| async move {
        let mut c = clerk_mirror::pb::watch_service_client::WatchServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        c.watch_changes(clerk_mirror::pb::WatchChangesRequest::default())
            .await
            .unwrap()
            .into_inner()
    };
    let follower_progress = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let on_leader = tokio::spawn(collect_changes(
        watch_on(leader.grpc_addr.clone()).await,
        Default::default(),
    ));
    let on_follower = tokio::spawn(collect_changes(
        watch_on(follower.grpc_addr.clone()).await,
        follower_progress.clone(),
    ));

    let mut acked = 0;
    for i in 0..60 {
        let target = if i % 2 == 0 { &leader } else { &follower };
        let body = user_event("created", &format!("user_t{i}"), T, T, "Tee");
        if target.send_as(&format!("msg_t{i}"), &body).await.status == hyper::StatusCode::OK {
            acked += 1;
        }
    }
    // The leader dies without any cleanup, possibly in the middle of a batch.
    leader.kill().await;
    wait_for_lock_holder(&pool, Some(holder)).await;
    for i in 60..120 {
        let body = user_event("created", &format!("user_t{i}"), T, T, "Tee");
        assert_eq!(
            follower.send_as(&format!("msg_t{i}"), &body).await.status,
            hyper::StatusCode::OK
        );
        acked += 1;
    }
    wait_until_applied(&pool).await;
    // The follower's watcher survived the leader's death and saw every change once, in order.
    let head: i64 = sqlx::query_scalar("SELECT head_seq FROM log_head")
        .fetch_one(&pool)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while follower_progress.load(std::sync::atomic::Ordering::SeqCst) < head {
        assert!(std::time::Instant::now() < deadline, "the follower's watcher stalled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    follower.terminate().await;
    let seen_on_follower = on_follower.await.unwrap();
    assert_eq!(seen_on_follower, (1..=head).collect::<Vec<_>>());
    // The leader's watcher saw a gap-free prefix until its server died.
    let seen_on_leader = on_leader.await.unwrap();
    assert_eq!(seen_on_leader, (1..=seen_on_leader.len() as i64).collect::<Vec<_>>());

    let (stored, applied): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE status = 'applied') FROM inbox")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, applied);
    assert!(stored >= acked, "an acknowledged webhook was lost");
    let (changes, users, min, max, head): (i64, i64, Option<i64>, Option<i64>, i64) = sqlx::query_as(
        "SELECT count(*), (SELECT count(*) FROM users), min(seq), max(seq), (SELECT head_seq FROM log_head) FROM changes",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // Each event made exactly one user and one change: nothing applied twice, seq gap-free.
    assert_eq!((changes, users), (stored, stored));
    assert_eq!((min, max, head), (Some(1), Some(changes), changes));
    pool.close().await;
}

/// The seqs of the changes a stream delivers until it ends (for whatever reason); `progress`
/// holds the last one.
async fn collect_changes(
    mut stream: tonic::codec::Streaming<clerk_mirror::pb::WatchChangesResponse>,
    progress: std::sync::Arc<std::sync::atomic::AtomicI64>,
) -> Vec<i64> {
    use clerk_mirror::pb::watch_changes_response::Event;
    let mut seqs = Vec::new();
    while let Ok(Some(m)) = stream.message().await {
        if let Some(Event::Change(c)) = m.event {
            let seq = clerk_mirror::grpc::cursor::Cursor::decode(&c.cursor).unwrap().seq;
            seqs.push(seq);
            progress.store(seq, std::sync::atomic::Ordering::SeqCst);
        }
    }
    seqs
}

#[tokio::test]
async fn a_listener_is_drained_of_every_notification_already_sent_without_waiting_for_more() {
    let app = spawn_app().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool).await.unwrap();
    listener.listen("drain_test").await.unwrap();
    // Nothing sent yet: it returns at once, with none.
    assert_eq!(clerk_mirror::db::drain_notifications(&mut listener).unwrap(), Some(0));
    sqlx::query("SELECT pg_notify('drain_test', g::text) FROM generate_series(1, 500) g")
        .execute(&app.pool)
        .await
        .unwrap();
    // The first is waited for; the others come in the same burst or just after it.
    listener.recv().await.unwrap();
    let mut taken = 1;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while taken < 500 {
        taken += clerk_mirror::db::drain_notifications(&mut listener).unwrap().unwrap();
        assert!(std::time::Instant::now() < deadline, "drained {taken} of 500 notifications");
        // Lets the runtime see the socket's new data.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(taken, 500, "each notification once");
    assert_eq!(clerk_mirror::db::drain_notifications(&mut listener).unwrap(), Some(0));
}

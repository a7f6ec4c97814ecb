//! Property tests of the applier against PostgreSQL: for any sequence of verified events (well
//! formed, reordered, redelivered, or with any field replaced by any JSON), every inbox row ends
//! applied, skipped or dead-lettered with its error; the change log stays gap-free; and each
//! entity's changes replay to its projection.

use clerk_mirror::applier;
use clerk_mirror::applier::event::APPLIED_TYPES;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};

use crate::applier::{changes, check_changes_replay_to_the_projections, insert_inbox};
use crate::events::*;
use crate::helpers::*;

/// One generated event: which kind, of which ids, at which times, maybe with a field replaced.
#[derive(Debug, Clone)]
struct Step {
    kind: usize,
    id: usize,
    org: usize,
    user: usize,
    updated: i64,
    sent: i64,
    name: String,
    replaced: Option<(&'static str, Value)>,
    /// Also delivered again under the same svix-id (a Svix retry).
    redelivered: bool,
}

/// The type of kind `k`: each applied type, and one the mirror skips.
fn kind(k: usize) -> &'static str {
    APPLIED_TYPES.get(k).copied().unwrap_or("session.created")
}

const FIELDS: [&str; 12] = [
    "id",
    "updated_at",
    "email_addresses",
    "organization",
    "public_user_data",
    "public_metadata",
    "first_name",
    "slug",
    "role",
    "external_id",
    "key",
    "permissions",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
        "(user|org)_[0-9a-z/é]{0,3}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("(id|user_id|name|[a-z]{1,3})", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn step() -> impl Strategy<Value = Step> {
    (
        (
            0..=APPLIED_TYPES.len(),
            0..3usize,
            0..2usize,
            0..3usize,
            0..4i64,
            0..4i64,
        ),
        ".{0,6}",
        proptest::option::weighted(0.25, (proptest::sample::select(&FIELDS[..]), any_json())),
        proptest::bool::weighted(0.15),
    )
        .prop_map(
            |((kind, id, org, user, updated, sent), name, replaced, redelivered)| Step {
                kind,
                id,
                org,
                user,
                updated,
                sent,
                name,
                replaced,
                redelivered,
            },
        )
}

impl Step {
    /// The event's body, its ids suffixed with `s` (one run's own entities).
    fn body(&self, s: &str) -> String {
        let (user, org) = (format!("user_{}{s}", self.user), format!("org_{}{s}", self.org));
        let (updated, sent) = (T + self.updated, T + self.sent);
        let kind = kind(self.kind);
        let mut data = match kind.split('.').next().unwrap() {
            "user" => crate::events::user(&format!("user_{}{s}", self.id), updated, &self.name),
            "organization" => crate::events::org(&format!("org_{}{s}", self.id), updated, &self.name),
            "organizationMembership" => {
                membership(&format!("orgmem_{}{s}", self.id), &org, &user, updated, "org:member")
            }
            "role" => crate::events::role(
                &format!("role_{}{s}", self.id),
                &format!("org:{}", self.name),
                updated,
                &[(&format!("perm_{}{s}", self.org), "org:x:read")],
            ),
            "organizationDomain" => crate::events::domain(
                &format!("orgdmn_{}{s}", self.id),
                &org,
                &format!("{}.example", self.name),
                Some("verified"),
                updated,
            ),
            "permission" => crate::events::permission(&format!("perm_{}{s}", self.id), &format!("org:{}:do", self.name), updated),
            _ => json!({"id": format!("sess_{}", self.id), "user_id": user}),
        };
        if let Some((field, value)) = &self.replaced {
            data[*field] = value.clone();
        }
        envelope(kind, sent, data)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_sequence_of_verified_events_ends_each_row_applied_skipped_or_dead_lettered_and_the_log_replays_to_the_projections()
 {
    let (cluster, name) = shared_database().await;
    let pool = PgPool::connect_with(cluster.connect_options(&name)).await.unwrap();
    let conn = PgConnection::connect_with(&cluster.connect_options(&name))
        .await
        .unwrap();
    let conn = tokio::sync::Mutex::new(conn);
    let handle = tokio::runtime::Handle::current();
    let run = std::sync::atomic::AtomicUsize::new(0);

    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (proptest::collection::vec(step(), 1..30), 1..40i64);
    let result = runner.run(&strategy, |(steps, batch)| {
        let s = format!("_p{}", run.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let mut conn = conn.lock().await;
                for (i, step) in steps.iter().enumerate() {
                    let body = step.body(&s);
                    insert_inbox(&mut conn, &format!("msg{s}_{i}"), &body).await;
                    if step.redelivered {
                        insert_inbox(&mut conn, &format!("msg{s}_{i}"), &body).await;
                    }
                }
                applier::drain(&mut conn, batch)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("the applier failed: {e}")))?;
                check_run(&pool, &s, &steps).await
            })
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator reaches every outcome (else the properties above say little).
    let outcomes: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM inbox GROUP BY status ORDER BY status")
            .fetch_all(&pool)
            .await
            .unwrap();
    let statuses: Vec<&str> = outcomes.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["applied", "failed", "skipped"], "{outcomes:?}");
    let changes = changes(&pool).await.len();
    assert!(changes > 24, "only {changes} changes");
    pool.close().await;
}

/// The invariants, for the run with suffix `s`.
async fn check_run(pool: &PgPool, s: &str, steps: &[Step]) -> Result<(), TestCaseError> {
    let rows: Vec<(String, Option<String>, String, Option<String>)> =
        sqlx::query_as("SELECT event_key, event_type, status, error FROM inbox WHERE event_key LIKE $1 ORDER BY id")
            .bind(format!("msg{s}\\_%"))
            .fetch_all(pool)
            .await
            .unwrap();
    prop_assert_eq!(rows.len(), steps.len(), "one row per delivery id");
    for (key, event_type, status, error) in &rows {
        let applied_type = event_type.as_deref().is_some_and(|t| APPLIED_TYPES.contains(&t));
        match status.as_str() {
            "applied" => prop_assert!(applied_type, "{} applied", key),
            "skipped" => prop_assert!(!applied_type, "{} ({:?}) skipped", key, event_type),
            "failed" => prop_assert!(
                error.as_deref().is_some_and(|e| !e.is_empty()),
                "{} dead-lettered without its error",
                key
            ),
            other => prop_assert!(false, "{} left {}", key, other),
        }
    }
    let (count, max, head): (i64, Option<i64>, i64) =
        sqlx::query_as("SELECT count(*), max(seq), (SELECT head_seq FROM log_head) FROM changes")
            .fetch_one(pool)
            .await
            .unwrap();
    prop_assert_eq!((max.unwrap_or(0), head), (count, count), "the change log has a gap");
    check_changes_replay_to_the_projections(pool, &changes(pool).await, s).await;
    Ok(())
}

//! The connections lent to point reads (`clerk_mirror::lender`): given back only after a read
//! that ended, closed otherwise, and checked after idling so a database restart costs no read.

use std::time::Duration;

use clerk_mirror::lender::Lender;

use crate::helpers::{restart_cluster, start_cluster};

async fn backend(lender: &Lender) -> i32 {
    let mut lent = lender.lend().await.expect("lend");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(lent.connection())
        .await
        .expect("query");
    lent.returned();
    pid
}

#[tokio::test]
async fn a_connection_goes_back_after_its_read_and_one_cut_off_mid_read_is_closed_instead() {
    let (cluster, name) = crate::helpers::shared_database().await;
    let lender = Lender::new(cluster.connect_options(&name), 2, Duration::from_secs(5));
    let first = backend(&lender).await;
    assert_eq!(lender.idle(), 1);
    assert_eq!(backend(&lender).await, first, "the idle connection is lent again");

    // A read dropped half-way (a cancelled request): its connection may hold unread results.
    let mut lent = lender.lend().await.unwrap();
    let cut = tokio::time::timeout(
        Duration::from_millis(50),
        sqlx::query("SELECT pg_sleep(5)").execute(lent.connection()),
    )
    .await;
    assert!(cut.is_err(), "the read was cut off");
    drop(lent);
    assert_eq!(lender.idle(), 0, "a connection cut off mid-read is not given back");
    assert_ne!(backend(&lender).await, first, "the next read gets a new connection");
}

#[tokio::test]
async fn after_a_database_restart_the_next_read_is_answered_on_a_new_connection() {
    let mut cluster = start_cluster("lender-restart").await;
    let lender = Lender::new(cluster.connect_options("postgres"), 2, Duration::from_secs(10))
        .check_after_idle(Duration::ZERO);
    let before = backend(&lender).await;
    cluster.stop().await.expect("stop");
    let mut cluster = restart_cluster(&cluster).await;
    // The idle connection is dead: checked, dropped, and replaced within the same lend.
    assert_ne!(backend(&lender).await, before);
    assert_eq!(lender.idle(), 1);
    cluster.stop().await.expect("stop");
    let _ = std::fs::remove_dir_all(cluster.data_dir());
}

#[tokio::test]
async fn a_lender_that_cannot_connect_fails_with_the_connect_error_and_a_full_one_times_out() {
    let (cluster, name) = crate::helpers::shared_database().await;
    let mut options = cluster.connect_options(&name);
    options = options.database("no_such_database");
    let e = Lender::new(options, 1, Duration::from_secs(5)).lend().await.err().expect("no database");
    assert!(e.to_string().contains("no_such_database"), "{e}");

    let lender = Lender::new(cluster.connect_options(&name), 1, Duration::from_millis(100));
    let _held = lender.lend().await.unwrap();
    let e = lender.lend().await.err().expect("none free");
    assert!(matches!(e, sqlx::Error::PoolTimedOut), "{e:?}");
}

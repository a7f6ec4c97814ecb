//! Supervision: a background task that ends while the server runs stops the server with an error
//! naming it, after the others have drained.

use std::time::Duration;

use clerk_mirror::Application;
use clerk_mirror::ingest::verify::WebhookSecrets;
use tokio::sync::oneshot;

use crate::helpers;

async fn build() -> (Application, sqlx::PgPool, WebhookSecrets) {
    clerk_mirror::telemetry::init_for_tests();
    let (cluster, name) = helpers::shared_database().await;
    let config = helpers::test_config(cluster, &name);
    let secrets = config.webhook_secrets.clone();
    let app = Application::build(config).await.expect("build the app");
    let pool = sqlx::PgPool::connect_with(cluster.connect_options(&name))
        .await
        .expect("connect");
    (app, pool, secrets)
}

#[tokio::test]
async fn a_background_task_that_fails_stops_the_server_with_an_error_naming_it() {
    let (mut app, pool, secrets) = build().await;
    let (fail_tx, fail_rx) = oneshot::channel::<()>();
    app.supervise("test task", |_stop| async move {
        let _ = fail_rx.await;
        anyhow::bail!("the injected failure")
    });
    let http = app.http_addr();
    let grpc = app.grpc_addr();
    let server = tokio::spawn(app.run_until_stopped(std::future::pending()));

    let ready = helpers::get(&format!("http://{http}/readyz")).await;
    assert_eq!(ready.status, 200, "ready before the failure: {}", ready.body);
    // The server works: a webhook is acknowledged and applied.
    let body = helpers::user_created("user_supervised");
    let url = format!("http://{http}/webhooks/clerk");
    let answer = clerk_mirror::cli::send_event::send(&url, &secrets, "msg_supervised", body.as_bytes())
        .await
        .expect("post the webhook");
    assert_eq!(answer.status, 200, "{}", answer.body);
    helpers::wait_until_applied(&pool).await;

    fail_tx.send(()).expect("the task is waiting");
    let result = tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops by itself")
        .expect("join");
    let error = format!("{:#}", result.expect_err("an error exit"));
    assert_eq!(error, "the test task failed: the injected failure; the server stopped");

    // Every port is closed.
    for addr in [http, grpc] {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts"
        );
    }
}

#[tokio::test]
async fn a_background_task_that_panics_stops_the_server_and_a_requested_stop_is_clean() {
    let (mut app, _pool, _) = build().await;
    app.supervise("panicking task", |_stop| async move {
        tokio::task::yield_now().await;
        panic!("the injected panic");
    });
    let result = tokio::time::timeout(Duration::from_secs(30), app.run_until_stopped(std::future::pending()))
        .await
        .expect("the server stops by itself");
    let error = format!("{:#}", result.expect_err("an error exit"));
    assert_eq!(
        error,
        "the panicking task panicked: the injected panic; the server stopped"
    );

    // The same task, well-behaved: it runs until the server is asked to stop.
    let (mut app, _pool, _) = build().await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (seen_tx, seen_rx) = oneshot::channel::<()>();
    app.supervise("patient task", |stop| async move {
        let _ = seen_tx.send(());
        stop.cancelled().await;
        Ok(())
    });
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));
    seen_rx.await.expect("the task started");
    stop_tx.send(()).expect("the server is running");
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops")
        .expect("join")
        .expect("a requested stop is not an error");
}

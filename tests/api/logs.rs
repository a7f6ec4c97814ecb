//! Logs name ids, never people: a server at debug level sees every kind of traffic, and its whole
//! log holds no email address, name, metadata, body or secret.

use clerk_mirror::pb;
use serde_json::json;

use crate::events::*;
use crate::helpers::*;
use crate::process::Served;

#[tokio::test]
async fn a_servers_debug_log_holds_no_email_name_metadata_body_or_secret() {
    let (cluster, name) = shared_database().await;
    let pool = sqlx::PgPool::connect_with(cluster.connect_options(&name))
        .await
        .unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "--database-url".into(),
        cluster.url(&name).into(),
        "--webhook-secret".into(),
        format!("{SECRET},{SECOND_SECRET}").into(),
    ];
    let served = Served::start_logging(&args, "debug,h2=info,hyper=info,tower=info").await;
    let mut person = user("user_private", T, "Zelda");
    person["last_name"] = json!("Quixotica");
    person["email_addresses"] = json!([{"id": "idn_p", "email_address": "zelda.private@example.com"}]);
    person["public_metadata"] = json!({"secret_plan": "moonshot-7"});
    let body = envelope("user.created", T, person);
    assert_eq!(served.send_as("msg_private", &body).await.status, hyper::StatusCode::OK);
    // A rejected one (wrong secret) and a malformed one.
    let bad = clerk_mirror::ingest::verify::WebhookSecrets::parse(&["whsec_plJ3nmyCDGBKInavdOK15jsl"]).unwrap();
    clerk_mirror::send_event::send(
        &format!("http://{}/webhooks/clerk", served.http_addr),
        &bad,
        "msg_bad",
        body.as_bytes(),
    )
    .await
    .unwrap();
    served
        .send_as("msg_notjson", "zelda.private@example.com is not JSON")
        .await;
    served
        .send_as(
            "msg_email",
            &envelope(
                "email.created",
                T,
                json!({"body": "Your code is 424242", "to_email_address": "zelda.private@example.com"}),
            ),
        )
        .await;
    wait_until_applied(&pool).await;
    let grpc = format!("http://{}", served.grpc_addr);
    let mut d = pb::directory_service_client::DirectoryServiceClient::connect(grpc.clone())
        .await
        .unwrap();
    use pb::lookup_user_request::Key;
    d.lookup_user(pb::LookupUserRequest {
        key: Some(Key::Email("zelda.private@example.com".into())),
    })
    .await
    .unwrap();
    let _ = d
        .lookup_user(pb::LookupUserRequest {
            key: Some(Key::Email("nobody.private@example.com".into())),
        })
        .await;
    d.list_users(pb::ListUsersRequest {
        filter: r#"email = "zelda.private@example.com""#.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let _ = d
        .list_users(pb::ListUsersRequest {
            filter: r#"first_name = "Zelda" AND"#.into(),
            ..Default::default()
        })
        .await;
    let mut w = pb::watch_service_client::WatchServiceClient::connect(grpc)
        .await
        .unwrap();
    let request = pb::WatchChangesRequest {
        start: Some(pb::watch_changes_request::Start::StartFromOldest(true)),
        filter: r#"public_metadata.secret_plan = "moonshot-7""#.into(),
        ..Default::default()
    };
    let mut s = w.watch_changes(request).await.unwrap().into_inner();
    s.message().await.unwrap();
    s.message().await.unwrap();
    drop(s);
    let log = served.terminate().await.join("\n");
    assert!(log.contains("msg_private"), "ids are logged: the log is not empty");
    for secret in [
        "zelda.private",
        "nobody.private",
        "Zelda",
        "Quixotica",
        "moonshot",
        "424242",
        SECRET.trim_start_matches("whsec_"),
        SECOND_SECRET.trim_start_matches("whsec_"),
        "whsec_",
    ] {
        let line = log.lines().find(|l| l.contains(secret)).unwrap_or_default();
        assert!(!log.contains(secret), "`{secret}` appears in the server's log: {line}");
    }
    pool.close().await;
}

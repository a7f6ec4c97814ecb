//! Who may read the directory, safe defaults, and bounds.

use clerk_mirror::grpc::auth::{Token, Tokens};
use clerk_mirror::pb;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic_types::StatusExt;

use crate::helpers::*;

const READER: &str = "reader-secret-0123456789";
const ADMIN: &str = "admin-secret-0123456789ab";

fn tokens() -> Tokens {
    Tokens {
        readers: vec![Token::parse(&format!("billing={READER}")).unwrap()],
        admins: vec![Token::parse(&format!("ops={ADMIN}")).unwrap()],
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", MetadataValue::try_from(format!("Bearer {t}")).unwrap());
    }
    request
}

#[tokio::test]
async fn tokens_open_what_they_may_and_nothing_else() {
    let app = spawn_app_with(|c| {
        c.tokens = tokens();
    })
    .await;
    let url = format!("http://{}", app.grpc_addr);
    let mut directory = pb::directory_service_client::DirectoryServiceClient::connect(url.clone())
        .await
        .unwrap();
    let get = |t: Option<&str>| {
        with_token(
            pb::GetUserRequest {
                name: "users/user_1".into(),
                show_deleted: false,
                ..Default::default()
            },
            t,
        )
    };
    for token in [None, Some("wrong-secret-0123456789"), Some("")] {
        let e = directory.get_user(get(token)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{token:?}");
    }
    // A valid token passes (the user does not exist: NOT_FOUND, not UNAUTHENTICATED).
    for token in [READER, ADMIN] {
        assert_eq!(
            directory.get_user(get(Some(token))).await.unwrap_err().code(),
            Code::NotFound
        );
    }
    let mut admin = pb::admin_service_client::AdminServiceClient::connect(url.clone())
        .await
        .unwrap();
    let status = |t: Option<&str>| with_token(pb::GetSyncStatusRequest {}, t);
    assert_eq!(
        admin.get_sync_status(status(None)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        admin.get_sync_status(status(Some(READER))).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(admin.get_sync_status(status(Some(ADMIN))).await.is_ok());
    let mut watch = pb::watch_service_client::WatchServiceClient::connect(url.clone())
        .await
        .unwrap();
    assert_eq!(
        watch
            .watch_changes(with_token(pb::WatchChangesRequest::default(), None))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert!(
        watch
            .watch_changes(with_token(pb::WatchChangesRequest::default(), Some(READER)))
            .await
            .is_ok()
    );
    // Health and reflection stay open.
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    assert!(
        health
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .is_ok()
    );
    // The admin port wants an admin token for everything but liveness.
    let admin_url = format!("http://{}", app.admin_addr);
    assert_eq!(
        get_with(&format!("{admin_url}/metrics"), None).await.status,
        hyper::StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with(&format!("{admin_url}/metrics"), Some(READER)).await.status,
        hyper::StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with(&format!("{admin_url}/metrics"), Some(ADMIN)).await.status,
        hyper::StatusCode::OK
    );
    assert_eq!(
        get_with(&format!("{admin_url}/healthz"), None).await.status,
        hyper::StatusCode::OK
    );
    app.stop().await;
}

async fn get_with(url: &str, token: Option<&str>) -> clerk_mirror::cli::send_event::Response {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut request = hyper::Request::get(url);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let response = client.request(request.body(Empty::new()).unwrap()).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    clerk_mirror::cli::send_event::Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

#[tokio::test]
async fn serving_open_on_a_public_address_is_refused_unless_explicitly_allowed() {
    let (cluster, name) = shared_database().await;
    let secrets = clerk_mirror::ingest::verify::WebhookSecrets::parse(&[SECRET]).unwrap();
    let database = clerk_mirror::config::DatabaseConfig::Options(Box::new(cluster.connect_options(&name)));
    let mut config = clerk_mirror::Config::new(database, secrets);
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.admin_addr = "127.0.0.1:0".parse().unwrap();
    config.grpc_addr = "0.0.0.0:0".parse().unwrap();
    let refused = clerk_mirror::Application::build(config.clone())
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("--allow-unauthenticated"), "{refused}");
    let mut allowed = config.clone();
    allowed.allow_unauthenticated = true;
    assert!(clerk_mirror::Application::build(allowed).await.is_ok());
    let mut guarded = config;
    guarded.tokens = tokens();
    assert!(clerk_mirror::Application::build(guarded).await.is_ok());
}

#[tokio::test]
async fn watchers_past_the_limit_and_oversized_messages_are_refused() {
    let app = spawn_app_with(|c| {
        c.watch.max_streams = 2;
        c.max_message_bytes = 16 * 1024;
    })
    .await;
    let url = format!("http://{}", app.grpc_addr);
    let mut watch = pb::watch_service_client::WatchServiceClient::connect(url.clone())
        .await
        .unwrap();
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = watch
            .watch_changes(pb::WatchChangesRequest::default())
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap();
        open.push(s);
    }
    let e = watch
        .watch_changes(pb::WatchChangesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.get_details_error_info().unwrap().reason.as_str()),
        (Code::ResourceExhausted, "TOO_MANY_WATCHERS")
    );
    drop(open);
    let mut directory = pb::directory_service_client::DirectoryServiceClient::connect(url)
        .await
        .unwrap();
    let names: Vec<String> = (0..400)
        .map(|i| format!("users/user_with_a_rather_long_identifier_{i:06}"))
        .collect();
    let e = directory
        .batch_get_users(pb::BatchGetUsersRequest {
            names,
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted), "{e:?}");
    // Freed slots open again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match watch.watch_changes(pb::WatchChangesRequest::default()).await {
            Ok(_) => break,
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted),
        }
        assert!(std::time::Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn mtls_admits_clients_with_a_certificate_of_the_ca_and_refuses_the_rest() {
    let pki = pki();
    let app = spawn_app_with(|c| {
        c.tls = Some(pki.server_tls(true));
    })
    .await;
    let port = app.grpc_addr.port();
    let get = pb::GetUserRequest {
        name: "users/user_1".into(),
        show_deleted: false,
        ..Default::default()
    };
    // With the client certificate: through (NOT_FOUND: the user does not exist).
    let channel = pki.grpc_channel(port, true).await.unwrap();
    let mut directory = pb::directory_service_client::DirectoryServiceClient::new(channel);
    assert_eq!(
        directory.get_user(get.clone()).await.unwrap_err().code(),
        Code::NotFound
    );
    // Without one: the handshake (or the first call) fails.
    let refused = match pki.grpc_channel(port, false).await {
        Err(_) => true,
        Ok(channel) => pb::directory_service_client::DirectoryServiceClient::new(channel)
            .get_user(get.clone())
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate got through");
    // Plain text: refused too.
    let plain = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(
            pb::directory_service_client::DirectoryServiceClient::new(channel)
                .get_user(get)
                .await
                .is_err()
        );
    }
    // The admin port takes the same certificate and requires the same client CA.
    let metrics = pki.https_get(app.admin_addr, "/metrics", true, None).await.unwrap();
    assert_eq!(metrics.status, hyper::StatusCode::OK);
    assert!(metrics.body.contains("clerk_mirror_"), "{}", metrics.body);
    assert!(
        pki.https_get(app.admin_addr, "/metrics", false, None).await.is_err(),
        "the admin port answered a client without a certificate"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_admin_port_serves_https_with_the_configured_certificate_and_refuses_plain_http() {
    let pki = pki();
    let app = spawn_app_with(|c| {
        c.tls = Some(pki.server_tls(false));
        c.tokens = tokens();
    })
    .await;
    let metrics = pki
        .https_get(app.admin_addr, "/metrics", false, Some(ADMIN))
        .await
        .unwrap();
    assert_eq!(metrics.status, hyper::StatusCode::OK);
    assert!(metrics.body.contains("clerk_mirror_"), "{}", metrics.body);
    // Over TLS the admin token is still required.
    let refused = pki.https_get(app.admin_addr, "/metrics", false, None).await.unwrap();
    assert_eq!(refused.status, hyper::StatusCode::UNAUTHORIZED);
    // Plain HTTP gets no HTTP answer at all (the server reads it as a broken TLS handshake).
    let plain = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        send_plain_get(app.admin_addr, "/healthz"),
    )
    .await
    .expect("the server closes a plain-text connection");
    assert!(!plain.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&plain));
    // The webhook port stays plain HTTP (TLS ends at the proxy in front of it).
    assert_eq!(app.get("/healthz").await.status, hyper::StatusCode::OK);
    app.stop().await;
}

/// Sends a plain-text GET and returns whatever comes back until the server closes.
async fn send_plain_get(addr: std::net::SocketAddr, path: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    // A reset is as good as a close here.
    let _ = stream.read_to_end(&mut answer).await;
    answer
}

#[tokio::test]
async fn requests_with_too_many_or_too_large_headers_get_431_and_store_nothing() {
    let app = spawn_app_with(|c| {
        c.http_limits = clerk_mirror::http_server::HttpLimits {
            max_headers: 20,
            max_header_bytes: 8 * 1024,
            ..Default::default()
        }
    })
    .await;
    let body = user_created("user_h1");
    let signed = |id: &str, extra: Vec<(String, String)>| {
        let mut headers = clerk_mirror::cli::send_event::svix_headers(
            &app.secrets,
            id,
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        )
        .unwrap();
        headers.extend(extra);
        headers
    };
    let many = |n: usize| {
        (0..n)
            .map(|i| (format!("x-extra-{i}"), "1".to_string()))
            .collect::<Vec<_>>()
    };
    let large = |bytes: usize| vec![("x-large".to_string(), "a".repeat(bytes))];
    // hyper answers 431 and closes the connection before any handler runs.
    for (what, headers) in [
        ("too many headers", signed("msg_many", many(20))),
        ("too large a header", signed("msg_large", large(9 * 1024))),
    ] {
        let response = clerk_mirror::cli::send_event::post(&app.webhook_url(), &headers, body.clone().into())
            .await
            .unwrap();
        assert_eq!(
            response.status,
            hyper::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{what}"
        );
    }
    assert_eq!(app.inbox_count().await, 0);
    // Within both bounds: stored.
    let mut fine = many(10);
    fine.extend(large(4 * 1024));
    let response =
        clerk_mirror::cli::send_event::post(&app.webhook_url(), &signed("msg_fine", fine), body.clone().into())
            .await
            .unwrap();
    assert_eq!(response.status, hyper::StatusCode::OK, "{}", response.body);
    assert_eq!(app.inbox_count().await, 1);
    // The admin port has the same bounds.
    let mut request = hyper::Request::get(format!("http://{}/healthz", app.admin_addr));
    for (name, value) in many(30) {
        request = request.header(name, value);
    }
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let response = client.request(request.body(Default::default()).unwrap()).await.unwrap();
    assert_eq!(response.status(), hyper::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    app.stop().await;
}

#[tokio::test]
async fn rpcs_past_the_concurrency_limit_are_shed_at_once_while_health_stays_open() {
    let app = spawn_app_with(|c| {
        c.max_concurrent_rpcs = 1;
    })
    .await;
    let url = format!("http://{}", app.grpc_addr);
    let mut directory = pb::directory_service_client::DirectoryServiceClient::connect(url.clone())
        .await
        .unwrap();
    let get = || pb::GetUserRequest {
        name: "users/user_1".into(),
        show_deleted: false,
        ..Default::default()
    };
    // Hold one RPC in flight: it waits for a lock on `users` the test holds.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut held_client = directory.clone();
    let held = tokio::spawn(async move { held_client.get_user(get()).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass AND NOT granted")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first RPC never reached the database"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The one slot is taken: the next RPC is refused at once, not queued.
    let e = directory.get_user(get()).await.unwrap_err();
    let info = e.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(
        (e.code(), info.reason.as_str(), info.domain.as_str()),
        (Code::ResourceExhausted, "TOO_MANY_REQUESTS", "clerkmirror")
    );
    assert_eq!(info.metadata.get("limit").map(String::as_str), Some("1"));
    // Health never waits for a slot.
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Released: the held RPC finishes (the user does not exist) and the slot serves again.
    lock.rollback().await.unwrap();
    assert_eq!(held.await.unwrap().unwrap_err().code(), Code::NotFound);
    assert_eq!(directory.get_user(get()).await.unwrap_err().code(), Code::NotFound);
    app.stop().await;
}

/// A secret that must never be echoed back.
const LEAKY: &str = "leaky-secret-0123456789abcdef";

/// Runs `clerk-mirror serve` with `args` (and `env`) expecting it to refuse to start; its stderr.
async fn refused_to_serve(args: &[std::ffi::OsString], env: &[(&str, &str)]) -> String {
    let output = tokio::process::Command::new(crate::process::binary())
        .args(["serve", "--webhook-secret", SECRET, "--data-dir"])
        .arg(temp_dir("refused"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("DATABASE_URL")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "serve started: {stderr}");
    stderr
}

#[tokio::test]
async fn tokens_from_files_open_the_api_and_bad_files_are_refused_by_file_and_line() {
    let dir = temp_dir("tokens");
    let readers = dir.join("readers.txt");
    std::fs::write(&readers, format!("# who may read\n\nbilling={READER}\n")).unwrap();
    let admins = dir.join("admins.txt");
    std::fs::write(&admins, format!("  # operators\nops = {ADMIN}\n")).unwrap();
    let (cluster, name) = shared_database().await;
    let served = crate::process::Served::start(&[
        "--database-url".into(),
        cluster.url(&name).into(),
        "--webhook-secret".into(),
        SECRET.into(),
        "--reader-tokens-file".into(),
        readers.clone().into(),
        "--admin-tokens-file".into(),
        admins.into(),
    ])
    .await;
    let url = format!("http://{}", served.grpc_addr);
    let mut directory = pb::directory_service_client::DirectoryServiceClient::connect(url.clone())
        .await
        .unwrap();
    let get = |t: Option<&str>| {
        with_token(
            pb::GetUserRequest {
                name: "users/user_1".into(),
                show_deleted: false,
                ..Default::default()
            },
            t,
        )
    };
    assert_eq!(
        directory.get_user(get(None)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        directory.get_user(get(Some(READER))).await.unwrap_err().code(),
        Code::NotFound
    );
    let mut admin = pb::admin_service_client::AdminServiceClient::connect(url)
        .await
        .unwrap();
    let status = |t: Option<&str>| with_token(pb::GetSyncStatusRequest {}, t);
    assert_eq!(
        admin.get_sync_status(status(Some(READER))).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(admin.get_sync_status(status(Some(ADMIN))).await.is_ok());
    served.terminate().await;

    // A bad line: the file and the line are named, the line's secret is not.
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, format!("# ok so far\nbilling={READER}\nops:{LEAKY}\n")).unwrap();
    let stderr = refused_to_serve(&["--admin-tokens-file".into(), bad.clone().into()], &[]).await;
    assert!(stderr.contains(&format!("{}, line 3", bad.display())), "{stderr}");
    assert!(!stderr.contains(LEAKY), "{stderr}");
    // A missing file.
    let missing = dir.join("missing.txt");
    let stderr = refused_to_serve(&["--reader-tokens-file".into(), missing.clone().into()], &[]).await;
    assert!(
        stderr.contains(&format!("cannot read the token file {}", missing.display())),
        "{stderr}"
    );
    // A bad token in a flag or variable: the flag is named, the value is not.
    let stderr = refused_to_serve(&["--reader-token".into(), format!("billing:{LEAKY}").into()], &[]).await;
    assert!(stderr.contains("--reader-token value #1"), "{stderr}");
    assert!(!stderr.contains(LEAKY), "{stderr}");
    let stderr = refused_to_serve(
        &[],
        &[("CLERK_MIRROR_ADMIN_TOKENS", &format!("ops={READER},ci:{LEAKY}"))],
    )
    .await;
    assert!(stderr.contains("--admin-token value #2"), "{stderr}");
    assert!(!stderr.contains(LEAKY), "{stderr}");
}

#[test]
fn configured_secrets_never_show_in_debug_output() {
    let pki = pki();
    let url = "postgres://mirror:pg-password-4711@db.internal/mirror";
    let secrets = clerk_mirror::ingest::verify::WebhookSecrets::parse(&[SECRET, SECOND_SECRET]).unwrap();
    let database = clerk_mirror::config::DatabaseConfig::Url(clerk_mirror::config::Redacted(url.into()));
    let mut config = clerk_mirror::Config::new(database, secrets);
    config.tokens = tokens();
    config.tls = Some(pki.server_tls(true));
    config.reconcile = Some(clerk_mirror::config::ReconcileConfig {
        api_url: "https://api.clerk.com/v1".into(),
        secret_key: clerk_mirror::config::Redacted("sk_live_never_shown_0815".into()),
        rate: 20,
        window: std::time::Duration::from_secs(10),
        every: Some(std::time::Duration::from_secs(3600)),
        plans_every: clerk_mirror::backfill::plans::DEFAULT_EVERY,
    });
    let debug = format!("{config:?}");
    for secret in [
        "pg-password-4711",
        SECRET.trim_start_matches("whsec_"),
        SECOND_SECRET.trim_start_matches("whsec_"),
        READER,
        ADMIN,
        "sk_live_never_shown_0815",
    ]
    .into_iter()
    .chain(key_material(&pki.server_key))
    {
        assert!(!debug.contains(secret), "`{secret}` shows in {debug}");
    }
}

/// The lines of a PEM private key that carry key material (not its BEGIN/END markers).
pub fn key_material(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .collect()
}

#[tokio::test]
async fn the_watch_command_reaches_a_server_with_mtls_and_tokens_and_stops_at_a_refused_token() {
    use tokio::io::AsyncBufReadExt;
    let pki = pki();
    let app = spawn_app_with(|c| {
        c.tls = Some(pki.server_tls(true));
        c.tokens = tokens();
    })
    .await;
    enqueue(&app.pool, &[user_created("user_w1")]).await;
    app.wait_until_applied().await;
    let dir = temp_dir("watch-tls");
    for (file, pem) in [
        ("ca.pem", &pki.ca),
        ("client.pem", &pki.client_cert),
        ("client.key", &pki.client_key),
    ] {
        std::fs::write(dir.join(file), pem).unwrap();
    }
    std::fs::write(dir.join("wrong-token"), "\n  not-the-reader-token-0000\n").unwrap();
    let watch = |token: Option<&str>, token_file: bool| {
        let mut command = tokio::process::Command::new(crate::process::binary());
        command
            .args([
                "watch",
                "--from-oldest",
                "--url",
                &format!("https://localhost:{}", app.grpc_addr.port()),
            ])
            .arg("--ca")
            .arg(dir.join("ca.pem"))
            .arg("--cert")
            .arg(dir.join("client.pem"))
            .arg("--key")
            .arg(dir.join("client.key"))
            .env_remove("CLERK_MIRROR_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(token) = token {
            command.env("CLERK_MIRROR_TOKEN", token);
        }
        if token_file {
            command.arg("--token-file").arg(dir.join("wrong-token"));
        }
        command.spawn().unwrap()
    };

    // TLS with the client certificate and the reader's token (from the environment): the change.
    let mut child = watch(Some(READER), false);
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let change = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("\"change\"") {
                return line;
            }
        }
        panic!("the watch command ended without a change");
    })
    .await
    .expect("a change within 30 s");
    assert!(change.contains("user_w1"), "{change}");
    child.kill().await.unwrap();

    // No token, or a wrong one from a file: it stops at once with the server's reason.
    for (token, file) in [(None, false), (None, true)] {
        let output = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            watch(token, file).wait_with_output(),
        )
        .await
        .expect("it stops instead of retrying")
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains("a valid bearer token is required"), "{stderr}");
        assert!(!stderr.contains("not-the-reader-token"), "{stderr}");
    }
    app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

//! Logs name ids, never people: a server at debug level sees every kind of traffic, and its whole
//! log holds no email address, name, metadata, body or secret (webhook secrets, API tokens, the
//! Backend API key, TLS key material). Text logs hold escape codes (colour) only on a terminal
//! and never with `NO_COLOR`.

use clerk_mirror::pb;
use serde_json::json;
use tonic::metadata::MetadataValue;

use crate::events::*;
use crate::helpers::*;
use crate::process::{Served, serve_args};

const READER: &str = "log-scan-reader-token-0123456789";
const ADMIN: &str = "log-scan-admin-token-0123456789";
const WRONG: &str = "log-scan-wrong-token-0123456789";

/// Adds a bearer token to every request.
fn bearer(token: &'static str) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut request| {
        let value = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

#[tokio::test]
async fn a_servers_debug_log_and_its_exported_spans_hold_no_email_name_metadata_body_or_secret() {
    let (cluster, name) = shared_database().await;
    let pool = sqlx::PgPool::connect_with(cluster.connect_options(&name))
        .await
        .unwrap();
    // Every kind of secret the server can be given: webhook secrets, reader tokens (from a
    // file) and admin tokens (a flag), the Backend API key (a periodic reconcile against a fake
    // API) and a TLS key (gRPC and admin over TLS).
    let pki = pki();
    let dir = temp_dir("log-scan");
    let write = |file: &str, text: &str| {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        std::ffi::OsString::from(path)
    };
    let (api_url, _fake) = crate::backfill::fake_api(8).await;
    // Its spans go to an OTLP collector too: they are scanned like the log.
    let (otlp_url, spans) = crate::traces::Receiver::start().await;
    let args: Vec<std::ffi::OsString> = vec![
        "--database-url".into(),
        cluster.url(&name).into(),
        "--webhook-secret".into(),
        format!("{SECRET},{SECOND_SECRET}").into(),
        "--reader-tokens-file".into(),
        write("readers", &format!("billing={READER}\n")),
        "--admin-token".into(),
        format!("ops={ADMIN}").into(),
        "--tls-cert".into(),
        write("cert.pem", &pki.server_cert),
        "--tls-key".into(),
        write("key.pem", &pki.server_key),
        "--reconcile-every".into(),
        "1s".into(),
        "--secret-key".into(),
        crate::backfill::KEY.into(),
        "--api-url".into(),
        api_url.into(),
        "--api-rate".into(),
        "1000".into(),
        "--otlp-endpoint".into(),
        otlp_url.into(),
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
    clerk_mirror::cli::send_event::send(
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
    // An invitation whose acceptance URL carries a token, and whose expiry has passed (the
    // mirror expires it: its own row and change are logged too).
    let mut invited = invitation("orginv_private", "org_private", "zelda.private@example.com", "pending", Some(T), T);
    invited["public_metadata"] = json!({"secret_plan": "moonshot-7"});
    let invited = envelope("organizationInvitation.created", T, invited);
    assert_eq!(served.send_as("msg_private_invitation", &invited).await.status, hyper::StatusCode::OK);
    wait_until_applied(&pool).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM invitations WHERE status = 'expired'")
        .fetch_one(&pool)
        .await
        .unwrap()
        == 0
    {
        assert!(std::time::Instant::now() < deadline, "the invitation was not expired");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let grpc_port: u16 = served.grpc_addr.rsplit(':').next().unwrap().parse().unwrap();
    let channel = pki.grpc_channel(grpc_port, false).await.unwrap();
    let mut d = pb::directory_service_client::DirectoryServiceClient::with_interceptor(channel.clone(), bearer(READER));
    use pb::lookup_user_request::Key;
    d.lookup_user(pb::LookupUserRequest {
        key: Some(Key::Email("zelda.private@example.com".into())),
        ..Default::default()
    })
    .await
    .unwrap();
    let _ = d
        .lookup_user(pb::LookupUserRequest {
            key: Some(Key::Email("nobody.private@example.com".into())),
            ..Default::default()
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
    let pending = d
        .list_invitations(pb::ListInvitationsRequest {
            parent: "organizations/-".into(),
            filter: r#"email_address = "Zelda.Private@example.com""#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .invitations;
    assert_eq!(pending.len(), 1);
    let mut w = pb::watch_service_client::WatchServiceClient::with_interceptor(channel.clone(), bearer(READER));
    let request = pb::WatchChangesRequest {
        start: Some(pb::watch_changes_request::Start::StartFromOldest(true)),
        filter: r#"public_metadata.secret_plan = "moonshot-7""#.into(),
        ..Default::default()
    };
    let mut s = w.watch_changes(request).await.unwrap().into_inner();
    s.message().await.unwrap();
    s.message().await.unwrap();
    drop(s);
    // Refused tokens: a wrong one, and a reader's on AdminService.
    let mut wrong =
        pb::directory_service_client::DirectoryServiceClient::with_interceptor(channel.clone(), bearer(WRONG));
    let lookup = pb::LookupUserRequest {
        key: Some(Key::Email("zelda.private@example.com".into())),
        ..Default::default()
    };
    assert_eq!(
        wrong.lookup_user(lookup).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let mut admin = pb::admin_service_client::AdminServiceClient::with_interceptor(channel.clone(), bearer(READER));
    assert_eq!(
        admin
            .get_sync_status(pb::GetSyncStatusRequest {})
            .await
            .unwrap_err()
            .code(),
        tonic::Code::PermissionDenied
    );
    let mut admin = pb::admin_service_client::AdminServiceClient::with_interceptor(channel, bearer(ADMIN));
    admin.get_sync_status(pb::GetSyncStatusRequest {}).await.unwrap();
    // The admin port over TLS, and a reconcile that has used the API key.
    let admin_addr: std::net::SocketAddr = served.admin_addr.parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let report = pki
            .https_get(admin_addr, "/reconcile", false, Some(ADMIN))
            .await
            .unwrap();
        if report.status == hyper::StatusCode::OK {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no reconcile ran: {report:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let metrics = pki.https_get(admin_addr, "/metrics", false, Some(WRONG)).await.unwrap();
    assert_eq!(metrics.status, hyper::StatusCode::UNAUTHORIZED);
    let log = served.terminate().await.join("\n");
    // Every attribute, event and link of every exported span, and their resources.
    let exported = spans.dump();
    for path in ["msg_private", "webhook stored", "webhook rejected", "LookupUser", "ListInvitations", "WatchChanges", "apply batch"] {
        assert!(exported.contains(path), "the exported spans show `{path}`: the path ran");
    }
    assert!(log.contains("msg_private"), "ids are logged: the log is not empty");
    for path in ["periodic reconcile done", "a reader token was used on AdminService"] {
        assert!(log.contains(path), "the log shows `{path}`: the path ran");
    }
    for secret in [
        "zelda.private",
        "nobody.private",
        "Zelda",
        "Quixotica",
        "moonshot",
        "424242",
        "tkn_",
        SECRET.trim_start_matches("whsec_"),
        SECOND_SECRET.trim_start_matches("whsec_"),
        "whsec_",
        READER,
        ADMIN,
        WRONG,
        crate::backfill::KEY,
        "PRIVATE KEY",
    ]
    .into_iter()
    .chain(crate::security::key_material(&pki.server_key))
    {
        let line = log.lines().find(|l| l.contains(secret)).unwrap_or_default();
        assert!(!log.contains(secret), "`{secret}` appears in the server's log: {line}");
        assert!(!exported.contains(secret), "`{secret}` appears in an exported span");
    }
    pool.close().await;
}

/// `serve` with text logs (the default) and its default filter on a fresh database, its stderr
/// going to `stderr`, with `NO_COLOR` set to `no_color` (or unset); waits until `log()` shows it
/// serving (60 s at most), stops it with SIGTERM and returns its log.
async fn text_log_of_serve(stderr: std::process::Stdio, no_color: Option<&str>, log: impl Fn() -> String) -> String {
    let (cluster, name) = shared_database().await;
    let mut command = tokio::process::Command::new(crate::process::binary());
    command
        .arg("serve")
        .args(crate::process::serve_args(cluster, &name))
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env_remove("CLERK_MIRROR_LOG_FORMAT")
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true);
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let mut child = command.spawn().expect("spawn clerk-mirror serve");
    // The command holds a copy of the descriptor: the log's end is seen only once it is gone.
    drop(command);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !log().contains("serving") {
        assert!(child.try_wait().unwrap().is_none(), "serve ended:\n{}", log());
        assert!(
            std::time::Instant::now() < deadline,
            "serve is not serving after 60 s:\n{}",
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(child.id().unwrap() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = child.wait().await.unwrap();
    assert!(status.success(), "serve exited with {status}:\n{}", log());
    log()
}

#[tokio::test]
async fn a_servers_text_log_written_to_a_file_holds_no_escape_codes() {
    let dir = temp_dir("log-file");
    let path = dir.join("serve.log");
    let file = std::fs::File::create(&path).unwrap();
    let read = || std::fs::read_to_string(&path).unwrap();
    let log = text_log_of_serve(file.into(), None, read).await;
    assert!(
        log.contains(" INFO ") && log.contains("SIGTERM received, shutting down"),
        "serve logs at info by default:\n{log}"
    );
    assert!(!log.contains('\x1b'), "escape codes in a log file:\n{log:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A pseudo-terminal: its controller side, and the path of the terminal side.
fn pseudo_terminal() -> (std::fs::File, std::path::PathBuf) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc calls; the name buffer outlives ptsname_r, which NUL-terminates it.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        let controller = std::fs::File::from_raw_fd(fd);
        assert_eq!(libc::grantpt(fd), 0);
        assert_eq!(libc::unlockpt(fd), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_str().unwrap().into();
        (controller, path)
    }
}

/// `serve`'s text log on a terminal, with `NO_COLOR` set to `no_color` (or unset).
async fn text_log_of_serve_on_a_terminal(no_color: Option<&str>) -> String {
    use std::io::Read;
    let (mut controller, path) = pseudo_terminal();
    let terminal = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    // Read all along (a terminal's buffer is small), until the terminal side is closed (EIO).
    let reader = std::thread::spawn({
        let seen = seen.clone();
        move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = controller.read(&mut buf) {
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });
    let read = || String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let log = text_log_of_serve(terminal.into(), no_color, read).await;
    tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    log
}

#[tokio::test]
async fn a_servers_text_log_is_coloured_on_a_terminal_unless_no_color_is_set() {
    let coloured = text_log_of_serve_on_a_terminal(None).await;
    assert!(coloured.contains("\x1b["), "no colour on a terminal:\n{coloured:?}");
    let plain = text_log_of_serve_on_a_terminal(Some("1")).await;
    assert!(plain.contains("serving"), "{plain}");
    assert!(!plain.contains('\x1b'), "escape codes despite NO_COLOR:\n{plain:?}");
}

/// `serve`'s JSON log lines with `RUST_LOG=filter` (exporting spans to `otlp` when given), from
/// its start until it stops, one webhook applied in between.
async fn json_log_while_applying(filter: &str, otlp: Option<&str>) -> Vec<serde_json::Value> {
    let (cluster, name) = shared_database().await;
    let pool = sqlx::PgPool::connect_with(cluster.connect_options(&name))
        .await
        .unwrap();
    let mut args = serve_args(cluster, &name);
    if let Some(url) = otlp {
        args.extend(["--otlp-endpoint".into(), url.into()]);
    }
    let served = Served::start_logging(&args, filter).await;
    let body = user_event("created", "user_filtered", T, T, "Ada");
    assert_eq!(
        served.send_as("msg_filtered", &body).await.status,
        hyper::StatusCode::OK
    );
    wait_until_applied(&pool).await;
    pool.close().await;
    let log = served.terminate().await;
    log.iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn a_target_directive_in_rust_log_raises_that_target_and_keeps_every_other_line_with_or_without_traces() {
    let (url, receiver) = crate::traces::Receiver::start().await;
    for otlp in [None, Some(url.as_str())] {
        let log = json_log_while_applying("info,clerk_mirror::applier=debug", otlp).await;
        let said = |level: &str, target: &str, message: &str| {
            log.iter()
                .any(|l| l["level"] == level && l["target"] == target && l["fields"]["message"] == message)
        };
        let all = || log.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n");
        // Served::start_logging waited for `serving`; what follows it is there too.
        assert!(
            said("INFO", "clerk_mirror::cache::follow", "the read cache is loaded"),
            "{otlp:?}:\n{}",
            all()
        );
        assert!(
            said("INFO", "clerk_mirror::ingest::http", "webhook stored"),
            "{otlp:?}:\n{}",
            all()
        );
        assert!(
            said("DEBUG", "clerk_mirror::applier::batch", "batch applied"),
            "{otlp:?}:\n{}",
            all()
        );
        assert!(said("INFO", "clerk_mirror::startup", "stopped"), "{otlp:?}:\n{}", all());
        let other_debug = log
            .iter()
            .filter(|l| l["level"] == "DEBUG" || l["level"] == "TRACE")
            .find(|l| {
                !l["target"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("clerk_mirror::applier")
            });
        assert!(other_debug.is_none(), "only the applier logs at debug: {other_debug:?}");
    }
    let names: Vec<String> = receiver.spans().into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == "apply batch"),
        "spans exported meanwhile: {names:?}"
    );
    assert!(names.iter().any(|n| n == "POST /webhooks/clerk"), "{names:?}");
}

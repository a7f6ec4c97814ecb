//! What the commands say (the real binary, no network). When they fail: an unreachable or
//! malformed database URL, `send-event` without a server or refused by one, `watch` with nothing
//! or no gRPC server on its port, or refused by the mirror. Each error names what was attempted,
//! what answered, and what to do, once; none shows a secret. When they succeed, the one-shot
//! commands print only their answer on stdout, and nothing on stderr: no log lines about the
//! embedded cluster, no PostgreSQL notices, no progress display off a terminal.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::*;
use crate::process::binary;

/// A password that must never show.
const PASSWORD: &str = "pg-password-4711";

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The binary with `args`, none of the variables that would change what it does.
fn command(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CLERK_SECRET_KEY")
        .env_remove("CLERK_API_URL")
        .env_remove("CLERK_WEBHOOK_SECRET")
        .env_remove("CLERK_MIRROR_TOKEN")
        .env_remove("CLERK_MIRROR_GRPC_URL")
        .env_remove("CLERK_MIRROR_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    command
}

/// Runs it to its end (within 60 s) after checking it succeeded; its stdout and stderr.
async fn succeeds(mut command: Command) -> (String, String) {
    let output: Output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("it ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "it failed: {stderr}");
    (stdout, stderr)
}

/// Runs it to its end (within 60 s); its stderr, after checking it failed.
async fn fails(mut command: Command) -> String {
    let output: Output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("it ends")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "it succeeded: {stderr}");
    stderr
}

fn assert_says(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "`{part}` missing from:\n{text}");
    }
}

#[tokio::test]
async fn every_database_command_names_the_database_it_cannot_reach_at_once_and_never_its_password() {
    let port = closed_port();
    let url = format!("postgres://mirror:{PASSWORD}@127.0.0.1:{port}/mirror");
    let started = Instant::now();
    for args in [
        &["migrate"][..],
        &["status"],
        &["replay", "--all-dead-letters"],
        &["backfill", "--secret-key", "sk_test_0123"],
        &["reconcile", "--secret-key", "sk_test_0123"],
    ] {
        let mut c = command(args);
        c.args(["--database-url", &url]);
        let stderr = fails(c).await;
        assert_says(
            &stderr,
            &[
                &format!("error: cannot connect to PostgreSQL at 127.0.0.1:{port} (database mirror, user mirror): "),
                "Connection refused",
                "check --database-url / DATABASE_URL and that PostgreSQL runs there",
            ],
        );
        assert!(!stderr.contains(PASSWORD), "{args:?}: {stderr}");
    }
    // Said at once, not after the pool's 30 s timeout.
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());

    let stderr = fails(command(&["status", "--database-url", "mirror:secret@db"])).await;
    assert_says(
        &stderr,
        &[
            "error: --database-url / DATABASE_URL is not a PostgreSQL URL (",
            "postgres://user:password@host:5432/database",
        ],
    );
    assert!(!stderr.contains("mirror:secret"), "{stderr}");
}

#[tokio::test]
async fn replay_of_an_unknown_delivery_says_which_ids_to_give() {
    let (cluster, name) = shared_database().await;
    let stderr = fails(command(&[
        "replay",
        "--id",
        "msg_unknown",
        "--database-url",
        &cluster.url(&name),
    ]))
    .await;
    assert_says(
        &stderr,
        &["1 svix-id(s) not in the inbox: give the svix-id of a delivery this mirror received"],
    );
}

#[tokio::test]
async fn send_event_says_what_it_could_not_reach_or_read_and_what_a_refusal_means() {
    let dir = temp_dir("send-event-errors");
    let file = dir.join("event.json");
    std::fs::write(&file, user_created("user_errors")).unwrap();
    let file = file.to_str().unwrap();
    let port = closed_port();
    let unreachable = format!("http://127.0.0.1:{port}/webhooks/clerk");

    let stderr = fails(command(&[
        "send-event",
        "--secret",
        SECRET,
        "--url",
        &unreachable,
        file,
    ]))
    .await;
    assert_says(
        &stderr,
        &[
            &format!("error: cannot reach {unreachable}: tcp connect error: Connection refused"),
            "is the server running there?",
        ],
    );
    let stderr = fails(command(&[
        "send-event",
        "--secret",
        SECRET,
        "--url",
        "127.0.0.1:8080/webhooks/clerk",
        file,
    ]))
    .await;
    assert_says(
        &stderr,
        &["error: `127.0.0.1:8080/webhooks/clerk` is not an http:// or https:// URL"],
    );
    let missing = dir.join("missing.json");
    let stderr = fails(command(&["send-event", "--secret", SECRET, missing.to_str().unwrap()])).await;
    assert_says(&stderr, &[&format!("error: cannot read {}: ", missing.display())]);
    let stderr = fails(command(&["send-event", "--secret", "whsec_not*base64", file])).await;
    assert_says(
        &stderr,
        &[
            "error: --secret / CLERK_WEBHOOK_SECRET: webhook secret #1 is not a valid Svix signing secret",
            "copy the endpoint's signing secret from the Clerk Dashboard",
        ],
    );
    assert!(!stderr.contains("not*base64"), "{stderr}");

    // Refused by a server: its answer on stdout, what it means on stderr.
    let app = spawn_app().await;
    let wrong_secret = "whsec_plJ3nmyCDGBKInavdOK15jsl";
    let stderr = fails(command(&[
        "send-event",
        "--secret",
        wrong_secret,
        "--url",
        &app.webhook_url(),
        file,
    ]))
    .await;
    assert_says(
        &stderr,
        &[&format!(
            "error: {} answered 401 Unauthorized: sign with the secret the server verifies with",
            app.webhook_url()
        )],
    );
    let elsewhere = format!("http://{}/hooks", app.http_addr);
    let stderr = fails(command(&["send-event", "--secret", SECRET, "--url", &elsewhere, file])).await;
    assert_says(
        &stderr,
        &[&format!(
            "error: {elsewhere} answered 404 Not Found: is --url the server's webhook endpoint"
        )],
    );
    app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts `watch` with `args`; waits (30 s at most) for `n` lines of its stderr that contain
/// `part`, then checks it still runs (it resumes: neither the failure nor SIGPIPE ended it).
async fn watch_keeps_resuming(args: &[&str], part: &str, n: usize) -> Vec<String> {
    let mut child = command(&["watch"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut matching = 0;
    tokio::time::timeout(Duration::from_secs(30), async {
        while matching < n {
            let line = lines.next_line().await.unwrap().unwrap_or_else(|| {
                panic!("watch ended; its stderr:\n{}", seen.join("\n"));
            });
            if line.contains(part) {
                matching += 1;
            }
            seen.push(line);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `{part}` within 30 s:\n{}", seen.join("\n")));
    assert!(child.try_wait().unwrap().is_none(), "watch ended:\n{}", seen.join("\n"));
    child.kill().await.unwrap();
    seen
}

#[tokio::test]
async fn watch_names_the_address_and_the_cause_while_nothing_or_no_grpc_server_answers_and_keeps_resuming() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}");
    watch_keeps_resuming(
        &["--url", &url],
        &format!(
            "watch: {url}: cannot connect: tcp connect error: Connection refused (os error 111) — resuming from now in "
        ),
        2,
    )
    .await;
    // A server that answers HTTP/1 and hangs up (as Python's http.server does): the command is
    // not killed by SIGPIPE when the connection closes under its writes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hang_up = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut preface = [0u8; 24];
            let _ = socket.read_exact(&mut preface).await;
            let _ = socket
                .write_all(b"HTTP/1.0 505 HTTP Version Not Supported\r\n\r\n")
                .await;
        }
    });
    watch_keeps_resuming(
        &["--url", &url],
        "(is --url the mirror's gRPC address, not its webhook port?) — resuming from now in ",
        3,
    )
    .await;
    hang_up.abort();
    // The mirror's webhook port (HTTP/1, no gRPC): it says so.
    let app = spawn_app().await;
    let url = format!("http://{}", app.http_addr);
    watch_keeps_resuming(
        &["--url", &url],
        "(is --url the mirror's gRPC address, not its webhook port?) — resuming from now in ",
        3,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn watch_stops_at_once_when_the_mirror_refuses_it_and_names_the_option_to_fix() {
    let app = spawn_app().await;
    let url = format!("http://{}", app.grpc_addr);
    let stderr = fails(command(&["watch", "--url", &url, "--from", "not-a-cursor"])).await;
    assert_says(
        &stderr,
        &[
            &format!("error: the server at {url} refused the watch: "),
            "(InvalidArgument, ",
            "); fix --from",
        ],
    );
    let stderr = fails(command(&["watch", "--url", &url, "--filter", "no_such_field = 1"])).await;
    assert_says(
        &stderr,
        &[
            &format!("error: the server at {url} refused the watch: "),
            "(InvalidArgument, INVALID_FILTER); fix --filter",
        ],
    );
    app.stop().await;
}

#[tokio::test]
async fn watch_ends_quietly_when_its_reader_goes_away() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[user_created("user_reader_gone")]).await;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        command(&["watch", "--from-oldest", "--url", &format!("http://{}", app.grpc_addr)])
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
            .wait_with_output(),
    )
    .await
    .expect("it ends once it cannot write")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    app.stop().await;
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_build_says_to_run_that_build() {
    let (cluster, name) = shared_database().await;
    let pool = sqlx::PgPool::connect_with(cluster.connect_options(&name))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000000, 'from a newer build', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let stderr = fails(command(&["migrate", "--database-url", &cluster.url(&name)])).await;
    assert_says(
        &stderr,
        &[
            "error: cannot apply the migrations to PostgreSQL at ",
            &format!("(database {name}, user "),
            "migration 99990101000000 was previously applied but is missing",
            "this database was migrated by a newer clerk-mirror: run that version (or newer)",
        ],
    );
}

/// `status`'s text answer, checked line by line against its `--json` answer of the same
/// database (nothing has happened in it).
fn assert_status_answer(text: &str, json: &serde_json::Value) {
    let lines: Vec<&str> = text.lines().collect();
    let expected_starts = [
        format!("change log head:    {} (seq ", json["head_cursor"].as_str().unwrap()),
        format!("oldest cursor:      {} (seq ", json["oldest_cursor"].as_str().unwrap()),
        "inbox pending:      0".into(),
        "dead letters:       0".into(),
        "last received:      never".into(),
        "last applied:       never".into(),
        "applier:            none running".into(),
        "last reconcile:     never".into(),
    ];
    assert_eq!(
        lines.len(),
        expected_starts.len(),
        "stdout is exactly the answer:\n{text}"
    );
    for (line, start) in lines.iter().zip(&expected_starts) {
        assert!(line.starts_with(start.as_str()), "`{line}` is not `{start}…`:\n{text}");
    }
}

#[tokio::test]
async fn status_prints_only_its_answer_and_nothing_on_stderr_not_even_a_postgresql_notice() {
    let (cluster, name) = shared_database().await;
    let url = cluster.url(&name);
    // The database is migrated already: applying the migrations again makes PostgreSQL send
    // `relation "_sqlx_migrations" already exists, skipping` unless the client asks for
    // warnings only.
    let (json, stderr) = succeeds(command(&["status", "--json", "--database-url", &url])).await;
    assert_eq!(stderr, "", "stderr is empty");
    assert_eq!(json.lines().count(), 1, "one JSON document:\n{json}");
    let json: serde_json::Value = serde_json::from_str(&json).expect("stdout is exactly the JSON answer");
    assert_eq!(json["inbox_pending"], 0, "{json}");
    let (text, stderr) = succeeds(command(&["status", "--database-url", &url])).await;
    assert_eq!(stderr, "", "stderr is empty");
    assert_status_answer(&text, &json);

    // RUST_LOG raises the level (sqlx logs every statement at debug, and notices at info):
    // still no notice, because PostgreSQL sends none.
    let mut raised = command(&["status", "--database-url", &url]);
    raised.env("RUST_LOG", "debug");
    let (text, stderr) = succeeds(raised).await;
    assert_status_answer(&text, &json);
    assert!(stderr.contains("DEBUG"), "RUST_LOG raises the level:\n{stderr}");
    assert!(
        !stderr.contains("already exists"),
        "a PostgreSQL notice shows:\n{stderr}"
    );
    assert!(
        !stderr.contains("sqlx::postgres::notice"),
        "a PostgreSQL notice shows:\n{stderr}"
    );
}

#[tokio::test]
async fn status_on_the_embedded_default_says_nothing_about_the_cluster_it_starts_and_stops() {
    // The embedded default as a first `migrate` leaves it, made the tests' way (without fsync,
    // the slow part), stopped: the command starts it itself, then stops it.
    let mut cluster = start_cluster("quiet-status").await;
    let mut conn = sqlx::PgConnection::connect_with(&cluster.connect_options("postgres"))
        .await
        .unwrap();
    let create = format!("CREATE DATABASE {}", clerk_mirror::cli::EMBEDDED_DATABASE);
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect_with(cluster.connect_options(clerk_mirror::cli::EMBEDDED_DATABASE))
        .await
        .unwrap();
    clerk_mirror::db::migrate(&pool).await.unwrap();
    pool.close().await;
    let data_dir = cluster.data_dir().to_path_buf();
    cluster.stop().await.expect("stop the cluster");
    drop(cluster);
    let mut c = command(&["status", "--json", "--data-dir"]);
    c.arg(&data_dir);
    let (json, stderr) = succeeds(c).await;
    assert_eq!(stderr, "", "no log line about the embedded PostgreSQL, no notice");
    let json: serde_json::Value = serde_json::from_str(&json).expect("stdout is exactly the JSON answer");
    assert_eq!(json["dead_letters"], 0, "{json}");
    assert!(
        !data_dir.join("pgdata/postmaster.pid").exists(),
        "status left the embedded PostgreSQL running"
    );
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test]
async fn backfill_off_a_terminal_prints_its_summary_on_stdout_and_no_progress_on_stderr() {
    let (api_url, _fake) = crate::backfill::fake_api(8).await;
    let (cluster, name) = shared_database().await;
    let (stdout, stderr) = succeeds(command(&[
        "backfill",
        "--api-url",
        &api_url,
        "--secret-key",
        crate::backfill::KEY,
        "--api-rate",
        "1000",
        "--database-url",
        &cluster.url(&name),
    ]))
    .await;
    assert_eq!(stderr, "", "no progress display into a pipe");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 9, "{stdout}");
    assert!(lines[0].ends_with(": 8 fetched, 8 new to apply"), "{stdout}");
    assert_eq!(lines[3], "organization_domains: 1 fetched, 1 new to apply", "{stdout}");
    assert_eq!(lines[4], "organization_invitations: 1 fetched, 1 new to apply", "{stdout}");
    assert_eq!(lines[5], "organization_permissions: 3 fetched, 3 new to apply", "{stdout}");
    assert_eq!(lines[6], "organization_roles: 2 fetched, 2 new to apply", "{stdout}");
    assert_eq!(lines[7], "billing/subscription_items: 1 fetched, 1 new to apply", "{stdout}");
    assert_eq!(
        lines[8],
        "done: a running serve applies them (clerk-mirror status shows the backlog)"
    );
}

#[tokio::test]
async fn a_failing_command_says_its_error_once() {
    let port = closed_port();
    let url = format!("postgres://mirror@127.0.0.1:{port}/mirror");
    let stderr = fails(command(&["status", "--database-url", &url])).await;
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot connect to PostgreSQL at "),
        "{stderr}"
    );

    // serve, refused before it opens a database: as a plain line in text logs …
    let data_dir = temp_dir("refused-once");
    let serve = |format: &str| {
        let mut c = command(&["serve", "--webhook-secret", SECRET, "--reader-token", "no-secret"]);
        c.args(["--log-format", format, "--data-dir"]).arg(&data_dir);
        c
    };
    let stderr = fails(serve("pretty")).await;
    assert_eq!(
        stderr.trim_end(),
        "error: --reader-token value #1: a token is `name=secret`, with a secret of at least 16 characters"
    );
    // … and as one JSON line in JSON logs, every line of which is JSON.
    let stderr = fails(serve("json")).await;
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let errors: Vec<&serde_json::Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0]["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("--reader-token value #1: a token is `name=secret`")),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(data_dir);
}

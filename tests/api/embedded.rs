//! The embedded default, driven through the real binary: `serve` with no database URL starts its
//! own PostgreSQL in the data dir, keeps the data across restarts, and survives a SIGKILL.

use std::path::{Path, PathBuf};

use hyper::StatusCode;
use tokio::process::Command;

use crate::helpers::*;
use crate::process::{Served, binary};

/// `serve` on the embedded default in `data_dir`.
async fn serve(data_dir: &Path) -> Served {
    let mut args: Vec<std::ffi::OsString> = vec!["--data-dir".into(), data_dir.into()];
    args.extend(["--webhook-secret".into(), SECRET.into()]);
    Served::start(&args).await
}

fn postmaster_pid(data_dir: &Path) -> Option<libc::pid_t> {
    let text = std::fs::read_to_string(data_dir.join("pgdata/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Whether `pid` runs (a zombie waiting for whoever adopted it to reap it does not).
fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false);
    exists && !zombie
}

/// Kills a postmaster a failed test left behind.
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = postmaster_pid(&self.0) {
            // SAFETY: kill(2) on the postmaster this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn serve_without_a_database_url_keeps_its_data_across_restarts_and_survives_a_sigkill() {
    let data_dir = temp_dir("embedded");
    let _cleanup = Cleanup(data_dir.clone());

    // First start: initdb, accept an event, stop on SIGTERM with the database stopped too.
    let served = serve(&data_dir).await;
    let body = user_created("user_embedded");
    let first = served.send_as("msg_embedded_1", &body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let ready = get(&format!("http://{}/readyz", served.http_addr)).await;
    assert_eq!(ready.status, StatusCode::OK);
    let pid = postmaster_pid(&data_dir).expect("a running postmaster");
    served.terminate().await;
    assert!(!alive(pid), "the postmaster outlived serve");
    assert!(postmaster_pid(&data_dir).is_none(), "postmaster.pid left behind");

    // Second start: the event is still there (a redelivery is a duplicate).
    let served = serve(&data_dir).await;
    let again = served.send_as("msg_embedded_1", &body).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.body.contains(r#""duplicate":true"#), "{}", again.body);
    let second = served.send_as("msg_embedded_2", &body).await;
    assert_eq!(second.status, StatusCode::OK);

    // Other subcommands attach to the cluster a running serve owns, and leave it running.
    let migrate = Command::new(binary())
        .args(["migrate", "--data-dir"])
        .arg(&data_dir)
        .output()
        .await
        .unwrap();
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    let still = served.send_as("msg_embedded_3", &body).await;
    assert_eq!(still.status, StatusCode::OK, "serve lost its database to migrate");

    // SIGKILL: the postmaster is left running; the next start must not fail because of it.
    served.kill().await;
    let orphan = postmaster_pid(&data_dir).expect("the orphaned postmaster");
    assert!(alive(orphan));
    let served = serve(&data_dir).await;
    let after = served.send_as("msg_embedded_2", &body).await;
    assert!(after.body.contains(r#""duplicate":true"#), "{}", after.body);
    served.terminate().await;
    assert!(!alive(orphan), "the adopted postmaster was not stopped");
    assert!(postmaster_pid(&data_dir).is_none(), "postmaster.pid left behind");
}

#[tokio::test]
async fn migrate_runs_on_the_embedded_default_and_stops_the_database_it_started() {
    let data_dir = temp_dir("migrate");
    let _cleanup = Cleanup(data_dir.clone());
    let output = Command::new(binary())
        .args(["migrate", "--data-dir"])
        .arg(&data_dir)
        .env_remove("DATABASE_URL")
        .output()
        .await
        .expect("run migrate");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied"));
    assert!(postmaster_pid(&data_dir).is_none(), "migrate left the database running");
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_webhook_secret_and_says_how_to_fix_it() {
    let output = Command::new(binary())
        .args(["serve", "--data-dir", "/nonexistent"])
        .env_remove("CLERK_WEBHOOK_SECRET")
        .output()
        .await
        .expect("run serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--webhook-secret"), "{stderr}");
}

#[tokio::test]
async fn send_event_signs_and_posts_a_file_and_reports_the_status() {
    let app = spawn_app().await;
    let dir = temp_dir("send-event");
    let file = dir.join("event.json");
    std::fs::write(&file, user_created("user_send")).unwrap();
    let output = Command::new(binary())
        .args([
            "send-event",
            "--secret",
            SECRET,
            "--id",
            "msg_from_cli",
            "--url",
            &app.webhook_url(),
        ])
        .arg(&file)
        .output()
        .await
        .expect("run send-event");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("200 OK"), "{stdout}");
    assert!(app.stored_body("msg_from_cli").await.is_some());

    // A wrong secret: the server's 401 is printed and the exit code says it failed.
    let output = Command::new(binary())
        .args([
            "send-event",
            "--secret",
            "whsec_plJ3nmyCDGBKInavdOK15jsl",
            "--url",
            &app.webhook_url(),
        ])
        .arg(&file)
        .output()
        .await
        .expect("run send-event");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("401"));

    // Its reader gone (`send-event … | head -0`), it ends by SIGPIPE as Unix tools do: no panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(binary())
        .args(["send-event", "--secret", SECRET, "--url", &app.webhook_url()])
        .arg(&file)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run send-event")
        .wait_with_output()
        .await
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{output:?}");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
    app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_sigterm_while_the_embedded_database_starts_stops_serve_cleanly_with_its_database() {
    use tokio::io::AsyncBufReadExt;
    let dir = temp_dir("sigterm-early");
    let _cleanup = Cleanup(dir.clone());
    let mut child = Command::new(binary())
        .args(["serve", "--log-format", "json", "--data-dir"])
        .arg(&dir)
        .args(["--webhook-secret", SECRET])
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn clerk-mirror serve");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    // The first line `serve` logs once its database is up, long before it serves.
    while let Some(line) = lines.next_line().await.unwrap() {
        log.push(line.clone());
        if line.contains("using the embedded PostgreSQL") {
            break;
        }
    }
    assert!(!log.iter().any(|l| l.contains("\"serving\"")), "{log:?}");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id().unwrap() as libc::pid_t, libc::SIGTERM) }, 0);
    while let Some(line) = lines.next_line().await.unwrap() {
        log.push(line);
    }
    let status = child.wait().await.unwrap();
    let log = log.join("\n");
    assert!(status.success(), "a SIGTERM is a clean shutdown, not a kill: {status}\n{log}");
    assert!(log.contains("SIGTERM received, shutting down"), "{log}");
    assert!(log.contains("embedded PostgreSQL stopped"), "{log}");
    assert!(postmaster_pid(&dir).is_none_or(|pid| !alive(pid)), "its database stopped too");
}

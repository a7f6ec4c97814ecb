//! The examples (`examples/crm_sync.rs`, `on_signup.rs`, `entitlements.rs`) run as real processes
//! against a real server, fed a scripted story of signed webhooks; their output and state files
//! are checked, across a restart in the middle for crm_sync and on_signup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clerk_mirror::grpc::cursor::Cursor;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{OnceCell, watch};

use crate::events::*;
use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// The examples' executables by name. `cargo test` builds examples before it runs the tests, but
/// `cargo test --test api` does not: build them (a no-op when fresh) once per test binary.
async fn example(name: &str) -> PathBuf {
    static BUILT: OnceCell<HashMap<String, PathBuf>> = OnceCell::const_new();
    let built = BUILT
        .get_or_init(|| async {
            tokio::task::spawn_blocking(build_examples)
                .await
                .expect("join the build")
        })
        .await;
    built
        .get(name)
        .unwrap_or_else(|| panic!("`cargo build --examples` built no example `{name}`"))
        .clone()
}

fn build_examples() -> HashMap<String, PathBuf> {
    let profile = if cfg!(debug_assertions) { "dev" } else { "release" };
    let output = std::process::Command::new(env!("CARGO"))
        .args(["build", "--examples", "--message-format=json", "--profile", profile])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .stderr(Stdio::piped())
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "`cargo build --examples` failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // One JSON message a line; an example's artifact names its executable.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["kind"][0] == "example")
        .filter_map(|m| {
            let name = m["target"]["name"].as_str()?.to_string();
            Some((name, PathBuf::from(m["executable"].as_str()?)))
        })
        .collect()
}

/// A running example: its standard output and error, line by line, as they come.
struct Running {
    child: Child,
    stdout: watch::Receiver<Vec<String>>,
    stderr: watch::Receiver<Vec<String>>,
}

fn collect(stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> watch::Receiver<Vec<String>> {
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tx.send_modify(|all| all.push(line));
        }
    });
    rx
}

impl Running {
    async fn start(name: &str, args: &[String]) -> Running {
        let mut child = Command::new(example(name).await)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start example {name}: {e}"));
        Running {
            stdout: collect(child.stdout.take().unwrap()),
            stderr: collect(child.stderr.take().unwrap()),
            child,
        }
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.borrow().join("\n"),
            self.stderr.borrow().join("\n")
        )
    }

    /// Waits (at most 30 s) until stdout holds `count` lines satisfying `matches`; returns them.
    async fn lines_where(&mut self, what: &str, count: usize, matches: impl Fn(&str) -> bool) -> Vec<String> {
        let found = |lines: &Vec<String>| lines.iter().filter(|l| matches(l)).cloned().collect::<Vec<_>>();
        let waited = tokio::time::timeout(WAIT, self.stdout.wait_for(|lines| found(lines).len() >= count))
            .await
            .map(|result| result.map(|lines| found(&lines)));
        match waited {
            Ok(Ok(lines)) => lines,
            _ => panic!("no {what} within {WAIT:?}; {}", self.output()),
        }
    }

    async fn line_where(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        self.lines_where(what, 1, matches).await.remove(0)
    }

    /// Kills the process (SIGKILL: no chance to tidy up) and waits for it.
    async fn kill(mut self) -> String {
        self.child.kill().await.expect("kill the example");
        self.output()
    }
}

/// Waits (at most 30 s) until the JSON file at `path` satisfies `ok`; returns its content.
async fn file_where(path: &Path, what: &str, ok: impl Fn(&Value) -> bool, running: &Running) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut last = Value::Null;
    loop {
        if let Ok(bytes) = std::fs::read(path) {
            last = serde_json::from_slice(&bytes).expect("the state file is always whole JSON");
            if ok(&last) {
                return last;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never showed {what} within {WAIT:?}; last:\n{last:#}\n{}",
            path.display(),
            running.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn head_seq(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT head_seq FROM log_head")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn seq(cursor: &str) -> i64 {
    Cursor::decode(cursor).expect("a cursor").seq
}

fn grpc_url(app: &TestApp) -> String {
    format!("http://{}", app.grpc_addr)
}

/// A crm_sync store without its cursors: what a CRM user would see.
fn crm_view(store: &Value) -> Value {
    let strip = |table: &str| -> Value {
        let rows = store[table].as_object().expect("a table");
        let rows = rows.iter().map(|(id, row)| {
            let mut row = row.clone();
            row.as_object_mut().unwrap().remove("update_cursor");
            (id.clone(), row)
        });
        Value::Object(rows.collect())
    };
    json!({"contacts": strip("contacts"), "accounts": strip("accounts"), "links": strip("links")})
}

fn contact(first_name: &str, id: &str) -> Value {
    json!({"name": format!("{first_name} Tester"), "email": format!("{id}@Example.com")})
}

fn account(id: &str, name: &str) -> Value {
    json!({"name": name, "slug": format!("slug-{id}")})
}

fn link(account: &str, contact: &str, role: &str) -> Value {
    json!({"account": account, "contact": contact, "role": role})
}

/// Ada and Bob, Xco, and Ada in Xco: there before crm_sync first starts.
async fn crm_story_before(app: &TestApp) {
    app.send_all_and_apply(&[
        user_event("created", "user_a", T, T, "Ada"),
        user_event("created", "user_b", T, T, "Bob"),
        org_event("created", "org_x", T, T, "Xco"),
        membership_event("created", "mem_ax", "org_x", "user_a", T, T, "org:admin"),
    ])
    .await;
}

fn crm_args(app: &TestApp, store: &Path) -> Vec<String> {
    let store = store.display().to_string();
    vec!["--url".into(), grpc_url(app), "--store".into(), store]
}

#[tokio::test]
async fn crm_sync_lists_then_watches_and_after_a_kill_resumes_from_its_cursor_missing_nothing() {
    let app = spawn_app().await;
    let store = temp_dir("crm-sync").join("crm.json");
    crm_story_before(&app).await;
    let mut crm = Running::start("crm_sync", &crm_args(&app, &store)).await;
    crm.line_where("the listing", |l| {
        l.starts_with("listed 2 contacts, 1 accounts, 1 links at ")
    })
    .await;

    // While it runs: new contacts, accounts and links arrive through the watch.
    app.send_all_and_apply(&[
        user_event("created", "user_c", T, T, "Cy"),
        membership_event("created", "mem_bx", "org_x", "user_b", T, T, "org:member"),
        org_event("created", "org_y", T, T, "Yco"),
        membership_event("created", "mem_cy", "org_y", "user_c", T, T, "org:admin"),
    ])
    .await;
    let head = head_seq(&app).await;
    let live = file_where(
        &store,
        "the live changes",
        |s| seq(s["cursor"].as_str().unwrap()) == head,
        &crm,
    )
    .await;
    assert_eq!(
        crm_view(&live),
        json!({
            "contacts": {"user_a": contact("Ada", "user_a"), "user_b": contact("Bob", "user_b"), "user_c": contact("Cy", "user_c")},
            "accounts": {"org_x": account("org_x", "Xco"), "org_y": account("org_y", "Yco")},
            "links": {
                "mem_ax": link("org_x", "user_a", "org:admin"),
                "mem_bx": link("org_x", "user_b", "org:member"),
                "mem_cy": link("org_y", "user_c", "org:admin"),
            },
        })
    );
    crm.kill().await;

    // While it is down: an unlink, a rename, a new link, an account deleted (its link ends), a
    // new contact.
    app.send_all_and_apply(&[
        membership_event("deleted", "mem_ax", "org_x", "user_a", T, T + 10, "org:admin"),
        user_event("updated", "user_b", T + 20, T + 20, "Bobby"),
        membership_event("created", "mem_cx", "org_x", "user_c", T, T + 30, "org:member"),
        org_deleted("org_y", T + 40),
        user_event("created", "user_d", T, T + 50, "Dee"),
    ])
    .await;
    let head = head_seq(&app).await;
    let stored = seq(live["cursor"].as_str().unwrap());
    let mut crm = Running::start("crm_sync", &crm_args(&app, &store)).await;
    crm.line_where("the resume", |l| {
        l == format!("resuming from {}", live["cursor"].as_str().unwrap())
    })
    .await;
    // Each change after the stored cursor is applied once, in order; nothing before it again.
    let applied = crm
        .lines_where("the changes made while it was down", (head - stored) as usize, |l| {
            l.starts_with("c1.")
        })
        .await;
    let seqs: Vec<i64> = applied.iter().map(|l| seq(l.split(':').next().unwrap())).collect();
    assert_eq!(seqs, ((stored + 1)..=head).collect::<Vec<_>>(), "{}", crm.output());
    let end = file_where(
        &store,
        "every change",
        |s| seq(s["cursor"].as_str().unwrap()) == head,
        &crm,
    )
    .await;
    assert_eq!(
        crm_view(&end),
        json!({
            "contacts": {
                "user_a": contact("Ada", "user_a"), "user_b": contact("Bobby", "user_b"),
                "user_c": contact("Cy", "user_c"), "user_d": contact("Dee", "user_d"),
            },
            "accounts": {"org_x": account("org_x", "Xco")},
            "links": {"mem_bx": link("org_x", "user_b", "org:member"), "mem_cx": link("org_x", "user_c", "org:member")},
        })
    );
    assert!(
        !crm.output().contains("listed"),
        "a resume does not list again: {}",
        crm.output()
    );
}

#[tokio::test]
async fn crm_sync_lists_again_when_its_stored_cursor_has_expired() {
    let app = spawn_app().await;
    let store = temp_dir("crm-sync-expired").join("crm.json");
    crm_story_before(&app).await;
    let mut crm = Running::start("crm_sync", &crm_args(&app, &store)).await;
    let listed = crm.line_where("the listing", |l| l.starts_with("listed ")).await;
    let cursor = listed.rsplit(' ').next().unwrap().to_string();
    file_where(&store, "the listing", |s| s["cursor"] == cursor, &crm).await;
    crm.kill().await;

    app.send_all_and_apply(&[
        user_event("updated", "user_b", T + 20, T + 20, "Bobby"),
        user_event("created", "user_e", T, T + 30, "Eve"),
        membership_event("deleted", "mem_ax", "org_x", "user_a", T, T + 40, "org:admin"),
    ])
    .await;
    // Retention pruned every change: the stored cursor is now older than the log.
    sqlx::query("UPDATE log_head SET oldest_seq = head_seq + 1")
        .execute(&app.pool)
        .await
        .unwrap();
    let head = head_seq(&app).await;
    let mut crm = Running::start("crm_sync", &crm_args(&app, &store)).await;
    crm.line_where("the expiry", |l| l == format!("cursor {cursor} expired: listing again"))
        .await;
    crm.line_where("the new listing", |l| {
        l.starts_with("listed 3 contacts, 1 accounts, 0 links at ")
    })
    .await;
    let end = file_where(
        &store,
        "the new listing",
        |s| seq(s["cursor"].as_str().unwrap()) == head,
        &crm,
    )
    .await;
    assert_eq!(
        crm_view(&end),
        json!({
            "contacts": {"user_a": contact("Ada", "user_a"), "user_b": contact("Bobby", "user_b"), "user_e": contact("Eve", "user_e")},
            "accounts": {"org_x": account("org_x", "Xco")},
            "links": {},
        })
    );
}

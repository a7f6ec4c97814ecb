//! The examples (`examples/crm_sync.rs`, `on_signup.rs`, `entitlements.rs`) run as real processes
//! against a real server, fed a scripted story of signed webhooks; their output and state files
//! are checked, across a restart in the middle for crm_sync and on_signup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clerk_mirror::grpc::cursor::Cursor;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
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
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo
        .args(["build", "--examples", "--message-format=json", "--profile", profile])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .stderr(Stdio::piped());
    // Without the variables cargo sets for running this test: some build scripts (ring's) rerun
    // when they change, which would rebuild half the dependencies on every run.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_tests = [
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_TARGET_TMPDIR",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix));
        if set_for_tests || ["CARGO_PRIMARY_PACKAGE", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"].contains(&&*name) {
            cargo.env_remove(&*name);
        }
    }
    let output = cargo.output().expect("run cargo");
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
    stdin: Option<ChildStdin>,
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
            stdin: child.stdin.take(),
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

    /// Writes `query` on standard input and returns the next `answers` JSON lines with a `user`.
    async fn ask(&mut self, query: &str, answers: usize) -> Vec<Value> {
        let is_answer = |l: &str| json_line(l).get("user").is_some();
        let before = self.stdout.borrow().iter().filter(|l| is_answer(l)).count();
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(format!("{query}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
        let lines = self
            .lines_where(&format!("answers to `{query}`"), before + answers, is_answer)
            .await;
        lines[before..]
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
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

/// A line of output as JSON (`null` when it is not JSON).
fn json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or(Value::Null)
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

/// One request the test receiver got: when, to which path, its idempotency key and body, and
/// the status it answered.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    path: String,
    key: String,
    body: Value,
    status: u16,
}

/// A receiver for on_signup's POSTs that fails the first two attempts of every idempotency key
/// (503) and accepts the third; it records every request.
async fn flaky_receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let log = Arc::new(Mutex::new(Vec::<Received>::new()));
    let handler = {
        let log = log.clone();
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|k| k.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let mut log = log.lock().unwrap();
                let attempts = log.iter().filter(|r| r.key == key).count();
                let status = if attempts < 2 { 503 } else { 200 };
                log.push(Received {
                    at: Instant::now(),
                    path: uri.path().to_string(),
                    key,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    status,
                });
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }
    };
    let router = axum::Router::new().fallback(axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, log)
}

fn accepted(log: &Mutex<Vec<Received>>) -> Vec<Received> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.status == 200)
        .cloned()
        .collect()
}

/// Waits (at most 30 s) until the receiver has accepted `count` requests.
async fn accepted_count(log: &Mutex<Vec<Received>>, count: usize, running: &Running) -> Vec<Received> {
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = accepted(log);
        if ok.len() >= count {
            return ok;
        }
        assert!(
            Instant::now() < deadline,
            "the receiver accepted {} of {count} within {WAIT:?}: {ok:?}\n{}",
            ok.len(),
            running.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The rule and cursor of an idempotency key (`rule/cursor`).
fn key_parts(key: &str) -> (&str, &str) {
    key.split_once('/').expect("a rule/cursor key")
}

/// Waits until on_signup's state records every key as done.
async fn recorded(state: &Path, keys: &[String], running: &Running) -> Value {
    let done = |s: &Value| {
        keys.iter().all(|key| {
            let (rule, cursor) = key_parts(key);
            s[rule].as_str().is_some_and(|c| c >= cursor)
        })
    };
    file_where(state, "every action recorded", done, running).await
}

fn printed_keys(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("a JSON line")["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn plan(plan: &str, mut user: Value) -> Value {
    user["public_metadata"] = json!({"plan": plan});
    user
}

#[tokio::test]
async fn on_signup_runs_each_action_once_with_retries_and_backoff_across_a_kill() {
    let app = spawn_app().await;
    let (receiver, log) = flaky_receiver().await;
    let dir = temp_dir("on-signup");
    let (config, state) = (dir.join("rules.json"), dir.join("state.json"));
    let rules = json!({"rules": [
        {"name": "welcome", "types": ["user"], "operations": ["created"], "post": format!("{receiver}/welcome"),
         "fields": {"user_id": "id", "email": "primary_email_address", "plan": "public_metadata.plan"}},
        {"name": "upgraded", "types": ["user"], "operations": ["updated"], "filter": "public_metadata.plan = \"pro\"",
         "post": format!("{receiver}/upgraded"), "fields": {"user_id": "id", "plan": "public_metadata.plan"}},
        {"name": "new-organization", "types": ["organization"], "operations": ["created"],
         "fields": {"organization": "id", "name": "display_name"}},
    ]});
    std::fs::write(&config, rules.to_string()).unwrap();
    let args: Vec<String> = ["--url", &grpc_url(&app), "--config", &config.display().to_string()]
        .into_iter()
        .chain(["--state", &state.display().to_string()])
        .map(String::from)
        .collect();

    // Before its first start: not its business (a first run starts from now).
    app.send_all_and_apply(&[user_event("created", "user_0", T, T, "Zed")])
        .await;
    let mut signup = Running::start("on_signup", &args).await;
    signup
        .lines_where("the three watches", 3, |l| l.contains(": watching from "))
        .await;
    app.send_all_and_apply(&[
        user_event("created", "user_a", T, T, "Ada"),
        org_event("created", "org_x", T, T, "Xco"),
        envelope("user.created", T, plan("pro", user("user_b", T, "Bob"))),
    ])
    .await;
    let first = accepted_count(&log, 2, &signup).await;
    let prints = signup.lines_where("the organization", 1, |l| l.starts_with('{')).await;
    let mut done: Vec<String> = first.iter().map(|r| r.key.clone()).collect();
    done.extend(printed_keys(&prints));
    let stored = recorded(&state, &done, &signup).await;
    let first_run = signup.kill().await;

    // While it is down: a signup, an upgrade, an organization.
    app.send_all_and_apply(&[
        user_event("created", "user_c", T, T, "Cy"),
        envelope("user.updated", T + 10, plan("pro", user("user_a", T + 10, "Ada"))),
        org_event("created", "org_y", T, T, "Yco"),
    ])
    .await;
    let mut signup = Running::start("on_signup", &args).await;
    for rule in ["welcome", "upgraded", "new-organization"] {
        let from = format!("{rule}: watching from {}", stored[rule].as_str().unwrap());
        signup.line_where(&from, |l| l == from).await;
    }
    let all = accepted_count(&log, 4, &signup).await;
    let prints_after = signup.lines_where("the organization", 1, |l| l.starts_with('{')).await;

    // Exactly these actions, with these bodies, each accepted once.
    let mut bodies: Vec<(String, Value)> = all.iter().map(|r| (r.path.clone(), r.body.clone())).collect();
    bodies.sort_by_key(|(path, body)| (path.clone(), body.to_string()));
    let welcome = |id: &str, plan: &str| json!({"user_id": id, "email": format!("{id}@Example.com"), "plan": plan});
    assert_eq!(
        bodies,
        vec![
            ("/upgraded".into(), json!({"user_id": "user_a", "plan": "pro"})),
            ("/welcome".into(), welcome("user_a", "free")),
            ("/welcome".into(), welcome("user_b", "pro")),
            ("/welcome".into(), welcome("user_c", "free")),
        ]
    );
    let prints: Vec<Value> = prints
        .iter()
        .chain(&prints_after)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let printed: Vec<&Value> = prints.iter().map(|p| &p["body"]).collect();
    assert_eq!(
        printed,
        [
            &json!({"organization": "org_x", "name": "Xco"}),
            &json!({"organization": "org_y", "name": "Yco"})
        ],
        "first run:\n{first_run}\nsecond run:\n{}",
        signup.output()
    );
    // Every key: two refusals, then one success, and nothing after it (not even after the kill);
    // the waits between attempts grow (backoff of 100 ms, then 200 ms).
    let received = log.lock().unwrap().clone();
    for success in &all {
        let attempts: Vec<&Received> = received.iter().filter(|r| r.key == success.key).collect();
        let statuses: Vec<u16> = attempts.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [503, 503, 200], "{}", success.key);
        assert!(
            attempts[1].at - attempts[0].at >= Duration::from_millis(100),
            "{attempts:?}"
        );
        assert!(
            attempts[2].at - attempts[1].at >= Duration::from_millis(200),
            "{attempts:?}"
        );
        let (rule, cursor) = key_parts(&success.key);
        assert!(
            ["welcome", "upgraded"].contains(&rule) && Cursor::decode(cursor).is_ok(),
            "{}",
            success.key
        );
    }
    let keys: std::collections::HashSet<&str> = all.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys.len(), 4, "one key per action: {all:?}");
}

#[tokio::test]
async fn entitlements_answers_from_billing_with_plans_from_a_cache_that_its_watch_keeps_current() {
    let app = spawn_app().await;
    let plans = |pro: &[&str]| {
        vec![
            crate::events::plan("cplan_free", "free", "org", &["basic"], true, 0),
            crate::events::plan("cplan_pro", "pro", "org", pro, false, 2500),
        ]
    };
    clerk_mirror::backfill::plans::enqueue_changed(&app.pool, plans(&["basic", "sso"])).await.unwrap();
    app.send_all_and_apply(&[
        user_event("created", "user_a", T, T, "Ada"),
        user_event("created", "user_b", T, T, "Bob"),
        org_event("created", "org_x", T, T, "Xco"),
        org_event("created", "org_y", T, T, "Yco"),
        org_event("created", "org_z", T, T, "Zco"),
        membership_event("created", "mem_ax", "org_x", "user_a", T, T, "org:admin"),
        membership_event("created", "mem_by", "org_y", "user_b", T, T, "org:member"),
        membership_event("created", "mem_az", "org_z", "user_a", T, T, "org:member"),
        // org_x pays for Pro; org_y and org_z are on the default plan.
        crate::billing::item_on("active", "csub_item_x", "active", "organizations/org_x", "cplan_pro", T + 1, None, false),
    ])
    .await;
    let mut ent = Running::start("entitlements", &["--url".into(), grpc_url(&app)]).await;
    ent.line_where("the live watch", |l| json_line(l)["watch"] == "live")
        .await;
    let answer = |organization: &str, role: &str, plan: &str, features: &[&str]| json!({"user": "user_a", "organization": organization, "member": true, "role": role, "plan": plan, "features": features, "cached": true});
    let not_member =
        |user: &str, organization: &str| json!({"user": user, "organization": organization, "member": false});

    assert_eq!(
        ent.ask("user_a org_x org_y org_z", 3).await,
        [
            answer("org_x", "org:admin", "pro", &["basic", "sso"]),
            not_member("user_a", "org_y"),
            answer("org_z", "org:member", "free", &["basic"]),
        ]
    );

    // A feature added to Pro in Clerk reaches the plan cache through the watch.
    clerk_mirror::backfill::plans::enqueue_changed(&app.pool, plans(&["basic", "sso", "audit"])).await.unwrap();
    app.wait_until_applied().await;
    ent.line_where("the cache update", |l| {
        json_line(l) == json!({"cache": "updated", "plan": "pro", "features": ["basic", "sso", "audit"]})
    })
    .await;
    assert_eq!(
        ent.ask("user_a org_x", 1).await,
        [answer("org_x", "org:admin", "pro", &["audit", "basic", "sso"])]
    );

    // Pro ended: back on the default plan at once.
    app.send_all_and_apply(&[crate::billing::item_on("ended", "csub_item_x", "ended", "organizations/org_x", "cplan_pro", T + 2, None, false)])
        .await;
    assert_eq!(ent.ask("user_a org_x", 1).await, [answer("org_x", "org:admin", "free", &["basic"])]);

    // Memberships are asked each time: a removed member has no plan at once.
    app.send_all_and_apply(&[membership_event(
        "deleted",
        "mem_ax",
        "org_x",
        "user_a",
        T,
        T + 20,
        "org:admin",
    )])
    .await;
    assert_eq!(ent.ask("user_a org_x", 1).await, [not_member("user_a", "org_x")]);
    assert_eq!(
        ent.ask("user_b org_y", 1).await,
        [
            json!({"user": "user_b", "organization": "org_y", "member": true, "role": "org:member", "plan": "free", "features": ["basic"], "cached": true})
        ]
    );
}

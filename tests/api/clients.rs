//! The clients in `clients/` (TypeScript over gRPC and gRPC-Web, Python over gRPC), run as their
//! users would run them against a real server: each one's `examples/recipe` looks a user up,
//! reads a NOT_FOUND's `ErrorInfo`, checks a permission, lists then watches, and keeps watching
//! across a restart of the server, missing and repeating nothing. And their generated code is the
//! code the protos generate today.
//!
//! They need the clients' packages (`bash clients/install`, which `.ci/run` runs): without them a
//! test fails and says so; it never skips.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clerk_mirror::config::{Config, GrpcWebConfig};
use clerk_mirror::grpc::auth::{Token, Tokens};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::events::*;
use crate::helpers::*;

const READER: &str = "reader-secret-recipe-0123456789";
const ADA: &str = "user_recipe_ada";
const ORG: &str = "org_recipe";
const PERMISSION: &str = "org:invoices:manage";
const STOP: &str = "user_recipe_stop";
/// How long one step of a recipe may take (a cold `tsx` compiles the client first).
const STEP: Duration = Duration::from_secs(60);

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// How to start a client's recipe.
enum Language {
    TypeScript { protocol: &'static str },
    Python,
}

impl Language {
    fn command(&self, grpc_addr: std::net::SocketAddr, token: &str) -> Command {
        let (dir, program, script) = match self {
            Language::TypeScript { .. } => ("typescript", "node_modules/.bin/tsx", "examples/recipe.ts"),
            Language::Python => ("python", ".venv/bin/python", "examples/recipe.py"),
        };
        let dir = clients_dir().join(dir);
        assert!(
            dir.join(program).exists(),
            "{} is missing: install the clients' packages with `bash clients/install` (`.ci/run` does) and run the tests again",
            dir.join(program).display()
        );
        let mut command = Command::new(dir.join(program));
        command
            .arg(script)
            .current_dir(&dir)
            .env("CLERK_MIRROR_TOKEN", token)
            .env("RECIPE_USER_ID", ADA)
            .env("RECIPE_ORG_ID", ORG)
            .env("RECIPE_PERMISSION", PERMISSION)
            .env("RECIPE_STOP_USER_ID", STOP)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match self {
            Language::TypeScript { protocol } => {
                command
                    .env("CLERK_MIRROR_URL", format!("http://{grpc_addr}"))
                    .env("CLERK_MIRROR_PROTOCOL", protocol);
            }
            Language::Python => {
                command.env("CLERK_MIRROR_TARGET", grpc_addr.to_string());
            }
        }
        command
    }
}

/// A running recipe, read line by line (one JSON object each).
struct Recipe {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line read so far.
    seen: Vec<Value>,
}

impl Recipe {
    fn start(language: &Language, grpc_addr: std::net::SocketAddr, token: &str) -> Recipe {
        let mut child = language.command(grpc_addr, token).spawn().expect("start the recipe");
        let stdout = child.stdout.take().expect("its stdout");
        Recipe {
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// The next line, as JSON, kept in `seen`; panics (with the recipe's stderr) at the end of
    /// its output, on a line that is not JSON, or after [`STEP`] without one (`waiting`: for what).
    async fn next_value(&mut self, waiting: &str) -> Value {
        let line = match tokio::time::timeout(STEP, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => self.fail(&format!("its output ended while waiting for {waiting}")).await,
            Ok(Err(e)) => self.fail(&format!("its output could not be read: {e}")).await,
            Err(_) => self.fail(&format!("no {waiting} within {STEP:?}")).await,
        };
        let value: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => self.fail(&format!("printed a line that is not JSON ({e}): {line}")).await,
        };
        self.seen.push(value.clone());
        value
    }

    /// Reads lines until one whose `event` is `event`; panics on an `error` line (or as
    /// [`Recipe::next_value`] does).
    async fn expect(&mut self, event: &str) -> Value {
        loop {
            let value = self.next_value(&format!("`{event}`")).await;
            match value["event"].as_str() {
                Some(e) if e == event => return value,
                Some("error") => self.fail(&format!("reported an error while waiting for `{event}`")).await,
                _ => {}
            }
        }
    }

    /// Reads lines until the recipe reports an error; returns its message.
    async fn expect_error(&mut self) -> String {
        loop {
            let value = self.next_value("an `error`").await;
            if value["event"] == "error" {
                return value["message"].as_str().unwrap_or_default().to_string();
            }
        }
    }

    async fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.start_kill();
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = tokio::time::timeout(Duration::from_secs(5), e.read_to_string(&mut stderr)).await;
        }
        panic!("the recipe {what}\nits lines: {:#?}\nits stderr:\n{stderr}", self.seen);
    }

    /// The `change` lines read so far.
    fn changes(&self) -> Vec<&Value> {
        self.seen.iter().filter(|v| v["event"] == "change").collect()
    }
}

fn configure(config: &mut Config) {
    config.tokens = Tokens {
        readers: vec![Token::parse(&format!("recipe={READER}")).unwrap()],
        admins: vec![],
    };
    config.grpc_web = Some(GrpcWebConfig::default());
}

/// The recipe against a real server: seeded, then watched across a restart on the same port.
async fn run_recipe(language: Language) {
    let (cluster, name) = shared_database().await;
    let app = spawn_app_on(cluster, &name, configure).await;
    let grpc_addr = app.grpc_addr;
    app.send_all_and_apply(&[
        permission_event("created", "perm_recipe", PERMISSION, T, T),
        role_event("created", "role_recipe", "org:billing", T, T, &[("perm_recipe", PERMISSION)]),
        org_event("created", ORG, T, T, "Recipe Inc"),
        user_event("created", ADA, T, T, "Ada"),
        user_event("created", "user_recipe_grace", T, T, "Grace"),
        user_event("created", "user_recipe_alan", T, T, "Alan"),
        membership_event("created", "orgmem_recipe", ORG, ADA, T, T, "org:billing"),
    ])
    .await;

    let mut recipe = Recipe::start(&language, grpc_addr, READER);
    let lookup = recipe.expect("lookup").await;
    assert_eq!((lookup["id"].as_str(), lookup["first_name"].as_str()), (Some(ADA), Some("Ada")));
    let missing = recipe.expect("not_found").await;
    assert_eq!(missing["reason"], "RESOURCE_NOT_FOUND");
    assert_eq!(missing["code"].as_str().map(str::to_ascii_uppercase).as_deref(), Some("NOT_FOUND"));
    let check = recipe.expect("check").await;
    assert_eq!((&check["allowed"], &check["source"]), (&Value::Bool(true), &Value::from("CHECK_SOURCE_ROLE")));
    let listed = recipe.expect("listed").await;
    assert_eq!(listed["users"], 3);
    recipe.expect("caught_up").await;

    // A live change.
    app.send_all_and_apply(&[user_event("updated", ADA, T + 1, T + 1, "Augusta")]).await;
    let first = recipe.expect("change").await;
    assert_eq!((first["id"].as_str(), first["operation"].as_str()), (Some(ADA), Some("OPERATION_UPDATED")));

    // The server stops; a change lands while it is down (straight into the inbox, applied when
    // it is back); it restarts on the same port, and one more change arrives.
    let pool = app.pool.clone();
    app.stop().await;
    recipe.expect("disconnected").await;
    enqueue(&pool, &[user_event("updated", ADA, T + 2, T + 2, "Ada Augusta")]).await;
    let app = spawn_app_on(cluster, &name, |c| {
        configure(c);
        c.grpc_addr = grpc_addr;
    })
    .await;
    app.wait_until_applied().await;
    app.send_all_and_apply(&[user_event("created", STOP, T + 3, T + 3, "Stop")]).await;
    let done = recipe.expect("done").await;
    assert_eq!(done["users"], 4);
    let status = tokio::time::timeout(STEP, recipe.child.wait()).await.expect("it exits").expect("wait");
    assert!(status.success(), "the recipe exited with {status}");

    // Each change once, in log order: the one while it watched, the one made while the server
    // was down, the last one.
    let changes = recipe.changes();
    let seen: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["operation"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [(ADA, "OPERATION_UPDATED"), (ADA, "OPERATION_UPDATED"), (STOP, "OPERATION_CREATED")],
        "{changes:#?}"
    );
    let cursors: Vec<&str> = changes.iter().map(|c| c["cursor"].as_str().unwrap()).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_typescript_client_runs_the_recipe_over_grpc_across_a_restart() {
    run_recipe(Language::TypeScript { protocol: "grpc" }).await;
}

#[tokio::test]
async fn the_typescript_client_runs_the_recipe_over_grpc_web_across_a_restart() {
    run_recipe(Language::TypeScript { protocol: "grpc-web" }).await;
}

/// A recipe with a token the server does not know stops at its first call, with the server's
/// answer (over gRPC-Web on HTTP/1.1 too, where an answer given before the request's body was
/// read used to reach the client as a broken pipe).
async fn refused_without_a_valid_token(language: Language, says: &str) {
    let app = spawn_app_with(configure).await;
    for _ in 0..3 {
        let mut recipe = Recipe::start(&language, app.grpc_addr, "not-the-reader-token-0000");
        let message = recipe.expect_error().await;
        assert!(message.contains(says), "{message}");
        let status = tokio::time::timeout(STEP, recipe.child.wait()).await.expect("it exits").expect("wait");
        assert_eq!(status.code(), Some(1));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_typescript_client_with_a_wrong_token_is_told_unauthenticated_over_grpc_and_grpc_web() {
    refused_without_a_valid_token(Language::TypeScript { protocol: "grpc" }, "[unauthenticated]").await;
    refused_without_a_valid_token(Language::TypeScript { protocol: "grpc-web" }, "[unauthenticated]").await;
}

#[tokio::test]
async fn a_python_client_with_a_wrong_token_is_told_unauthenticated() {
    refused_without_a_valid_token(Language::Python, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn the_python_client_runs_the_recipe_across_a_restart() {
    run_recipe(Language::Python).await;
}

/// Runs one of a client's own checks (that its committed generated code is what the protos give
/// today, or its unit tests) in its directory (`needs`: what its install puts in place;
/// `program`: relative to the client's directory when it has a slash, else on the PATH).
async fn run_client_check(dir: &str, needs: &str, program: &str, args: &[&str]) {
    let dir = clients_dir().join(dir);
    assert!(
        dir.join(needs).exists(),
        "{} is missing: install the clients' packages with `bash clients/install` (`.ci/run` does) and run the tests again",
        dir.join(needs).display()
    );
    let program = match program.contains('/') {
        true => dir.join(program),
        false => PathBuf::from(program),
    };
    let out = Command::new(&program)
        .args(args)
        .current_dir(&dir)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "`{} {}` failed in {}:\n{}\n{}",
        program.display(),
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_typescript_clients_generated_code_is_current() {
    run_client_check("typescript", "node_modules/.bin/buf", "npm", &["run", "--silent", "check-generated"]).await;
}

#[tokio::test]
async fn the_python_clients_generated_code_is_current() {
    run_client_check("python", ".venv/bin/python", ".venv/bin/python", &["generate.py", "--check"]).await;
}

#[tokio::test]
async fn the_python_clients_own_tests_pass() {
    run_client_check(
        "python",
        ".venv/bin/python",
        ".venv/bin/python",
        &["-m", "unittest", "discover", "-s", "tests"],
    )
    .await;
}

#[tokio::test]
async fn the_typescript_client_and_its_examples_typecheck() {
    run_client_check("typescript", "node_modules/.bin/tsc", "npm", &["run", "--silent", "typecheck"]).await;
}

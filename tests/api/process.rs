//! Test support for the real binary: `clerk-mirror serve` as a child process.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;

/// A running `clerk-mirror serve` child process.
pub struct Served {
    pub child: Child,
    pub http_addr: String,
    pub grpc_addr: String,
    pub admin_addr: String,
    log: tokio::task::JoinHandle<Vec<String>>,
}

/// `serve`'s arguments for database `name` of `cluster`, signed with `SECRET`.
pub fn serve_args(cluster: &clerk_mirror::pg::Cluster, name: &str) -> Vec<std::ffi::OsString> {
    vec![
        "--database-url".into(),
        cluster.url(name).into(),
        "--webhook-secret".into(),
        SECRET.into(),
    ]
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_clerk-mirror")
}

impl Served {
    /// Starts `serve` with `args` and ports chosen by the OS; returns once it reports them.
    pub async fn start(args: &[std::ffi::OsString]) -> Served {
        Served::start_logging(args, "info").await
    }

    /// As `start`, with `RUST_LOG` set to `filter`.
    pub async fn start_logging(args: &[std::ffi::OsString], filter: &str) -> Served {
        let mut child = Command::new(binary())
            .args([
                "serve",
                "--log-format",
                "json",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .args(["--admin-addr", "127.0.0.1:0"])
            .args(args)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn clerk-mirror serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        // A server that never says `serving` fails the test (after a minute) instead of hanging it.
        let serving = async {
            loop {
                let Some(line) = lines.next_line().await.expect("read the server's log") else {
                    panic!("serve exited before serving; its log:\n{}", seen.join("\n"));
                };
                seen.push(line.clone());
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["fields"]["message"] == "serving"
                {
                    let field = |k: &str| v["fields"][k].as_str().expect("an address").to_string();
                    break (field("http"), field("grpc"), field("admin"));
                }
            }
        };
        let (http_addr, grpc_addr, admin_addr) = tokio::time::timeout(std::time::Duration::from_secs(60), serving)
            .await
            .unwrap_or_else(|_| panic!("serve (RUST_LOG={filter}) logged no `serving` line within 60 s"));
        // Keep draining the log so the server never blocks on a full pipe.
        let log = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push(line);
            }
            seen
        });
        Served {
            child,
            http_addr,
            grpc_addr,
            admin_addr,
            log,
        }
    }

    pub async fn send_as(&self, id: &str, body: &str) -> clerk_mirror::cli::send_event::Response {
        let secrets = clerk_mirror::ingest::verify::WebhookSecrets::parse(&[SECRET]).unwrap();
        clerk_mirror::cli::send_event::send(
            &format!("http://{}/webhooks/clerk", self.http_addr),
            &secrets,
            id,
            body.as_bytes(),
        )
        .await
        .expect("post")
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id().expect("running") as libc::pid_t;
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(mut self) -> Vec<String> {
        self.signal(libc::SIGTERM);
        let status = self.child.wait().await.expect("wait");
        let log = self.log.await.unwrap();
        assert!(status.success(), "serve exited with {status}; log:\n{}", log.join("\n"));
        log
    }

    /// SIGKILL: no cleanup at all.
    pub async fn kill(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait().await;
        let _ = self.log.await;
    }
}

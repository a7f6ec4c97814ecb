//! No PostgreSQL process outlives the test harness: a test binary whose test panics while its
//! clusters run (the shared one, held in a static, and one nothing stops), or which is
//! SIGKILLed, leaves no postmaster and no child of one (background writer, autovacuum launcher…)
//! behind. A process belongs to a cluster when its working directory (every PostgreSQL process
//! works in its PGDATA) or its command line is inside the cluster's data dir.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;

use crate::helpers::*;

/// What the helper process does once its clusters run: `panic` (the test fails; libtest then
/// ends the binary with `exit`) or `wait` (until it is SIGKILLed).
const MODE: &str = "CLERK_MIRROR_TEST_LEFTOVERS";
const HELPER: &str = "leftovers::the_helper_process_of_the_leftover_tests_does_nothing_as_a_plain_test";

#[tokio::test]
async fn the_helper_process_of_the_leftover_tests_does_nothing_as_a_plain_test() {
    let Some(mode) = std::env::var_os(MODE) else {
        return;
    };
    let clusters: Vec<&'static clerk_mirror::pg::Cluster> = if mode == "panic" {
        // And a cluster nobody stops: as one held by a task a failed test left behind.
        let (shared, forgotten) = tokio::join!(shared_cluster(), start_cluster("leftover"));
        vec![shared, Box::leak(Box::new(forgotten))]
    } else {
        vec![shared_cluster().await]
    };
    let dirs: Vec<String> = clusters
        .iter()
        .map(|c| format!("{} {}", c.data_dir().display(), c.socket_dir().display()))
        .collect();
    println!("CLUSTERS {}", dirs.join(" "));
    if mode == "panic" {
        panic!("a test fails while its clusters run");
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
    panic!("the helper process was not killed");
}

/// The processes (pid and command line) whose working directory or command line lies inside
/// `dir`, also once `dir` is deleted.
fn processes_of(dir: &Path) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    let dir_text = dir.to_string_lossy().into_owned();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        let cwd = std::fs::read_link(entry.path().join("cwd"))
            .map(|c| c.to_string_lossy().trim_end_matches(" (deleted)").to_owned())
            .unwrap_or_default();
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            })
            .unwrap_or(true);
        if !zombie && (Path::new(&cwd).starts_with(dir) || cmdline.contains(&dir_text)) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Runs this binary's helper test in `mode`, its stdout and stderr piped.
fn helper(mode: &str) -> tokio::process::Child {
    // This very binary, even if cargo is rewriting the file at its path meanwhile.
    tokio::process::Command::new("/proc/self/exe")
        .args([HELPER, "--exact", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the helper process")
}

/// The data dirs and socket dirs a helper's `CLUSTERS` line names.
fn clusters(stdout: &str) -> Option<Vec<(PathBuf, PathBuf)>> {
    let (_, dirs) = stdout.split_once("CLUSTERS ")?;
    let dirs: Vec<PathBuf> = dirs.lines().next()?.split(' ').map(PathBuf::from).collect();
    Some(dirs.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect())
}

#[tokio::test]
async fn a_test_that_panics_while_its_clusters_run_leaves_no_postgresql_process_behind() {
    let output = tokio::time::timeout(Duration::from_secs(90), helper("panic").wait_with_output())
        .await
        .expect("the helper process ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(101),
        "the helper test failed:\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("a test fails while its clusters run"), "{stderr}");
    let dirs = clusters(&stdout).unwrap_or_else(|| panic!("no clusters started:\n{stdout}\n{stderr}"));
    assert_eq!(dirs.len(), 2, "{stdout}");
    // Checked at once: the binary stopped its clusters before it ended, and a postmaster ends
    // after all its children.
    for (data_dir, socket_dir) in &dirs {
        let left = processes_of(data_dir);
        assert!(
            left.is_empty(),
            "processes of {} outlived the test binary: {left:?}",
            data_dir.display()
        );
        assert!(!socket_dir.exists(), "{} left behind", socket_dir.display());
    }
    assert!(!dirs[0].0.exists(), "the shared cluster's data dir was not removed");
    let _ = std::fs::remove_dir_all(&dirs[1].0);
}

#[tokio::test]
async fn a_sigkilled_test_binary_leaves_no_postgresql_process_behind() {
    let mut child = helper("wait");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let dirs = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(line) = lines.next_line().await.expect("read the helper's output") {
            if let Some(dirs) = clusters(&line) {
                return dirs;
            }
        }
        panic!("the helper process ended without starting its cluster");
    })
    .await
    .expect("the helper process started its cluster in time");
    let (data_dir, socket_dir) = &dirs[0];
    assert!(!processes_of(data_dir).is_empty(), "the cluster runs before the kill");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // The postmaster gets SIGKILL with its parent; its children notice and end.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_of(data_dir);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes outlived the SIGKILLed test binary: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A SIGKILLed server leaves its socket and data directories behind.
    let _ = std::fs::remove_dir_all(data_dir);
    let _ = std::fs::remove_dir_all(socket_dir);
}

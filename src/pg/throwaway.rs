//! The clusters that must not outlive this process (`die_with_parent`: the tests' and the
//! benchmark's): a registry of their running postmasters, stopped when the process exits.
//!
//! Rust runs no destructor of a static and libtest ends the test binary with `exit`, so a
//! cluster held in a static (the test binary's shared cluster), or one a failed test could not
//! stop in time, would otherwise be left to `PR_SET_PDEATHSIG`: a SIGKILL of the postmaster
//! alone, after which its children end only once they notice. Worse, an exit hook that deletes
//! a data dir under a running cluster sends its background writer and autovacuum launcher into
//! retry loops on the missing files (sleep a second after each error, never checking for the
//! postmaster's death) that outlive everything. An `atexit` hook, registered with
//! the first cluster, stops every postmaster still registered instead: fast shutdown (the
//! postmaster waits for all its children), then immediate shutdown, then SIGKILL, and waits for
//! each to be gone. A cluster that stops (or is killed) on its own leaves the registry.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use super::sys;

struct Running {
    pid: i32,
    pgdata: PathBuf,
    socket_dir: PathBuf,
}

static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

/// How long each step may take before the next, harder one.
const FAST: Duration = Duration::from_secs(5);
const IMMEDIATE: Duration = Duration::from_secs(5);
const KILLED: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(5);

fn running() -> std::sync::MutexGuard<'static, Vec<Running>> {
    RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Remembers the postmaster `pid` of `pgdata` (socket in `socket_dir`), to stop at exit.
pub(crate) fn register(pid: i32, pgdata: &Path, socket_dir: &Path) {
    HOOK.call_once(|| {
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe { libc::atexit(stop_at_exit) };
    });
    let mut running = running();
    running.retain(|r| r.pid != pid);
    running.push(Running {
        pid,
        pgdata: pgdata.to_path_buf(),
        socket_dir: socket_dir.to_path_buf(),
    });
}

/// Forgets `pid` (it was stopped or killed); harmless for a pid never registered.
pub(crate) fn forget(pid: i32) {
    running().retain(|r| r.pid != pid);
}

extern "C" fn stop_at_exit() {
    stop_throwaway_clusters();
}

/// Stops every running cluster of this process that was started to die with it
/// (`ClusterOptions::die_with_parent`) and has not been stopped, and waits until each postmaster
/// and its children are gone (at most about 12 s). Blocking; for exit hooks, e.g. before
/// deleting the clusters' directories. Runs by itself at exit; calling it again is harmless.
pub fn stop_throwaway_clusters() {
    let left = std::mem::take(&mut *running());
    // Only a postmaster of its own data dir (a pid the kernel gave to another process since is
    // left alone).
    let mut left: Vec<Running> = left
        .into_iter()
        .filter(|r| sys::is_live_postmaster(r.pid, &r.pgdata))
        .collect();
    for (signal, wait) in [
        (libc::SIGINT, FAST),
        (libc::SIGQUIT, IMMEDIATE),
        (libc::SIGKILL, KILLED),
    ] {
        if left.is_empty() {
            break;
        }
        for r in &left {
            let _ = sys::send_signal(r.pid, signal);
        }
        let deadline = Instant::now() + wait;
        loop {
            left.retain(|r| {
                // Reaps it if it is our child (a zombie holds its pid).
                sys::reap_if_child(r.pid);
                let alive = sys::is_running(r.pid);
                if !alive {
                    // Empty once the postmaster is gone (it removes its socket).
                    let _ = std::fs::remove_dir(&r.socket_dir);
                }
                alive
            });
            if left.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
    }
    for r in &left {
        eprintln!(
            "clerk-mirror: PostgreSQL pid {} of {} still runs after SIGKILL; stop it by hand",
            r.pid,
            r.pgdata.display()
        );
    }
}

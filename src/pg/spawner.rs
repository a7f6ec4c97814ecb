//! The one dedicated, never-exiting thread that spawns postmasters.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not when the process
//! does. A postmaster spawned from a tokio worker or a `spawn_blocking` thread would therefore be
//! SIGKILLed whenever the runtime retires that thread. Every postmaster is spawned here instead,
//! from a thread that lives as long as the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send + 'static>;

static SPAWNER: OnceLock<io::Result<mpsc::Sender<Job>>> = OnceLock::new();

fn spawner() -> io::Result<&'static mpsc::Sender<Job>> {
    let started = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("clerk-mirror-pg-spawner".into())
            .spawn(move || {
                // The static keeps a Sender alive forever, so this loop never ends.
                for job in rx {
                    job();
                }
            })
            .map(|_| tx)
    });
    match started {
        Ok(tx) => Ok(tx),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

/// Spawns `cmd` from the spawner thread. With `die_with_parent`, the child gets
/// `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with this process even if the process is SIGKILLed.
pub(crate) async fn spawn(mut cmd: Command, die_with_parent: bool) -> io::Result<Child> {
    if die_with_parent {
        // SAFETY: getpid is async-signal-safe.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs between fork and exec (after std has switched uid/gid, which
        // would otherwise clear the death signal); it only makes async-signal-safe syscalls and
        // does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // If the caller went away (its future was cancelled), do not leave an untracked server.
        if let Err(Ok(mut child)) = reply_tx.send(cmd.spawn()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    });
    spawner()?
        .send(job)
        .map_err(|_| io::Error::other("the PostgreSQL spawner thread is gone"))?;
    reply_rx
        .await
        .map_err(|_| io::Error::other("the PostgreSQL spawner thread dropped a request"))?
}

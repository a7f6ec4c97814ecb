//! Thin, safe wrappers over the libc calls the cluster needs: user lookup (`getpwnam_r`),
//! signals, process liveness checks through /proc, and non-blocking reaping.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A system account that PostgreSQL runs as when clerk-mirror runs as root.
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) fn euid() -> u32 {
    // SAFETY: as above.
    unsafe { libc::geteuid() }
}

/// Looks a user up in the password database. `Ok(None)` when there is no such user.
pub(crate) fn lookup_user(name: &str) -> io::Result<Option<RunAs>> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf_len = 4096usize;
    loop {
        let mut buf = vec![0 as libc::c_char; buf_len];
        // SAFETY: an all-zero passwd is a valid value (null pointers, zero ids); getpwnam_r fills it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the duration of the call and buf_len is buf's length.
        let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf_len < (1 << 20) {
            buf_len *= 4;
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        let home = if pwd.pw_dir.is_null() {
            PathBuf::from("/")
        } else {
            // SAFETY: pw_dir points into buf, NUL-terminated, and buf is still alive.
            PathBuf::from(OsStr::from_bytes(unsafe { CStr::from_ptr(pwd.pw_dir) }.to_bytes()))
        };
        return Ok(Some(RunAs {
            name: name.to_owned(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home,
        }));
    }
}

/// Sends `signal` to `pid`. `pid` must be positive (never a process group or "everyone").
pub(crate) fn send_signal(pid: i32, signal: libc::c_int) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill has no memory-safety preconditions; pid > 0 targets exactly one process.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `pid` is a running (not zombie) process this user may signal.
pub(crate) fn is_running(pid: i32) -> bool {
    if pid <= 0 || send_signal(pid, 0).is_err() {
        return false;
    }
    !is_zombie(pid)
}

/// Whether `pid` is a running (not zombie) process, even one this user may not signal.
pub(crate) fn exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match send_signal(pid, 0) {
        Ok(()) => !is_zombie(pid),
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
    }
}

fn is_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => true, // gone between kill(0) and the read
    }
}

/// Whether `pid` is a live PostgreSQL postmaster working on `pgdata`: it runs, its program is
/// `postgres`/`postmaster`, and (when /proc lets us see it) its working directory is `pgdata`,
/// which is where a postmaster always chdirs to. Guards against a stale postmaster.pid whose pid
/// has been reused by an unrelated process.
pub(crate) fn is_live_postmaster(pid: i32, pgdata: &Path) -> bool {
    is_running(pid) && looks_like_postmaster(pid, pgdata, false)
}

/// [`is_live_postmaster`] for a server that may belong to another user: one we may not signal or
/// inspect counts as live.
pub(crate) fn may_be_live_postmaster(pid: i32, pgdata: &Path) -> bool {
    exists(pid) && looks_like_postmaster(pid, pgdata, true)
}

fn looks_like_postmaster(pid: i32, pgdata: &Path, trust_hidden: bool) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return trust_hidden && exists(pid);
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let program = Path::new(OsStr::from_bytes(argv0))
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let named_postgres = program == b"postgres"
        || program == b"postmaster"
        || argv0.starts_with(b"postgres:")
        || argv0.starts_with(b"postmaster");
    if !named_postgres {
        return false;
    }
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => {
            let want = std::fs::canonicalize(pgdata).unwrap_or_else(|_| pgdata.to_path_buf());
            cwd == want
        }
        // Not allowed to look (another user's process, not root): trust the program name.
        Err(_) => true,
    }
}

/// Reaps `pid` if it is an exited child of this process; harmless otherwise.
pub(crate) fn reap_if_child(pid: i32) {
    if pid <= 0 {
        return;
    }
    let mut status = 0;
    // SAFETY: status is a valid out-pointer; WNOHANG never blocks; pid > 0 names one process.
    unsafe {
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

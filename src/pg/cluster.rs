//! [`Cluster`]: one private PostgreSQL cluster in a data directory: initdb on first use, start,
//! readiness, ownership (a `flock`ed lock file), attaching to a cluster another process owns,
//! adopting a postmaster whose owner was SIGKILLed, and stopping.
//!
//! Layout of `<data_dir>`: `pgdata/` (PGDATA), `postgres.log` (the server's stdout/stderr,
//! appended), `clerk-mirror.lock` (held with an exclusive `flock` by the owning process, which
//! writes its pid into it), and `initdb-in-progress` while initdb runs. The unix socket lives in a
//! short directory of its own, `$TMPDIR/clerk-mirror-<12 hex digits of a hash of the data dir>`,
//! because socket paths longer than 107 bytes fail in deep checkouts.
//!
//! An interrupted initdb is recognised by the `initdb-in-progress` marker, which clerk-mirror
//! creates before running initdb and deletes only after initdb succeeded: if the marker is present
//! on start, `pgdata/` is ours and incomplete, so it is deleted and initdb runs again. A non-empty
//! `pgdata/` without `PG_VERSION` and without the marker is not provably ours and is refused.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tracing::{debug, info, warn};

use super::ClusterError;
use super::layout::{DB_SUPERUSER, LOCK_FILE, LOG_FILE, PGDATA_DIR, PORT};
use super::pidfile::{self, PidFile};
use super::setup::{Prepared, postgres_command, prepare, tail_lines};
use super::spawner;
use super::sys;
use super::throwaway;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const DROP_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);
const ATTACH_POLL: Duration = Duration::from_millis(20);
/// After a crash, old backends may hold the shared memory segment for a moment.
const SHMEM_RETRIES: u32 = 25;
const SHMEM_RETRY_DELAY: Duration = Duration::from_millis(200);

/// How to run a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Directory the cluster lives in. Layout: <data_dir>/pgdata (PGDATA), <data_dir>/postgres.log,
    /// <data_dir>/clerk-mirror.lock. Created if missing.
    pub data_dir: PathBuf,
    /// true: PostgreSQL's durability defaults (fsync, synchronous_commit, full_page_writes on) — the
    /// user's database. false (tests only): initdb -N, fsync=off, synchronous_commit=off,
    /// full_page_writes=off.
    pub durable: bool,
    /// true (tests): the cluster does not outlive this process. A postmaster spawned here gets
    /// PR_SET_PDEATHSIG(SIGKILL), so it dies with this process even if the process is
    /// SIGKILLed; and every postmaster this process owns and has not stopped (one held in a
    /// static, or left by a failed test) is stopped at exit ([`super::stop_throwaway_clusters`]).
    /// false (serve): the postmaster survives a SIGKILL of its parent, and the next start adopts
    /// it.
    pub die_with_parent: bool,
}

enum Postmaster {
    /// We spawned it.
    Child(Child),
    /// Its owner vanished (SIGKILLed) and we took it over: not our child.
    Adopted(i32),
    /// Another live process owns it.
    Attached(i32),
    /// Stopped, killed, or leaked.
    Gone,
}

/// A running private PostgreSQL cluster, owned (started or adopted) by this process or attached
/// to one that another process owns.
pub struct Cluster {
    data_dir: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    owns: bool,
    postmaster: Postmaster,
    /// The `flock`ed lock file while we own the cluster.
    lock: Option<File>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("data_dir", &self.data_dir)
            .field("socket_dir", &self.socket_dir)
            .field("port", &self.port)
            .field("owns_postmaster", &self.owns)
            .field("pid", &self.pid())
            .finish()
    }
}

/// How long a taken lock must stay taken before its holder counts as the owner.
const LOCK_GRACE: Duration = Duration::from_millis(500);

impl Cluster {
    /// initdb on first use, then start the postmaster — or adopt one whose owner vanished, or
    /// attach to one that another live process owns on this data dir (waiting up to 60 s for it
    /// to be ready). `durable` and `die_with_parent` only apply to a postmaster spawned here; an
    /// adopted or attached one keeps the settings it was started with.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        let started = Instant::now();
        let requested = opts.data_dir.clone();
        let (data_dir, lock) = blocking(move || open_data_dir(&requested)).await?;
        let pgdata = data_dir.join(PGDATA_DIR);
        let lock_path = data_dir.join(LOCK_FILE);
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut said_waiting = false;
        let mut blocked_since: Option<Instant> = None;
        loop {
            match lock.try_lock() {
                Ok(()) => {
                    let cluster = start_as_owner(&opts, data_dir, pgdata, lock).await?;
                    cluster.announce_owned(&opts, started);
                    return Ok(cluster);
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(ClusterError::io("lock", lock_path, e));
                }
            }
            // A process forked (not yet exec'd) anywhere in this program holds a copy of every
            // descriptor, a just-released lock included: an owner is only believed after the
            // lock stayed taken for a moment.
            let blocked = *blocked_since.get_or_insert_with(Instant::now);
            if blocked.elapsed() < LOCK_GRACE {
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
            // Another process owns the cluster: use its postmaster once it is ready.
            if let Some(other) = ready_postmaster_of_another(&pgdata) {
                info!(
                    data_dir = %data_dir.display(),
                    socket_dir = %other.socket_dir.display(),
                    pid = other.pid,
                    "attached to the embedded PostgreSQL of another process"
                );
                return Ok(Cluster {
                    data_dir,
                    pgdata,
                    socket_dir: other.socket_dir,
                    port: other.port,
                    owns: false,
                    postmaster: Postmaster::Attached(other.pid),
                    lock: None,
                });
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::AttachTimeout {
                    holder: lock_holder(&lock),
                    data_dir,
                    secs: READY_TIMEOUT.as_secs(),
                });
            }
            if !said_waiting {
                said_waiting = true;
                info!(data_dir = %data_dir.display(), holder = %lock_holder(&lock),
                    "data dir is owned by another process; waiting for its PostgreSQL");
            }
            tokio::time::sleep(ATTACH_POLL).await;
        }
    }

    /// Once this process owns a ready postmaster: registers it to be stopped at exit if it
    /// dies with this process, and logs that it is ready.
    fn announce_owned(&self, opts: &ClusterOptions, started: Instant) {
        if opts.die_with_parent
            && let Some(pid) = self.pid()
        {
            throwaway::register(pid, &self.pgdata, &self.socket_dir);
        }
        info!(
            data_dir = %self.data_dir.display(),
            socket_dir = %self.socket_dir.display(),
            pid = self.pid(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "embedded PostgreSQL ready"
        );
    }

    /// Connect options for a database of this cluster over its unix socket, user `postgres`.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.socket_dir)
            .port(self.port)
            .username(DB_SUPERUSER)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
    }

    /// `postgres://postgres@localhost/<db>?host=<socket dir>` (percent-encoded).
    pub fn url(&self, database: &str) -> String {
        let mut url = format!(
            "postgres://{DB_SUPERUSER}@localhost/{}?host={}",
            percent_encode(database.as_bytes(), false),
            percent_encode(self.socket_dir.as_os_str().as_encoded_bytes(), true),
        );
        if self.port != PORT {
            url.push_str(&format!("&port={}", self.port));
        }
        url
    }

    /// The directory holding the server's unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The cluster's directory (canonicalised), as passed in [`ClusterOptions::data_dir`].
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The PostgreSQL data directory, `<data_dir>/pgdata`.
    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// The server log, `<data_dir>/postgres.log`.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// The port that names the socket file (no TCP listener).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid, while known to be running (`None` after stop/kill).
    pub fn pid(&self) -> Option<i32> {
        match &self.postmaster {
            Postmaster::Child(child) => i32::try_from(child.id()).ok(),
            Postmaster::Adopted(pid) | Postmaster::Attached(pid) => Some(*pid),
            Postmaster::Gone => None,
        }
    }

    /// Whether this process is responsible for stopping the postmaster (it started it, or
    /// adopted an orphan). Decided at start; unchanged by `stop`.
    pub fn owns_postmaster(&self) -> bool {
        self.owns
    }

    /// Fast shutdown (SIGINT to the postmaster), then wait until it has exited (at most 30 s,
    /// then SIGKILL), then release the lock file. No-op when attached to a postmaster another
    /// live process owns. Idempotent.
    pub async fn stop(&mut self) -> Result<(), ClusterError> {
        let started = Instant::now();
        match std::mem::replace(&mut self.postmaster, Postmaster::Gone) {
            Postmaster::Child(mut child) => {
                let pid = i32::try_from(child.id()).unwrap_or(0);
                if let Err(source) = stop_child(&mut child).await {
                    self.postmaster = Postmaster::Child(child);
                    return Err(ClusterError::Stop { pid, source });
                }
                throwaway::forget(pid);
                info!(pid, elapsed_ms = started.elapsed().as_millis() as u64,
                    data_dir = %self.data_dir.display(), "embedded PostgreSQL stopped");
            }
            Postmaster::Adopted(pid) => {
                if let Err(source) = stop_pid(pid).await {
                    self.postmaster = Postmaster::Adopted(pid);
                    return Err(ClusterError::Stop { pid, source });
                }
                throwaway::forget(pid);
                info!(pid, elapsed_ms = started.elapsed().as_millis() as u64,
                    data_dir = %self.data_dir.display(), "adopted embedded PostgreSQL stopped");
            }
            Postmaster::Attached(_) | Postmaster::Gone => {}
        }
        self.release();
        Ok(())
    }

    /// SIGKILL the postmaster, as in a crash (for tests). Only a postmaster this process owns;
    /// no-op when attached. The lock stays held until [`stop`](Self::stop) or drop.
    pub fn kill(&mut self) {
        match std::mem::replace(&mut self.postmaster, Postmaster::Gone) {
            Postmaster::Child(mut child) => {
                warn!(pid = child.id(), "killing embedded PostgreSQL with SIGKILL");
                let _ = child.kill();
                // Exits at once after SIGKILL.
                let _ = child.wait();
                throwaway::forget(i32::try_from(child.id()).unwrap_or(0));
            }
            Postmaster::Adopted(pid) => {
                warn!(pid, "killing adopted embedded PostgreSQL with SIGKILL");
                let _ = sys::send_signal(pid, libc::SIGKILL);
                let deadline = Instant::now() + KILL_TIMEOUT;
                while pid_alive_reaping(pid) && Instant::now() < deadline {
                    std::thread::sleep(POLL);
                }
                throwaway::forget(pid);
            }
            other => self.postmaster = other,
        }
    }

    /// Test support: release the lock file and forget the postmaster without stopping it, as if
    /// the owning process had been SIGKILLed. The next [`start`](Self::start) adopts it.
    #[doc(hidden)]
    pub fn leak_as_orphan(mut self) {
        // Dropping a std Child neither kills nor waits for it.
        self.postmaster = Postmaster::Gone;
        self.lock = None;
    }

    /// After the postmaster has exited: remove its (then empty) socket directory and release the
    /// lock. The socket dir goes first, while no other process can be starting the cluster.
    fn release(&mut self) {
        if self.lock.is_some() {
            let _ = std::fs::remove_dir(&self.socket_dir);
        }
        self.lock = None;
    }
}

impl Drop for Cluster {
    /// If owned and still running: fast shutdown (SIGINT), waiting at most 2 s for it.
    fn drop(&mut self) {
        // The registry of clusters to stop at exit holds owned postmasters only.
        let owned = if self.owns { self.pid() } else { None };
        let exited = match std::mem::replace(&mut self.postmaster, Postmaster::Gone) {
            Postmaster::Child(mut child) => {
                if matches!(child.try_wait(), Ok(None)) {
                    let pid = i32::try_from(child.id()).unwrap_or(0);
                    debug!(pid, "Cluster dropped while running: fast shutdown");
                    let _ = sys::send_signal(pid, libc::SIGINT);
                    let deadline = Instant::now() + DROP_WAIT;
                    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                        std::thread::sleep(POLL);
                    }
                }
                matches!(child.try_wait(), Ok(Some(_)))
            }
            Postmaster::Adopted(pid) => {
                if pid_alive_reaping(pid) {
                    debug!(pid, "Cluster dropped while running: fast shutdown");
                    let _ = sys::send_signal(pid, libc::SIGINT);
                    let deadline = Instant::now() + DROP_WAIT;
                    while pid_alive_reaping(pid) && Instant::now() < deadline {
                        std::thread::sleep(POLL);
                    }
                }
                !pid_alive_reaping(pid)
            }
            Postmaster::Attached(_) | Postmaster::Gone => true,
        };
        if exited {
            if let Some(pid) = owned {
                throwaway::forget(pid);
            }
            self.release();
        } else {
            warn!(data_dir = %self.data_dir.display(),
                "embedded PostgreSQL still shutting down; the next start will wait for it");
        }
    }
}

/// The owner's path: adopt a live orphan, else (initdb if needed and) start a postmaster.
async fn start_as_owner(
    opts: &ClusterOptions,
    data_dir: PathBuf,
    pgdata: PathBuf,
    lock: File,
) -> Result<Cluster, ClusterError> {
    record_lock_holder(&lock);
    if let Some(orphan) = adopt_orphan(&data_dir, &pgdata).await? {
        return Ok(Cluster {
            data_dir,
            pgdata,
            socket_dir: orphan.socket_dir,
            port: orphan.port,
            owns: true,
            postmaster: Postmaster::Adopted(orphan.pid),
            lock: Some(lock),
        });
    }
    let prepared = prepare_holding_lock(&data_dir, opts.durable, &lock).await?;
    let child = spawn_until_ready(opts, &prepared, &pgdata, &data_dir.join(LOG_FILE)).await?;
    Ok(Cluster {
        data_dir,
        pgdata,
        socket_dir: prepared.socket_dir,
        port: PORT,
        owns: true,
        postmaster: Postmaster::Child(child),
        lock: Some(lock),
    })
}

/// A ready postmaster found through its `postmaster.pid`: who it is and where its socket lives.
struct ReadyPostmaster {
    pid: i32,
    socket_dir: PathBuf,
    port: u16,
}

/// The postmaster another process owns, if its `postmaster.pid` says it is ready, names a
/// socket directory, and its pid may be a live postmaster of `pgdata`.
fn ready_postmaster_of_another(pgdata: &Path) -> Option<ReadyPostmaster> {
    let pf = pidfile::read(pgdata)?;
    if !pf.is_ready() || !sys::may_be_live_postmaster(pf.pid, pgdata) {
        return None;
    }
    Some(ReadyPostmaster {
        pid: pf.pid,
        socket_dir: pf.socket_dir?,
        port: pf.port.unwrap_or(PORT),
    })
}

/// Records who holds the lock, for the messages of processes that have to wait.
fn record_lock_holder(lock: &File) {
    let me = format!("pid {}\n", std::process::id());
    if let Err(e) = lock.set_len(0).and_then(|()| lock.write_all_at(me.as_bytes(), 0)) {
        debug!(error = %e, "could not write the pid into the lock file");
    }
}

/// A live postmaster without a lock holder was left behind by a SIGKILLed owner: waits until it
/// is ready and takes it over. `None` if there is none, or it exited while we waited (it was
/// shutting down; the caller starts a fresh one).
async fn adopt_orphan(data_dir: &Path, pgdata: &Path) -> Result<Option<ReadyPostmaster>, ClusterError> {
    let Some(pf) = pidfile::read(pgdata) else {
        return Ok(None);
    };
    if !sys::is_live_postmaster(pf.pid, pgdata) {
        return Ok(None);
    }
    let pid = pf.pid;
    info!(pid, data_dir = %data_dir.display(), "adopting a PostgreSQL left running by a previous owner");
    match wait_ready(pgdata, pid, || (!pid_alive_reaping(pid)).then(|| "exited".to_owned())).await {
        Ok(pf) => {
            let socket_dir = pf.socket_dir.clone().ok_or_else(|| {
                ClusterError::Internal(format!(
                    "{} names no socket directory",
                    pgdata.join(pidfile::FILE_NAME).display()
                ))
            })?;
            Ok(Some(ReadyPostmaster {
                pid,
                socket_dir,
                port: pf.port.unwrap_or(PORT),
            }))
        }
        Err(WaitFailure::Exited(_)) => {
            info!(pid, "the left-behind PostgreSQL exited; starting a new one");
            Ok(None)
        }
        Err(WaitFailure::TimedOut) => Err(ClusterError::StartTimeout {
            pid,
            secs: READY_TIMEOUT.as_secs(),
            log: data_dir.join(LOG_FILE),
        }),
    }
}

/// Runs [`prepare`] (binaries, user, directories, initdb) on a blocking thread. A duplicate of
/// the locked descriptor keeps the flock held until it is done, even if this future is dropped
/// meanwhile.
async fn prepare_holding_lock(data_dir: &Path, durable: bool, lock: &File) -> Result<Prepared, ClusterError> {
    let data_dir = data_dir.to_path_buf();
    let held = lock
        .try_clone()
        .map_err(|e| ClusterError::io("duplicate", data_dir.join(LOCK_FILE), e))?;
    blocking(move || {
        let prepared = prepare(&data_dir, durable);
        drop(held);
        prepared
    })
    .await
}

/// Spawns the postmaster and waits until it is ready, spawning again while the backends of a
/// crashed predecessor still hold the shared memory block.
async fn spawn_until_ready(
    opts: &ClusterOptions,
    prepared: &Prepared,
    pgdata: &Path,
    log_path: &Path,
) -> Result<Child, ClusterError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut child, offset) = spawn_postmaster(opts, prepared, pgdata, log_path).await?;
        let pid = i32::try_from(child.id()).unwrap_or(0);
        debug!(pid, attempt, "postgres spawned");
        match wait_spawned_ready(&mut child, pgdata, pid).await {
            Ok(()) => return Ok(child),
            Err(WaitFailure::Exited(status)) => {
                let tail = log_tail(log_path, offset);
                if tail.contains("pre-existing shared memory block") && attempt < SHMEM_RETRIES {
                    debug!(attempt, "old backends still hold shared memory; retrying");
                    tokio::time::sleep(SHMEM_RETRY_DELAY).await;
                    continue;
                }
                return Err(start_failure(status, tail, &prepared.socket_dir, pgdata, log_path));
            }
            Err(WaitFailure::TimedOut) => {
                // Left running (e.g. long crash recovery): the next start adopts it.
                return Err(ClusterError::StartTimeout {
                    pid,
                    secs: READY_TIMEOUT.as_secs(),
                    log: log_path.to_path_buf(),
                });
            }
        }
    }
}

/// Spawns one postmaster writing to the server log; returns it and the log's length before it
/// started (where its own lines begin).
async fn spawn_postmaster(
    opts: &ClusterOptions,
    prepared: &Prepared,
    pgdata: &Path,
    log_path: &Path,
) -> Result<(Child, u64), ClusterError> {
    let (log, offset) = open_log(log_path)?;
    let cmd =
        postgres_command(prepared, pgdata, opts.durable, &log).map_err(|e| ClusterError::io("open", log_path, e))?;
    let child = spawner::spawn(cmd, opts.die_with_parent)
        .await
        .map_err(|source| ClusterError::BinariesUnusable {
            user: prepared.user_name(),
            bin: prepared.bin_dir.join("postgres"),
            source,
        })?;
    drop(log);
    Ok((child, offset))
}

/// Waits until a freshly spawned postmaster is ready; if this future is dropped while waiting
/// (e.g. Ctrl-C during startup), shuts it down.
async fn wait_spawned_ready(child: &mut Child, pgdata: &Path, pid: i32) -> Result<(), WaitFailure> {
    let mut starting = StartingChild { child, armed: true };
    let outcome = wait_ready(pgdata, pid, || starting.exited()).await;
    starting.armed = false;
    outcome.map(|_| ())
}

/// The error for a postmaster that exited during startup: another postmaster holding the data
/// directory's or the socket's lock file, else the end of its log.
fn start_failure(status: String, tail: String, socket_dir: &Path, pgdata: &Path, log_path: &Path) -> ClusterError {
    if let Some(line) = tail
        .lines()
        .find(|l| l.contains("lock file") && l.contains("already exists"))
    {
        let what = if line.contains(".s.PGSQL.") { socket_dir } else { pgdata };
        // Drop the log line prefix (time, pid) up to the severity.
        let detail = line.find("FATAL:").map_or(line, |at| &line[at..]);
        return ClusterError::AnotherPostmaster {
            what: what.to_path_buf(),
            detail: detail.trim().to_owned(),
        };
    }
    ClusterError::StartFailed {
        status,
        log: log_path.to_path_buf(),
        tail,
    }
}

/// A freshly spawned postmaster that is not yet ready: fast shutdown if dropped while armed
/// (the start was abandoned).
struct StartingChild<'a> {
    child: &'a mut Child,
    armed: bool,
}

impl StartingChild<'_> {
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("could not be waited for: {e}")),
        }
    }
}

impl Drop for StartingChild<'_> {
    fn drop(&mut self) {
        if self.armed
            && matches!(self.child.try_wait(), Ok(None))
            && let Ok(pid) = i32::try_from(self.child.id())
        {
            warn!(pid, "start abandoned: stopping the PostgreSQL being started");
            let _ = sys::send_signal(pid, libc::SIGINT);
        }
    }
}

enum WaitFailure {
    Exited(String),
    TimedOut,
}

/// Polls until postmaster.pid names `pid` and says `ready` (what `pg_ctl -w` checks), or
/// `exited` reports that the process is gone, or [`READY_TIMEOUT`] passes.
async fn wait_ready(
    pgdata: &Path,
    pid: i32,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<PidFile, WaitFailure> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(pf) = pidfile::read(pgdata)
            && pf.pid == pid
            && pf.is_ready()
        {
            return Ok(pf);
        }
        if let Some(status) = exited() {
            return Err(WaitFailure::Exited(status));
        }
        if Instant::now() >= deadline {
            return Err(WaitFailure::TimedOut);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn stop_child(child: &mut Child) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
    signal_unless_gone(pid, libc::SIGINT)?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    warn!(
        pid,
        "PostgreSQL did not stop within {} s; sending SIGKILL",
        STOP_TIMEOUT.as_secs()
    );
    child.kill()?;
    let deadline = Instant::now() + KILL_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "still running after SIGKILL"))
}

async fn stop_pid(pid: i32) -> io::Result<()> {
    if !pid_alive_reaping(pid) {
        return Ok(());
    }
    signal_unless_gone(pid, libc::SIGINT)?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !pid_alive_reaping(pid) {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    warn!(
        pid,
        "PostgreSQL did not stop within {} s; sending SIGKILL",
        STOP_TIMEOUT.as_secs()
    );
    signal_unless_gone(pid, libc::SIGKILL)?;
    let deadline = Instant::now() + KILL_TIMEOUT;
    while Instant::now() < deadline {
        if !pid_alive_reaping(pid) {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "still running after SIGKILL"))
}

fn signal_unless_gone(pid: i32, signal: libc::c_int) -> io::Result<()> {
    match sys::send_signal(pid, signal) {
        Err(e) if e.raw_os_error() != Some(libc::ESRCH) => Err(e),
        _ => Ok(()),
    }
}

/// Whether `pid` still runs; reaps it first if it is an exited child of ours (a leaked postmaster
/// that was adopted in the same process).
fn pid_alive_reaping(pid: i32) -> bool {
    sys::reap_if_child(pid);
    sys::is_running(pid)
}

/// Creates `data_dir` if needed and opens (creating) its lock file, unlocked.
fn open_data_dir(requested: &Path) -> Result<(PathBuf, File), ClusterError> {
    let existed = requested.exists();
    std::fs::create_dir_all(requested).map_err(|e| ClusterError::io("create the data directory", requested, e))?;
    if !existed && sys::is_root() {
        // The server's user must be able to traverse it, whatever root's umask.
        let _ = std::fs::set_permissions(requested, std::fs::Permissions::from_mode(0o755));
    }
    let data_dir =
        std::fs::canonicalize(requested).map_err(|e| ClusterError::io("resolve the data directory", requested, e))?;
    let lock_path = data_dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&lock_path)
        .map_err(|e| ClusterError::io("open", &lock_path, e))?;
    Ok((data_dir, lock))
}

fn lock_holder(lock: &File) -> String {
    let mut text = String::new();
    let mut reader = lock;
    let _ = reader.seek(SeekFrom::Start(0));
    let _ = reader.read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        "pid unknown".to_owned()
    } else {
        text.to_owned()
    }
}

fn open_log(path: &Path) -> Result<(File, u64), ClusterError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ClusterError::io("open", path, e))?;
    let offset = log.metadata().map_err(|e| ClusterError::io("inspect", path, e))?.len();
    Ok((log, offset))
}

/// The last lines the server wrote to the log since `offset`.
fn log_tail(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(())
    });
    match read {
        Ok(()) if !text.trim().is_empty() => tail_lines(&text, 20),
        Ok(()) => "(the log is empty)".to_owned(),
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` if `keep_slash`).
fn percent_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ClusterError> + Send + 'static,
) -> Result<T, ClusterError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClusterError::Internal(format!("blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_are_percent_encoded() {
        assert_eq!(percent_encode(b"/tmp/a b+c", true), "/tmp/a%20b%2Bc");
        assert_eq!(percent_encode(b"my/db", false), "my%2Fdb");
    }
}

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
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tracing::{debug, info, warn};

use super::ClusterError;
use super::binaries::{self, BinDirSources};
use super::pidfile::{self, PidFile};
use super::spawner;
use super::sys::{self, RunAs};

/// `<data_dir>/pgdata`: the PostgreSQL data directory (PGDATA).
pub const PGDATA_DIR: &str = "pgdata";
/// `<data_dir>/postgres.log`: the server's stdout and stderr, appended across runs.
pub const LOG_FILE: &str = "postgres.log";
/// `<data_dir>/clerk-mirror.lock`: `flock`ed by the process that owns the cluster.
pub const LOCK_FILE: &str = "clerk-mirror.lock";
/// `<data_dir>/initdb-in-progress`: exists only while (or if interrupted during) initdb.
pub const INITDB_MARKER: &str = "initdb-in-progress";
/// The port clusters are started with. There is no TCP listener; the port only names the socket
/// file (`.s.PGSQL.5432`). Different clusters differ by socket directory.
pub const PORT: u16 = 5432;

const SYSTEM_USER: &str = "postgres";
const DB_SUPERUSER: &str = "postgres";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const DROP_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);
const ATTACH_POLL: Duration = Duration::from_millis(20);
/// After a crash, old backends may hold the shared memory segment for a moment.
const SHMEM_RETRIES: u32 = 25;
const SHMEM_RETRY_DELAY: Duration = Duration::from_millis(200);
/// sun_path is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

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
    /// true (tests): the postmaster gets PR_SET_PDEATHSIG(SIGKILL), so it dies with this process
    /// even if the process is SIGKILLed. false (serve): the postmaster survives a SIGKILL of its
    /// parent, and the next start adopts it.
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
        loop {
            match lock.try_lock() {
                Ok(()) => {
                    let cluster = start_as_owner(&opts, data_dir, pgdata, lock).await?;
                    info!(
                        data_dir = %cluster.data_dir.display(),
                        socket_dir = %cluster.socket_dir.display(),
                        pid = cluster.pid(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "embedded PostgreSQL ready"
                    );
                    return Ok(cluster);
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(ClusterError::io("lock", lock_path, e));
                }
            }
            // Another process owns the cluster: use its postmaster once it is ready.
            if let Some(pf) = pidfile::read(&pgdata)
                && pf.is_ready()
                && sys::may_be_live_postmaster(pf.pid, &pgdata)
                && let Some(socket_dir) = pf.socket_dir.clone()
            {
                info!(
                    data_dir = %data_dir.display(),
                    socket_dir = %socket_dir.display(),
                    pid = pf.pid,
                    "attached to the embedded PostgreSQL of another process"
                );
                return Ok(Cluster {
                    data_dir,
                    pgdata,
                    socket_dir,
                    port: pf.port.unwrap_or(PORT),
                    owns: false,
                    postmaster: Postmaster::Attached(pf.pid),
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
                info!(pid, elapsed_ms = started.elapsed().as_millis() as u64,
                    data_dir = %self.data_dir.display(), "embedded PostgreSQL stopped");
            }
            Postmaster::Adopted(pid) => {
                if let Err(source) = stop_pid(pid).await {
                    self.postmaster = Postmaster::Adopted(pid);
                    return Err(ClusterError::Stop { pid, source });
                }
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
            }
            Postmaster::Adopted(pid) => {
                warn!(pid, "killing adopted embedded PostgreSQL with SIGKILL");
                let _ = sys::send_signal(pid, libc::SIGKILL);
                let deadline = Instant::now() + KILL_TIMEOUT;
                while pid_alive_reaping(pid) && Instant::now() < deadline {
                    std::thread::sleep(POLL);
                }
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
    // Record who holds the lock, for the messages of processes that have to wait.
    let me = format!("pid {}\n", std::process::id());
    if let Err(e) = lock
        .set_len(0)
        .and_then(|()| lock.write_all_at(me.as_bytes(), 0))
    {
        debug!(error = %e, "could not write the pid into the lock file");
    }

    // A live postmaster without a lock holder was left behind by a SIGKILLed owner.
    if let Some(pf) = pidfile::read(&pgdata)
        && sys::is_live_postmaster(pf.pid, &pgdata)
    {
        let pid = pf.pid;
        info!(pid, data_dir = %data_dir.display(), "adopting a PostgreSQL left running by a previous owner");
        match wait_ready(&pgdata, pid, || {
            (!pid_alive_reaping(pid)).then(|| "exited".to_owned())
        })
        .await
        {
            Ok(pf) => {
                let socket_dir = pf.socket_dir.clone().ok_or_else(|| {
                    ClusterError::Internal(format!(
                        "{} names no socket directory",
                        pgdata.join(pidfile::FILE_NAME).display()
                    ))
                })?;
                return Ok(Cluster {
                    data_dir,
                    pgdata,
                    socket_dir,
                    port: pf.port.unwrap_or(PORT),
                    owns: true,
                    postmaster: Postmaster::Adopted(pid),
                    lock: Some(lock),
                });
            }
            // It was shutting down; start a fresh one.
            Err(WaitFailure::Exited(_)) => {
                info!(pid, "the left-behind PostgreSQL exited; starting a new one");
            }
            Err(WaitFailure::TimedOut) => {
                return Err(ClusterError::StartTimeout {
                    pid,
                    secs: READY_TIMEOUT.as_secs(),
                    log: data_dir.join(LOG_FILE),
                });
            }
        }
    }

    let prepared = {
        let data_dir = data_dir.clone();
        let durable = opts.durable;
        blocking(move || prepare(&data_dir, durable)).await?
    };
    let log_path = data_dir.join(LOG_FILE);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (log, offset) = open_log(&log_path)?;
        let cmd = postgres_command(&prepared, &pgdata, opts.durable, &log)
            .map_err(|e| ClusterError::io("open", &log_path, e))?;
        let postgres = prepared.bin_dir.join("postgres");
        let mut child = spawner::spawn(cmd, opts.die_with_parent)
            .await
            .map_err(|source| ClusterError::BinariesUnusable {
                user: prepared.user_name(),
                bin: postgres.clone(),
                source,
            })?;
        drop(log);
        let pid = i32::try_from(child.id()).unwrap_or(0);
        debug!(pid, attempt, "postgres spawned");
        // If this future is dropped while waiting (e.g. Ctrl-C during startup), shut it down.
        let mut starting = StartingChild(Some(child));
        let outcome = wait_ready(&pgdata, pid, || starting.exited()).await;
        let child = starting.release();
        match outcome {
            Ok(_) => {
                return Ok(Cluster {
                    data_dir,
                    pgdata,
                    socket_dir: prepared.socket_dir,
                    port: PORT,
                    owns: true,
                    postmaster: Postmaster::Child(child),
                    lock: Some(lock),
                });
            }
            Err(WaitFailure::Exited(status)) => {
                let tail = log_tail(&log_path, offset);
                if tail.contains("pre-existing shared memory block") && attempt < SHMEM_RETRIES {
                    debug!(attempt, "old backends still hold shared memory; retrying");
                    tokio::time::sleep(SHMEM_RETRY_DELAY).await;
                    continue;
                }
                if let Some(line) = tail
                    .lines()
                    .find(|l| l.contains("lock file") && l.contains("already exists"))
                {
                    let what = if line.contains(".s.PGSQL.") {
                        prepared.socket_dir
                    } else {
                        pgdata
                    };
                    // Drop the log line prefix (time, pid) up to the severity.
                    let detail = line.find("FATAL:").map_or(line, |at| &line[at..]);
                    return Err(ClusterError::AnotherPostmaster {
                        what,
                        detail: detail.trim().to_owned(),
                    });
                }
                return Err(ClusterError::StartFailed {
                    status,
                    log: log_path,
                    tail,
                });
            }
            Err(WaitFailure::TimedOut) => {
                // Left running (e.g. long crash recovery): the next start adopts it.
                return Err(ClusterError::StartTimeout {
                    pid,
                    secs: READY_TIMEOUT.as_secs(),
                    log: log_path,
                });
            }
        }
    }
}

/// A freshly spawned postmaster that is not yet ready: fast shutdown if dropped before
/// [`release`](Self::release).
struct StartingChild(Option<Child>);

impl StartingChild {
    fn exited(&mut self) -> Option<String> {
        let child = self.0.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("could not be waited for: {e}")),
        }
    }

    fn release(mut self) -> Child {
        match self.0.take() {
            Some(child) => child,
            None => unreachable!("released twice"),
        }
    }
}

impl Drop for StartingChild {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0
            && matches!(child.try_wait(), Ok(None))
            && let Ok(pid) = i32::try_from(child.id())
        {
            warn!(
                pid,
                "start abandoned: stopping the PostgreSQL being started"
            );
            let _ = sys::send_signal(pid, libc::SIGINT);
        }
    }
}

/// What [`prepare`] found and set up.
struct Prepared {
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
    socket_dir: PathBuf,
}

impl Prepared {
    fn user_name(&self) -> String {
        self.run_as
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_else(|| format!("uid {}", sys::euid()))
    }
}

/// Blocking: binaries, user, directories, initdb. Runs with the lock held and no postmaster.
fn prepare(data_dir: &Path, durable: bool) -> Result<Prepared, ClusterError> {
    let bin_dir = binaries::find_bin_dir(&BinDirSources::from_env())?;
    let run_as = if sys::is_root() {
        let user = sys::lookup_user(SYSTEM_USER)
            .map_err(|e| ClusterError::Internal(format!("looking up user {SYSTEM_USER}: {e}")))?
            .ok_or(ClusterError::NoPostgresUser)?;
        Some(user)
    } else {
        None
    };
    let pgdata = data_dir.join(PGDATA_DIR);
    let marker = data_dir.join(INITDB_MARKER);

    if marker.exists() && pgdata.exists() {
        warn!(pgdata = %pgdata.display(), "a previous initdb was interrupted; deleting its partial result");
        std::fs::remove_dir_all(&pgdata)
            .map_err(|e| ClusterError::io("delete the incomplete", &pgdata, e))?;
    }
    make_private_dir(&pgdata, run_as.as_ref())?;
    sweep_abandoned_socket_dirs(run_as.as_ref());
    let socket_dir = prepare_socket_dir(data_dir, run_as.as_ref())?;
    match init_pgdata(
        &bin_dir,
        run_as.as_ref(),
        &pgdata,
        &socket_dir,
        &marker,
        durable,
    ) {
        Ok(()) => Ok(Prepared {
            bin_dir,
            run_as,
            socket_dir,
        }),
        Err(e) => {
            // Leave no empty socket directory behind.
            let _ = std::fs::remove_dir(&socket_dir);
            Err(e)
        }
    }
}

/// Probes reachability, runs initdb if needed, checks the version, clears a stale pid file.
fn init_pgdata(
    bin_dir: &Path,
    run_as: Option<&RunAs>,
    pgdata: &Path,
    socket_dir: &Path,
    marker: &Path,
    durable: bool,
) -> Result<(), ClusterError> {
    let bin_major = probe(bin_dir, run_as, pgdata, socket_dir)?;

    let version_file = pgdata.join("PG_VERSION");
    if !version_file.exists() {
        let non_empty = std::fs::read_dir(pgdata)
            .map_err(|e| ClusterError::io("read", pgdata, e))?
            .next()
            .is_some();
        if non_empty && !marker.exists() {
            return Err(ClusterError::NotADataDir {
                pgdata: pgdata.to_path_buf(),
            });
        }
        File::create(marker).map_err(|e| ClusterError::io("create", marker, e))?;
        initdb(bin_dir, run_as, pgdata, durable)?;
        std::fs::remove_file(marker).map_err(|e| ClusterError::io("delete", marker, e))?;
    }

    let data_major = std::fs::read_to_string(&version_file)
        .map_err(|e| ClusterError::io("read", &version_file, e))?
        .trim()
        .to_owned();
    if data_major != bin_major {
        return Err(ClusterError::VersionMismatch {
            pgdata: pgdata.to_path_buf(),
            data_major,
            bin_major,
            bin_dir: bin_dir.to_path_buf(),
        });
    }

    // We hold the lock and found no live postmaster: any postmaster.pid is stale. Remove it, so
    // that a recycled pid cannot make PostgreSQL refuse to start.
    let pid_path = pgdata.join(pidfile::FILE_NAME);
    if pid_path.exists() {
        debug!(path = %pid_path.display(), "removing stale postmaster.pid");
        let _ = std::fs::remove_file(&pid_path);
    }
    Ok(())
}

fn initdb(
    bin_dir: &Path,
    run_as: Option<&RunAs>,
    pgdata: &Path,
    durable: bool,
) -> Result<(), ClusterError> {
    let started = Instant::now();
    info!(pgdata = %pgdata.display(), durable, "initdb: creating the embedded PostgreSQL cluster");
    let initdb = bin_dir.join("initdb");
    let mut cmd = base_command(&initdb, run_as);
    cmd.args([
        "-U",
        DB_SUPERUSER,
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C.UTF-8",
    ])
    .arg("--no-instructions");
    if !durable {
        cmd.arg("-N");
    }
    cmd.arg("-D").arg(pgdata);
    let out = cmd
        .output()
        .map_err(|source| ClusterError::BinariesUnusable {
            user: user_name(run_as),
            bin: initdb.clone(),
            source,
        })?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(ClusterError::InitdbFailed {
            pgdata: pgdata.to_path_buf(),
            status: out.status.to_string(),
            tail: tail_lines(&text, 20),
        });
    }
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "initdb done"
    );
    Ok(())
}

/// Runs `postgres --version` as the server's user, from inside `pgdata` (and, as root, the socket
/// dir): a spawn that fails with EACCES means that user cannot reach the directory. Returns the
/// binaries' major version.
fn probe(
    bin_dir: &Path,
    run_as: Option<&RunAs>,
    pgdata: &Path,
    socket_dir: &Path,
) -> Result<String, ClusterError> {
    let postgres = bin_dir.join("postgres");
    let run = |cwd: &Path| {
        base_command(&postgres, run_as)
            .arg("--version")
            .current_dir(cwd)
            .stderr(Stdio::null())
            .output()
    };
    let unusable = |source| ClusterError::BinariesUnusable {
        user: user_name(run_as),
        bin: postgres.clone(),
        source,
    };
    // Only an EACCES that goes away when run from `/` is about the directory.
    let cwd_unreachable =
        |e: &io::Error| e.kind() == io::ErrorKind::PermissionDenied && run(Path::new("/")).is_ok();
    let out = match run(pgdata) {
        Ok(out) => out,
        Err(e) if run_as.is_some() && cwd_unreachable(&e) => {
            return Err(ClusterError::DataDirUnreachable {
                user: user_name(run_as),
                path: pgdata.to_path_buf(),
            });
        }
        Err(e) => return Err(unusable(e)),
    };
    if run_as.is_some() {
        match run(socket_dir) {
            Ok(_) => {}
            Err(e) if cwd_unreachable(&e) => {
                return Err(ClusterError::SocketDirUnreachable {
                    user: user_name(run_as),
                    path: socket_dir.to_path_buf(),
                });
            }
            Err(e) => return Err(unusable(e)),
        }
    }
    let text = String::from_utf8_lossy(&out.stdout);
    binaries::major_version(&text).ok_or_else(|| {
        unusable(io::Error::other(format!(
            "unexpected `postgres --version` output {:?}",
            text.trim()
        )))
    })
}

/// A command for a PostgreSQL program, run as `run_as` when given (we are root).
fn base_command(program: &Path, run_as: Option<&RunAs>) -> Command {
    let mut cmd = Command::new(program);
    if let Some(user) = run_as {
        cmd.uid(user.uid)
            .gid(user.gid)
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    // English messages (we look for some); no stray PGDATA.
    cmd.env_remove("LC_ALL")
        .env("LC_MESSAGES", "C")
        .env_remove("PGDATA")
        .stdin(Stdio::null());
    cmd
}

fn postgres_command(
    prepared: &Prepared,
    pgdata: &Path,
    durable: bool,
    log: &File,
) -> io::Result<Command> {
    let mut cmd = base_command(&prepared.bin_dir.join("postgres"), prepared.run_as.as_ref());
    cmd.arg("-D")
        .arg(pgdata)
        .arg("-p")
        .arg(PORT.to_string())
        .arg("-k")
        .arg(&prepared.socket_dir)
        .args(["-c", "listen_addresses="]);
    if !durable {
        cmd.args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]);
    }
    // Own process group: a terminal's Ctrl-C reaches clerk-mirror, which stops the database last.
    cmd.process_group(0)
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?);
    Ok(cmd)
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
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "still running after SIGKILL",
    ))
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
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "still running after SIGKILL",
    ))
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
    std::fs::create_dir_all(requested)
        .map_err(|e| ClusterError::io("create the data directory", requested, e))?;
    if !existed && sys::is_root() {
        // The server's user must be able to traverse it, whatever root's umask.
        let _ = std::fs::set_permissions(requested, std::fs::Permissions::from_mode(0o755));
    }
    let data_dir = std::fs::canonicalize(requested)
        .map_err(|e| ClusterError::io("resolve the data directory", requested, e))?;
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

/// Creates `dir` with mode 0700 if missing, and gives it to `run_as` (when root).
fn make_private_dir(dir: &Path, run_as: Option<&RunAs>) -> Result<(), ClusterError> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(ClusterError::io("create", dir, e)),
    }
    if let Some(user) = run_as {
        let meta = std::fs::metadata(dir).map_err(|e| ClusterError::io("inspect", dir, e))?;
        if meta.uid() != user.uid || meta.gid() != user.gid {
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
                .map_err(|e| ClusterError::io("change the owner of", dir, e))?;
        }
    }
    Ok(())
}

/// `$TMPDIR/clerk-mirror-<hash>` (or under /tmp if that path would be too long for a socket),
/// mode 0700, owned by the server's user.
fn prepare_socket_dir(data_dir: &Path, run_as: Option<&RunAs>) -> Result<PathBuf, ClusterError> {
    let name = format!("clerk-mirror-{}", short_hash(data_dir));
    let socket_file = format!(".s.PGSQL.{PORT}");
    let mut candidates = vec![std::env::temp_dir().join(&name)];
    let tmp = Path::new("/tmp").join(&name);
    if candidates[0] != tmp {
        candidates.push(tmp);
    }
    let fits = |dir: &PathBuf| dir.join(&socket_file).as_os_str().len() <= MAX_SOCKET_PATH;
    let Some(dir) = candidates.iter().find(|d| fits(d)).cloned() else {
        return Err(ClusterError::SocketPathTooLong {
            path: candidates[0].join(&socket_file),
        });
    };
    let want_uid = run_as.map(|u| u.uid).unwrap_or_else(sys::euid);
    match std::fs::symlink_metadata(&dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(ClusterError::UnsafeSocketDir {
                    path: dir,
                    reason: "it is not a directory (or is a symlink)".into(),
                });
            }
            if meta.uid() != want_uid {
                return Err(ClusterError::UnsafeSocketDir {
                    path: dir,
                    reason: format!("it belongs to uid {}, not uid {want_uid}", meta.uid()),
                });
            }
            if meta.mode() & 0o777 != 0o700 {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| ClusterError::io("restrict the permissions of", &dir, e))?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_private_dir(&dir, run_as)?;
        }
        Err(e) => return Err(ClusterError::io("inspect", &dir, e)),
    }
    Ok(dir)
}

/// Removes the socket directories of clusters that are gone for good: a postmaster that was
/// SIGKILLed (e.g. with its test process) leaves its socket and socket lock file behind. A
/// directory is removed only if it is ours (name, owner), its lock file names a dead pid, and the
/// data directory recorded in that lock file no longer exists. Best effort.
fn sweep_abandoned_socket_dirs(run_as: Option<&RunAs>) {
    let want_uid = run_as.map(|u| u.uid).unwrap_or_else(sys::euid);
    let mut parents = vec![std::env::temp_dir()];
    if parents[0] != Path::new("/tmp") {
        parents.push(PathBuf::from("/tmp"));
    }
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(hash) = name.to_str().and_then(|n| n.strip_prefix("clerk-mirror-")) else {
                continue;
            };
            if hash.len() != 12 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let dir = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            if !meta.is_dir() || meta.uid() != want_uid {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(dir.join(format!(".s.PGSQL.{PORT}.lock")))
            else {
                continue;
            };
            let mut lines = text.lines();
            let pid: Option<i32> = lines.next().and_then(|l| l.trim().parse().ok());
            let data_dir = lines.next().map(str::trim).filter(|l| !l.is_empty());
            if let (Some(pid), Some(data_dir)) = (pid, data_dir)
                && !sys::exists(pid)
                && !Path::new(data_dir).exists()
            {
                debug!(dir = %dir.display(), "removing the socket directory of a deleted cluster");
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}

/// 12 hex digits of FNV-1a over the path: stable across builds, unlike `DefaultHasher`.
fn short_hash(path: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012x}", hash & 0xffff_ffff_ffff)
}

fn open_log(path: &Path) -> Result<(File, u64), ClusterError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ClusterError::io("open", path, e))?;
    let offset = log
        .metadata()
        .map_err(|e| ClusterError::io("inspect", path, e))?
        .len();
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

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn user_name(run_as: Option<&RunAs>) -> String {
    run_as
        .map(|u| u.name.clone())
        .unwrap_or_else(|| format!("uid {}", sys::euid()))
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
    fn the_socket_dir_hash_is_twelve_stable_hex_digits() {
        let h = short_hash(Path::new("/var/lib/clerk-mirror"));
        assert_eq!(h.len(), 12);
        assert_eq!(h, short_hash(Path::new("/var/lib/clerk-mirror")));
        assert_ne!(h, short_hash(Path::new("/var/lib/clerk-mirror2")));
    }

    #[test]
    fn url_parts_are_percent_encoded() {
        assert_eq!(percent_encode(b"/tmp/a b+c", true), "/tmp/a%20b%2Bc");
        assert_eq!(percent_encode(b"my/db", false), "my%2Fdb");
    }

    #[test]
    fn a_postmaster_pid_file_is_parsed() {
        let pf = pidfile::parse("42\n/d\n1700000000\n5432\n/tmp/s\n\n  123 4\nready   \n").unwrap();
        assert_eq!(pf.pid, 42);
        assert_eq!(pf.port, Some(5432));
        assert_eq!(pf.socket_dir.as_deref(), Some(Path::new("/tmp/s")));
        assert!(pf.is_ready());
        assert!(!pidfile::parse("42\n/d\n").unwrap().is_ready());
        assert!(pidfile::parse("").is_none());
    }

    #[test]
    fn major_versions_are_read_from_postgres_version() {
        let v = "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)";
        assert_eq!(binaries::major_version(v).as_deref(), Some("15"));
        assert_eq!(
            binaries::major_version("postgres (PostgreSQL) 9.6.24").as_deref(),
            Some("9.6")
        );
        assert_eq!(
            binaries::major_version("postgres (PostgreSQL) 17beta1").as_deref(),
            Some("17")
        );
    }
}

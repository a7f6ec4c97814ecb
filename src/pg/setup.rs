//! The blocking preparation of a cluster before its postmaster starts: the binaries, the user
//! to run as (`postgres` when we are root), the data and socket directories and their owners, a
//! reachability probe, initdb, and the version check. Also the commands that run PostgreSQL's
//! programs as that user.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use tracing::{debug, info, warn};

use super::ClusterError;
use super::binaries::{self, BinDirSources};
use super::layout::{DB_SUPERUSER, INITDB_MARKER, PGDATA_DIR, PORT};
use super::pidfile;
use super::sys::{self, RunAs};

const SYSTEM_USER: &str = "postgres";
/// sun_path is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// What [`prepare`] found and set up.
pub(super) struct Prepared {
    pub bin_dir: PathBuf,
    pub run_as: Option<RunAs>,
    pub socket_dir: PathBuf,
}

impl Prepared {
    pub fn user_name(&self) -> String {
        self.run_as
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_else(|| format!("uid {}", sys::euid()))
    }
}

/// Blocking: binaries, user, directories, initdb. Runs with the lock held and no postmaster.
pub(super) fn prepare(data_dir: &Path, durable: bool) -> Result<Prepared, ClusterError> {
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
        std::fs::remove_dir_all(&pgdata).map_err(|e| ClusterError::io("delete the incomplete", &pgdata, e))?;
    }
    make_private_dir(&pgdata, run_as.as_ref())?;
    sweep_abandoned_socket_dirs(run_as.as_ref());
    let socket_dir = prepare_socket_dir(data_dir, run_as.as_ref())?;
    match init_pgdata(&bin_dir, run_as.as_ref(), &pgdata, &socket_dir, &marker, durable) {
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

fn initdb(bin_dir: &Path, run_as: Option<&RunAs>, pgdata: &Path, durable: bool) -> Result<(), ClusterError> {
    let started = Instant::now();
    info!(pgdata = %pgdata.display(), durable, "initdb: creating the embedded PostgreSQL cluster");
    let initdb = bin_dir.join("initdb");
    let mut cmd = base_command(&initdb, run_as);
    cmd.args(["-U", DB_SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"])
        .arg("--no-instructions");
    if !durable {
        cmd.arg("-N");
    }
    cmd.arg("-D").arg(pgdata);
    let out = cmd.output().map_err(|source| ClusterError::BinariesUnusable {
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
    info!(elapsed_ms = started.elapsed().as_millis() as u64, "initdb done");
    Ok(())
}

/// Runs `postgres --version` as the server's user, from inside `pgdata` (and, as root, the socket
/// dir): a spawn that fails with EACCES means that user cannot reach the directory. Returns the
/// binaries' major version.
fn probe(bin_dir: &Path, run_as: Option<&RunAs>, pgdata: &Path, socket_dir: &Path) -> Result<String, ClusterError> {
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
    let cwd_unreachable = |e: &io::Error| e.kind() == io::ErrorKind::PermissionDenied && run(Path::new("/")).is_ok();
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

pub(super) fn postgres_command(prepared: &Prepared, pgdata: &Path, durable: bool, log: &File) -> io::Result<Command> {
    let mut cmd = base_command(&prepared.bin_dir.join("postgres"), prepared.run_as.as_ref());
    cmd.arg("-D")
        .arg(pgdata)
        .arg("-p")
        .arg(PORT.to_string())
        .arg("-k")
        .arg(&prepared.socket_dir)
        .args(["-c", "listen_addresses="]);
    if durable {
        // The user's database: its buffers sized to the machine (PostgreSQL's default is 128 MB).
        cmd.args(["-c", &format!("shared_buffers={}MB", shared_buffers_mb(memory_bytes()))]);
    } else {
        cmd.args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            // Test binaries run many servers against one cluster at once.
            "-c",
            "max_connections=500",
        ]);
    }
    // Own process group: a terminal's Ctrl-C reaches clerk-mirror, which stops the database last.
    cmd.process_group(0).stdout(log.try_clone()?).stderr(log.try_clone()?);
    Ok(cmd)
}

/// The embedded (durable) database's `shared_buffers` in MB: a quarter of the memory this
/// process may use (see [`memory_bytes`]), at least PostgreSQL's default of 128 MB and at most
/// 1 GB. With 128 MB a mirror of a few hundred thousand users outgrew PostgreSQL's buffers: the
/// applier's batches then read each index page they touched back in from the OS and wrote dirty
/// ones out themselves, and PostgreSQL's CPU per applied event grew from ~220 to ~350 µs within
/// a minute of sustained webhooks (#27, `bench ingest`).
pub fn shared_buffers_mb(memory: Option<u64>) -> u64 {
    let quarter = memory.map_or(0, |bytes| bytes / 4 / (1 << 20));
    quarter.clamp(128, 1024)
}

/// The memory this process may use: the machine's (`MemTotal`), or its control group's limit
/// when that is lower (a container's). `None` when neither can be read.
pub fn memory_bytes() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_total(&m));
    let group = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok().and_then(|l| cgroup_limit(&l)));
    match (machine, group) {
        (Some(m), Some(g)) => Some(m.min(g)),
        (m, g) => m.or(g),
    }
}

/// `MemTotal` in bytes, from /proc/meminfo's text.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A control group's memory limit in bytes; `None` for "max" (none) or v1's "no limit" value.
fn cgroup_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < 1 << 60).then_some(bytes)
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
            let Ok(text) = std::fs::read_to_string(dir.join(format!(".s.PGSQL.{PORT}.lock"))) else {
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

pub(super) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(super) fn user_name(run_as: Option<&RunAs>) -> String {
    run_as
        .map(|u| u.name.clone())
        .unwrap_or_else(|| format!("uid {}", sys::euid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_buffers_are_a_quarter_of_the_memory_between_128_mb_and_1_gb() {
        const GIB: u64 = 1 << 30;
        assert_eq!(shared_buffers_mb(None), 128);
        assert_eq!(shared_buffers_mb(Some(256 << 20)), 128);
        assert_eq!(shared_buffers_mb(Some(2 * GIB)), 512);
        assert_eq!(shared_buffers_mb(Some(3 * GIB)), 768);
        assert_eq!(shared_buffers_mb(Some(24 * GIB)), 1024);
    }

    #[test]
    fn the_memory_is_read_from_meminfo_and_a_cgroup_limit_when_there_is_one() {
        let meminfo = "MemTotal:       24683736 kB\nMemFree:        19941224 kB\n";
        assert_eq!(mem_total(meminfo), Some(24683736 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(cgroup_limit("max\n"), None);
        assert_eq!(cgroup_limit("2147483648\n"), Some(2147483648));
        // cgroup v1 writes a huge number for "no limit".
        assert_eq!(cgroup_limit("9223372036854771712\n"), None);
        assert!(memory_bytes().is_some_and(|b| b > 0), "this machine's memory is readable");
    }

    #[test]
    fn the_socket_dir_hash_is_twelve_stable_hex_digits() {
        let h = short_hash(Path::new("/var/lib/clerk-mirror"));
        assert_eq!(h.len(), 12);
        assert_eq!(h, short_hash(Path::new("/var/lib/clerk-mirror")));
        assert_ne!(h, short_hash(Path::new("/var/lib/clerk-mirror2")));
    }
}

//! `ClusterError`: everything that can go wrong while running the embedded PostgreSQL cluster.
//! Every message says what to do about it.

use std::io;
use std::path::PathBuf;

/// An error from [`Cluster`](super::Cluster) or from binary discovery. The `Display` text is meant
/// for the person running clerk-mirror: it names the problem and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error(
        "no PostgreSQL server binaries (`initdb` and `postgres`) found: looked at $PG_BIN_DIR (unset), \
         `pg_config --bindir`, /usr/lib/postgresql/*/bin and $PATH. Install the PostgreSQL server \
         (e.g. `apt-get install postgresql`), or set PG_BIN_DIR to the directory holding `initdb` and \
         `postgres`, or pass --database-url to use an existing database instead"
    )]
    BinariesNotFound,

    #[error(
        "PG_BIN_DIR is set to {}, but that directory does not contain both `initdb` and `postgres`; \
         point PG_BIN_DIR at PostgreSQL's bin directory (what `pg_config --bindir` prints, e.g. \
         /usr/lib/postgresql/15/bin), or unset it to search automatically",
        dir.display()
    )]
    BadPgBinDir { dir: PathBuf },

    #[error(
        "running as root, but there is no `postgres` system user to run PostgreSQL as (initdb and \
         postgres refuse to run as root); install the PostgreSQL server package (e.g. `apt-get install \
         postgresql`, which creates that user), or create it (`useradd --system --home-dir \
         /var/lib/postgresql postgres`), or run clerk-mirror as a non-root user, or pass --database-url"
    )]
    NoPostgresUser,

    #[error(
        "the `{user}` user, which runs PostgreSQL because clerk-mirror runs as root, cannot reach {} \
         (a parent directory is not searchable by it, e.g. a mode-700 home directory such as /root); \
         pass --data-dir with a directory that user can reach, e.g. /var/lib/clerk-mirror or \
         /tmp/clerk-mirror",
        path.display()
    )]
    DataDirUnreachable { user: String, path: PathBuf },

    #[error(
        "the `{user}` user, which runs PostgreSQL because clerk-mirror runs as root, cannot reach the \
         socket directory {} (a parent directory is not searchable by it); set TMPDIR to a directory \
         that user can reach, e.g. /tmp",
        path.display()
    )]
    SocketDirUnreachable { user: String, path: PathBuf },

    #[error(
        "the `{user}` user cannot run {}: {source}; make PostgreSQL's bin directory readable and \
         executable by that user, or set PG_BIN_DIR to one that is",
        bin.display()
    )]
    BinariesUnusable {
        user: String,
        bin: PathBuf,
        source: io::Error,
    },

    #[error(
        "could not {action} {}: {source}; check that this path exists and is writable by the user \
         running clerk-mirror, or pass a different --data-dir",
        path.display()
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error(
        "initdb failed for {} ({status}); its output ended with:\n{tail}\nfix the cause above and \
         start again (the incomplete directory is deleted and recreated then), or pass a different \
         --data-dir",
        pgdata.display()
    )]
    InitdbFailed {
        pgdata: PathBuf,
        status: String,
        tail: String,
    },

    #[error(
        "{} is not empty but is not a PostgreSQL data directory (it has no PG_VERSION file; perhaps an \
         interrupted initdb or unrelated files); move it away or delete it so that clerk-mirror can \
         create a fresh cluster, or pass a different --data-dir",
        pgdata.display()
    )]
    NotADataDir { pgdata: PathBuf },

    #[error(
        "the data directory {} was created by PostgreSQL {data_major}, but the binaries in {} are \
         PostgreSQL {bin_major}; set PG_BIN_DIR to a PostgreSQL {data_major} bin directory (e.g. \
         /usr/lib/postgresql/{data_major}/bin, `apt-get install postgresql-{data_major}`), or upgrade \
         the data with pg_upgrade, or pass a different --data-dir",
        pgdata.display(),
        bin_dir.display()
    )]
    VersionMismatch {
        pgdata: PathBuf,
        data_major: String,
        bin_major: String,
        bin_dir: PathBuf,
    },

    #[error(
        "another PostgreSQL server already holds {} (PostgreSQL said: {detail}); stop that server \
         (e.g. `pg_ctl stop -D <its data directory>`), or pass a different --data-dir",
        what.display()
    )]
    AnotherPostmaster { what: PathBuf, detail: String },

    #[error(
        "PostgreSQL exited during startup ({status}); the end of {}:\n{tail}\nfix the cause above and \
         start again",
        log.display()
    )]
    StartFailed { status: String, log: PathBuf, tail: String },

    #[error(
        "PostgreSQL (pid {pid}) did not become ready within {secs} s; see {} for what it is doing \
         (crash recovery of a large database can take longer: start again to keep waiting)",
        log.display()
    )]
    StartTimeout { pid: i32, secs: u64, log: PathBuf },

    #[error(
        "the data directory {} is in use by another process ({holder}) whose PostgreSQL did not become \
         ready within {secs} s; stop that process (or wait for it), or pass a different --data-dir",
        data_dir.display()
    )]
    AttachTimeout {
        data_dir: PathBuf,
        holder: String,
        secs: u64,
    },

    #[error(
        "the socket directory {} cannot be used: {reason}; delete it (clerk-mirror recreates it) or set \
         TMPDIR to another directory",
        path.display()
    )]
    UnsafeSocketDir { path: PathBuf, reason: String },

    #[error(
        "the unix socket path {} is longer than the 107 bytes the kernel allows; set TMPDIR to a short \
         directory such as /tmp",
        path.display()
    )]
    SocketPathTooLong { path: PathBuf },

    #[error("could not stop PostgreSQL (pid {pid}): {source}; stop it by hand with `kill -INT {pid}`")]
    Stop { pid: i32, source: io::Error },

    #[error("internal error in the embedded PostgreSQL support: {0}; this is a bug, please report it")]
    Internal(String),
}

impl ClusterError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ClusterError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

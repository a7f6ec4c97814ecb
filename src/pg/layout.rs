//! What a cluster's data directory holds and how it is reached: file names, the socket's port
//! and the superuser clerk-mirror connects as.

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

/// The database superuser that clerk-mirror connects as.
pub(crate) const DB_SUPERUSER: &str = "postgres";

//! The embedded default database: a private PostgreSQL cluster in a data directory, run with the
//! machine's own `initdb` and `postgres` binaries, for when no DATABASE_URL is given (and for the
//! tests, with relaxed durability).
//!
//! This module owns: finding the binaries ([`binaries`]), creating, starting, adopting, attaching
//! to and stopping the cluster ([`Cluster`]), and running it as the `postgres` system user when
//! clerk-mirror runs as root (initdb and postgres refuse root).
//!
//! Files: `cluster.rs` (the cluster and its lifecycle), `setup.rs` (user, directories, initdb),
//! `layout.rs` (file names, port, superuser), `binaries.rs` (binary discovery), `pidfile.rs`
//! (`postmaster.pid`), `spawner.rs` (the postmaster-spawning thread), `throwaway.rs` (stopping
//! the clusters that die with this process at exit), `sys.rs` (libc wrappers), `error.rs`
//! ([`ClusterError`]).

pub mod binaries;
mod cluster;
mod error;
mod layout;
mod pidfile;
mod setup;
mod spawner;
mod sys;
mod throwaway;

pub use binaries::{BinDirSources, find_bin_dir};
pub use cluster::{Cluster, ClusterOptions};
pub use error::ClusterError;
pub use layout::{INITDB_MARKER, LOCK_FILE, LOG_FILE, PGDATA_DIR, PORT};
pub use setup::{memory_bytes, shared_buffers_mb};
pub use throwaway::stop_throwaway_clusters;

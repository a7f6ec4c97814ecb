//! Finding the machine's PostgreSQL server binaries (`initdb`, `postgres`) and their version.
//!
//! Search order: `$PG_BIN_DIR` → `pg_config --bindir` → the newest `/usr/lib/postgresql/<v>/bin`
//! (numeric version order) → the directory of `initdb` on `$PATH` (symlinks resolved). A directory
//! counts only if it holds both `initdb` and `postgres`. An explicitly set `PG_BIN_DIR` that does
//! not is an error rather than silently ignored.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ClusterError;

/// Where [`find_bin_dir`] looks. [`BinDirSources::from_env`] is the real search; tests build one
/// by hand so that they never touch the process-global environment.
#[derive(Debug, Clone, Default)]
pub struct BinDirSources {
    /// The value of `PG_BIN_DIR`, if set and non-empty. Authoritative: if it is not a valid bin
    /// directory, the search fails instead of falling back.
    pub pg_bin_dir: Option<PathBuf>,
    /// The `pg_config` program to ask (`--bindir`); `None` skips this step.
    pub pg_config: Option<PathBuf>,
    /// The directory holding versioned installs (`<root>/<version>/bin`), e.g. /usr/lib/postgresql.
    pub versioned_root: Option<PathBuf>,
    /// A `PATH`-style list of directories to look for `initdb` in.
    pub path: Option<OsString>,
}

impl BinDirSources {
    /// The sources of the real search: `PG_BIN_DIR`, `pg_config` on PATH, /usr/lib/postgresql, `PATH`.
    pub fn from_env() -> Self {
        BinDirSources {
            pg_bin_dir: std::env::var_os("PG_BIN_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            pg_config: Some(PathBuf::from("pg_config")),
            versioned_root: Some(PathBuf::from("/usr/lib/postgresql")),
            path: std::env::var_os("PATH"),
        }
    }
}

/// Whether `dir` holds executable `initdb` and `postgres` files.
pub fn is_bin_dir(dir: &Path) -> bool {
    ["initdb", "postgres"].iter().all(|name| {
        std::fs::metadata(dir.join(name))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Finds the PostgreSQL bin directory (blocking: may run `pg_config`).
pub fn find_bin_dir(sources: &BinDirSources) -> Result<PathBuf, ClusterError> {
    if let Some(dir) = &sources.pg_bin_dir {
        return if is_bin_dir(dir) {
            Ok(dir.clone())
        } else {
            Err(ClusterError::BadPgBinDir { dir: dir.clone() })
        };
    }
    if let Some(pg_config) = &sources.pg_config
        && let Some(dir) = ask_pg_config(pg_config)
        && is_bin_dir(&dir)
    {
        return Ok(dir);
    }
    if let Some(root) = &sources.versioned_root
        && let Some(dir) = newest_versioned_bin_dir(root)
    {
        return Ok(dir);
    }
    if let Some(path) = &sources.path {
        for entry in std::env::split_paths(path) {
            let initdb = entry.join("initdb");
            if !initdb.is_file() {
                continue;
            }
            // /usr/local/bin/initdb is often a symlink into the real bin directory.
            if let Ok(real) = std::fs::canonicalize(&initdb)
                && let Some(real_dir) = real.parent()
                && is_bin_dir(real_dir)
            {
                return Ok(real_dir.to_path_buf());
            }
            if is_bin_dir(&entry) {
                return Ok(entry);
            }
        }
    }
    Err(ClusterError::BinariesNotFound)
}

fn ask_pg_config(pg_config: &Path) -> Option<PathBuf> {
    let out = Command::new(pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The `<root>/<version>/bin` with the highest numeric version that is a valid bin directory.
fn newest_versioned_bin_dir(root: &Path) -> Option<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse::<u64>().ok())
                .collect::<Option<Vec<u64>>>()?;
            let bin = entry.path().join("bin");
            is_bin_dir(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, dir)| dir)
}

/// The major version in `postgres --version` output, e.g. `postgres (PostgreSQL) 15.18 (Debian
/// 15.18-0+deb12u1)` → `15`; `9.6.24` → `9.6` (majors had two parts before 10). This is the
/// format of a data directory's `PG_VERSION` file.
pub fn major_version(version_output: &str) -> Option<String> {
    let rest = version_output
        .split_once("(PostgreSQL)")
        .map(|(_, rest)| rest)
        .unwrap_or(version_output);
    let number = rest.split_whitespace().next()?;
    let mut parts = number.split(|c: char| !c.is_ascii_digit());
    let first: u64 = parts.next()?.parse().ok()?;
    if first >= 10 {
        Some(first.to_string())
    } else {
        let second: u64 = parts.next()?.parse().ok()?;
        Some(format!("{first}.{second}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions_are_read_from_postgres_version() {
        let v = "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)";
        assert_eq!(major_version(v).as_deref(), Some("15"));
        assert_eq!(major_version("postgres (PostgreSQL) 9.6.24").as_deref(), Some("9.6"));
        assert_eq!(major_version("postgres (PostgreSQL) 17beta1").as_deref(), Some("17"));
    }
}

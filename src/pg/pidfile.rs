//! Reading `<pgdata>/postmaster.pid`, the postmaster's own lock file, which is also how
//! `pg_ctl -w` learns that a server is up. Lines (1-based): 1 pid, 2 data directory, 3 start
//! time, 4 port, 5 first unix socket directory, 6 first listen address, 7 shared memory key,
//! 8 status (`starting`, `stopping`, `ready`, `standby`).

use std::path::{Path, PathBuf};

pub(crate) const FILE_NAME: &str = "postmaster.pid";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PidFile {
    pub pid: i32,
    pub port: Option<u16>,
    pub socket_dir: Option<PathBuf>,
    pub status: Option<String>,
}

impl PidFile {
    pub fn is_ready(&self) -> bool {
        self.status.as_deref() == Some("ready")
    }
}

/// `None` if the file is missing, unreadable or (while the postmaster writes it) incomplete.
pub(crate) fn read(pgdata: &Path) -> Option<PidFile> {
    let text = std::fs::read_to_string(pgdata.join(FILE_NAME)).ok()?;
    parse(&text)
}

pub(crate) fn parse(text: &str) -> Option<PidFile> {
    let lines: Vec<&str> = text.lines().collect();
    let pid: i32 = lines.first()?.trim().parse().ok()?;
    if pid <= 0 {
        return None;
    }
    let line = |n: usize| lines.get(n - 1).map(|l| l.trim()).filter(|l| !l.is_empty());
    Some(PidFile {
        pid,
        port: line(4).and_then(|p| p.parse().ok()),
        socket_dir: line(5).map(PathBuf::from),
        status: line(8).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postmaster_pid_file_is_parsed() {
        let pf = parse("42\n/d\n1700000000\n5432\n/tmp/s\n\n  123 4\nready   \n").unwrap();
        assert_eq!(pf.pid, 42);
        assert_eq!(pf.port, Some(5432));
        assert_eq!(pf.socket_dir.as_deref(), Some(Path::new("/tmp/s")));
        assert!(pf.is_ready());
        assert!(!parse("42\n/d\n").unwrap().is_ready());
        assert!(parse("").is_none());
    }
}

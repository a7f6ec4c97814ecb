//! Tests of the embedded PostgreSQL cluster (`clerk_mirror::pg`): starting, restarting,
//! attaching, adopting a left-behind postmaster, crash recovery, durability settings, binary
//! discovery, and the errors that tell the user what to do. Each test uses its own temporary
//! directory (and so its own cluster), removed at the end.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use clerk_mirror::pg::{self, BinDirSources, Cluster, ClusterError, ClusterOptions};
use sqlx::{Connection, PgConnection};

/// A directory under the temp dir, unique to this process and test, removed on drop. Declare it
/// before the cluster that lives in it, so that it is dropped after the cluster.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cm-pg-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    fn join(&self, path: &str) -> PathBuf {
        self.0.join(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn test_options(data_dir: PathBuf) -> ClusterOptions {
    ClusterOptions {
        data_dir,
        durable: false,
        die_with_parent: true,
    }
}

async fn start(data_dir: PathBuf) -> Cluster {
    Cluster::start(test_options(data_dir))
        .await
        .expect("start a test cluster")
}

async fn connect(cluster: &Cluster) -> PgConnection {
    PgConnection::connect_with(&cluster.connect_options("postgres"))
        .await
        .expect("connect over the unix socket")
}

async fn show(conn: &mut PgConnection, setting: &'static str) -> String {
    sqlx::query_scalar::<_, String>(setting)
        .fetch_one(conn)
        .await
        .expect("SHOW a setting")
}

fn is_running(pid: i32) -> bool {
    // Zombies count as gone: the cluster reaps what it started.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn make_fake_bin_dir(dir: &Path, programs: &[&str]) {
    std::fs::create_dir_all(dir).expect("create a fake bin dir");
    for program in programs {
        let path = dir.join(program);
        std::fs::write(&path, "#!/bin/sh\n").expect("write a fake program");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("make it executable");
    }
}

#[tokio::test]
async fn a_fresh_cluster_answers_over_its_own_unix_socket_and_listens_on_no_tcp_port() {
    let tmp = TempDir::new("fresh");
    let mut cluster = start(tmp.join("cluster")).await;

    assert!(cluster.owns_postmaster());
    let data_dir = cluster.data_dir().to_path_buf();
    for file in ["pgdata/PG_VERSION", "postgres.log", "clerk-mirror.lock"] {
        assert!(data_dir.join(file).exists(), "{file} is missing");
    }
    assert!(!data_dir.join(pg::INITDB_MARKER).exists());
    let socket = cluster.socket_dir().join(".s.PGSQL.5432");
    assert!(socket.exists(), "no socket at {}", socket.display());
    assert!(socket.as_os_str().len() <= 107);
    assert!(cluster.socket_dir().starts_with(std::env::temp_dir()));

    let mut conn = connect(&cluster).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .expect("SELECT 1");
    assert_eq!(one, 1);
    assert_eq!(show(&mut conn, "SHOW listen_addresses").await, "");
    assert_eq!(show(&mut conn, "SHOW fsync").await, "off");
    assert_eq!(show(&mut conn, "SHOW synchronous_commit").await, "off");
    assert_eq!(show(&mut conn, "SHOW full_page_writes").await, "off");
    conn.close().await.expect("close");

    // The URL form reaches the same server.
    let mut conn = PgConnection::connect(&cluster.url("postgres"))
        .await
        .expect("connect with the URL");
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .expect("current_database()");
    assert_eq!(db, "postgres");
    conn.close().await.expect("close");

    let pid = cluster.pid().expect("a running postmaster has a pid");
    cluster.stop().await.expect("stop");
    assert!(!is_running(pid), "postmaster {pid} still runs after stop");
    assert!(cluster.pid().is_none());
    cluster.stop().await.expect("stop is idempotent");
    assert!(
        PgConnection::connect_with(&cluster.connect_options("postgres"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_restarted_cluster_keeps_its_data_and_is_not_fooled_by_a_stale_postmaster_pid() {
    let tmp = TempDir::new("restart");
    let mut first = start(tmp.join("cluster")).await;
    let mut conn = connect(&first).await;
    sqlx::query("CREATE TABLE kept (v text)")
        .execute(&mut conn)
        .await
        .expect("create a table");
    sqlx::query("INSERT INTO kept VALUES ('still here')")
        .execute(&mut conn)
        .await
        .expect("insert");
    conn.close().await.expect("close");
    let first_pid = first.pid().expect("pid");
    first.stop().await.expect("stop");
    drop(first);

    // A stale postmaster.pid naming a live process that is not a postmaster (this test
    // binary), already saying "ready": neither adopted nor taken for readiness.
    let pid_file = tmp.join("cluster/pgdata/postmaster.pid");
    let me = std::process::id();
    std::fs::write(
        &pid_file,
        format!("{me}\n/nowhere\n0\n5432\n/nowhere\n\n0 0\nready   \n"),
    )
    .expect("plant a stale postmaster.pid");

    let mut second = start(tmp.join("cluster")).await;
    assert!(second.owns_postmaster());
    let second_pid = second.pid().expect("pid");
    assert_ne!(second_pid, me as i32);
    assert_ne!(second_pid, first_pid);
    let mut conn = connect(&second).await;
    let v: String = sqlx::query_scalar("SELECT v FROM kept")
        .fetch_one(&mut conn)
        .await
        .expect("the table survived the restart");
    assert_eq!(v, "still here");
    conn.close().await.expect("close");
    second.stop().await.expect("stop");
}

#[tokio::test]
async fn a_cluster_started_twice_on_one_data_dir_is_attached_not_duplicated() {
    let tmp = TempDir::new("attach");
    let owner = start(tmp.join("cluster")).await;
    let mut guest = start(tmp.join("cluster")).await;

    assert!(owner.owns_postmaster());
    assert!(!guest.owns_postmaster());
    assert_eq!(guest.socket_dir(), owner.socket_dir());
    assert_eq!(guest.pid(), owner.pid());

    let mut a = connect(&owner).await;
    let mut b = connect(&guest).await;
    sqlx::query("CREATE TABLE shared (v int)")
        .execute(&mut a)
        .await
        .expect("create through the owner");
    sqlx::query("INSERT INTO shared VALUES (7)")
        .execute(&mut b)
        .await
        .expect("insert through the guest");
    b.close().await.expect("close");

    // The guest's stop leaves the owner's server running.
    guest.stop().await.expect("guest stop");
    drop(guest);
    let v: i32 = sqlx::query_scalar("SELECT v FROM shared")
        .fetch_one(&mut a)
        .await
        .expect("the owner's server still answers");
    assert_eq!(v, 7);
    a.close().await.expect("close");

    // Dropping the owner without stop() still shuts the server down.
    let pid = owner.pid().expect("pid");
    drop(owner);
    assert!(!is_running(pid), "postmaster {pid} survived its owner's drop");
}

#[tokio::test]
async fn a_postmaster_left_behind_by_a_vanished_owner_is_adopted_and_can_be_stopped() {
    let tmp = TempDir::new("adopt");
    let first = start(tmp.join("cluster")).await;
    let pid = first.pid().expect("pid");
    // As if the owning process had been SIGKILLed: lock released, server still running.
    first.leak_as_orphan();
    assert!(is_running(pid));

    let mut adopter = start(tmp.join("cluster")).await;
    assert!(adopter.owns_postmaster());
    assert_eq!(adopter.pid(), Some(pid));
    let mut conn = connect(&adopter).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .expect("the adopted server answers");
    assert_eq!(one, 1);
    conn.close().await.expect("close");

    adopter.stop().await.expect("stop the adopted server");
    assert!(!is_running(pid), "adopted postmaster {pid} still runs");
    assert!(!tmp.join("cluster/pgdata/postmaster.pid").exists());
}

#[tokio::test]
async fn a_killed_postmaster_is_replaced_on_the_next_start_with_committed_data_intact() {
    let tmp = TempDir::new("crash");
    let mut crashed = start(tmp.join("cluster")).await;
    let mut conn = connect(&crashed).await;
    // A crash of the server (not the machine) loses nothing that reached the kernel.
    sqlx::query("SET synchronous_commit = on")
        .execute(&mut conn)
        .await
        .expect("set");
    sqlx::query("CREATE TABLE survivor AS SELECT 42 AS v")
        .execute(&mut conn)
        .await
        .expect("create");
    let pid = crashed.pid().expect("pid");
    crashed.kill();
    assert!(!is_running(pid));
    assert!(crashed.pid().is_none());
    drop(conn);
    crashed.stop().await.expect("stop after kill releases the lock");
    drop(crashed);

    let mut restarted = start(tmp.join("cluster")).await;
    assert!(restarted.owns_postmaster());
    let mut conn = connect(&restarted).await;
    let v: i32 = sqlx::query_scalar("SELECT v FROM survivor")
        .fetch_one(&mut conn)
        .await
        .expect("committed data survives the crash");
    assert_eq!(v, 42);
    conn.close().await.expect("close");
    restarted.stop().await.expect("stop");
}

#[tokio::test]
async fn a_durable_cluster_keeps_postgresql_durability_defaults() {
    let tmp = TempDir::new("durable");
    let mut cluster = Cluster::start(ClusterOptions {
        data_dir: tmp.join("cluster"),
        durable: true,
        die_with_parent: true,
    })
    .await
    .expect("start a durable cluster");
    let mut conn = connect(&cluster).await;
    assert_eq!(show(&mut conn, "SHOW fsync").await, "on");
    assert_eq!(show(&mut conn, "SHOW synchronous_commit").await, "on");
    assert_eq!(show(&mut conn, "SHOW full_page_writes").await, "on");
    // Its buffers sized to the machine, not PostgreSQL's 128 MB default (on a machine with
    // at least 512 MB, as this one).
    let buffers_mb: i64 =
        sqlx::query_scalar("SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'")
            .fetch_one(&mut conn)
            .await
            .expect("read shared_buffers");
    let want = pg::shared_buffers_mb(pg::memory_bytes());
    assert_eq!(buffers_mb as u64, want);
    assert!(want > 128, "this machine has {:?} bytes", pg::memory_bytes());
    conn.close().await.expect("close");
    cluster.stop().await.expect("stop");
}

#[tokio::test]
async fn an_interrupted_initdb_is_cleaned_up_and_redone() {
    let tmp = TempDir::new("interrupted");
    let data_dir = tmp.join("cluster");
    std::fs::create_dir_all(data_dir.join("pgdata/base")).expect("create a partial pgdata");
    std::fs::write(data_dir.join("pgdata/PG_VERSION"), "15\n").expect("write");
    std::fs::write(data_dir.join(pg::INITDB_MARKER), "").expect("write the marker");

    let mut cluster = start(data_dir.clone()).await;
    assert!(!data_dir.join(pg::INITDB_MARKER).exists());
    let mut conn = connect(&cluster).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .expect("SELECT 1");
    assert_eq!(one, 1);
    conn.close().await.expect("close");
    cluster.stop().await.expect("stop");
}

#[tokio::test]
async fn a_non_empty_pgdata_that_is_not_a_cluster_is_refused_with_advice() {
    let tmp = TempDir::new("junk");
    let data_dir = tmp.join("cluster");
    std::fs::create_dir_all(data_dir.join("pgdata")).expect("create pgdata");
    std::fs::write(data_dir.join("pgdata/notes.txt"), "mine").expect("write");

    let err = Cluster::start(test_options(data_dir.clone()))
        .await
        .expect_err("junk in pgdata must not be initdb'd over");
    assert!(matches!(err, ClusterError::NotADataDir { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("--data-dir"), "{message}");
    assert!(data_dir.join("pgdata/notes.txt").exists(), "user files were touched");
}

#[tokio::test]
async fn a_data_dir_from_another_postgresql_major_version_is_refused_with_advice() {
    let tmp = TempDir::new("version");
    let data_dir = tmp.join("cluster");
    std::fs::create_dir_all(data_dir.join("pgdata")).expect("create pgdata");
    std::fs::write(data_dir.join("pgdata/PG_VERSION"), "9.6\n").expect("write");

    let err = Cluster::start(test_options(data_dir))
        .await
        .expect_err("a 9.6 data dir cannot be started by these binaries");
    assert!(
        matches!(&err, ClusterError::VersionMismatch { data_major, .. } if data_major == "9.6"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("PG_BIN_DIR"), "{message}");
    assert!(message.contains("pg_upgrade"), "{message}");
}

#[tokio::test]
async fn a_data_dir_the_postgres_user_cannot_reach_is_refused_with_a_data_dir_hint() {
    if !is_root() {
        eprintln!("skipped: only root runs PostgreSQL as another user");
        return;
    }
    let tmp = TempDir::new("unreachable");
    let private = tmp.join("private");
    std::fs::create_dir(&private).expect("create");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    let err = Cluster::start(test_options(private.join("cluster")))
        .await
        .expect_err("the postgres user cannot traverse a mode-700 root directory");
    assert!(matches!(err, ClusterError::DataDirUnreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("--data-dir"), "{message}");
    assert!(message.contains("postgres"), "{message}");
}

#[test]
fn an_explicit_pg_bin_dir_without_initdb_and_postgres_is_refused_with_advice() {
    let tmp = TempDir::new("empty-bin");
    let only_initdb = tmp.join("half");
    make_fake_bin_dir(&only_initdb, &["initdb"]);
    for dir in [tmp.0.clone(), only_initdb] {
        let sources = BinDirSources {
            pg_bin_dir: Some(dir.clone()),
            // Valid fallbacks exist but an explicit PG_BIN_DIR is not second-guessed.
            ..BinDirSources::from_env()
        };
        let err = pg::find_bin_dir(&sources).expect_err("no binaries there");
        assert!(matches!(err, ClusterError::BadPgBinDir { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("PG_BIN_DIR"), "{message}");
        assert!(message.contains(&dir.display().to_string()), "{message}");
    }
}

#[test]
fn with_no_postgresql_anywhere_the_error_says_how_to_install_it() {
    let tmp = TempDir::new("no-pg");
    let sources = BinDirSources {
        pg_bin_dir: None,
        pg_config: Some(tmp.join("no-such-pg_config")),
        versioned_root: Some(tmp.join("no-such-root")),
        path: Some(tmp.0.clone().into_os_string()),
    };
    let err = pg::find_bin_dir(&sources).expect_err("nothing to find");
    assert!(matches!(err, ClusterError::BinariesNotFound), "{err:?}");
    let message = err.to_string();
    for advice in ["apt-get install postgresql", "PG_BIN_DIR", "--database-url"] {
        assert!(message.contains(advice), "{advice:?} missing from: {message}");
    }
}

#[test]
fn binaries_are_searched_in_pg_config_then_newest_version_then_path_order() {
    let tmp = TempDir::new("search");
    let root = tmp.join("versions");
    make_fake_bin_dir(&root.join("9.6/bin"), &["initdb", "postgres"]);
    make_fake_bin_dir(&root.join("10/bin"), &["initdb", "postgres"]);
    make_fake_bin_dir(&root.join("15/bin"), &["initdb"]); // incomplete: does not count
    make_fake_bin_dir(&root.join("devel/bin"), &["initdb", "postgres"]); // not a version
    let nothing = BinDirSources {
        pg_bin_dir: None,
        pg_config: None,
        versioned_root: None,
        path: None,
    };

    // Numeric order: 10 beats 9.6 (a string sort would pick 9.6).
    let versioned = BinDirSources {
        versioned_root: Some(root.clone()),
        ..nothing.clone()
    };
    assert_eq!(pg::find_bin_dir(&versioned).expect("found"), root.join("10/bin"));

    // pg_config comes first.
    let configured = tmp.join("configured/bin");
    make_fake_bin_dir(&configured, &["initdb", "postgres"]);
    let pg_config = tmp.join("pg_config");
    std::fs::write(&pg_config, format!("#!/bin/sh\necho {}\n", configured.display())).expect("write a fake pg_config");
    std::fs::set_permissions(&pg_config, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let with_pg_config = BinDirSources {
        pg_config: Some(pg_config),
        ..versioned.clone()
    };
    assert_eq!(pg::find_bin_dir(&with_pg_config).expect("found"), configured);

    // PATH last, following a symlinked initdb to the real bin directory.
    let on_path = tmp.join("on-path");
    std::fs::create_dir_all(&on_path).expect("create");
    std::os::unix::fs::symlink(root.join("9.6/bin/initdb"), on_path.join("initdb")).expect("symlink");
    let path_only = BinDirSources {
        path: Some(std::env::join_paths([tmp.join("empty"), on_path]).expect("join")),
        ..nothing
    };
    assert_eq!(pg::find_bin_dir(&path_only).expect("found"), root.join("9.6/bin"));
}

#[test]
fn this_machine_has_postgresql_binaries() {
    let dir = pg::find_bin_dir(&BinDirSources::from_env()).expect("PostgreSQL is installed");
    assert!(pg::binaries::is_bin_dir(&dir));
}

/// The environment variables that turn
/// [`the_helper_process_of_the_owner_death_tests_does_nothing_as_a_plain_test`] into a process
/// that owns a cluster until it is SIGKILLed.
const CHILD_DATA_DIR: &str = "CLERK_MIRROR_TEST_OWNER_DATA_DIR";
const CHILD_DIE_WITH_PARENT: &str = "CLERK_MIRROR_TEST_OWNER_DIE_WITH_PARENT";
const CHILD_TEST: &str = "cluster::the_helper_process_of_the_owner_death_tests_does_nothing_as_a_plain_test";

#[tokio::test]
async fn the_helper_process_of_the_owner_death_tests_does_nothing_as_a_plain_test() {
    let Some(data_dir) = std::env::var_os(CHILD_DATA_DIR) else {
        return;
    };
    let cluster = Cluster::start(ClusterOptions {
        data_dir: data_dir.into(),
        durable: false,
        die_with_parent: std::env::var_os(CHILD_DIE_WITH_PARENT).is_some_and(|v| v == "1"),
    })
    .await
    .expect("start the cluster in the helper process");
    println!(
        "READY {} {}",
        cluster.pid().expect("pid"),
        cluster.socket_dir().display()
    );
    // Wait to be SIGKILLed.
    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    panic!("the helper process was not killed");
}

/// Runs the helper process on `data_dir`, waits until its cluster is ready, SIGKILLs it, and
/// returns its postmaster's pid and socket directory.
async fn start_in_a_process_then_sigkill_it(data_dir: &Path, die_with_parent: bool) -> (i32, PathBuf) {
    use tokio::io::AsyncBufReadExt;
    // This very binary, even if cargo is rewriting the file at its path meanwhile.
    let mut child = tokio::process::Command::new("/proc/self/exe")
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DATA_DIR, data_dir)
        .env(CHILD_DIE_WITH_PARENT, if die_with_parent { "1" } else { "0" })
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the helper process");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(90), async {
        while let Some(line) = lines.next_line().await.expect("read the helper's output") {
            // libtest prints "test <name> ... " without a newline first.
            if let Some((_, ready)) = line.split_once("READY ") {
                let (pid, socket_dir) = ready.trim().split_once(' ').expect("pid and socket dir");
                return (pid.parse::<i32>().expect("a pid"), PathBuf::from(socket_dir));
            }
        }
        panic!("the helper process ended without starting its cluster");
    })
    .await
    .expect("the helper process started its cluster in time");
    child.start_kill().expect("SIGKILL the helper process");
    child.wait().await.expect("reap the helper process");
    ready
}

#[tokio::test]
async fn a_test_cluster_dies_with_its_process_even_when_the_process_is_sigkilled() {
    let tmp = TempDir::new("pdeathsig");
    let (pid, socket_dir) = start_in_a_process_then_sigkill_it(&tmp.join("cluster"), true).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while is_running(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!is_running(pid), "postmaster {pid} outlived its SIGKILLed parent");
    // A SIGKILLed server leaves its socket behind.
    let _ = std::fs::remove_dir_all(socket_dir);
}

/// If the test fails half-way, SIGKILLs the orphaned postmaster that nothing else would stop
/// (only if that pid is still a postgres process on this data dir).
struct KillPostmasterOnDrop(i32, PathBuf);

impl Drop for KillPostmasterOnDrop {
    fn drop(&mut self) {
        let ours = std::fs::read(format!("/proc/{}/cmdline", self.0))
            .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&*self.1.to_string_lossy()));
        if ours && is_running(self.0) {
            // SAFETY: kill has no memory-safety preconditions; the pid is positive.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

#[tokio::test]
async fn a_served_cluster_survives_a_sigkilled_owner_and_the_next_start_adopts_it() {
    let tmp = TempDir::new("survive");
    let (pid, _) = start_in_a_process_then_sigkill_it(&tmp.join("cluster"), false).await;
    let _guard = KillPostmasterOnDrop(pid, tmp.join("cluster"));
    assert!(is_running(pid), "postmaster {pid} died with its parent");

    let mut adopter = start(tmp.join("cluster")).await;
    assert!(adopter.owns_postmaster());
    assert_eq!(adopter.pid(), Some(pid));
    let mut conn = connect(&adopter).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .expect("the orphan answers");
    assert_eq!(one, 1);
    conn.close().await.expect("close");
    adopter.stop().await.expect("stop the orphan");
    assert!(!is_running(pid), "postmaster {pid} still runs after stop");
}

#[tokio::test]
async fn a_socket_held_by_another_server_is_reported_as_such() {
    use std::os::unix::fs::MetadataExt;
    let tmp = TempDir::new("socket-taken");
    let mut cluster = start(tmp.join("cluster")).await;
    let socket_dir = cluster.socket_dir().to_path_buf();
    let server_user = std::fs::metadata(cluster.pgdata()).expect("stat pgdata");
    cluster.stop().await.expect("stop");
    drop(cluster);

    // Another server claims the socket: its lock file names a live process of the server's
    // user (PostgreSQL takes processes it may not signal for dead ones).
    let mut other = std::process::Command::new("sleep");
    other.arg("60");
    if is_root() {
        use std::os::unix::process::CommandExt;
        other.uid(server_user.uid()).gid(server_user.gid());
    }
    let mut other = other.spawn().expect("spawn a stand-in for another server");
    std::fs::create_dir_all(&socket_dir).expect("create the socket dir");
    let lock = socket_dir.join(".s.PGSQL.5432.lock");
    std::fs::write(&lock, format!("{}\n/elsewhere\n0\n5432\n", other.id())).expect("write a foreign socket lock");
    for path in [&socket_dir, &lock] {
        std::os::unix::fs::chown(path, Some(server_user.uid()), Some(server_user.gid())).expect("chown");
    }
    std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    let result = Cluster::start(test_options(tmp.join("cluster"))).await;
    let _ = other.kill();
    let _ = other.wait();
    let _ = std::fs::remove_dir_all(&socket_dir);
    let err = result.expect_err("PostgreSQL refuses a socket another server holds");
    assert!(matches!(err, ClusterError::AnotherPostmaster { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("another PostgreSQL server already holds"), "{message}");
    assert!(message.contains(".s.PGSQL.5432.lock"), "{message}");
    assert!(message.contains("--data-dir"), "{message}");
}

#[tokio::test]
async fn a_server_that_fails_to_start_is_reported_with_the_end_of_its_log() {
    let tmp = TempDir::new("bad-conf");
    let mut cluster = start(tmp.join("cluster")).await;
    cluster.stop().await.expect("stop");
    let conf = cluster.pgdata().join("postgresql.conf");
    let good = std::fs::read_to_string(&conf).expect("read postgresql.conf");
    drop(cluster);
    std::fs::write(&conf, format!("{good}\nno_such_setting_here = 1\n")).expect("break the conf");

    let err = Cluster::start(test_options(tmp.join("cluster")))
        .await
        .expect_err("PostgreSQL refuses an unknown setting");
    assert!(matches!(err, ClusterError::StartFailed { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("no_such_setting_here"), "{message}");
    assert!(message.contains("postgres.log"), "{message}");

    // Once fixed, it starts.
    std::fs::write(&conf, good).expect("repair the conf");
    let mut cluster = start(tmp.join("cluster")).await;
    cluster.stop().await.expect("stop");
}

//! Shared integration-test harness: real PostgreSQL instances and sleddog processes.
//!
//! Every integration test file says `mod common;` and uses what it needs from here:
//! [`pg()`] (one shared primary per test binary), [`PgServer::start_new`] (a private
//! instance, e.g. one per shard), [`PgServer::create_replica`] (a streaming replica),
//! [`Sleddog`] (the proxy under test, as a child process) and [`run_sleddog`] (one-shot
//! CLI runs).
//!
//! What it must not do: depend on anything beyond std and libc, touch the machine's own
//! PostgreSQL cluster, or leave servers running after the test binary exits. Everything it
//! creates lives under `/tmp/sleddog-test-<pid>/`; an `atexit` hook stops the servers and
//! removes that directory, and the next test binary removes leftovers of dead ones (a test
//! binary killed by a signal never runs its `atexit` hook).
//!
//! Running as root: `initdb` and `postgres` refuse to run as root, so when the test binary
//! is root every server-side command runs as the `postgres` OS user via `runuser`, inside a
//! directory that user owns. As a normal user they run directly.
//!
//! Test roles in every new server (see [`ROLES`]): `sd_scram`/`scram_pw` (SCRAM),
//! `sd_md5`/`md5_pw` (md5-stored, md5 in pg_hba), `sd_plain`/`plain_pw` (SCRAM-stored,
//! `password` in pg_hba), `sd_trust` (no password, trust). All may log in to the database
//! `sleddog` (owned by `sd_scram`) over TCP on 127.0.0.1. The superuser is `postgres`,
//! trusted over the unix socket only.
#![allow(dead_code)]

pub mod proxy;

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The test roles: (name, password, how the password is stored, pg_hba method on TCP).
pub const ROLES: &[(&str, Option<&str>, &str, &str)] = &[
    (
        "sd_scram",
        Some("scram_pw"),
        "scram-sha-256",
        "scram-sha-256",
    ),
    ("sd_md5", Some("md5_pw"), "md5", "md5"),
    ("sd_plain", Some("plain_pw"), "scram-sha-256", "password"),
    ("sd_trust", None, "scram-sha-256", "trust"),
];

/// The database every test role may use.
pub const TEST_DB: &str = "sleddog";

/// How long a server or proxy gets to come up before the harness gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------

/// Ports already handed out by this process, so two parallel tests never get the same one
/// even when the kernel recycles an ephemeral port quickly.
static PORTS_GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed
/// out before. Racy by nature (another process may take it); servers that fail to bind are
/// retried on a new port by [`PgServer::start_new`].
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        let mut given = PORTS_GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}")
            .parse()
            .expect("valid socket address"),
        Duration::from_millis(200),
    )
    .is_ok()
}

// ---------------------------------------------------------------------------------------
// Process-wide scratch directory and cleanup
// ---------------------------------------------------------------------------------------

/// `/tmp/sleddog-test-<pid>`: everything this test binary creates lives here.
pub fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        remove_stale_scratch();
        let root = PathBuf::from(format!("/tmp/sleddog-test-{}", std::process::id()));
        fs::create_dir_all(&root).expect("create scratch root");
        // The postgres OS user must be able to traverse it when we are root.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod scratch");
        register_atexit();
        root
    })
}

/// A fresh, not yet existing directory name under the scratch root.
fn unique_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let root = scratch_root();
    let first = root.join(name);
    if !first.exists() {
        // Reserve it at once so a parallel test asking for the same name gets another.
        if fs::create_dir(&first).is_ok() {
            return first;
        }
    }
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 2;
        let dir = root.join(format!("{name}-{n}"));
        if fs::create_dir(&dir).is_ok() {
            return dir;
        }
    }
}

/// Data directories of servers this process started and has not yet cleaned up.
static SERVERS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn register_server(data: &Path) {
    SERVERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(data.to_path_buf());
}

/// Sleddog processes this process started and has not yet ended.
static PROXIES: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn register_atexit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registering a plain extern "C" fn with no captured state.
        let rc = unsafe { libc::atexit(cleanup_at_exit) };
        assert_eq!(rc, 0, "atexit registration failed");
    });
}

extern "C" fn cleanup_at_exit() {
    // Never unwind out of an extern "C" fn.
    let _ = std::panic::catch_unwind(|| {
        // Proxies kept in statics are never dropped: end them here.
        let proxies = std::mem::take(&mut *PROXIES.lock().unwrap_or_else(|e| e.into_inner()));
        for pid in proxies {
            // SAFETY: sending a signal to a child we spawned.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let dirs = std::mem::take(&mut *SERVERS.lock().unwrap_or_else(|e| e.into_inner()));
        for data in &dirs {
            let _ = pg_command("pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-t", "10", "-D"])
                .arg(data)
                .current_dir("/")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if std::env::var_os("SLEDDOG_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(format!("/tmp/sleddog-test-{}", std::process::id()));
        }
    });
}

/// Removes `/tmp/sleddog-test-<pid>` directories whose test process is gone, killing any
/// postmaster still running from them first.
fn remove_stale_scratch() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("sleddog-test-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() as i32 || process_alive(pid) {
            continue;
        }
        let dir = entry.path();
        for sub in fs::read_dir(&dir).into_iter().flatten().flatten() {
            kill_postmaster(&sub.path().join("data"));
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Kills the postmaster recorded in `data/postmaster.pid`, if it is alive.
fn kill_postmaster(data: &Path) {
    let Ok(text) = fs::read_to_string(data.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return;
    };
    if pid <= 1 || !process_alive(pid) {
        return;
    }
    // SIGQUIT is PostgreSQL's immediate shutdown; SIGKILL if it does not listen.
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    if process_alive(pid) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

// ---------------------------------------------------------------------------------------
// Running PostgreSQL programs
// ---------------------------------------------------------------------------------------

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Directory of the PostgreSQL server binaries: `$SLEDDOG_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<major>/bin` (Debian), else empty (use `$PATH`).
pub fn pg_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SLEDDOG_PG_BIN") {
            return PathBuf::from(dir);
        }
        let mut best: Option<(u32, PathBuf)> = None;
        for entry in fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(major) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if bin.join("initdb").exists() && best.as_ref().is_none_or(|(m, _)| major > *m) {
                best = Some((major, bin));
            }
        }
        best.map(|(_, bin)| bin).unwrap_or_default()
    })
}

fn pg_program(name: &str) -> PathBuf {
    let dir = pg_bin_dir();
    if dir.as_os_str().is_empty() {
        PathBuf::from(name)
    } else {
        dir.join(name)
    }
}

/// A command for a PostgreSQL server-side program, run as the `postgres` OS user when we
/// are root (initdb, postgres and pg_ctl refuse root).
fn pg_command(program: &str) -> Command {
    let path = pg_program(program);
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    }
}

/// Runs a command to completion; panics with its output when it fails.
fn run_checked(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes `dir` owned by the postgres OS user when we are root.
fn chown_to_postgres(dir: &Path) {
    if !is_root() {
        return;
    }
    let (uid, gid) = postgres_ids();
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // SAFETY: c is a valid NUL-terminated path.
    let rc = unsafe { libc::chown(c.as_ptr(), uid, gid) };
    assert_eq!(
        rc,
        0,
        "chown {} to postgres: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
}

fn postgres_ids() -> (libc::uid_t, libc::gid_t) {
    let name = CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns NULL or a pointer to static storage, copied out at once.
    // Its buffer is shared process-wide, but every caller asks for the same name.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root but there is no `postgres` OS user"
    );
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// Runs `psql` with a libpq connection string; returns trimmed stdout or stderr on failure.
pub fn psql_conninfo(conninfo: &str, sql: &str) -> Result<String, String> {
    psql_with(conninfo, None, sql)
}

/// Runs `psql` over TCP to 127.0.0.1:`port` as `user` (password via PGPASSWORD).
pub fn psql_tcp(
    port: u16,
    user: &str,
    password: Option<&str>,
    db: &str,
    sql: &str,
) -> Result<String, String> {
    let conninfo = format!("host=127.0.0.1 port={port} user={user} dbname={db} sslmode=disable");
    psql_with(&conninfo, password, sql)
}

fn psql_with(conninfo: &str, password: Option<&str>, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new(pg_program("psql"));
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        conninfo,
        "-f",
        "-",
    ])
    .env_remove("PGPASSWORD")
    .env("PGCONNECT_TIMEOUT", "10")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot run psql: {e}"))?;
    {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(sql.as_bytes())
            .map_err(|e| format!("write psql stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "psql ({}) exited {}: {}",
            conninfo,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

// ---------------------------------------------------------------------------------------
// PgServer
// ---------------------------------------------------------------------------------------

/// One initdb'd PostgreSQL instance under `/tmp/sleddog-test-<pid>/<name>`:
/// `data/` (the cluster), `sock/` (unix socket dir), `postgres.log`.
#[derive(Debug)]
pub struct PgServer {
    name: String,
    dir: PathBuf,
    port: u16,
}

impl PgServer {
    /// initdb, configure, start and wait for a new instance, then create the test roles and
    /// the `sleddog` database. Stopped and removed at process exit.
    pub fn start_new(name: &str) -> PgServer {
        let dir = unique_dir(name);
        chown_to_postgres(&dir);
        let server = PgServer {
            name: name.to_string(),
            dir,
            port: 0,
        };
        let mut initdb = pg_command("initdb");
        initdb
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C", "-D"])
            .arg(server.data_dir())
            .current_dir(&server.dir);
        run_checked(initdb, "initdb");
        server.make_sock_dir();
        fs::write(server.data_dir().join("pg_hba.conf"), HBA_CONF).expect("write pg_hba.conf");
        let server = server.start_on_free_port();
        server.psql("postgres", &roles_sql());
        server.psql(TEST_DB, &schema_grants_sql());
        server
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance directory (holds `data/`, `sock/`, `postgres.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn sock_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Runs SQL as superuser `postgres` over the unix socket; panics (with stderr) on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql on {} failed: {e}\nsql: {sql}", self.name))
    }

    /// Runs SQL as superuser `postgres` over the unix socket.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        psql_conninfo(&self.superuser_conninfo(db), sql)
    }

    /// libpq connection string for the superuser over the unix socket.
    pub fn superuser_conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.sock_dir().display(),
            self.port
        )
    }

    /// Runs SQL over TCP as one of the test roles (password from [`ROLES`]).
    pub fn psql_as(&self, role: &str, db: &str, sql: &str) -> Result<String, String> {
        psql_tcp(self.port, role, role_password(role), db, sql)
    }

    /// `pg_ctl stop -m fast`, waiting for the shutdown.
    pub fn stop(&self) {
        let mut cmd = pg_command("pg_ctl");
        cmd.args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .current_dir(&self.dir);
        run_checked(cmd, &format!("pg_ctl stop {}", self.name));
    }

    /// `pg_ctl start`, waiting until the server accepts connections.
    pub fn start(&self) {
        if let Err(e) = self.try_start() {
            panic!("{e}\n--- server log ---\n{}", self.log());
        }
    }

    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    /// The server log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// A new primary that has run `setup` (SQL, in the `sleddog` database;
    /// empty for none) and its streaming replica, in that order.
    pub fn start_with_replica(name: &str, setup: &str) -> (PgServer, PgServer) {
        let primary = PgServer::start_new(&format!("{name}-primary"));
        if !setup.is_empty() {
            primary.psql("sleddog", setup);
        }
        let replica = primary.create_replica(&format!("{name}-replica"));
        (primary, replica)
    }

    /// A streaming replica of this server, made with `pg_basebackup -R`; returns once it
    /// is in recovery and its WAL receiver is streaming.
    pub fn create_replica(&self, name: &str) -> PgServer {
        let dir = unique_dir(name);
        chown_to_postgres(&dir);
        let replica = PgServer {
            name: name.to_string(),
            dir,
            port: 0,
        };
        let slot = replica
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 dir name")
            .replace('-', "_");
        let mut backup = pg_command("pg_basebackup");
        backup
            .arg("-d")
            .arg(format!(
                "{} application_name={slot}",
                self.superuser_conninfo("postgres")
            ))
            // A fast checkpoint: the default spread one makes the backup wait for minutes.
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-D"])
            .arg(replica.data_dir())
            .current_dir(&replica.dir);
        run_checked(backup, &format!("pg_basebackup for {name}"));
        replica.make_sock_dir();
        // The copied postgresql.conf names the primary's port and socket dir; later lines
        // win, and start_on_free_port appends the replica's own.
        let _ = fs::remove_file(replica.data_dir().join("postmaster.opts"));
        let replica = replica.start_on_free_port();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let state = replica.try_psql(
                "postgres",
                "select pg_is_in_recovery()::text || ',' || \
                 coalesce((select status from pg_stat_wal_receiver), 'none')",
            );
            if state.as_deref() == Ok("true,streaming") {
                return replica;
            }
            if Instant::now() > deadline {
                panic!(
                    "replica {name} not streaming ({state:?})\n--- replica log ---\n{}\n--- primary log ---\n{}",
                    replica.log(),
                    self.log()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn make_sock_dir(&self) {
        let sock = self.sock_dir();
        fs::create_dir_all(&sock).expect("create socket dir");
        chown_to_postgres(&sock);
    }

    /// Appends the per-instance settings with a fresh port and starts; retries on a new
    /// port when the chosen one was taken in the meantime.
    fn start_on_free_port(mut self) -> PgServer {
        register_server(&self.data_dir());
        let mut last_error = String::new();
        for _ in 0..5 {
            self.port = free_port();
            self.append_conf(&self.instance_conf());
            match self.try_start() {
                Ok(()) => return self,
                Err(e) => last_error = e,
            }
            if !self.log().contains("could not bind") && !self.log().contains("in use") {
                break;
            }
        }
        panic!(
            "could not start {}: {last_error}\n--- server log ---\n{}",
            self.name,
            self.log()
        );
    }

    fn instance_conf(&self) -> String {
        format!(
            "\n# sleddog test harness\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sock}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 300\n\
             shared_buffers = 32MB\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             hot_standby = on\n\
             wal_receiver_status_interval = 1s\n\
             logging_collector = off\n\
             log_min_messages = warning\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n\
             password_encryption = 'scram-sha-256'\n",
            port = self.port,
            sock = self.sock_dir().display(),
        )
    }

    fn append_conf(&self, text: &str) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir().join("postgresql.conf"))
            .expect("open postgresql.conf");
        f.write_all(text.as_bytes())
            .expect("append postgresql.conf");
    }

    fn try_start(&self) -> Result<(), String> {
        let mut cmd = pg_command("pg_ctl");
        cmd.args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start {} failed ({}): {}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // pg_ctl -w returns when the postmaster says it is ready; confirm with a query so
        // callers can use it at once.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.try_psql("postgres", "select 1") {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => sleep(Duration::from_millis(50)),
            }
        }
    }
}

const HBA_CONF: &str = "\
# sleddog test harness: superuser over the socket, one TCP auth method per test role
local   all          all                     trust
local   replication  all                     trust
host    replication  all      127.0.0.1/32   trust
host    all          sd_md5   127.0.0.1/32   md5
host    all          sd_plain 127.0.0.1/32   password
host    all          sd_trust 127.0.0.1/32   trust
host    all          all      127.0.0.1/32   scram-sha-256
";

/// The password of a test role (None for `sd_trust` or unknown roles).
pub fn role_password(role: &str) -> Option<&'static str> {
    ROLES
        .iter()
        .find(|(name, ..)| *name == role)
        .and_then(|(_, pw, ..)| *pw)
}

fn roles_sql() -> String {
    let mut sql = String::new();
    for (name, password, storage, _) in ROLES {
        sql.push_str(&format!("SET password_encryption = '{storage}';\n"));
        match password {
            Some(pw) => sql.push_str(&format!(
                "CREATE ROLE {name} LOGIN CREATEDB PASSWORD '{pw}';\n"
            )),
            None => sql.push_str(&format!("CREATE ROLE {name} LOGIN CREATEDB;\n")),
        }
    }
    sql.push_str("RESET password_encryption;\n");
    sql.push_str(&format!("CREATE DATABASE {TEST_DB} OWNER sd_scram;\n"));
    for (name, ..) in ROLES {
        sql.push_str(&format!("GRANT ALL ON DATABASE {TEST_DB} TO {name};\n"));
    }
    sql
}

/// Run in the test database: every test role may use the public schema, and whatever the
/// superuser or a test role creates there is usable by all test roles (tests set up tables
/// as `postgres` and query them through the proxy as a test role).
fn schema_grants_sql() -> String {
    let all_roles = ROLES
        .iter()
        .map(|(name, ..)| *name)
        .collect::<Vec<_>>()
        .join(", ");
    let mut sql = format!("GRANT ALL ON SCHEMA public TO {all_roles};\n");
    for creator in std::iter::once("postgres").chain(ROLES.iter().map(|(name, ..)| *name)) {
        for kind in ["TABLES", "SEQUENCES", "FUNCTIONS"] {
            sql.push_str(&format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {creator} IN SCHEMA public \
                 GRANT ALL ON {kind} TO {all_roles};\n"
            ));
        }
    }
    sql
}

/// The shared primary of this test binary: started on first use, stopped at exit.
pub fn pg() -> &'static PgServer {
    static PG: OnceLock<PgServer> = OnceLock::new();
    PG.get_or_init(|| PgServer::start_new("primary"))
}

// ---------------------------------------------------------------------------------------
// Sleddog
// ---------------------------------------------------------------------------------------

/// Path of the sleddog binary cargo built for these tests.
pub fn sleddog_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sleddog")
}

/// One-shot CLI run (configcheck, hash, ...), capturing output.
pub fn run_sleddog(args: &[&str]) -> Output {
    Command::new(sleddog_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sleddog")
}

/// A running sleddog process; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct Sleddog {
    /// The port from the `[general]` table of its config (0 when none was found).
    pub port: u16,
    dir: PathBuf,
    child: Child,
    exit: Option<i32>,
}

impl Sleddog {
    /// A `[general]` table listening on 127.0.0.1:`port` with two workers; tests append
    /// the rest of the pgdog.toml.
    pub fn config_header(port: u16) -> String {
        format!("[general]\nhost = \"127.0.0.1\"\nport = {port}\nworkers = 2\n\n")
    }

    /// Writes pgdog.toml and users.toml, runs `sleddog -c pgdog.toml -u users.toml` and
    /// waits up to 10 s for the port from `[general]`.
    pub fn start(pgdog_toml: &str, users_toml: &str) -> Sleddog {
        Sleddog::start_with_args(
            &["-c", "pgdog.toml", "-u", "users.toml"],
            &[("pgdog.toml", pgdog_toml), ("users.toml", users_toml)],
        )
    }

    /// Writes `files` (name, contents) into a fresh directory, runs sleddog there with
    /// `args` (relative paths resolve in that directory) and, when one of the files has a
    /// `[general]` `port`, waits up to 10 s for it to accept connections.
    pub fn start_with_args(args: &[&str], files: &[(&str, &str)]) -> Sleddog {
        let dir = unique_dir("sleddog");
        for (name, contents) in files {
            fs::write(dir.join(name), contents).expect("write sleddog file");
        }
        let port = files
            .iter()
            .find_map(|(_, contents)| general_port(contents))
            .unwrap_or(0);
        let log = fs::File::create(dir.join("sleddog.log")).expect("create sleddog.log");
        let mut cmd = Command::new(sleddog_bin());
        cmd.args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd.spawn().expect("spawn sleddog");
        PROXIES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id());
        let mut proxy = Sleddog {
            port,
            dir,
            child,
            exit: None,
        };
        proxy.wait_ready(Duration::from_secs(10));
        proxy
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(exit_code(status));
                panic!(
                    "sleddog exited ({status}) before listening on {}\n--- sleddog log ---\n{}",
                    self.port,
                    self.log()
                );
            }
            if self.port == 0 {
                // Nothing to wait for; give it a moment to fail on bad arguments.
                sleep(Duration::from_millis(200));
                return;
            }
            if port_open(self.port) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "sleddog did not listen on {} within {timeout:?}\n--- sleddog log ---\n{}",
                    self.port,
                    self.log()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// The directory holding its config files and `sleddog.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("sleddog.log")).unwrap_or_default()
    }

    /// Sends a signal (libc::SIGHUP, libc::SIGTERM, ...).
    pub fn signal(&self, sig: i32) {
        if self.exit.is_none() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(self.child.id() as i32, sig) };
        }
    }

    /// Waits up to `timeout` for the process to exit. Returns its exit code, or 128 + the
    /// signal number when a signal ended it; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.exit {
                return Some(code);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(exit_code(status));
                continue;
            }
            if Instant::now() > deadline {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sleddog {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let pid = self.child.id();
        PROXIES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != pid);
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// The `port` of the `[general]` table in a TOML text, found by a line scan (this harness
/// stays free of a TOML dependency).
fn general_port(toml_text: &str) -> Option<u16> {
    let mut in_general = false;
    for line in toml_text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_general = line == "[general]";
            continue;
        }
        if !in_general {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == "port" {
                let value = value.split('#').next().unwrap_or("").trim();
                return value.parse().ok();
            }
        }
    }
    None
}

/// Drops ANSI colour sequences (ESC [ parameters final-letter), which the log
/// formatter may add.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

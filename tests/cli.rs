//! The `sleddog` command line: `configcheck` verdicts and their `file:line: key`
//! diagnostics, `hash`, `-d` URLs with no config files, and `run` refusing a bad
//! config.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::USERS;
use common::{free_port, pg, port_open, scratch_root, sleddog_bin, strip_ansi, Sleddog};

/// A pgdog.toml that is valid on its own: `[general]` on lines 1-4, the
/// database from line 6.
fn valid_pgdog(extra_general: &str) -> String {
    format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {}\nworkers = 1\n{extra_general}\n\
         [[databases]]\nname = \"sleddog\"\nhost = \"127.0.0.1\"\nport = 5432\n",
        free_port()
    )
}

/// A fresh directory holding `pgdog.toml` and `users.toml`.
fn config_dir(pgdog: &str, users: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch_root().join(format!("cli-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pgdog.toml"), pgdog).unwrap();
    std::fs::write(dir.join("users.toml"), users).unwrap();
    dir
}

/// Runs `sleddog <args>` in `dir` with a deadline; returns exit code, stdout,
/// stderr. Panics if it does not exit in time.
fn run_in(dir: &Path, args: &[&str], timeout: Duration) -> (i32, String, String) {
    let out_path = dir.join("cli.stdout");
    let err_path = dir.join("cli.stderr");
    let mut child = Command::new(sleddog_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("SLEDDOG_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sleddog {args:?} still running after {timeout:?}\nstderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| strip_ansi(&std::fs::read_to_string(p).unwrap_or_default());
    (
        status.code().unwrap_or(-1),
        read(&out_path),
        read(&err_path),
    )
}

fn configcheck(pgdog: &str, users: &str) -> (i32, String) {
    let dir = config_dir(pgdog, users);
    let (code, _, stderr) = run_in(&dir, &["configcheck"], Duration::from_secs(10));
    (code, stderr)
}

/// Asserts stderr has a diagnostic `file:line: key `key`` at an error level.
fn assert_error_at(stderr: &str, file: &str, line: usize, key: &str) {
    let located = format!("{file}:{line}: key `{key}`");
    let found = stderr
        .lines()
        .find(|l| l.contains(&located))
        .unwrap_or_else(|| panic!("no diagnostic `{located}` in stderr:\n{stderr}"));
    assert!(found.contains("ERROR"), "not an error: {found}");
}

#[test]
fn configcheck_accepts_a_valid_config() {
    let (code, stderr) = configcheck(&valid_pgdog(""), USERS);
    assert_eq!(code, 0, "stderr:\n{stderr}");
    assert!(!stderr.contains("ERROR"), "stderr:\n{stderr}");
}

#[test]
fn configcheck_rejects_an_unknown_key() {
    // Line 5 is the first `extra_general` line.
    let (code, stderr) = configcheck(&valid_pgdog("prot = 1"), USERS);
    assert_eq!(code, 1, "stderr:\n{stderr}");
    assert_error_at(&stderr, "pgdog.toml", 5, "general.prot");
}

#[test]
fn configcheck_rejects_a_wrong_type() {
    let (code, stderr) = configcheck(&valid_pgdog("default_pool_size = \"ten\""), USERS);
    assert_eq!(code, 1, "stderr:\n{stderr}");
    assert_error_at(&stderr, "pgdog.toml", 5, "general.default_pool_size");
}

#[test]
fn configcheck_rejects_port_zero() {
    let pgdog = "[general]\nhost = \"127.0.0.1\"\nport = 0\n";
    let (code, stderr) = configcheck(pgdog, "");
    assert_eq!(code, 1, "stderr:\n{stderr}");
    assert_error_at(&stderr, "pgdog.toml", 3, "general.port");
}

#[test]
fn configcheck_rejects_a_user_of_a_missing_database() {
    let users = "[[users]]\nname = \"app\"\ndatabase = \"nowhere\"\npassword = \"pw\"\n";
    let (code, stderr) = configcheck(&valid_pgdog(""), users);
    assert_eq!(code, 1, "stderr:\n{stderr}");
    assert_error_at(&stderr, "users.toml", 3, "users[0].database");
}

#[test]
fn configcheck_reports_every_error_in_one_run() {
    let pgdog = "[general]\n\
                 host = \"127.0.0.1\"\n\
                 port = 0\n\
                 bogus_key = 1\n\
                 default_pool_size = \"ten\"\n\
                 \n\
                 [[databases]]\n\
                 name = \"sleddog\"\n\
                 port = 70000\n";
    let users = "[[users]]\nname = \"app\"\ndatabase = \"nowhere\"\npassword = \"pw\"\n";
    let (code, stderr) = configcheck(pgdog, users);
    assert_eq!(code, 1, "stderr:\n{stderr}");
    assert_error_at(&stderr, "pgdog.toml", 3, "general.port");
    assert_error_at(&stderr, "pgdog.toml", 4, "general.bogus_key");
    assert_error_at(&stderr, "pgdog.toml", 5, "general.default_pool_size");
    assert_error_at(&stderr, "pgdog.toml", 9, "databases[0].port");
    assert_error_at(&stderr, "users.toml", 3, "users[0].database");
}

#[test]
fn configcheck_warns_about_known_unimplemented_keys() {
    let (code, stderr) = configcheck(&valid_pgdog("rollback_timeout = 1000"), USERS);
    assert_eq!(code, 0, "stderr:\n{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("pgdog.toml:5: key `general.rollback_timeout`"))
        .unwrap_or_else(|| panic!("no warning naming the key:\n{stderr}"));
    assert!(warning.contains("WARN"), "not a warning: {warning}");
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as Postgres
/// stores it (RFC 5803); that it logs in is tested in tests/auth.rs.
#[test]
fn hash_prints_a_scram_verifier() {
    use base64::Engine;
    let decode = |text: &str| base64::engine::general_purpose::STANDARD.decode(text);
    let mut salts = Vec::new();
    for _ in 0..2 {
        let (code, stdout, stderr) =
            run_in(scratch_root(), &["hash", "pw"], Duration::from_secs(10));
        assert_eq!(code, 0, "stderr:\n{stderr}");
        let verifier = stdout.trim();
        let rest = verifier
            .strip_prefix("SCRAM-SHA-256$4096:")
            .unwrap_or_else(|| panic!("not a SCRAM verifier: {verifier:?}"));
        let (salt, keys) = rest.split_once('$').expect("salt$keys");
        let (stored, server) = keys.split_once(':').expect("stored:server");
        assert!(decode(salt).unwrap().len() >= 16, "salt {salt}");
        assert_eq!(decode(stored).unwrap().len(), 32, "StoredKey {stored}");
        assert_eq!(decode(server).unwrap().len(), 32, "ServerKey {server}");
        salts.push(salt.to_owned());
    }
    assert_ne!(salts[0], salts[1], "every hash gets a fresh salt");
}

/// `-d` alone: with neither pgdog.toml nor users.toml, the configuration is
/// the defaults plus the URL (files missing is a warning, as in PgDog).
#[test]
fn database_url_without_config_files_is_valid() {
    let dir = scratch_root().join("cli-no-files");
    std::fs::create_dir_all(&dir).unwrap();
    let url = "postgres://sd_scram:scram_pw@127.0.0.1:5432/sleddog";
    let (code, _, stderr) = run_in(&dir, &["-d", url, "configcheck"], Duration::from_secs(10));
    assert_eq!(code, 0, "stderr:\n{stderr}");
    for file in ["pgdog.toml", "users.toml"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(file) && l.contains("WARN")),
            "no warning about the missing {file}:\n{stderr}"
        );
    }
}

/// `-d` supplies the databases and users: the URL path names the database
/// and the URL's user logs in with the URL's password. The only file is a
/// `[general]` table with the listen port; without it sleddog would take
/// PgDog's default 6432, which a developer's running proxy may hold.
#[tokio::test(flavor = "multi_thread")]
async fn database_url_alone_defines_database_and_user() {
    let port = free_port();
    let url = format!(
        "postgres://sd_scram:scram_pw@127.0.0.1:{}/sleddog",
        pg().port()
    );
    let general = format!("[general]\nhost = \"127.0.0.1\"\nport = {port}\n");
    let _proxy = Sleddog::start_with_args(
        &["-c", "pgdog.toml", "-u", "users.toml", "-d", &url],
        &[("pgdog.toml", &general)],
    );
    let client = common::proxy::connect(port, "sd_scram", "scram_pw").await;
    let row = client
        .query_typed_one("select current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "sd_scram");
    assert_eq!(row.get::<_, &str>(1), "sleddog");
    // The URL's password is the only one that logs in, and only its user.
    let wrong = common::proxy::try_connect(port, "sd_scram", "md5_pw").await;
    assert!(wrong.is_err(), "a wrong password logged in");
    let other = common::proxy::try_connect(port, "sd_md5", "md5_pw").await;
    assert!(other.is_err(), "a user the URL does not name logged in");
}

#[test]
fn run_with_a_bad_config_exits_1_without_listening() {
    let port = free_port();
    let pgdog = format!("[general]\nhost = \"127.0.0.1\"\nport = {port}\nworkers = \"two\"\n");
    let dir = config_dir(&pgdog, USERS);
    let started = Instant::now();
    let (code, _, stderr) = run_in(&dir, &["run"], Duration::from_secs(5));
    assert_eq!(code, 1, "stderr:\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_error_at(&stderr, "pgdog.toml", 4, "general.workers");
    assert!(!port_open(port));
}

//! Real client drivers through sleddog: psycopg 3, asyncpg and node-postgres run the
//! scenario scripts in `tests/drivers/` against Postgres directly and through a sleddog
//! in transaction mode whose pool (2 server connections) is shared by many clients.
//! Each script compares what the driver saw both ways and exits non-zero with a message
//! starting `FAIL` on any mismatch; this file only starts the servers, runs the script
//! and reports its output with the end of sleddog's log.
//!
//! The drivers come from `scripts/test`: a Python venv (`SLEDDOG_DRIVERS_VENV`, default
//! `/var/tmp/sleddog-venv`) and an npm directory (`SLEDDOG_DRIVERS_NODE`, default
//! `/var/tmp/sleddog-node`). A missing Python driver fails the test; node-postgres is
//! skipped only when `scripts/test` said node cannot be had (`SLEDDOG_DRIVERS_NODE_SKIP`).
//!
//! Scenarios that need work in progress (issue 3) are `#[ignore]`d with the feature they
//! wait for; `cargo test --test drivers -- --ignored` runs them.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::proxy::{config, USERS};
use common::{free_port, pg, scratch_root, strip_ansi, Sleddog, TEST_DB};

const USER: &str = "sd_scram";
const PASSWORD: &str = "scram_pw";
/// The whole pool, over both workers: one server connection per core.
const POOL_SIZE: u32 = 2;
/// A script still running after this is killed and the test fails (the scripts bound
/// their own waits far below this; this only keeps a hang from stalling the suite).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(45);

/// A sleddog of its own for each scenario, so one scenario's failure cannot disturb
/// another's; the Postgres behind them is shared.
fn proxy() -> Sleddog {
    let general = format!("default_pool_size = {POOL_SIZE}\npub_sub_channel_size = 1024");
    Sleddog::start(&config(free_port(), pg().port(), &general), USERS)
}

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// The venv's python, checked once to import both Python drivers.
fn python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let venv = env_path("SLEDDOG_DRIVERS_VENV", "/var/tmp/sleddog-venv");
        let python = venv.join("bin/python");
        let check = Command::new(&python)
            .args(["-c", "import psycopg, asyncpg"])
            .stdin(Stdio::null())
            .output();
        match check {
            Ok(out) if out.status.success() => Ok(python),
            Ok(out) => Err(format!(
                "{} cannot import psycopg and asyncpg: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run {}: {e}", python.display())),
        }
    });
    match found {
        Ok(python) => python,
        Err(why) => panic!(
            "Python drivers missing: {why}\n\
             Run scripts/test once (it installs them), or point SLEDDOG_DRIVERS_VENV at a \
             venv with psycopg[binary] and asyncpg."
        ),
    }
}

/// `node` and the directory holding `node_modules/pg`; None when scripts/test reported
/// that node cannot be had on this machine (said loudly on stderr).
fn node() -> Option<(PathBuf, PathBuf)> {
    if let Some(why) = std::env::var_os("SLEDDOG_DRIVERS_NODE_SKIP").filter(|v| !v.is_empty()) {
        eprintln!(
            "SKIPPED: node-postgres scenario not run: {}",
            why.to_string_lossy()
        );
        return None;
    }
    let dir = env_path("SLEDDOG_DRIVERS_NODE", "/var/tmp/sleddog-node");
    let modules = dir.join("node_modules");
    let check = Command::new("node")
        .args(["-e", "require('pg')"])
        .env("NODE_PATH", &modules)
        .stdin(Stdio::null())
        .output();
    match check {
        Ok(out) if out.status.success() => Some((PathBuf::from("node"), modules)),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr
                .lines()
                .find(|line| line.contains("Error"))
                .unwrap_or("require('pg') failed");
            panic!(
                "node-postgres missing in {}: {}\nRun scripts/test once (it installs it).",
                modules.display(),
                why.trim()
            )
        }
        Err(e) => panic!("cannot run node ({e}); run scripts/test once (it installs it)."),
    }
}

/// Runs one scenario script with the connection info in its environment and fails the
/// test with its output and sleddog's log when it exits non-zero or hangs.
fn run_script(program: &Path, script: &str, args: &[&str], extra_env: &[(&str, &Path)]) {
    let proxy = proxy();
    // Each test runs a distinct script and argument list, so this name is its own.
    let dir = scratch_root().join(format!("driver-{script}-{}", args.join("-")));
    fs::create_dir_all(&dir).expect("create script output dir");
    let stdout_path = dir.join("stdout");
    let stderr_path = dir.join("stderr");
    let mut cmd = Command::new(program);
    cmd.arg(drivers_dir().join(script))
        .args(args)
        .current_dir(drivers_dir())
        .env("SD_HOST", "127.0.0.1")
        .env("SD_PROXY_PORT", proxy.port.to_string())
        .env("SD_DIRECT_PORT", pg().port().to_string())
        .env("SD_USER", USER)
        .env("SD_PASSWORD", PASSWORD)
        .env("SD_DATABASE", TEST_DB)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).expect("create script stdout"))
        .stderr(fs::File::create(&stderr_path).expect("create script stderr"));
    for (key, value) in extra_env {
        cmd.env(key, value);
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} {script}: {e}", program.display()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(20));
    };
    let output = format!(
        "--- {script} {args:?} stdout ---\n{}\n--- stderr ---\n{}",
        fs::read_to_string(&stdout_path).unwrap_or_default(),
        fs::read_to_string(&stderr_path).unwrap_or_default(),
    );
    match status {
        // Shown with --nocapture: what the scenario measured (latencies, counts).
        Some(status) if status.success() => println!("{output}"),
        Some(status) => panic!(
            "{script} {args:?} failed ({status}) after {:.1?}\n{output}\n--- sleddog log (end) ---\n{}",
            started.elapsed(),
            log_tail(&proxy.log(), 60)
        ),
        None => panic!(
            "{script} {args:?} did not finish within {SCRIPT_TIMEOUT:?}\n{output}\n--- sleddog log (end) ---\n{}",
            log_tail(&proxy.log(), 60)
        ),
    }
}

/// The last `lines` lines of sleddog's log, without terminal colour codes.
fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    strip_ansi(&all[all.len().saturating_sub(lines)..].join("\n"))
}

fn python_scenario(script: &str, args: &[&str]) {
    run_script(python(), script, args, &[]);
}

#[test]
fn psycopg_prepared_statements_across_transactions() {
    python_scenario("psycopg_prepared.py", &[]);
}

#[test]
fn psycopg_pipeline_mode() {
    python_scenario("psycopg_pipeline.py", &[]);
}

#[test]
fn asyncpg_prepared_statements_across_transactions() {
    python_scenario("asyncpg_prepared.py", &[]);
}

#[test]
fn session_settings_do_not_leak_to_other_clients() {
    python_scenario("session_state.py", &["leak"]);
}

/// set_config() outside a transaction changes the session like SET does.
#[test]
fn session_settings_from_set_config_do_not_leak() {
    python_scenario("session_state.py", &["leak-set-config"]);
}

#[test]
fn session_settings_stay_with_their_client() {
    python_scenario("session_state.py", &["keep"]);
}

#[test]
fn error_in_transaction_then_rollback() {
    python_scenario("error_rollback.py", &[]);
}

#[test]
fn copy_ten_thousand_rows_each_way() {
    python_scenario("psycopg_copy.py", &[]);
}

#[test]
fn listen_notify_between_clients() {
    python_scenario("listen_notify.py", &[]);
}

#[test]
fn cancel_a_running_query() {
    python_scenario("cancel.py", &[]);
}

#[test]
fn asyncpg_hundred_clients() {
    python_scenario("many_clients.py", &[]);
}

#[test]
fn node_postgres_basic_queries() {
    if let Some((node, modules)) = node() {
        run_script(&node, "node_pg.js", &["basic"], &[("NODE_PATH", &modules)]);
    }
}

#[test]
fn node_postgres_named_prepared_statement() {
    if let Some((node, modules)) = node() {
        run_script(
            &node,
            "node_pg.js",
            &["prepared"],
            &[("NODE_PATH", &modules)],
        );
    }
}

//! Process lifecycle: SIGHUP reloads the configuration (new sessions use it at
//! once, retired pools move connected sessions at their next transaction, a
//! broken file changes nothing), SIGINT shuts down gracefully within
//! `shutdown_timeout`, SIGTERM exits at once.

mod common;

use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::proxy::{config, connect, query, Msg, Raw, USERS};
use common::{free_port, pg, PgServer, Sleddog};

/// Polls `check` until it returns true or `timeout` passes.
fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// The port of the Postgres a client's next transaction runs on.
async fn server_port(client: &tokio_postgres::Client) -> i32 {
    client
        .query_typed_one("select inet_server_port()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Writes a new pgdog.toml, sends SIGHUP and waits until the log says how the
/// reload went (`expect` is the line to wait for), then for the cores to pick
/// it up (each polls its inbox every few milliseconds).
fn reload(proxy: &Sleddog, pgdog_toml: &str, expect: &str) {
    let before = proxy.log().matches(expect).count();
    std::fs::write(proxy.dir().join("pgdog.toml"), pgdog_toml).unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || proxy
            .log()
            .matches(expect)
            .count()
            > before),
        "no `{expect}` after SIGHUP\n{}",
        proxy.log()
    );
    std::thread::sleep(Duration::from_millis(100));
}

fn ready_status(msgs: &[Msg]) -> u8 {
    let last = msgs.last().expect("at least ReadyForQuery");
    assert_eq!(last.tag, b'Z', "{msgs:?}");
    last.body[0]
}

/// Asserts the next message is a FATAL 57P01 and the connection then closes.
fn expect_admin_shutdown(raw: &mut Raw) {
    let limit = Some(Duration::from_secs(3));
    raw.stream.set_read_timeout(limit).unwrap();
    let msg = raw.recv().expect("a FATAL before close");
    assert_eq!(msg.tag, b'E', "{msg:?}");
    assert_eq!(msg.field(b'S').as_deref(), Some("FATAL"));
    assert_eq!(msg.sqlstate().as_deref(), Some("57P01"));
    assert!(raw.recv().is_none(), "connection still open");
}

fn trust_proxy(general: &str) -> Sleddog {
    let general = format!("auth_type = \"trust\"\n{general}");
    Sleddog::start(&config(free_port(), pg().port(), &general), USERS)
}

/// Server B of the reload tests; server A is the shared primary.
fn server_b() -> &'static PgServer {
    static B: OnceLock<PgServer> = OnceLock::new();
    B.get_or_init(|| PgServer::start_new("b"))
}

fn ports() -> (i32, i32) {
    (i32::from(pg().port()), i32::from(server_b().port()))
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_sends_new_sessions_to_the_new_server() {
    let (a_port, b_port) = ports();
    let port = free_port();
    let proxy = Sleddog::start(&config(port, pg().port(), ""), USERS);
    let in_tx = connect(port, "sd_scram", "scram_pw").await;
    in_tx.batch_execute("begin").await.unwrap();
    let backend: i32 = in_tx
        .query_typed_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    reload(
        &proxy,
        &config(port, server_b().port(), ""),
        "configuration reloaded",
    );
    for _ in 0..4 {
        let fresh = connect(port, "sd_scram", "scram_pw").await;
        assert_eq!(server_port(&fresh).await, b_port, "a new session");
    }
    // A transaction open across the reload finishes where it started.
    let row = in_tx
        .query_typed_one("select inet_server_port(), pg_backend_pid()", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, i32>(1)),
        (a_port, backend)
    );
    in_tx.batch_execute("commit").await.unwrap();
}

/// Sessions connected before a reload that retired their pool reach the new
/// server with their next transaction, instead of failing.
#[tokio::test(flavor = "multi_thread")]

async fn sighup_moves_connected_sessions_at_their_next_transaction() {
    let (a_port, b_port) = ports();
    let port = free_port();
    let proxy = Sleddog::start(&config(port, pg().port(), ""), USERS);
    let idle = connect(port, "sd_scram", "scram_pw").await;
    assert_eq!(server_port(&idle).await, a_port);
    let in_tx = connect(port, "sd_scram", "scram_pw").await;
    in_tx.batch_execute("begin").await.unwrap();
    assert_eq!(server_port(&in_tx).await, a_port);

    reload(
        &proxy,
        &config(port, server_b().port(), ""),
        "configuration reloaded",
    );
    assert_eq!(server_port(&in_tx).await, a_port, "inside its transaction");
    in_tx.batch_execute("commit").await.unwrap();
    assert_eq!(server_port(&in_tx).await, b_port, "after its commit");
    assert_eq!(server_port(&idle).await, b_port, "an idle session");
}

/// A reload from a broken file changes nothing: not even the parts of it that
/// were valid (here, the move to server B).
#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_broken_config_keeps_the_running_one() {
    let (a_port, _) = ports();
    let port = free_port();
    let proxy = Sleddog::start(&config(port, pg().port(), ""), USERS);
    let connected = connect(port, "sd_scram", "scram_pw").await;
    assert_eq!(server_port(&connected).await, a_port);

    let broken = config(port, server_b().port(), "no_such_setting = 1");
    reload(&proxy, &broken, "reload failed");
    assert!(proxy.log().contains("no_such_setting"), "{}", proxy.log());
    for _ in 0..4 {
        let fresh = connect(port, "sd_scram", "scram_pw").await;
        assert_eq!(server_port(&fresh).await, a_port, "a new session");
    }
    assert_eq!(server_port(&connected).await, a_port, "a connected session");
}

#[test]
fn sigint_lets_open_transactions_finish_then_exits() {
    let mut proxy = trust_proxy("shutdown_timeout = 20000");
    let mut in_tx = Raw::login(proxy.port, "sd_scram", None);
    in_tx.send(&query("begin; select 1"));
    assert_eq!(ready_status(&in_tx.until_ready()), b'T');
    let mut idle = Raw::login(proxy.port, "sd_scram", None);
    idle.send(&query("select 1"));
    assert_eq!(ready_status(&idle.until_ready()), b'I');

    proxy.signal(libc::SIGINT);
    expect_admin_shutdown(&mut idle);
    let port = proxy.port;
    assert!(
        eventually(Duration::from_secs(2), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_err()),
        "still accepting connections after SIGINT"
    );

    // The open transaction goes on and commits.
    in_tx.send(&query("select 2"));
    let reply = in_tx.until_ready();
    assert!(reply.iter().any(|m| m.tag == b'D'), "{reply:?}");
    assert_eq!(ready_status(&reply), b'T');
    assert_eq!(
        proxy.wait_exit(Duration::from_millis(200)),
        None,
        "exited early"
    );
    in_tx.send(&query("commit"));
    assert_eq!(ready_status(&in_tx.until_ready()), b'I');
    expect_admin_shutdown(&mut in_tx);
    let exit = proxy.wait_exit(Duration::from_secs(2));
    assert_eq!(exit, Some(0), "{}", proxy.log());
}

#[test]
fn shutdown_timeout_bounds_a_transaction_that_never_ends() {
    let mut proxy = trust_proxy("shutdown_timeout = 1000");
    let mut in_tx = Raw::login(proxy.port, "sd_scram", None);
    in_tx.send(&query("begin"));
    assert_eq!(ready_status(&in_tx.until_ready()), b'T');
    let started = Instant::now();
    proxy.signal(libc::SIGINT);
    let exit = proxy.wait_exit(Duration::from_secs(4));
    let took = started.elapsed();
    assert_eq!(exit, Some(0), "{}", proxy.log());
    assert!(took >= Duration::from_millis(900), "did not wait: {took:?}");
    assert!(took < Duration::from_millis(2000), "took {took:?}");
    assert!(in_tx.recv().is_none_or(|m| m.tag == b'E'));
}

#[test]
fn sigterm_exits_at_once() {
    let mut proxy = trust_proxy("shutdown_timeout = 20000");
    let mut in_tx = Raw::login(proxy.port, "sd_scram", None);
    in_tx.send(&query("begin"));
    assert_eq!(ready_status(&in_tx.until_ready()), b'T');
    let _idle = Raw::login(proxy.port, "sd_scram", None);
    let started = Instant::now();
    proxy.signal(libc::SIGTERM);
    let exit = proxy.wait_exit(Duration::from_secs(1));
    assert!(exit.is_some(), "still running 1 s after SIGTERM");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(in_tx.recv().is_none_or(|m| m.tag == b'E'));
}

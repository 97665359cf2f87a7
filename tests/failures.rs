//! What happens when things go wrong: clients that vanish mid-transaction or
//! mid-pipeline, server backends that are terminated, Postgres restarts and
//! outages, malformed and oversized client messages, and session mode reset.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{config, connect, execute, flush, parse, query, sqlstate, tagged, Raw, USERS};
use common::{free_port, pg, PgServer, Sleddog};
use tokio_postgres::types::Type;

/// Polls `check` until it returns true or `timeout` passes.
fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

fn idle_in_transaction(server: &PgServer) -> i64 {
    server
        .psql(
            "postgres",
            "select count(*) from pg_stat_activity \
             where application_name = 'sleddog' and state like 'idle in transaction%'",
        )
        .parse()
        .unwrap()
}

fn trust_proxy(server: &PgServer, general: &str) -> Sleddog {
    let general = format!("auth_type = \"trust\"\n{general}");
    Sleddog::start(&config(free_port(), server.port(), &general), USERS)
}

#[test]
fn client_killed_mid_transaction_leaves_nothing_open() {
    let server = pg();
    server.psql(
        "sleddog",
        "create table killed_rows (id int); grant all on killed_rows to public",
    );
    let proxy = trust_proxy(server, "");
    let mut raw = Raw::login(proxy.port, "sd_scram", None);
    raw.send(&query("begin; insert into killed_rows values (1)"));
    let reply = raw.until_ready();
    assert_eq!(reply.last().unwrap().body, b"T", "in a transaction");
    raw.kill();
    assert!(
        eventually(Duration::from_secs(5), || idle_in_transaction(server) == 0),
        "an idle transaction stayed open"
    );
    assert_eq!(
        server.psql("sleddog", "select count(*) from killed_rows"),
        "0"
    );
}

#[test]
fn client_gone_before_sync_commits_nothing() {
    let server = pg();
    server.psql(
        "sleddog",
        "create table presync_rows (id int); grant all on presync_rows to public",
    );
    let proxy = trust_proxy(server, "");
    let mut raw = Raw::login(proxy.port, "sd_scram", None);
    let mut batch = parse("insert into presync_rows values (1)");
    batch.extend(common::proxy::bind_no_params());
    batch.extend(execute());
    batch.extend(flush());
    raw.send(&batch);
    // ParseComplete, BindComplete, CommandComplete: the insert ran, not committed.
    for expected in [b'1', b'2', b'C'] {
        assert_eq!(raw.recv().unwrap().tag, expected);
    }
    raw.kill();
    assert!(eventually(Duration::from_secs(5), || {
        server.psql(
            "postgres",
            "select count(*) from pg_stat_activity where application_name = 'sleddog' \
             and state <> 'idle'",
        ) == "0"
    }));
    assert_eq!(
        server.psql("sleddog", "select count(*) from presync_rows"),
        "0"
    );
}

/// Clients loop `select` while their server backends are terminated: each
/// error a client sees retires one dead server connection, and the client goes
/// on over its same connection to sleddog.
#[tokio::test(flavor = "multi_thread")]
async fn terminated_backends_under_looping_clients() {
    // Its own server: the terminations would reach other tests' connections.
    let server = &PgServer::start_new("terminate_loop");
    let port = free_port();
    let proxy = Sleddog::start(&config(port, server.port(), "default_pool_size = 4"), USERS);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let client = connect(port, "sd_scram", "scram_pw").await;
                let (mut ok, mut failed) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match client
                        .query_typed_one("select $1::int4", &[(&i, Type::INT4)])
                        .await
                    {
                        Ok(row) => {
                            assert_eq!(row.get::<_, i32>(0), i);
                            ok += 1;
                        }
                        Err(error) => {
                            assert!(sqlstate(&error).is_some(), "{error}");
                            failed += 1;
                        }
                    }
                }
                // After the storm, the same connection works.
                client.query_typed_one("select 1", &[]).await.unwrap();
                (ok, failed)
            })
        })
        .collect();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.psql(
            "postgres",
            "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'sleddog'",
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        let Ok((ok, failed)) = client.await else {
            panic!("a client failed\n{}", proxy.log());
        };
        assert!(ok > 10, "only {ok} queries succeeded");
        // A backend dies some time after pg_terminate_backend returns, so a
        // connection can pass its checkout probe and die under the next
        // query: each error costs the core's pool (4) one dead connection,
        // so at most 4 errors per termination.
        assert!(failed <= 3 * 4, "{failed} errors for 3 terminations");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_and_outage() {
    let server = PgServer::start_new("restart");
    let port = free_port();
    // `recover`: a client that could not get a server connection stays
    // connected (PgDog's default, `drop`, is tested below).
    let general = "connect_timeout = 1000\ncheckout_timeout = 1000\n\
                   client_connection_recovery = \"recover\"";
    let _proxy = Sleddog::start(&config(port, server.port(), general), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    client.query_typed_one("select 1", &[]).await.unwrap();

    server.stop();
    let started = Instant::now();
    let error = client.query_typed_one("select 1", &[]).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "error took {:?}",
        started.elapsed()
    );
    assert_eq!(sqlstate(&error).as_deref(), Some("08006"), "{error}");
    // A new client may log in (the pool knows the server's parameters), and its
    // first query is told why it cannot run.
    if let Ok(late) = common::proxy::try_connect(port, "sd_scram", "scram_pw").await {
        let error = late.query_typed_one("select 1", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&error).as_deref(), Some("08006"), "{error}");
    }

    server.start();
    let mut recovered = false;
    for _ in 0..50 {
        if client.query_typed_one("select 1", &[]).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the same client connection did not recover");

    server.restart();
    let mut errors = 0;
    for _ in 0..20 {
        if client.query_typed_one("select 1", &[]).await.is_err() {
            errors += 1;
        }
    }
    assert!(errors <= 1, "{errors} errors after a restart");
}

/// `client_connection_recovery = "drop"` (the default, as in PgDog): a client
/// whose request found no server connection gets the reason as a FATAL error
/// and is closed; new clients are served once Postgres is back.
#[tokio::test(flavor = "multi_thread")]
async fn pool_errors_close_the_client_by_default() {
    let server = PgServer::start_new("outage_drop");
    let port = free_port();
    let general = "connect_timeout = 1000\ncheckout_timeout = 1000";
    let _proxy = Sleddog::start(&config(port, server.port(), general), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    client.query_typed_one("select 1", &[]).await.unwrap();

    server.stop();
    let error = client.query_typed_one("select 1", &[]).await.unwrap_err();
    let db_error = error.as_db_error().expect("a server error");
    assert_eq!(db_error.code().code(), "08006", "{error}");
    assert_eq!(db_error.severity(), "FATAL", "{error}");
    let after = client.query_typed_one("select 1", &[]).await.unwrap_err();
    assert!(after.is_closed(), "the client was not closed: {after}");

    server.start();
    let mut served = false;
    for _ in 0..50 {
        if let Ok(fresh) = common::proxy::try_connect(port, "sd_scram", "scram_pw").await {
            if fresh.query_typed_one("select 1", &[]).await.is_ok() {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "no new client was served after Postgres came back");
}

#[test]
fn oversized_and_malformed_messages_get_a_fatal_error() {
    let proxy = trust_proxy(pg(), "");
    let mut raw = Raw::login(proxy.port, "sd_scram", None);
    // A Query claiming 1 GiB: refused from the header alone.
    let mut header = vec![b'Q'];
    header.extend_from_slice(&(1u32 << 30).to_be_bytes());
    raw.send(&header);
    let error = raw.recv().expect("an error before close");
    assert_eq!(error.tag, b'E');
    assert_eq!(error.field(b'S').as_deref(), Some("FATAL"));
    assert_eq!(error.sqlstate().as_deref(), Some("54000"));
    assert!(raw.recv().is_none(), "connection closed");

    let mut raw = Raw::login(proxy.port, "sd_scram", None);
    raw.send(&tagged(b'!', b"junk"));
    let error = raw.recv().expect("an error before close");
    assert_eq!(error.sqlstate().as_deref(), Some("08P01"));
    assert!(raw.recv().is_none());

    // A length field under 4 is malformed too.
    let mut raw = Raw::login(proxy.port, "sd_scram", None);
    raw.send(&[b'Q', 0, 0, 0, 2]);
    assert_eq!(raw.recv().unwrap().sqlstate().as_deref(), Some("08P01"));
}

#[tokio::test(flavor = "multi_thread")]
async fn session_mode_keeps_state_and_resets_between_clients() {
    let port = free_port();
    let general = "pooler_mode = \"session\"\ndefault_pool_size = 1\nworkers = 1";
    let toml = config(port, pg().port(), "").replace("workers = 2", general);
    let _proxy = Sleddog::start(&toml, USERS);
    let first = connect(port, "sd_scram", "scram_pw").await;
    first
        .batch_execute("set application_name = 'first_client'")
        .await
        .unwrap();
    let pid: i32 = first
        .query_typed_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let name: String = first
        .query_typed_one("show application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "first_client");
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = connect(port, "sd_scram", "scram_pw").await;
    let row = second
        .query_typed_one(
            "select pg_backend_pid(), current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i32>(0),
        pid,
        "the pooled connection was reused"
    );
    assert_ne!(
        row.get::<_, String>(1),
        "first_client",
        "session state leaked"
    );
}

fn one_connection_proxy(general: &str) -> (Sleddog, u16) {
    one_connection_proxy_to(pg(), general)
}

fn one_connection_proxy_to(server: &PgServer, general: &str) -> (Sleddog, u16) {
    let port = free_port();
    let lines =
        format!("default_pool_size = 1\nmin_pool_size = 0\ncheckout_timeout = 2000\n{general}");
    let toml = config(port, server.port(), &lines).replace("workers = 2", "workers = 1");
    (Sleddog::start(&toml, USERS), port)
}

/// COPY FROM STDIN over the extended protocol (tokio-postgres sends a Sync
/// after Execute that Postgres ignores in copy mode) must still release the
/// server connection: with a pool of one, another client gets it afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn extended_copy_in_releases_the_connection() {
    use futures_util::SinkExt;
    let (proxy, port) = one_connection_proxy("");
    let first = connect(port, "sd_scram", "scram_pw").await;
    first
        .batch_execute("create table if not exists copy_release (id int)")
        .await
        .unwrap();
    // In a transaction: named statements (tokio-postgres prepares copy_in's)
    // do not survive between transactions yet.
    let mut first = first;
    let tx = first.transaction().await.unwrap();
    let sink = tx.copy_in("copy copy_release from stdin").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from_static(b"1\n2\n"))
        .await
        .unwrap();
    assert_eq!(sink.as_mut().finish().await.unwrap(), 2);
    tx.commit().await.unwrap();
    let second = connect(port, "sd_scram", "scram_pw").await;
    let result = second.simple_query("select 1").await;
    assert!(result.is_ok(), "{result:?}\n{}", proxy.log());
}

/// Session state set outside a transaction never reaches the next client of
/// the same server connection.
#[tokio::test(flavor = "multi_thread")]
async fn session_state_does_not_leak_between_clients() {
    let (_proxy, port) = one_connection_proxy("");
    let first = connect(port, "sd_scram", "scram_pw").await;
    first
        .batch_execute("set search_path = leaked_schema; set statement_timeout = 1234")
        .await
        .unwrap();
    let second = connect(port, "sd_scram", "scram_pw").await;
    let row = second
        .query_typed_one(
            "select current_setting('search_path'), current_setting('statement_timeout')",
            &[],
        )
        .await
        .unwrap();
    assert_ne!(row.get::<_, String>(0), "leaked_schema");
    assert_ne!(row.get::<_, String>(1), "1234ms");
}

/// A server connection lost inside a transaction ends the client's session
/// rather than letting its next statements run outside the transaction.
#[tokio::test(flavor = "multi_thread")]
async fn server_lost_inside_a_transaction_ends_the_session() {
    // Its own server: the termination would reach other tests' connections.
    let server = &PgServer::start_new("lost_tx");
    server.psql(
        "sleddog",
        "create table if not exists lost_tx (id int); grant all on lost_tx to public",
    );
    let (_proxy, port) = one_connection_proxy_to(server, "");
    let client = connect(port, "sd_scram", "scram_pw").await;
    client
        .batch_execute("begin; insert into lost_tx values (1)")
        .await
        .unwrap();
    server.psql(
        "postgres",
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'sleddog' and usename = 'sd_scram'",
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let error = client.batch_execute("insert into lost_tx values (2)").await;
    assert!(error.is_err());
    let after = client
        .batch_execute("insert into lost_tx values (3); commit")
        .await;
    assert!(
        after.is_err(),
        "statements ran outside the lost transaction"
    );
    assert_eq!(server.psql("sleddog", "select count(*) from lost_tx"), "0");
}

/// Pool maintenance runs without a client: each core opens its share of
/// `min_pool_size` (ceil(2 / 2 workers) = 1 each) and closes connections idle
/// past `idle_timeout` beyond it.
#[tokio::test(flavor = "multi_thread")]
async fn min_pool_size_is_kept_and_idle_connections_expire() {
    let server = PgServer::start_new("maintenance");
    let port = free_port();
    let general = "min_pool_size = 2\ndefault_pool_size = 6\nidle_timeout = 1000";
    let _proxy = Sleddog::start(&config(port, server.port(), general), USERS);
    let count = || -> i64 {
        server
            .psql(
                "postgres",
                "select count(*) from pg_stat_activity \
                 where application_name = 'sleddog' and usename = 'sd_plain'",
            )
            .parse()
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(5), || count() == 2),
        "warm-up: {}",
        count()
    );
    // Burst: open more than the minimum, then let them idle out.
    let clients: Vec<_> =
        futures_util::future::join_all((0..6).map(|_| connect(port, "sd_plain", "plain_pw"))).await;
    futures_util::future::join_all(
        clients
            .iter()
            .map(|c| c.batch_execute("begin; select pg_sleep(0.3); commit")),
    )
    .await;
    assert!(count() > 2, "the burst used more connections");
    assert!(
        eventually(Duration::from_secs(6), || count() == 2),
        "after idle: {}",
        count()
    );
}

/// The backend pid of the connection a fresh client gets.
fn backend_pid(port: u16) -> String {
    let mut raw = Raw::login(port, "sd_scram", None);
    raw.send(&query("select pg_backend_pid()"));
    let reply = raw.until_ready();
    let row = reply.iter().find(|m| m.tag == b'D').expect("a row");
    String::from_utf8_lossy(&row.body[6..]).into_owned()
}

/// connection_recovery = "recover" (PgDog's default): a client that vanishes
/// mid-query, mid-transaction or mid-COPY leaves its server connection to be
/// drained, rolled back and reused, with nothing committed; "drop" closes it.
#[test]
fn abandoned_connections_are_recovered_or_dropped() {
    let server = pg();
    server.psql(
        "sleddog",
        "create table if not exists recovered_rows (id int); grant all on recovered_rows to public",
    );
    for (mode, kept) in [("recover", true), ("drop", false)] {
        let general = format!("auth_type = \"trust\"\nconnection_recovery = \"{mode}\"");
        let (_proxy, port) = one_connection_proxy(&general);
        let pid = backend_pid(port);
        // Mid-query, inside a transaction that wrote a row.
        let mut raw = Raw::login(port, "sd_scram", None);
        raw.send(&query("begin; insert into recovered_rows values (1)"));
        raw.until_ready();
        raw.send(&query("select pg_sleep(0.3)"));
        std::thread::sleep(Duration::from_millis(50));
        raw.kill();
        // Mid-COPY.
        let mut raw = Raw::login(port, "sd_scram", None);
        raw.send(&query("copy recovered_rows from stdin"));
        assert_eq!(raw.recv().unwrap().tag, b'G', "{mode}: CopyInResponse");
        raw.send(&common::proxy::tagged(b'd', b"2\n"));
        std::thread::sleep(Duration::from_millis(50));
        raw.kill();
        std::thread::sleep(Duration::from_millis(800));
        let after = backend_pid(port);
        assert_eq!(after == pid, kept, "{mode}: backend {pid} then {after}");
        assert_eq!(
            server.psql("sleddog", "select count(*) from recovered_rows"),
            "0",
            "{mode}: nothing committed"
        );
    }
}

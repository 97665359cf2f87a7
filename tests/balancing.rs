//! Read/write splitting and load balancing over a primary and its streaming
//! replica: reads land on the replica, writes and ordinary transactions on
//! the primary, hints and `pgdog.role` override, round robin spreads reads,
//! a stopped replica sends reads to the primary without client errors, and a
//! replica lagging past `ban_replica_lag_bytes` or `ban_replica_lag` leaves
//! rotation until it catches up.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::proxy::{connect, USERS};
use common::{free_port, PgServer, Sleddog};
use tokio_postgres::Client;

/// A primary and its replica for the file.
fn servers() -> &'static (PgServer, PgServer) {
    static SERVERS: OnceLock<(PgServer, PgServer)> = OnceLock::new();
    SERVERS.get_or_init(|| {
        PgServer::start_with_replica(
            "lb",
            "create table lb_t (id int); grant all on lb_t to public; \
             create sequence lb_s; grant all on lb_s to public",
        )
    })
}

fn lb_config(port: u16, general: &str, primary: &PgServer, replica: &PgServer) -> String {
    format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\nworkers = 2\n\
         connect_timeout = 500\ncheckout_timeout = 1000\n{general}\n\n\
         [[databases]]\nname = \"sleddog\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"\n\n\
         [[databases]]\nname = \"sleddog\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"replica\"\n",
        primary.port(),
        replica.port()
    )
}

async fn on_replica(client: &Client, sql: &str) -> bool {
    let rows = client.simple_query(sql).await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "t"),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_go_to_the_replica_and_writes_to_the_primary() {
    let (primary, replica) = servers();
    let port = free_port();
    let general = "read_write_split = \"exclude_primary\"";
    let _proxy = Sleddog::start(&lb_config(port, general, primary, replica), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    let q = "select pg_is_in_recovery()";

    for _ in 0..5 {
        assert!(on_replica(&client, q).await, "a plain read");
    }
    // Extended protocol too, and a prepared statement reused.
    let statement = client.prepare(q).await.unwrap();
    for _ in 0..3 {
        let row = client.query_one(&statement, &[]).await.unwrap();
        assert!(row.get::<_, bool>(0), "a prepared read");
    }
    client
        .execute("insert into lb_t values (1)", &[])
        .await
        .unwrap();
    client
        .simple_query("select nextval('lb_s')")
        .await
        .expect("nextval runs on the primary");
    client
        .simple_query("select * from lb_t for update")
        .await
        .expect("FOR UPDATE runs on the primary");
    client
        .simple_query(
            "with d as (delete from lb_t where id = -1 returning *) select count(*) from d",
        )
        .await
        .expect("a data-modifying CTE runs on the primary");

    // Transactions: conservative to the primary; READ ONLY to the replica.
    client.simple_query("begin").await.unwrap();
    assert!(!on_replica(&client, q).await, "a read-write transaction");
    client.simple_query("commit").await.unwrap();
    client.simple_query("begin read only").await.unwrap();
    assert!(on_replica(&client, q).await, "a read-only transaction");
    client.simple_query("commit").await.unwrap();
    let both = client
        .simple_query("start transaction read only; select pg_is_in_recovery()::text; commit")
        .await
        .unwrap();
    assert!(format!("{both:?}").contains("true"), "{both:?}");

    // Hints.
    assert!(!on_replica(&client, &format!("/* pgdog_role: primary */ {q}")).await);
    client
        .simple_query("set pgdog.role to 'primary'")
        .await
        .unwrap();
    assert!(!on_replica(&client, q).await, "SET pgdog.role primary");
    assert!(on_replica(&client, &format!("/* pgdog_role: replica */ {q}")).await);
    client.simple_query("reset pgdog.role").await.unwrap();
    assert!(on_replica(&client, q).await, "after RESET pgdog.role");
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_reads_over_both_servers() {
    let (primary, replica) = servers();
    let port = free_port();
    let general = "load_balancing_strategy = \"round_robin\"";
    let _proxy = Sleddog::start(&lb_config(port, general, primary, replica), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    let mut replica_reads = 0;
    for _ in 0..40 {
        if on_replica(&client, "select pg_is_in_recovery()").await {
            replica_reads += 1;
        }
    }
    // One client lives on one core, whose counter alternates.
    assert_eq!(replica_reads, 20, "round robin over primary and replica");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_replica_sends_reads_to_the_primary() {
    let (primary, replica) = PgServer::start_with_replica("lb-stop", "");
    let port = free_port();
    let general = "read_write_split = \"exclude_primary\"";
    let proxy = Sleddog::start(&lb_config(port, general, &primary, &replica), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    assert!(on_replica(&client, "select pg_is_in_recovery()").await);
    replica.stop();
    let mut errors = 0;
    for _ in 0..20 {
        match client
            .simple_query("select pg_is_in_recovery()::text")
            .await
        {
            Ok(rows) => assert!(format!("{rows:?}").contains("false"), "{rows:?}"),
            Err(_) => errors += 1,
        }
    }
    // At most the query in flight when the replica went away.
    assert!(errors <= 1, "{errors} errors\n{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_lagging_in_bytes_leaves_rotation_until_it_catches_up() {
    lagging_replica_leaves_rotation("ban_replica_lag_bytes = 65536").await;
}

/// `ban_replica_lag` (ms): replay paused while the primary commits, so the
/// replica's replay delay grows past the limit.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_lagging_in_time_leaves_rotation_until_it_catches_up() {
    lagging_replica_leaves_rotation("ban_replica_lag = 500").await;
}

async fn lagging_replica_leaves_rotation(limit: &str) {
    let (primary, replica) = PgServer::start_with_replica(
        "lb-lag",
        "create table lag_t (v text); grant all on lag_t to public",
    );
    let port = free_port();
    let general = format!(
        "read_write_split = \"exclude_primary\"\n\
         lsn_check_delay = 0\nlsn_check_interval = 200\n{limit}"
    );
    let general = general.as_str();
    let proxy = Sleddog::start(&lb_config(port, general, &primary, &replica), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    let q = "select pg_is_in_recovery()";
    assert!(on_replica(&client, q).await);

    // A commit the replica replays first: the replay delay counts from the
    // last transaction it replayed (none yet reads as no delay).
    primary.psql("sleddog", "insert into lag_t values ('first')");
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica.psql("sleddog", "select count(*) from lag_t") != "1" {
        assert!(Instant::now() < deadline, "the replica never replayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replica.psql("postgres", "select pg_wal_replay_pause()");
    primary.psql(
        "sleddog",
        "insert into lag_t select repeat('x', 1000) from generate_series(1, 2000)",
    );
    let until = |want_replica: bool| {
        let client = &client;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if on_replica(client, q).await == want_replica {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(
        until(false).await,
        "the lagging replica was not banned\n{}",
        proxy.log()
    );
    replica.psql("postgres", "select pg_wal_replay_resume()");
    assert!(
        until(true).await,
        "the replica did not come back\n{}",
        proxy.log()
    );
}

/// `BEGIN` and `SET LOCAL pgdog.role TO 'replica'` sent one by one: sleddog
/// answers the `BEGIN` itself, so the `SET` still picks the transaction's
/// server; the setting ends with the transaction.
#[tokio::test(flavor = "multi_thread")]
async fn set_local_pgdog_role_routes_its_transaction() {
    let (primary, replica) = servers();
    let port = free_port();
    let _proxy = Sleddog::start(&lb_config(port, "", primary, replica), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    let q = "select pg_is_in_recovery()";

    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("SET LOCAL pgdog.role TO 'replica'")
        .await
        .unwrap();
    assert!(on_replica(&client, q).await, "after SET LOCAL");
    assert!(on_replica(&client, q).await, "the whole transaction");
    client.batch_execute("COMMIT").await.unwrap();

    // Conservative (the default): a read-write transaction is the primary's.
    for _ in 0..3 {
        client.batch_execute("BEGIN").await.unwrap();
        assert!(!on_replica(&client, q).await, "a plain transaction");
        client.batch_execute("COMMIT").await.unwrap();
    }
    client
        .batch_execute("BEGIN; SET LOCAL pgdog.role TO 'replica'")
        .await
        .unwrap();
    assert!(on_replica(&client, q).await, "BEGIN and SET in one query");
    client.batch_execute("ROLLBACK").await.unwrap();
}

/// A graceful shutdown (SIGINT) lets a transaction finish, also one whose
/// `BEGIN` sleddog answered itself and that holds no server yet.
#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_shutdown_lets_a_held_begin_transaction_finish() {
    let (primary, replica) = servers();
    let port = free_port();
    let general = "shutdown_timeout = 10000";
    let proxy = Sleddog::start(&lb_config(port, general, primary, replica), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    client.batch_execute("BEGIN").await.unwrap();
    proxy.signal(libc::SIGINT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let q = "select pg_is_in_recovery()";
    assert!(!on_replica(&client, q).await, "the transaction ran");
    client.batch_execute("COMMIT").await.unwrap();
}

/// A pipelined request after a held `BEGIN` (two statements, two Syncs)
/// runs inside the transaction: the `BEGIN` goes first in a round trip of
/// its own, so a ROLLBACK undoes both.
#[tokio::test(flavor = "multi_thread")]
async fn a_pipelined_request_after_a_held_begin_is_inside_the_transaction() {
    let (primary, replica) = servers();
    let port = free_port();
    let _proxy = Sleddog::start(&lb_config(port, "", primary, replica), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    client.batch_execute("BEGIN").await.unwrap();
    let (a, b) = tokio::join!(
        client.execute("insert into lb_t values (7001)", &[]),
        client.execute("insert into lb_t values (7002)", &[]),
    );
    a.unwrap();
    b.unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    let left: i64 = client
        .query_one(
            "/* pgdog_role: primary */ select count(*) from lb_t where id in (7001, 7002)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "a pipelined insert ran outside the transaction");
}

/// `client_connection_recovery = "recover"`: when the statement after a held
/// `BEGIN` finds no server connection, the transaction fails as it would on
/// Postgres: later statements are refused with 25P02 (they do not run
/// outside the transaction), and ROLLBACK ends it.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_checkout_after_a_held_begin_fails_the_transaction() {
    let (primary, replica) = servers();
    let port = free_port();
    let general = "client_connection_recovery = \"recover\"\ndefault_pool_size = 1\n\
                   read_write_split = \"exclude_primary\"";
    let toml = lb_config(port, general, primary, replica)
        .replace("workers = 2", "workers = 1")
        .replace("checkout_timeout = 1000", "checkout_timeout = 300");
    let _proxy = Sleddog::start(&toml, USERS);
    // The primary's one connection is held by another client's transaction.
    let holder = connect(port, "sd_scram", "scram_pw").await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let client = connect(port, "sd_scram", "scram_pw").await;
    client.batch_execute("BEGIN").await.unwrap();
    let first = client
        .batch_execute("insert into lb_t values (8001)")
        .await
        .expect_err("no connection was free");
    assert_eq!(first.code().map(|c| c.code()), Some("53300"), "{first:?}");
    let second = client
        .batch_execute("select 1")
        .await
        .expect_err("the transaction failed");
    assert_eq!(second.code().map(|c| c.code()), Some("25P02"));
    client.batch_execute("ROLLBACK").await.unwrap();

    holder.batch_execute("COMMIT").await.unwrap();
    assert!(
        on_replica(&client, "select pg_is_in_recovery()").await,
        "usable again"
    );
    let rows: i64 = holder
        .query_one("select count(*) from lb_t where id = 8001", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}

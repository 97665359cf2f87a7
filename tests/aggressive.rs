//! `read_write_strategy = "aggressive"` against a primary and its streaming
//! replica: a transaction not declared READ ONLY goes where its first
//! statements go. A `BEGIN` sent alone is answered by sleddog and run on
//! the server the next request picks; a transaction that reads first and
//! writes later fails on the replica with Postgres's own 25006, the risk
//! the strategy takes (as in PgDog). `conservative` keeps every such
//! transaction on the primary.

mod common;

use std::sync::OnceLock;

use common::proxy::{connect, USERS};
use common::{free_port, PgServer, Sleddog};
use tokio_postgres::{Client, SimpleQueryMessage};

/// A primary and its replica for the file.
fn servers() -> &'static (PgServer, PgServer) {
    static SERVERS: OnceLock<(PgServer, PgServer)> = OnceLock::new();
    SERVERS.get_or_init(|| {
        PgServer::start_with_replica(
            "aggr",
            "create table aggr_t (id int); grant all on aggr_t to public",
        )
    })
}

fn lb_config(port: u16, general: &str, primary: &PgServer, replica: &PgServer) -> String {
    format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\nworkers = 2\n\
         connect_timeout = 500\ncheckout_timeout = 1000\n\
         read_write_split = \"exclude_primary\"\n{general}\n\n\
         [[databases]]\nname = \"sleddog\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"\n\n\
         [[databases]]\nname = \"sleddog\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"replica\"\n",
        primary.port(),
        replica.port()
    )
}

const AGGRESSIVE: &str = "read_write_strategy = \"aggressive\"";

/// The first column of the first row `sql` returns, as text.
async fn first_value(client: &Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

async fn on_replica(client: &Client) -> bool {
    first_value(client, "select pg_is_in_recovery()").await == "t"
}

#[tokio::test(flavor = "multi_thread")]
async fn aggressive_sends_a_reading_transaction_to_the_replica() {
    let (primary, replica) = servers();
    let port = free_port();
    let proxy = Sleddog::start(&lb_config(port, AGGRESSIVE, primary, replica), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;

    client.batch_execute("begin").await.unwrap();
    assert!(on_replica(&client).await, "{}", proxy.log());
    // The transaction keeps its server.
    let pid = first_value(&client, "select pg_backend_pid()").await;
    assert_eq!(first_value(&client, "select pg_backend_pid()").await, pid);
    let open = first_value(&client, "select now() = statement_timestamp()").await;
    assert_eq!(open, "f", "statements ran inside one transaction");
    client.batch_execute("commit").await.unwrap();

    client.batch_execute("START TRANSACTION").await.unwrap();
    assert!(on_replica(&client).await);
    client.batch_execute("rollback").await.unwrap();

    // BEGIN and its statements in one simple Query.
    let both = first_value(&client, "begin; select pg_is_in_recovery()").await;
    assert_eq!(both, "t");
    client.batch_execute("commit").await.unwrap();

    // An empty transaction, committed and rolled back.
    client.batch_execute("begin").await.unwrap();
    client.batch_execute("commit").await.unwrap();
    client.batch_execute("begin").await.unwrap();
    client.batch_execute("rollback").await.unwrap();

    // A driver's transaction: BEGIN alone, then the extended protocol.
    let mut client = client;
    let transaction = client.transaction().await.unwrap();
    let row = transaction
        .query_one("select pg_is_in_recovery()", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    transaction.commit().await.unwrap();
    assert!(
        on_replica(&client).await,
        "still usable after the transaction"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn aggressive_sends_a_writing_transaction_to_the_primary() {
    let (primary, replica) = servers();
    let port = free_port();
    let _proxy = Sleddog::start(&lb_config(port, AGGRESSIVE, primary, replica), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    let count =
        |id: i32| format!("/* pgdog_role: primary */ select count(*) from aggr_t where id = {id}");

    client.batch_execute("begin").await.unwrap();
    client
        .batch_execute("insert into aggr_t values (101)")
        .await
        .unwrap();
    assert!(!on_replica(&client).await, "the rest of the transaction");
    client.batch_execute("commit").await.unwrap();
    assert_eq!(first_value(&client, &count(101)).await, "1");

    client.batch_execute("begin").await.unwrap();
    client
        .batch_execute("insert into aggr_t values (102)")
        .await
        .unwrap();
    client.batch_execute("rollback").await.unwrap();
    assert_eq!(first_value(&client, &count(102)).await, "0");

    // BEGIN and a write in one simple Query.
    client
        .batch_execute("begin; insert into aggr_t values (103)")
        .await
        .unwrap();
    client.batch_execute("commit").await.unwrap();
    assert_eq!(first_value(&client, &count(103)).await, "1");

    // A hint in the BEGIN decides, as it does for any statement.
    client
        .batch_execute("/* pgdog_role: primary */ begin")
        .await
        .unwrap();
    assert!(!on_replica(&client).await);
    client.batch_execute("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn aggressive_write_after_a_read_fails_on_the_replica() {
    let (primary, replica) = servers();
    let port = free_port();
    let _proxy = Sleddog::start(&lb_config(port, AGGRESSIVE, primary, replica), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;

    client.batch_execute("begin").await.unwrap();
    assert!(on_replica(&client).await);
    let error = client
        .batch_execute("insert into aggr_t values (104)")
        .await
        .expect_err("a replica cannot write");
    let code = error.code().map(|c| c.code().to_owned());
    assert_eq!(code.as_deref(), Some("25006"), "{error}");
    client.batch_execute("rollback").await.unwrap();
    client
        .batch_execute("begin; insert into aggr_t values (104); commit")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn conservative_keeps_a_reading_transaction_on_the_primary() {
    let (primary, replica) = servers();
    let port = free_port();
    let _proxy = Sleddog::start(&lb_config(port, "", primary, replica), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;

    client.batch_execute("begin").await.unwrap();
    assert!(!on_replica(&client).await);
    client.batch_execute("commit").await.unwrap();
    let both = first_value(&client, "begin; select pg_is_in_recovery()").await;
    assert_eq!(both, "f");
    client.batch_execute("commit").await.unwrap();
    assert!(on_replica(&client).await, "a plain read");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_gone_after_begin_leaves_nothing_behind() {
    let (primary, replica) = servers();
    let port = free_port();
    // One connection per server and core: one left held would starve the next client.
    let general = format!("{AGGRESSIVE}\ndefault_pool_size = 1");
    let proxy = Sleddog::start(&lb_config(port, &general, primary, replica), USERS);
    for _ in 0..4 {
        let client = connect(port, "sd_scram", "scram_pw").await;
        client.batch_execute("begin").await.unwrap();
        drop(client);
    }
    for _ in 0..4 {
        let client = connect(port, "sd_scram", "scram_pw").await;
        client.batch_execute("begin").await.unwrap();
        assert!(on_replica(&client).await, "{}", proxy.log());
        client.batch_execute("commit").await.unwrap();
        client
            .batch_execute("begin; insert into aggr_t values (105); commit")
            .await
            .unwrap();
    }
}

/// What sending a held `BEGIN` ahead of the next request relies on, checked
/// against Postgres itself ("protocol-flow", Extended Query): a `BEGIN` run
/// by Parse/Bind/Execute with no Sync opens the transaction a following
/// simple Query runs in; and when that `BEGIN` fails, Postgres skips every
/// message up to Sync, the simple Query included, so nothing runs outside
/// the transaction the client was told of.
#[test]
fn postgres_runs_a_query_inside_an_unsynced_begin_and_skips_it_after_a_failed_one() {
    use common::proxy::{bind_no_params, execute, parse, query, sync, Raw};
    let pg = common::pg();
    pg.psql(
        "sleddog",
        "create table if not exists begin_ahead (v int); grant all on begin_ahead to public",
    );
    let mut raw = Raw::login(pg.port(), "sd_trust", None);

    raw.send(
        &[
            parse("BEGIN"),
            bind_no_params(),
            execute(),
            query("insert into begin_ahead values (1)"),
        ]
        .concat(),
    );
    let msgs = raw.until_ready();
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"12CCZ", "{msgs:?}");
    assert_eq!(msgs[4].body, b"T", "the insert ran inside the transaction");
    raw.send(&query("ROLLBACK"));
    raw.until_ready();

    raw.send(
        &[
            parse("BEGIN ISOLATION LEVEL bogus"),
            bind_no_params(),
            execute(),
            query("insert into begin_ahead values (2)"),
            sync(),
        ]
        .concat(),
    );
    let msgs = raw.until_ready();
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"EZ", "{msgs:?}");
    assert_eq!(msgs[1].body, b"I");
    assert_eq!(
        pg.psql("sleddog", "select count(*) from begin_ahead"),
        "0",
        "a query after the failed BEGIN ran"
    );
}

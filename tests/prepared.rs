//! Prepared statements in transaction mode: named statements survive the
//! transaction that prepared them, whichever server connection the next one
//! gets; Close, DEALLOCATE and DISCARD ALL act as on Postgres. Exchanges are
//! run against sleddog and straight against Postgres, and must match.

mod common;

use std::sync::OnceLock;

use common::proxy::{
    bind_no_params, config, connect, execute, flush, parse, query, sync, tagged, Msg, Raw, USERS,
};
use common::{free_port, pg, Sleddog};
use futures_util::future::join_all;

/// One sleddog for the file: a pool of 2 per process (one per core), and
/// trust auth so the raw client logs in the same way to both ends.
fn proxy() -> &'static Sleddog {
    static PROXY: OnceLock<Sleddog> = OnceLock::new();
    PROXY.get_or_init(|| {
        let port = free_port();
        let general = "default_pool_size = 2\nauth_type = \"trust\"";
        Sleddog::start(&config(port, pg().port(), general), USERS)
    })
}

/// The same with `prepared_statements = "extended_anonymous"`: the unnamed
/// statement is renamed and shared too.
fn anonymous_proxy() -> &'static Sleddog {
    static PROXY: OnceLock<Sleddog> = OnceLock::new();
    PROXY.get_or_init(|| {
        let port = free_port();
        let general = "default_pool_size = 2\nauth_type = \"trust\"\n\
                       prepared_statements = \"extended_anonymous\"";
        Sleddog::start(&config(port, pg().port(), general), USERS)
    })
}

fn named_parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = name.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(sql.as_bytes());
    body.extend_from_slice(&[0, 0, 0]);
    tagged(b'P', &body)
}

fn named_bind(statement: &str) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(statement.as_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    tagged(b'B', &body)
}

fn describe_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    tagged(b'D', &body)
}

fn close_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    tagged(b'C', &body)
}

/// What a client sees of a reply, for comparing two servers: tags, and for
/// errors their SQLSTATE and message, for completions their tag.
fn seen(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| !matches!(m.tag, b'N' | b'S'))
        .map(|m| match m.tag {
            b'E' => format!(
                "E {} {} {}",
                m.sqlstate().unwrap_or_default(),
                m.field(b'M').unwrap_or_default(),
                m.field(b'P').unwrap_or_default()
            ),
            b'C' => format!("C {}", String::from_utf8_lossy(&m.body[..m.body.len() - 1])),
            b'Z' => format!("Z {}", m.body[0] as char),
            tag => (tag as char).to_string(),
        })
        .collect()
}

/// Runs the same steps on a fresh raw connection to sleddog and to Postgres;
/// each step is a batch and whether to read through ReadyForQuery (else one
/// message per expected count). Returns both transcripts.
fn both(steps: &[(Vec<u8>, usize)]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    both_via(proxy().port, steps)
}

fn both_via(proxy_port: u16, steps: &[(Vec<u8>, usize)]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let run = |port: u16| {
        let mut raw = Raw::login(port, "sd_trust", None);
        steps
            .iter()
            .map(|(batch, replies)| {
                raw.send(batch);
                let msgs = if *replies == 0 {
                    raw.until_ready()
                } else {
                    (0..*replies).map(|_| raw.recv().expect("reply")).collect()
                };
                seen(&msgs)
            })
            .collect::<Vec<_>>()
    };
    (run(proxy_port), run(pg().port()))
}

fn assert_same(steps: &[(Vec<u8>, usize)]) -> Vec<Vec<String>> {
    let (through_proxy, direct) = both(steps);
    assert_eq!(through_proxy, direct, "sleddog vs Postgres");
    through_proxy
}

#[test]
fn named_statement_outlives_its_transaction() {
    let seen = assert_same(&[
        ([named_parse("s1", "select 41 + 1"), sync()].concat(), 0),
        // Other clients come and go in between; each request may get another
        // server connection.
        ([named_bind("s1"), execute(), sync()].concat(), 0),
        ([named_bind("s1"), execute(), sync()].concat(), 0),
        ([describe_statement("s1"), sync()].concat(), 0),
    ]);
    assert_eq!(seen[1], ["2", "D", "C SELECT 1", "Z I"]);
}

#[test]
fn close_deallocate_and_discard_all_drop_names_as_postgres_does() {
    assert_same(&[
        (
            [
                named_parse("a", "select 1"),
                named_parse("b", "select 2"),
                sync(),
            ]
            .concat(),
            0,
        ),
        ([close_statement("a"), sync()].concat(), 0),
        ([named_bind("a"), execute(), sync()].concat(), 0),
        (query("DEALLOCATE b"), 0),
        ([named_bind("b"), execute(), sync()].concat(), 0),
        (query("DEALLOCATE b"), 0),
        ([named_parse("c", "select 3"), sync()].concat(), 0),
        (query("DISCARD ALL"), 0),
        ([named_bind("c"), execute(), sync()].concat(), 0),
        ([named_parse("d", "select 4"), sync()].concat(), 0),
        (query("DEALLOCATE ALL"), 0),
        ([named_bind("d"), execute(), sync()].concat(), 0),
        // Closing a name that does not exist is fine.
        ([close_statement("never"), sync()].concat(), 0),
    ]);
}

#[test]
fn duplicate_and_failed_parse_behave_as_on_postgres() {
    assert_same(&[
        ([named_parse("dup", "select 1"), sync()].concat(), 0),
        (
            [
                named_parse("dup", "select 2"),
                named_bind("dup"),
                execute(),
                sync(),
            ]
            .concat(),
            0,
        ),
        ([named_bind("dup"), execute(), sync()].concat(), 0),
        // A failed Parse leaves nothing behind: the name is free afterwards.
        ([named_parse("bad", "selec 1"), sync()].concat(), 0),
        ([named_bind("bad"), execute(), sync()].concat(), 0),
        (
            [
                named_parse("bad", "select 'fixed'"),
                named_bind("bad"),
                execute(),
                sync(),
            ]
            .concat(),
            0,
        ),
        // Inside a transaction the duplicate fails the transaction.
        (query("begin"), 0),
        ([named_parse("dup", "select 3"), sync()].concat(), 0),
        (query("select 1"), 0),
        (query("rollback"), 0),
    ]);
}

#[test]
fn describe_then_flush_then_execute_split_flow() {
    // asyncpg prepares with Parse/Describe/Flush, then runs Bind/Execute/Sync.
    assert_same(&[
        (
            [
                named_parse("q", "select $1::int4 * 2"),
                describe_statement("q"),
                flush(),
            ]
            .concat(),
            3,
        ),
        ([sync()].concat(), 0),
        (query("select 'between'"), 0),
        ([describe_statement("q"), flush()].concat(), 2),
        ([sync()].concat(), 0),
    ]);
}

#[test]
fn unnamed_statements_still_pass_through() {
    assert_same(&[
        (
            [parse("select 7"), bind_no_params(), execute(), sync()].concat(),
            0,
        ),
        (
            [
                named_parse("n", "select 8"),
                parse("select 9"),
                named_bind("n"),
                execute(),
                bind_no_params(),
                execute(),
                sync(),
            ]
            .concat(),
            0,
        ),
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_statement_reused_by_eight_clients_over_a_pool_of_two() {
    let port = proxy().port;
    let clients = (0..8).map(|n| async move {
        let client = connect(port, "sd_scram", "scram_pw").await;
        let statement = client.prepare("select $1::int4 + 1000").await.unwrap();
        for i in 0..50i32 {
            // Each query is its own transaction: any server connection.
            let row = client
                .query_one(&statement, &[&(n * 100 + i)])
                .await
                .unwrap();
            assert_eq!(row.get::<_, i32>(0), n * 100 + i + 1000);
        }
        // Dropping the statement closes it; preparing again works.
        drop(statement);
        let again = client.prepare("select $1::int4 + 1000").await.unwrap();
        let row = client.query_one(&again, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 1001);
    });
    join_all(clients).await;
}

#[test]
fn extended_anonymous_shares_the_unnamed_statement_like_postgres() {
    let unnamed_round = [parse("select 41 + 1"), bind_no_params(), execute(), sync()].concat();
    let steps = [
        (unnamed_round.clone(), 0),
        (unnamed_round.clone(), 0),
        // Bind of the unnamed statement in a later request, on any connection.
        ([bind_no_params(), execute(), sync()].concat(), 0),
        ([parse("select 'other'"), sync()].concat(), 0),
        ([bind_no_params(), execute(), sync()].concat(), 0),
        ([close_statement(""), sync()].concat(), 0),
        ([bind_no_params(), execute(), sync()].concat(), 0),
        (
            [
                named_parse("n", "select 8"),
                named_bind("n"),
                execute(),
                sync(),
            ]
            .concat(),
            0,
        ),
        ([parse("selec 1"), sync()].concat(), 0),
        ([bind_no_params(), execute(), sync()].concat(), 0),
    ];
    let (through_proxy, direct) = both_via(anonymous_proxy().port, &steps);
    assert_eq!(through_proxy, direct, "sleddog vs Postgres");
}

/// `prepared_statements = "full"`: SQL `PREPARE`/`EXECUTE` are renamed too.
/// One core and one server connection, so clients share it.
fn full_proxy() -> &'static Sleddog {
    static PROXY: OnceLock<Sleddog> = OnceLock::new();
    PROXY.get_or_init(start_full_proxy)
}

/// Another, for the test that counts what is on the shared connection (the
/// transcript test runs DISCARD ALL on its own).
fn full_proxy_for_sharing() -> &'static Sleddog {
    static PROXY: OnceLock<Sleddog> = OnceLock::new();
    PROXY.get_or_init(start_full_proxy)
}

fn start_full_proxy() -> Sleddog {
    let port = free_port();
    let general = "default_pool_size = 1\nauth_type = \"trust\"\n\
                   prepared_statements = \"full\"";
    let toml = config(port, pg().port(), general).replace("workers = 2", "workers = 1");
    Sleddog::start(&toml, USERS)
}

#[test]
fn full_mode_sql_prepare_and_execute_like_postgres() {
    let q = |sql: &str| (query(sql), 0);
    let steps = [
        q("PREPARE q(int) AS SELECT $1 * 2"),
        q("EXECUTE q(21)"),
        q("BEGIN"),
        q("EXECUTE q (1)"),
        q("COMMIT"),
        // A taken name fails, and inside a transaction fails the transaction.
        q("PREPARE q AS SELECT 1"),
        q("BEGIN"),
        q("PREPARE Q AS SELECT 1;"),
        q("SELECT 1"),
        q("ROLLBACK"),
        q("EXECUTE q(5)"),
        q("DEALLOCATE q"),
        q("EXECUTE q(5)"),
        // A failed PREPARE leaves nothing; EXECUTE of it fails.
        q("PREPARE bad AS SELEC 1"),
        q("EXECUTE bad"),
        // Quoted names keep their case.
        q("PREPARE \"Mixed\" AS SELECT 'm'"),
        q("EXECUTE \"Mixed\""),
        q("EXECUTE mixed"),
        // A statement prepared by Parse runs through EXECUTE as well.
        ([named_parse("proto", "select 77"), sync()].concat(), 0),
        q("EXECUTE proto"),
        // Errors name the client's statement, and positions point into the
        // client's text.
        q("EXECUTE proto(1)"),
        q("PREPARE typed(int) AS SELECT $1"),
        q("EXECUTE  typed ('x')"),
        // A Bind whose statement the connection must prepare first is
        // planned, so its error names the client's statement too.
        ([named_parse("p2", "select $1::int"), sync()].concat(), 0),
        q("DISCARD ALL"),
        (
            [
                named_parse("p3", "select $1::int"),
                named_bind("p3"),
                execute(),
                sync(),
            ]
            .concat(),
            0,
        ),
        // In a failed transaction PREPARE is refused, and so never defined.
        q("BEGIN"),
        q("SELECT 1/0"),
        q("PREPARE z AS SELECT 1"),
        q("ROLLBACK"),
        q("EXECUTE z"),
        // PREPARE is not undone by ROLLBACK.
        q("BEGIN"),
        q("PREPARE kept AS SELECT 'kept'"),
        q("ROLLBACK"),
        q("EXECUTE kept"),
        q("DEALLOCATE ALL"),
        q("EXECUTE kept"),
    ];
    let (through_proxy, direct) = both_via(full_proxy().port, &steps);
    assert_eq!(through_proxy, direct, "sleddog vs Postgres");
    assert_eq!(through_proxy[1], ["T", "D", "C SELECT 1", "Z I"]);
}

/// Two clients of one server connection define the same name differently;
/// each runs its own, and the connection keeps the statements (it is not
/// reset between them).
#[tokio::test(flavor = "multi_thread")]
async fn full_mode_clients_sharing_a_connection_keep_their_own_names() {
    let port = full_proxy_for_sharing().port;
    let a = connect(port, "sd_trust", "unused").await;
    let b = connect(port, "sd_trust", "unused").await;
    let value = |rows: Vec<tokio_postgres::SimpleQueryMessage>| {
        rows.into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .expect("a row")
    };
    // Only sleddog's names are on the server connection, and what one client
    // prepared is still there for the next: nobody reset the connection.
    const NAMES: &str = "SELECT string_agg(CASE WHEN name LIKE '\\_\\_sleddog\\_%' \
                         THEN 'shared' ELSE name END, ',') FROM pg_prepared_statements";
    a.simple_query("PREPARE twice(int) AS SELECT $1 * 2")
        .await
        .unwrap();
    assert_eq!(value(b.simple_query(NAMES).await.unwrap()), "shared");
    b.simple_query("PREPARE twice(int) AS SELECT $1 + 1000")
        .await
        .unwrap();
    assert_eq!(value(a.simple_query(NAMES).await.unwrap()), "shared,shared");
    for i in 0..20 {
        let got = value(
            a.simple_query(&format!("EXECUTE twice({i})"))
                .await
                .unwrap(),
        );
        assert_eq!(got, (i * 2).to_string());
        let got = value(
            b.simple_query(&format!("EXECUTE twice({i})"))
                .await
                .unwrap(),
        );
        assert_eq!(got, (i + 1000).to_string());
    }
    b.simple_query("DEALLOCATE twice").await.unwrap();
    assert_eq!(value(a.simple_query(NAMES).await.unwrap()), "shared,shared");
    let error = b.simple_query("EXECUTE twice(1)").await.unwrap_err();
    assert_eq!(
        common::proxy::sqlstate(&error).as_deref(),
        Some("26000"),
        "{error}"
    );
}

//! Sharded routing end to end, on one Postgres holding two shard databases
//! (`shd_0`, `shd_1`) behind cluster `sleddog`: where rows land, how a
//! transaction attaches shards, what goes to every shard, manual routing
//! (comments, `SET pgdog.shard`, `SET pgdog.sharding_key`), schema sharding
//! with `search_path`, omnisharded tables, and cross-shard requests over
//! both protocols. The differential corpus is `tests/sharding_diff.rs`.

mod common;

use std::sync::OnceLock;

use common::proxy::{connect, USERS};
use common::{free_port, pg, PgServer, Sleddog};
use tokio_postgres::{Client, SimpleQueryMessage};

const SHARDS: [&str; 2] = ["shd_0", "shd_1"];

/// The file's Postgres with both shard databases and the tables.
fn server() -> &'static PgServer {
    static READY: OnceLock<()> = OnceLock::new();
    let server = pg();
    READY.get_or_init(|| {
        for db in SHARDS {
            server.psql("postgres", &format!("drop database if exists {db}"));
            server.psql("postgres", &format!("create database {db} owner sd_scram"));
            server.psql(
                db,
                "create table users (id bigint primary key, email text); \
                 create table countries (code text primary key, name text); \
                 create schema tenant_a; create schema tenant_b; \
                 create table tenant_a.orders (id int, note text); \
                 create table tenant_b.orders (id int, note text); \
                 grant all on all tables in schema public, tenant_a, tenant_b to public; \
                 grant usage, create on schema public, tenant_a, tenant_b to public",
            );
        }
    });
    server
}

/// Where Postgres's own hash partitioning (modulus 2) puts each id. Each
/// call has its own table: tests run in parallel.
fn postgres_shard_of(ids: &[i64]) -> Vec<usize> {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let table = format!(
        "shd_place_{}",
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let server = server();
    server.psql(
        "postgres",
        &format!(
            "drop table if exists {table}; \
             create table {table} (id bigint) partition by hash (id); \
             create table {table}_0 partition of {table} for values with (modulus 2, remainder 0); \
             create table {table}_1 partition of {table} for values with (modulus 2, remainder 1)"
        ),
    );
    let list: Vec<String> = ids.iter().map(|id| format!("({id})")).collect();
    server.psql(
        "postgres",
        &format!("insert into {table} values {}", list.join(",")),
    );
    let places = ids
        .iter()
        .map(|id| {
            let part = server.psql(
                "postgres",
                &format!("select tableoid::regclass from {table} where id = {id}"),
            );
            if part.trim().ends_with("_0") {
                0
            } else {
                1
            }
        })
        .collect();
    server.psql("postgres", &format!("drop table {table}"));
    places
}

fn start(general: &str) -> (Sleddog, u16) {
    let port = free_port();
    let pg_port = server().port();
    let workers = if general.contains("workers") {
        ""
    } else {
        "workers = 2\n"
    };
    let mut toml = format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\n{workers}\
         connect_timeout = 1000\ncheckout_timeout = 2000\nmin_pool_size = 0\n{general}\n"
    );
    for (shard, db) in SHARDS.iter().enumerate() {
        toml.push_str(&format!(
            "\n[[databases]]\nname = \"sleddog\"\nhost = \"127.0.0.1\"\nport = {pg_port}\n\
             database_name = \"{db}\"\nshard = {shard}\n"
        ));
    }
    toml.push_str(
        "\n[[sharded_tables]]\ndatabase = \"sleddog\"\nname = \"users\"\ncolumn = \"id\"\n\
         \n[[omnisharded_tables]]\ndatabase = \"sleddog\"\ntables = [\"countries\"]\n\
         \n[[sharded_schemas]]\ndatabase = \"sleddog\"\nname = \"tenant_a\"\nshard = 0\n\
         \n[[sharded_schemas]]\ndatabase = \"sleddog\"\nname = \"tenant_b\"\nshard = 1\n",
    );
    (Sleddog::start(&toml, USERS), port)
}

fn proxy() -> u16 {
    static PROXY: OnceLock<(Sleddog, u16)> = OnceLock::new();
    PROXY.get_or_init(|| start("")).1
}

async fn client() -> Client {
    connect(proxy(), "sd_scram", "scram_pw").await
}

/// The rows of a simple query, each as its text columns.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Ids in `table` on one shard database, straight from Postgres.
fn ids_on(shard: usize, sql: &str) -> Vec<i64> {
    server()
        .psql(SHARDS[shard], sql)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

fn sqlstate(error: &tokio_postgres::Error) -> String {
    common::proxy::sqlstate(error).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_land_where_postgres_hash_partitioning_puts_them() {
    let client = client().await;
    let ids: Vec<i64> = (1000..1060).chain([-1, 0, i64::MAX, i64::MIN]).collect();
    for id in &ids {
        client
            .execute(
                "insert into users (id, email) values ($1, $2)",
                &[id, &format!("u{id}@x")],
            )
            .await
            .unwrap();
    }
    let expected = postgres_shard_of(&ids);
    for (id, shard) in ids.iter().zip(expected) {
        let here = ids_on(shard, &format!("select id from users where id = {id}"));
        let there = ids_on(1 - shard, &format!("select id from users where id = {id}"));
        assert_eq!((here, there), (vec![*id], vec![]), "id {id}");
        // Read back by key, text and binary parameters.
        let got = rows(&client, &format!("select email from users where id = {id}")).await;
        assert_eq!(got, vec![vec![Some(format!("u{id}@x"))]]);
        let row = client
            .query_one("select email from users where id = $1", &[id])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), format!("u{id}@x"));
    }
    client
        .simple_query("delete from users where id >= 1000 and id < 1060 or id in (-1, 0, 9223372036854775807, -9223372036854775808)")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_holds_only_the_shards_it_touched() {
    let ids: Vec<i64> = (2000..2040).collect();
    let places = postgres_shard_of(&ids);
    let on = |shard: usize| ids[places.iter().position(|&p| p == shard).unwrap()];
    let (a, b) = (on(0), on(1));
    let client = client().await;
    client
        .simple_query(&format!(
            "set application_name = 'shd_lazy'; begin; insert into users (id, email) values ({a}, 'a')"
        ))
        .await
        .unwrap();
    let in_transaction = |db: &str| {
        server()
            .psql(
                "postgres",
                &format!(
                    "select count(*) from pg_stat_activity where datname = '{db}' \
                     and state like 'idle in transaction%'"
                ),
            )
            .trim()
            .to_owned()
    };
    assert_eq!(
        (in_transaction("shd_0"), in_transaction("shd_1")),
        ("1".into(), "0".into())
    );
    client
        .simple_query(&format!("insert into users (id, email) values ({b}, 'b')"))
        .await
        .unwrap();
    assert_eq!(
        (in_transaction("shd_0"), in_transaction("shd_1")),
        ("1".into(), "1".into())
    );
    client.simple_query("commit").await.unwrap();
    assert_eq!(
        ids_on(0, &format!("select id from users where id = {a}")),
        vec![a]
    );
    assert_eq!(
        ids_on(1, &format!("select id from users where id = {b}")),
        vec![b]
    );

    // The same over two shards, rolled back: neither row stays.
    client.simple_query("begin").await.unwrap();
    client
        .execute("update users set email = 'changed' where id = $1", &[&a])
        .await
        .unwrap();
    client
        .execute("update users set email = 'changed' where id = $1", &[&b])
        .await
        .unwrap();
    client.simple_query("rollback").await.unwrap();
    let emails = rows(
        &client,
        &format!("select email from users where id in ({a}, {b}) order by id"),
    )
    .await;
    assert_eq!(emails, vec![vec![Some("a".into())], vec![Some("b".into())]]);
    client
        .simple_query(&format!("delete from users where id in ({a}, {b})"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_without_a_key_go_to_every_shard_and_merge() {
    let client = client().await;
    client
        .simple_query("insert into users (id, email) values (3001, 'x'), (3002, 'y')")
        .await
        .map(|_| ())
        .or_else(|e| {
            // A multi-row INSERT spanning shards is refused; one row each.
            assert_eq!(sqlstate(&e), "0A000", "{e}");
            Ok::<(), ()>(())
        })
        .unwrap();
    for id in 3001..3011i64 {
        client
            .execute(
                "insert into users (id, email) values ($1, $2) on conflict (id) do nothing",
                &[&id, &format!("e{id}")],
            )
            .await
            .unwrap();
    }
    let all = rows(
        &client,
        "select id from users where id between 3001 and 3010 order by id desc",
    )
    .await;
    let expected: Vec<Vec<Option<String>>> = (3001..3011)
        .rev()
        .map(|i| vec![Some(i.to_string())])
        .collect();
    assert_eq!(all, expected);
    let count = client
        .query_one(
            "select count(*) from users where id between $1 and $2",
            &[&3001i64, &3010i64],
        )
        .await
        .unwrap();
    assert_eq!(count.get::<_, i64>(0), 10);
    // A named prepared statement, run twice, fans out each time.
    let statement = client
        .prepare(
            "select id, email from users where id between $1 and $2 order by id limit 3 offset 1",
        )
        .await
        .unwrap();
    for _ in 0..2 {
        let got: Vec<i64> = client
            .query(&statement, &[&3001i64, &3010i64])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(got, vec![3002, 3003, 3004]);
    }
    let deleted = client
        .execute("delete from users where id between 3001 and 3010", &[])
        .await
        .unwrap();
    assert_eq!(deleted, 10, "DELETE tags summed over shards");
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_routing_by_comment_and_settings() {
    let client = client().await;
    let db = |sql: &'static str| {
        let client = &client;
        async move { rows(client, sql).await[0][0].clone().unwrap() }
    };
    assert_eq!(
        db("/* pgdog_shard: 1 */ select current_database()").await,
        "shd_1"
    );
    assert_eq!(
        db("/* pgdog_shard: 0 */ select current_database()").await,
        "shd_0"
    );
    client.simple_query("set pgdog.shard to 1").await.unwrap();
    assert_eq!(db("select current_database()").await, "shd_1");
    client.simple_query("reset pgdog.shard").await.unwrap();
    let places = postgres_shard_of(&[777]);
    let expected = SHARDS[places[0]];
    client
        .simple_query("set pgdog.sharding_key to '777'")
        .await
        .unwrap();
    assert_eq!(db("select current_database()").await, expected);
    client
        .simple_query("reset pgdog.sharding_key")
        .await
        .unwrap();
    assert_eq!(
        db("/* pgdog_sharding_key: 777 */ select current_database()").await,
        expected
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_sharding_follows_qualified_names_and_search_path() {
    let client = client().await;
    client
        .simple_query("insert into tenant_a.orders values (1, 'a')")
        .await
        .unwrap();
    client
        .simple_query("insert into tenant_b.orders values (2, 'b')")
        .await
        .unwrap();
    assert_eq!(ids_on(0, "select id from tenant_a.orders"), vec![1]);
    assert_eq!(ids_on(1, "select id from tenant_b.orders"), vec![2]);
    assert!(ids_on(1, "select id from tenant_a.orders").is_empty());
    client
        .simple_query("set search_path to public, tenant_b")
        .await
        .unwrap();
    let got = rows(&client, "select id, current_database() from orders").await;
    assert_eq!(got, vec![vec![Some("2".into()), Some("shd_1".into())]]);
    client.simple_query("reset search_path").await.unwrap();
    client
        .simple_query("delete from tenant_a.orders; delete from tenant_b.orders")
        .await
        .map(|_| ())
        .unwrap_or_else(|e| assert_eq!(sqlstate(&e), "0A000", "{e}"));
    client
        .simple_query("delete from tenant_a.orders")
        .await
        .unwrap();
    client
        .simple_query("delete from tenant_b.orders")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn omnisharded_writes_go_everywhere_and_ddl_too() {
    let client = client().await;
    let inserted = client
        .execute(
            "insert into countries values ('pl', 'Poland') on conflict do nothing",
            &[],
        )
        .await
        .unwrap();
    assert!(inserted <= 2);
    for db in SHARDS {
        let names = server().psql(db, "select name from countries where code = 'pl'");
        assert_eq!(names.trim(), "Poland", "{db}");
    }
    let got = rows(&client, "select name from countries where code = 'pl'").await;
    assert_eq!(
        got,
        vec![vec![Some("Poland".into())]],
        "read from one shard"
    );
    client
        .simple_query("create table shd_ddl (id bigint)")
        .await
        .unwrap();
    for db in SHARDS {
        server().psql(db, "select 1 from shd_ddl");
    }
    client.simple_query("drop table shd_ddl").await.unwrap();
    client.simple_query("delete from countries").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_shard_requests_sleddog_cannot_answer_are_refused() {
    let client = client().await;
    for sql in [
        "select id, row_number() over () from users",
        "select count(distinct email) from users",
        "insert into users (id, email) values (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')",
        // Among several statements, a SELECT that needs merging (each
        // statement's results stream).
        "select 1; select count(*) from users",
        "select email from users; select id from users order by id",
        "select email from users; select code from countries",
        "delete from users where email = 'none'; show search_path",
    ] {
        let error = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&error), "0A000", "{sql}: {error}");
    }
    // Several statements whose results need no merging are answered.
    let (a, b) = one_on_each_shard(9_200_000);
    for id in [a, b] {
        let sql = format!("insert into users (id, email) values ({id}, 'multi')");
        client.simple_query(&sql).await.unwrap();
    }
    let sql = format!(
        "select id from users where id in ({a}, {b}); \
         select email from users where id in ({a}, {b}); \
         delete from users where id in ({a}, {b})"
    );
    let mut got = rows(&client, &sql).await;
    got.sort();
    let mut want = vec![
        vec![Some(a.to_string())],
        vec![Some(b.to_string())],
        vec![Some("multi".to_owned())],
        vec![Some("multi".to_owned())],
    ];
    want.sort();
    assert_eq!(got, want);
    // The session goes on.
    assert_eq!(
        rows(&client, "select 1").await,
        vec![vec![Some("1".into())]]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_shard_disabled_refuses_fan_out_only() {
    let (_proxy, port) = start("cross_shard_disabled = true");
    let client = connect(port, "sd_scram", "scram_pw").await;
    let error = client
        .simple_query("select count(*) from users")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "0A000", "{error}");
    let row = client
        .query_one("select count(*) from users where id = $1", &[&5i64])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn set_local_routes_the_rest_of_its_transaction() {
    let client = client().await;
    client
        .simple_query("insert into tenant_b.orders values (7, 'local')")
        .await
        .unwrap();
    // PgDog's example: the whole transaction goes to tenant_b's shard.
    client.simple_query("begin").await.unwrap();
    client
        .simple_query("set local search_path to public, tenant_b")
        .await
        .unwrap();
    let got = rows(
        &client,
        "select id, current_database() from orders where id = 7",
    )
    .await;
    assert_eq!(got, vec![vec![Some("7".into()), Some("shd_1".into())]]);
    // A table the search path does not place still reads the setting the
    // server applied: it ran there after the BEGIN.
    let path = rows(&client, "show search_path").await;
    assert_eq!(path, vec![vec![Some("public, tenant_b".into())]]);
    client.simple_query("commit").await.unwrap();

    client.simple_query("begin").await.unwrap();
    client
        .simple_query("set local pgdog.shard to 1")
        .await
        .unwrap();
    let db = rows(&client, "select current_database()").await;
    assert_eq!(db, vec![vec![Some("shd_1".into())]]);
    client.simple_query("rollback").await.unwrap();
    client
        .simple_query("delete from tenant_b.orders where id = 7")
        .await
        .unwrap();
}

/// Two ids Postgres hashing puts on shards 0 and 1.
fn one_on_each_shard(from: i64) -> (i64, i64) {
    let ids: Vec<i64> = (from..from + 40).collect();
    let places = postgres_shard_of(&ids);
    let on = |shard: usize| ids[places.iter().position(|&p| p == shard).unwrap()];
    (on(0), on(1))
}

#[tokio::test(flavor = "multi_thread")]
async fn savepoints_and_failures_cover_every_shard_of_a_transaction() {
    let (a, b) = one_on_each_shard(6000);
    let client = client().await;
    // ROLLBACK TO a savepoint undoes the work on every shard after it.
    client.simple_query("begin").await.unwrap();
    client
        .simple_query(&format!("insert into users (id, email) values ({a}, 'a')"))
        .await
        .unwrap();
    client.simple_query("savepoint s").await.unwrap();
    client
        .simple_query(&format!("insert into users (id, email) values ({b}, 'b')"))
        .await
        .unwrap();
    client
        .simple_query(&format!(
            "update users set email = 'changed' where id = {a}"
        ))
        .await
        .unwrap();
    client
        .simple_query("rollback to savepoint s")
        .await
        .unwrap();
    client.simple_query("commit").await.unwrap();
    assert_eq!(
        ids_on(
            0,
            &format!("select id from users where id = {a} and email = 'a'")
        ),
        vec![a]
    );
    assert!(ids_on(1, &format!("select id from users where id = {b}")).is_empty());

    // A failure on one shard fails the transaction: COMMIT rolls back all.
    client.simple_query("begin").await.unwrap();
    client
        .simple_query(&format!("insert into users (id, email) values ({b}, 'b')"))
        .await
        .unwrap();
    let duplicate = client
        .simple_query(&format!(
            "insert into users (id, email) values ({a}, 'again')"
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&duplicate), "23505");
    let aborted = client.simple_query("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&aborted), "25P02");
    // COMMIT AND CHAIN is not taken for an end here: the transaction stays
    // failed on sleddog as on the client.
    let chained = client.simple_query("commit and chain").await.unwrap_err();
    assert_eq!(sqlstate(&chained), "25P02");
    let still = client.simple_query("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&still), "25P02");
    let ended = client.simple_query("commit").await.unwrap();
    let tag = ended.iter().find_map(|m| match m {
        SimpleQueryMessage::CommandComplete(_) => Some(()),
        _ => None,
    });
    assert!(tag.is_some());
    assert!(ids_on(1, &format!("select id from users where id = {b}")).is_empty());

    // COMMIT among other statements of a transaction on two shards is refused.
    client.simple_query("begin").await.unwrap();
    client
        .simple_query(&format!("update users set email = 'x' where id = {a}"))
        .await
        .unwrap();
    client
        .simple_query(&format!("insert into users (id, email) values ({b}, 'b')"))
        .await
        .unwrap();
    let refused = client
        .simple_query(&format!(
            "update users set email = 'y' where id = {b}; commit"
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused), "0A000");
    client.simple_query("rollback").await.unwrap();
    assert!(ids_on(1, &format!("select id from users where id = {b}")).is_empty());
    client
        .simple_query(&format!("delete from users where id = {a}"))
        .await
        .unwrap();
}

/// Peak resident memory of a process, in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

/// A merge that would hold more rows than `fanout::merge::MAX_HELD_BYTES`
/// (256 MiB) fails with 54000, and sleddog's memory stays near that cap: the
/// rows go into the merge as they arrive, so the shards' replies (320 MiB
/// here, more than the cap on their own) are never held whole. A request
/// of several results with nothing to merge (read whole before it is
/// assembled) is held up to the same cap. The shards are cancelled, and the
/// session serves its next query.
#[tokio::test(flavor = "multi_thread")]
async fn cross_shard_replies_past_the_memory_cap_fail_without_being_held() {
    let (a, b) = one_on_each_shard(9_100_000);
    let (proxy, port) = start("");
    let client = connect(port, "sd_scram", "scram_pw").await;
    for id in [a, b] {
        client
            .batch_execute(&format!(
                "insert into users (id, email) values ({id}, 'wide')"
            ))
            .await
            .unwrap();
    }
    let before = peak_rss_mib(proxy.pid());
    let sql = format!(
        "select u.id, g, repeat('x', 4000) as pad \
         from users u, generate_series(1, 40000) g \
         where u.id in ({a}, {b}) order by g, u.id"
    );
    let error = client.simple_query(&sql).await.unwrap_err();
    assert_eq!(sqlstate(&error), "54000", "{error:?}");
    let peak = peak_rss_mib(proxy.pid());
    assert!(
        peak < 384,
        "sleddog's peak memory: {peak} MiB (before the query: {before} MiB)"
    );
    let sql = format!(
        "select u.id, g, repeat('x', 4000) as pad \
         from users u, generate_series(1, 40000) g where u.id in ({a}, {b}); \
         select id from users where id in ({a}, {b})"
    );
    let error = client.simple_query(&sql).await.unwrap_err();
    assert_eq!(sqlstate(&error), "54000", "{error:?}");
    let peak = peak_rss_mib(proxy.pid());
    assert!(peak < 384, "sleddog's peak memory: {peak} MiB");
    let left = rows(
        &client,
        &format!("select count(*) from users where id in ({a}, {b})"),
    )
    .await;
    assert_eq!(left, vec![vec![Some("2".to_owned())]]);
    client
        .batch_execute(&format!("delete from users where id in ({a}, {b})"))
        .await
        .unwrap();
}

/// One extended-protocol request of statements for every shard and one for
/// any shard that returns rows: the read of the omnisharded table would run
/// on every shard with the rest and answer once per shard, so the request
/// is refused.
#[test]
fn a_request_mixing_fan_out_and_any_shard_rows_is_refused() {
    use common::proxy::{bind_no_params, execute, parse, sync, Raw};
    let (_proxy, port) = start("auth_type = \"trust\"");
    let mut raw = Raw::login(port, "sd_scram", None);
    let pipeline = |statements: [&str; 2]| {
        let mut batch = Vec::new();
        for sql in statements {
            batch.extend(parse(sql));
            batch.extend(bind_no_params());
            batch.extend(execute());
        }
        batch.extend(sync());
        batch
    };
    raw.send(&pipeline([
        "select id from users",
        "select code from countries",
    ]));
    let replies = raw.until_ready();
    let error = replies.iter().find(|m| m.tag == b'E').expect("an error");
    assert_eq!(error.sqlstate().as_deref(), Some("0A000"), "{replies:?}");
    // Statements for every shard together are answered.
    raw.send(&pipeline([
        "select id from users",
        "select email from users",
    ]));
    let replies = raw.until_ready();
    assert!(replies.iter().all(|m| m.tag != b'E'), "{replies:?}");
    assert_eq!(replies.iter().filter(|m| m.tag == b'C').count(), 2);
}

/// A shard a fan-out attaches later in a transaction gets the
/// transaction's own BEGIN (its isolation level), not a plain one.
#[tokio::test(flavor = "multi_thread")]
async fn shards_attached_by_a_fan_out_keep_the_isolation_level() {
    let (a, _) = one_on_each_shard(9_300_000);
    let client = client().await;
    client
        .batch_execute("begin isolation level repeatable read")
        .await
        .unwrap();
    rows(&client, &format!("select id from users where id = {a}")).await;
    rows(&client, "select id from users").await;
    for shard in 0..2 {
        let sql =
            format!("/* pgdog_shard: {shard} */ select current_setting('transaction_isolation')");
        assert_eq!(
            rows(&client, &sql).await,
            vec![vec![Some("repeatable read".to_owned())]],
            "shard {shard}"
        );
    }
    client.batch_execute("rollback").await.unwrap();
}

/// Session state left on a shard's connection inside a transaction (a SET)
/// must not reach the next client when the transaction moves on to another
/// shard and ends there: that connection is closed, not pooled.
#[tokio::test(flavor = "multi_thread")]
async fn session_state_of_a_parked_shard_does_not_reach_the_next_client() {
    let (a, b) = one_on_each_shard(9_400_000);
    let (_proxy, port) = start("workers = 1\ndefault_pool_size = 1");
    let first = connect(port, "sd_scram", "scram_pw").await;
    first.batch_execute("begin").await.unwrap();
    rows(&first, &format!("select id from users where id = {a}")).await;
    first.batch_execute("set work_mem = '7MB'").await.unwrap();
    rows(&first, &format!("select id from users where id = {b}")).await;
    first.batch_execute("commit").await.unwrap();
    drop(first);
    let second = connect(port, "sd_scram", "scram_pw").await;
    for shard in 0..2 {
        let sql = format!("/* pgdog_shard: {shard} */ show work_mem");
        assert_eq!(
            rows(&second, &sql).await,
            vec![vec![Some("4MB".to_owned())]],
            "shard {shard}"
        );
    }
}

//! Queries through sleddog in transaction mode: simple, multi-statement,
//! extended, pipelined, errors mid-pipeline, notices, notifications, COPY, and
//! many clients sharing a small pool.

mod common;

use std::sync::OnceLock;

use common::proxy::{config, connect, sqlstate, USERS};
use common::{free_port, pg, Sleddog};
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::types::Type;

/// One sleddog for the whole file: pool of 4 per process.
fn proxy() -> &'static Sleddog {
    static PROXY: OnceLock<Sleddog> = OnceLock::new();
    PROXY.get_or_init(|| {
        let port = free_port();
        let general = "default_pool_size = 4";
        Sleddog::start(&config(port, pg().port(), general), USERS)
    })
}

fn proxy_port() -> u16 {
    proxy().port
}

async fn client() -> tokio_postgres::Client {
    connect(proxy_port(), "sd_scram", "scram_pw").await
}

#[tokio::test(flavor = "multi_thread")]
async fn simple_and_multi_statement_queries() {
    let client = client().await;
    let messages = client
        .simple_query("select 1 as a; select 'x' as b, null as c")
        .await
        .unwrap();
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get(0), Some("1"));
    assert_eq!(rows[1].get("b"), Some("x"));
    assert_eq!(rows[1].get("c"), None);
    // An empty query and an error, then the connection still works.
    client.simple_query("").await.unwrap();
    let error = client.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("22012"));
    let row = client.query_typed_one("select 2::int4", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn extended_protocol_with_parameters_and_prepared_statements() {
    let client = client().await;
    let row = client
        .query_typed_one(
            "select $1::int8 + 1, $2::text",
            &[(&41i64, Type::INT8), (&"hi", Type::TEXT)],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, &str>(1), "hi");
    // A named prepared statement used inside one transaction (transaction mode
    // keeps the server connection for the whole transaction).
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    let statement = tx
        .prepare("select generate_series(1, $1::int4)")
        .await
        .unwrap();
    for n in [1i32, 5, 100] {
        assert_eq!(tx.query(&statement, &[&n]).await.unwrap().len(), n as usize);
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_queries_and_an_error_mid_pipeline() {
    let client = client().await;
    // tokio-postgres pipelines concurrent queries on one connection.
    let queries: Vec<_> = (0..20i32)
        .map(|i| {
            let client = &client;
            async move {
                if i == 7 {
                    client.query_typed_one("select 1/0", &[]).await.map(|_| -1)
                } else {
                    client
                        .query_typed_one("select $1::int4 * 2", &[(&i, Type::INT4)])
                        .await
                        .map(|r| r.get::<_, i32>(0))
                }
            }
        })
        .collect();
    let results = join_all(queries).await;
    for (i, result) in results.into_iter().enumerate() {
        if i == 7 {
            assert_eq!(sqlstate(&result.unwrap_err()).as_deref(), Some("22012"));
        } else {
            assert_eq!(result.unwrap(), i as i32 * 2);
        }
    }
}

/// Notices pass through in any mode; notifications reach a listener in session
/// mode (LISTEN under transaction pooling is handled by the pub/sub work).
#[tokio::test(flavor = "multi_thread")]
async fn notices_and_notifications_pass_through() {
    let port = free_port();
    let general = "pooler_mode = \"session\"";
    let _proxy = Sleddog::start(&config(port, pg().port(), general), USERS);
    let (listener, mut connection) = tokio_postgres::connect(
        &common::proxy::conninfo(port, "sd_scram", "scram_pw"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            let _ = tx.send(message);
        }
    });
    listener
        .batch_execute("do $$ begin raise notice 'hello from postgres'; end $$; listen chan")
        .await
        .unwrap();
    let notifier = connect(port, "sd_scram", "scram_pw").await;
    notifier
        .batch_execute("notify chan, 'payload'")
        .await
        .unwrap();
    let mut notice = false;
    let mut notification = false;
    while let Ok(Some(message)) =
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await
    {
        match message {
            tokio_postgres::AsyncMessage::Notice(n) => {
                notice |= n.message() == "hello from postgres";
            }
            tokio_postgres::AsyncMessage::Notification(n) => {
                notification |= n.channel() == "chan" && n.payload() == "payload";
            }
            _ => {}
        }
        if notice && notification {
            break;
        }
    }
    assert!(notice, "notice not received");
    assert!(notification, "notification not received");
}

/// 50 clients over a pool of 4 (2 per core): each runs transactions that
/// write and read back rows tagged with its own id, and never sees another's.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_clients_share_a_pool_of_four() {
    let setup = client().await;
    setup
        .batch_execute("create table if not exists isolation_rows (client int, n int)")
        .await
        .unwrap();
    let tasks: Vec<_> = (0..50i32)
        .map(|me| {
            tokio::spawn(async move {
                let mut client = client().await;
                for n in 0..10i32 {
                    let tx = client.transaction().await.unwrap();
                    tx.execute("insert into isolation_rows values ($1, $2)", &[&me, &n])
                        .await
                        .unwrap();
                    let row = tx
                        .query_one(
                            "select count(*)::int4, min(client), max(client) from isolation_rows \
                         where client = $1",
                            &[&me],
                        )
                        .await
                        .unwrap();
                    assert_eq!(row.get::<_, i32>(0), n + 1);
                    let echo: i32 = tx
                        .query_one("select $1::int4", &[&me])
                        .await
                        .unwrap()
                        .get(0);
                    assert_eq!(echo, me, "a client saw another client's reply");
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for result in join_all(tasks).await {
        result.unwrap();
    }
    let total: i64 = setup
        .query_typed_one("select count(*) from isolation_rows", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 500);
    // The pool bound held: at most 4 server connections from sleddog (+1 for
    // rounding per core).
    let servers = pg().psql(
        "postgres",
        "select count(*) from pg_stat_activity where application_name = 'sleddog' and usename = 'sd_scram'",
    );
    let details = pg().psql(
        "postgres",
        "select string_agg(usename || ' ' || state || ' ' || client_port || ' ' || left(query, 40), E'\\n') from pg_stat_activity where application_name = 'sleddog' and usename = 'sd_scram'",
    );
    assert!(
        servers.parse::<i32>().unwrap() <= 4,
        "{servers} server connections\n{details}\n{}",
        proxy().log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_in_and_out_100k_rows() {
    use bytes::Bytes;
    let mut client = client().await;
    client
        .batch_execute("drop table if exists copy_rows; create table copy_rows (id int, v text)")
        .await
        .unwrap();
    // tokio-postgres prepares a named statement for COPY: keep it in one
    // transaction (named statements across transactions are not kept yet).
    let client = client.transaction().await.unwrap();
    let sink = client.copy_in("copy copy_rows from stdin").await.unwrap();
    let mut data = String::new();
    for i in 0..100_000 {
        data.push_str(&format!("{i}\tvalue {i}\n"));
    }
    let mut sink = std::pin::pin!(sink);
    sink.send(Bytes::from(data)).await.unwrap();
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, 100_000);
    let stream = client
        .copy_out("copy (select * from copy_rows order by id) to stdout")
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    let mut bytes = 0usize;
    let mut lines = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(lines, 100_000);
    assert!(bytes > 1_000_000);
    client.commit().await.unwrap();
}

/// A client that pipelines a query with a large result and then a very large
/// message, reading replies while it writes (as libpq's pipeline mode does):
/// while the proxy writes the large message the server is busy writing the
/// result and reads nothing, so the proxy must keep reading the server while
/// its own write waits, or proxy and server block on each other for good.
#[test]
fn deep_pipeline_does_not_stall() {
    use std::io::Write;
    let port = free_port();
    let general = "default_pool_size = 2\nauth_type = \"trust\"";
    let _proxy = Sleddog::start(&config(port, pg().port(), general), USERS);
    let mut raw = common::proxy::Raw::login(port, "sd_scram", None);
    let mut writer = raw.writer();
    let sender = std::thread::spawn(move || {
        let big_result =
            common::proxy::query("select repeat('y', 1000) from generate_series(1, 40000)");
        let padding = "x".repeat(24 << 20);
        let big_message = common::proxy::query(&format!("select 1 /* {padding} */"));
        writer
            .write_all(&[big_result, big_message].concat())
            .unwrap();
    });
    let mut ready = 0;
    let mut rows = 0;
    while ready < 2 {
        let msg = raw.recv().expect("a reply (the pipeline stalled)");
        assert_ne!(msg.tag, b'E', "{:?}", msg.field(b'M'));
        match msg.tag {
            b'Z' => ready += 1,
            b'D' => rows += 1,
            _ => {}
        }
    }
    assert_eq!(rows, 40001);
    sender.join().unwrap();
}

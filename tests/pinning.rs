//! Pinning in transaction mode: a client holding session advisory locks, or
//! with `SET pgdog.pin TO true`, keeps its server connection until it lets go;
//! its locks are released before the connection serves anyone else. And
//! `client_idle_in_transaction_timeout`.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::proxy::{config, connect, sqlstate, USERS};
use common::{free_port, pg, Sleddog};
use tokio_postgres::Client;

fn proxy() -> &'static Sleddog {
    static PROXY: OnceLock<Sleddog> = OnceLock::new();
    PROXY.get_or_init(|| {
        let port = free_port();
        Sleddog::start(&config(port, pg().port(), "default_pool_size = 4"), USERS)
    })
}

async fn client() -> Client {
    connect(proxy().port, "sd_scram", "scram_pw").await
}

async fn try_lock(client: &Client, key: i64) -> bool {
    client
        .query_one("select pg_try_advisory_lock($1)", &[&key])
        .await
        .unwrap()
        .get(0)
}

/// Other clients keep the pool's connections moving.
async fn churn() {
    let others: Vec<Client> = futures_util::future::join_all((0..4).map(|_| client())).await;
    for _ in 0..5 {
        for other in &others {
            other.batch_execute("select 1").await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn advisory_lock_holder_keeps_its_connection_until_unlock() {
    let holder = client().await;
    let other = client().await;
    holder
        .batch_execute("select pg_advisory_lock(7001)")
        .await
        .unwrap();
    churn().await;
    // Still held: the holder's connection never went back to the pool.
    assert!(!try_lock(&other, 7001).await);
    let row = holder
        .query_one(
            "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    holder
        .batch_execute("select pg_advisory_unlock(7001)")
        .await
        .unwrap();
    assert!(try_lock(&other, 7001).await);
    other
        .batch_execute("select pg_advisory_unlock_all()")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_of_a_client_that_vanishes_are_released() {
    let holder = client().await;
    holder
        .batch_execute("select pg_advisory_lock(7002)")
        .await
        .unwrap();
    drop(holder);
    let other = client().await;
    let mut got = false;
    for _ in 0..50 {
        if try_lock(&other, 7002).await {
            got = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(got, "the vanished client's lock was never released");
    other
        .batch_execute("select pg_advisory_unlock_all()")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pgdog_pin_keeps_the_connection_and_its_temp_tables() {
    let pinned = client().await;
    pinned
        .batch_execute("set pgdog.pin to true; create temp table pinned_t (v int)")
        .await
        .unwrap();
    for i in 0..10 {
        pinned
            .execute("insert into pinned_t values ($1)", &[&i])
            .await
            .unwrap();
        churn().await;
    }
    let row = pinned
        .query_one("select count(*) from pinned_t", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 10);
    pinned.batch_execute("reset pgdog.pin").await.unwrap();
    let row = pinned
        .query_one("select current_setting('pgdog.pin', true)", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).unwrap_or_default(), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_in_transaction_timeout_ends_the_session() {
    let port = free_port();
    let general = "default_pool_size = 2\nclient_idle_in_transaction_timeout = 300";
    let proxy = Sleddog::start(&config(port, pg().port(), general), USERS);
    let client = connect(proxy.port, "sd_scram", "scram_pw").await;
    // Idle outside a transaction: no limit.
    client.batch_execute("select 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.batch_execute("begin").await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let error = client.batch_execute("select 1").await.unwrap_err();
    let code = sqlstate(&error);
    assert!(
        code.as_deref() == Some("25P03") || error.is_closed(),
        "{error:?}"
    );
    // The server connection was rolled back and reused.
    let again = connect(proxy.port, "sd_scram", "scram_pw").await;
    again.batch_execute("select 1").await.unwrap();
}

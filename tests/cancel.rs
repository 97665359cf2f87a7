//! Cancel requests: sleddog's BackendKeyData names the core that owns the
//! session; a CancelRequest landing on any core cancels that session's query.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{config, connect, sqlstate, USERS};
use common::{free_port, pg, Sleddog};

#[tokio::test(flavor = "multi_thread")]
async fn cancel_pg_sleep_within_a_second() {
    let port = free_port();
    let _proxy = Sleddog::start(&config(port, pg().port(), ""), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    let token = client.cancel_token();
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let error = client
        .query_typed_one("select pg_sleep(10)", &[])
        .await
        .unwrap_err();
    canceller.await.unwrap();
    assert_eq!(sqlstate(&error).as_deref(), Some("57014"));
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );
    // The connection is usable afterwards.
    client.query_typed_one("select 1", &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn hundreds_of_cancels_at_once() {
    let port = free_port();
    // trust: 200 client-side SCRAM logins (PBKDF2 in a debug build) would dominate.
    let general = "default_pool_size = 220\nauth_type = \"trust\"";
    let _proxy = Sleddog::start(&config(port, pg().port(), general), USERS);
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(connect(port, "sd_scram", "scram_pw").await);
    }
    let started = Instant::now();
    let sleepers: Vec<_> = clients
        .iter()
        .map(|client| {
            let token = client.cancel_token();
            (token, client.query_typed_one("select pg_sleep(20)", &[]))
        })
        .collect();
    let (tokens, queries): (Vec<_>, Vec<_>) = sleepers.into_iter().unzip();
    let cancels = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let cancels = tokens.into_iter().map(|token| async move {
            token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        });
        futures_util::future::join_all(cancels).await;
    });
    let results = futures_util::future::join_all(queries).await;
    cancels.await.unwrap();
    for result in results {
        assert_eq!(sqlstate(&result.unwrap_err()).as_deref(), Some("57014"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// A client waiting for a server connection has its pending query withdrawn.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_while_waiting_for_a_connection() {
    let port = free_port();
    let general = "default_pool_size = 1\ncheckout_timeout = 20000";
    let toml = config(port, pg().port(), general).replace("workers = 2", "workers = 1");
    let _proxy = Sleddog::start(&toml, USERS);
    let holder = connect(port, "sd_scram", "scram_pw").await;
    let waiter = connect(port, "sd_scram", "scram_pw").await;
    let hold = tokio::spawn(async move {
        holder
            .query_typed_one("select pg_sleep(3)", &[])
            .await
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let token = waiter.cancel_token();
    let started = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let error = waiter.query_typed_one("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("57014"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    hold.await.unwrap();
    waiter.query_typed_one("select 1", &[]).await.unwrap();
}

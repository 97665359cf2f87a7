//! Limits a client can run into: `max_client_connections` (sleddog's own key),
//! per core `ceil(max / workers)`; over it a client gets FATAL 53300 after its
//! startup packet and the connection closes.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{sqlstate, try_connect, USERS};
use common::{free_port, pg, Sleddog};

fn limited_proxy(workers: usize, max_client_connections: usize) -> Sleddog {
    let port = free_port();
    let config = format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\nworkers = {workers}\n\
         max_client_connections = {max_client_connections}\n\n\
         [[databases]]\nname = \"sleddog\"\nhost = \"127.0.0.1\"\nport = {}\n",
        pg().port()
    );
    let proxy = Sleddog::start(&config, USERS);
    // The harness probed the port to see it listening; let that connection's
    // session end so it does not hold a place.
    std::thread::sleep(Duration::from_millis(300));
    proxy
}

async fn select_one(client: &tokio_postgres::Client) -> i32 {
    client
        .query_typed_one("select 1", &[])
        .await
        .expect("select 1")
        .get(0)
}

fn assert_too_many(error: &tokio_postgres::Error, proxy: &Sleddog) {
    assert_eq!(
        sqlstate(error).as_deref(),
        Some("53300"),
        "{error}\n{}",
        proxy.log()
    );
    let message = error.as_db_error().unwrap().message();
    assert_eq!(message, "too many client connections");
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_over_the_limit_get_53300_and_room_comes_back() {
    let proxy = limited_proxy(1, 2);
    let first = try_connect(proxy.port, "sd_scram", "scram_pw")
        .await
        .unwrap();
    let second = try_connect(proxy.port, "sd_scram", "scram_pw")
        .await
        .unwrap();
    assert_eq!(select_one(&first).await, 1);
    assert_eq!(select_one(&second).await, 1);

    for _ in 0..3 {
        let Err(error) = try_connect(proxy.port, "sd_scram", "scram_pw").await else {
            panic!("a third client must be refused");
        };
        assert_too_many(&error, &proxy);
    }
    // The clients inside are not disturbed.
    assert_eq!(select_one(&first).await, 1);

    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let third = loop {
        match try_connect(proxy.port, "sd_scram", "scram_pw").await {
            Ok(client) => break client,
            Err(error) => {
                assert_too_many(&error, &proxy);
                assert!(Instant::now() < deadline, "the freed place never came back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(select_one(&third).await, 1);
    assert_eq!(select_one(&second).await, 1);
    let log = proxy.log();
    assert!(log.contains("max_client_connections reached"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// workers = 2, max = 3: each core admits ceil(3 / 2) = 2, so between 2 (the
/// kernel sent every client to one core) and 4 clients get in.
#[tokio::test(flavor = "multi_thread")]
async fn the_limit_is_split_between_cores() {
    let proxy = limited_proxy(2, 3);
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        match try_connect(proxy.port, "sd_scram", "scram_pw").await {
            Ok(client) => admitted.push(client),
            Err(error) => {
                assert_too_many(&error, &proxy);
                refused += 1;
            }
        }
    }
    assert!(
        (2..=4).contains(&admitted.len()),
        "admitted {} of 8\n{}",
        admitted.len(),
        proxy.log()
    );
    assert_eq!(admitted.len() + refused, 8);
    for client in &admitted {
        assert_eq!(select_one(client).await, 1);
    }
}

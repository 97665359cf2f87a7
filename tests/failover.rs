//! Failover with `role = "auto"`: the control thread's health monitor finds
//! the primary; after the replica is promoted and the old primary stops,
//! writes through sleddog reach the new primary without a restart.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{connect, USERS};
use common::{free_port, PgServer, Sleddog};

fn auto_config(port: u16, servers: &[&PgServer]) -> String {
    let mut toml = format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\nworkers = 2\n\
         connect_timeout = 500\ncheckout_timeout = 1000\n\
         client_connection_recovery = \"recover\"\n\
         lsn_check_delay = 0\nlsn_check_interval = 1000\n"
    );
    for server in servers {
        toml.push_str(&format!(
            "\n[[databases]]\nname = \"sleddog\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"auto\"\n",
            server.port()
        ));
    }
    toml
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_follow_a_promoted_replica() {
    let (primary, replica) = PgServer::start_with_replica(
        "failover",
        "create table failover_t (id int); grant all on failover_t to public",
    );
    let port = free_port();
    let proxy = Sleddog::start(&auto_config(port, &[&primary, &replica]), USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;

    // Until the monitor has spoken, writes may hit the standby; they settle.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client
            .execute("insert into failover_t values (1)", &[])
            .await
        {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("writes never reached the primary: {error}\n{}", proxy.log()),
        }
    }
    let in_recovery: bool = client
        .query_one("/* pgdog_role: primary */ select pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!in_recovery, "writes went to the standby");

    // The standby has replayed the first row before it is promoted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica.psql("sleddog", "select count(*) from failover_t") != "1" {
        assert!(
            Instant::now() < deadline,
            "the replica never replayed the row"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    replica.psql("postgres", "select pg_promote()");
    primary.stop();
    let stopped = Instant::now();
    let mut written = false;
    while stopped.elapsed() < Duration::from_secs(15) {
        if client
            .execute("insert into failover_t values (2)", &[])
            .await
            .is_ok()
        {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        written,
        "no write reached the promoted replica\n{}",
        proxy.log()
    );
    // lsn_check_interval (1 s here) + checkout_timeout (1 s), with slack for
    // the promotion itself.
    assert!(
        stopped.elapsed() < Duration::from_secs(6),
        "took {:?}",
        stopped.elapsed()
    );
    let count: i64 = client
        .query_one(
            "/* pgdog_role: primary */ select count(*) from failover_t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
}

//! Proves the shared test harness (tests/common): a real PostgreSQL starts, every test
//! role logs in over TCP with its own auth method, restarts work, and a replica streams.
//! It does not exercise sleddog itself.

mod common;

use common::{pg, PgServer, ROLES, TEST_DB};
use std::time::{Duration, Instant};

#[test]
fn superuser_psql_over_socket() {
    assert_eq!(pg().psql("postgres", "select 1"), "1");
    assert_eq!(
        pg().psql(TEST_DB, "select current_user || ' ' || current_database()"),
        "postgres sleddog"
    );
}

#[test]
fn try_psql_reports_errors() {
    let err = pg()
        .try_psql("postgres", "select no_such_column")
        .unwrap_err();
    assert!(err.contains("no_such_column"), "{err}");
}

#[test]
fn every_test_role_logs_in_over_tcp() {
    let server = pg();
    for (role, _, _, _) in ROLES {
        let who = server
            .psql_as(role, TEST_DB, "select current_user")
            .unwrap_or_else(|e| panic!("{role}: {e}\n{}", server.log()));
        assert_eq!(who, *role);
    }
}

#[test]
fn each_role_uses_the_auth_method_it_was_given() {
    let server = pg();
    // A wrong password is refused for every password role; trust needs none.
    for (role, password, _, _) in ROLES {
        let wrong = common::psql_tcp(server.port(), role, Some("wrong"), TEST_DB, "select 1");
        match password {
            Some(_) => assert!(wrong.is_err(), "{role} accepted a wrong password"),
            None => assert!(wrong.is_ok(), "{role} (trust) refused: {wrong:?}"),
        }
    }
    let stored = server.psql(
        "postgres",
        "select rolname || '=' || case when rolpassword like 'md5%' then 'md5' \
         when rolpassword like 'SCRAM-SHA-256$%' then 'scram' else 'none' end \
         from pg_authid where rolname like 'sd\\_%' order by rolname",
    );
    assert_eq!(
        stored, "sd_md5=md5\nsd_plain=scram\nsd_scram=scram\nsd_trust=none",
        "stored password kinds"
    );
    let hba = server.psql(
        "postgres",
        "select user_name[1] || ':' || auth_method from pg_hba_file_rules \
         where type = 'host' and database[1] = 'all' order by line_number",
    );
    assert_eq!(
        hba,
        "sd_md5:md5\nsd_plain:password\nsd_trust:trust\nall:scram-sha-256"
    );
}

#[test]
fn test_roles_can_create_tables_in_test_db() {
    let server = pg();
    for (role, _, _, _) in ROLES {
        let table = format!("smoke_{role}");
        server
            .psql_as(
                role,
                TEST_DB,
                &format!("create table {table} (id int); drop table {table};"),
            )
            .unwrap_or_else(|e| panic!("{role}: {e}"));
    }
}

#[test]
fn restart_keeps_data_and_port() {
    let server = PgServer::start_new("restart");
    server.psql(
        TEST_DB,
        "create table kept (v int); insert into kept values (42);",
    );
    let port = server.port();
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(server.psql(TEST_DB, "select v from kept"), "42");
    server.stop();
    assert!(server.try_psql("postgres", "select 1").is_err());
    server.start();
    assert_eq!(
        server
            .psql_as("sd_scram", TEST_DB, "select v from kept")
            .unwrap(),
        "42"
    );
}

#[test]
fn replica_streams_from_primary() {
    let primary = PgServer::start_new("repl-primary");
    primary.psql(TEST_DB, "create table r (v int);");
    let replica = primary.create_replica("repl-replica");
    assert_ne!(replica.port(), primary.port());
    assert_eq!(replica.psql("postgres", "select pg_is_in_recovery()"), "t");
    assert_eq!(primary.psql("postgres", "select pg_is_in_recovery()"), "f");
    assert_eq!(
        primary.psql(
            "postgres",
            "select count(*) from pg_stat_replication where state = 'streaming'"
        ),
        "1"
    );

    primary.psql(TEST_DB, "insert into r values (7);");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if replica.psql(TEST_DB, "select coalesce(sum(v), 0) from r") == "7" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "insert not replicated within 5 s\n{}",
            replica.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Test roles exist on the replica too and can read over TCP.
    assert_eq!(
        replica
            .psql_as("sd_md5", TEST_DB, "select v from r")
            .unwrap(),
        "7"
    );
    let err = replica
        .try_psql(TEST_DB, "insert into r values (1)")
        .unwrap_err();
    assert!(err.contains("read-only"), "{err}");
}

#[test]
fn free_ports_are_distinct() {
    let a = common::free_port();
    let b = common::free_port();
    assert_ne!(a, b);
}

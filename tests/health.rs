//! The control thread's health probes against real servers: a primary and its
//! streaming replica are told apart, the replica's lag is measured, a stopped
//! server is reported down, and a promoted replica is seen as a primary.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::PgServer;
use sleddog::control::health::{Monitor, Observation, ServerId, CHECK_SQL};
use sleddog::control::probe::Probe;
use sleddog::pool::server_conn::ServerLogin;

fn login() -> ServerLogin {
    ServerLogin {
        user: "sd_scram".into(),
        password: Some("scram_pw".into()),
        database: "sleddog".into(),
    }
}

fn addr(server: &PgServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port()))
}

fn id(server: &PgServer) -> ServerId {
    ServerId {
        host: "127.0.0.1".into(),
        port: server.port(),
        database_name: "sleddog".into(),
    }
}

fn observe(server: &PgServer) -> Observation {
    let timeout = Duration::from_secs(2);
    match Probe::connect(addr(server), &login(), timeout) {
        Ok(mut probe) => match probe.query(CHECK_SQL) {
            Ok(rows) => match sleddog::control::health::parse_check(&rows) {
                Ok(status) => Observation::Up(status),
                Err(reason) => Observation::Down(reason),
            },
            Err(error) => Observation::Down(error.to_string()),
        },
        Err(error) => Observation::Down(error.to_string()),
    }
}

#[test]
fn probes_tell_primary_from_replica_and_follow_a_promotion() {
    let (primary, replica) = PgServer::start_with_replica("health", "");
    let mut monitor = Monitor::default();
    let seen = observe(&primary);
    assert!(
        matches!(&seen, Observation::Up(s) if !s.in_recovery),
        "{seen:?}"
    );
    monitor.observe(id(&primary), seen);
    let seen = observe(&replica);
    assert!(
        matches!(&seen, Observation::Up(s) if s.in_recovery),
        "{seen:?}"
    );
    monitor.observe(id(&replica), seen);
    let both = [id(&primary), id(&replica)];
    let health = monitor.health();
    assert_eq!(
        health.elect_primary(&both, None, &monitor.lsns()),
        Some(id(&primary))
    );
    assert!(health.get(&id(&replica)).unwrap().lag_bytes.is_some());

    // A wrong password is a clear error, not a hang.
    let mut wrong = login();
    wrong.password = Some("nope".into());
    let error = Probe::connect(addr(&primary), &wrong, Duration::from_secs(2))
        .err()
        .expect("a wrong password must fail");
    assert!(error.to_string().contains("28P01"), "{error}");

    // Promote the replica and stop the old primary.
    replica.psql("postgres", "select pg_promote()");
    primary.stop();
    monitor.observe(id(&primary), observe(&primary));
    let mut promoted = false;
    for _ in 0..50 {
        monitor.observe(id(&replica), observe(&replica));
        if monitor
            .health()
            .elect_primary(&both, Some(&id(&primary)), &monitor.lsns())
            == Some(id(&replica))
        {
            promoted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(promoted, "the promoted replica was not elected");
    assert!(!monitor.health().get(&id(&primary)).unwrap().up);
}

/// `healthcheck_interval`: a pooled connection idle that long runs an empty
/// query before it is handed out; one whose backend does not answer within
/// `healthcheck_timeout` is closed and the client gets a fresh connection
/// instead of hanging on it.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_pooled_connection_fails_its_checkout_health_check() {
    use common::proxy::{config, connect, USERS};
    let server = PgServer::start_new("health-checkout");
    let port = common::free_port();
    let general = "healthcheck_interval = 0\nhealthcheck_timeout = 300\ncheckout_timeout = 5000";
    let toml = config(port, server.port(), general).replace("workers = 2", "workers = 1");
    let _proxy = common::Sleddog::start(&toml, USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    let pid: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // The backend stops answering but keeps its socket open.
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(stop.success());
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        client.query_one("select pg_backend_pid()", &[]),
    )
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status();
    let row = result
        .expect("the checkout hung on a dead connection")
        .unwrap();
    assert_ne!(
        row.get::<_, i32>(0),
        pid,
        "the hung connection was handed out"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

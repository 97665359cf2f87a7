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

/// The backend serving `client` (through sleddog, so a pooled one) stops
/// answering but keeps its socket open: SIGSTOP. Returns its pid.
async fn hang_backend(client: &tokio_postgres::Client) -> i32 {
    let pid: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(signal_backend(pid, "-STOP"), "could not stop backend {pid}");
    pid
}

fn signal_backend(pid: i32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .is_ok_and(|status| status.success())
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
    let proxy = common::Sleddog::start(&toml, USERS);
    let client = connect(port, "sd_scram", "scram_pw").await;
    let pid = hang_backend(&client).await;
    let started = std::time::Instant::now();
    // Without the check the query waits forever; with it, about
    // healthcheck_timeout plus a new connection. The bound is wide because
    // two fresh-clone CI runs out of four saw more than 5 s here (never
    // reproduced outside CI); the log says where the time went.
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        client.query_one("select pg_backend_pid()", &[]),
    )
    .await;
    signal_backend(pid, "-CONT");
    let row = result
        .unwrap_or_else(|_| panic!("the checkout hung on a dead connection\n{}", proxy.log()))
        .unwrap();
    assert_ne!(
        row.get::<_, i32>(0),
        pid,
        "the hung connection was handed out"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}\n{}",
        started.elapsed(),
        proxy.log()
    );
}

/// Two plain servers as one cluster, the second listed as a replica: reads
/// go to it only (`exclude_primary`), so where a read lands shows whether
/// it is in rotation.
fn pair_config(port: u16, general: &str, primary: u16, replica: u16) -> String {
    format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\n\
         read_write_split = \"exclude_primary\"\n{general}\n\n\
         [[databases]]\nname = \"sleddog\"\nhost = \"127.0.0.1\"\nport = {primary}\nrole = \"primary\"\n\n\
         [[databases]]\nname = \"sleddog\"\nhost = \"127.0.0.1\"\nport = {replica}\nrole = \"replica\"\n"
    )
}

async fn server_port(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("select inet_server_port()", &[])
        .await
        .unwrap()
        .get(0)
}

/// `idle_healthcheck_interval`: with no client traffic, the pool's idle
/// connection is checked; when it fails and no new connection can be
/// opened, the server is banned, so reads stay off it for `ban_timeout`
/// even after it is back.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_health_check_bans_a_server_that_went_away() {
    use common::proxy::{connect, USERS};
    let primary = PgServer::start_new("idle-hc-primary");
    let replica = PgServer::start_new("idle-hc-replica");
    let port = common::free_port();
    let general = "workers = 1\nidle_healthcheck_interval = 100\nidle_healthcheck_delay = 0\n\
                   healthcheck_timeout = 500\nconnect_timeout = 500\nban_timeout = 60000";
    let proxy = common::Sleddog::start(
        &pair_config(port, general, primary.port(), replica.port()),
        USERS,
    );
    let client = connect(port, "sd_scram", "scram_pw").await;
    assert_eq!(server_port(&client).await, i32::from(replica.port()));

    replica.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !proxy.log().contains("idle health check failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no idle health check failed:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    replica.start();
    for _ in 0..5 {
        assert_eq!(
            server_port(&client).await,
            i32::from(primary.port()),
            "a read went to the banned server:\n{}",
            proxy.log()
        );
    }
}

/// A pooled connection that alone went bad fails the idle check, but a
/// new connection to the server works: the server stays in rotation.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_check_on_one_dead_connection_does_not_ban_the_server() {
    use common::proxy::{connect, USERS};
    let primary = PgServer::start_new("idle-hc1-primary");
    let replica = PgServer::start_new("idle-hc1-replica");
    let port = common::free_port();
    let general = "workers = 1\nidle_healthcheck_interval = 100\nidle_healthcheck_delay = 0\n\
                   healthcheck_timeout = 300\nban_timeout = 60000";
    let proxy = common::Sleddog::start(
        &pair_config(port, general, primary.port(), replica.port()),
        USERS,
    );
    let client = connect(port, "sd_scram", "scram_pw").await;
    // The pooled backend hangs: its idle check times out.
    let pid = hang_backend(&client).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !proxy.log().contains("idle health check failed") {
        assert!(std::time::Instant::now() < deadline, "{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal_backend(pid, "-CONT");
    assert_eq!(server_port(&client).await, i32::from(replica.port()));
    assert!(!proxy.log().contains("server banned"), "{}", proxy.log());
}

/// A checkout one core finds failing takes the server out of rotation on
/// every core: control hears of it and tells the others, so each does not
/// wait out the same `connect_timeout` to learn it. The "replica" here
/// accepts connections and never answers; it counts how often it was tried.
#[tokio::test(flavor = "multi_thread")]
async fn a_failure_one_core_sees_bans_the_server_on_every_core() {
    use common::proxy::{connect, USERS};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let primary = common::pg();
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let tried = Arc::new(AtomicUsize::new(0));
    let counter = tried.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hole.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let port = common::free_port();
    // No min_pool_size warm-up: only checkouts try the dead server.
    let general = "workers = 2\nmin_pool_size = 0\nconnect_timeout = 300\n\
                   checkout_timeout = 2000\nban_timeout = 60000";
    let proxy = common::Sleddog::start(
        &pair_config(port, general, primary.port(), hole_port),
        USERS,
    );
    // The first read waits out connect_timeout on the dead server, then
    // lands on the primary.
    let first = connect(port, "sd_scram", "scram_pw").await;
    assert_eq!(server_port(&first).await, i32::from(primary.port()));
    assert_eq!(tried.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Twenty new clients: the kernel spreads them over both cores.
    for _ in 0..20 {
        let client = connect(port, "sd_scram", "scram_pw").await;
        let started = std::time::Instant::now();
        assert_eq!(server_port(&client).await, i32::from(primary.port()));
        assert!(started.elapsed() < Duration::from_millis(250));
    }
    assert_eq!(
        tried.load(Ordering::SeqCst),
        1,
        "another core tried the banned server:\n{}",
        proxy.log()
    );
    // However the kernel spread the clients: the ban reached the other
    // core (and the other users' clusters), not only the core that saw it.
    let log = proxy.log();
    let banned = log
        .lines()
        .filter(|line| line.contains("server banned") && line.contains(&hole_port.to_string()))
        .count();
    assert!(banned >= 2, "the ban stayed on one cluster:\n{log}");
}

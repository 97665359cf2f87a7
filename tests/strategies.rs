//! Each `load_balancing_strategy` and `read_write_split` spreads load as
//! documented, counted by Postgres itself: one Postgres server is listed
//! three times under one cluster name, as databases `lb_d1` (the primary),
//! `lb_d2` and `lb_d3` (replicas), and every read asks
//! `SELECT current_database()`, so each answer names the server entry that
//! ran it. Writes insert into a table whose default is `current_database()`.
//!
//! One client connection lives on one core, and balancer state is per core,
//! so sequential reads from one client see one balancer: round robin and
//! weighted round robin are then exact. `least_active_connections` counts
//! connections per core, so its test runs one worker to hold the other
//! client's transaction on the same core.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use common::proxy::{connect, USERS};
use common::{free_port, pg, PgServer, Sleddog};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, SimpleQueryMessage};

const PRIMARY: &str = "lb_d1";
const REPLICA_2: &str = "lb_d2";
const REPLICA_3: &str = "lb_d3";
const WHERE: &str = "select current_database()";
const WRITE: &str = "insert into lb_w default values returning db";

/// The file's Postgres with the three databases, each holding `lb_w`.
fn server() -> &'static PgServer {
    static READY: OnceLock<()> = OnceLock::new();
    let server = pg();
    READY.get_or_init(|| {
        for db in [PRIMARY, REPLICA_2, REPLICA_3] {
            server.psql("postgres", &format!("create database {db} owner sd_scram"));
            server.psql(
                db,
                "create table lb_w (db text default current_database()); \
                 grant all on lb_w to public",
            );
        }
    });
    server
}

/// One `[[databases]]` entry of cluster `sleddog`.
struct Entry {
    port: u16,
    database: &'static str,
    role: &'static str,
    lb_weight: Option<u8>,
}

impl Entry {
    fn new(port: u16, database: &'static str, role: &'static str) -> Entry {
        Entry {
            port,
            database,
            role,
            lb_weight: None,
        }
    }

    fn weighted(self, lb_weight: u8) -> Entry {
        Entry {
            lb_weight: Some(lb_weight),
            ..self
        }
    }
}

/// `lb_d1` primary, `lb_d2` and `lb_d3` replicas, all on the file's server.
fn three_entries() -> Vec<Entry> {
    let port = server().port();
    vec![
        Entry::new(port, PRIMARY, "primary"),
        Entry::new(port, REPLICA_2, "replica"),
        Entry::new(port, REPLICA_3, "replica"),
    ]
}

/// Starts sleddog with `workers` cores, `general` lines, and `entries`.
/// `min_pool_size = 0`: no warm-up connections in flight to skew
/// `least_active_connections`.
fn start(workers: u8, general: &str, entries: &[Entry]) -> (Sleddog, u16) {
    let port = free_port();
    let mut toml = format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\nworkers = {workers}\n\
         connect_timeout = 500\ncheckout_timeout = 1000\nmin_pool_size = 0\n{general}\n"
    );
    for entry in entries {
        toml.push_str(&format!(
            "\n[[databases]]\nname = \"sleddog\"\nhost = \"127.0.0.1\"\nport = {}\n\
             database_name = \"{}\"\nrole = \"{}\"\n",
            entry.port, entry.database, entry.role
        ));
        if let Some(weight) = entry.lb_weight {
            toml.push_str(&format!("lb_weight = {weight}\n"));
        }
    }
    (Sleddog::start(&toml, USERS), port)
}

/// The first column of the first row `sql` returns.
async fn answer(client: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row"))
}

/// Runs `sql` `n` times; the database that answered each, in order.
async fn answers(client: &Client, sql: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(answer(client, sql).await.unwrap());
    }
    out
}

/// How many of `answers` each database gave (every entry listed, even at 0).
fn tally(answers: &[String]) -> BTreeMap<&str, usize> {
    let mut counts: BTreeMap<&str, usize> = [PRIMARY, REPLICA_2, REPLICA_3]
        .into_iter()
        .map(|db| (db, 0))
        .collect();
    for db in answers {
        *counts.entry(db.as_str()).or_default() += 1;
    }
    counts
}

fn counts(answers: &[String]) -> [usize; 3] {
    let tally = tally(answers);
    [tally[PRIMARY], tally[REPLICA_2], tally[REPLICA_3]]
}

/// Writes land on the primary, whatever the strategy and split.
async fn assert_writes_on_primary(client: &Client) {
    let writes = answers(client, WRITE, 10).await;
    assert_eq!(counts(&writes), [10, 0, 0], "writes: {writes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_takes_exact_turns() {
    let (_proxy, port) = start(
        2,
        "load_balancing_strategy = \"round_robin\"",
        &three_entries(),
    );
    let client = connect(port, "sd_scram", "scram_pw").await;
    let reads = answers(&client, WHERE, 90).await;
    assert_eq!(counts(&reads), [30, 30, 30], "{reads:?}");
    // Turns, not blocks: every window of three reads hits all three servers.
    for window in reads.chunks(3) {
        let mut window = window.to_vec();
        window.sort();
        window.dedup();
        assert_eq!(window.len(), 3, "{reads:?}");
    }
    assert_writes_on_primary(&client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn random_gives_every_server_a_fair_share_in_no_fixed_order() {
    // The default strategy: no `load_balancing_strategy` line.
    let (_proxy, port) = start(2, "", &three_entries());
    let client = connect(port, "sd_scram", "scram_pw").await;
    let n = 600;
    let reads = answers(&client, WHERE, n).await;
    // Each count is Binomial(600, 1/3): mean 200, sd 11.5; ±60 is over
    // five sd, so this fails on a broken strategy, not on bad luck.
    for (db, count) in tally(&reads) {
        assert!(count.abs_diff(n / 3) <= 60, "{db}: {count} of {n}");
    }
    // Not a rotation in disguise: some read repeats the one before it
    // (each does with chance 1/3, so 600 reads without one is impossible).
    assert!(reads.windows(2).any(|pair| pair[0] == pair[1]), "{reads:?}");
    assert_writes_on_primary(&client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_round_robin_follows_lb_weight() {
    let port = server().port();
    let entries = [
        Entry::new(port, PRIMARY, "primary").weighted(200),
        Entry::new(port, REPLICA_2, "replica").weighted(100),
        Entry::new(port, REPLICA_3, "replica").weighted(0),
    ];
    let (_proxy, port) = start(
        2,
        "load_balancing_strategy = \"weighted_round_robin\"",
        &entries,
    );
    let client = connect(port, "sd_scram", "scram_pw").await;
    // Smooth weighted round robin is exact over a whole round (300 picks);
    // weight 0 is only a fallback while a weighted server is up.
    let reads = answers(&client, WHERE, 300).await;
    assert_eq!(counts(&reads), [200, 100, 0], "{reads:?}");
    // Interleaved, not in bursts: no three reads in a row on the primary.
    assert!(
        reads.windows(3).all(|w| w.iter().any(|db| db != PRIMARY)),
        "{reads:?}"
    );
    assert_writes_on_primary(&client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn least_active_connections_avoids_servers_busy_in_transactions() {
    // One worker: connection counts are per core, and the holders' and the
    // reader's clients must share one.
    let (_proxy, port) = start(
        1,
        "load_balancing_strategy = \"least_active_connections\"",
        &three_entries(),
    );
    let reader = connect(port, "sd_scram", "scram_pw").await;
    let idle = answers(&reader, WHERE, 30).await;
    assert_eq!(counts(&idle), [10, 10, 10], "all idle: {idle:?}");

    // A read-write transaction holds a connection on the primary...
    let on_primary = connect(port, "sd_scram", "scram_pw").await;
    on_primary.simple_query("begin").await.unwrap();
    assert_eq!(answer(&on_primary, WHERE).await.unwrap(), PRIMARY);
    let reads = answers(&reader, WHERE, 30).await;
    assert_eq!(counts(&reads), [0, 15, 15], "primary busy: {reads:?}");

    // ...and a read-only one holds a replica: reads go to the other replica.
    let on_replica = connect(port, "sd_scram", "scram_pw").await;
    on_replica.simple_query("begin read only").await.unwrap();
    let busy = answer(&on_replica, WHERE).await.unwrap();
    assert_ne!(busy, PRIMARY);
    let free = if busy == REPLICA_2 {
        REPLICA_3
    } else {
        REPLICA_2
    };
    let reads = answers(&reader, WHERE, 20).await;
    assert_eq!(
        tally(&reads)[free],
        20,
        "{busy} and {PRIMARY} busy: {reads:?}"
    );

    // Transactions over: everyone takes turns again.
    on_replica.simple_query("commit").await.unwrap();
    on_primary.simple_query("commit").await.unwrap();
    let reads = answers(&reader, WHERE, 30).await;
    assert_eq!(counts(&reads), [10, 10, 10], "idle again: {reads:?}");
    assert_writes_on_primary(&reader).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exclude_primary_keeps_plain_reads_off_the_primary() {
    let (_proxy, port) = start(
        2,
        "read_write_split = \"exclude_primary\"",
        &three_entries(),
    );
    let client = connect(port, "sd_scram", "scram_pw").await;
    let reads = answers(&client, WHERE, 60).await;
    let [primary, replica_2, replica_3] = counts(&reads);
    assert_eq!(primary, 0, "{reads:?}");
    assert!(replica_2 > 0 && replica_3 > 0, "{reads:?}");
    assert_writes_on_primary(&client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn include_primary_gives_the_primary_a_share_of_reads() {
    // The default split, with the default (random) strategy.
    let (_proxy, port) = start(2, "", &three_entries());
    let client = connect(port, "sd_scram", "scram_pw").await;
    let n = 300;
    let reads = answers(&client, WHERE, n).await;
    // Binomial(300, 1/3): mean 100, sd 8.2.
    for (db, count) in tally(&reads) {
        assert!(count.abs_diff(n / 3) <= 45, "{db}: {count} of {n}");
    }
    assert_writes_on_primary(&client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prefer_primary_sends_plain_reads_to_the_primary() {
    let (_proxy, port) = start(
        2,
        "read_write_split = \"prefer_primary\"\nload_balancing_strategy = \"round_robin\"",
        &three_entries(),
    );
    let client = connect(port, "sd_scram", "scram_pw").await;
    let reads = answers(&client, WHERE, 30).await;
    assert_eq!(counts(&reads), [30, 0, 0], "{reads:?}");
    // A hint still reaches the replicas, in turns.
    let hinted = answers(&client, &format!("/* pgdog_role: replica */ {WHERE}"), 10).await;
    assert_eq!(counts(&hinted), [0, 5, 5], "{hinted:?}");
    assert_writes_on_primary(&client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn include_primary_if_replica_banned_reads_the_primary_once_a_replica_fails() {
    // The replicas go through forwarders the test can shut, as a replica
    // server stopping would.
    let pg_port = server().port();
    let forward_2 = Forwarder::start(pg_port).await;
    let forward_3 = Forwarder::start(pg_port).await;
    let entries = [
        Entry::new(pg_port, PRIMARY, "primary"),
        Entry::new(forward_2.port, REPLICA_2, "replica"),
        Entry::new(forward_3.port, REPLICA_3, "replica"),
    ];
    let (proxy, port) = start(
        2,
        "read_write_split = \"include_primary_if_replica_banned\"\n\
         load_balancing_strategy = \"round_robin\"",
        &entries,
    );
    let client = connect(port, "sd_scram", "scram_pw").await;
    let reads = answers(&client, WHERE, 40).await;
    assert_eq!(counts(&reads), [0, 20, 20], "replicas up: {reads:?}");

    // A read may fail in the switch: at most the one that meets a server
    // connection the stop cut.
    forward_3.stop().await;
    let (reads, errors) = answers_tolerating_errors(&client, 40).await;
    let [primary, replica_2, replica_3] = counts(&reads);
    assert!(errors <= 1, "{errors} errors\n{}", proxy.log());
    assert_eq!(replica_3, 0, "{reads:?}");
    assert!(
        primary >= 15 && replica_2 >= 15,
        "one replica banned, the primary joins: {reads:?}\n{}",
        proxy.log()
    );

    forward_2.stop().await;
    let (reads, errors) = answers_tolerating_errors(&client, 20).await;
    assert!(errors <= 1, "{errors} errors\n{}", proxy.log());
    assert_eq!(counts(&reads)[0], reads.len(), "no replica left: {reads:?}");
    assert_writes_on_primary(&client).await;
}

/// `n` reads; the answers of those that succeeded, and how many failed.
async fn answers_tolerating_errors(client: &Client, n: usize) -> (Vec<String>, usize) {
    let mut reads = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        match answer(client, WHERE).await {
            Ok(db) => reads.push(db),
            Err(_) => errors += 1,
        }
    }
    (reads, errors)
}

/// A TCP forwarder to a Postgres port; `stop` closes its listener and every
/// connection through it, so the server behind it looks gone.
struct Forwarder {
    port: u16,
    accept: JoinHandle<()>,
    relays: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Forwarder {
    async fn start(target: u16) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relays = Arc::new(Mutex::new(Vec::new()));
        let spawned = relays.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                spawned.lock().unwrap().push(relay);
            }
        });
        Forwarder {
            port,
            accept,
            relays,
        }
    }

    async fn stop(self) {
        self.accept.abort();
        let _ = self.accept.await; // the listener is dropped: connects are refused
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }
}

//! LISTEN/NOTIFY under transaction pooling (issue 3, `pub_sub_channel_size`):
//! a client's LISTEN survives its transaction, NOTIFY is delivered at COMMIT
//! and dropped on ROLLBACK, UNLISTEN and UNLISTEN * stop delivery, and LISTEN
//! works over the extended protocol.
//!
//! Every scenario runs twice: `direct` against Postgres itself, which checks
//! the scenario describes what Postgres does, and `through_sleddog` against a
//! sleddog in transaction mode with a pool smaller than the number of clients.
//!
//! "Nothing was delivered" is checked with a sentinel rather than a sleep:
//! the listener also listens on a sentinel channel, and the notifier sends on
//! it last; Postgres delivers notifications in commit order, so the sentinel
//! arriving first proves that nothing earlier was delivered.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::proxy::{config, connect, conninfo, USERS};
use common::{free_port, pg, Sleddog};
use futures_util::StreamExt;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_postgres::{AsyncMessage, Client, Notification};

const USER: &str = "sd_scram";
const PASSWORD: &str = "scram_pw";
/// How long a notification may take to arrive.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One sleddog for the file: pool of 4 per process (2 per core), pub/sub on.
fn proxy() -> &'static Sleddog {
    static PROXY: OnceLock<Sleddog> = OnceLock::new();
    PROXY.get_or_init(|| {
        let general = "default_pool_size = 4\npub_sub_channel_size = 256";
        Sleddog::start(&config(free_port(), pg().port(), general), USERS)
    })
}

/// A client whose notifications are collected.
struct Listener {
    client: Client,
    notifications: UnboundedReceiver<Notification>,
}

impl Listener {
    async fn connect(port: u16) -> Listener {
        let (client, mut connection) =
            tokio_postgres::connect(&conninfo(port, USER, PASSWORD), tokio_postgres::NoTls)
                .await
                .unwrap();
        let (tx, notifications) = unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(n) = message {
                    let _ = tx.send(n);
                }
            }
        });
        Listener {
            client,
            notifications,
        }
    }

    /// The next notification; fails the test after `DELIVERY_TIMEOUT`.
    async fn next(&mut self) -> Notification {
        tokio::time::timeout(DELIVERY_TIMEOUT, self.notifications.recv())
            .await
            .expect("a notification within the timeout")
            .expect("the connection is still open")
    }

    /// The next notification's (channel, payload).
    async fn next_pair(&mut self) -> (String, String) {
        let n = self.next().await;
        (n.channel().to_owned(), n.payload().to_owned())
    }

    async fn run(&self, sql: &str) {
        self.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

fn pair(channel: &str, payload: &str) -> (String, String) {
    (channel.to_owned(), payload.to_owned())
}

/// Channel names unique to a scenario and target: the scenarios of this file
/// (and of both targets) run at once on one Postgres.
fn channel(scenario: &str, port: u16, name: &str) -> String {
    format!("ps_{scenario}_{port}_{name}")
}

async fn run(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// LISTEN on one client, NOTIFY and pg_notify from another (and from the
/// listener itself): every payload arrives, in order, with the process id of
/// the backend that sent it.
async fn listen_notify_between_clients(port: u16) {
    let chan = channel("between", port, "c");
    let mut listener = Listener::connect(port).await;
    let notifier = connect(port, USER, PASSWORD).await;
    listener.run(&format!("LISTEN {chan}")).await;
    run(&notifier, &format!("NOTIFY {chan}, 'one'")).await;
    notifier
        .execute("select pg_notify($1, $2)", &[&chan, &"two"])
        .await
        .unwrap();
    assert_eq!(listener.next_pair().await, pair(&chan, "one"));
    assert_eq!(listener.next_pair().await, pair(&chan, "two"));
    // The notifying backend's pid, read in the same transaction (so on the
    // same server connection under transaction pooling).
    let mut notifier = notifier;
    let tx = notifier.transaction().await.unwrap();
    let pid: i32 = tx
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    tx.batch_execute(&format!("NOTIFY {chan}, 'three'"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let three = listener.next().await;
    assert_eq!(three.payload(), "three");
    assert_eq!(three.process_id(), pid);
    // A session hears its own notifications.
    listener.run(&format!("NOTIFY {chan}, 'self'")).await;
    assert_eq!(listener.next_pair().await, pair(&chan, "self"));
    // The LISTEN outlives many transactions on other server connections.
    for i in 0..10 {
        listener.run("select 1").await;
        run(&notifier, &format!("NOTIFY {chan}, 'n{i}'")).await;
    }
    for i in 0..10 {
        assert_eq!(listener.next_pair().await, pair(&chan, &format!("n{i}")));
    }
}

/// NOTIFY (or pg_notify) inside a transaction is delivered at COMMIT and
/// dropped on ROLLBACK.
async fn notify_in_a_transaction(port: u16) {
    let chan = channel("tx", port, "c");
    let sentinel = channel("tx", port, "sentinel");
    let mut listener = Listener::connect(port).await;
    let mut notifier = connect(port, USER, PASSWORD).await;
    listener
        .run(&format!("LISTEN {chan}; LISTEN {sentinel}"))
        .await;

    let tx = notifier.transaction().await.unwrap();
    tx.batch_execute(&format!("NOTIFY {chan}, 'rolled back'"))
        .await
        .unwrap();
    tx.execute("select pg_notify($1, 'also rolled back')", &[&chan])
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let tx = notifier.transaction().await.unwrap();
    tx.batch_execute(&format!("NOTIFY {chan}, 'committed'"))
        .await
        .unwrap();
    tx.execute("select pg_notify($1, 'committed too')", &[&chan])
        .await
        .unwrap();
    // Not before COMMIT: the sentinel, sent from another client meanwhile,
    // comes first.
    let other = connect(port, USER, PASSWORD).await;
    run(&other, &format!("NOTIFY {sentinel}, 'before commit'")).await;
    assert_eq!(listener.next_pair().await, pair(&sentinel, "before commit"));
    tx.commit().await.unwrap();
    assert_eq!(listener.next_pair().await, pair(&chan, "committed"));
    assert_eq!(listener.next_pair().await, pair(&chan, "committed too"));

    // A failed transaction's notifications are dropped too.
    notifier
        .batch_execute(&format!(
            "BEGIN; NOTIFY {chan}, 'failed'; SELECT 1/0; COMMIT"
        ))
        .await
        .unwrap_err();
    run(&notifier, "ROLLBACK").await;
    run(&notifier, &format!("NOTIFY {sentinel}, 'after failed'")).await;
    assert_eq!(listener.next_pair().await, pair(&sentinel, "after failed"));
}

/// A LISTEN or UNLISTEN inside a transaction takes effect at COMMIT; one
/// that was rolled back changes nothing.
async fn listen_inside_a_transaction(port: u16) {
    let chan = channel("listen_tx", port, "c");
    let sentinel = channel("listen_tx", port, "sentinel");
    let mut listener = Listener::connect(port).await;
    let notifier = connect(port, USER, PASSWORD).await;
    listener.run(&format!("LISTEN {sentinel}")).await;

    listener
        .run(&format!("BEGIN; LISTEN {chan}; ROLLBACK"))
        .await;
    run(&notifier, &format!("NOTIFY {chan}, 'not listening'")).await;
    run(&notifier, &format!("NOTIFY {sentinel}, 's1'")).await;
    assert_eq!(listener.next_pair().await, pair(&sentinel, "s1"));

    // A LISTEN in a failed transaction is rolled back with it.
    let error = listener
        .client
        .batch_execute(&format!("BEGIN; LISTEN {chan}; SELECT 1/0"))
        .await
        .unwrap_err();
    assert_eq!(error.as_db_error().map(|e| e.code().code()), Some("22012"));
    listener.run("ROLLBACK").await;
    run(&notifier, &format!("NOTIFY {chan}, 'still not'")).await;
    run(&notifier, &format!("NOTIFY {sentinel}, 's2'")).await;
    assert_eq!(listener.next_pair().await, pair(&sentinel, "s2"));

    // Committed over several statements of one transaction.
    listener.run("BEGIN").await;
    listener.run(&format!("LISTEN {chan}")).await;
    listener.run("select 1").await;
    listener.run("COMMIT").await;
    run(&notifier, &format!("NOTIFY {chan}, 'listening'")).await;
    assert_eq!(listener.next_pair().await, pair(&chan, "listening"));

    // An UNLISTEN rolled back keeps the LISTEN.
    listener
        .run(&format!("BEGIN; UNLISTEN {chan}; ROLLBACK"))
        .await;
    run(&notifier, &format!("NOTIFY {chan}, 'kept'")).await;
    assert_eq!(listener.next_pair().await, pair(&chan, "kept"));
}

/// UNLISTEN stops one channel, UNLISTEN * all of them; another listener of
/// the same channel is not affected.
async fn unlisten_and_unlisten_all(port: u16) {
    let a = channel("unlisten", port, "a");
    let b = channel("unlisten", port, "b");
    let sentinel = channel("unlisten", port, "sentinel");
    let mut listener = Listener::connect(port).await;
    let mut other = Listener::connect(port).await;
    let notifier = connect(port, USER, PASSWORD).await;
    listener.run(&format!("LISTEN {a}; LISTEN {b}")).await;
    other.run(&format!("LISTEN {a}; LISTEN {sentinel}")).await;

    listener.run(&format!("UNLISTEN {a}")).await;
    run(&notifier, &format!("NOTIFY {a}, 'x'; NOTIFY {b}, 'y'")).await;
    assert_eq!(listener.next_pair().await, pair(&b, "y"));
    assert_eq!(other.next_pair().await, pair(&a, "x"));

    listener.run("UNLISTEN *").await;
    listener.run(&format!("LISTEN {sentinel}")).await;
    run(&notifier, &format!("NOTIFY {a}, 'gone'")).await;
    run(&notifier, &format!("NOTIFY {b}, 'gone too'")).await;
    run(&notifier, &format!("NOTIFY {sentinel}, 'end'")).await;
    assert_eq!(listener.next_pair().await, pair(&sentinel, "end"));
    assert_eq!(other.next_pair().await, pair(&a, "gone"));
    assert_eq!(other.next_pair().await, pair(&sentinel, "end"));

    // A listener that disconnects leaves the others listening.
    drop(listener);
    run(&notifier, &format!("NOTIFY {a}, 'after'")).await;
    assert_eq!(other.next_pair().await, pair(&a, "after"));
}

/// LISTEN and UNLISTEN sent over the extended protocol (Parse/Bind/Execute).
async fn listen_over_the_extended_protocol(port: u16) {
    let chan = channel("extended", port, "c");
    let sentinel = channel("extended", port, "sentinel");
    let mut listener = Listener::connect(port).await;
    let notifier = connect(port, USER, PASSWORD).await;
    listener
        .client
        .execute(&format!("LISTEN {chan}"), &[])
        .await
        .unwrap();
    listener
        .client
        .execute(&format!("LISTEN \"{sentinel}\""), &[])
        .await
        .unwrap();
    run(&notifier, &format!("NOTIFY {chan}, 'extended'")).await;
    assert_eq!(listener.next_pair().await, pair(&chan, "extended"));
    listener
        .client
        .execute(&format!("UNLISTEN {chan}"), &[])
        .await
        .unwrap();
    run(&notifier, &format!("NOTIFY {chan}, 'gone'")).await;
    run(&notifier, &format!("NOTIFY {sentinel}, 'end'")).await;
    assert_eq!(listener.next_pair().await, pair(&sentinel, "end"));
}

/// Quoted channel names keep their case; unquoted ones fold to lower case.
async fn channel_names_fold_like_identifiers(port: u16) {
    let lower = channel("names", port, "mixed");
    let mut listener = Listener::connect(port).await;
    let notifier = connect(port, USER, PASSWORD).await;
    let upper = lower.to_uppercase();
    listener
        .run(&format!("LISTEN {upper}; LISTEN \"{upper}\""))
        .await;
    notifier
        .execute("select pg_notify($1, 'lower')", &[&lower])
        .await
        .unwrap();
    notifier
        .execute("select pg_notify($1, 'upper')", &[&upper])
        .await
        .unwrap();
    assert_eq!(listener.next_pair().await, pair(&lower, "lower"));
    assert_eq!(listener.next_pair().await, pair(&upper, "upper"));
}

macro_rules! scenario {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn direct() {
                super::$name(super::pg().port()).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn through_sleddog() {
                super::$name(super::proxy().port).await;
            }
        }
    };
}

scenario!(listen_notify_between_clients);
scenario!(notify_in_a_transaction);
scenario!(listen_inside_a_transaction);
scenario!(unlisten_and_unlisten_all);
scenario!(listen_over_the_extended_protocol);
scenario!(channel_names_fold_like_identifiers);

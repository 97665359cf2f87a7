//! Session settings in transaction mode: each client keeps its own SET values
//! (and startup options) across transactions, whichever server connection it
//! gets, and never sees another client's. Every sequence runs against sleddog
//! and straight against Postgres; what the client sees must match.

mod common;

use std::sync::OnceLock;

use common::proxy::{config, USERS};
use common::{free_port, pg, Sleddog};
use futures_util::future::join_all;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// A small pool (3 server connections per core) that every client shares:
/// idle connections are reused newest first, so the client and the noise
/// client of a test keep trading the same connection. Big enough that a test
/// holding one open transaction never starves its own noise client.
fn proxy() -> &'static Sleddog {
    static PROXY: OnceLock<Sleddog> = OnceLock::new();
    PROXY.get_or_init(|| {
        let port = free_port();
        Sleddog::start(&config(port, pg().port(), "default_pool_size = 6"), USERS)
    })
}

async fn connect_with(port: u16, options: Option<&str>) -> Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("sd_scram")
        .password("scram_pw")
        .dbname("sleddog")
        .application_name("state-test");
    if let Some(options) = options {
        config.options(options);
    }
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn show(client: &Client, setting: &str) -> String {
    let messages = client
        .simple_query(&format!("select current_setting('{setting}', true)"))
        .await
        .unwrap();
    messages
        .iter()
        .find_map(|m| match m {
            // A custom setting reset after it was set reads '' in the backend
            // that had it and NULL in one that never did: which backends
            // ever defined the placeholder is per-backend state no pooler
            // carries between connections, so the two read alike here.
            SimpleQueryMessage::Row(row) => Some(match row.get(0) {
                Some("") | None if setting.contains('.') => "<unset>".to_owned(),
                value => value.unwrap_or("<null>").to_owned(),
            }),
            _ => None,
        })
        .unwrap()
}

/// Runs `steps` (SQL, then the settings to read after it) on one client to
/// sleddog and one to Postgres, with other clients busy on sleddog's pool in
/// between, and returns both transcripts.
async fn both(steps: &[(&str, &[&str])], options: Option<&str>) -> (Vec<String>, Vec<String>) {
    let mut transcripts = Vec::new();
    for port in [proxy().port, pg().port()] {
        let client = connect_with(port, options).await;
        let noise = connect_with(proxy().port, None).await;
        let mut seen = Vec::new();
        for (sql, settings) in steps {
            let outcome = client.batch_execute(sql).await;
            if let Err(error) = &outcome {
                eprintln!("{port}: {sql}: {error:?}");
            }
            seen.push(format!(
                "{sql} -> {}",
                if outcome.is_ok() { "ok" } else { "error" }
            ));
            // Another client takes a turn on the shared server connections.
            noise
                .batch_execute("select 1; set work_mem = '7MB'")
                .await
                .unwrap();
            for setting in *settings {
                seen.push(format!("  {setting} = {}", show(&client, setting).await));
            }
        }
        transcripts.push(seen);
    }
    let direct = transcripts.pop().unwrap();
    (transcripts.pop().unwrap(), direct)
}

async fn assert_same(steps: &[(&str, &[&str])], options: Option<&str>) {
    let (through_proxy, direct) = both(steps, options).await;
    assert_eq!(through_proxy, direct, "sleddog vs Postgres");
}

#[tokio::test(flavor = "multi_thread")]
async fn set_values_follow_their_client_across_transactions() {
    let settings: &[&str] = &[
        "statement_timeout",
        "search_path",
        "work_mem",
        "application_name",
    ];
    assert_same(
        &[
            ("select 1", settings),
            ("set statement_timeout = '11s'", settings),
            ("set search_path to pg_catalog, public", settings),
            ("select 2", settings),
            ("set application_name = 'mine'", settings),
            ("reset statement_timeout", settings),
            ("set work_mem to default", settings),
            ("reset all", settings),
        ],
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_keeps_and_rollback_drops_settings() {
    let settings: &[&str] = &["statement_timeout", "lock_timeout"];
    assert_same(
        &[
            ("begin; set statement_timeout = '3s'; commit", settings),
            ("begin; set statement_timeout = '4s'; rollback", settings),
            ("begin; set local lock_timeout = '2s'; commit", settings),
            ("begin; set lock_timeout = '5s'", &[]),
            ("select 1/0", &[]),
            ("commit", settings),
            ("select set_config('lock_timeout', '6s', false)", settings),
            ("select set_config('lock_timeout', '7s', true)", settings),
            ("set statement_timeout = '8s'; select 1/0", settings),
            (
                "begin; savepoint a; set statement_timeout = '9s'; rollback to a; commit",
                settings,
            ),
        ],
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_settings_and_discard_all() {
    let settings: &[&str] = &["app.user_id", "statement_timeout"];
    assert_same(
        &[
            ("set app.user_id = '42'", settings),
            ("select set_config('app.user_id', '43', false)", settings),
            ("set statement_timeout = '12s'", settings),
            ("discard all", settings),
        ],
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_options_hold_in_every_transaction() {
    let settings: &[&str] = &["statement_timeout", "application_name", "work_mem"];
    assert_same(
        &[
            ("select 1", settings),
            ("set statement_timeout = '1s'", settings),
            ("reset statement_timeout", settings),
            ("reset all", settings),
        ],
        Some("-c statement_timeout=5s -c work_mem=3MB"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_clients_never_see_each_others_settings() {
    let port = proxy().port;
    let clients = (0..12).map(|n| async move {
        let client = connect_with(port, None).await;
        let mine = format!("{}ms", 1001 + n);
        client
            .batch_execute(&format!("set statement_timeout = '{mine}'"))
            .await
            .unwrap();
        for _ in 0..30 {
            let seen = show(&client, "statement_timeout").await;
            assert_eq!(seen, mine, "client {n}");
        }
    });
    join_all(clients).await;
}

/// Reported settings from the startup packet reach the client as Postgres
/// shows them: sleddog logs clients in without a server, so it sends them
/// once a server has applied them, before the first reply.
#[test]
fn startup_settings_are_reported_as_postgres_shows_them() {
    use common::proxy::{query, Raw};
    let extra = [("DateStyle", "german"), ("TimeZone", "utc")];
    let direct = |port: u16| {
        let (mut raw, reported) = Raw::login_with(port, "sd_trust", None, &extra);
        raw.send(&query("select 1"));
        let later: Vec<(String, String)> = raw
            .until_ready()
            .iter()
            .filter(|m| m.tag == b'S')
            .map(|m| m.parameter_status())
            .collect();
        // What the client believes once its first query is answered.
        let mut seen = reported;
        for (name, value) in later {
            match seen.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 = value,
                None => seen.push((name, value)),
            }
        }
        let keep = ["DateStyle", "TimeZone"];
        let mut seen: Vec<_> = seen
            .into_iter()
            .filter(|(n, _)| keep.contains(&n.as_str()))
            .collect();
        seen.sort();
        seen
    };
    let port = free_port();
    let trusting = Sleddog::start(&config(port, pg().port(), "auth_type = \"trust\""), USERS);
    let through_proxy = direct(trusting.port);
    let from_postgres = direct(pg().port());
    assert_eq!(through_proxy, from_postgres);
    assert_eq!(
        from_postgres,
        [
            ("DateStyle".to_owned(), "German, DMY".to_owned()),
            ("TimeZone".to_owned(), "UTC".to_owned())
        ]
    );
}

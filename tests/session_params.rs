//! The session-state capture and sync SQL of `session::params`, run directly
//! on real PostgreSQL (no sleddog in between): sequences of SET, RESET,
//! set_config, SET LOCAL, savepoints and rollbacks, then the capture query,
//! compared with what Postgres must hold; and seeded random sync round trips
//! (replay with SLEDDOG_SEED=<seed>).

mod common;

use std::sync::OnceLock;

use common::{pg, TEST_DB};
use sleddog::session::params::{
    capture_sql, custom_guc_names, scan_statements, startup_params, sync_sql, Params, CAPTURE_SQL,
};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Roles the tests switch to: `sp_reader` is granted to the test roles.
fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        pg().psql(
            TEST_DB,
            "CREATE ROLE sp_reader; GRANT sp_reader TO sd_scram, sd_trust;",
        );
    });
}

async fn connect_with(conninfo: &str) -> Client {
    setup();
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conninfo}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A non-superuser over TCP.
async fn user_conn() -> Client {
    connect_with(&format!(
        "host=127.0.0.1 port={} user=sd_scram password=scram_pw dbname={TEST_DB}",
        pg().port()
    ))
    .await
}

/// The superuser over the unix socket.
async fn superuser_conn() -> Client {
    connect_with(&pg().superuser_conninfo(TEST_DB)).await
}

async fn rows(client: &Client, sql: &str) -> Vec<(String, String)> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((
                row.get(0).expect("name").to_owned(),
                row.get(1).expect("value").to_owned(),
            )),
            _ => None,
        })
        .collect()
}

async fn capture(client: &Client, custom: &[String]) -> Params {
    let rows = rows(client, &capture_sql(custom.iter().map(String::as_str))).await;
    Params::from_capture_rows(rows.iter().map(|(n, v)| (n.as_str(), v.as_str())))
}

async fn one(client: &Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.unwrap();
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("one row")
}

fn params(pairs: &[(&str, &str)]) -> Params {
    Params::from_capture_rows(pairs.iter().copied())
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_connection_and_startup_values_capture_empty() {
    // tokio-postgres sends client_encoding, DateStyle, TimeZone... in its
    // startup packet: source 'client', the connection's baseline.
    let client = connect_with(&format!(
        "host=127.0.0.1 port={} user=sd_scram password=scram_pw dbname={TEST_DB} \
         application_name=startup options='-c work_mem=3MB -c app.x=1'",
        pg().port()
    ))
    .await;
    assert_eq!(one(&client, "SHOW work_mem").await, "3MB");
    assert_eq!(
        one(
            &client,
            "SELECT source FROM pg_settings WHERE name = 'work_mem'"
        )
        .await,
        "client"
    );
    // The static capture query works on its own too.
    assert!(rows(&client, CAPTURE_SQL).await.is_empty());
    // A startup placeholder has a value but was not set in the session; the
    // capture reports what is there when asked by name.
    assert_eq!(
        capture(&client, &["app.x".into()]).await,
        params(&[("app.x", "1")])
    );
    assert!(capture(&client, &[]).await.is_empty());
}

/// Each step runs on Postgres; then the capture must equal `expect`, and if
/// the state changed the scanner must have flagged the SQL.
#[tokio::test(flavor = "multi_thread")]
async fn capture_matches_postgres_after_each_step() {
    let client = user_conn().await;
    let steps: &[(&str, &[(&str, &str)])] = &[
        ("SELECT 1", &[]),
        ("SET work_mem = '8MB'", &[("work_mem", "8192")]),
        (
            "BEGIN; SET LOCAL statement_timeout = 5000; COMMIT",
            &[("work_mem", "8192")],
        ),
        (
            "BEGIN; SET search_path = a, \"B c\"; ROLLBACK",
            &[("work_mem", "8192")],
        ),
        (
            "BEGIN; SET search_path = a, \"B c\"; SAVEPOINT s; SET work_mem = '1MB'; \
             ROLLBACK TO s; COMMIT",
            &[("search_path", "a, \"B c\""), ("work_mem", "8192")],
        ),
        (
            "SELECT set_config('App.User_Id', 'it''s 42', false)",
            &[
                ("app.user_id", "it's 42"),
                ("search_path", "a, \"B c\""),
                ("work_mem", "8192"),
            ],
        ),
        (
            "BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; SELECT set_config('x.y', '1', true); COMMIT",
            &[
                ("app.user_id", "it's 42"),
                ("search_path", "a, \"B c\""),
                ("work_mem", "8192"),
            ],
        ),
        (
            "SET TIME ZONE 'Europe/Paris'; SET SESSION CHARACTERISTICS AS TRANSACTION \
             ISOLATION LEVEL REPEATABLE READ; RESET search_path",
            &[
                ("app.user_id", "it's 42"),
                ("default_transaction_isolation", "repeatable read"),
                ("timezone", "Europe/Paris"),
                ("work_mem", "8192"),
            ],
        ),
        (
            "SET ROLE sp_reader",
            &[
                ("app.user_id", "it's 42"),
                ("default_transaction_isolation", "repeatable read"),
                ("role", "sp_reader"),
                ("timezone", "Europe/Paris"),
                ("work_mem", "8192"),
            ],
        ),
        (
            // RESET ALL leaves role alone; a reset placeholder reads '' and
            // counts as unset.
            "RESET ALL",
            &[("role", "sp_reader")],
        ),
        ("SET work_mem TO DEFAULT; RESET ROLE", &[]),
        ("SET myapp.tenant = 't1'; SET work_mem = 1024", &[
            ("myapp.tenant", "t1"),
            ("work_mem", "1024"),
        ]),
        ("DISCARD ALL", &[]),
    ];
    let mut custom: Vec<String> = Vec::new();
    let mut before = Params::default();
    for (sql, expect) in steps {
        client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let effects = scan_statements(sql.as_bytes());
        if effects.custom_gucs {
            custom_guc_names(sql.as_bytes(), &mut custom);
        }
        let after = capture(&client, &custom).await;
        assert_eq!(after, params(expect), "after {sql}");
        if after != before {
            assert!(effects.gucs, "scanner missed a GUC change in {sql}");
        }
        before = after;
    }
    // A failed transaction changes nothing.
    client.simple_query("SET work_mem = '2MB'").await.unwrap();
    let error = client
        .simple_query("BEGIN; SET work_mem = '5MB'; SELECT 1/0")
        .await;
    assert!(error.is_err());
    client.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(
        capture(&client, &custom).await,
        params(&[("work_mem", "2048")])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn session_authorization_is_captured_and_replayed() {
    let source = superuser_conn().await;
    assert!(capture(&source, &[]).await.is_empty());
    source
        .simple_query("SET SESSION AUTHORIZATION sd_trust; SET ROLE sp_reader")
        .await
        .unwrap();
    let state = capture(&source, &[]).await;
    assert_eq!(
        state,
        params(&[("role", "sp_reader"), ("session_authorization", "sd_trust")])
    );

    let target = superuser_conn().await;
    let sql = sync_sql(&Params::default(), &state).unwrap();
    target.simple_query(&sql).await.unwrap();
    assert_eq!(capture(&target, &[]).await, state);
    assert_eq!(
        one(&target, "SELECT session_user || ' ' || current_user").await,
        "sd_trust sp_reader"
    );
    let sql = sync_sql(&state, &Params::default()).unwrap();
    target.simple_query(&sql).await.unwrap();
    assert!(capture(&target, &[]).await.is_empty());
    assert_eq!(
        one(&target, "SELECT session_user || ' ' || current_user").await,
        "postgres postgres"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_params_replay_through_sync() {
    let packet: Vec<(String, String)> = [
        ("user", "sd_scram"),
        ("database", TEST_DB),
        ("application_name", "my app"),
        (
            "options",
            "-c search_path=a,\\ b --statement-timeout=7s -c app.t=9",
        ),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    let wanted = startup_params(&packet);
    let client = user_conn().await;
    client
        .simple_query(&sync_sql(&Params::default(), &wanted).unwrap())
        .await
        .unwrap();
    let custom: Vec<String> = wanted.custom_names().map(str::to_owned).collect();
    // Captured in pg_settings' own units: statement_timeout in ms.
    assert_eq!(
        capture(&client, &custom).await,
        params(&[
            ("app.t", "9"),
            ("application_name", "my app"),
            ("search_path", "a, b"),
            ("statement_timeout", "7000"),
        ])
    );
}

/// Values as pg_settings reports them, so a capture can equal the state.
const CANDIDATES: &[(&str, &[&str])] = &[
    ("work_mem", &["8192", "1024"]),
    (
        "search_path",
        &["a, \"B c\"", "\"$user\", public", "\"x'y\""],
    ),
    ("timezone", &["Europe/Paris", "UTC"]),
    ("application_name", &["it's \\ odd", "app"]),
    ("datestyle", &["German, DMY", "ISO, YMD"]),
    ("statement_timeout", &["5000", "0"]),
    ("app.user_id", &["42", "x'y"]),
    ("my.tenant", &["t1"]),
    ("role", &["sp_reader"]),
    ("client_min_messages", &["warning"]),
    ("extra_float_digits", &["3"]),
];

/// xorshift64*, seeded: enough to pick random-ish states reproducibly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn state(&mut self) -> Params {
        if self.below(5) == 0 {
            return Params::default();
        }
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (name, values) in CANDIDATES {
            if self.below(2) == 0 {
                pairs.push((name, values[self.below(values.len())]));
            }
        }
        params(&pairs)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_sync_round_trips() {
    let seed = std::env::var("SLEDDOG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64
                | 1
        });
    let mut rng = Rng(seed);
    let custom: Vec<String> = CANDIDATES
        .iter()
        .map(|(name, _)| name.to_string())
        .filter(|n| n.contains('.'))
        .collect();
    let client = user_conn().await;
    let mut current = Params::default();
    for round in 0..40 {
        let next = rng.state();
        if let Some(sql) = sync_sql(&current, &next) {
            client
                .simple_query(&sql)
                .await
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: {sql}: {e}"));
        }
        let captured = capture(&client, &custom).await;
        assert_eq!(
            captured, next,
            "seed {seed} round {round}: sync {current:?} -> {next:?} gave {captured:?}"
        );
        current = next;
    }
}

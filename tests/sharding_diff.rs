//! Differential tests for sharding: every query of a corpus runs on one
//! unsharded Postgres database (`diff_single`) and through sleddog on the
//! same rows split over 2 shards (`diff2`) and 3 shards (`diff3`); the
//! results must be the same, protocol by protocol (simple/text, extended
//! with an unnamed statement/binary, named prepared statement executed
//! twice/binary), including column names, column type oids and numeric
//! scale. Floats compare with a relative tolerance of 1e-9.
//!
//! Written against sleddog's external interface only (pgdog.toml and SQL).
//! Rows are placed on the shard Postgres's own hash partitioning chooses
//! (see `sharding::data::placement`): users by `id`, payments by `user_id`;
//! `countries` is omnisharded (a copy on every shard).
//!
//! Also here: unsupported cross-shard forms answer SQLSTATE 0A000 and run
//! with a `/* pgdog_shard: N */` comment; `cross_shard_disabled`; INSERT
//! placement; transactions spanning shards (on separate `diffw3_*`
//! databases, so writes never disturb the corpus runs).
//!
//! Run: `cargo test --test sharding_diff` (one failure report per test;
//! each lists up to 30 differences and the total).

mod common;
mod sharding;

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use common::{free_port, pg, Sleddog};
use sharding::corpus::{corpus, Case};
use sharding::data::{self, placement, Dataset};
use sharding::value::{compare, from_binary, from_text, Outcome, RawValue};
use tokio_postgres::{Client, SimpleQueryMessage};

const USER: &str = "sd_scram";
const PASSWORD: &str = "scram_pw";
/// No statement of this suite needs more; a longer wait is a hang.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// After this many timeouts through sleddog a corpus run stops.
const MAX_HANGS: usize = 3;
/// Failures printed in full; the rest are counted.
const PRINT_CAP: usize = 30;

const SINGLE: &str = "diff_single";
/// The same rows as `diff_single`, inserted in reverse order.
const REVERSED: &str = "diff_reversed";
const SHARDS2: &[&str] = &["diff2_s0", "diff2_s1"];
const SHARDS3: &[&str] = &["diff3_s0", "diff3_s1", "diff3_s2"];
/// The write tests' 3-shard cluster `diffw3` (countries only, at first).
const SHARDSW: &[&str] = &["diffw3_s0", "diffw3_s1", "diffw3_s2"];

/// What the setup learned: the shard of each key in both layouts.
struct Setup {
    place2: HashMap<Option<i64>, usize>,
    place3: HashMap<Option<i64>, usize>,
    data: Dataset,
}

/// Creates and loads every diff database once per test binary.
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let server = pg();
        let all: Vec<&str> = [SINGLE, REVERSED]
            .iter()
            .chain(SHARDS2)
            .chain(SHARDS3)
            .chain(SHARDSW)
            .copied()
            .collect();
        for db in &all {
            server.psql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {db};\nCREATE DATABASE {db} OWNER {USER};"),
            );
            server.psql(db, data::SCHEMA);
        }
        let mut keys: Vec<Option<i64>> = data::user_ids().into_iter().map(Some).collect();
        keys.extend(data::ORPHAN_USER_IDS.iter().map(|&k| Some(k)));
        keys.push(None);
        let place2 = placement(server, SINGLE, 2, &keys);
        let place3 = placement(server, SINGLE, 3, &keys);
        let data = data::generate(&place2, &place3);
        server.psql(SINGLE, &data::load_sql(&data, |_| true));
        let reversed = Dataset {
            users: data.users.iter().rev().cloned().collect(),
            payments: data.payments.iter().rev().cloned().collect(),
        };
        server.psql(REVERSED, &data::load_sql(&reversed, |_| true));
        for (shard, db) in SHARDS2.iter().enumerate() {
            server.psql(db, &data::load_sql(&data, |k| place2[&k] == shard));
        }
        for (shard, db) in SHARDS3.iter().enumerate() {
            server.psql(db, &data::load_sql(&data, |k| place3[&k] == shard));
        }
        for db in SHARDSW {
            server.psql(db, &data::load_sql(&data, |_| false));
        }
        Setup {
            place2,
            place3,
            data,
        }
    })
}

/// pgdog.toml lines for one sharded cluster over `shards` (databases on
/// the shared server).
fn cluster_toml(name: &str, shards: &[&str]) -> String {
    let pg_port = pg().port();
    let mut toml = String::new();
    for (i, db) in shards.iter().enumerate() {
        toml.push_str(&format!(
            "[[databases]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {pg_port}\n\
             database_name = \"{db}\"\nshard = {i}\n\n"
        ));
    }
    toml.push_str(&format!(
        "[[sharded_tables]]\ndatabase = \"{name}\"\nname = \"users\"\ncolumn = \"id\"\n\
         data_type = \"bigint\"\n\n\
         [[sharded_tables]]\ndatabase = \"{name}\"\nname = \"payments\"\ncolumn = \"user_id\"\n\
         data_type = \"bigint\"\n\n\
         [[omnisharded_tables]]\ndatabase = \"{name}\"\ntables = [\"countries\"]\n\n"
    ));
    toml
}

fn users_toml(clusters: &[&str]) -> String {
    clusters
        .iter()
        .map(|c| {
            format!(
                "[[users]]\nname = \"{USER}\"\ndatabase = \"{c}\"\npassword = \"{PASSWORD}\"\n\n"
            )
        })
        .collect()
}

fn start_proxy(general: &str, clusters: &[(&str, &[&str])]) -> Sleddog {
    setup();
    let port = free_port();
    let mut toml = format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\nworkers = 2\n\
         pooler_mode = \"transaction\"\n{general}\n\n"
    );
    for (name, shards) in clusters {
        toml.push_str(&cluster_toml(name, shards));
    }
    let names: Vec<&str> = clusters.iter().map(|c| c.0).collect();
    Sleddog::start(&toml, &users_toml(&names))
}

/// The sleddog serving `diff2`, `diff3` and `diffw3`.
fn proxy() -> &'static Sleddog {
    static PROXY: OnceLock<Sleddog> = OnceLock::new();
    PROXY.get_or_init(|| {
        start_proxy(
            "",
            &[("diff2", SHARDS2), ("diff3", SHARDS3), ("diffw3", SHARDSW)],
        )
    })
}

/// A sleddog with `cross_shard_disabled = true` serving `diff2`.
fn strict_proxy() -> &'static Sleddog {
    static PROXY: OnceLock<Sleddog> = OnceLock::new();
    PROXY.get_or_init(|| start_proxy("cross_shard_disabled = true", &[("diff2", SHARDS2)]))
}

async fn try_connect(port: u16, db: &str) -> Result<Client, String> {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname={db} connect_timeout=10"
    );
    let connecting = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(QUERY_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("connect to {db} on {port}: timed out"))?
        .map_err(|e| format!("connect to {db} on {port}: {}", describe(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Straight to Postgres.
async fn postgres(db: &str) -> Client {
    try_connect(pg().port(), db)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Through the sleddog serving `cluster`.
async fn via(sleddog: &Sleddog, cluster: &str) -> Client {
    connect_to(sleddog.port, cluster, Some(sleddog)).await
}

/// Connects or panics with the error and the tail of sleddog's log.
async fn connect_to(port: u16, db: &str, sleddog: Option<&Sleddog>) -> Client {
    match try_connect(port, db).await {
        Ok(client) => client,
        Err(e) => {
            let log = sleddog
                .map(|s| common::strip_ansi(&s.log()))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!("{e}\n--- sleddog log (last lines) ---\n{}", tail.join("\n"))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Simple query protocol, text results.
    Simple,
    /// Extended protocol, unnamed statement (Parse/Bind/Describe/Execute
    /// in one round trip), binary results.
    Extended,
    /// Named prepared statement, executed twice, binary results.
    Prepared,
}

const MODES: [Mode; 3] = [Mode::Simple, Mode::Extended, Mode::Prepared];

/// Why a run produced no outcome.
enum RunError {
    Timeout,
    Db(String),
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("ERROR {} {}", db.code().code(), db.message()),
        None => format!("{e}"),
    }
}

async fn with_timeout<T>(
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, RunError> {
    match tokio::time::timeout(QUERY_TIMEOUT, f).await {
        Err(_) => Err(RunError::Timeout),
        Ok(Err(e)) => Err(RunError::Db(describe(&e))),
        Ok(Ok(v)) => Ok(v),
    }
}

fn binary_outcome(columns: Vec<(String, Option<u32>)>, rows: &[tokio_postgres::Row]) -> Outcome {
    let rows = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    let raw: RawValue = row.get(i);
                    from_binary(raw.0.as_deref(), row.columns()[i].type_().oid())
                })
                .collect()
        })
        .collect();
    Outcome {
        columns,
        rows,
        tag: None,
    }
}

/// Runs `case` in `mode`; `types` are the result column types Postgres
/// reported for it (to read floats in text results).
async fn run(
    client: &Client,
    case: &Case,
    mode: Mode,
    types: &[u32],
) -> Result<Vec<Outcome>, RunError> {
    match mode {
        Mode::Simple => {
            let messages = with_timeout(client.simple_query(&case.simple_sql())).await?;
            let mut out = Outcome::default();
            for message in messages {
                match message {
                    SimpleQueryMessage::RowDescription(columns) => {
                        out.columns = columns
                            .iter()
                            .map(|c| (c.name().to_string(), None))
                            .collect();
                    }
                    SimpleQueryMessage::Row(row) => {
                        out.rows.push(
                            (0..row.len())
                                .map(|i| from_text(row.get(i), types.get(i).copied()))
                                .collect(),
                        );
                    }
                    SimpleQueryMessage::CommandComplete(n) => out.tag = Some(n),
                    _ => {}
                }
            }
            Ok(vec![out])
        }
        Mode::Extended => {
            let params: Vec<_> = case
                .params
                .iter()
                .map(|p| (p.as_sql(), p.sql_type()))
                .collect();
            let rows = with_timeout(client.query_typed(&case.sql, &params)).await?;
            let columns = rows
                .first()
                .map(|r| {
                    r.columns()
                        .iter()
                        .map(|c| (c.name().to_string(), Some(c.type_().oid())))
                        .collect()
                })
                .unwrap_or_default();
            Ok(vec![binary_outcome(columns, &rows)])
        }
        Mode::Prepared => {
            let stmt = with_timeout(client.prepare(&case.sql)).await?;
            let columns: Vec<_> = stmt
                .columns()
                .iter()
                .map(|c| (c.name().to_string(), Some(c.type_().oid())))
                .collect();
            let params: Vec<_> = case.params.iter().map(|p| p.as_sql()).collect();
            let mut outcomes = Vec::new();
            for _ in 0..2 {
                let rows = with_timeout(client.query(&stmt, &params)).await?;
                outcomes.push(binary_outcome(columns.clone(), &rows));
            }
            Ok(outcomes)
        }
    }
}

/// Result column types of `case` as Postgres describes them.
async fn column_types(client: &Client, sql: &str) -> Result<Vec<u32>, RunError> {
    let stmt = with_timeout(client.prepare(sql)).await?;
    Ok(stmt.columns().iter().map(|c| c.type_().oid()).collect())
}

/// Panics with the collected failures (up to [`PRINT_CAP`] in full).
fn report(what: &str, runs: usize, failures: &[String]) {
    if failures.is_empty() {
        return;
    }
    let shown: Vec<&str> = failures
        .iter()
        .take(PRINT_CAP)
        .map(String::as_str)
        .collect();
    panic!(
        "{what}: {} failures in {runs} runs{}\n\n{}",
        failures.len(),
        if failures.len() > PRINT_CAP {
            format!(" (first {PRINT_CAP} shown)")
        } else {
            String::new()
        },
        shown.join("\n\n")
    );
}

/// Runs the whole corpus on `diff_single` and through sleddog on
/// `cluster`, comparing every protocol's results.
async fn diff_cluster(cluster: &str, shards: usize) {
    setup();
    diff_against(proxy().port, cluster, shards, Some(proxy())).await;
}

/// The corpus on `diff_single` and on database `cluster` at `port`
/// (sleddog, whose log helps when it refuses the connection).
async fn diff_against(port: u16, cluster: &str, shards: usize, sleddog: Option<&Sleddog>) {
    let mut cases = corpus();
    if let Ok(only) = std::env::var("DIFF_ONLY") {
        cases.retain(|c| c.sql.contains(&only));
    }
    let direct = postgres(SINGLE).await;
    let mut proxied = connect_to(port, cluster, sleddog).await;
    let mut failures = Vec::new();
    let mut hangs = 0;
    let mut runs = 0;
    let label = |mode: Mode, case: &Case| {
        format!(
            "[{cluster}, {shards} shards, {mode:?}{}] {}",
            if case.direct { ", direct-to-shard" } else { "" },
            if mode == Mode::Simple {
                case.simple_sql()
            } else {
                format!("{}  params {:?}", case.sql, case.params)
            }
        )
    };
    'cases: for (index, case) in cases.iter().enumerate() {
        let types = match column_types(&direct, &case.sql).await {
            Ok(t) => t,
            Err(RunError::Db(e)) => {
                failures.push(format!("[corpus bug] Postgres rejects {}: {e}", case.sql));
                continue;
            }
            Err(RunError::Timeout) => {
                failures.push(format!("[corpus bug] Postgres timed out on {}", case.sql));
                continue;
            }
        };
        for mode in MODES {
            runs += 1;
            let want = match run(&direct, case, mode, &types).await {
                Ok(w) => w,
                Err(RunError::Db(e)) => {
                    failures.push(format!("[corpus bug] {}: Postgres: {e}", label(mode, case)));
                    continue;
                }
                Err(RunError::Timeout) => {
                    failures.push(format!(
                        "[corpus bug] {}: Postgres timed out",
                        label(mode, case)
                    ));
                    continue;
                }
            };
            let mut hung = false;
            match run(&proxied, case, mode, &types).await {
                Ok(got) => {
                    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                        if let Some(diff) = compare(w, g, case.ordered) {
                            let nth = if got.len() > 1 {
                                format!(" (execution {})", i + 1)
                            } else {
                                String::new()
                            };
                            failures.push(format!("{}{nth}\n    {diff}", label(mode, case)));
                        }
                    }
                }
                Err(RunError::Db(e)) => {
                    failures.push(format!("{}\n    sleddog: {e}", label(mode, case)));
                }
                Err(RunError::Timeout) => {
                    hung = true;
                    hangs += 1;
                    failures.push(format!(
                        "{}\n    sleddog: no reply within {QUERY_TIMEOUT:?}",
                        label(mode, case)
                    ));
                    if hangs >= MAX_HANGS {
                        failures.push(format!(
                            "[{cluster}] gave up after {hangs} timeouts: {} of {} queries not run",
                            cases.len() - index - 1,
                            cases.len()
                        ));
                        break 'cases;
                    }
                }
            }
            // A connection that timed out may still be busy with the old
            // query; a closed one is useless: start a fresh one.
            if hung || proxied.is_closed() {
                match try_connect(port, cluster).await {
                    Ok(c) => proxied = c,
                    Err(e) => {
                        failures.push(format!(
                            "[{cluster}] cannot reconnect after a closed connection: {e}"
                        ));
                        break 'cases;
                    }
                }
            }
        }
    }
    report(
        &format!("{cluster} ({shards} shards) vs {SINGLE}"),
        runs,
        &failures,
    );
}

/// The comparison machinery itself: Postgres against itself, on the same
/// rows stored in reverse order (`diff_reversed`), shows no differences. So
/// the ordered cases' ORDER BY really fixes the order, and tags, types and
/// decoding are consistent.
#[tokio::test(flavor = "multi_thread")]
async fn runner_finds_no_difference_between_postgres_and_itself() {
    setup();
    diff_against(pg().port(), REVERSED, 1, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn corpus_matches_unsharded_on_two_shards() {
    diff_cluster("diff2", 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn corpus_matches_unsharded_on_three_shards() {
    diff_cluster("diff3", 3).await;
}

/// The corpus itself: big enough, valid SQL (every query runs on plain
/// Postgres in every protocol), and the data set has what the corpus means
/// to exercise (groups missing from some shards, rows split exactly).
#[tokio::test(flavor = "multi_thread")]
async fn corpus_is_valid_on_postgres() {
    let setup = setup();
    let cases = corpus();
    assert!(
        cases.len() >= 300,
        "corpus has {} queries, want at least 300",
        cases.len()
    );
    let direct = postgres(SINGLE).await;
    let mut failures = Vec::new();
    for case in &cases {
        let types = match column_types(&direct, &case.sql).await {
            Ok(t) => t,
            Err(RunError::Db(e)) => {
                failures.push(format!("{}: {e}", case.sql));
                continue;
            }
            Err(RunError::Timeout) => {
                failures.push(format!("{}: timed out", case.sql));
                continue;
            }
        };
        let mut text: Option<Outcome> = None;
        for mode in MODES {
            match run(&direct, case, mode, &types).await {
                Ok(outcomes) => {
                    // The binary decoder must print what Postgres prints
                    // in text (checks the decoder, not the corpus).
                    let mut shape = outcomes[0].clone();
                    shape.tag = None;
                    // (Columns too: an unnamed statement with no rows has none.)
                    shape.columns.clear();
                    match &text {
                        None => text = Some(shape),
                        Some(t) => {
                            if let Some(diff) = compare(t, &shape, case.ordered) {
                                failures.push(format!(
                                    "{mode:?} {}: binary decodes differently from text: {diff}",
                                    case.sql
                                ));
                            }
                        }
                    }
                    // A query must give the same answer twice (else its
                    // comparison would be meaningless).
                    if let [first, second] = outcomes.as_slice() {
                        if let Some(diff) = compare(first, second, case.ordered) {
                            failures
                                .push(format!("{mode:?} {} is not repeatable: {diff}", case.sql));
                        }
                    }
                }
                Err(RunError::Db(e)) => failures.push(format!("{mode:?} {}: {e}", case.sql)),
                Err(RunError::Timeout) => {
                    failures.push(format!("{mode:?} {}: timed out", case.sql))
                }
            }
        }
    }
    report("corpus on Postgres", cases.len() * MODES.len(), &failures);

    // Rows split exactly; lonely teams absent from the other shards.
    let count = |db: &'static str, sql: &'static str| async move {
        let client = postgres(db).await;
        let row = client.query_one(sql, &[]).await.expect("count query");
        row.get::<_, i64>(0)
    };
    for table in ["users", "payments"] {
        let sql: &'static str = if table == "users" {
            "SELECT count(*) FROM users"
        } else {
            "SELECT count(*) FROM payments"
        };
        let total = count(SINGLE, sql).await;
        for shards in [SHARDS2, SHARDS3] {
            let mut sum = 0;
            for db in shards {
                sum += count(db, sql).await;
            }
            assert_eq!(sum, total, "{table} rows over {shards:?}");
        }
    }
    assert_eq!(
        setup.data.users.len() as i64,
        count(SINGLE, "SELECT count(*) FROM users").await
    );
    let xx = "SELECT count(*) FROM users WHERE team = 'XX'";
    assert!(count("diff2_s0", xx).await > 0);
    assert_eq!(count("diff2_s1", xx).await, 0);
    assert_eq!(count("diff3_s1", xx).await + count("diff3_s2", xx).await, 0);
    let yy = "SELECT count(*) FROM users WHERE team = 'YY'";
    assert!(count("diff3_s2", yy).await > 0);
    assert_eq!(count("diff2_s0", yy).await, 0);
    assert_eq!(count("diff3_s0", yy).await + count("diff3_s1", yy).await, 0);
    for shards in [SHARDS2, SHARDS3] {
        for db in shards {
            assert_eq!(
                count(db, "SELECT count(*) FROM countries").await,
                data::COUNTRIES.len() as i64
            );
        }
    }
    assert!(setup.place2.values().any(|&s| s == 1) && setup.place3.values().any(|&s| s == 2));
}

// ---------------------------------------------------------------------------------------
// Unsupported forms
// ---------------------------------------------------------------------------------------

/// Cross-shard queries sleddog must refuse with 0A000, and words one of
/// which its message must contain (lowercase).
const UNSUPPORTED: &[(&str, &[&str])] = &[
    (
        "SELECT id, row_number() OVER () FROM users",
        &["window", "over"],
    ),
    ("SELECT count(DISTINCT age) FROM users", &["distinct"]),
    (
        "SELECT u.id, p.id FROM users u JOIN payments p ON u.age = p.qty",
        &["join"],
    ),
    (
        "SELECT * FROM users WHERE id IN (SELECT user_id FROM payments WHERE qty > 3)",
        &["subquer", "sublink", "sub-quer", "sub-select", "subselect"],
    ),
    (
        "WITH big AS (SELECT user_id, amount FROM payments WHERE amount > 1000) \
         SELECT u.email, b.amount FROM users u JOIN big b ON b.user_id = u.id",
        &["cte", "with", "common table"],
    ),
];

/// One statement through `client` in both protocols: the simple-protocol
/// error (if any) and the extended one.
async fn both_protocols(client: &Client, sql: &str) -> [Result<Outcome, RunError>; 2] {
    let case = Case {
        sql: sql.to_string(),
        params: Vec::new(),
        ordered: false,
        direct: false,
    };
    let mut out = Vec::new();
    for mode in [Mode::Simple, Mode::Extended] {
        out.push(run(client, &case, mode, &[]).await.map(|mut o| o.remove(0)));
    }
    let second = out.pop().expect("two runs");
    let first = out.pop().expect("two runs");
    [first, second]
}

fn check_refused(result: &Result<Outcome, RunError>, words: &[&str]) -> Option<String> {
    match result {
        Ok(o) => Some(format!("ran ({} rows); want SQLSTATE 0A000", o.rows.len())),
        Err(RunError::Timeout) => Some("no reply within the timeout".to_string()),
        Err(RunError::Db(e)) => {
            let lower = e.to_lowercase();
            if !e.starts_with("ERROR 0A000") {
                Some(format!("{e}; want SQLSTATE 0A000"))
            } else if !words.iter().any(|w| lower.contains(w)) {
                Some(format!(
                    "{e}; want a message naming the construct ({words:?})"
                ))
            } else {
                None
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_cross_shard_forms_are_refused_and_run_on_one_shard() {
    setup();
    let client = via(proxy(), "diff2").await;
    let shard0 = postgres(SHARDS2[0]).await;
    let mut failures = Vec::new();
    let mut runs = 0;
    for (sql, words) in UNSUPPORTED {
        for (mode, result) in ["simple", "extended"]
            .iter()
            .zip(both_protocols(&client, sql).await)
        {
            runs += 1;
            if let Some(problem) = check_refused(&result, words) {
                failures.push(format!("[diff2, {mode}] {sql}\n    {problem}"));
            }
        }
        // Pinned to shard 0 it runs, and answers what shard 0 alone does.
        let pinned = format!("/* pgdog_shard: 0 */ {sql}");
        let want = both_protocols(&shard0, sql).await;
        let got = both_protocols(&client, &pinned).await;
        for ((mode, want), got) in ["simple", "extended"].iter().zip(want).zip(got) {
            runs += 1;
            let problem = match (want, got) {
                (Ok(w), Ok(g)) => compare(&w, &g, false),
                (Err(RunError::Db(e)), _) => Some(format!("[corpus bug] Postgres: {e}")),
                (_, Err(RunError::Db(e))) => Some(format!("sleddog: {e}")),
                _ => Some("timed out".to_string()),
            };
            if let Some(problem) = problem {
                failures.push(format!("[diff2, {mode}] {pinned}\n    {problem}"));
            }
        }
    }
    report("unsupported forms", runs, &failures);
}

/// `count` rows with ids in `ids` on each database of `shards`.
async fn rows_per_shard(shards: &[&str], ids: &[i64]) -> Vec<BTreeMap<i64, usize>> {
    let mut out = Vec::new();
    for db in shards {
        let client = postgres(db).await;
        let rows = client
            .query("SELECT id FROM users WHERE id = ANY($1)", &[&ids])
            .await
            .expect("read a shard");
        let mut found = BTreeMap::new();
        for row in rows {
            *found.entry(row.get::<_, i64>(0)).or_default() += 1;
        }
        out.push(found);
    }
    out
}

/// Deletes `ids` from every write-test shard, straight on Postgres.
async fn cleanup(ids: &[i64]) {
    for db in SHARDSW {
        postgres(db)
            .await
            .execute("DELETE FROM users WHERE id = ANY($1)", &[&ids])
            .await
            .expect("cleanup");
    }
}

/// The 3-shard placement of `ids`, from Postgres.
fn place3(ids: &[i64]) -> HashMap<i64, usize> {
    let keys: Vec<Option<i64>> = ids.iter().map(|&i| Some(i)).collect();
    placement(pg(), SINGLE, 3, &keys)
        .into_iter()
        .filter_map(|(k, s)| k.map(|k| (k, s)))
        .collect()
}

/// The first id at or after `from` whose shard (of 3) is `shard`.
fn id_on(place: &HashMap<i64, usize>, from: i64, shard: usize) -> i64 {
    let mut ids: Vec<_> = place
        .iter()
        .filter(|(&id, &s)| id >= from && s == shard)
        .map(|(&id, _)| id)
        .collect();
    ids.sort();
    *ids.first().expect("a candidate id on every shard")
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_row_insert_spanning_shards_is_refused() {
    setup();
    let candidates: Vec<i64> = (400_001..400_040).collect();
    let place = place3(&candidates);
    let (a, b) = (id_on(&place, 400_001, 0), id_on(&place, 400_001, 1));
    cleanup(&[a, b]).await;
    let client = via(proxy(), "diffw3").await;
    let sql = format!("INSERT INTO users (id, email) VALUES ({a}, 'multi'), ({b}, 'multi')");
    let mut failures = Vec::new();
    for (mode, result) in ["simple", "extended"]
        .iter()
        .zip(both_protocols(&client, &sql).await)
    {
        if let Some(problem) = check_refused(&result, &["insert", "multi", "rows", "values"]) {
            failures.push(format!("[diffw3, {mode}] {sql}\n    {problem}"));
        }
    }
    let found = rows_per_shard(SHARDSW, &[a, b]).await;
    if found.iter().any(|f| !f.is_empty()) {
        failures.push(format!("refused insert left rows: {found:?}"));
    }
    let pinned = format!("/* pgdog_shard: 0 */ {sql}");
    match with_timeout(client.simple_query(&pinned)).await {
        Ok(_) => {
            let found = rows_per_shard(SHARDSW, &[a, b]).await;
            if found[0].len() != 2 || !found[1].is_empty() || !found[2].is_empty() {
                failures.push(format!(
                    "{pinned}: want both rows on shard 0, found {found:?}"
                ));
            }
        }
        Err(RunError::Db(e)) => failures.push(format!("{pinned}\n    sleddog: {e}")),
        Err(RunError::Timeout) => failures.push(format!("{pinned}\n    timed out")),
    }
    cleanup(&[a, b]).await;
    report("multi-row insert", 3, &failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_shard_disabled_refuses_cross_shard_and_runs_direct() {
    setup();
    let client = via(strict_proxy(), "diff2").await;
    let direct = postgres(SINGLE).await;
    let mut failures = Vec::new();
    for (mode, result) in ["simple", "extended"]
        .iter()
        .zip(both_protocols(&client, "SELECT count(*) FROM users").await)
    {
        match result {
            Ok(o) => failures.push(format!(
                "[{mode}] cross-shard SELECT ran ({} rows); want an error",
                o.rows.len()
            )),
            Err(RunError::Timeout) => {
                failures.push(format!("[{mode}] cross-shard SELECT: no reply"))
            }
            Err(RunError::Db(_)) => {}
        }
    }
    for sql in [
        "SELECT * FROM users WHERE id = 5",
        "SELECT count(*), sum(amount) FROM payments WHERE user_id = 17",
    ] {
        let want = both_protocols(&direct, sql).await;
        let got = both_protocols(&client, sql).await;
        for ((mode, want), got) in ["simple", "extended"].iter().zip(want).zip(got) {
            let problem = match (want, got) {
                (Ok(w), Ok(g)) => compare(&w, &g, false),
                (_, Err(RunError::Db(e))) => Some(format!("sleddog: {e}")),
                _ => Some("failed or timed out".to_string()),
            };
            if let Some(problem) = problem {
                failures.push(format!("[{mode}] {sql}\n    {problem}"));
            }
        }
    }
    report("cross_shard_disabled", 6, &failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn inserts_land_on_the_shard_postgres_hashing_chooses() {
    setup();
    let ids: Vec<i64> = (200_001..=200_100).collect();
    let place = place3(&ids);
    cleanup(&ids).await;
    let client = via(proxy(), "diffw3").await;
    let mut failures = Vec::new();
    for &id in &ids {
        // Half in the simple protocol, half with parameters.
        let result = if id % 2 == 0 {
            with_timeout(client.simple_query(&format!(
                "INSERT INTO users (id, email, age) VALUES ({id}, 'placed', 1)"
            )))
            .await
            .map(|_| ())
        } else {
            with_timeout(client.execute(
                "INSERT INTO users (id, email, age) VALUES ($1, $2, $3)",
                &[&id, &"placed", &1i32],
            ))
            .await
            .map(|_| ())
        };
        match result {
            Ok(()) => {}
            Err(RunError::Db(e)) => failures.push(format!("insert {id}: {e}")),
            Err(RunError::Timeout) => {
                failures.push(format!("insert {id}: timed out; stopping"));
                break;
            }
        }
    }
    let found = rows_per_shard(SHARDSW, &ids).await;
    for &id in &ids {
        let on: Vec<usize> = (0..3).filter(|&s| found[s].contains_key(&id)).collect();
        if on != [place[&id]] {
            failures.push(format!(
                "id {id}: want only on shard {}, found on {on:?}",
                place[&id]
            ));
        }
    }
    cleanup(&ids).await;
    report("insert placement (diffw3)", ids.len(), &failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_span_shards() {
    setup();
    let candidates: Vec<i64> = (300_001..300_060).collect();
    let place = place3(&candidates);
    let a = id_on(&place, 300_001, 0);
    let b = id_on(&place, 300_001, 1);
    let c = id_on(&place, a + 1, 0);
    let d = id_on(&place, 300_001, 2);
    let all = [a, b, c, d];
    cleanup(&all).await;
    let client = via(proxy(), "diffw3").await;
    let mut failures = Vec::new();
    let mut step = |what: String, result: Result<Vec<SimpleQueryMessage>, RunError>| match result {
        Ok(_) => {}
        Err(RunError::Db(e)) => failures.push(format!("{what}: {e}")),
        Err(RunError::Timeout) => failures.push(format!("{what}: timed out")),
    };
    for sql in [
        "BEGIN".to_string(),
        format!("INSERT INTO users (id, email) VALUES ({a}, 'tx-commit')"),
        format!("INSERT INTO users (id, email) VALUES ({b}, 'tx-commit')"),
        format!("SELECT * FROM users WHERE id = {a}"),
        "COMMIT".to_string(),
    ] {
        step(sql.clone(), with_timeout(client.simple_query(&sql)).await);
    }
    for sql in [
        "BEGIN".to_string(),
        format!("INSERT INTO users (id, email) VALUES ({c}, 'tx-rollback')"),
        format!("INSERT INTO users (id, email) VALUES ({d}, 'tx-rollback')"),
        "ROLLBACK".to_string(),
    ] {
        step(sql.clone(), with_timeout(client.simple_query(&sql)).await);
    }
    let found = rows_per_shard(SHARDSW, &all).await;
    let want: Vec<BTreeMap<i64, usize>> = vec![
        BTreeMap::from([(a, 1)]),
        BTreeMap::from([(b, 1)]),
        BTreeMap::new(),
    ];
    if found != want {
        failures.push(format!(
            "after COMMIT of {a} (shard 0) + {b} (shard 1) and ROLLBACK of {c} (shard 0) + {d} (shard 2): \
             want {want:?}, found {found:?}"
        ));
    }
    cleanup(&all).await;
    report("transactions across shards (diffw3)", 2, &failures);
}

//! The differential suite's data set: deterministic rows for `users`,
//! `payments` and `countries`, the SQL that loads them, and where each row
//! lives when sharded.
//!
//! Placement is never computed here: [`placement`] asks Postgres itself, by
//! inserting the keys into a temporary `PARTITION BY HASH` table and reading
//! back `tableoid`, because PgDog-compatible hash sharding is defined as
//! "the partition Postgres's hash partitioning would choose".

use std::collections::HashMap;

use crate::common::PgServer;

/// A small seeded PCG-style generator: the same rows on every run.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 29
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub email: Option<String>,
    pub age: Option<i32>,
    /// numeric(10,2) as SQL literal text.
    pub score: Option<String>,
    pub ratio: Option<f64>,
    /// Days after 2020-01-01.
    pub created: Option<i32>,
    pub team: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Payment {
    pub id: i64,
    pub user_id: Option<i64>,
    /// numeric(12,2) as SQL literal text.
    pub amount: Option<String>,
    pub qty: Option<i32>,
    pub note: Option<String>,
}

pub struct Dataset {
    pub users: Vec<User>,
    pub payments: Vec<Payment>,
}

/// Teams spread over every shard.
pub const TEAMS: &[&str] = &["DE", "FR", "US", "JP", "日本", "ÉQ"];
/// Only on users placed on shard 0 of both the 2- and the 3-shard layout.
pub const LONELY_TEAM: &str = "XX";
/// Only on users placed on the last shard of both layouts.
pub const LAST_TEAM: &str = "YY";

pub const COUNTRIES: &[(&str, Option<&str>)] = &[
    ("DE", Some("Deutschland")),
    ("FR", Some("France")),
    ("US", Some("United States")),
    ("JP", Some("日本国")),
    ("日本", Some("Nippon")),
    ("BR", Some("Brasil")),
    ("ZA", None),
    ("XX", Some("Nowhere")),
];

/// Every user id: 1..=300 plus edge values of the bigint range.
pub fn user_ids() -> Vec<i64> {
    let mut ids: Vec<i64> = (1..=300).collect();
    ids.extend([
        0,
        -1,
        -42,
        -9_000_000_000,
        9_000_000_000,
        i64::MAX,
        i64::MIN + 1,
    ]);
    ids
}

/// Ids in payments that no user has (still placed by their hash).
pub const ORPHAN_USER_IDS: &[i64] = &[777_777, -31_337];

/// Builds the data set. `place2`/`place3` give each user id's shard in the
/// 2- and 3-shard layouts (from [`placement`]), so the lonely teams can be
/// put where they are absent from the other shards.
pub fn generate(
    place2: &HashMap<Option<i64>, usize>,
    place3: &HashMap<Option<i64>, usize>,
) -> Dataset {
    let mut rng = Lcg::new(20_240_601);
    let mut users = Vec::new();
    let (mut lonely, mut last) = (0, 0);
    for id in user_ids() {
        let s2 = place2[&Some(id)];
        let s3 = place3[&Some(id)];
        let email = if rng.chance(8) {
            None
        } else if rng.chance(6) {
            Some("dup@example.com".to_string())
        } else if rng.chance(10) {
            Some(format!("ünï{id}@例え.jp"))
        } else {
            Some(format!("user{:03}@example.com", rng.below(400)))
        };
        let age = if rng.chance(10) {
            None
        } else {
            Some(rng.below(96) as i32 - 5)
        };
        let score = if rng.chance(10) {
            None
        } else if rng.chance(10) {
            // Ties on round values.
            Some(format!("{}", *rng.pick(&[0, 10, -10, 100])))
        } else {
            let cents = rng.below(200_001) as i64 - 100_000;
            Some(cents_text(cents))
        };
        let ratio = if rng.chance(10) {
            None
        } else if rng.chance(8) {
            Some(*rng.pick(&[0.0, 0.5, -2.25, 1e-3]))
        } else {
            let raw = rng.next() as f64 / (1u64 << 35) as f64;
            Some(raw * 120.0 - 20.0)
        };
        let created = if rng.chance(9) {
            None
        } else {
            Some(rng.below(1500) as i32)
        };
        let team = if s2 == 0 && s3 == 0 && lonely < 6 {
            lonely += 1;
            Some(LONELY_TEAM.to_string())
        } else if s2 == 1 && s3 == 2 && last < 5 {
            last += 1;
            Some(LAST_TEAM.to_string())
        } else if rng.chance(9) {
            None
        } else {
            Some(rng.pick(TEAMS).to_string())
        };
        users.push(User {
            id,
            email,
            age,
            score,
            ratio,
            created,
            team,
        });
    }
    assert!(lonely > 0 && last > 0, "the lonely teams found users");

    let ids = user_ids();
    let mut payments = Vec::new();
    let notes = ["refund", "gift", "Überweisung", "支払い", "", "refund "];
    for pid in 1..=1000i64 {
        let user_id = if pid % 97 == 0 {
            None
        } else if pid % 41 == 0 {
            Some(ORPHAN_USER_IDS[(pid as usize / 41) % ORPHAN_USER_IDS.len()])
        } else {
            // Skewed: low ids get more payments.
            let i =
                (rng.below(ids.len() as u64) * rng.below(ids.len() as u64)) as usize / ids.len();
            Some(ids[i])
        };
        let amount = if rng.chance(7) {
            None
        } else {
            let cents = rng.below(2_000_001) as i64 - 400_000;
            Some(cents_text(cents))
        };
        let qty = if rng.chance(7) {
            None
        } else {
            Some(rng.below(12) as i32 - 2)
        };
        let note = if rng.chance(15) {
            None
        } else {
            Some(rng.pick(&notes).to_string())
        };
        let payment = Payment {
            id: pid,
            user_id,
            amount,
            qty,
            note,
        };
        // Exact duplicate rows (same id too) every 50th payment.
        if pid % 50 == 0 {
            payments.push(payment.clone());
        }
        payments.push(payment);
    }
    Dataset { users, payments }
}

/// `-12345` cents as `-123.45`.
fn cents_text(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// An SQL string literal (or NULL).
pub fn lit(text: Option<&str>) -> String {
    match text {
        None => "NULL".to_string(),
        Some(t) => format!("'{}'", t.replace('\'', "''")),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "NULL".to_string(), |v| v.to_string())
}

fn user_row(u: &User) -> String {
    format!(
        "({}, {}, {}, {}, {}, {}, {})",
        u.id,
        lit(u.email.as_deref()),
        opt(u.age),
        opt(u.score.as_deref()),
        // `{:?}` prints an f64 so that it parses back to the same value.
        u.ratio
            .map_or_else(|| "NULL".to_string(), |r| format!("'{r:?}'::float8")),
        u.created.map_or_else(
            || "NULL".to_string(),
            |d| format!("date '2020-01-01' + {d}")
        ),
        lit(u.team.as_deref())
    )
}

fn payment_row(p: &Payment) -> String {
    format!(
        "({}, {}, {}, {}, {})",
        p.id,
        opt(p.user_id),
        opt(p.amount.as_deref()),
        opt(p.qty),
        lit(p.note.as_deref())
    )
}

fn inserts(table: &str, rows: &[String]) -> String {
    let mut sql = String::new();
    for chunk in rows.chunks(100) {
        if chunk.is_empty() {
            continue;
        }
        sql.push_str(&format!(
            "INSERT INTO {table} VALUES\n{};\n",
            chunk.join(",\n")
        ));
    }
    sql
}

/// The schema every diff database has. Tables are created by the superuser
/// and granted to everyone so the test roles can read and write them.
pub const SCHEMA: &str = "\
CREATE TABLE users (id bigint PRIMARY KEY, email text, age int, score numeric(10,2), \
ratio float8, created date, team text);
CREATE TABLE payments (id bigint, user_id bigint, amount numeric(12,2), qty int, note text);
CREATE TABLE countries (code text PRIMARY KEY, name text);
GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC;
";

/// SQL loading the rows of `data` that `keep` accepts (users by id,
/// payments by user_id) and every country.
pub fn load_sql(data: &Dataset, keep: impl Fn(Option<i64>) -> bool) -> String {
    let users: Vec<String> = data
        .users
        .iter()
        .filter(|u| keep(Some(u.id)))
        .map(user_row)
        .collect();
    let payments: Vec<String> = data
        .payments
        .iter()
        .filter(|p| keep(p.user_id))
        .map(payment_row)
        .collect();
    let countries: Vec<String> = COUNTRIES
        .iter()
        .map(|(code, name)| format!("({}, {})", lit(Some(code)), lit(*name)))
        .collect();
    let mut sql = inserts("users", &users);
    sql.push_str(&inserts("payments", &payments));
    sql.push_str(&inserts("countries", &countries));
    sql.push_str("ANALYZE;\n");
    sql
}

/// The shard (0-based) each key goes to with `shards` shards, as Postgres
/// hash partitioning on a bigint column chooses it; NULL keys included.
pub fn placement(
    server: &PgServer,
    db: &str,
    shards: usize,
    keys: &[Option<i64>],
) -> HashMap<Option<i64>, usize> {
    let mut sql = String::from("CREATE TEMP TABLE place (id bigint) PARTITION BY HASH (id);\n");
    for r in 0..shards {
        sql.push_str(&format!(
            "CREATE TEMP TABLE place_{r} PARTITION OF place FOR VALUES WITH (MODULUS {shards}, REMAINDER {r});\n"
        ));
    }
    let values: Vec<String> = keys.iter().map(|k| format!("({})", opt(*k))).collect();
    for chunk in values.chunks(500) {
        sql.push_str(&format!("INSERT INTO place VALUES {};\n", chunk.join(", ")));
    }
    sql.push_str(
        "SELECT coalesce(id::text, 'NULL') || ' ' || tableoid::regclass::text FROM place;\n",
    );
    let out = server.psql(db, &sql);
    let mut map = HashMap::new();
    for line in out.lines() {
        let (key, table) = line.split_once(' ').expect("`key table` line");
        let key = if key == "NULL" {
            None
        } else {
            Some(key.parse::<i64>().expect("bigint key"))
        };
        let shard = table
            .rsplit('_')
            .next()
            .and_then(|s| s.parse::<usize>().ok())
            .expect("partition name ends in its remainder");
        map.insert(key, shard);
    }
    for key in keys {
        assert!(map.contains_key(key), "placement for {key:?}");
    }
    map
}

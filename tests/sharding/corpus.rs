//! The query corpus: cross-shard SELECTs (no sharding key) generated from
//! templates × columns × options, plus direct-to-shard queries, each marked
//! with whether its ORDER BY fully determines the row order.
//!
//! A template that wants an ordered comparison ends its ORDER BY with a
//! unique key (`id` for users; payments rows with equal `id` are exact
//! duplicates, so `p.id` is enough there).

use tokio_postgres::types::{ToSql, Type};

#[derive(Debug, Clone)]
pub enum Param {
    I32(i32),
    I64(i64),
    Text(String),
    I64Array(Vec<i64>),
}

impl Param {
    /// The literal that replaces `$n` in the simple-protocol version.
    fn literal(&self) -> String {
        match self {
            Param::I32(v) => format!("({v})"),
            Param::I64(v) => format!("({v})"),
            Param::Text(t) => format!("'{}'", t.replace('\'', "''")),
            Param::I64Array(v) => {
                let items: Vec<String> = v.iter().map(ToString::to_string).collect();
                format!("ARRAY[{}]::bigint[]", items.join(", "))
            }
        }
    }

    pub fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::I32(v) => v,
            Param::I64(v) => v,
            Param::Text(v) => v,
            Param::I64Array(v) => v,
        }
    }

    pub fn sql_type(&self) -> Type {
        match self {
            Param::I32(_) => Type::INT4,
            Param::I64(_) => Type::INT8,
            Param::Text(_) => Type::TEXT,
            Param::I64Array(_) => Type::INT8_ARRAY,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Case {
    /// With `$n` placeholders when `params` is not empty.
    pub sql: String,
    pub params: Vec<Param>,
    /// Compare rows in order (the ORDER BY determines it) or as multisets.
    pub ordered: bool,
    /// Goes to one shard (has the sharding key).
    pub direct: bool,
}

impl Case {
    /// The statement for the simple protocol: parameters inlined.
    pub fn simple_sql(&self) -> String {
        let mut sql = self.sql.clone();
        for (i, p) in self.params.iter().enumerate().rev() {
            sql = sql.replace(&format!("${}", i + 1), &p.literal());
        }
        sql
    }
}

struct Corpus(Vec<Case>);

impl Corpus {
    fn add(&mut self, sql: impl Into<String>, ordered: bool) {
        self.0.push(Case {
            sql: sql.into(),
            params: Vec::new(),
            ordered,
            direct: false,
        });
    }

    fn unordered(&mut self, sql: impl Into<String>) {
        self.add(sql, false);
    }

    fn ordered(&mut self, sql: impl Into<String>) {
        self.add(sql, true);
    }

    fn with_params(&mut self, sql: &str, params: Vec<Param>, ordered: bool, direct: bool) {
        self.0.push(Case {
            sql: sql.to_string(),
            params,
            ordered,
            direct,
        });
    }

    fn direct(&mut self, sql: impl Into<String>, ordered: bool) {
        self.0.push(Case {
            sql: sql.into(),
            params: Vec::new(),
            ordered,
            direct: true,
        });
    }
}

/// users filters (WHERE clause bodies) with rows on every shard, some none.
const USER_FILTERS: &[&str] = &[
    "age > 30",
    "age IS NULL",
    "age BETWEEN -5 AND 5",
    "team = 'DE'",
    "team = 'XX'",
    "team = 'YY'",
    "team IN ('JP', '日本')",
    "team IS NULL OR age < 10",
    "score < 0",
    "score >= 100.5 AND ratio IS NOT NULL",
    "ratio BETWEEN 0 AND 10",
    "email LIKE '%@example.com'",
    "email = 'dup@example.com'",
    "created >= '2021-06-01' AND created < '2022-01-01'",
    "NOT (age > 10)",
    "team = 'nobody'",
];

/// (column, is numeric) of users and payments the aggregates run over.
const NUMERIC_COLUMNS: &[(&str, &str)] = &[
    ("users", "age"),
    ("users", "id"),
    ("users", "score"),
    ("users", "ratio"),
    ("payments", "qty"),
    ("payments", "user_id"),
    ("payments", "amount"),
];

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
];

/// Every query of the suite.
pub fn corpus() -> Vec<Case> {
    let mut c = Corpus(Vec::new());
    filters(&mut c);
    ordering(&mut c);
    limits(&mut c);
    aggregates(&mut c);
    grouping(&mut c);
    distinct(&mut c);
    joins(&mut c);
    countries(&mut c);
    types(&mut c);
    direct(&mut c);
    c.0
}

fn filters(c: &mut Corpus) {
    for f in USER_FILTERS {
        c.unordered(format!("SELECT id, email, age, score FROM users WHERE {f}"));
    }
    for f in ["age > 50", "team = 'XX'", "score IS NULL"] {
        c.unordered(format!("SELECT * FROM users WHERE {f}"));
    }
    for f in [
        "qty > 5",
        "amount < 0",
        "note = 'Überweisung'",
        "note IS NULL AND qty IS NOT NULL",
        "user_id IS NULL",
        "amount BETWEEN -100 AND 100",
    ] {
        c.unordered(format!("SELECT * FROM payments WHERE {f}"));
    }
    c.unordered("SELECT * FROM users");
    c.unordered("SELECT * FROM payments");
    c.unordered("SELECT email, team FROM users WHERE false");
}

fn ordering(c: &mut Corpus) {
    for col in ["age", "score", "ratio", "created", "email", "team"] {
        for dir in ["", " ASC", " DESC"] {
            for nulls in ["", " NULLS FIRST", " NULLS LAST"] {
                if dir == " ASC" && nulls.is_empty() {
                    continue; // same as the default
                }
                c.ordered(format!(
                    "SELECT id, {col} FROM users ORDER BY {col}{dir}{nulls}, id LIMIT 40"
                ));
            }
        }
    }
    // By position, alias, a column not selected, several keys.
    c.ordered("SELECT id, age FROM users ORDER BY 2 DESC, 1");
    c.ordered("SELECT email, id, score FROM users ORDER BY 3 NULLS FIRST, 2 DESC");
    c.ordered("SELECT id AS ident, age AS years FROM users ORDER BY years DESC NULLS LAST, ident");
    c.ordered("SELECT id, score AS s FROM users WHERE score IS NOT NULL ORDER BY s, id DESC");
    c.ordered("SELECT id, email FROM users ORDER BY score DESC NULLS LAST, id");
    c.ordered("SELECT email FROM users ORDER BY ratio, id");
    c.ordered("SELECT team, email FROM users ORDER BY created DESC, id DESC");
    c.ordered("SELECT id, team, age FROM users ORDER BY team, age DESC, id");
    c.ordered("SELECT id, team, age, score FROM users ORDER BY team DESC NULLS LAST, age NULLS FIRST, score DESC, id");
    c.ordered("SELECT * FROM users ORDER BY id");
    c.ordered("SELECT * FROM users ORDER BY id DESC");
    c.ordered("SELECT * FROM users WHERE team = 'XX' ORDER BY id");
    c.ordered("SELECT * FROM payments ORDER BY id");
    c.ordered("SELECT id, amount FROM payments ORDER BY amount DESC NULLS LAST, id");
    c.ordered("SELECT id, qty, note FROM payments ORDER BY note, qty DESC, id");
    c.ordered("SELECT id, user_id FROM payments WHERE qty = 3 ORDER BY user_id NULLS FIRST, id");
    c.ordered("SELECT note, id FROM payments ORDER BY 1 DESC NULLS FIRST, 2");
}

fn limits(c: &mut Corpus) {
    let bases = [
        "SELECT id, email FROM users ORDER BY id",
        "SELECT id, age FROM users ORDER BY age NULLS FIRST, id",
        "SELECT id, score FROM users ORDER BY score DESC, id",
        "SELECT id, amount FROM payments ORDER BY amount, id",
    ];
    let tails = [
        " LIMIT 10",
        " LIMIT 10 OFFSET 5",
        " OFFSET 290",
        " OFFSET 0",
        " LIMIT 0",
        " LIMIT 5000",
        " LIMIT 5 OFFSET 5000",
        " LIMIT 3 OFFSET 0",
        " LIMIT 1",
        " OFFSET 1 ROWS FETCH FIRST 7 ROWS ONLY",
    ];
    for base in bases {
        for tail in tails {
            c.ordered(format!("{base}{tail}"));
        }
    }
    c.with_params(
        "SELECT id, age FROM users WHERE team = $1 ORDER BY age, id LIMIT $2",
        vec![Param::Text("FR".into()), Param::I64(7)],
        true,
        false,
    );
    c.with_params(
        "SELECT id, email FROM users ORDER BY id DESC LIMIT $1 OFFSET $2",
        vec![Param::I64(5), Param::I64(3)],
        true,
        false,
    );
}

fn aggregates(c: &mut Corpus) {
    c.unordered("SELECT count(*) FROM users");
    c.unordered("SELECT count(*) FROM payments");
    for (table, col) in NUMERIC_COLUMNS {
        for agg in AGGREGATES {
            c.unordered(format!("SELECT {agg}({col}) FROM {table}"));
        }
    }
    for f in ["age > 30", "team = 'XX'", "score < 0", "team = 'nobody'"] {
        for agg in ["count", "sum", "avg", "stddev", "var_pop", "min", "max"] {
            let col = if agg == "count" || agg == "sum" {
                "age"
            } else {
                "score"
            };
            c.unordered(format!("SELECT {agg}({col}) FROM users WHERE {f}"));
        }
        c.unordered(format!(
            "SELECT sum(ratio), avg(ratio), variance(ratio) FROM users WHERE {f}"
        ));
    }
    c.unordered(
        "SELECT count(*), count(age), sum(age), avg(score), min(created), max(email), \
         stddev(ratio), max(score) FROM users",
    );
    c.unordered("SELECT count(*) AS n, sum(amount) AS total, avg(qty) AS mean_qty FROM payments");
    c.unordered("SELECT max(amount), min(amount), count(note), count(user_id) FROM payments");
    // Text and date min/max.
    for (table, col) in [
        ("users", "email"),
        ("users", "team"),
        ("users", "created"),
        ("payments", "note"),
    ] {
        c.unordered(format!("SELECT min({col}), max({col}) FROM {table}"));
    }
    // Empty input.
    c.unordered(
        "SELECT count(*), count(age), sum(age), sum(score), avg(score), min(ratio), max(email), \
         stddev(age), variance(ratio), min(created) FROM users WHERE false",
    );
    c.unordered("SELECT sum(id), avg(id), var_samp(id) FROM users WHERE id < -10000000000000");
    c.unordered("SELECT count(*), max(team) FROM users WHERE team = 'nobody'");
    c.with_params(
        "SELECT count(*), sum(score) FROM users WHERE age > $1",
        vec![Param::I32(40)],
        false,
        false,
    );
    c.with_params(
        "SELECT avg(amount), max(qty) FROM payments WHERE note = $1",
        vec![Param::Text("gift".into())],
        false,
        false,
    );
}

fn grouping(c: &mut Corpus) {
    let aggs = [
        "count(*)",
        "count(age)",
        "sum(score)",
        "avg(age)",
        "min(ratio)",
        "max(created)",
        "stddev(ratio)",
        "variance(score)",
        "sum(age)",
        "max(email)",
    ];
    for key in ["team", "age", "created"] {
        for agg in aggs {
            c.ordered(format!(
                "SELECT {key}, {agg} FROM users GROUP BY {key} ORDER BY {key}"
            ));
        }
    }
    for agg in [
        "count(*)",
        "sum(amount)",
        "avg(amount)",
        "min(note)",
        "stddev_pop(qty)",
        "var_samp(amount)",
    ] {
        c.unordered(format!("SELECT qty, {agg} FROM payments GROUP BY qty"));
        c.unordered(format!("SELECT note, {agg} FROM payments GROUP BY note"));
    }
    // Positions, several keys, keys not selected.
    c.ordered("SELECT team, count(*) FROM users GROUP BY 1 ORDER BY 1 DESC NULLS LAST");
    c.ordered("SELECT team, age, count(*) FROM users GROUP BY team, age ORDER BY team, age");
    c.ordered("SELECT age, team, sum(score) FROM users GROUP BY 2, 1 ORDER BY 1 NULLS FIRST, 2");
    c.unordered("SELECT count(*), sum(score) FROM users GROUP BY team");
    c.unordered("SELECT avg(ratio) FROM users GROUP BY age");
    c.unordered("SELECT team, count(*) FROM users GROUP BY team");
    c.unordered("SELECT team AS t, max(age) AS oldest FROM users GROUP BY t");
    c.ordered("SELECT team, count(*) AS n FROM users GROUP BY team ORDER BY n DESC, team");
    c.ordered("SELECT team, sum(age) FROM users WHERE age > 20 GROUP BY team ORDER BY team");
    c.unordered("SELECT team, count(*) FROM users WHERE false GROUP BY team");
    c.ordered("SELECT team, min(created), max(created) FROM users GROUP BY team ORDER BY team");
    c.ordered("SELECT team, count(*) FROM users GROUP BY team ORDER BY team LIMIT 3");
    c.ordered("SELECT team, count(*) FROM users GROUP BY team ORDER BY team OFFSET 2");
    // HAVING.
    let havings = [
        "count(*) > 20",
        "sum(score) < 0",
        "count(*) > 5 AND avg(age) > 40",
        "count(*) > 50 OR min(age) < 0",
        "max(score) IS NULL",
        "sum(age) IS NOT NULL",
        "avg(ratio) > 40",
        "count(*) = 1",
    ];
    for h in havings {
        c.ordered(format!(
            "SELECT team, count(*) FROM users GROUP BY team HAVING {h} ORDER BY team"
        ));
        c.unordered(format!(
            "SELECT age, sum(score) FROM users GROUP BY age HAVING {h}"
        ));
    }
    c.unordered("SELECT team FROM users GROUP BY team HAVING count(*) > 30");
    c.unordered("SELECT qty, count(*) FROM payments GROUP BY qty HAVING sum(amount) > 1000");
}

fn distinct(c: &mut Corpus) {
    c.unordered("SELECT DISTINCT team FROM users");
    c.ordered("SELECT DISTINCT team FROM users ORDER BY team");
    c.ordered("SELECT DISTINCT age FROM users ORDER BY age NULLS FIRST");
    c.ordered("SELECT DISTINCT age FROM users ORDER BY age DESC LIMIT 5");
    c.unordered("SELECT DISTINCT team, age FROM users");
    c.ordered("SELECT DISTINCT team, age FROM users ORDER BY team, age");
    c.unordered("SELECT DISTINCT created FROM users WHERE created < '2020-06-01'");
    c.unordered("SELECT DISTINCT email FROM users");
    c.unordered("SELECT DISTINCT score FROM users WHERE score IN (0, 10, -10, 100)");
    c.unordered("SELECT DISTINCT user_id FROM payments");
    c.unordered("SELECT DISTINCT qty, note FROM payments");
    c.ordered("SELECT DISTINCT note FROM payments ORDER BY note DESC");
    c.unordered("SELECT DISTINCT ratio FROM users WHERE ratio < 1");
    c.unordered("SELECT DISTINCT team FROM users WHERE false");
}

fn joins(c: &mut Corpus) {
    c.unordered("SELECT u.id, u.email, p.amount FROM users u JOIN payments p ON u.id = p.user_id WHERE p.qty > 3");
    c.ordered("SELECT p.id, u.email, p.amount FROM users u JOIN payments p ON u.id = p.user_id ORDER BY p.id");
    c.ordered("SELECT p.id, u.team FROM payments p JOIN users u ON p.user_id = u.id WHERE u.team = 'XX' ORDER BY p.id");
    c.unordered("SELECT count(*), sum(p.qty), avg(p.amount) FROM users u JOIN payments p ON p.user_id = u.id");
    c.ordered(
        "SELECT u.team, count(*), sum(p.amount) FROM users u JOIN payments p ON u.id = p.user_id \
         GROUP BY u.team ORDER BY u.team NULLS FIRST",
    );
    c.ordered(
        "SELECT u.id, count(p.id) FROM users u LEFT JOIN payments p ON u.id = p.user_id \
         GROUP BY u.id ORDER BY u.id LIMIT 50",
    );
    c.ordered(
        "SELECT u.id, sum(p.amount) AS spent FROM users u JOIN payments p ON u.id = p.user_id \
         GROUP BY u.id ORDER BY spent DESC NULLS LAST, u.id LIMIT 20",
    );
    c.unordered(
        "SELECT u.age, max(p.amount), min(p.note) FROM users u JOIN payments p ON u.id = p.user_id \
         WHERE u.age > 50 GROUP BY u.age",
    );
    c.unordered(
        "SELECT u.team, avg(p.qty), stddev(p.amount) FROM users u JOIN payments p ON u.id = p.user_id \
         GROUP BY u.team HAVING count(*) > 10",
    );
    c.unordered("SELECT DISTINCT u.team FROM users u JOIN payments p ON u.id = p.user_id WHERE p.amount < 0");
    c.unordered("SELECT count(*) FROM users u JOIN payments p ON u.id = p.user_id WHERE false");
}

fn countries(c: &mut Corpus) {
    c.ordered("SELECT * FROM countries ORDER BY code");
    c.unordered("SELECT count(*), max(name) FROM countries");
    c.unordered("SELECT name FROM countries WHERE code = 'JP'");
    c.unordered("SELECT code FROM countries WHERE name IS NULL");
    c.ordered(
        "SELECT c.name, count(*) FROM users u JOIN countries c ON c.code = u.team \
         GROUP BY c.name ORDER BY c.name",
    );
    c.unordered(
        "SELECT u.id, c.name FROM users u JOIN countries c ON c.code = u.team WHERE u.age > 60",
    );
    c.ordered(
        "SELECT c.code, sum(p.amount) FROM payments p JOIN users u ON u.id = p.user_id \
         JOIN countries c ON c.code = u.team GROUP BY c.code ORDER BY c.code",
    );
}

fn types(c: &mut Corpus) {
    c.unordered(
        "SELECT id, age::int2 AS a2, ratio::float4 AS r4, (age > 30) AS old, email::varchar(40) AS e \
         FROM users WHERE team = 'DE'",
    );
    c.ordered(
        "SELECT id, score * 2 AS double_score, ratio / 3 AS third FROM users ORDER BY id LIMIT 30",
    );
    c.unordered("SELECT sum(age::int2), sum(qty::int8), avg(ratio::float4) FROM users u JOIN payments p ON u.id = p.user_id");
    c.unordered("SELECT max(created + 1), min(age * 2) FROM users");
    c.unordered("SELECT sum(score::float8), avg(amount::float8), min(score::int4) FROM users u JOIN payments p ON u.id = p.user_id");
}

fn direct(c: &mut Corpus) {
    for id in [
        1i64,
        2,
        3,
        7,
        150,
        299,
        0,
        -1,
        -42,
        9_000_000_000,
        i64::MAX,
        12_345,
    ] {
        c.direct(format!("SELECT * FROM users WHERE id = {id}"), false);
        c.direct(
            format!("SELECT * FROM payments WHERE user_id = {id} ORDER BY id"),
            true,
        );
    }
    for id in [1i64, 5, 150] {
        c.direct(
            format!(
                "SELECT u.email, p.amount, p.id FROM users u JOIN payments p ON u.id = p.user_id \
                 WHERE u.id = {id} ORDER BY p.id"
            ),
            true,
        );
        c.direct(
            format!("SELECT count(*), sum(amount), avg(qty) FROM payments WHERE user_id = {id}"),
            false,
        );
    }
    c.direct(
        "SELECT * FROM users WHERE id IN (1, 2, 3, 4, 5, 6) ORDER BY id",
        true,
    );
    c.direct(
        "SELECT id, team FROM users WHERE id IN (10, -1, 0, 9000000000)",
        false,
    );
    c.direct(
        "SELECT count(*), sum(amount) FROM payments WHERE user_id IN (1, 2, 3, 777777)",
        false,
    );
    for id in [4i64, 8, 200, -42] {
        c.with_params(
            "SELECT * FROM users WHERE id = $1",
            vec![Param::I64(id)],
            false,
            true,
        );
        c.with_params(
            "SELECT count(*), sum(amount), max(note) FROM payments WHERE user_id = $1",
            vec![Param::I64(id)],
            false,
            true,
        );
    }
    c.with_params(
        "SELECT id, email FROM users WHERE id = $1 AND age > $2",
        vec![Param::I64(9), Param::I32(-100)],
        false,
        true,
    );
    c.with_params(
        "SELECT id, score FROM users WHERE id = ANY($1) ORDER BY id",
        vec![Param::I64Array(vec![1, 2, 3, 11, 12, 13, -1])],
        true,
        true,
    );
}

//! Golden vectors for the `shards` crate, produced by real PostgreSQL.
//!
//! For every supported key type and several moduli, a `PARTITION BY HASH`
//! table receives edge and spread values; the partition PostgreSQL chose
//! for each row (`tableoid`) must be the shard `shards` computes, from the
//! value's text form, from the literal as the client sent it, and from its
//! binary encoding. The raw extended hashes are compared too, and
//! `PARTITION BY LIST` / `RANGE` tables are compared with `Mapping::Map`.
//!
//! Everything lives in its own database, so other tests on the shared
//! server are unaffected.

mod common;

use std::sync::OnceLock;

use common::PgServer;
use shards::hash::{hash_bytes_extended, hash_int_extended, HASH_PARTITION_SEED};
use shards::{DataType, Format, Key, MapValue, Mapping, RangeRule, ShardId, ShardedTable};

const DB: &str = "shards_placement";
const MODULI: [u16; 6] = [2, 3, 4, 5, 7, 16];

/// The shared server with the test database created once (C collation, so
/// text ranges order bytewise as `Mapping` does).
fn server() -> &'static PgServer {
    static READY: OnceLock<()> = OnceLock::new();
    let pg = common::pg();
    READY.get_or_init(|| {
        pg.psql(
            "postgres",
            &format!(
                "CREATE DATABASE {DB} TEMPLATE template0 ENCODING 'UTF8' \
                 LC_COLLATE 'C' LC_CTYPE 'C';"
            ),
        );
    });
    pg
}

/// A deterministic spread of 64-bit values (an LCG), for "random-ish" keys.
fn spread(seed: u64, count: usize) -> Vec<u64> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state ^ (state >> 29)
        })
        .collect()
}

/// Text-form literals for an integer type: edges, spread values, and
/// non-canonical spellings PostgreSQL accepts.
fn int_literals(min: i64, max: i64) -> Vec<String> {
    let mut values: Vec<i64> = vec![0, 1, -1, 2, -2, 3, 7, 10, 100, 1000, -1000, 4242];
    values.extend([min, min + 1, max, max - 1, 32767, -32768, 65535, -65536]);
    values.extend([
        i32::MAX.into(),
        i32::MIN.into(),
        1 << 32,
        -(1 << 32),
        1 << 40,
    ]);
    let width = (max as i128) - (min as i128) + 1;
    values.extend(
        spread(7, 70)
            .into_iter()
            .map(|r| ((r as i128).rem_euclid(width) + min as i128) as i64),
    );
    values.extend(1..=40);
    values.retain(|v| (min..=max).contains(v));
    let mut literals: Vec<String> = values.iter().map(i64::to_string).collect();
    literals.extend(
        ["  42 ", "+7", "-0", "007", "\t-3\n", "+0000012", " -32768"]
            .iter()
            .map(|s| s.to_string()),
    );
    literals
}

fn text_literals() -> Vec<String> {
    let mut values: Vec<String> = [
        "",
        "a",
        "b",
        "A",
        " ",
        "żółw",
        "日本語",
        "🐕",
        "🐕‍🦺 dog",
        "O'Brien",
        "tenant-42",
        "\u{7f}",
        "é",
        "e\u{301}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let pattern = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ";
    values.extend((0..=pattern.len()).map(|n| pattern[..n].to_string()));
    values.extend((0..=13).map(|n| "ż".repeat(n)));
    values.extend((1..=40).map(|n| format!("user_{n}")));
    values.push("x".repeat(1000));
    values.push("日本語".repeat(300));
    values.extend(spread(11, 30).into_iter().map(|r| format!("{r:x}")));
    values
}

fn uuid_literals() -> Vec<String> {
    let mut values = vec![
        "00000000-0000-0000-0000-000000000000".to_string(),
        "ffffffff-ffff-ffff-ffff-ffffffffffff".to_string(),
        "00000000-0000-0000-0000-000000000001".to_string(),
        "80000000-0000-0000-0000-000000000000".to_string(),
        // Non-canonical spellings uuid_in accepts.
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11".to_string(),
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12}".to_string(),
        "a0eebc999c0b4ef8bb6d6bb9bd380a13".to_string(),
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a14".to_string(),
    ];
    let words = spread(13, 160);
    for pair in words.chunks(2) {
        let bytes: Vec<u8> = pair.iter().flat_map(|w| w.to_be_bytes()).collect();
        values.push(Key::uuid_text(&bytes.try_into().unwrap()));
    }
    values
}

/// One key type under test: SQL name, our type, literals, and the binary
/// encoding of a canonical text value (built here, independently of the crate).
struct TypeCase {
    sql: &'static str,
    data_type: DataType,
    literals: Vec<String>,
    binary: fn(&str) -> Vec<u8>,
    /// The per-type hash support function, for the raw hash comparison.
    hash_fn: &'static str,
}

fn cases() -> Vec<TypeCase> {
    vec![
        TypeCase {
            sql: "bigint",
            data_type: DataType::BigInt,
            literals: int_literals(i64::MIN, i64::MAX),
            binary: |s| s.parse::<i64>().unwrap().to_be_bytes().to_vec(),
            hash_fn: "hashint8extended",
        },
        TypeCase {
            sql: "integer",
            data_type: DataType::Integer,
            literals: int_literals(i32::MIN.into(), i32::MAX.into()),
            binary: |s| s.parse::<i32>().unwrap().to_be_bytes().to_vec(),
            hash_fn: "hashint4extended",
        },
        TypeCase {
            sql: "smallint",
            data_type: DataType::SmallInt,
            literals: int_literals(i16::MIN.into(), i16::MAX.into()),
            binary: |s| s.parse::<i16>().unwrap().to_be_bytes().to_vec(),
            hash_fn: "hashint2extended",
        },
        TypeCase {
            sql: "text",
            data_type: DataType::Text,
            literals: text_literals(),
            binary: |s| s.as_bytes().to_vec(),
            hash_fn: "hashtextextended",
        },
        TypeCase {
            sql: "varchar",
            data_type: DataType::Varchar,
            literals: text_literals(),
            binary: |s| s.as_bytes().to_vec(),
            hash_fn: "hashtextextended",
        },
        TypeCase {
            sql: "uuid",
            data_type: DataType::Uuid,
            literals: uuid_literals(),
            binary: |s| {
                let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
                hex.chunks(2)
                    .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
                    .collect()
            },
            hash_fn: "uuid_hash_extended",
        },
    ]
}

fn quote(literal: &str) -> String {
    format!("'{}'", literal.replace('\'', "''"))
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// `expr` as hex of its UTF-8 bytes, `NULL` (not a hex string) for NULL.
fn hex_sql(expr: &str) -> String {
    format!("coalesce(encode(convert_to({expr}, 'UTF8'), 'hex'), 'NULL')")
}

/// The `|`-separated fields of a `row|...` output line (the marker keeps
/// psql's output trimming away from an empty first field).
fn row_fields(line: &str) -> Vec<&str> {
    let rest = line
        .strip_prefix("row|")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    rest.split('|').collect()
}

/// Splits `name_<a>_<b>` into the two trailing numbers.
fn trailing_numbers(name: &str) -> (u16, u16) {
    let mut parts = name.rsplit('_');
    let b = parts.next().unwrap().parse().unwrap();
    let a = parts.next().unwrap().parse().unwrap();
    (a, b)
}

fn hash_table_sql(case: &TypeCase) -> String {
    let mut sql = String::new();
    let rows: Vec<String> = case
        .literals
        .iter()
        .map(|l| format!("({q}, {q})", q = quote(l)))
        .chain(std::iter::once("(NULL, NULL)".to_string()))
        .collect();
    for m in MODULI {
        let t = format!("h_{}_{m}", case.sql);
        sql.push_str(&format!(
            "CREATE TABLE {t} (k {}, src text) PARTITION BY HASH (k);\n",
            case.sql
        ));
        for r in 0..m {
            sql.push_str(&format!(
                "CREATE TABLE {t}_{r} PARTITION OF {t} FOR VALUES WITH (MODULUS {m}, REMAINDER {r});\n"
            ));
        }
        sql.push_str(&format!(
            "INSERT INTO {t} (k, src) VALUES {};\n",
            rows.join(", ")
        ));
    }
    sql
}

/// Checks every row of the hash tables of one type; returns how many values
/// were checked.
fn check_hash_placement(pg: &PgServer, case: &TypeCase) -> usize {
    pg.psql(DB, &hash_table_sql(case));
    let selects: Vec<String> = MODULI
        .iter()
        .map(|m| {
            format!(
                "SELECT 'row|' || {} || '|' || {} || '|' || tableoid::regclass::text FROM h_{}_{m}",
                hex_sql("k::text"),
                hex_sql("src"),
                case.sql
            )
        })
        .collect();
    let out = pg.psql(DB, &(selects.join(" UNION ALL ") + ";"));
    let mut checked = 0;
    let mut nulls = 0;
    for line in out.lines() {
        let fields: Vec<&str> = row_fields(line);
        assert_eq!(fields.len(), 3, "unexpected row {line:?}");
        let (modulus, remainder) = trailing_numbers(fields[2]);
        let want = Some(ShardId(remainder));
        let rule = ShardedTable {
            name: Some(format!("h_{}_{modulus}", case.sql)),
            schema: None,
            column: "k".into(),
            data_type: case.data_type,
            mapping: Mapping::Hash,
        };
        if fields[0] == "NULL" {
            assert_eq!(rule.shard(None, Format::Text, modulus), Ok(want), "NULL");
            nulls += 1;
            continue;
        }
        let canonical = String::from_utf8(unhex(fields[0])).unwrap();
        let sent = unhex(fields[1]);
        let binary = (case.binary)(&canonical);
        let context = format!("{} {canonical:?} modulus {modulus}", case.sql);
        assert_eq!(
            rule.shard(Some(canonical.as_bytes()), Format::Text, modulus),
            Ok(want),
            "text form of {context}"
        );
        assert_eq!(
            rule.shard(Some(&sent), Format::Text, modulus),
            Ok(want),
            "literal {:?} of {context}",
            String::from_utf8_lossy(&sent)
        );
        assert_eq!(
            rule.shard(Some(&binary), Format::Binary, modulus),
            Ok(want),
            "binary form of {context}"
        );
        checked += 1;
    }
    assert_eq!(nulls, MODULI.len(), "one NULL row per table");
    assert_eq!(checked, case.literals.len() * MODULI.len());
    checked
}

/// Compares the raw extended hashes with PostgreSQL's own support functions,
/// for the partition seed, seed 0 and a seed with a zero high half.
fn check_raw_hashes(pg: &PgServer, case: &TypeCase) {
    let seeds: [u64; 3] = [HASH_PARTITION_SEED, 0, 0x1234_5678];
    let columns: Vec<String> = seeds
        .iter()
        .map(|s| format!("{}(k, {})::text", case.hash_fn, *s as i64))
        .collect();
    let out = pg.psql(
        DB,
        &format!(
            "SELECT 'row|' || {} || '|' || {} FROM h_{}_2 WHERE k IS NOT NULL;",
            hex_sql("k::text"),
            columns.join(" || '|' || "),
            case.sql
        ),
    );
    let mut rows = 0;
    for line in out.lines() {
        let fields = row_fields(line);
        let canonical = String::from_utf8(unhex(fields[0])).unwrap();
        let key = Key::parse(case.data_type, Format::Text, canonical.as_bytes()).unwrap();
        for (seed, field) in seeds.iter().zip(&fields[1..]) {
            let want = field.parse::<i64>().unwrap() as u64;
            let got = match &key {
                Key::Int(v) => hash_int_extended(*v, *seed),
                Key::Text(bytes) => hash_bytes_extended(bytes, *seed),
                Key::Uuid(uuid) => hash_bytes_extended(uuid, *seed),
            };
            assert_eq!(got, want, "{}({canonical:?}, {seed:#x})", case.hash_fn);
        }
        rows += 1;
    }
    assert_eq!(rows, case.literals.len());
}

#[test]
fn hash_placement_matches_postgres() {
    let pg = server();
    let mut total = 0;
    for case in cases() {
        total += check_hash_placement(pg, &case);
        check_raw_hashes(pg, &case);
    }
    assert!(total > 1000, "only {total} placements checked");
}

/// Creates a partitioned table from `(bound, partition)` clauses, inserts
/// `literals` and NULL, and checks `mapping` places every row where
/// PostgreSQL did (partition `<name>_<n>` is shard n).
fn check_mapping(
    pg: &PgServer,
    name: &str,
    definition: &str,
    partitions: &[&str],
    data_type: DataType,
    mapping: Mapping,
    literals: &[&str],
) {
    let mut sql = format!("CREATE TABLE {name} (k {definition});\n");
    for (n, bound) in partitions.iter().enumerate() {
        sql.push_str(&format!(
            "CREATE TABLE {name}_{n} PARTITION OF {name} {bound};\n"
        ));
    }
    let rows: Vec<String> = literals
        .iter()
        .map(|l| format!("({})", quote(l)))
        .chain(std::iter::once("(NULL)".to_string()))
        .collect();
    sql.push_str(&format!("INSERT INTO {name} VALUES {};\n", rows.join(", ")));
    pg.psql(DB, &sql);
    let out = pg.psql(
        DB,
        &format!(
            "SELECT 'row|' || {} || '|' || tableoid::regclass::text FROM {name};",
            hex_sql("k::text")
        ),
    );
    let rule = ShardedTable {
        name: Some(name.to_string()),
        schema: None,
        column: "k".into(),
        data_type,
        mapping,
    };
    let shards = partitions.len() as u16;
    let mut rows = 0;
    for line in out.lines() {
        let [value, partition] = row_fields(line)[..] else {
            panic!("unexpected row {line:?}");
        };
        let n = partition.rsplit('_').next().unwrap().parse().unwrap();
        let bytes = (value != "NULL").then(|| unhex(value));
        assert_eq!(
            rule.shard(bytes.as_deref(), Format::Text, shards),
            Ok(Some(ShardId(n))),
            "{name}: {:?}",
            bytes.as_deref().map(String::from_utf8_lossy)
        );
        rows += 1;
    }
    assert_eq!(rows, literals.len() + 1);
}

fn int_range(start: Option<i64>, end: Option<i64>, shard: u16) -> RangeRule {
    RangeRule {
        start: start.map(MapValue::Int),
        end: end.map(MapValue::Int),
        shard: ShardId(shard),
    }
}

fn text_range(start: Option<&str>, end: Option<&str>, shard: u16) -> RangeRule {
    RangeRule {
        start: start.map(|s| MapValue::Text(s.into())),
        end: end.map(|s| MapValue::Text(s.into())),
        shard: ShardId(shard),
    }
}

#[test]
fn list_and_range_match_postgres() {
    let pg = server();
    let ints: Vec<String> = (-6..=12)
        .chain([99, 100, 101, 999, 1000, i64::MIN, i64::MAX])
        .map(|v: i64| v.to_string())
        .collect();
    let ints: Vec<&str> = ints.iter().map(String::as_str).collect();

    check_mapping(
        pg,
        "l_int",
        "bigint) PARTITION BY LIST (k",
        &[
            "FOR VALUES IN (1, 2, 3)",
            "FOR VALUES IN (10, -5)",
            "DEFAULT",
        ],
        DataType::BigInt,
        Mapping::Map {
            list: [(1, 0), (2, 0), (3, 0), (10, 1), (-5, 1)]
                .iter()
                .map(|&(v, s)| (MapValue::Int(v), ShardId(s)))
                .collect(),
            ranges: vec![],
            default: Some(ShardId(2)),
        },
        &ints,
    );

    check_mapping(
        pg,
        "r_int",
        "integer) PARTITION BY RANGE (k",
        &[
            "FOR VALUES FROM (MINVALUE) TO (0)",
            "FOR VALUES FROM (0) TO (100)",
            "FOR VALUES FROM (100) TO (1000)",
            "DEFAULT",
        ],
        DataType::Integer,
        Mapping::Map {
            list: vec![],
            ranges: vec![
                int_range(None, Some(0), 0),
                int_range(Some(0), Some(100), 1),
                int_range(Some(100), Some(1000), 2),
            ],
            default: Some(ShardId(3)),
        },
        &ints
            .iter()
            .copied()
            .filter(|v| v.parse::<i32>().is_ok())
            .collect::<Vec<_>>(),
    );

    let texts = [
        "", "a", "eu", "us", "ap", "EU", "g", "G", "f", "fzzz", "m", "mzz", "n", "z", "żółw",
        "日本",
    ];
    check_mapping(
        pg,
        "l_text",
        "text) PARTITION BY LIST (k",
        &[
            "FOR VALUES IN ('eu', 'us')",
            "FOR VALUES IN ('ap')",
            "DEFAULT",
        ],
        DataType::Text,
        Mapping::Map {
            list: [("eu", 0), ("us", 0), ("ap", 1)]
                .iter()
                .map(|&(v, s)| (MapValue::Text(v.into()), ShardId(s)))
                .collect(),
            ranges: vec![],
            default: Some(ShardId(2)),
        },
        &texts,
    );

    check_mapping(
        pg,
        "r_text",
        "varchar) PARTITION BY RANGE (k",
        &[
            "FOR VALUES FROM (MINVALUE) TO ('g')",
            "FOR VALUES FROM ('g') TO ('n')",
            "FOR VALUES FROM ('n') TO (MAXVALUE)",
            "DEFAULT",
        ],
        DataType::Varchar,
        Mapping::Map {
            list: vec![],
            ranges: vec![
                text_range(None, Some("g"), 0),
                text_range(Some("g"), Some("n"), 1),
                text_range(Some("n"), None, 2),
            ],
            default: Some(ShardId(3)),
        },
        &texts,
    );

    check_mapping(
        pg,
        "l_uuid",
        "uuid) PARTITION BY LIST (k",
        &[
            "FOR VALUES IN ('00000000-0000-0000-0000-000000000000', \
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
            "DEFAULT",
        ],
        DataType::Uuid,
        Mapping::Map {
            list: vec![
                // As pgdog.toml's values are read: parsed as Postgres does.
                (
                    uuid_value("00000000-0000-0000-0000-000000000000"),
                    ShardId(0),
                ),
                (
                    uuid_value("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
                    ShardId(0),
                ),
            ],
            ranges: vec![],
            default: Some(ShardId(1)),
        },
        &[
            "00000000-0000-0000-0000-000000000000",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ],
    );
}

/// Our text parser accepts exactly what the server's input functions accept,
/// for edge-case spellings (each literal is cast on the server on its own).
#[test]
fn text_parsing_agrees_with_postgres() {
    let pg = server();
    let cases: &[(&str, DataType, &[&str])] = &[
        (
            "bigint",
            DataType::BigInt,
            &[
                "0",
                " 1 ",
                "+1",
                "-0",
                "\t\n12\r",
                "",
                " ",
                "+",
                "-",
                "1 2",
                "1_000",
                "0x10",
                "1.0",
                "1e3",
                "- 1",
                "++1",
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775808",
                "-9223372036854775809",
                "00000000000000000000000001",
            ],
        ),
        (
            "smallint",
            DataType::SmallInt,
            &["32767", "32768", "-32768", "-32769", " +007 "],
        ),
        (
            "integer",
            DataType::Integer,
            &["2147483647", "2147483648", "-2147483648", "-2147483649"],
        ),
        (
            "uuid",
            DataType::Uuid,
            &[
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
                "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
                "a0eebc999c0b4ef8bb6d6bb9bd380a11",
                "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
                "a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
                "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
                "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
                " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ",
                "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "",
            ],
        ),
    ];
    for (sql_type, data_type, literals) in cases {
        for literal in *literals {
            let server = pg
                .try_psql(DB, &format!("SELECT {}::{sql_type}::text;", quote(literal)))
                .map(|text| Key::parse(*data_type, Format::Text, text.as_bytes()).unwrap());
            let ours = Key::parse(*data_type, Format::Text, literal.as_bytes());
            assert_eq!(
                ours.ok(),
                server.ok(),
                "{sql_type} literal {literal:?}: ours vs server"
            );
        }
    }
}

fn uuid_value(text: &str) -> MapValue {
    match Key::parse(DataType::Uuid, Format::Text, text.as_bytes()) {
        Ok(Key::Uuid(uuid)) => MapValue::Uuid(uuid),
        other => panic!("{text}: {other:?}"),
    }
}

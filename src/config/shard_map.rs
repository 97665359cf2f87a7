//! Each cluster's shard map, assembled from every sharding entry.
//!
//! Owns the rules that need more than one entry: a cluster's shard count
//! (max `shard` + 1 of its `[[databases]]`, with no shard left without a
//! server), sharding entries naming existing clusters and shards, which
//! `[[sharded_tables]]` entry a mapping belongs to, mapping values matching
//! the column's `data_type`, and no value or default mapped twice. It builds
//! `shards` types; it must not read TOML (sharding.rs did) nor route.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use shards::{DataType, Format, Key, MapValue, Mapping, RangeRule, ShardId, ShardingSchema};

use super::diagnostic::Diagnostics;
use super::sections::ParsedDatabase;
use super::sharding::{Located, MappingKind, Origin, ParsedMapping, ShardingSections};
use super::validate::where_;

/// Every cluster's sharding, by cluster name; clusters without sharding
/// entries get their shard count and nothing else.
pub(crate) type ShardMaps = HashMap<String, Arc<ShardingSchema>>;

pub(crate) fn build(
    diagnostics: &mut Diagnostics,
    databases: &[ParsedDatabase],
    sections: ShardingSections,
) -> ShardMaps {
    let mut schemas: BTreeMap<&str, ShardingSchema> = BTreeMap::new();
    for (cluster, shards) in shard_counts(diagnostics, databases) {
        let schema = ShardingSchema {
            shards,
            ..ShardingSchema::default()
        };
        schemas.insert(cluster, schema);
    }
    let mut builder = Builder {
        diagnostics,
        schemas,
        maps: Vec::new(),
    };
    builder.tables(&sections);
    for mapping in &sections.mappings {
        builder.mapping(&sections, mapping);
    }
    builder.omnisharded(&sections);
    builder.schemas(&sections);
    builder.finish(sections)
}

/// Shards per cluster: max `shard` + 1. Reports clusters with a shard no
/// server serves (a key hashed there would have nowhere to go).
fn shard_counts<'d>(
    diagnostics: &mut Diagnostics,
    databases: &'d [ParsedDatabase],
) -> Vec<(&'d str, u16)> {
    let mut clusters: Vec<(&str, BTreeSet<u16>, &ParsedDatabase)> = Vec::new();
    for entry in databases {
        let name = entry.database.name.as_str();
        let shard = entry.database.shard;
        match clusters.iter_mut().find(|(cluster, _, _)| *cluster == name) {
            Some((_, shards, highest)) => {
                if shard > highest.database.shard {
                    *highest = entry;
                }
                shards.insert(shard);
            }
            None => clusters.push((name, BTreeSet::from([shard]), entry)),
        }
    }
    let mut counts = Vec::with_capacity(clusters.len());
    for (name, present, highest) in clusters {
        let top = highest.database.shard;
        let missing: Vec<u16> = (0..top).filter(|s| !present.contains(s)).collect();
        if !missing.is_empty() {
            let present: Vec<u16> = present.into_iter().collect();
            diagnostics.error(
                &highest.file,
                highest.lines.line("shard"),
                &format!("{}.shard", highest.prefix),
                format!(
                    "database `{name}` has servers for {} but none for {}",
                    shard_list(&present),
                    shard_list(&missing)
                ),
            );
        }
        // `shard` is a u16, so top + 1 overflows only for shard 65535.
        counts.push((name, top.saturating_add(1)));
    }
    counts
}

/// "shard 1", "shards 0 and 2", "shards 0, 1 and 3".
fn shard_list(shards: &[u16]) -> String {
    let names: Vec<String> = shards.iter().map(u16::to_string).collect();
    match names.as_slice() {
        [one] => format!("shard {one}"),
        [init @ .., last] => format!("shards {} and {last}", init.join(", ")),
        [] => "no shard".to_string(),
    }
}

/// A list entry with where it was written, for "already mapped" messages.
struct Listed {
    value: MapValue,
    shard: ShardId,
    at: String,
}

/// The mapping being built for one `[[sharded_tables]]` entry.
#[derive(Default)]
struct MapBuilder {
    list: Vec<Listed>,
    ranges: Vec<RangeRule>,
    default: Option<(ShardId, String)>,
}

struct Builder<'a, 'd> {
    diagnostics: &'a mut Diagnostics,
    schemas: BTreeMap<&'d str, ShardingSchema>,
    /// Aligned with `ShardingSections::tables`; None for tables naming no
    /// cluster, and for tables no mapping names.
    maps: Vec<Option<MapBuilder>>,
}

impl Builder<'_, '_> {
    fn error(&mut self, origin: &Origin, key: &str, line: usize, message: String) {
        self.diagnostics
            .error(&origin.file, line, &origin.key(key), message);
    }

    /// The cluster's shard count, or an error at `origin`'s `database` key.
    fn shards(&mut self, origin: &Origin, database: &str) -> Option<u16> {
        match self.schemas.get(database) {
            Some(schema) => Some(schema.shards),
            None => {
                let line = origin.lines.line("database");
                let message = format!("database `{database}` is not defined in [[databases]]");
                self.error(origin, "database", line, message);
                None
            }
        }
    }

    /// A `shard` key below the cluster's shard count.
    fn check_shard(&mut self, origin: &Origin, database: &str, shard: ShardId) -> bool {
        let Some(shards) = self.shards(origin, database) else {
            return false;
        };
        if shard.0 < shards {
            return true;
        }
        let line = origin.lines.line("shard");
        let message = format!(
            "shard {} does not exist: database `{database}` has {shards} shard{} (0..{})",
            shard.0,
            if shards == 1 { "" } else { "s" },
            shards - 1
        );
        self.error(origin, "shard", line, message);
        false
    }

    fn tables(&mut self, sections: &ShardingSections) {
        for table in &sections.tables {
            let known = self.shards(&table.origin, &table.database).is_some();
            self.maps.push(known.then(MapBuilder::default));
        }
    }

    fn mapping(&mut self, sections: &ShardingSections, mapping: &ParsedMapping) {
        let origin = &mapping.origin;
        if !self.check_shard(origin, &mapping.database, mapping.shard) {
            return;
        }
        let targets: Vec<usize> = match mapping.parent {
            Some(parent) => vec![parent],
            None => sections
                .tables
                .iter()
                .enumerate()
                .filter(|(_, table)| names_table(mapping, table))
                .map(|(index, _)| index)
                .collect(),
        };
        if targets.is_empty() {
            let message = format!(
                "no [[sharded_tables]] entry for database `{}`, {}column `{}`",
                mapping.database,
                mapping
                    .table
                    .as_ref()
                    .map_or(String::new(), |t| format!("table `{t}`, ")),
                mapping.column
            );
            self.error(origin, "column", origin.lines.line("column"), message);
            return;
        }
        // One mapping may name several tables; report each problem once.
        let mut reported = HashSet::new();
        for target in targets {
            let data_type = sections.tables[target].table.data_type;
            let problems = match &typed_mapping(mapping, data_type) {
                Ok(typed) => self.maps[target]
                    .as_mut()
                    .map(|map| map.add(mapping, typed))
                    .unwrap_or_default(),
                Err(problem) => vec![problem.clone()],
            };
            for (key, line, message) in problems {
                if reported.insert((key, line, message.clone())) {
                    self.error(origin, key, line, message);
                }
            }
        }
    }

    fn omnisharded(&mut self, sections: &ShardingSections) {
        for entry in &sections.omnisharded {
            if self.shards(&entry.origin, &entry.database).is_none() {
                continue;
            }
            let Some(schema) = self.schemas.get_mut(entry.database.as_str()) else {
                continue;
            };
            for table in &entry.tables {
                if !schema.omnisharded.contains(table) {
                    schema.omnisharded.push(table.clone());
                }
            }
        }
    }

    fn schemas(&mut self, sections: &ShardingSections) {
        let mut seen: HashMap<(&str, Option<&str>), &Origin> = HashMap::new();
        for entry in &sections.schemas {
            let origin = &entry.origin;
            if !self.check_shard(origin, &entry.database, entry.schema.shard) {
                continue;
            }
            let key = (entry.database.as_str(), entry.schema.name.as_deref());
            if let Some(first) = seen.get(&key) {
                let what = match &entry.schema.name {
                    Some(name) => format!("schema `{name}`"),
                    None => "the default schema (no `name`)".to_string(),
                };
                let message = format!(
                    "{what} of database `{}` is already mapped (at {})",
                    entry.database,
                    where_(&first.file, first.lines.header)
                );
                let line = origin.lines.line("name");
                self.error(origin, "name", line, message);
                continue;
            }
            seen.insert(key, origin);
            if let Some(schema) = self.schemas.get_mut(entry.database.as_str()) {
                schema.schemas.push(entry.schema.clone());
            }
        }
    }

    fn finish(self, sections: ShardingSections) -> ShardMaps {
        let mut schemas = self.schemas;
        for (table, map) in sections.tables.into_iter().zip(self.maps) {
            let Some(map) = map else {
                continue;
            };
            let Some(schema) = schemas.get_mut(table.database.as_str()) else {
                continue;
            };
            let mut sharded = table.table;
            sharded.mapping = map.into_mapping();
            schema.tables.push(sharded);
        }
        schemas
            .into_iter()
            .map(|(name, schema)| (name.to_string(), Arc::new(schema)))
            .collect()
    }
}

/// A top-level mapping names a table by database and column, plus `table`
/// and `schema` when it gives them.
fn names_table(mapping: &ParsedMapping, table: &super::sharding::ParsedShardedTable) -> bool {
    table.database == mapping.database
        && table.table.column == mapping.column
        && mapping
            .table
            .as_ref()
            .is_none_or(|name| table.table.name.as_ref() == Some(name))
        && mapping
            .schema
            .as_ref()
            .is_none_or(|schema| table.table.schema.as_ref() == Some(schema))
}

/// (key, line, message) of one problem with a mapping.
type Problem = (&'static str, usize, String);

/// A mapping's values converted for the table's `data_type`.
struct TypedMapping {
    values: Vec<Located>,
    start: Option<MapValue>,
    end: Option<MapValue>,
}

/// Values typed for `data_type`; `Err` at the first value of the wrong type.
fn typed_mapping(mapping: &ParsedMapping, data_type: DataType) -> Result<TypedMapping, Problem> {
    let values = mapping
        .values
        .iter()
        .map(|(value, line)| Ok((typed_value(value, data_type, "values", *line)?, *line)))
        .collect::<Result<Vec<_>, Problem>>()?;
    let bound = |bound: &Option<Located>, key| {
        bound
            .as_ref()
            .map(|(value, line)| typed_value(value, data_type, key, *line))
            .transpose()
    };
    let start = bound(&mapping.start, "start")?;
    let end = bound(&mapping.end, "end")?;
    if let (Some(start), Some(end)) = (&start, &end) {
        if start >= end {
            let line = mapping.end.as_ref().map_or(0, |(_, line)| *line);
            let message = format!(
                "must be greater than `start` {} (ranges are [start, end))",
                shown(start)
            );
            return Err(("end", line, message));
        }
    }
    Ok(TypedMapping { values, start, end })
}

fn shown(value: &MapValue) -> String {
    match value {
        MapValue::Int(value) => value.to_string(),
        MapValue::Text(value) => format!("\"{value}\""),
        MapValue::Uuid(uuid) => format!("\"{}\"", Key::uuid_text(uuid)),
    }
}

/// One value checked against the column's type: integers (in range) for
/// integer types, strings for text, UUIDs (parsed as Postgres parses them)
/// for uuid.
fn typed_value(
    value: &MapValue,
    data_type: DataType,
    key: &'static str,
    line: usize,
) -> Result<MapValue, Problem> {
    let name = data_type.sql_name();
    let problem = |why: String| (key, line, why);
    match (data_type, value) {
        (DataType::BigInt | DataType::Integer | DataType::SmallInt, MapValue::Int(int)) => {
            let (min, max) = data_type.int_range().unwrap_or((i64::MIN, i64::MAX));
            if *int < min || *int > max {
                return Err(problem(format!("{int} is out of range for {name}")));
            }
            Ok(value.clone())
        }
        (DataType::BigInt | DataType::Integer | DataType::SmallInt, MapValue::Text(text)) => {
            Err(problem(format!(
                "\"{text}\" is a string, but the sharded column is {name}; expected integers"
            )))
        }
        (DataType::Text | DataType::Varchar, MapValue::Text(_)) => Ok(value.clone()),
        (DataType::Uuid, MapValue::Text(text)) => {
            match Key::parse(DataType::Uuid, Format::Text, text.as_bytes()) {
                Ok(Key::Uuid(uuid)) => Ok(MapValue::Uuid(uuid)),
                _ => Err(problem(format!("\"{text}\" is not a UUID"))),
            }
        }
        (DataType::Uuid, MapValue::Uuid(_)) => Ok(value.clone()),
        (_, MapValue::Uuid(_)) => Err(problem(format!(
            "{} is a UUID, but the sharded column is {name}",
            shown(value)
        ))),
        (DataType::Text | DataType::Varchar | DataType::Uuid, MapValue::Int(int)) => Err(problem(
            format!("{int} is an integer, but the sharded column is {name}; expected strings"),
        )),
    }
}

impl MapBuilder {
    /// Adds one mapping's entries; returns what clashed with earlier ones.
    fn add(&mut self, mapping: &ParsedMapping, typed: &TypedMapping) -> Vec<Problem> {
        let origin = &mapping.origin;
        let at = |line| where_(&origin.file, line);
        let mut problems = Vec::new();
        match mapping.kind {
            MappingKind::List => {
                for (value, line) in &typed.values {
                    if let Some(first) = self.list.iter().find(|l| &l.value == value) {
                        problems.push((
                            "values",
                            *line,
                            format!(
                                "value {} is already mapped to shard {} (at {})",
                                shown(value),
                                first.shard.0,
                                first.at
                            ),
                        ));
                        continue;
                    }
                    self.list.push(Listed {
                        value: value.clone(),
                        shard: mapping.shard,
                        at: at(*line),
                    });
                }
            }
            MappingKind::Range => self.ranges.push(RangeRule {
                start: typed.start.clone(),
                end: typed.end.clone(),
                shard: mapping.shard,
            }),
            MappingKind::Default => match &self.default {
                Some((shard, first)) => problems.push((
                    "kind",
                    origin.lines.line("kind"),
                    format!(
                        "a default shard is already set for this table (shard {}, at {first})",
                        shard.0
                    ),
                )),
                None => self.default = Some((mapping.shard, at(origin.lines.line("kind")))),
            },
        }
        problems
    }

    fn into_mapping(self) -> Mapping {
        if self.list.is_empty() && self.ranges.is_empty() && self.default.is_none() {
            return Mapping::Hash;
        }
        Mapping::Map {
            list: self
                .list
                .into_iter()
                .map(|listed| (listed.value, listed.shard))
                .collect(),
            ranges: self.ranges,
            default: self.default.map(|(shard, _)| shard),
        }
    }
}

#[cfg(test)]
mod tests {
    // End to end through `config::parse`, so lines come from real TOML.
    use super::*;
    use crate::config::{parse, Loaded, PoolSpec};
    use std::path::Path;

    const USERS: &str = "[[users]]\nname = \"alice\"\npassword = \"pw\"\nall_databases = true\n";

    /// Two clusters: `app` with shards 0..=2, `solo` with one shard.
    const DATABASES: &str = "[[databases]]\nname = \"app\"\nhost = \"h\"\nshard = 0\n[[databases]]\nname = \"app\"\nhost = \"h\"\nshard = 1\n[[databases]]\nname = \"app\"\nhost = \"h\"\nshard = 2\n[[databases]]\nname = \"solo\"\nhost = \"h\"\n";
    /// Lines taken by `DATABASES`; sharding sections start at line 16.
    const FIRST: usize = 16;

    fn run(sharding: &str, users: &str) -> Result<Loaded, Vec<String>> {
        let config = format!("{DATABASES}{sharding}");
        parse(
            &config,
            Path::new("pgdog.toml"),
            users,
            Path::new("users.toml"),
            &[],
        )
        .map_err(|errors| errors.0.iter().map(|e| e.to_string()).collect())
    }

    fn ok(sharding: &str) -> Loaded {
        run(sharding, USERS).unwrap_or_else(|errors| panic!("unexpected errors: {errors:#?}"))
    }

    fn errors(sharding: &str) -> Vec<String> {
        match run(sharding, USERS) {
            Ok(loaded) => panic!("expected errors, got {:#?}", loaded.config.sharding),
            Err(errors) => errors,
        }
    }

    fn pool(loaded: &Loaded, database: &str) -> PoolSpec {
        let pools = loaded.config.pools();
        pools.into_iter().find(|p| p.database == database).unwrap()
    }

    /// `line` counted from the first sharding line (1-based).
    fn at(line: usize) -> String {
        format!("pgdog.toml:{}", FIRST + line - 1)
    }

    #[test]
    fn hash_list_range_default_omnisharded_and_schemas() {
        let loaded = ok(r#"[[sharded_tables]]
database = "app"
name = "users"
column = "id"

[[sharded_tables]]
database = "app"
name = "orders"
schema = "sales"
column = "region"
data_type = "TEXT"

[[sharded_mapping]]
database = "app"
column = "region"
values = ["eu", "uk"]
shard = 1

[[sharded_mappings]]
database = "app"
table = "orders"
column = "region"
kind = "list"
values = ["us"]
shard = 2

[[sharded_tables]]
database = "app"
name = "events"
column = "at"
data_type = "int"

[[sharded_tables.mapping]]
end = 100
shard = 0

[[sharded_tables.mapping]]
start = 100
end = 200
shard = 1

[[sharded_tables.mapping]]
kind = "default"
shard = 2

[[omnisharded_tables]]
database = "app"
tables = ["countries", "currencies"]

[[omnisharded_tables]]
database = "app"
name = "settings"

[[sharded_schemas]]
database = "app"
name = "tenant_a"
shard = 1

[[sharded_schemas]]
database = "app"
shard = 2
"#);
        assert!(loaded
            .warnings
            .iter()
            .all(|w| !w.message.contains("not implemented")));
        let app = pool(&loaded, "app");
        let schema = &app.sharding;
        assert_eq!(schema.shards, 3);
        assert_eq!(schema.tables.len(), 3);
        let users = &schema.tables[0];
        assert_eq!(
            (
                users.name.as_deref(),
                users.schema.as_deref(),
                users.column.as_str()
            ),
            (Some("users"), None, "id")
        );
        assert_eq!(
            (users.data_type, &users.mapping),
            (DataType::BigInt, &Mapping::Hash)
        );
        let orders = &schema.tables[1];
        assert_eq!(orders.schema.as_deref(), Some("sales"));
        assert_eq!(orders.data_type, DataType::Text);
        let text = |s: &str| MapValue::Text(s.into());
        assert_eq!(
            orders.mapping,
            Mapping::Map {
                list: vec![
                    (text("eu"), ShardId(1)),
                    (text("uk"), ShardId(1)),
                    (text("us"), ShardId(2))
                ],
                ranges: vec![],
                default: None,
            }
        );
        let events = &schema.tables[2];
        assert_eq!(events.data_type, DataType::Integer);
        assert_eq!(
            events.mapping,
            Mapping::Map {
                list: vec![],
                ranges: vec![
                    RangeRule {
                        start: None,
                        end: Some(MapValue::Int(100)),
                        shard: ShardId(0)
                    },
                    RangeRule {
                        start: Some(MapValue::Int(100)),
                        end: Some(MapValue::Int(200)),
                        shard: ShardId(1)
                    },
                ],
                default: Some(ShardId(2)),
            }
        );
        assert_eq!(schema.omnisharded, ["countries", "currencies", "settings"]);
        assert_eq!(
            schema.schemas,
            [
                shards::ShardedSchema {
                    name: Some("tenant_a".into()),
                    shard: ShardId(1)
                },
                shards::ShardedSchema {
                    name: None,
                    shard: ShardId(2)
                },
            ]
        );
        let solo = pool(&loaded, "solo");
        assert_eq!(
            *solo.sharding,
            ShardingSchema {
                shards: 1,
                ..ShardingSchema::default()
            }
        );
        assert_eq!(loaded.config.sharding.len(), 2);
    }

    #[test]
    fn data_types_and_their_aliases() {
        for (written, expected) in [
            ("bigint", DataType::BigInt),
            ("BIGINT", DataType::BigInt),
            ("int8", DataType::BigInt),
            ("integer", DataType::Integer),
            ("int", DataType::Integer),
            ("Int4", DataType::Integer),
            ("smallint", DataType::SmallInt),
            ("int2", DataType::SmallInt),
            ("text", DataType::Text),
            ("varchar", DataType::Varchar),
            ("uuid", DataType::Uuid),
        ] {
            let loaded = ok(&format!(
                "[[sharded_tables]]\ndatabase = \"app\"\ncolumn = \"k\"\ndata_type = \"{written}\"\nhasher = \"postgres\"\n"
            ));
            assert_eq!(
                pool(&loaded, "app").sharding.tables[0].data_type,
                expected,
                "{written}"
            );
        }
        let allowed = "expected one of `bigint`, `int8`, `integer`, `int`, `int4`, `smallint`, `int2`, `text`, `varchar`, `uuid`";
        assert_eq!(
            errors("[[sharded_tables]]\ndatabase = \"app\"\ncolumn = \"k\"\ndata_type = \"float\"\n\n[[sharded_tables]]\ndatabase = \"app\"\ncolumn = \"v\"\ndata_type = \"vector\"\nhasher = \"sha1\"\n"),
            [
                format!("{}: key `sharded_tables[0].data_type`: unknown value `float`; {allowed}", at(4)),
                format!("{}: key `sharded_tables[1].data_type`: `vector` (pgvector centroid sharding) is not supported by sleddog; {allowed}", at(9)),
                format!("{}: key `sharded_tables[1].hasher`: `sha1` is not supported: sleddog only shards with PostgreSQL's hash functions; expected one of `postgres`", at(10)),
            ]
        );
    }

    #[test]
    fn pgdog_keys_sleddog_ignores_warn() {
        let loaded = ok("[[sharded_tables]]\ndatabase = \"app\"\ncolumn = \"k\"\nprimary = true\ncentroids = [[1.0, 2.0]]\ncentroids_path = \"c.json\"\ncentroid_probes = 2\n\n[[omnisharded_tables]]\ndatabase = \"app\"\ntables = [\"t\"]\nsticky = true\n\n[[sharded_schemas]]\ndatabase = \"app\"\nname = \"s\"\nall = true\n");
        let warned: Vec<_> = loaded
            .warnings
            .iter()
            .filter(|w| w.message == crate::config::known::IGNORED)
            .map(|w| (w.line - FIRST + 1, w.key.as_str()))
            .collect();
        assert_eq!(
            warned,
            [
                (4, "sharded_tables[0].primary"),
                (5, "sharded_tables[0].centroids"),
                (6, "sharded_tables[0].centroids_path"),
                (7, "sharded_tables[0].centroid_probes"),
                (12, "omnisharded_tables[0].sticky"),
                (17, "sharded_schemas[0].all"),
            ]
        );
        assert_eq!(
            errors("[[sharded_tables]]\ndatabase = \"app\"\ncolumn = \"k\"\nmodulus = 3\n"),
            [format!(
                "{}: key `sharded_tables[0].modulus`: unknown key (not a PgDog setting)",
                at(4)
            )]
        );
    }

    #[test]
    fn required_keys() {
        assert_eq!(
            errors("[[sharded_tables]]\nname = \"t\"\n\n[[sharded_mapping]]\ndatabase = \"app\"\nvalues = [1]\n\n[[omnisharded_tables]]\ndatabase = \"app\"\n\n[[omnisharded_tables]]\ntables = []\n\n[[sharded_schemas]]\nname = \"s\"\n\n[[sharded_mapping]]\ndatabase = \"app\"\ncolumn = \"k\"\nshard = 0\n"),
            [
                format!("{}: key `sharded_tables[0].database`: required", at(1)),
                format!("{}: key `sharded_tables[0].column`: required", at(1)),
                format!("{}: key `sharded_mapping[0].column`: required", at(4)),
                format!("{}: key `sharded_mapping[0].shard`: required", at(4)),
                format!("{}: key `omnisharded_tables[0].tables`: required (or `name` for one table)", at(8)),
                format!("{}: key `omnisharded_tables[1].database`: required", at(11)),
                format!("{}: key `sharded_schemas[0].database`: required", at(14)),
                format!("{}: key `sharded_mapping[1].kind`: required: set `kind`, or `values` (a list) or `start`/`end` (a range)", at(17)),
            ]
        );
    }

    #[test]
    fn entries_must_name_a_cluster_and_a_shard_it_has() {
        assert_eq!(
            errors("[[sharded_tables]]\ndatabase = \"nope\"\ncolumn = \"k\"\n\n[[sharded_tables]]\ndatabase = \"app\"\ncolumn = \"k\"\n\n[[sharded_mapping]]\ndatabase = \"app\"\ncolumn = \"k\"\nvalues = [1]\nshard = 3\n\n[[omnisharded_tables]]\ndatabase = \"gone\"\ntables = [\"t\"]\n\n[[sharded_schemas]]\ndatabase = \"solo\"\nname = \"s\"\nshard = 1\n\n[[sharded_mapping]]\ndatabase = \"app\"\ncolumn = \"other\"\ntable = \"t\"\nvalues = [1]\nshard = 0\n"),
            [
                format!("{}: key `sharded_tables[0].database`: database `nope` is not defined in [[databases]]", at(2)),
                format!("{}: key `sharded_mapping[0].shard`: shard 3 does not exist: database `app` has 3 shards (0..2)", at(13)),
                format!("{}: key `omnisharded_tables[0].database`: database `gone` is not defined in [[databases]]", at(16)),
                format!("{}: key `sharded_schemas[0].shard`: shard 1 does not exist: database `solo` has 1 shard (0..0)", at(22)),
                format!("{}: key `sharded_mapping[1].column`: no [[sharded_tables]] entry for database `app`, table `t`, column `other`", at(26)),
            ]
        );
    }

    #[test]
    fn values_must_match_the_data_type() {
        let table = |data_type: &str, values: &str| {
            format!("[[sharded_tables]]\ndatabase = \"app\"\ncolumn = \"k\"\ndata_type = \"{data_type}\"\n[[sharded_tables.mapping]]\nvalues = {values}\nshard = 0\n")
        };
        let key = "sharded_tables[0].mapping[0].values";
        for (data_type, values, why) in [
            (
                "bigint",
                "[1, \"2\"]",
                "\"2\" is a string, but the sharded column is bigint; expected integers",
            ),
            ("smallint", "[40000]", "40000 is out of range for smallint"),
            (
                "integer",
                "[3000000000]",
                "3000000000 is out of range for integer",
            ),
            (
                "text",
                "[\"a\", 7]",
                "7 is an integer, but the sharded column is text; expected strings",
            ),
            ("uuid", "[\"not-a-uuid\"]", "\"not-a-uuid\" is not a UUID"),
        ] {
            assert_eq!(
                errors(&table(data_type, values)),
                [format!("{}: key `{key}`: {why}", at(6))],
                "{data_type}"
            );
        }
        assert_eq!(
            errors(&table("bigint", "[1.5]")),
            [format!(
                "{}: key `{key}`: expected an integer or a string, found float",
                at(6)
            )]
        );
        let loaded = ok(&table("uuid", "[\"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11\"]"));
        let Mapping::Map { list, .. } = &pool(&loaded, "app").sharding.tables[0].mapping else {
            panic!("not a map");
        };
        let uuid = [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ];
        assert_eq!(list[0].0, MapValue::Uuid(uuid));
        // Every form Postgres reads is read here too (Key::parse).
        let loaded = ok(&table(
            "uuid",
            "[\"a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11\"]",
        ));
        let Mapping::Map { list, .. } = &pool(&loaded, "app").sharding.tables[0].mapping else {
            panic!("not a map");
        };
        assert_eq!(list[0].0, MapValue::Uuid(uuid));
        assert_eq!(
            errors("[[sharded_tables]]\ndatabase = \"app\"\ncolumn = \"k\"\n[[sharded_tables.mapping]]\nstart = 10\nend = 10\nshard = 0\n"),
            [format!("{}: key `sharded_tables[0].mapping[0].end`: must be greater than `start` 10 (ranges are [start, end))", at(6))]
        );
    }

    #[test]
    fn a_value_or_default_mapped_twice() {
        assert_eq!(
            errors("[[sharded_tables]]\ndatabase = \"app\"\ncolumn = \"k\"\n\n[[sharded_mapping]]\ndatabase = \"app\"\ncolumn = \"k\"\nvalues = [1, 2]\nshard = 0\n\n[[sharded_mapping]]\ndatabase = \"app\"\ncolumn = \"k\"\nvalues = [3,\n  2]\nshard = 1\n\n[[sharded_mapping]]\ndatabase = \"app\"\ncolumn = \"k\"\nkind = \"default\"\nshard = 1\n\n[[sharded_mapping]]\ndatabase = \"app\"\ncolumn = \"k\"\nkind = \"default\"\nshard = 2\n"),
            [
                format!("{}: key `sharded_mapping[1].values`: value 2 is already mapped to shard 0 (at {})", at(15), at(8)),
                format!("{}: key `sharded_mapping[3].kind`: a default shard is already set for this table (shard 1, at {})", at(27), at(21)),
            ]
        );
    }

    #[test]
    fn a_mapping_is_one_kind() {
        let mapping = |body: &str| {
            format!("[[sharded_tables]]\ndatabase = \"app\"\ncolumn = \"k\"\n[[sharded_tables.mapping]]\nshard = 0\n{body}")
        };
        let key = "sharded_tables[0].mapping[0]";
        for (body, line, why) in [
            ("values = [1]\nstart = 2\n", 6, "values`: set together with `start`/`end`; a mapping is a list or a range, not both"),
            ("kind = \"list\"\nend = 2\n", 7, "end`: `start`/`end` belong to range mappings"),
            ("kind = \"range\"\nvalues = [1]\n", 7, "values`: `values` belong to list mappings"),
            ("kind = \"default\"\nvalues = [1]\n", 7, "values`: a default mapping takes no `values`, `start` or `end`"),
            ("kind = \"list\"\n", 6, "values`: required for a list mapping"),
            ("values = []\n", 6, "values`: must not be empty"),
            ("kind = \"hash\"\n", 6, "kind`: unknown value `hash`; expected one of `list`, `range`, `default`"),
        ] {
            assert_eq!(errors(&mapping(body)), [format!("{}: key `{key}.{why}", at(line))], "{body}");
        }
        // An open range on both sides is everything: accepted, as PgDog does.
        ok(&mapping("kind = \"range\"\n"));
    }

    #[test]
    fn a_nested_mapping_belongs_to_its_table() {
        let loaded = ok("[[sharded_tables]]\ndatabase = \"app\"\nname = \"a\"\ncolumn = \"k\"\n\n[[sharded_tables]]\ndatabase = \"app\"\nname = \"b\"\ncolumn = \"k\"\n[[sharded_tables.mapping]]\ndatabase = \"app\"\ncolumn = \"k\"\nvalues = [1]\nshard = 2\n");
        let tables = &pool(&loaded, "app").sharding.tables;
        assert_eq!(tables[0].mapping, Mapping::Hash);
        assert_ne!(tables[1].mapping, Mapping::Hash);
        assert_eq!(
            errors("[[sharded_tables]]\ndatabase = \"app\"\ncolumn = \"k\"\n[[sharded_tables.mapping]]\ncolumn = \"j\"\nvalues = [1]\nshard = 0\n"),
            [format!("{}: key `sharded_tables[0].mapping[0].column`: `j` differs from the enclosing [[sharded_tables]] entry's `k`", at(5))]
        );
        // The enclosing entry's own error is enough.
        assert_eq!(
            errors("[[sharded_tables]]\ndatabase = \"app\"\n[[sharded_tables.mapping]]\nvalues = [1]\nshard = 0\n"),
            [format!("{}: key `sharded_tables[0].column`: required", at(1))]
        );
    }

    #[test]
    fn a_top_level_mapping_names_every_matching_table() {
        let config = "[[sharded_tables]]\ndatabase = \"app\"\nname = \"a\"\ncolumn = \"k\"\n\n[[sharded_tables]]\ndatabase = \"app\"\nname = \"b\"\ncolumn = \"k\"\n\n[[sharded_mapping]]\ndatabase = \"app\"\ncolumn = \"k\"\nvalues = [1]\nshard = 1\n";
        let loaded = ok(config);
        let tables = &pool(&loaded, "app").sharding.tables;
        assert!(tables.iter().all(|t| t.mapping != Mapping::Hash));
        let loaded = ok(&config.replace(
            "column = \"k\"\nvalues",
            "table = \"b\"\ncolumn = \"k\"\nvalues",
        ));
        let tables = &pool(&loaded, "app").sharding.tables;
        assert_eq!(
            (
                tables[0].mapping == Mapping::Hash,
                tables[1].mapping == Mapping::Hash
            ),
            (true, false)
        );
        // A clash in a mapping naming two tables is reported once.
        let twice = format!("{config}\n[[sharded_mapping]]\ndatabase = \"app\"\ncolumn = \"k\"\nvalues = [1]\nshard = 2\n");
        assert_eq!(errors(&twice).len(), 1);
    }

    #[test]
    fn a_schema_mapped_twice() {
        assert_eq!(
            errors("[[sharded_schemas]]\ndatabase = \"app\"\nshard = 1\n\n[[sharded_schemas]]\ndatabase = \"app\"\nshard = 2\n\n[[sharded_schemas]]\ndatabase = \"app\"\nname = \"s\"\n\n[[sharded_schemas]]\ndatabase = \"app\"\nname = \"s\"\n"),
            [
                format!("{}: key `sharded_schemas[1].name`: the default schema (no `name`) of database `app` is already mapped (at {})", at(5), at(1)),
                format!("{}: key `sharded_schemas[3].name`: schema `s` of database `app` is already mapped (at {})", at(15), at(9)),
            ]
        );
    }

    #[test]
    fn every_shard_needs_a_server() {
        let config = "[[databases]]\nname = \"x\"\nhost = \"h\"\n[[databases]]\nname = \"x\"\nhost = \"h\"\nshard = 2\n[[databases]]\nname = \"y\"\nhost = \"h\"\nshard = 3\n";
        let found = parse(
            config,
            Path::new("pgdog.toml"),
            "",
            Path::new("users.toml"),
            &[],
        )
        .unwrap_err()
        .0
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>();
        assert_eq!(
            found,
            [
                "pgdog.toml:7: key `databases[1].shard`: database `x` has servers for shards 0 and 2 but none for shard 1",
                "pgdog.toml:11: key `databases[2].shard`: database `y` has servers for shard 3 but none for shards 0, 1 and 2",
            ]
        );
    }

    #[test]
    fn cross_shard_disabled_and_omnisharded_sticky() {
        let general = "[general]\ncross_shard_disabled = true\nomnisharded_sticky = true\n";
        let config = format!("{general}{DATABASES}");
        let users = "[[users]]\nname = \"alice\"\npassword = \"pw\"\ndatabase = \"app\"\n\n[[users]]\nname = \"bob\"\npassword = \"pw\"\ndatabase = \"app\"\ncross_shard_disabled = false\n";
        let loaded = parse(
            &config,
            Path::new("pgdog.toml"),
            users,
            Path::new("users.toml"),
            &[],
        )
        .unwrap();
        assert!(loaded
            .warnings
            .iter()
            .all(|w| !w.message.contains("not implemented")));
        let pools = loaded.config.pools();
        let flags: Vec<_> = pools
            .iter()
            .map(|p| {
                (
                    p.user.as_str(),
                    p.cross_shard_disabled,
                    p.omnisharded_sticky,
                )
            })
            .collect();
        assert_eq!(flags, [("alice", true, true), ("bob", false, true)]);
        let defaults = ok("");
        let general = &defaults.config.general;
        assert_eq!(
            (general.cross_shard_disabled, general.omnisharded_sticky),
            (false, false)
        );

        let bad = "[general]\ncross_shard_disabled = 1\nomnisharded_sticky = \"yes\"\n";
        let found = parse(
            bad,
            Path::new("pgdog.toml"),
            "[[users]]\nname = \"a\"\ncross_shard_disabled = \"no\"\n",
            Path::new("users.toml"),
            &[],
        )
        .unwrap_err()
        .0
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>();
        assert_eq!(
            found,
            [
                "pgdog.toml:2: key `general.cross_shard_disabled`: expected a boolean, found integer",
                "pgdog.toml:3: key `general.omnisharded_sticky`: expected a boolean, found string",
                "users.toml:1: key `users[0].database`: user `a` names no database; set `database`, `databases` or `all_databases = true`",
                "users.toml:3: key `users[0].cross_shard_disabled`: expected a boolean, found string",
            ]
        );
    }

    #[test]
    fn shard_lists_read_as_english() {
        assert_eq!(shard_list(&[1]), "shard 1");
        assert_eq!(shard_list(&[0, 2]), "shards 0 and 2");
        assert_eq!(shard_list(&[0, 1, 3]), "shards 0, 1 and 3");
    }
}

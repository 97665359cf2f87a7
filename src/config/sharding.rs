//! The sharding sections of pgdog.toml, one entry at a time:
//! `[[sharded_tables]]` (with its nested `[[sharded_tables.mapping]]`),
//! `[[sharded_mapping]]` / `[[sharded_mappings]]`, `[[omnisharded_tables]]`
//! and `[[sharded_schemas]]`.
//!
//! Owns which keys these sections accept, PgDog's defaults for them and the
//! per-entry rules (required keys, `data_type` and `hasher` values, a
//! mapping's kind). Whether a named cluster exists, how many shards it has
//! and which table a mapping belongs to need every entry: shard_map.rs.
//!
//! Source: pgdog-config/src/sharding.rs in github.com/pgdogdev/pgdog and
//! docs.pgdog.dev/configuration/pgdog.toml/sharded_tables/.

use std::path::PathBuf;

use shards::{DataType, MapValue, Mapping, ShardId, ShardedSchema, ShardedTable};

use super::known::Scope;
use super::raw::{Kind, Node, RawTable};
use super::read::{self, path, Ctx};
use super::sections::{table_array, KeyLines};

/// Where an entry came from, for messages about it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Origin {
    pub file: PathBuf,
    /// Key prefix for messages, e.g. `sharded_tables[1]`.
    pub prefix: String,
    pub lines: KeyLines,
}

impl Origin {
    fn new(ctx: &Ctx<'_>, prefix: &str, header: usize) -> Origin {
        Origin {
            file: ctx.file.to_path_buf(),
            prefix: prefix.to_string(),
            lines: KeyLines::new(header),
        }
    }

    /// `prefix.key`, for a message about `key`.
    pub fn key(&self, key: &str) -> String {
        path(&self.prefix, key)
    }
}

/// A `[[sharded_tables]]` entry; its `mapping` stays `Hash` until
/// shard_map.rs attaches the mappings that name it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedShardedTable {
    pub database: String,
    pub table: ShardedTable,
    pub origin: Origin,
}

/// `kind` of a mapping entry (PgDog: `list`, `range`; sleddog also takes
/// `default` for keys matching no other entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MappingKind {
    List,
    Range,
    Default,
}

const MAPPING_KINDS: &[(&str, MappingKind)] = &[
    ("list", MappingKind::List),
    ("range", MappingKind::Range),
    ("default", MappingKind::Default),
];

/// A value as written, with its line; typed against the table's
/// `data_type` once the table is known.
pub(crate) type Located = (MapValue, usize);

/// A `[[sharded_mapping]]` entry (or nested `[[sharded_tables.mapping]]`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedMapping {
    pub database: String,
    pub column: String,
    pub table: Option<String>,
    pub schema: Option<String>,
    pub kind: MappingKind,
    pub values: Vec<Located>,
    pub start: Option<Located>,
    pub end: Option<Located>,
    pub shard: ShardId,
    /// Index into `ShardingSections::tables` of the enclosing table, for
    /// the nested spelling.
    pub parent: Option<usize>,
    pub origin: Origin,
}

/// An `[[omnisharded_tables]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedOmnisharded {
    pub database: String,
    pub tables: Vec<String>,
    pub origin: Origin,
}

/// A `[[sharded_schemas]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedShardedSchema {
    pub database: String,
    pub schema: ShardedSchema,
    pub origin: Origin,
}

/// Every sharding entry of pgdog.toml, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ShardingSections {
    pub tables: Vec<ParsedShardedTable>,
    pub mappings: Vec<ParsedMapping>,
    pub omnisharded: Vec<ParsedOmnisharded>,
    pub schemas: Vec<ParsedShardedSchema>,
}

/// `data_type`, case-insensitive. PgDog's own names are `bigint`, `uuid`,
/// `varchar` (and `vector`); the Postgres aliases are accepted too.
const DATA_TYPES: &[(&str, DataType)] = &[
    ("bigint", DataType::BigInt),
    ("int8", DataType::BigInt),
    ("integer", DataType::Integer),
    ("int", DataType::Integer),
    ("int4", DataType::Integer),
    ("smallint", DataType::SmallInt),
    ("int2", DataType::SmallInt),
    ("text", DataType::Text),
    ("varchar", DataType::Varchar),
    ("uuid", DataType::Uuid),
];
const DATA_TYPES_UNSUPPORTED: &[(&str, &str)] = &[(
    "vector",
    "(pgvector centroid sharding) is not supported by sleddog",
)];

/// `hasher`: PgDog also has `sha1`; sleddog places rows only as
/// `PARTITION BY HASH` does.
const HASHERS: &[(&str, ())] = &[("postgres", ())];
const HASHERS_UNSUPPORTED: &[(&str, &str)] = &[(
    "sha1",
    "is not supported: sleddog only shards with PostgreSQL's hash functions",
)];

pub(crate) fn read_sharded_tables(ctx: &mut Ctx<'_>, node: &Node, into: &mut ShardingSections) {
    for (index, table) in table_array(ctx, "sharded_tables", node) {
        read_sharded_table(ctx, &format!("sharded_tables[{index}]"), table, into);
    }
}

fn read_sharded_table(
    ctx: &mut Ctx<'_>,
    prefix: &str,
    table: &RawTable,
    into: &mut ShardingSections,
) {
    let mut origin = Origin::new(ctx, prefix, table.line);
    let mut database = None;
    let mut column = None;
    let mut sharded = ShardedTable {
        name: None,
        schema: None,
        column: String::new(),
        data_type: DataType::BigInt,
        mapping: Mapping::Hash,
    };
    let mut nested = None;
    for entry in &table.entries {
        let key = path(prefix, &entry.key);
        let node = &entry.value;
        match entry.key.as_str() {
            "database" => database = read::name(ctx, &key, node),
            "name" => sharded.name = read::name(ctx, &key, node),
            "schema" => sharded.schema = read::name(ctx, &key, node),
            "column" => column = read::name(ctx, &key, node),
            "data_type" => {
                if let Some(data_type) = data_type(ctx, &key, node) {
                    sharded.data_type = data_type;
                }
            }
            "hasher" => {
                read::choice(ctx, &key, node, HASHERS, HASHERS_UNSUPPORTED);
            }
            // Read after the table's own keys: a nested mapping inherits them.
            "mapping" => nested = Some(node),
            _ => {
                ctx.unhandled(Scope::ShardedTable, &key, entry);
                continue;
            }
        }
        origin.lines.set(&entry.key, entry.line);
    }
    required(
        ctx,
        &origin,
        &[("database", &database), ("column", &column)],
    );
    let parsed = match (database, column) {
        (Some(database), Some(column)) => {
            sharded.column = column;
            into.tables.push(ParsedShardedTable {
                database,
                table: sharded,
                origin,
            });
            into.tables
                .last()
                .map(|table| (into.tables.len() - 1, table))
        }
        _ => None,
    };
    let Some(node) = nested else {
        return;
    };
    let parent = parsed.map(|(index, table)| (index, table.clone()));
    let key = path(prefix, "mapping");
    for (index, table) in table_array(ctx, &key, node) {
        let prefix = format!("{key}[{index}]");
        let enclosing = match &parent {
            Some((index, table)) => Enclosing::Table(*index, table),
            None => Enclosing::Broken,
        };
        if let Some(mapping) = read_mapping(ctx, &prefix, table, enclosing) {
            into.mappings.push(mapping);
        }
    }
}

/// `data_type`, case-insensitive, as one of `DATA_TYPES`.
fn data_type(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<DataType> {
    let text = read::string(ctx, key, node)?;
    let lowered = Node {
        line: node.line,
        kind: Kind::String(text.trim().to_ascii_lowercase()),
    };
    read::choice(ctx, key, &lowered, DATA_TYPES, DATA_TYPES_UNSUPPORTED)
}

/// `[[sharded_mapping]]` and `[[sharded_mappings]]` (`section` is the spelling used).
pub(crate) fn read_mappings(
    ctx: &mut Ctx<'_>,
    section: &str,
    node: &Node,
    into: &mut ShardingSections,
) {
    for (index, table) in table_array(ctx, section, node) {
        let prefix = format!("{section}[{index}]");
        if let Some(mapping) = read_mapping(ctx, &prefix, table, Enclosing::None) {
            into.mappings.push(mapping);
        }
    }
}

/// What one mapping table wrote, before its kind is settled.
#[derive(Default)]
struct MappingKeys {
    database: Option<String>,
    column: Option<String>,
    table: Option<String>,
    schema: Option<String>,
    kind: Option<MappingKind>,
    values: Option<Vec<Located>>,
    start: Option<Located>,
    end: Option<Located>,
    shard: Option<u16>,
}

/// The `[[sharded_tables]]` entry a nested mapping sits in.
#[derive(Clone, Copy)]
enum Enclosing<'a> {
    /// A top-level `[[sharded_mapping]]`.
    None,
    /// Index into `ShardingSections::tables`, and the entry.
    Table(usize, &'a ParsedShardedTable),
    /// The enclosing entry had errors of its own; its mappings are checked
    /// but not kept, and inherit nothing to complain about.
    Broken,
}

fn read_mapping(
    ctx: &mut Ctx<'_>,
    prefix: &str,
    table: &RawTable,
    enclosing: Enclosing<'_>,
) -> Option<ParsedMapping> {
    let mut origin = Origin::new(ctx, prefix, table.line);
    let mut keys = MappingKeys::default();
    for entry in &table.entries {
        let key = path(prefix, &entry.key);
        let node = &entry.value;
        match entry.key.as_str() {
            "database" => keys.database = read::name(ctx, &key, node),
            "column" => keys.column = read::name(ctx, &key, node),
            "table" => keys.table = read::name(ctx, &key, node),
            "schema" => keys.schema = read::name(ctx, &key, node),
            "kind" => keys.kind = read::choice(ctx, &key, node, MAPPING_KINDS, &[]),
            "values" => keys.values = map_values(ctx, &key, node),
            "start" => keys.start = map_value(ctx, &key, node).map(|v| (v, node.line)),
            "end" => keys.end = map_value(ctx, &key, node).map(|v| (v, node.line)),
            "shard" => keys.shard = read::shard(ctx, &key, node),
            _ => {
                ctx.unhandled(Scope::ShardedMapping, &key, entry);
                continue;
            }
        }
        origin.lines.set(&entry.key, entry.line);
    }
    let parent = match enclosing {
        Enclosing::None => None,
        Enclosing::Table(index, parent) => {
            inherit(ctx, &origin, &mut keys, parent);
            Some(index)
        }
        Enclosing::Broken => {
            mapping_kind(ctx, &origin, &keys);
            return None;
        }
    };
    let kind = mapping_kind(ctx, &origin, &keys);
    required(
        ctx,
        &origin,
        &[("database", &keys.database), ("column", &keys.column)],
    );
    required(ctx, &origin, &[("shard", &keys.shard)]);
    Some(ParsedMapping {
        database: keys.database?,
        column: keys.column?,
        table: keys.table,
        schema: keys.schema,
        kind: kind?,
        values: keys.values.unwrap_or_default(),
        start: keys.start,
        end: keys.end,
        shard: ShardId(keys.shard?),
        parent,
        origin,
    })
}

/// A nested mapping takes the enclosing table's database, column, name and
/// schema; writing a different one is a contradiction, not an override.
fn inherit(
    ctx: &mut Ctx<'_>,
    origin: &Origin,
    keys: &mut MappingKeys,
    parent: &ParsedShardedTable,
) {
    let table = &parent.table;
    let inherited = [
        ("database", &mut keys.database, Some(&parent.database)),
        ("column", &mut keys.column, Some(&table.column)),
        ("table", &mut keys.table, table.name.as_ref()),
        ("schema", &mut keys.schema, table.schema.as_ref()),
    ];
    for (key, slot, from_parent) in inherited {
        match (slot.as_ref(), from_parent) {
            (Some(own), Some(theirs)) if own != theirs => ctx.error(
                origin.lines.line(key),
                &origin.key(key),
                format!("`{own}` differs from the enclosing [[sharded_tables]] entry's `{theirs}`"),
            ),
            (None, Some(theirs)) => *slot = Some(theirs.clone()),
            _ => {}
        }
    }
}

/// `kind`, or inferred from the keys: `values` → list, `start`/`end` → range.
fn mapping_kind(ctx: &mut Ctx<'_>, origin: &Origin, keys: &MappingKeys) -> Option<MappingKind> {
    let has_values = keys.values.is_some();
    let has_bounds = keys.start.is_some() || keys.end.is_some();
    let lines = &origin.lines;
    let kind = match keys.kind {
        Some(kind) => kind,
        None if lines.has("kind") => return None,
        None if has_values && has_bounds => {
            ctx.error(
                lines.line("values"),
                &origin.key("values"),
                "set together with `start`/`end`; a mapping is a list or a range, not both",
            );
            return None;
        }
        None if has_values => MappingKind::List,
        None if has_bounds || lines.has("start") || lines.has("end") => MappingKind::Range,
        // A bad `values` was already reported; do not pile on.
        None if lines.has("values") => return None,
        None => {
            ctx.error(
                lines.header,
                &origin.key("kind"),
                "required: set `kind`, or `values` (a list) or `start`/`end` (a range)",
            );
            return None;
        }
    };
    let misplaced = match kind {
        MappingKind::List if has_bounds => {
            Some(("start", "`start`/`end` belong to range mappings"))
        }
        MappingKind::Range if has_values => Some(("values", "`values` belong to list mappings")),
        MappingKind::Default if has_values || has_bounds => Some((
            if has_values { "values" } else { "start" },
            "a default mapping takes no `values`, `start` or `end`",
        )),
        _ => None,
    };
    if let Some((key, message)) = misplaced {
        let key = if key == "start" && !lines.has("start") {
            "end"
        } else {
            key
        };
        ctx.error(lines.line(key), &origin.key(key), message);
        return None;
    }
    if kind == MappingKind::List && keys.values.as_ref().is_some_and(|v| v.is_empty()) {
        ctx.error(
            lines.line("values"),
            &origin.key("values"),
            "must not be empty",
        );
        return None;
    }
    if kind == MappingKind::List && !has_values {
        ctx.error(
            lines.line("kind"),
            &origin.key("values"),
            "required for a list mapping",
        );
        return None;
    }
    Some(kind)
}

/// A list or range value: an integer or a string.
fn map_value(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<MapValue> {
    match &node.kind {
        Kind::Integer(value) => Some(MapValue::Int(*value)),
        Kind::String(value) => Some(MapValue::Text(value.clone())),
        other => {
            let found = other.type_name();
            ctx.error(
                node.line,
                key,
                format!("expected an integer or a string, found {found}"),
            );
            None
        }
    }
}

fn map_values(ctx: &mut Ctx<'_>, key: &str, node: &Node) -> Option<Vec<Located>> {
    let Kind::Array(elements) = &node.kind else {
        let found = node.kind.type_name();
        ctx.error(
            node.line,
            key,
            format!("expected an array of integers or strings, found {found}"),
        );
        return None;
    };
    let mut values = Vec::with_capacity(elements.len());
    let mut ok = true;
    for element in elements {
        match map_value(ctx, key, element) {
            Some(value) => values.push((value, element.line)),
            None => ok = false,
        }
    }
    ok.then_some(values)
}

pub(crate) fn read_omnisharded(ctx: &mut Ctx<'_>, node: &Node, into: &mut ShardingSections) {
    for (index, table) in table_array(ctx, "omnisharded_tables", node) {
        let prefix = format!("omnisharded_tables[{index}]");
        let mut origin = Origin::new(ctx, &prefix, table.line);
        let mut database = None;
        let mut tables = Vec::new();
        let mut listed = false;
        for entry in &table.entries {
            let key = path(&prefix, &entry.key);
            let node = &entry.value;
            match entry.key.as_str() {
                "database" => database = read::name(ctx, &key, node),
                "tables" => {
                    listed = true;
                    for name in read::string_list(ctx, &key, node).unwrap_or_default() {
                        if name.is_empty() {
                            ctx.error(node.line, &key, "table names must not be empty");
                        } else {
                            tables.push(name);
                        }
                    }
                }
                // One table: a convenience spelling of `tables = ["t"]`.
                "name" => {
                    listed = true;
                    tables.extend(read::name(ctx, &key, node));
                }
                _ => {
                    ctx.unhandled(Scope::Omnisharded, &key, entry);
                    continue;
                }
            }
            origin.lines.set(&entry.key, entry.line);
        }
        if !listed {
            ctx.error(
                table.line,
                &origin.key("tables"),
                "required (or `name` for one table)",
            );
        }
        required(ctx, &origin, &[("database", &database)]);
        if let Some(database) = database {
            into.omnisharded.push(ParsedOmnisharded {
                database,
                tables,
                origin,
            });
        }
    }
}

pub(crate) fn read_sharded_schemas(ctx: &mut Ctx<'_>, node: &Node, into: &mut ShardingSections) {
    for (index, table) in table_array(ctx, "sharded_schemas", node) {
        let prefix = format!("sharded_schemas[{index}]");
        let mut origin = Origin::new(ctx, &prefix, table.line);
        let mut database = None;
        let mut name = None;
        // PgDog's default (`#[serde(default)]`).
        let mut shard = Some(0);
        for entry in &table.entries {
            let key = path(&prefix, &entry.key);
            let node = &entry.value;
            match entry.key.as_str() {
                "database" => database = read::name(ctx, &key, node),
                "name" => name = read::name(ctx, &key, node),
                "shard" => shard = read::shard(ctx, &key, node),
                _ => {
                    ctx.unhandled(Scope::ShardedSchema, &key, entry);
                    continue;
                }
            }
            origin.lines.set(&entry.key, entry.line);
        }
        required(ctx, &origin, &[("database", &database)]);
        let (Some(database), Some(shard)) = (database, shard) else {
            continue;
        };
        into.schemas.push(ParsedShardedSchema {
            database,
            schema: ShardedSchema {
                name,
                shard: ShardId(shard),
            },
            origin,
        });
    }
}

/// "required" for every key that was neither written nor read; a key that
/// was written with a bad value already has its own error.
fn required<T>(ctx: &mut Ctx<'_>, origin: &Origin, keys: &[(&str, &Option<T>)]) {
    for (key, value) in keys {
        if value.is_none() && !origin.lines.has(key) {
            ctx.error(origin.lines.header, &origin.key(key), "required");
        }
    }
}

//! Postgres-compatible sharding functions and shard maps. Pure: no I/O, no
//! async, no parser. Given a table's sharding rule and one key value (the
//! bytes a client sent, in text or binary format), say which shard holds the
//! row; given a schema name, which shard holds the schema.
//!
//! - `hash`: PostgreSQL's extended hash functions with the hash-partition
//!   seed, so placement equals `PARTITION BY HASH (col)` with
//!   `MODULUS shards, REMAINDER n` on shard `n`.
//! - `key`: a key value parsed from its text or binary wire form per
//!   [`DataType`].
//! - `map`: list, range and default mappings.
//!
//! The types below are the shard map the proxy builds from `pgdog.toml`
//! (`[[sharded_tables]]`, `[[sharded_mapping]]`, `[[omnisharded_tables]]`,
//! `[[sharded_schemas]]`) and consults per query.

pub mod hash;
pub mod key;
pub mod map;

pub use key::{hash_shard, Key, KeyError};
pub use map::{MapValue, Mapping, RangeRule};

/// A shard of a cluster: the `shard = N` of its `[[databases]]` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// The SQL type of a sharding key (`data_type` in `[[sharded_tables]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `bigint` (PgDog's default).
    BigInt,
    /// `integer`.
    Integer,
    /// `smallint`.
    SmallInt,
    /// `text`.
    Text,
    /// `varchar`.
    Varchar,
    /// `uuid`.
    Uuid,
}

/// The wire format of a value ("protocol-overview", Formats and Format Codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Text,
    Binary,
}

/// One `[[sharded_tables]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardedTable {
    /// `name`: the table; `None` shards every table that has `column`.
    pub name: Option<String>,
    /// `schema`: when set, only the table in this schema.
    pub schema: Option<String>,
    /// `column`: the sharding key.
    pub column: String,
    /// `data_type` (default `bigint`).
    pub data_type: DataType,
    /// Hash unless `[[sharded_mapping]]` entries name this table's column.
    pub mapping: Mapping,
}

/// One `[[sharded_schemas]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedSchema {
    /// The schema; `None` is the default for schemas not listed.
    pub name: Option<String>,
    pub shard: ShardId,
}

/// Everything sharding needs to know about one cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShardingSchema {
    /// Number of shards (`shard` values run 0..shards).
    pub shards: u16,
    pub tables: Vec<ShardedTable>,
    /// `[[omnisharded_tables]]`: tables copied whole to every shard.
    pub omnisharded: Vec<String>,
    pub schemas: Vec<ShardedSchema>,
}

impl ShardedTable {
    /// The shard of a row whose key is `value` (None: SQL NULL) sent in
    /// `format`, among `shards` shards. A hash-sharded NULL goes to shard 0,
    /// where `PARTITION BY HASH` puts it; a mapped NULL goes to the default.
    /// Ok(None): a mapping with no entry and no default for this value.
    pub fn shard(
        &self,
        value: Option<&[u8]>,
        format: Format,
        shards: u16,
    ) -> Result<Option<ShardId>, KeyError> {
        match value {
            None => Ok(self.mapping.null_shard(shards)),
            Some(bytes) => {
                let key = Key::parse(self.data_type, format, bytes)?;
                Ok(self.mapping.shard(&key, shards))
            }
        }
    }

    /// Whether this entry names `table` (in `schema`, when the entry has one).
    /// An unqualified reference (`schema` None) matches any entry schema: the
    /// proxy cannot see the session's search_path.
    fn names(&self, schema: Option<&str>, table: &str) -> bool {
        self.name.as_deref() == Some(table) && self.schema_matches(schema)
    }

    fn schema_matches(&self, schema: Option<&str>) -> bool {
        match (self.schema.as_deref(), schema) {
            (Some(want), Some(got)) => want == got,
            _ => true,
        }
    }
}

impl ShardingSchema {
    /// The sharding rule for `column` of `table` (in `schema` when the query
    /// qualified it). An entry naming the table wins over a nameless entry
    /// that shards every table having that column; among equals, the first
    /// listed. Names compare exactly: the caller passes them as Postgres
    /// would resolve them (unquoted identifiers already lowercased).
    pub fn key_rule(
        &self,
        schema: Option<&str>,
        table: &str,
        column: &str,
    ) -> Option<&ShardedTable> {
        let for_column = || self.tables.iter().filter(move |t| t.column == column);
        for_column()
            .find(|t| t.names(schema, table))
            .or_else(|| for_column().find(|t| t.name.is_none() && t.schema_matches(schema)))
    }

    /// Whether `table` is copied whole to every shard.
    pub fn is_omnisharded(&self, table: &str) -> bool {
        self.omnisharded.iter().any(|t| t == table)
    }

    /// The shard holding `schema`: its own entry, else the default entry
    /// (`name` unset), else None.
    pub fn schema_shard(&self, schema: &str) -> Option<ShardId> {
        self.schemas
            .iter()
            .find(|s| s.name.as_deref() == Some(schema))
            .or_else(|| self.schemas.iter().find(|s| s.name.is_none()))
            .map(|s| s.shard)
    }

    /// Whether any `[[sharded_schemas]]` entry exists.
    pub fn has_sharded_schemas(&self) -> bool {
        !self.schemas.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: Option<&str>, schema: Option<&str>, column: &str) -> ShardedTable {
        ShardedTable {
            name: name.map(str::to_string),
            schema: schema.map(str::to_string),
            column: column.to_string(),
            data_type: DataType::BigInt,
            mapping: Mapping::Hash,
        }
    }

    #[test]
    fn named_entry_wins_over_nameless() {
        let schema = ShardingSchema {
            shards: 2,
            tables: vec![
                table(None, None, "tenant_id"),
                table(Some("users"), Some("app"), "tenant_id"),
                table(Some("orders"), None, "customer_id"),
            ],
            ..Default::default()
        };
        let rule = schema.key_rule(Some("app"), "users", "tenant_id").unwrap();
        assert_eq!(rule.name.as_deref(), Some("users"));
        // Unqualified reference: the named entry still applies.
        let rule = schema.key_rule(None, "users", "tenant_id").unwrap();
        assert_eq!(rule.name.as_deref(), Some("users"));
        // Another schema: only the nameless entry applies.
        let rule = schema
            .key_rule(Some("other"), "users", "tenant_id")
            .unwrap();
        assert_eq!(rule.name, None);
        let rule = schema.key_rule(None, "anything", "tenant_id").unwrap();
        assert_eq!(rule.name, None);
        assert!(schema.key_rule(None, "orders", "customer_id").is_some());
        assert!(schema.key_rule(None, "orders", "id").is_none());
        assert!(schema.key_rule(None, "invoices", "customer_id").is_none());
    }

    #[test]
    fn shard_of_values_and_null() {
        let hashed = table(Some("t"), None, "id");
        let one = hashed.shard(Some(b"1"), Format::Text, 4).unwrap();
        let one_bin = hashed
            .shard(Some(&1i64.to_be_bytes()), Format::Binary, 4)
            .unwrap();
        assert_eq!(one, one_bin);
        assert_eq!(hashed.shard(None, Format::Text, 4), Ok(Some(ShardId(0))));
        assert!(hashed.shard(Some(b"x"), Format::Text, 4).is_err());

        let mapped = ShardedTable {
            mapping: Mapping::Map {
                list: vec![(MapValue::Int(1), ShardId(1))],
                ranges: vec![],
                default: Some(ShardId(2)),
            },
            ..hashed
        };
        assert_eq!(
            mapped.shard(Some(b" 1"), Format::Text, 4),
            Ok(Some(ShardId(1)))
        );
        assert_eq!(
            mapped.shard(Some(b"3"), Format::Text, 4),
            Ok(Some(ShardId(2)))
        );
        assert_eq!(mapped.shard(None, Format::Binary, 4), Ok(Some(ShardId(2))));
    }

    #[test]
    fn omnisharded_and_schemas() {
        let mut schema = ShardingSchema {
            shards: 3,
            omnisharded: vec!["countries".into()],
            schemas: vec![
                ShardedSchema {
                    name: Some("acme".into()),
                    shard: ShardId(1),
                },
                ShardedSchema {
                    name: None,
                    shard: ShardId(2),
                },
            ],
            ..Default::default()
        };
        assert!(schema.is_omnisharded("countries"));
        assert!(!schema.is_omnisharded("users"));
        assert!(schema.has_sharded_schemas());
        assert_eq!(schema.schema_shard("acme"), Some(ShardId(1)));
        assert_eq!(schema.schema_shard("other"), Some(ShardId(2)));
        schema.schemas.pop();
        assert_eq!(schema.schema_shard("other"), None);
        schema.schemas.clear();
        assert!(!schema.has_sharded_schemas());
    }
}

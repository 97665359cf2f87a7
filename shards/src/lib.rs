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

pub use key::{Key, KeyError};
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

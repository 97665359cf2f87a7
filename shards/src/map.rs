//! List, range and default mappings: which shard a key value goes to when a
//! table is not hash-sharded (`[[sharded_mapping]]`, PgDog's
//! `PARTITION BY LIST` / `RANGE` counterparts).

use crate::ShardId;

/// A value in a list or range mapping, as written in `pgdog.toml`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapValue {
    Int(i64),
    Text(String),
}

/// A half-open range `[start, end)`; a missing bound is unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRule {
    pub start: Option<MapValue>,
    pub end: Option<MapValue>,
    pub shard: ShardId,
}

/// How a sharded table's key picks a shard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mapping {
    /// `PARTITION BY HASH` placement over all shards.
    #[default]
    Hash,
    /// Explicit values and ranges; a key matching none goes to `default`, or
    /// to no shard when there is none.
    Map {
        list: Vec<(MapValue, ShardId)>,
        ranges: Vec<RangeRule>,
        default: Option<ShardId>,
    },
}

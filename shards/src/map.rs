//! List, range and default mappings: which shard a key value goes to when a
//! table is not hash-sharded (`[[sharded_mapping]]`, PgDog's
//! `PARTITION BY LIST` / `RANGE` counterparts).
//!
//! Owns: matching a parsed [`Key`] against a [`Mapping`]. Must not parse wire
//! bytes (that is `key`) or hash (that is `hash`).
//!
//! Comparisons follow the key's natural order, as PostgreSQL's list and
//! range partitioning with the "C" collation would: integers numerically,
//! text bytewise. A uuid key compares with text map values that are uuids,
//! by uuid value (which equals the bytewise order of the canonical
//! lowercase hyphenated form). A map value of another kind than the key
//! (an integer value for a text key, say) never matches, and a range with
//! such a bound never contains the key.

use std::cmp::Ordering;

use crate::key::{hash_shard, Key};
use crate::ShardId;

/// A value in a list or range mapping, as written in `pgdog.toml`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapValue {
    Int(i64),
    Text(String),
    /// A uuid, parsed once as Postgres parses it (its byte order is the
    /// order of its canonical text).
    Uuid([u8; 16]),
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

impl Mapping {
    /// The shard of `key` among `shards` shards. Hash: the hash-partition
    /// remainder. Map: the first list entry equal to the key, else the first
    /// range containing it, else the default; None when nothing applies.
    pub fn shard(&self, key: &Key, shards: u16) -> Option<ShardId> {
        match self {
            Mapping::Hash => Some(hash_shard(key.partition_hash(), shards)),
            Mapping::Map {
                list,
                ranges,
                default,
            } => list
                .iter()
                .find(|(value, _)| compare(key, value) == Some(Ordering::Equal))
                .map(|(_, shard)| *shard)
                .or_else(|| {
                    ranges
                        .iter()
                        .find(|range| range.contains(key))
                        .map(|range| range.shard)
                })
                .or(*default),
        }
    }

    /// Where a NULL key goes: hash partitioning puts it on remainder 0
    /// (shard 0, see `hash::NULL_ROW_HASH`); a map sends it to its default.
    pub fn null_shard(&self, shards: u16) -> Option<ShardId> {
        match self {
            Mapping::Hash => Some(hash_shard(crate::hash::NULL_ROW_HASH, shards)),
            Mapping::Map { default, .. } => *default,
        }
    }
}

impl RangeRule {
    /// Whether `start <= key < end`, a missing bound being unbounded.
    pub fn contains(&self, key: &Key) -> bool {
        let above_start = match &self.start {
            None => true,
            Some(start) => matches!(
                compare(key, start),
                Some(Ordering::Greater | Ordering::Equal)
            ),
        };
        let below_end = match &self.end {
            None => true,
            Some(end) => compare(key, end) == Some(Ordering::Less),
        };
        above_start && below_end
    }
}

/// How `key` orders against a map value; None when they are not comparable
/// (different kinds).
fn compare(key: &Key, value: &MapValue) -> Option<Ordering> {
    match (key, value) {
        (Key::Int(k), MapValue::Int(v)) => Some(k.cmp(v)),
        (Key::Text(k), MapValue::Text(v)) => Some(k.as_slice().cmp(v.as_bytes())),
        (Key::Uuid(k), MapValue::Uuid(v)) => Some(k.cmp(v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_key(s: &str) -> Key {
        Key::Text(s.as_bytes().to_vec())
    }

    fn range(start: Option<MapValue>, end: Option<MapValue>, shard: u16) -> RangeRule {
        RangeRule {
            start,
            end,
            shard: ShardId(shard),
        }
    }

    #[test]
    fn hash_places_by_remainder() {
        let key = Key::Int(1);
        assert_eq!(
            Mapping::Hash.shard(&key, 4),
            Some(hash_shard(key.partition_hash(), 4))
        );
        assert_eq!(Mapping::Hash.null_shard(7), Some(ShardId(0)));
    }

    #[test]
    fn list_then_range_then_default() {
        let map = Mapping::Map {
            list: vec![
                (MapValue::Int(5), ShardId(9)),
                (MapValue::Int(150), ShardId(8)),
            ],
            ranges: vec![
                range(None, Some(MapValue::Int(0)), 0),
                range(Some(MapValue::Int(0)), Some(MapValue::Int(100)), 1),
                range(Some(MapValue::Int(100)), Some(MapValue::Int(200)), 2),
            ],
            default: Some(ShardId(3)),
        };
        let shard = |v| map.shard(&Key::Int(v), 10);
        // A list entry wins over a range containing the same value.
        assert_eq!(shard(5), Some(ShardId(9)));
        assert_eq!(shard(150), Some(ShardId(8)));
        assert_eq!(shard(i64::MIN), Some(ShardId(0)));
        assert_eq!(shard(-1), Some(ShardId(0)));
        // Start inclusive, end exclusive.
        assert_eq!(shard(0), Some(ShardId(1)));
        assert_eq!(shard(99), Some(ShardId(1)));
        assert_eq!(shard(100), Some(ShardId(2)));
        assert_eq!(shard(200), Some(ShardId(3)));
        assert_eq!(map.null_shard(10), Some(ShardId(3)));
    }

    #[test]
    fn first_matching_range_wins_and_no_default_is_none() {
        let map = Mapping::Map {
            list: vec![],
            ranges: vec![
                range(Some(MapValue::Int(0)), Some(MapValue::Int(10)), 1),
                range(Some(MapValue::Int(5)), None, 2),
            ],
            default: None,
        };
        assert_eq!(map.shard(&Key::Int(7), 4), Some(ShardId(1)));
        assert_eq!(map.shard(&Key::Int(10), 4), Some(ShardId(2)));
        assert_eq!(map.shard(&Key::Int(-1), 4), None);
        assert_eq!(map.null_shard(4), None);
    }

    #[test]
    fn text_compares_bytewise_and_kinds_do_not_mix() {
        let map = Mapping::Map {
            list: vec![
                (MapValue::Text("eu".into()), ShardId(1)),
                (MapValue::Int(7), ShardId(2)),
            ],
            ranges: vec![range(
                Some(MapValue::Text("a".into())),
                Some(MapValue::Text("n".into())),
                3,
            )],
            default: None,
        };
        assert_eq!(map.shard(&text_key("eu"), 4), Some(ShardId(1)));
        assert_eq!(map.shard(&text_key("EU"), 4), None);
        assert_eq!(map.shard(&text_key("7"), 4), None);
        assert_eq!(map.shard(&Key::Int(7), 4), Some(ShardId(2)));
        assert_eq!(map.shard(&text_key("a"), 4), Some(ShardId(3)));
        assert_eq!(map.shard(&text_key("mzzz"), 4), Some(ShardId(3)));
        assert_eq!(map.shard(&text_key("n"), 4), None);
        // Bytewise: "Z" (0x5a) sorts before "a".
        assert_eq!(map.shard(&text_key("Z"), 4), None);
        // An int key against a text range is not contained.
        assert_eq!(map.shard(&Key::Int(1), 4), None);
    }

    #[test]
    fn uuid_matches_uuid_values() {
        let uuid = [0xab; 16];
        let map = Mapping::Map {
            list: vec![(MapValue::Uuid([0xab; 16]), ShardId(1))],
            ranges: vec![range(
                Some(MapValue::Uuid([0x00; 16])),
                Some(MapValue::Uuid([
                    0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ])),
                2,
            )],
            default: Some(ShardId(0)),
        };
        assert_eq!(map.shard(&Key::Uuid(uuid), 4), Some(ShardId(1)));
        assert_eq!(map.shard(&Key::Uuid([0x12; 16]), 4), Some(ShardId(2)));
        assert_eq!(map.shard(&Key::Uuid([0x80; 16]), 4), Some(ShardId(0)));
        // A uuid key against a text value is not comparable.
        let text = Mapping::Map {
            list: vec![(MapValue::Text("ab".into()), ShardId(1))],
            ranges: vec![],
            default: None,
        };
        assert_eq!(text.shard(&Key::Uuid(uuid), 4), None);
    }
}

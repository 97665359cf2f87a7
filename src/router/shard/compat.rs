//! Stand-ins for the `shards` crate's lookups that are being written on
//! branch `sh-shards` (same names and signatures). Delete this file and its
//! `use`s once that branch is merged: the crate's inherent methods then win
//! over these trait methods.
//!
//! The hash here is NOT PostgreSQL's; tests in this module tree compute their
//! expectations through the same `shard` call, so they hold for both.

use shards::{
    DataType, Format, KeyError, MapValue, Mapping, ShardId, ShardedTable, ShardingSchema,
};

pub(super) trait TableShard {
    fn shard(
        &self,
        value: Option<&[u8]>,
        format: Format,
        shards: u16,
    ) -> Result<Option<ShardId>, KeyError>;
}

pub(super) trait SchemaLookup {
    fn key_rule(&self, schema: Option<&str>, table: &str, column: &str) -> Option<&ShardedTable>;
    fn is_omnisharded(&self, table: &str) -> bool;
    fn schema_shard(&self, schema: &str) -> Option<ShardId>;
    fn has_sharded_schemas(&self) -> bool;
}

fn invalid(data_type: &'static str, reason: &str) -> KeyError {
    KeyError::Invalid {
        data_type,
        reason: reason.to_string(),
    }
}

fn integer(value: &[u8], format: Format) -> Result<i64, KeyError> {
    match format {
        Format::Text => std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| invalid("bigint", "not an integer")),
        Format::Binary => match value.len() {
            2 => Ok(i64::from(i16::from_be_bytes([value[0], value[1]]))),
            4 => Ok(i64::from(i32::from_be_bytes([
                value[0], value[1], value[2], value[3],
            ]))),
            8 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(value);
                Ok(i64::from_be_bytes(bytes))
            }
            _ => Err(invalid("bigint", "wrong length")),
        },
    }
}

impl TableShard for ShardedTable {
    fn shard(
        &self,
        value: Option<&[u8]>,
        format: Format,
        shards: u16,
    ) -> Result<Option<ShardId>, KeyError> {
        let Some(value) = value else {
            return Ok(Some(ShardId(0)));
        };
        let numeric = matches!(
            self.data_type,
            DataType::BigInt | DataType::Integer | DataType::SmallInt
        );
        let key = if numeric {
            MapValue::Int(integer(value, format)?)
        } else {
            let text = std::str::from_utf8(value).map_err(|_| invalid("text", "not UTF-8"))?;
            MapValue::Text(text.to_string())
        };
        match &self.mapping {
            Mapping::Hash => {
                let hash = match &key {
                    MapValue::Int(int) => int.unsigned_abs(),
                    MapValue::Text(text) => text.bytes().map(u64::from).sum(),
                };
                Ok(Some(ShardId(
                    u16::try_from(hash % u64::from(shards.max(1))).expect("below a u16"),
                )))
            }
            Mapping::Map {
                list,
                ranges,
                default,
            } => {
                if let Some((_, shard)) = list.iter().find(|(value, _)| *value == key) {
                    return Ok(Some(*shard));
                }
                let hit = ranges.iter().find(|range| {
                    range.start.as_ref().is_none_or(|start| *start <= key)
                        && range.end.as_ref().is_none_or(|end| key < *end)
                });
                Ok(hit.map(|range| range.shard).or(*default))
            }
        }
    }
}

impl SchemaLookup for ShardingSchema {
    fn key_rule(&self, schema: Option<&str>, table: &str, column: &str) -> Option<&ShardedTable> {
        let matches = |rule: &&ShardedTable| {
            rule.column == column
                && rule.name.as_deref().is_none_or(|name| name == table)
                && match (&rule.schema, schema) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        };
        // A rule naming the table beats a column-only rule.
        self.tables
            .iter()
            .filter(matches)
            .find(|rule| rule.name.is_some())
            .or_else(|| self.tables.iter().find(matches))
    }

    fn is_omnisharded(&self, table: &str) -> bool {
        self.omnisharded.iter().any(|name| name == table)
    }

    fn schema_shard(&self, schema: &str) -> Option<ShardId> {
        self.schemas
            .iter()
            .find(|entry| entry.name.as_deref() == Some(schema))
            .map(|entry| entry.shard)
    }

    fn has_sharded_schemas(&self) -> bool {
        !self.schemas.is_empty()
    }
}

//! GROUP BY and aggregates across shards: shard rows fold into groups (equal
//! group-key values, NULLs together), each aggregate column merges through
//! an `AggState`, and each finished group becomes one row (first-seen raw
//! group keys, re-encoded aggregates) that HAVING filters before the
//! collector. Holds every group until the shards are done; no ordering.

use std::collections::{BTreeMap, HashMap};

use bytes::{BufMut, Bytes, BytesMut};

use super::collect::{Collector, RowBody};
use super::having::{Having, ParamValue};
use super::key::{bytes_decide_equality, DatumKey};
use super::wire::{split_data_row, RowDescription, Span};
use super::MergeError;
use crate::fanout::aggregate::AggState;
use crate::fanout::datum::{self, ColumnType, Datum};
use crate::fanout::plan::{AggregateColumn, AggregatePlan, Expr};

/// Group rows are copied into chunks of this size (one allocation per
/// chunk, not per group).
const ARENA_CHUNK_BYTES: usize = 64 * 1024;

/// Finds a group by its key values.
enum GroupIndex {
    /// Every key type's equality is byte equality: the key is the key
    /// columns' length-prefixed bytes, one after another.
    Bytes(HashMap<Box<[u8]>, usize>),
    /// Numeric, float and other types whose equal values may differ in
    /// bytes: decoded and compared with `datum::compare`.
    Datums(BTreeMap<DatumKey, usize>),
}

struct Group {
    /// The first shard row of the group, for the group keys and any other
    /// non-aggregate column; `None` for the lone group of an ungrouped
    /// aggregate over no rows.
    first: Option<Bytes>,
    states: Vec<AggState>,
}

pub(super) struct Grouper {
    group_by: Vec<usize>,
    aggregates: Vec<AggregateColumn>,
    having: Option<Expr>,
    types: Vec<ColumnType>,
    partial_types: Vec<Vec<ColumnType>>,
    /// For each shard-row column, the aggregate computing it.
    aggregate_of_column: Vec<Option<usize>>,
    index: GroupIndex,
    groups: Vec<Group>,
    key: Vec<u8>,
    partials: Vec<Datum>,
    arena: BytesMut,
    /// Bytes the groups hold (each its first row, its key and its states,
    /// roughly), and the most they may.
    held_bytes: usize,
    pub(super) limit_bytes: usize,
}

impl Grouper {
    /// Checks every aggregate can merge its column types (so an unsupported
    /// one fails before any row); the caller checked column numbers.
    pub fn new(plan: &AggregatePlan, description: &RowDescription) -> Result<Grouper, MergeError> {
        let types: Vec<ColumnType> = description.fields.iter().map(|f| f.column_type()).collect();
        let partial_types: Vec<Vec<ColumnType>> = plan
            .aggregates
            .iter()
            .map(|a| a.partials.iter().map(|p| types[*p]).collect())
            .collect();
        let mut aggregate_of_column = vec![None; types.len()];
        for (index, aggregate) in plan.aggregates.iter().enumerate() {
            AggState::new(
                aggregate.kind,
                types[aggregate.column],
                &partial_types[index],
            )?;
            aggregate_of_column[aggregate.column] = Some(index);
        }
        let index = if plan
            .group_by
            .iter()
            .all(|c| bytes_decide_equality(types[*c]))
        {
            GroupIndex::Bytes(HashMap::new())
        } else {
            GroupIndex::Datums(BTreeMap::new())
        };
        Ok(Grouper {
            group_by: plan.group_by.clone(),
            aggregates: plan.aggregates.clone(),
            having: plan.having.clone(),
            types,
            partial_types,
            aggregate_of_column,
            index,
            groups: Vec::new(),
            key: Vec::new(),
            partials: Vec::new(),
            arena: BytesMut::new(),
            held_bytes: 0,
            limit_bytes: usize::MAX,
        })
    }

    /// Folds one shard row (split into `spans`) into its group.
    pub fn add(&mut self, body: &[u8], spans: &[Span]) -> Result<(), MergeError> {
        let group = self.find_or_insert(body, spans)?;
        let states = &mut self.groups[group].states;
        for (aggregate, state) in self.aggregates.iter().zip(states) {
            let value = datum::decode(
                self.types[aggregate.column],
                spans[aggregate.column].value(body),
            )?;
            self.partials.clear();
            for &column in &aggregate.partials {
                let partial = datum::decode(self.types[column], spans[column].value(body))?;
                self.partials.push(partial);
            }
            state.add(&value, &self.partials)?;
        }
        Ok(())
    }

    /// Finishes every group, drops those HAVING rejects and offers the rest
    /// to `collector` in the order the groups first appeared.
    pub fn finish(
        &mut self,
        params: &[ParamValue],
        collector: &mut Collector,
    ) -> Result<(), MergeError> {
        if self.groups.is_empty() && self.group_by.is_empty() {
            // Aggregates without GROUP BY make one row even over no rows.
            let states = new_states(&self.aggregates, &self.types, &self.partial_types)?;
            self.groups.push(Group {
                first: None,
                states,
            });
        }
        let having = self.having.take();
        let having = having
            .as_ref()
            .map(|expr| Having::new(expr, &self.types, params));
        let mut first_spans = Vec::with_capacity(self.types.len());
        let mut spans = Vec::with_capacity(self.types.len());
        let mut row = BytesMut::new();
        for group in std::mem::take(&mut self.groups) {
            if let Some(first) = &group.first {
                split_data_row(first, self.types.len(), &mut first_spans)?;
            }
            self.write_row(&group, &first_spans, &mut row)?;
            let row = row.split().freeze();
            split_data_row(&row, self.types.len(), &mut spans)?;
            if let Some(having) = &having {
                let value =
                    |column: usize| datum::decode(self.types[column], spans[column].value(&row));
                if !having.holds(value)? {
                    continue;
                }
            }
            collector.offer(RowBody::Owned(row), &spans)?;
        }
        Ok(())
    }

    /// The group's row: aggregates finished and re-encoded, every other
    /// column as the group's first row had it (NULL without one).
    fn write_row(
        &self,
        group: &Group,
        first_spans: &[Span],
        out: &mut BytesMut,
    ) -> Result<(), MergeError> {
        let count = i16::try_from(self.types.len()).expect("column count came from an i16");
        out.put_i16(count);
        let columns = self.types.iter().zip(&self.aggregate_of_column).enumerate();
        for (column, (ty, aggregate)) in columns {
            match (aggregate, &group.first) {
                (Some(aggregate), _) => {
                    let value = group.states[*aggregate].finish()?;
                    datum::encode(*ty, &value, out);
                }
                (None, Some(first)) => out.put_slice(first_spans[column].raw(first)),
                (None, None) => out.put_i32(-1),
            }
        }
        Ok(())
    }

    fn find_or_insert(&mut self, body: &[u8], spans: &[Span]) -> Result<usize, MergeError> {
        let group = self.groups.len();
        // A new group costs its row twice (first row, key) and its states.
        let cost = 2 * body.len() + 64 * self.aggregates.len().max(1);
        match &mut self.index {
            GroupIndex::Bytes(index) => {
                self.key.clear();
                for &column in &self.group_by {
                    self.key.extend_from_slice(spans[column].raw(body));
                }
                if let Some(found) = index.get(self.key.as_slice()) {
                    return Ok(*found);
                }
                // States first: the index never names a group that failed.
                let states = new_states(&self.aggregates, &self.types, &self.partial_types)?;
                index.insert(self.key.as_slice().into(), group);
                self.push_group(body, states);
                self.count(cost)?;
            }
            GroupIndex::Datums(index) => {
                let key = self
                    .group_by
                    .iter()
                    .map(|c| datum::decode(self.types[*c], spans[*c].value(body)))
                    .collect::<Result<Vec<Datum>, _>>()?;
                let key = DatumKey(key);
                if let Some(found) = index.get(&key) {
                    return Ok(*found);
                }
                let states = new_states(&self.aggregates, &self.types, &self.partial_types)?;
                index.insert(key, group);
                self.push_group(body, states);
                self.count(cost)?;
            }
        }
        Ok(group)
    }

    fn count(&mut self, cost: usize) -> Result<(), MergeError> {
        self.held_bytes += cost;
        if self.held_bytes > self.limit_bytes {
            return Err(MergeError::TooLarge {
                limit_bytes: self.limit_bytes,
            });
        }
        Ok(())
    }

    fn push_group(&mut self, body: &[u8], states: Vec<AggState>) {
        if self.arena.capacity() < body.len() {
            self.arena.reserve(body.len().max(ARENA_CHUNK_BYTES));
        }
        self.arena.extend_from_slice(body);
        let first = Some(self.arena.split().freeze());
        self.groups.push(Group { first, states });
    }
}

/// Fresh merge states for one group.
fn new_states(
    aggregates: &[AggregateColumn],
    types: &[ColumnType],
    partial_types: &[Vec<ColumnType>],
) -> Result<Vec<AggState>, MergeError> {
    aggregates
        .iter()
        .zip(partial_types)
        .map(|(a, partials)| AggState::new(a.kind, types[a.column], partials))
        .collect::<Result<_, _>>()
        .map_err(MergeError::from)
}

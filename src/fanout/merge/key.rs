//! Equality of a tuple of column values, for GROUP BY and DISTINCT: either
//! the encoded bytes (when equal values of every column's type always encode
//! the same way, the fast path) or the decoded datums ordered with
//! `datum::compare`. Decides which; holds no rows.

use std::cmp::Ordering;

use crate::fanout::datum::{self, ColumnType, Datum};

/// Whether two values of this type are equal exactly when their encodings
/// (text or binary) are. Not numeric ('1.0' = '1.00'), not floats ('-0' =
/// '0'), not interval ('1 day' = '24 hours'), not json/jsonb, not
/// timestamptz in text (printed in each shard session's TimeZone); text
/// types are listed on the assumption of deterministic collations.
pub(super) fn bytes_decide_equality(ty: ColumnType) -> bool {
    // bool, bytea, "char", name, int8, int2, int4, text, oid, bpchar (one
    // typmod per column, so one padding), varchar, date, time, timestamp,
    // uuid.
    const BYTE_EQUAL_OIDS: [u32; 15] = [
        16, 17, 18, 19, 20, 21, 23, 25, 26, 1042, 1043, 1082, 1083, 1114, 2950,
    ];
    const TIMESTAMPTZ_OID: u32 = 1184;
    BYTE_EQUAL_OIDS.contains(&ty.oid) || (ty.oid == TIMESTAMPTZ_OID && ty.binary)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_equality_only_where_encodings_are_canonical() {
        let text = |oid| ColumnType { oid, binary: false };
        let binary = |oid| ColumnType { oid, binary: true };
        assert!(bytes_decide_equality(text(23)));
        assert!(bytes_decide_equality(binary(25)));
        assert!(bytes_decide_equality(binary(1184)));
        for oid in [1700, 700, 701, 1186, 114, 3802, 1184] {
            assert!(!bytes_decide_equality(text(oid)), "{oid}");
        }
    }

    #[test]
    fn datum_keys_group_nulls_together() {
        let a = DatumKey(vec![Datum::Null, Datum::Int(1)]);
        let b = DatumKey(vec![Datum::Null, Datum::Int(1)]);
        let c = DatumKey(vec![Datum::Int(0), Datum::Int(1)]);
        assert_eq!(a, b);
        assert!(a < c);
    }
}

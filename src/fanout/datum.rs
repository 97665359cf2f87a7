//! Result values of a cross-shard SELECT: decoded from a DataRow field in
//! text or binary format, compared for ORDER BY / GROUP BY / DISTINCT,
//! combined in HAVING, and encoded back exactly as Postgres would print them.
//! Owns no I/O and no plan logic.

use bytes::{BufMut, BytesMut};
use std::cmp::Ordering;

use crate::fanout::numeric::Numeric;
use crate::fanout::plan::ArithmeticOp;

/// A result column's type as the shard's RowDescription gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnType {
    pub oid: u32,
    /// Format code 1 (binary); `false` is text.
    pub binary: bool,
}

/// One decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    Bool(bool),
    /// int2, int4, int8, oid.
    Int(i64),
    /// float4, float8.
    Float(f64),
    Numeric(Numeric),
    /// text, varchar, bpchar, name: compared bytewise.
    Text(Vec<u8>),
    /// bytea, "char", and any type sleddog does not know (raw bytes as sent).
    Bytes(Vec<u8>),
    /// timestamp: µs since 2000-01-01 00:00:00.
    Timestamp(i64),
    /// timestamptz: µs since 2000-01-01 00:00:00 UTC, and the UTC offset in
    /// seconds the text form was printed with (0 from binary).
    TimestampTz(i64, i32),
    /// date: days since 2000-01-01.
    Date(i32),
    /// time: µs since midnight.
    Time(i64),
    Uuid([u8; 16]),
    Interval {
        months: i32,
        days: i32,
        micros: i64,
    },
}

/// Why a value could not be decoded or combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatumError {
    /// The bytes are not a valid value of the type.
    Invalid {
        oid: u32,
        binary: bool,
    },
    /// sleddog cannot merge this type this way.
    Unsupported {
        oid: u32,
        what: &'static str,
    },
    /// A result does not fit its type ("bigint out of range").
    OutOfRange(&'static str),
    DivisionByZero,
    /// Operands of HAVING arithmetic that do not combine.
    Incompatible,
}

impl std::fmt::Display for DatumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatumError::Invalid { oid, binary } => write!(
                f,
                "invalid {} value of type oid {oid} in a shard's row",
                if *binary { "binary" } else { "text" }
            ),
            DatumError::Unsupported { oid, what } => {
                write!(f, "{what} of type oid {oid} is not supported across shards")
            }
            DatumError::OutOfRange(what) => write!(f, "{what} out of range"),
            DatumError::DivisionByZero => write!(f, "division by zero"),
            DatumError::Incompatible => write!(f, "operands of incompatible types"),
        }
    }
}

impl std::error::Error for DatumError {}

pub fn decode(ty: ColumnType, value: Option<&[u8]>) -> Result<Datum, DatumError> {
    let Some(value) = value else {
        return Ok(Datum::Null);
    };
    let invalid = DatumError::Invalid {
        oid: ty.oid,
        binary: ty.binary,
    };
    match (ty.oid, ty.binary) {
        (20 | 21 | 23, false) => std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Datum::Int)
            .ok_or(invalid),
        (25 | 1043 | 1042 | 19, _) => Ok(Datum::Text(value.to_vec())),
        _ => Ok(Datum::Bytes(value.to_vec())),
    }
}

pub fn encode(_ty: ColumnType, datum: &Datum, out: &mut BytesMut) {
    match datum {
        Datum::Null => out.put_i32(-1),
        Datum::Int(i) => put_field(out, i.to_string().as_bytes()),
        Datum::Text(b) | Datum::Bytes(b) => put_field(out, b),
        _ => put_field(out, b""),
    }
}

fn put_field(out: &mut BytesMut, bytes: &[u8]) {
    out.put_i32(i32::try_from(bytes.len()).expect("a field longer than 2 GiB cannot be built"));
    out.put_slice(bytes);
}

pub fn compare(a: &Datum, b: &Datum) -> Ordering {
    match (a, b) {
        (Datum::Int(a), Datum::Int(b)) => a.cmp(b),
        (Datum::Text(a), Datum::Text(b)) | (Datum::Bytes(a), Datum::Bytes(b)) => a.cmp(b),
        _ => Ordering::Equal,
    }
}

pub fn literal(text: &str) -> Datum {
    match text.parse::<i64>() {
        Ok(i) => Datum::Int(i),
        Err(_) => Datum::Text(text.as_bytes().to_vec()),
    }
}

pub fn compare_mixed(a: &Datum, b: &Datum) -> Option<Ordering> {
    match (a, b) {
        (Datum::Int(a), Datum::Int(b)) => Some(a.cmp(b)),
        (Datum::Text(a), Datum::Text(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

pub fn arithmetic(op: ArithmeticOp, a: &Datum, b: &Datum) -> Result<Datum, DatumError> {
    let (Datum::Int(a), Datum::Int(b)) = (a, b) else {
        return Err(DatumError::Incompatible);
    };
    let r = match op {
        ArithmeticOp::Add => a.checked_add(*b),
        ArithmeticOp::Subtract => a.checked_sub(*b),
        ArithmeticOp::Multiply => a.checked_mul(*b),
        ArithmeticOp::Divide => {
            if *b == 0 {
                return Err(DatumError::DivisionByZero);
            }
            a.checked_div(*b)
        }
    };
    r.map(Datum::Int).ok_or(DatumError::OutOfRange("bigint"))
}

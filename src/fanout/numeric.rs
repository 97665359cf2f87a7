//! Postgres `numeric`: an arbitrary-precision decimal with a display scale,
//! NaN and ±Infinity, parsed from and printed to text and the binary wire
//! format, with the arithmetic the cross-shard merge needs (add, subtract,
//! multiply, divide, square root) at exactly Postgres's result scales.
//! Owns no I/O and knows nothing of aggregates or plans.

use std::cmp::Ordering;

/// A numeric value. Finite values are `coefficient × 10^-scale`, where
/// `scale` is also the display scale (digits printed after the point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Numeric {
    NaN,
    PosInfinity,
    NegInfinity,
    Finite(Decimal),
}

/// A finite numeric: sign, magnitude and display scale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    pub negative: bool,
    /// The magnitude's decimal digits, most significant first, no leading zeros
    /// (empty for zero).
    pub digits: Vec<u8>,
    /// Digits after the decimal point.
    pub scale: u32,
}

/// Why a numeric operation or parse failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumericError {
    InvalidText,
    InvalidBinary,
    DivisionByZero,
}

impl Numeric {
    pub fn parse_text(_text: &str) -> Result<Numeric, NumericError> {
        Err(NumericError::InvalidText)
    }

    pub fn compare(&self, _other: &Numeric) -> Ordering {
        Ordering::Equal
    }
}

//! Postgres `numeric`: an arbitrary-precision decimal with a display scale,
//! NaN and ±Infinity, parsed from and printed to text and the binary wire
//! format, with the arithmetic the cross-shard merge needs (add, subtract,
//! multiply, divide, square root) at exactly Postgres's result scales
//! (numeric.c: `add_var`, `mul_var`, `select_div_scale`, `div_var`,
//! `sqrt_var`). Owns no I/O and knows nothing of aggregates or plans.
//!
//! A finite value is `magnitude × 10^-scale` where `scale` is Postgres's
//! display scale (dscale): the value always holds exactly the digits it
//! prints. The magnitude is a small unsigned big integer in base 10^9 limbs;
//! no external bigint crate.

use std::cmp::Ordering;

/// Postgres's NUMERIC_MIN_SIG_DIGITS: a quotient carries at least this many
/// significant digits.
const MIN_SIG_DIGITS: i64 = 16;
/// Postgres's NUMERIC_MAX_DISPLAY_SCALE: the cap on a quotient's scale.
const MAX_DISPLAY_SCALE: i64 = 1000;
/// Postgres's limits on a numeric: 131072 digits before the point and 16383
/// after. Inputs beyond them are refused, which also bounds the work here.
const MAX_INT_DIGITS: usize = 131_072;
const MAX_SCALE: u32 = 16_383;

/// A numeric value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Numeric {
    NaN,
    PosInfinity,
    NegInfinity,
    Finite(Decimal),
}

/// A finite numeric: `magnitude × 10^-scale`, negative when `negative`
/// (never a negative zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    magnitude: BigUint,
    scale: u32,
}

/// Why a numeric could not be parsed or computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericError {
    InvalidText,
    InvalidBinary,
    DivisionByZero,
    /// Beyond Postgres's numeric limits.
    OutOfRange,
}

impl std::fmt::Display for NumericError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NumericError::InvalidText => "invalid numeric text",
            NumericError::InvalidBinary => "invalid numeric binary value",
            NumericError::DivisionByZero => "division by zero",
            NumericError::OutOfRange => "value overflows numeric format",
        })
    }
}

/// Sign word of the binary format ("numeric_send" in numeric.c).
const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_PINF: u16 = 0xD000;
const SIGN_NINF: u16 = 0xF000;

impl Numeric {
    pub fn zero() -> Numeric {
        Numeric::Finite(Decimal::new(false, BigUint::zero(), 0))
    }

    pub fn from_i64(value: i64) -> Numeric {
        Numeric::Finite(Decimal::new(
            value < 0,
            BigUint::from_u64(value.unsigned_abs()),
            0,
        ))
    }

    /// Parses Postgres's numeric input syntax: `[+-]digits[.digits][e[+-]n]`,
    /// `NaN`, `Infinity`, `inf` (any case, surrounding spaces allowed).
    pub fn parse_text(text: &str) -> Result<Numeric, NumericError> {
        let text = text.trim();
        let (negative, body) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        if body.eq_ignore_ascii_case("nan") {
            // A sign before NaN is refused by Postgres.
            return if body.len() == text.len() {
                Ok(Numeric::NaN)
            } else {
                Err(NumericError::InvalidText)
            };
        }
        if body.eq_ignore_ascii_case("infinity") || body.eq_ignore_ascii_case("inf") {
            return Ok(if negative {
                Numeric::NegInfinity
            } else {
                Numeric::PosInfinity
            });
        }
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(at) => {
                let exponent: i64 = body[at + 1..]
                    .parse()
                    .map_err(|_| NumericError::InvalidText)?;
                (&body[..at], exponent)
            }
            None => (body, 0),
        };
        let (int_part, frac_part) = match mantissa.find('.') {
            Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
            None => (mantissa, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int_part.is_empty() && frac_part.is_empty())
            || !all_digits(int_part)
            || !all_digits(frac_part)
            || exponent.abs() > 1_000_000
        {
            return Err(NumericError::InvalidText);
        }
        // value = int_part.frac_part × 10^exponent; dscale = frac digits − exponent.
        let digits: Vec<u8> = int_part
            .bytes()
            .chain(frac_part.bytes())
            .map(|b| b - b'0')
            .collect();
        let scale = frac_part.len() as i64 - exponent;
        let (magnitude, scale) = if scale >= 0 {
            (BigUint::from_decimal_digits(&digits), scale)
        } else {
            let mut m = BigUint::from_decimal_digits(&digits);
            m.mul_pow10(usize::try_from(-scale).map_err(|_| NumericError::OutOfRange)?);
            (m, 0)
        };
        let scale = u32::try_from(scale).map_err(|_| NumericError::OutOfRange)?;
        let decimal = Decimal::new(negative, magnitude, scale);
        decimal.check_limits()?;
        Ok(Numeric::Finite(decimal))
    }

    /// Postgres's `numeric_out`: `dscale` digits after the point.
    pub fn to_text(&self) -> String {
        match self {
            Numeric::NaN => "NaN".to_string(),
            Numeric::PosInfinity => "Infinity".to_string(),
            Numeric::NegInfinity => "-Infinity".to_string(),
            Numeric::Finite(d) => d.to_text(),
        }
    }

    /// Decodes the binary format ("numeric_recv"): int16 ndigits, int16
    /// weight, uint16 sign, int16 dscale, then ndigits base-10000 digits.
    pub fn decode_binary(bytes: &[u8]) -> Result<Numeric, NumericError> {
        let word = |i: usize| -> Result<u16, NumericError> {
            bytes
                .get(i * 2..i * 2 + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or(NumericError::InvalidBinary)
        };
        let ndigits = usize::from(word(0)?);
        let weight = i64::from(word(1)? as i16);
        let sign = word(2)?;
        let dscale = word(3)?;
        if bytes.len() != 8 + 2 * ndigits {
            return Err(NumericError::InvalidBinary);
        }
        match sign {
            SIGN_NAN => return Ok(Numeric::NaN),
            SIGN_PINF => return Ok(Numeric::PosInfinity),
            SIGN_NINF => return Ok(Numeric::NegInfinity),
            SIGN_POS | SIGN_NEG => {}
            _ => return Err(NumericError::InvalidBinary),
        }
        if u32::from(dscale) > MAX_SCALE {
            return Err(NumericError::InvalidBinary);
        }
        let mut digits = Vec::with_capacity(ndigits * 4);
        for i in 0..ndigits {
            let d = word(4 + i)?;
            if d >= 10_000 {
                return Err(NumericError::InvalidBinary);
            }
            digits.extend_from_slice(&[
                (d / 1000) as u8,
                (d / 100 % 10) as u8,
                (d / 10 % 10) as u8,
                (d % 10) as u8,
            ]);
        }
        // The digits as an integer are worth 10^(4·(weight − ndigits + 1)).
        let exponent = 4 * (weight - ndigits as i64 + 1) + i64::from(dscale);
        let mut magnitude = BigUint::from_decimal_digits(&digits);
        if exponent >= 0 {
            if weight > (MAX_INT_DIGITS / 4) as i64 {
                return Err(NumericError::InvalidBinary);
            }
            magnitude.mul_pow10(exponent as usize);
        } else {
            // Digits beyond dscale are dropped, as numeric_out would.
            magnitude = magnitude.div_pow10_trunc((-exponent) as usize);
        }
        Ok(Numeric::Finite(Decimal::new(
            sign == SIGN_NEG,
            magnitude,
            u32::from(dscale),
        )))
    }

    /// Encodes the binary format as Postgres's `numeric_send` does:
    /// leading and trailing zero base-10000 digits stripped, zero as no
    /// digits with weight 0, NaN with dscale 0 and the infinities with
    /// dscale 32 (what Postgres 15 reads from their header bits).
    pub fn encode_binary(&self, out: &mut Vec<u8>) {
        let (digits, weight, sign, dscale): (Vec<u16>, i16, u16, u16) = match self {
            Numeric::NaN => (Vec::new(), 0, SIGN_NAN, 0),
            Numeric::PosInfinity => (Vec::new(), 0, SIGN_PINF, 32),
            Numeric::NegInfinity => (Vec::new(), 0, SIGN_NINF, 32),
            Numeric::Finite(d) => {
                let (digits, weight) = d.base10000();
                let sign = if d.negative { SIGN_NEG } else { SIGN_POS };
                // Limits checked at construction keep these in range.
                (digits, weight as i16, sign, d.scale as u16)
            }
        };
        out.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
    }

    /// Postgres's total order for numeric: NaN above everything (and equal to
    /// NaN), then +Infinity, finite values by value (1.0 = 1.00), −Infinity.
    pub fn compare(&self, other: &Numeric) -> Ordering {
        self.rank()
            .cmp(&other.rank())
            .then_with(|| match (self, other) {
                (Numeric::Finite(a), Numeric::Finite(b)) => a.compare(b),
                _ => Ordering::Equal,
            })
    }

    fn rank(&self) -> u8 {
        match self {
            Numeric::NegInfinity => 0,
            Numeric::Finite(_) => 1,
            Numeric::PosInfinity => 2,
            Numeric::NaN => 3,
        }
    }

    pub fn is_nan(&self) -> bool {
        matches!(self, Numeric::NaN)
    }

    /// `numeric_add`: the result's scale is the larger scale.
    pub fn add(&self, other: &Numeric) -> Result<Numeric, NumericError> {
        match (self, other) {
            (Numeric::Finite(a), Numeric::Finite(b)) => {
                let d = a.add(b);
                d.check_limits()?;
                Ok(Numeric::Finite(d))
            }
            (Numeric::NaN, _) | (_, Numeric::NaN) => Ok(Numeric::NaN),
            (Numeric::PosInfinity, Numeric::NegInfinity)
            | (Numeric::NegInfinity, Numeric::PosInfinity) => Ok(Numeric::NaN),
            (Numeric::PosInfinity, _) | (_, Numeric::PosInfinity) => Ok(Numeric::PosInfinity),
            (Numeric::NegInfinity, _) | (_, Numeric::NegInfinity) => Ok(Numeric::NegInfinity),
        }
    }

    pub fn negate(&self) -> Numeric {
        match self {
            Numeric::NaN => Numeric::NaN,
            Numeric::PosInfinity => Numeric::NegInfinity,
            Numeric::NegInfinity => Numeric::PosInfinity,
            Numeric::Finite(d) => Numeric::Finite(d.negated()),
        }
    }

    pub fn sub(&self, other: &Numeric) -> Result<Numeric, NumericError> {
        self.add(&other.negate())
    }

    /// `numeric_mul`: exact, scale is the sum of the scales.
    pub fn mul(&self, other: &Numeric) -> Result<Numeric, NumericError> {
        match (self, other) {
            (Numeric::Finite(a), Numeric::Finite(b)) => {
                let d = a.mul(b, a.scale + b.scale);
                d.check_limits()?;
                Ok(Numeric::Finite(d))
            }
            (Numeric::NaN, _) | (_, Numeric::NaN) => Ok(Numeric::NaN),
            _ => {
                // Infinity × 0 is NaN; otherwise an infinity of the product's sign.
                let (sa, sb) = (self.signum(), other.signum());
                Ok(match sa * sb {
                    0 => Numeric::NaN,
                    s if s > 0 => Numeric::PosInfinity,
                    _ => Numeric::NegInfinity,
                })
            }
        }
    }

    /// `numeric_div`: the quotient at `select_div_scale`'s scale, rounded
    /// half away from zero.
    pub fn div(&self, other: &Numeric) -> Result<Numeric, NumericError> {
        match (self, other) {
            (Numeric::Finite(a), Numeric::Finite(b)) => {
                let scale = select_div_scale(a, b);
                Ok(Numeric::Finite(a.div(b, scale)?))
            }
            (Numeric::NaN, _) | (_, Numeric::NaN) => Ok(Numeric::NaN),
            (Numeric::Finite(_), _) => Ok(Numeric::zero()),
            (_, Numeric::Finite(b)) => match b.signum() {
                0 => Err(NumericError::DivisionByZero),
                s if s * self.signum() > 0 => Ok(Numeric::PosInfinity),
                _ => Ok(Numeric::NegInfinity),
            },
            _ => Ok(Numeric::NaN),
        }
    }

    fn signum(&self) -> i32 {
        match self {
            Numeric::NaN => 0,
            Numeric::PosInfinity => 1,
            Numeric::NegInfinity => -1,
            Numeric::Finite(d) => d.signum(),
        }
    }

    /// The nearest f64, as Postgres's `numeric_float8` (which parses the
    /// printed text with strtod).
    pub fn to_f64(&self) -> f64 {
        match self {
            Numeric::NaN => f64::NAN,
            Numeric::PosInfinity => f64::INFINITY,
            Numeric::NegInfinity => f64::NEG_INFINITY,
            Numeric::Finite(d) => d.to_text().parse().unwrap_or(f64::NAN),
        }
    }

    /// The exact value of an f64 as Postgres's `float8_numeric` would give
    /// it: the shortest round-trip digits.
    pub fn from_f64(value: f64) -> Numeric {
        if value.is_nan() {
            Numeric::NaN
        } else if value == f64::INFINITY {
            Numeric::PosInfinity
        } else if value == f64::NEG_INFINITY {
            Numeric::NegInfinity
        } else {
            Numeric::parse_text(&format!("{value:e}")).unwrap_or(Numeric::NaN)
        }
    }

    /// The value as an i64 when it is an integer in range.
    #[cfg(test)]
    pub fn to_i64(&self) -> Option<i64> {
        let Numeric::Finite(d) = self else {
            return None;
        };
        if d.scale != 0 {
            return None;
        }
        let m = d.magnitude.to_u64()?;
        if d.negative {
            0i64.checked_sub_unsigned(m)
        } else {
            i64::try_from(m).ok()
        }
    }
}

impl Decimal {
    fn new(negative: bool, magnitude: BigUint, scale: u32) -> Decimal {
        // Postgres has no negative zero.
        let negative = negative && !magnitude.is_zero();
        Decimal {
            negative,
            magnitude,
            scale,
        }
    }

    fn check_limits(&self) -> Result<(), NumericError> {
        let digits = self.magnitude.decimal_len();
        if self.scale > MAX_SCALE || digits.saturating_sub(self.scale as usize) > MAX_INT_DIGITS {
            return Err(NumericError::OutOfRange);
        }
        Ok(())
    }

    fn signum(&self) -> i32 {
        if self.magnitude.is_zero() {
            0
        } else if self.negative {
            -1
        } else {
            1
        }
    }

    fn negated(&self) -> Decimal {
        Decimal::new(!self.negative, self.magnitude.clone(), self.scale)
    }

    /// The magnitude rescaled (exactly) to a larger scale.
    fn magnitude_at(&self, scale: u32) -> BigUint {
        let mut m = self.magnitude.clone();
        m.mul_pow10((scale - self.scale) as usize);
        m
    }

    fn compare(&self, other: &Decimal) -> Ordering {
        let (sa, sb) = (self.signum(), other.signum());
        if sa != sb {
            return sa.cmp(&sb);
        }
        let scale = self.scale.max(other.scale);
        let by_magnitude = self
            .magnitude_at(scale)
            .cmp_magnitude(&other.magnitude_at(scale));
        if sa < 0 {
            by_magnitude.reverse()
        } else {
            by_magnitude
        }
    }

    fn add(&self, other: &Decimal) -> Decimal {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.magnitude_at(scale), other.magnitude_at(scale));
        if self.negative == other.negative {
            return Decimal::new(self.negative, a.add(&b), scale);
        }
        match a.cmp_magnitude(&b) {
            Ordering::Less => Decimal::new(other.negative, b.sub(&a), scale),
            _ => Decimal::new(self.negative, a.sub(&b), scale),
        }
    }

    /// The exact product; `scale` must be the sum of the scales (callers that
    /// want fewer digits round afterwards).
    fn mul(&self, other: &Decimal, scale: u32) -> Decimal {
        debug_assert_eq!(scale, self.scale + other.scale);
        Decimal::new(
            self.negative != other.negative,
            self.magnitude.mul(&other.magnitude),
            scale,
        )
    }

    /// The quotient rounded half away from zero at `scale` (div_var with
    /// round = true).
    fn div(&self, other: &Decimal, scale: u32) -> Result<Decimal, NumericError> {
        if other.magnitude.is_zero() {
            return Err(NumericError::DivisionByZero);
        }
        // a/b × 10^(scale+1) = A × 10^(sb − sa + scale + 1) / B.
        let exponent = i64::from(other.scale) - i64::from(self.scale) + i64::from(scale) + 1;
        let mut numerator = self.magnitude.clone();
        let mut denominator = other.magnitude.clone();
        if exponent >= 0 {
            numerator.mul_pow10(exponent as usize);
        } else {
            denominator.mul_pow10((-exponent) as usize);
        }
        let quotient = numerator.div_rem(&denominator).0;
        let d = Decimal::new(
            self.negative != other.negative,
            round_last_digit(quotient),
            scale,
        );
        d.check_limits()?;
        Ok(d)
    }

    /// The square root rounded half away from zero at `scale` (sqrt_var);
    /// `None` for a negative value.
    fn sqrt(&self, scale: u32) -> Option<Decimal> {
        if self.negative {
            return None;
        }
        // sqrt(A × 10^-s) × 10^(scale+1) = sqrt(A × 10^(2·scale + 2 − s)).
        let exponent = 2 * (i64::from(scale) + 1) - i64::from(self.scale);
        let radicand = if exponent >= 0 {
            let mut m = self.magnitude.clone();
            m.mul_pow10(exponent as usize);
            m
        } else {
            // floor(sqrt(floor(y))) = floor(sqrt(y)) for y ≥ 0.
            self.magnitude.div_pow10_trunc((-exponent) as usize)
        };
        Some(Decimal::new(
            false,
            round_last_digit(radicand.isqrt()),
            scale,
        ))
    }

    fn to_text(&self) -> String {
        let digits = self.magnitude.to_decimal_string();
        let scale = self.scale as usize;
        let mut out = String::with_capacity(digits.len() + scale + 3);
        if self.negative {
            out.push('-');
        }
        if digits.len() > scale {
            let (int_part, frac_part) = digits.split_at(digits.len() - scale);
            out.push_str(int_part);
            if scale > 0 {
                out.push('.');
                out.push_str(frac_part);
            }
        } else {
            out.push('0');
            if scale > 0 {
                out.push('.');
                out.extend(std::iter::repeat_n('0', scale - digits.len()));
                out.push_str(&digits);
            }
        }
        out
    }

    /// Base-10000 digits (leading and trailing zero digits stripped) and
    /// the weight of the first, as Postgres stores them.
    fn base10000(&self) -> (Vec<u16>, i64) {
        if self.magnitude.is_zero() {
            return (Vec::new(), 0);
        }
        let text = self.magnitude.to_decimal_string();
        let scale = self.scale as usize;
        // Pad so the point falls on a 4-digit boundary on both sides.
        let int_len = text.len().saturating_sub(scale);
        let frac_len = scale;
        let lead_pad = (4 - int_len % 4) % 4 + scale.saturating_sub(text.len());
        let trail_pad = (4 - frac_len % 4) % 4;
        let padded: Vec<u8> = std::iter::repeat_n(0, lead_pad)
            .chain(text.bytes().map(|b| b - b'0'))
            .chain(std::iter::repeat_n(0, trail_pad))
            .collect();
        let int_groups = int_len.div_ceil(4);
        let mut digits: Vec<u16> = padded
            .chunks(4)
            .map(|c| c.iter().fold(0u16, |acc, d| acc * 10 + u16::from(*d)))
            .collect();
        let mut weight = int_groups as i64 - 1;
        let leading_zeros = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..leading_zeros);
        weight -= leading_zeros as i64;
        while digits.last() == Some(&0) {
            digits.pop();
        }
        (digits, weight)
    }
}

/// Postgres's `select_div_scale`: enough digits for MIN_SIG_DIGITS
/// significant digits in the quotient, at least either input's scale,
/// at most MAX_DISPLAY_SCALE.
fn select_div_scale(a: &Decimal, b: &Decimal) -> u32 {
    let (da, wa) = a.base10000();
    let (db, wb) = b.base10000();
    let first_a = da.first().copied().unwrap_or(0);
    let first_b = db.first().copied().unwrap_or(0);
    let mut quotient_weight = wa - wb;
    if first_a <= first_b {
        quotient_weight -= 1;
    }
    let scale = (MIN_SIG_DIGITS - quotient_weight * 4)
        .max(i64::from(a.scale))
        .max(i64::from(b.scale))
        .clamp(0, MAX_DISPLAY_SCALE);
    scale as u32
}

/// Drops the last decimal digit, rounding half away from zero on it.
fn round_last_digit(value: BigUint) -> BigUint {
    let (mut q, r) = value.div_rem_small(10);
    if r >= 5 {
        q = q.add(&BigUint::from_u64(1));
    }
    q
}

/// The variance or standard deviation of numeric partials, exactly as
/// Postgres's `numeric_stddev_internal`: from N, Σx and Σx² (whose scales
/// are those of the inputs' sums), numerator N·Σx² − (Σx)² at twice Σx's
/// scale, divided by N·(N−1) (sample) or N² (population) at
/// select_div_scale's scale, then square-rooted at the same scale.
/// `None` where Postgres returns NULL (N = 0, or N ≤ 1 for a sample).
pub fn variance(
    count: i64,
    sum: &Numeric,
    sum_squares: &Numeric,
    sample: bool,
    stddev: bool,
) -> Result<Option<Numeric>, NumericError> {
    if count <= 0 || (sample && count <= 1) {
        return Ok(None);
    }
    let (Numeric::Finite(sum), Numeric::Finite(sum_squares)) = (sum, sum_squares) else {
        // Any NaN or infinity input makes the result NaN.
        return Ok(Some(Numeric::NaN));
    };
    let Numeric::Finite(n) = Numeric::from_i64(count) else {
        unreachable!("an i64 is finite")
    };
    let scale = sum.scale * 2;
    // mul_var at rscale = 2·scale(Σx) is exact for Σx·Σx; N·Σx² keeps Σx²'s
    // digits when Σx² has scale ≤ 2·scale(Σx), which holds for sums of
    // x·x (scale 2·scale(x)). Round in case a caller passes more digits.
    let square = sum.mul(sum, scale);
    let scaled = round_to(&n.mul(sum_squares, sum_squares.scale), scale);
    let numerator = scaled.add(&square.negated());
    if numerator.signum() <= 0 {
        return Ok(Some(Numeric::zero()));
    }
    let Numeric::Finite(n_minus_1) = Numeric::from_i64(count - 1) else {
        unreachable!("an i64 is finite")
    };
    let denominator = if sample {
        n.mul(&n_minus_1, 0)
    } else {
        n.mul(&n, 0)
    };
    let rscale = select_div_scale(&numerator, &denominator);
    let result = numerator.div(&denominator, rscale)?;
    if !stddev {
        return Ok(Some(Numeric::Finite(result)));
    }
    Ok(result.sqrt(rscale).map(Numeric::Finite))
}

/// A decimal rounded half away from zero (or padded) to `scale` digits.
fn round_to(d: &Decimal, scale: u32) -> Decimal {
    if d.scale <= scale {
        return Decimal::new(d.negative, d.magnitude_at(scale), scale);
    }
    let extra = (d.scale - scale) as usize;
    let truncated = d.magnitude.div_pow10_trunc(extra - 1);
    Decimal::new(d.negative, round_last_digit(truncated), scale)
}

/// The decimal digits Postgres's float8out/float4out print for a finite,
/// positive value (Postgres's Ryu build, src/common/d2s.c and f2s.c), and
/// the decimal exponent of the first digit. Postgres differs from Rust's
/// shortest formatting in three ways, all reproduced here exactly:
/// integers below 2^53 (2^24 for float4) print all their digits; the
/// rounding interval's bounds are excluded (it is built without
/// STRICTLY_SHORTEST), which sometimes needs one more digit; and among
/// the shortest candidates the one nearest the value wins, exact ties
/// going to the even digit.
pub(crate) fn float_digits(value: f64, float4: bool) -> (String, i32) {
    let (mantissa_bits, bias, bits) = if float4 {
        (
            23u32,
            127i64,
            u64::from((value as f32).to_bits() & 0x7fff_ffff),
        )
    } else {
        (52u32, 1023i64, value.to_bits() & 0x7fff_ffff_ffff_ffff)
    };
    let ieee_mantissa = bits & ((1u64 << mantissa_bits) - 1);
    let ieee_exponent = (bits >> mantissa_bits) as i64;
    let (e2, m2) = if ieee_exponent == 0 {
        (1 - bias - i64::from(mantissa_bits), ieee_mantissa)
    } else {
        (
            ieee_exponent - bias - i64::from(mantissa_bits),
            (1u64 << mantissa_bits) | ieee_mantissa,
        )
    };
    // value = m2 × 2^e2. Small integers print exactly.
    if (-i64::from(mantissa_bits)..=0).contains(&e2) && m2 & ((1u64 << -e2) - 1) == 0 {
        let digits = (m2 >> -e2).to_string();
        let exponent = digits.len() as i32 - 1;
        return (digits.trim_end_matches('0').to_string(), exponent);
    }
    // The value and its rounding interval's bounds, × 4 so they are
    // integers times 2^(e2 − 2); the lower gap halves at a power of two.
    let e = e2 - 2;
    let lower_gap_wide = ieee_mantissa != 0 || ieee_exponent <= 1;
    let value4 = BigUint::from_u64(4 * m2);
    let high4 = BigUint::from_u64(4 * m2 + 2);
    let low4 = BigUint::from_u64(4 * m2 - 1 - u64::from(lower_gap_wide));
    // v × 2^e / 10^k as the fraction scaled(v) / denominator.
    let scaled = |v: &BigUint, k: i64| {
        let mut out = v.mul_pow2(e.max(0) as usize);
        out.mul_pow10((-k).max(0) as usize);
        out
    };
    let denominator = |k: i64| {
        let mut out = BigUint::from_u64(1).mul_pow2((-e).max(0) as usize);
        out.mul_pow10(k.max(0) as usize);
        out
    };
    // Rust's shortest digits (bounds included) are never longer than
    // Postgres's: start at their last digit's position and go down.
    let rust = if float4 {
        format!("{:e}", value as f32)
    } else {
        format!("{value:e}")
    };
    let (mantissa, exponent) = rust.split_once('e').unwrap_or((&rust, "0"));
    let rust_exponent: i64 = exponent.parse().unwrap_or(0);
    let rust_len = mantissa.chars().filter(char::is_ascii_digit).count() as i64;
    let mut k = rust_exponent - (rust_len - 1);
    loop {
        let den = denominator(k);
        let (low_floor, _) = scaled(&low4, k).div_rem(&den);
        let first_above_low = low_floor.add(&BigUint::from_u64(1));
        if first_above_low.mul(&den).cmp_magnitude(&scaled(&high4, k)) == Ordering::Less {
            let (mut q, r) = scaled(&value4, k).div_rem(&den);
            let twice_r = r.mul_small(2);
            let round_up = match twice_r.cmp_magnitude(&den) {
                Ordering::Greater => true,
                Ordering::Equal => q.limbs.first().is_some_and(|l| l % 2 == 1),
                Ordering::Less => false,
            };
            if round_up || q.cmp_magnitude(&low_floor) != Ordering::Greater {
                q = q.add(&BigUint::from_u64(1));
            }
            let digits = q.to_decimal_string();
            let exponent = k + digits.len() as i64 - 1;
            return (digits.trim_end_matches('0').to_string(), exponent as i32);
        }
        k -= 1;
    }
}

/// An unsigned integer in base 10^9 limbs, least significant first, with
/// no trailing zero limbs (zero is empty). Only what numeric needs;
/// schoolbook algorithms, since merged values are short.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BigUint {
    limbs: Vec<u32>,
}

const LIMB_BASE: u64 = 1_000_000_000;
const LIMB_DIGITS: usize = 9;

impl BigUint {
    fn zero() -> BigUint {
        BigUint { limbs: Vec::new() }
    }

    fn from_u64(mut value: u64) -> BigUint {
        let mut limbs = Vec::new();
        while value > 0 {
            limbs.push((value % LIMB_BASE) as u32);
            value /= LIMB_BASE;
        }
        BigUint { limbs }
    }

    #[cfg(test)]
    fn to_u64(&self) -> Option<u64> {
        self.limbs.iter().rev().try_fold(0u64, |acc, limb| {
            acc.checked_mul(LIMB_BASE)?.checked_add(u64::from(*limb))
        })
    }

    fn normalized(mut self) -> BigUint {
        while self.limbs.last() == Some(&0) {
            self.limbs.pop();
        }
        self
    }

    fn is_zero(&self) -> bool {
        self.limbs.is_empty()
    }

    /// From decimal digits (0..=9), most significant first.
    fn from_decimal_digits(digits: &[u8]) -> BigUint {
        let limbs = digits
            .rchunks(LIMB_DIGITS)
            .map(|chunk| chunk.iter().fold(0u32, |acc, d| acc * 10 + u32::from(*d)))
            .collect();
        BigUint { limbs }.normalized()
    }

    fn to_decimal_string(&self) -> String {
        let Some((top, rest)) = self.limbs.split_last() else {
            return "0".to_string();
        };
        let mut out = top.to_string();
        for limb in rest.iter().rev() {
            out.push_str(&format!("{limb:09}"));
        }
        out
    }

    fn decimal_len(&self) -> usize {
        match self.limbs.last() {
            None => 0,
            Some(top) => (self.limbs.len() - 1) * LIMB_DIGITS + top.to_string().len(),
        }
    }

    fn cmp_magnitude(&self, other: &BigUint) -> Ordering {
        self.limbs
            .len()
            .cmp(&other.limbs.len())
            .then_with(|| self.limbs.iter().rev().cmp(other.limbs.iter().rev()))
    }

    fn add(&self, other: &BigUint) -> BigUint {
        let len = self.limbs.len().max(other.limbs.len());
        let mut limbs = Vec::with_capacity(len + 1);
        let mut carry = 0u64;
        for i in 0..len {
            let sum = u64::from(*self.limbs.get(i).unwrap_or(&0))
                + u64::from(*other.limbs.get(i).unwrap_or(&0))
                + carry;
            limbs.push((sum % LIMB_BASE) as u32);
            carry = sum / LIMB_BASE;
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
        BigUint { limbs }
    }

    /// `self − other`; `other` must not be larger.
    fn sub(&self, other: &BigUint) -> BigUint {
        debug_assert!(self.cmp_magnitude(other) != Ordering::Less);
        let mut limbs = Vec::with_capacity(self.limbs.len());
        let mut borrow = 0i64;
        for i in 0..self.limbs.len() {
            let mut diff =
                i64::from(self.limbs[i]) - i64::from(*other.limbs.get(i).unwrap_or(&0)) - borrow;
            borrow = 0;
            if diff < 0 {
                diff += LIMB_BASE as i64;
                borrow = 1;
            }
            limbs.push(diff as u32);
        }
        BigUint { limbs }.normalized()
    }

    fn mul(&self, other: &BigUint) -> BigUint {
        if self.is_zero() || other.is_zero() {
            return BigUint::zero();
        }
        let mut acc = vec![0u64; self.limbs.len() + other.limbs.len()];
        for (i, a) in self.limbs.iter().enumerate() {
            let mut carry = 0u64;
            for (j, b) in other.limbs.iter().enumerate() {
                let cur = acc[i + j] + u64::from(*a) * u64::from(*b) + carry;
                acc[i + j] = cur % LIMB_BASE;
                carry = cur / LIMB_BASE;
            }
            let mut k = i + other.limbs.len();
            while carry > 0 {
                let cur = acc[k] + carry;
                acc[k] = cur % LIMB_BASE;
                carry = cur / LIMB_BASE;
                k += 1;
            }
        }
        BigUint {
            limbs: acc.into_iter().map(|l| l as u32).collect(),
        }
        .normalized()
    }

    fn mul_small(&self, factor: u32) -> BigUint {
        let mut limbs = Vec::with_capacity(self.limbs.len() + 1);
        let mut carry = 0u64;
        for limb in &self.limbs {
            let cur = u64::from(*limb) * u64::from(factor) + carry;
            limbs.push((cur % LIMB_BASE) as u32);
            carry = cur / LIMB_BASE;
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
        BigUint { limbs }.normalized()
    }

    fn mul_pow10(&mut self, exponent: usize) {
        if self.is_zero() {
            return;
        }
        let small = 10u32.pow((exponent % LIMB_DIGITS) as u32);
        *self = self.mul_small(small);
        let zeros = exponent / LIMB_DIGITS;
        self.limbs.splice(0..0, std::iter::repeat_n(0, zeros));
    }

    fn mul_pow2(&self, exponent: usize) -> BigUint {
        let mut out = self.clone();
        for _ in 0..exponent / 29 {
            out = out.mul_small(1 << 29);
        }
        out.mul_small(1 << (exponent % 29))
    }

    fn div_rem_small(&self, divisor: u32) -> (BigUint, u32) {
        let mut limbs = vec![0u32; self.limbs.len()];
        let mut rem = 0u64;
        for i in (0..self.limbs.len()).rev() {
            let cur = rem * LIMB_BASE + u64::from(self.limbs[i]);
            limbs[i] = (cur / u64::from(divisor)) as u32;
            rem = cur % u64::from(divisor);
        }
        (BigUint { limbs }.normalized(), rem as u32)
    }

    /// `floor(self / 10^exponent)`.
    fn div_pow10_trunc(&self, exponent: usize) -> BigUint {
        let drop = exponent / LIMB_DIGITS;
        if drop >= self.limbs.len() {
            return BigUint::zero();
        }
        let shifted = BigUint {
            limbs: self.limbs[drop..].to_vec(),
        };
        shifted
            .div_rem_small(10u32.pow((exponent % LIMB_DIGITS) as u32))
            .0
    }

    /// Long division, one base-10^9 quotient limb at a time; each limb is
    /// found by binary search (simple and plainly correct; values are short).
    fn div_rem(&self, divisor: &BigUint) -> (BigUint, BigUint) {
        debug_assert!(!divisor.is_zero());
        if divisor.limbs.len() == 1 {
            let (q, r) = self.div_rem_small(divisor.limbs[0]);
            return (q, BigUint::from_u64(u64::from(r)));
        }
        let mut quotient = vec![0u32; self.limbs.len()];
        let mut rem = BigUint::zero();
        for i in (0..self.limbs.len()).rev() {
            // rem = rem × base + limb i
            rem.limbs.insert(0, self.limbs[i]);
            rem = rem.normalized();
            let (mut low, mut high) = (0u32, (LIMB_BASE - 1) as u32);
            while low < high {
                let mid = low + (high - low).div_ceil(2);
                if divisor.mul_small(mid).cmp_magnitude(&rem) != Ordering::Greater {
                    low = mid;
                } else {
                    high = mid - 1;
                }
            }
            quotient[i] = low;
            if low > 0 {
                rem = rem.sub(&divisor.mul_small(low));
            }
        }
        (BigUint { limbs: quotient }.normalized(), rem)
    }

    /// `floor(sqrt(self))` by Newton's iteration from above.
    fn isqrt(&self) -> BigUint {
        if self.is_zero() {
            return BigUint::zero();
        }
        // Start at 10^ceil(digits/2) ≥ sqrt(self).
        let mut x = BigUint::from_u64(1);
        x.mul_pow10(self.decimal_len().div_ceil(2));
        loop {
            let (q, _) = self.div_rem(&x);
            let (next, _) = x.add(&q).div_rem_small(2);
            if next.cmp_magnitude(&x) != Ordering::Less {
                return x;
            }
            x = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Numeric {
        Numeric::parse_text(text).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn text_round_trips_as_postgres_prints() {
        for (input, printed) in [
            ("0", "0"),
            ("0.00", "0.00"),
            ("-0.00", "0.00"),
            ("1e3", "1000"),
            ("1.5e-3", "0.0015"),
            ("1.23e1", "12.3"),
            ("-12345.678", "-12345.678"),
            (".5", "0.5"),
            ("5.", "5"),
            ("+7", "7"),
            ("  42  ", "42"),
            ("NaN", "NaN"),
            ("nan", "NaN"),
            ("Infinity", "Infinity"),
            ("-inf", "-Infinity"),
            (
                "123456789012345678901234567890.000000001",
                "123456789012345678901234567890.000000001",
            ),
        ] {
            assert_eq!(n(input).to_text(), printed, "{input}");
        }
        for bad in [
            "",
            "-",
            ".",
            "1e",
            "abc",
            "1.2.3",
            "--1",
            "-NaN",
            "1e9999999",
        ] {
            assert!(Numeric::parse_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn binary_matches_numeric_send() {
        // Goldens from Postgres 15's numeric_send.
        for (text, golden) in [
            ("0.00", "0000000000000002"),
            ("-12345.678", "0003000140000003000109291a7c"),
            ("1e20", "00010005000000000001"),
            ("0.0001", "0001ffff000000040001"),
            ("0", "0000000000000000"),
            ("12345678.9", "000300010000000104d2162e2328"),
            ("NaN", "00000000c0000000"),
            ("Infinity", "00000000d0000020"),
            ("-Infinity", "00000000f0000020"),
        ] {
            let mut out = Vec::new();
            n(text).encode_binary(&mut out);
            assert_eq!(hex(&out), golden, "{text}");
            let back = Numeric::decode_binary(&out).unwrap();
            assert_eq!(back.to_text(), n(text).to_text(), "{text}");
        }
        for bad in [
            &[][..],
            &[0, 1, 0, 0, 0, 0, 0, 0][..],
            &[0, 0, 0, 0, 0x12, 0x34, 0, 0][..],
        ] {
            assert!(Numeric::decode_binary(bad).is_err());
        }
        // A digit ≥ 10000 is invalid.
        assert!(Numeric::decode_binary(&[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10]).is_err());
    }

    #[test]
    fn binary_round_trips_many_shapes() {
        for text in [
            "1",
            "-1",
            "9999",
            "10000",
            "0.1",
            "0.12345",
            "123.4500",
            "0.000000001",
            "1e-30",
            "99999999999999999999.99999999999",
            "-0.5",
            "100000000.000",
        ] {
            let mut out = Vec::new();
            n(text).encode_binary(&mut out);
            assert_eq!(Numeric::decode_binary(&out).unwrap(), n(text), "{text}");
        }
    }

    #[test]
    fn compare_is_postgres_order() {
        assert_eq!(n("1.0").compare(&n("1.00")), Ordering::Equal);
        assert_eq!(n("-2").compare(&n("1")), Ordering::Less);
        assert_eq!(n("-2").compare(&n("-10")), Ordering::Greater);
        assert_eq!(n("0.001").compare(&n("0.0009")), Ordering::Greater);
        assert_eq!(n("NaN").compare(&n("Infinity")), Ordering::Greater);
        assert_eq!(n("NaN").compare(&n("NaN")), Ordering::Equal);
        assert_eq!(n("-Infinity").compare(&n("-1e100")), Ordering::Less);
        assert_eq!(n("0").compare(&n("-0.000")), Ordering::Equal);
    }

    #[test]
    fn add_mul_scales() {
        assert_eq!(n("5.5").sub(&n("5.5")).unwrap().to_text(), "0.0");
        assert_eq!(n("1.25").add(&n("-3")).unwrap().to_text(), "-1.75");
        assert_eq!(n("1.5").mul(&n("0")).unwrap().to_text(), "0.0");
        assert_eq!(n("-1.5").mul(&n("2.25")).unwrap().to_text(), "-3.375");
        assert_eq!(n("Infinity").add(&n("-Infinity")).unwrap(), Numeric::NaN);
        assert_eq!(n("Infinity").mul(&n("0")).unwrap(), Numeric::NaN);
        assert_eq!(n("-Infinity").mul(&n("-2")).unwrap(), Numeric::PosInfinity);
        assert_eq!(
            n("999999999999999999")
                .mul(&n("999999999999999999"))
                .unwrap()
                .to_text(),
            "999999999999999998000000000000000001"
        );
    }

    #[test]
    fn div_matches_postgres() {
        // Goldens from Postgres 15.
        for (a, b, golden) in [
            ("10", "3", "3.3333333333333333"),
            ("1", "7000", "0.00014285714285714286"),
            ("10000", "3", "3333.3333333333333333"),
            ("1.000", "3", "0.33333333333333333333"),
            ("2", "3", "0.66666666666666666667"),
            ("0.5", "0.0003", "1666.6666666666666667"),
            ("-5", "3", "-1.6666666666666667"),
            ("0", "7", "0.00000000000000000000"),
            ("99999999999", "0.0000001", "999999999990000000.0000000"),
            ("5", "3", "1.6666666666666667"),
        ] {
            assert_eq!(n(a).div(&n(b)).unwrap().to_text(), golden, "{a}/{b}");
        }
        assert_eq!(n("1").div(&n("0.00")), Err(NumericError::DivisionByZero));
        assert_eq!(n("Infinity").div(&n("-3")).unwrap(), Numeric::NegInfinity);
        assert_eq!(n("3").div(&n("Infinity")).unwrap().to_text(), "0");
    }

    #[test]
    fn sqrt_rounds_at_scale() {
        let Numeric::Finite(two) = n("2") else {
            panic!()
        };
        assert_eq!(two.sqrt(20).unwrap().to_text(), "1.41421356237309504880");
        assert_eq!(two.sqrt(15).unwrap().to_text(), "1.414213562373095");
        let Numeric::Finite(tiny) = n("1e-30") else {
            panic!()
        };
        assert_eq!(
            tiny.sqrt(31).unwrap().to_text(),
            "0.0000000000000010000000000000000"
        );
        let Numeric::Finite(zero) = n("0") else {
            panic!()
        };
        assert_eq!(zero.sqrt(3).unwrap().to_text(), "0.000");
    }

    #[test]
    fn bigint_division_and_sqrt() {
        let a = BigUint::from_decimal_digits(&[1; 40]);
        let b = BigUint::from_decimal_digits(&[9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3]);
        let (q, r) = a.div_rem(&b);
        assert_eq!(q.mul(&b).add(&r), a);
        assert_eq!(r.cmp_magnitude(&b), Ordering::Less);
        let s = a.isqrt();
        assert_ne!(s.mul(&s).cmp_magnitude(&a), Ordering::Greater);
        let s1 = s.add(&BigUint::from_u64(1));
        assert_eq!(s1.mul(&s1).cmp_magnitude(&a), Ordering::Greater);
    }

    #[test]
    fn conversions() {
        assert_eq!(n("1.5").to_f64(), 1.5);
        assert_eq!(Numeric::from_f64(0.1).to_text(), "0.1");
        assert_eq!(Numeric::from_f64(1e21).to_text(), "1000000000000000000000");
        assert_eq!(
            Numeric::from_i64(i64::MIN).to_text(),
            "-9223372036854775808"
        );
        assert_eq!(n("-9223372036854775808").to_i64(), Some(i64::MIN));
        assert_eq!(n("9223372036854775808").to_i64(), None);
    }
}

//! Merging one aggregate's per-shard partial results into the value a single
//! Postgres would have returned: counts and sums add, min/max compare, avg
//! and variance/stddev recompute from their helper partials (see
//! [`crate::fanout::plan::AggregateColumn`]) with Postgres's result types and
//! numeric scales. Owns no I/O and no row layout: the merger decodes the
//! shard row and hands over this aggregate's value and partials.
//!
//! Exactness: count, sum, min, max, and avg/variance/stddev of integer and
//! numeric inputs (numeric results) equal single-node Postgres's results
//! digit for digit. Float results are computed from the shards' float sums:
//! sum(float) may differ from single-node Postgres in the last digits (float
//! addition depends on order, and so it does there between plans); avg of
//! float4 uses the shards' float4 sums where Postgres accumulates in float8;
//! float variance/stddev come from N·Σx² − (Σx)² rather than Postgres's
//! Youngs-Cramer running sums and may differ in the last digits.

use crate::fanout::datum::{compare, oid, ColumnType, Datum, DatumError};
use crate::fanout::numeric::{self, Numeric};
use crate::fanout::plan::AggKind;
use std::cmp::Ordering;

/// One group's running merge of one aggregate column.
#[derive(Debug, Clone)]
pub struct AggState {
    column: ColumnType,
    merge: Merge,
}

#[derive(Debug, Clone)]
enum Merge {
    /// count: the shards' counts add.
    Count(i64),
    /// sum of int2/int4 (an int8 result): i64 with overflow checks.
    SumInt(Option<i64>),
    SumNumeric(Option<Numeric>),
    /// sum of float4 adds in f32 (float4pl), of float8 in f64.
    SumFloat {
        sum: Option<f64>,
        float4: bool,
    },
    SumInterval(Option<Interval>),
    Min(Option<Datum>),
    Max(Option<Datum>),
    AvgNumeric {
        sum: Numeric,
        count: i64,
    },
    AvgFloat {
        sum: f64,
        count: i64,
    },
    AvgInterval {
        sum: Interval,
        count: i64,
    },
    Variance {
        count: i64,
        sum: Numeric,
        sum_squares: Numeric,
        /// Float inputs: a float8 result computed in f64.
        float: bool,
        sample: bool,
        stddev: bool,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Interval {
    months: i32,
    days: i32,
    micros: i64,
}

impl AggState {
    /// `column`: the aggregate column's type in the shard RowDescription
    /// (also the client's). `partials`: the helper columns' types in the
    /// order plan.rs gives them.
    pub fn new(
        kind: AggKind,
        column: ColumnType,
        partials: &[ColumnType],
    ) -> Result<AggState, DatumError> {
        let unsupported = |what| DatumError::Unsupported {
            oid: column.oid,
            what,
        };
        let expected_partials = match kind {
            AggKind::Count | AggKind::Sum | AggKind::Min | AggKind::Max => 0,
            AggKind::Avg => 2,
            _ => 3,
        };
        if partials.len() != expected_partials {
            return Err(unsupported("an aggregate with unexpected helper columns"));
        }
        let variance = |sample, stddev| -> Result<Merge, DatumError> {
            let float = match column.oid {
                oid::NUMERIC => false,
                oid::FLOAT8 => true,
                _ => return Err(unsupported("variance or stddev")),
            };
            Ok(Merge::Variance {
                count: 0,
                sum: Numeric::zero(),
                sum_squares: Numeric::zero(),
                float,
                sample,
                stddev,
            })
        };
        let merge = match kind {
            AggKind::Count => Merge::Count(0),
            AggKind::Sum => match column.oid {
                oid::INT8 | oid::INT4 | oid::INT2 => Merge::SumInt(None),
                oid::NUMERIC => Merge::SumNumeric(None),
                oid::FLOAT8 => Merge::SumFloat {
                    sum: None,
                    float4: false,
                },
                oid::FLOAT4 => Merge::SumFloat {
                    sum: None,
                    float4: true,
                },
                oid::INTERVAL => Merge::SumInterval(None),
                _ => return Err(unsupported("sum")),
            },
            AggKind::Min => Merge::Min(None),
            AggKind::Max => Merge::Max(None),
            AggKind::Avg => match column.oid {
                oid::NUMERIC => Merge::AvgNumeric {
                    sum: Numeric::zero(),
                    count: 0,
                },
                oid::FLOAT8 => Merge::AvgFloat { sum: 0.0, count: 0 },
                oid::INTERVAL => Merge::AvgInterval {
                    sum: Interval::default(),
                    count: 0,
                },
                _ => return Err(unsupported("avg")),
            },
            AggKind::VarPop => variance(false, false)?,
            AggKind::VarSamp => variance(true, false)?,
            AggKind::StddevPop => variance(false, true)?,
            AggKind::StddevSamp => variance(true, true)?,
        };
        Ok(AggState { column, merge })
    }

    /// Merges one shard's row of this group: `value` is the aggregate
    /// column, `partials` its helper columns (decoded with the types given
    /// to [`AggState::new`]). NULLs (a shard with no input rows) are skipped.
    pub fn add(&mut self, value: &Datum, partials: &[Datum]) -> Result<(), DatumError> {
        let column_oid = self.column.oid;
        let mismatch = || DatumError::Unsupported {
            oid: column_oid,
            what: "a partial aggregate of an unexpected type",
        };
        match &mut self.merge {
            Merge::Count(total) => {
                if let Some(n) = as_count(value).map_err(|_| mismatch())? {
                    *total = total
                        .checked_add(n)
                        .ok_or(DatumError::OutOfRange("bigint"))?;
                }
            }
            Merge::SumInt(total) => {
                let Datum::Int(n) = value else {
                    return skip_null(value).ok_or_else(mismatch);
                };
                let sum = match total {
                    Some(t) => t.checked_add(*n).ok_or(DatumError::OutOfRange("bigint"))?,
                    None => *n,
                };
                *total = Some(sum);
            }
            Merge::SumNumeric(total) => {
                let Some(n) = as_numeric(value).map_err(|_| mismatch())? else {
                    return Ok(());
                };
                *total = Some(match total {
                    Some(t) => t.add(&n)?,
                    None => n,
                });
            }
            Merge::SumFloat { sum, float4 } => {
                let Datum::Float(x) = value else {
                    return skip_null(value).ok_or_else(mismatch);
                };
                *sum = Some(match sum {
                    Some(s) => float_add(*s, *x, *float4)?,
                    None => *x,
                });
            }
            Merge::SumInterval(total) => {
                let Some(i) = as_interval(value).map_err(|_| mismatch())? else {
                    return Ok(());
                };
                *total = Some(match total {
                    Some(t) => t.add(i)?,
                    None => i,
                });
            }
            Merge::Min(best) => keep_extreme(best, value, Ordering::Less),
            Merge::Max(best) => keep_extreme(best, value, Ordering::Greater),
            Merge::AvgNumeric { sum, count } => {
                let (s, n) = avg_partials(partials, mismatch)?;
                if let (Some(s), Some(n)) = (as_numeric(s).map_err(|_| mismatch())?, n) {
                    *sum = sum.add(&s)?;
                    *count = add_count(*count, n)?;
                }
            }
            Merge::AvgFloat { sum, count } => {
                // The shard's own avg (float8) times its count, not the
                // sum partial: sum(float4) is a float4 and loses digits
                // that Postgres's float8 accumulation of avg keeps.
                let (_, n) = avg_partials(partials, mismatch)?;
                let s = match (value, n) {
                    (Datum::Float(avg), Some(n)) => Some(avg * n as f64),
                    (Datum::Null, _) | (_, None) => None,
                    _ => return Err(mismatch()),
                };
                if let (Some(s), Some(n)) = (s, n) {
                    *sum = float_add(*sum, s, false)?;
                    *count = add_count(*count, n)?;
                }
            }
            Merge::AvgInterval { sum, count } => {
                let (s, n) = avg_partials(partials, mismatch)?;
                if let (Some(s), Some(n)) = (as_interval(s).map_err(|_| mismatch())?, n) {
                    *sum = sum.add(s)?;
                    *count = add_count(*count, n)?;
                }
            }
            Merge::Variance {
                count,
                sum,
                sum_squares,
                float,
                ..
            } => {
                let [n, s, s2] = partials else {
                    return Err(mismatch());
                };
                let Some(n) = as_count(n).map_err(|_| mismatch())? else {
                    return Ok(());
                };
                let s = if *float {
                    match s {
                        Datum::Float(x) => Some(Numeric::from_f64(*x)),
                        other => as_numeric(other).map_err(|_| mismatch())?,
                    }
                } else {
                    as_numeric(s).map_err(|_| mismatch())?
                };
                let s2 = as_numeric(s2).map_err(|_| mismatch())?;
                if let (Some(s), Some(s2)) = (s, s2) {
                    *count = add_count(*count, n)?;
                    *sum = sum.add(&s)?;
                    *sum_squares = sum_squares.add(&s2)?;
                }
            }
        }
        Ok(())
    }

    /// The merged value, to be encoded with the column's type.
    pub fn finish(&self) -> Result<Datum, DatumError> {
        Ok(match &self.merge {
            Merge::Count(n) => Datum::Int(*n),
            Merge::SumInt(sum) => match sum {
                None => Datum::Null,
                Some(s) => Datum::Int(check_int_range(*s, self.column.oid)?),
            },
            Merge::SumNumeric(sum) => sum.clone().map_or(Datum::Null, Datum::Numeric),
            Merge::SumFloat { sum, .. } => sum.map_or(Datum::Null, Datum::Float),
            Merge::SumInterval(sum) => sum.map_or(Datum::Null, Interval::to_datum),
            Merge::Min(best) | Merge::Max(best) => best.clone().unwrap_or(Datum::Null),
            Merge::AvgNumeric { sum, count } => match count {
                0 => Datum::Null,
                n => Datum::Numeric(sum.div(&Numeric::from_i64(*n))?),
            },
            Merge::AvgFloat { sum, count } => match count {
                0 => Datum::Null,
                n => Datum::Float(sum / *n as f64),
            },
            Merge::AvgInterval { sum, count } => match count {
                0 => Datum::Null,
                n => sum.div(*n as f64)?.to_datum(),
            },
            Merge::Variance {
                count,
                sum,
                sum_squares,
                float,
                sample,
                stddev,
            } => {
                if *float {
                    float_variance(*count, sum, sum_squares, *sample, *stddev)
                        .map_or(Datum::Null, Datum::Float)
                } else {
                    numeric::variance(*count, sum, sum_squares, *sample, *stddev)?
                        .map_or(Datum::Null, Datum::Numeric)
                }
            }
        })
    }
}

/// Min/max: keeps `value` when it orders `wanted` against the best so far.
fn keep_extreme(best: &mut Option<Datum>, value: &Datum, wanted: Ordering) {
    if *value == Datum::Null {
        return;
    }
    let replace = best.as_ref().is_none_or(|b| compare(value, b) == wanted);
    if replace {
        *best = Some(value.clone());
    }
}

/// `Ok(())` for a NULL (skipped), `None` for anything else (a mismatch).
fn skip_null(value: &Datum) -> Option<()> {
    (*value == Datum::Null).then_some(())
}

/// A count partial: int8, or NULL.
fn as_count(value: &Datum) -> Result<Option<i64>, ()> {
    match value {
        Datum::Int(n) => Ok(Some(*n)),
        Datum::Null => Ok(None),
        _ => Err(()),
    }
}

/// A sum partial read as numeric: int8 (sum of int2/int4) or numeric.
fn as_numeric(value: &Datum) -> Result<Option<Numeric>, ()> {
    match value {
        Datum::Int(n) => Ok(Some(Numeric::from_i64(*n))),
        Datum::Numeric(n) => Ok(Some(n.clone())),
        Datum::Null => Ok(None),
        _ => Err(()),
    }
}

fn as_interval(value: &Datum) -> Result<Option<Interval>, ()> {
    match value {
        Datum::Interval {
            months,
            days,
            micros,
        } => Ok(Some(Interval {
            months: *months,
            days: *days,
            micros: *micros,
        })),
        Datum::Null => Ok(None),
        _ => Err(()),
    }
}

/// Avg's partials: [sum(x), count(x)]; a zero count counts as absent.
fn avg_partials(
    partials: &[Datum],
    mismatch: impl Fn() -> DatumError,
) -> Result<(&Datum, Option<i64>), DatumError> {
    let [sum, count] = partials else {
        return Err(mismatch());
    };
    let count = as_count(count).map_err(|_| mismatch())?;
    Ok((sum, count.filter(|n| *n != 0)))
}

fn add_count(total: i64, n: i64) -> Result<i64, DatumError> {
    total.checked_add(n).ok_or(DatumError::OutOfRange("bigint"))
}

fn check_int_range(value: i64, column_oid: u32) -> Result<i64, DatumError> {
    let (low, high, name) = match column_oid {
        oid::INT2 => (i64::from(i16::MIN), i64::from(i16::MAX), "smallint"),
        oid::INT4 => (i64::from(i32::MIN), i64::from(i32::MAX), "integer"),
        _ => return Ok(value),
    };
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(DatumError::OutOfRange(name))
    }
}

/// float4pl / float8pl: an infinite sum of finite values is an overflow.
fn float_add(a: f64, b: f64, float4: bool) -> Result<f64, DatumError> {
    let sum = if float4 {
        f64::from(a as f32 + b as f32)
    } else {
        a + b
    };
    if sum.is_infinite() && a.is_finite() && b.is_finite() {
        return Err(DatumError::FloatOverflow);
    }
    Ok(sum)
}

/// Float variance/stddev from N, Σx, Σx²: the numerator N·Σx² − (Σx)² is
/// computed exactly in numeric (from the partials as given), then divided
/// in f64. NaN or infinite inputs give NaN, as float8 does.
fn float_variance(
    count: i64,
    sum: &Numeric,
    sum_squares: &Numeric,
    sample: bool,
    stddev: bool,
) -> Option<f64> {
    if count <= 0 || (sample && count <= 1) {
        return None;
    }
    let n = Numeric::from_i64(count);
    let numerator = n
        .mul(sum_squares)
        .and_then(|a| a.sub(&sum.mul(sum)?))
        .map_or(f64::NAN, |x| x.to_f64());
    let numerator = if numerator < 0.0 { 0.0 } else { numerator };
    let n = count as f64;
    let denominator = if sample { n * (n - 1.0) } else { n * n };
    let variance = numerator / denominator;
    Some(if stddev { variance.sqrt() } else { variance })
}

impl Interval {
    fn to_datum(self) -> Datum {
        Datum::Interval {
            months: self.months,
            days: self.days,
            micros: self.micros,
        }
    }

    /// interval_pl: field by field, "interval out of range" on overflow.
    fn add(self, other: Interval) -> Result<Interval, DatumError> {
        let out_of_range = DatumError::OutOfRange("interval");
        Ok(Interval {
            months: self
                .months
                .checked_add(other.months)
                .ok_or(out_of_range.clone())?,
            days: self
                .days
                .checked_add(other.days)
                .ok_or(out_of_range.clone())?,
            micros: self.micros.checked_add(other.micros).ok_or(out_of_range)?,
        })
    }

    /// Postgres 15's interval_div by a count (what interval_avg does):
    /// whole months and days divide, their fractions cascade down into days
    /// and seconds (a month is 30 days), rounded to microseconds.
    fn div(self, factor: f64) -> Result<Interval, DatumError> {
        if factor == 0.0 {
            return Err(DatumError::DivisionByZero);
        }
        let round_micro = |x: f64| (x * 1e6).round_ties_even() / 1e6;
        let months = (f64::from(self.months) / factor) as i32;
        let mut days = (f64::from(self.days) / factor) as i32;
        let month_remainder_days =
            round_micro((f64::from(self.months) / factor - f64::from(months)) * 30.0);
        let mut seconds_remainder = round_micro(
            (f64::from(self.days) / factor - f64::from(days) + month_remainder_days
                - month_remainder_days.trunc())
                * 86_400.0,
        );
        if seconds_remainder.abs() >= 86_400.0 {
            let whole_days = (seconds_remainder / 86_400.0) as i32;
            days += whole_days;
            seconds_remainder -= f64::from(whole_days) * 86_400.0;
        }
        days += month_remainder_days as i32;
        let micros = (self.micros as f64 / factor + seconds_remainder * 1e6).round_ties_even();
        if !micros.is_finite() || micros.abs() >= 9.2e18 {
            return Err(DatumError::OutOfRange("interval"));
        }
        Ok(Interval {
            months,
            days,
            micros: micros as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::datum::{decode, encode};
    use bytes::BytesMut;

    fn text(type_oid: u32) -> ColumnType {
        ColumnType {
            oid: type_oid,
            binary: false,
        }
    }

    fn d(type_oid: u32, s: &str) -> Datum {
        decode(text(type_oid), Some(s.as_bytes())).unwrap()
    }

    fn printed(type_oid: u32, datum: &Datum) -> String {
        let mut out = BytesMut::new();
        encode(text(type_oid), datum, &mut out);
        String::from_utf8(out[4..].to_vec()).unwrap()
    }

    /// Merges shard rows (value, partials as text) and prints the result.
    fn merge(
        kind: AggKind,
        column: u32,
        partial_types: &[u32],
        rows: &[(&str, &[Option<&str>])],
    ) -> String {
        let partial_columns: Vec<ColumnType> = partial_types.iter().map(|t| text(*t)).collect();
        let mut state = AggState::new(kind, text(column), &partial_columns).unwrap();
        for (value, partials) in rows {
            let value = if value.is_empty() {
                Datum::Null
            } else {
                d(column, value)
            };
            let partials: Vec<Datum> = partials
                .iter()
                .zip(partial_types)
                .map(|(p, t)| p.map_or(Datum::Null, |p| d(*t, p)))
                .collect();
            state.add(&value, &partials).unwrap();
        }
        let result = state.finish().unwrap();
        if result == Datum::Null {
            return "NULL".to_string();
        }
        printed(column, &result)
    }

    const AVG_INT: &[u32] = &[oid::INT8, oid::INT8];
    const AVG_NUMERIC: &[u32] = &[oid::NUMERIC, oid::INT8];
    const VAR_INT: &[u32] = &[oid::INT8, oid::INT8, oid::NUMERIC];
    const VAR_NUMERIC: &[u32] = &[oid::INT8, oid::NUMERIC, oid::NUMERIC];
    const VAR_FLOAT: &[u32] = &[oid::INT8, oid::FLOAT8, oid::NUMERIC];

    #[test]
    fn count_and_sum() {
        let rows: &[(&str, &[Option<&str>])] = &[("3", &[]), ("0", &[]), ("4", &[])];
        assert_eq!(merge(AggKind::Count, oid::INT8, &[], rows), "7");
        assert_eq!(merge(AggKind::Count, oid::INT8, &[], &[]), "0");
        let rows: &[(&str, &[Option<&str>])] = &[("5", &[]), ("", &[]), ("-2", &[])];
        assert_eq!(merge(AggKind::Sum, oid::INT8, &[], rows), "3");
        assert_eq!(
            merge(AggKind::Sum, oid::INT8, &[], &[("", &[]), ("", &[])]),
            "NULL"
        );
        let rows: &[(&str, &[Option<&str>])] = &[("1.50", &[]), ("2.125", &[]), ("-0.5", &[])];
        assert_eq!(merge(AggKind::Sum, oid::NUMERIC, &[], rows), "3.125");
        // sum(float4) adds in float4: Postgres prints 0.3 for 0.1 + 0.2.
        let rows: &[(&str, &[Option<&str>])] = &[("0.1", &[]), ("0.2", &[])];
        assert_eq!(merge(AggKind::Sum, oid::FLOAT4, &[], rows), "0.3");
        assert_eq!(
            merge(AggKind::Sum, oid::FLOAT8, &[], rows),
            "0.30000000000000004"
        );
        // Postgres: sum of '1 day 2 hours', '1 mon', '3 sec'.
        let rows: &[(&str, &[Option<&str>])] =
            &[("1 day 02:00:00", &[]), ("1 mon", &[]), ("00:00:03", &[])];
        assert_eq!(
            merge(AggKind::Sum, oid::INTERVAL, &[], rows),
            "1 mon 1 day 02:00:03"
        );
    }

    #[test]
    fn sum_overflow_is_bigint_out_of_range() {
        let mut state = AggState::new(AggKind::Sum, text(oid::INT8), &[]).unwrap();
        state.add(&Datum::Int(i64::MAX), &[]).unwrap();
        let err = state.add(&Datum::Int(1), &[]).unwrap_err();
        assert_eq!(err.to_string(), "bigint out of range");
        let mut state = AggState::new(AggKind::Sum, text(oid::FLOAT8), &[]).unwrap();
        state.add(&Datum::Float(f64::MAX), &[]).unwrap();
        let err = state.add(&Datum::Float(f64::MAX), &[]).unwrap_err();
        assert_eq!(err.to_string(), "value out of range: overflow");
    }

    #[test]
    fn min_max_use_the_column_order() {
        let rows: &[(&str, &[Option<&str>])] =
            &[("2.50", &[]), ("", &[]), ("NaN", &[]), ("-1", &[])];
        assert_eq!(merge(AggKind::Min, oid::NUMERIC, &[], rows), "-1");
        assert_eq!(merge(AggKind::Max, oid::NUMERIC, &[], rows), "NaN");
        let rows: &[(&str, &[Option<&str>])] = &[("b", &[]), ("B", &[]), ("ab", &[])];
        assert_eq!(merge(AggKind::Min, oid::TEXT, &[], rows), "B");
        assert_eq!(merge(AggKind::Max, oid::TEXT, &[], rows), "b");
        assert_eq!(merge(AggKind::Max, oid::TEXT, &[], &[("", &[])]), "NULL");
    }

    #[test]
    fn avg_matches_postgres() {
        // avg(x) over (1),(2),(2), split across shards: 1.6666666666666667.
        let rows: &[(&str, &[Option<&str>])] = &[
            ("1", &[Some("1"), Some("1")]),
            ("2", &[Some("4"), Some("2")]),
            ("", &[None, Some("0")]),
        ];
        assert_eq!(
            merge(AggKind::Avg, oid::NUMERIC, AVG_INT, rows),
            "1.6666666666666667"
        );
        // avg over (1.5),(2.25),(-3.125),(10): 2.6562500000000000.
        // Each shard's avg (float8) and count carry it; the sum partial
        // may be a float4 that lost digits.
        let rows: &[(&str, &[Option<&str>])] = &[
            ("1.875", &[Some("3.75"), Some("2")]),
            ("3.4375", &[Some("6.875"), Some("2")]),
        ];
        assert_eq!(
            merge(AggKind::Avg, oid::NUMERIC, AVG_NUMERIC, rows),
            "2.6562500000000000"
        );
        // avg over (0.001),(0.002): 0.00150000000000000000.
        let rows: &[(&str, &[Option<&str>])] = &[
            ("", &[Some("0.001"), Some("1")]),
            ("", &[Some("0.002"), Some("1")]),
        ];
        assert_eq!(
            merge(AggKind::Avg, oid::NUMERIC, AVG_NUMERIC, rows),
            "0.00150000000000000000"
        );
        let rows: &[(&str, &[Option<&str>])] = &[("", &[None, Some("0")])];
        assert_eq!(merge(AggKind::Avg, oid::NUMERIC, AVG_NUMERIC, rows), "NULL");
        // Each shard's avg (float8) and count carry it; the sum partial
        // may be a float4 that lost digits.
        let rows: &[(&str, &[Option<&str>])] = &[
            ("1.875", &[Some("3.75"), Some("2")]),
            ("3.4375", &[Some("6.875"), Some("2")]),
        ];
        assert_eq!(
            merge(AggKind::Avg, oid::FLOAT8, &[oid::FLOAT8, oid::INT8], rows),
            "2.65625"
        );
    }

    #[test]
    fn avg_interval_matches_postgres() {
        let types = &[oid::INTERVAL, oid::INT8];
        let rows: &[(&str, &[Option<&str>])] = &[
            ("", &[Some("1 mon 1 day 02:00:00"), Some("2")]),
            ("", &[Some("00:00:03"), Some("1")]),
        ];
        assert_eq!(
            merge(AggKind::Avg, oid::INTERVAL, types, rows),
            "10 days 08:40:01"
        );
        let rows: &[(&str, &[Option<&str>])] = &[("", &[Some("1 mon"), Some("3")])];
        assert_eq!(merge(AggKind::Avg, oid::INTERVAL, types, rows), "10 days");
        let rows: &[(&str, &[Option<&str>])] = &[
            ("", &[Some("1 year 1 mon -1 days"), Some("2")]),
            ("", &[Some("07:00:01"), Some("2")]),
        ];
        assert_eq!(
            merge(AggKind::Avg, oid::INTERVAL, types, rows),
            "3 mons 7 days 07:45:00.25"
        );
    }

    #[test]
    fn variance_and_stddev_of_ints_match_postgres() {
        // (1),(2),(2) over two shards: count, sum(x), sum(x::numeric*x::numeric).
        let rows: &[(&str, &[Option<&str>])] = &[
            ("", &[Some("2"), Some("3"), Some("5")]),
            ("", &[Some("1"), Some("2"), Some("4")]),
        ];
        for (kind, golden) in [
            (AggKind::VarSamp, "0.33333333333333333333"),
            (AggKind::VarPop, "0.22222222222222222222"),
            (AggKind::StddevSamp, "0.57735026918962576451"),
            (AggKind::StddevPop, "0.47140452079103168293"),
        ] {
            assert_eq!(merge(kind, oid::NUMERIC, VAR_INT, rows), golden, "{kind:?}");
        }
    }

    #[test]
    fn variance_and_stddev_of_numerics_match_postgres() {
        // (1.5),(2.25),(-3.125),(10).
        let rows: &[(&str, &[Option<&str>])] = &[
            ("", &[Some("2"), Some("3.75"), Some("7.3125")]),
            ("", &[Some("2"), Some("6.875"), Some("109.765625")]),
            ("", &[Some("0"), None, None]),
        ];
        for (kind, golden) in [
            (AggKind::VarSamp, "29.6184895833333333"),
            (AggKind::VarPop, "22.2138671875000000"),
            (AggKind::StddevSamp, "5.4422871647252622"),
            (AggKind::StddevPop, "4.7131589393420630"),
        ] {
            assert_eq!(
                merge(kind, oid::NUMERIC, VAR_NUMERIC, rows),
                golden,
                "{kind:?}"
            );
        }
        // (1e20),(1e20+1),(3): large values, rscale 0.
        let rows: &[(&str, &[Option<&str>])] = &[(
            "",
            &[
                Some("3"),
                Some("200000000000000000004"),
                Some("20000000000000000000200000000000000000010"),
            ],
        )];
        for (kind, golden) in [
            (AggKind::VarSamp, "3333333333333333333166666666666666666669"),
            (AggKind::VarPop, "2222222222222222222111111111111111111113"),
            (AggKind::StddevSamp, "57735026918962576449"),
            (AggKind::StddevPop, "47140452079103168292"),
        ] {
            assert_eq!(
                merge(kind, oid::NUMERIC, VAR_NUMERIC, rows),
                golden,
                "{kind:?}"
            );
        }
        // (0.001),(0.002)
        let rows: &[(&str, &[Option<&str>])] =
            &[("", &[Some("2"), Some("0.003"), Some("0.000005")])];
        assert_eq!(
            merge(AggKind::VarSamp, oid::NUMERIC, VAR_NUMERIC, rows),
            "0.000000500000000000000000"
        );
        assert_eq!(
            merge(AggKind::StddevPop, oid::NUMERIC, VAR_NUMERIC, rows),
            "0.000500000000000000000000"
        );
        // Equal values: exactly 0.
        let rows: &[(&str, &[Option<&str>])] = &[("", &[Some("2"), Some("10"), Some("50")])];
        assert_eq!(merge(AggKind::StddevSamp, oid::NUMERIC, VAR_INT, rows), "0");
    }

    #[test]
    fn variance_nulls_and_nan() {
        let one: &[(&str, &[Option<&str>])] = &[("", &[Some("1"), Some("5"), Some("25")])];
        assert_eq!(merge(AggKind::VarSamp, oid::NUMERIC, VAR_INT, one), "NULL");
        assert_eq!(merge(AggKind::VarPop, oid::NUMERIC, VAR_INT, one), "0");
        let none: &[(&str, &[Option<&str>])] = &[("", &[Some("0"), None, None])];
        assert_eq!(merge(AggKind::VarPop, oid::NUMERIC, VAR_INT, none), "NULL");
        let nan: &[(&str, &[Option<&str>])] = &[("", &[Some("2"), Some("NaN"), Some("NaN")])];
        assert_eq!(
            merge(AggKind::StddevSamp, oid::NUMERIC, VAR_NUMERIC, nan),
            "NaN"
        );
    }

    #[test]
    fn float_variance_is_close_to_postgres() {
        // (1.5),(2.25),(-3.125),(10) as float8: Postgres gives these exactly.
        let rows: &[(&str, &[Option<&str>])] = &[
            ("", &[Some("2"), Some("3.75"), Some("7.3125")]),
            ("", &[Some("2"), Some("6.875"), Some("109.765625")]),
        ];
        for (kind, golden) in [
            (AggKind::VarSamp, "29.618489583333332"),
            (AggKind::VarPop, "22.2138671875"),
            (AggKind::StddevSamp, "5.442287164725262"),
            (AggKind::StddevPop, "4.713158939342063"),
        ] {
            assert_eq!(
                merge(kind, oid::FLOAT8, VAR_FLOAT, rows),
                golden,
                "{kind:?}"
            );
        }
        // (0.1),(0.2),(0.3): Postgres's Youngs-Cramer gives
        // 0.009999999999999992; ours differs in the last digits (documented).
        let rows: &[(&str, &[Option<&str>])] =
            &[("", &[Some("3"), Some("0.6000000000000001"), Some("0.14")])];
        let ours: f64 = merge(AggKind::VarSamp, oid::FLOAT8, VAR_FLOAT, rows)
            .parse()
            .unwrap();
        assert!((ours - 0.009999999999999992).abs() < 1e-15);
    }

    #[test]
    fn unsupported_shapes_are_errors() {
        assert!(AggState::new(AggKind::Sum, text(oid::TEXT), &[]).is_err());
        assert!(AggState::new(AggKind::Avg, text(oid::NUMERIC), &[text(oid::INT8)]).is_err());
        let err =
            AggState::new(AggKind::VarSamp, text(oid::INT4), &[text(oid::INT8); 3]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "variance or stddev of type oid 23 is not supported across shards"
        );
        let mut state = AggState::new(AggKind::Sum, text(oid::INT8), &[]).unwrap();
        assert!(state.add(&Datum::Text(b"x".to_vec()), &[]).is_err());
    }
}

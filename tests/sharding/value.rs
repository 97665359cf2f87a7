//! Results in a comparable form: binary values decoded to Postgres's text
//! output, floats kept as numbers (compared with a relative tolerance, since
//! a cross-shard sum adds in another order), and the comparison itself with
//! a readable diff.
//!
//! Binary formats: PostgreSQL docs, "protocol-overview" (formats) and the
//! type send functions (int8send, numeric_send, date_send, float8send).

use std::error::Error;

use tokio_postgres::types::{FromSql, Type};

/// Any column's raw bytes, whatever its type.
pub struct RawValue(pub Option<Vec<u8>>);

impl<'a> FromSql<'a> for RawValue {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(RawValue(Some(raw.to_vec())))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(RawValue(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Text(String),
    Float(f64),
}

impl Value {
    /// A sort key that is equal for floats equal within tolerance (almost
    /// always: rounding to 6 significant digits).
    fn sort_key(&self) -> String {
        match self {
            Value::Null => "\u{0}NULL".to_string(),
            Value::Text(t) => format!("T{t}"),
            Value::Float(f) => format!("F{f:.6e}"),
        }
    }

    fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Text(a), Value::Text(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => floats_close(*a, *b),
            _ => false,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Text(t) => write!(f, "{t:?}"),
            Value::Float(x) => write!(f, "{x:e}"),
        }
    }
}

pub fn floats_close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let scale = a.abs().max(b.abs());
    (a - b).abs() <= 1e-9 * scale || (a - b).abs() < 1e-12
}

pub fn is_float(oid: u32) -> bool {
    oid == Type::FLOAT4.oid() || oid == Type::FLOAT8.oid()
}

/// A float in Postgres's text output.
pub fn parse_float(text: &str) -> f64 {
    match text {
        "NaN" => f64::NAN,
        "Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        t => t.parse().unwrap_or(f64::NAN),
    }
}

/// A text-format value of a column of type `oid` (None: type unknown).
pub fn from_text(text: Option<&str>, oid: Option<u32>) -> Value {
    match text {
        None => Value::Null,
        Some(t) if oid.is_some_and(is_float) => Value::Float(parse_float(t)),
        Some(t) => Value::Text(t.to_string()),
    }
}

/// A binary-format value of type `oid`, as Postgres would print it.
pub fn from_binary(raw: Option<&[u8]>, oid: u32) -> Value {
    let Some(b) = raw else {
        return Value::Null;
    };
    let be = |n: usize| -> Option<&[u8]> { (b.len() == n).then_some(b) };
    let decoded = if oid == Type::BOOL.oid() {
        be(1).map(|b| Value::Text(if b[0] != 0 { "t" } else { "f" }.to_string()))
    } else if oid == Type::INT2.oid() {
        be(2).map(|b| Value::Text(i16::from_be_bytes([b[0], b[1]]).to_string()))
    } else if oid == Type::INT4.oid() {
        be(4).map(|b| Value::Text(i32::from_be_bytes(b.try_into().expect("4 bytes")).to_string()))
    } else if oid == Type::INT8.oid() {
        be(8).map(|b| Value::Text(i64::from_be_bytes(b.try_into().expect("8 bytes")).to_string()))
    } else if oid == Type::FLOAT4.oid() {
        // Through the shortest decimal that round-trips the f32, as
        // float4out prints it, so text and binary results agree.
        be(4).map(|b| {
            let f = f32::from_be_bytes(b.try_into().expect("4 bytes"));
            Value::Float(f.to_string().parse().unwrap_or(f64::NAN))
        })
    } else if oid == Type::FLOAT8.oid() {
        be(8).map(|b| Value::Float(f64::from_be_bytes(b.try_into().expect("8 bytes"))))
    } else if oid == Type::NUMERIC.oid() {
        numeric_text(b).map(Value::Text)
    } else if oid == Type::DATE.oid() {
        be(4).map(|b| {
            Value::Text(date_text(i32::from_be_bytes(
                b.try_into().expect("4 bytes"),
            )))
        })
    } else if [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::UNKNOWN,
    ]
    .iter()
    .any(|t| t.oid() == oid)
    {
        std::str::from_utf8(b)
            .ok()
            .map(|s| Value::Text(s.to_string()))
    } else {
        None
    };
    decoded.unwrap_or_else(|| Value::Text(format!("<oid {oid} bytes {b:02x?}>")))
}

/// numeric_send's format: ndigits, weight, sign, dscale (all 16-bit), then
/// ndigits base-10000 digits; printed with exactly dscale fraction digits.
pub fn numeric_text(b: &[u8]) -> Option<String> {
    if b.len() < 8 {
        return None;
    }
    let word = |i: usize| u16::from_be_bytes([b[2 * i], b[2 * i + 1]]);
    let ndigits = word(0) as usize;
    let weight = word(1) as i16 as i64;
    let sign = word(2);
    let dscale = word(3) as usize;
    if b.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0xC000 => return Some("NaN".to_string()),
        0xD000 => return Some("Infinity".to_string()),
        0xF000 => return Some("-Infinity".to_string()),
        _ => {}
    }
    let digit = |i: i64| -> u16 {
        if i < 0 || i as usize >= ndigits {
            0
        } else {
            word(4 + i as usize)
        }
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                out.push_str(&digit(i).to_string());
            } else {
                out.push_str(&format!("{:04}", digit(i)));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Some(out)
}

/// date_send's days since 2000-01-01 as ISO `YYYY-MM-DD`.
pub fn date_text(days: i32) -> String {
    match days {
        i32::MAX => return "infinity".to_string(),
        i32::MIN => return "-infinity".to_string(),
        _ => {}
    }
    // Civil-from-days over the proleptic Gregorian calendar, day 0 = 1970-01-01.
    let z = days as i64 + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// One statement's result.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Column names and, when the protocol says, type oids.
    pub columns: Vec<(String, Option<u32>)>,
    pub rows: Vec<Vec<Value>>,
    /// The row count of CommandComplete (simple protocol only).
    pub tag: Option<u64>,
}

fn show_row(row: &[Value]) -> String {
    let cells: Vec<String> = row.iter().map(ToString::to_string).collect();
    format!("({})", cells.join(", "))
}

/// None when `got` matches `want`; else a description of the first
/// differences. `ordered`: rows must come in the same order.
pub fn compare(want: &Outcome, got: &Outcome, ordered: bool) -> Option<String> {
    let mut problems = Vec::new();
    let names = |o: &Outcome| o.columns.iter().map(|c| c.0.clone()).collect::<Vec<_>>();
    if names(want) != names(got) {
        problems.push(format!(
            "columns: want {:?}, got {:?}",
            names(want),
            names(got)
        ));
    }
    let types_known = want
        .columns
        .iter()
        .chain(&got.columns)
        .all(|c| c.1.is_some());
    if types_known && want.columns.len() == got.columns.len() {
        let types = |o: &Outcome| {
            o.columns
                .iter()
                .map(|c| c.1.unwrap_or(0))
                .collect::<Vec<_>>()
        };
        if types(want) != types(got) {
            problems.push(format!(
                "column type oids: want {:?}, got {:?}",
                types(want),
                types(got)
            ));
        }
    }
    if want.tag != got.tag {
        problems.push(format!(
            "CommandComplete rows: want {:?}, got {:?}",
            want.tag, got.tag
        ));
    }
    let sorted = |rows: &[Vec<Value>]| {
        let mut rows = rows.to_vec();
        if !ordered {
            rows.sort_by_cached_key(|r| r.iter().map(Value::sort_key).collect::<Vec<_>>());
        }
        rows
    };
    let (w, g) = (sorted(&want.rows), sorted(&got.rows));
    if w.len() != g.len() {
        problems.push(format!("row count: want {}, got {}", w.len(), g.len()));
    }
    let same_row =
        |a: &[Value], b: &[Value]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y));
    if let Some(first) = (0..w.len().max(g.len())).find(|&i| match (w.get(i), g.get(i)) {
        (Some(a), Some(b)) => !same_row(a, b),
        _ => true,
    }) {
        let what = if ordered { "row" } else { "sorted row" };
        for i in first..(first + 3).min(w.len().max(g.len())) {
            let show =
                |r: Option<&Vec<Value>>| r.map_or_else(|| "<none>".to_string(), |r| show_row(r));
            problems.push(format!(
                "{what} {i}:\n      want {}\n      got  {}",
                show(w.get(i)),
                show(g.get(i))
            ));
        }
    }
    (!problems.is_empty()).then(|| problems.join("\n    "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_binary_prints_like_postgres() {
        // 12.50: ndigits 2, weight 0, sign +, dscale 2, digits 12, 5000.
        let b = [0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 0x13, 0x88];
        assert_eq!(numeric_text(&b).as_deref(), Some("12.50"));
        // -0.0005 with dscale 4: ndigits 1, weight -1, digits 5.
        let b = [0, 1, 0xff, 0xff, 0x40, 0, 0, 4, 0, 5];
        assert_eq!(numeric_text(&b).as_deref(), Some("-0.0005"));
        // 0 with dscale 2: no digits.
        let b = [0, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(numeric_text(&b).as_deref(), Some("0.00"));
        // 10000 = one digit 1 at weight 1.
        let b = [0, 1, 0, 1, 0, 0, 0, 0, 0, 1];
        assert_eq!(numeric_text(&b).as_deref(), Some("10000"));
    }

    fn one(values: &[Value]) -> Outcome {
        Outcome {
            columns: vec![("x".to_string(), None)],
            rows: values.iter().map(|v| vec![v.clone()]).collect(),
            tag: None,
        }
    }

    #[test]
    fn comparison_is_exact_except_for_floats() {
        let t = |s: &str| Value::Text(s.to_string());
        assert!(compare(&one(&[t("2.50")]), &one(&[t("2.5")]), true).is_some());
        assert!(compare(
            &one(&[Value::Float(0.1 + 0.2)]),
            &one(&[Value::Float(0.3)]),
            true
        )
        .is_none());
        assert!(compare(
            &one(&[Value::Float(1.0)]),
            &one(&[Value::Float(1.000001)]),
            true
        )
        .is_some());
        assert!(compare(&one(&[t("a"), t("b")]), &one(&[t("b"), t("a")]), false).is_none());
        assert!(compare(&one(&[t("a"), t("b")]), &one(&[t("b"), t("a")]), true).is_some());
        assert!(compare(&one(&[Value::Null]), &one(&[t("")]), true).is_some());
    }

    #[test]
    fn dates_print_iso() {
        assert_eq!(date_text(0), "2000-01-01");
        assert_eq!(date_text(-1), "1999-12-31");
        assert_eq!(date_text(7305), "2020-01-01");
        assert_eq!(date_text(60), "2000-03-01");
    }
}

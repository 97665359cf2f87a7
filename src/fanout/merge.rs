//! The sans-IO merger of one cross-shard SELECT: every shard's
//! RowDescription and DataRows in, the client's RowDescription and DataRows
//! out, following Postgres's order of evaluation: aggregation (GROUP BY),
//! HAVING, DISTINCT, ORDER BY, OFFSET, LIMIT ("sql-select"). Reads no socket
//! and sends nothing: the relay feeds it message bodies and writes what
//! `finish` produces, then CommandComplete `SELECT n`.
//!
//! - `wire`: RowDescription and DataRow bodies, bounds-checked.
//! - `key`: when group and DISTINCT keys can compare as bytes.
//! - `group`: GROUP BY and aggregates.
//! - `having`: HAVING with three-valued logic.
//! - `collect`: DISTINCT, ORDER BY, OFFSET, LIMIT; the client's rows.

mod collect;
mod group;
mod having;
mod key;
mod wire;

pub(crate) use wire::RowDescription;

use std::rc::Rc;

use bytes::BytesMut;

use self::collect::{Collector, RowBody};
use self::group::Grouper;
use self::having::ParamValue;
use self::wire::{split_data_row, Span};
use crate::fanout::datum::DatumError;
use crate::fanout::plan::{Count, Expr, MergePlan, SortKey, NAMED_COLUMN};

/// Why a merge failed; the relay sends it to the client as an
/// ErrorResponse with [`MergeError::sqlstate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeError {
    /// Two shards described the result differently.
    Mismatch {
        /// The column's name (first shard's spelling), or "column count".
        column: String,
        first_shard: usize,
        shard: usize,
        detail: String,
    },
    /// A value could not be decoded, merged or encoded.
    Datum(DatumError),
    /// A malformed message from a shard, or one out of order.
    Protocol(String),
    /// A LIMIT, OFFSET or HAVING parameter that cannot be used.
    Param { index: usize, reason: String },
    /// LIMIT or OFFSET below zero ("LIMIT must not be negative").
    Negative { clause: &'static str },
    /// The rows a merge must hold at once pass `MAX_HELD_BYTES`.
    TooLarge { limit_bytes: usize },
    /// The plan names a column the shards' rows do not have.
    Plan(String),
    /// A HAVING condition that cannot be evaluated on the merged values.
    Having(String),
}

impl MergeError {
    /// The SQLSTATE for the client's ErrorResponse ("errcodes-appendix").
    pub fn sqlstate(&self) -> &'static str {
        match self {
            MergeError::TooLarge { .. } => "54000",
            MergeError::Mismatch { .. } | MergeError::Plan(_) => "XX000",
            MergeError::Datum(error) => error.sqlstate(),
            MergeError::Having(_) => "42804",
            MergeError::Protocol(_) => "08P01",
            MergeError::Param { .. } => "22023",
            MergeError::Negative { clause: "OFFSET" } => "2201X",
            MergeError::Negative { .. } => "2201W",
        }
    }
}

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MergeError::Mismatch {
                column,
                first_shard,
                shard,
                detail,
            } => write!(
                f,
                "shards {first_shard} and {shard} describe the result differently: \
                 {column}: {detail}"
            ),
            MergeError::Datum(error) => write!(f, "{error}"),
            MergeError::Protocol(what) => write!(f, "protocol violation by a shard: {what}"),
            MergeError::Param { index, reason } => {
                write!(f, "parameter ${}: {reason}", index + 1)
            }
            MergeError::Negative { clause } => write!(f, "{clause} must not be negative"),
            MergeError::TooLarge { limit_bytes } => write!(
                f,
                "the cross-shard result is too large to merge in memory (over {} MiB held); \
                 add a LIMIT, or route the query to one shard",
                limit_bytes / (1024 * 1024)
            ),
            MergeError::Plan(what) => write!(f, "cross-shard merge plan: {what}"),
            MergeError::Having(what) => write!(f, "HAVING across shards: {what}"),
        }
    }
}

impl std::error::Error for MergeError {}

impl From<DatumError> for MergeError {
    fn from(error: DatumError) -> Self {
        MergeError::Datum(error)
    }
}

/// The most bytes of rows one merge holds at once (a sorted or DISTINCT
/// result without LIMIT holds all its rows; a GROUP BY, one row per group).
/// Past it the query fails with 54000 rather than take the core's memory.
pub const MAX_HELD_BYTES: usize = 256 * 1024 * 1024;

/// The merge of one execution of a cross-shard SELECT.
pub struct Merge {
    plan: Rc<MergePlan>,
    offset: usize,
    limit: Option<usize>,
    params: Vec<ParamValue>,
    /// Set by the first RowDescription.
    active: Option<Active>,
    spans: Vec<Span>,
    limit_bytes: usize,
}

/// What exists once the columns are known.
struct Active {
    description: RowDescription,
    first_shard: usize,
    /// Client columns: `plan.visible` capped at the column count.
    visible: usize,
    grouper: Option<Grouper>,
    collector: Collector,
}

impl Merge {
    /// Resolves `Count::Param` LIMIT/OFFSET (int8 in text, or int2/4/8 in
    /// binary; NULL means no limit, offset 0) and keeps the values HAVING's
    /// `Expr::Param`s use. `param_formats` as in Bind: none (all text), one
    /// for all, or one per parameter.
    pub fn new(
        plan: Rc<MergePlan>,
        params: &[Option<&[u8]>],
        param_formats: &[i16],
    ) -> Result<Merge, MergeError> {
        if param_formats.len() > 1 && param_formats.len() != params.len() {
            return Err(MergeError::Param {
                index: 0,
                reason: format!(
                    "{} format codes for {} parameters",
                    param_formats.len(),
                    params.len()
                ),
            });
        }
        let params = params
            .iter()
            .enumerate()
            .map(|(index, value)| param_value(index, *value, param_formats))
            .collect::<Result<Vec<_>, _>>()?;
        let offset = resolve_count(plan.offset, &params, "OFFSET")?.unwrap_or(0);
        let limit = resolve_count(plan.limit, &params, "LIMIT")?;
        Ok(Merge {
            plan,
            offset: usize::try_from(offset).unwrap_or(usize::MAX),
            limit: limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
            params,
            active: None,
            spans: Vec::new(),
            limit_bytes: MAX_HELD_BYTES,
        })
    }

    /// Holds at most `limit_bytes` of rows instead of `MAX_HELD_BYTES`.
    pub fn with_memory_limit(mut self, limit_bytes: usize) -> Merge {
        self.limit_bytes = limit_bytes;
        self
    }

    /// One shard's RowDescription body (after the 5-byte header). The first
    /// defines the columns; later ones must agree on count, names, type
    /// oids, sizes, modifiers and formats (not table oid or attnum, which
    /// belong to each shard's database).
    pub fn row_description(&mut self, shard: usize, body: &[u8]) -> Result<(), MergeError> {
        let description = RowDescription::parse(body)?;
        match &self.active {
            Some(active) => {
                check_same(&active.description, active.first_shard, &description, shard)
            }
            None => {
                self.active = Some(self.activate(description, shard)?);
                Ok(())
            }
        }
    }

    /// One DataRow body from `shard`.
    pub fn data_row(&mut self, _shard: usize, body: &[u8]) -> Result<(), MergeError> {
        let active = self
            .active
            .as_mut()
            .ok_or_else(|| MergeError::Protocol("DataRow before RowDescription".to_string()))?;
        split_data_row(body, active.description.len(), &mut self.spans)?;
        match &mut active.grouper {
            Some(grouper) => grouper.add(body, &self.spans),
            None => active.collector.offer(RowBody::Borrowed(body), &self.spans),
        }
    }

    /// The client's whole RowDescription message: the first shard's, cut to
    /// the visible columns (no fields before any shard described).
    pub fn client_row_description(&self, out: &mut BytesMut) {
        match &self.active {
            Some(active) => active.description.write_visible(active.visible, out),
            None => RowDescription::parse(&[0, 0])
                .expect("an empty description parses")
                .write_visible(0, out),
        }
    }

    /// Writes the client's DataRow messages (visible columns only) and
    /// returns how many, for CommandComplete `SELECT n`. The merge is spent
    /// afterwards: a second call writes nothing.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<u64, MergeError> {
        let Some(mut active) = self.active.take() else {
            return Ok(0);
        };
        if let Some(grouper) = &mut active.grouper {
            grouper.finish(&self.params, &mut active.collector)?;
        }
        Ok(active.collector.finish(self.offset, self.limit, out))
    }

    fn activate(&self, description: RowDescription, shard: usize) -> Result<Active, MergeError> {
        let order_by = resolve_sort_names(&self.plan, &description)?;
        check_plan(&self.plan, &order_by, description.len())?;
        let visible = self.plan.visible.min(description.len());
        let grouper = match &self.plan.aggregate {
            Some(aggregate) => {
                let mut grouper = Grouper::new(aggregate, &description)?;
                grouper.limit_bytes = self.limit_bytes;
                Some(grouper)
            }
            None => None,
        };
        let bound = self.limit.map(|limit| self.offset.saturating_add(limit));
        let mut collector =
            Collector::new(&order_by, &description, visible, self.plan.distinct, bound);
        collector.limit_memory(self.limit_bytes);
        Ok(Active {
            description,
            first_shard: shard,
            visible,
            grouper,
            collector,
        })
    }
}

/// Every later shard's description must match the first's.
fn check_same(
    first: &RowDescription,
    first_shard: usize,
    other: &RowDescription,
    shard: usize,
) -> Result<(), MergeError> {
    let mismatch = |column: String, detail: String| MergeError::Mismatch {
        column,
        first_shard,
        shard,
        detail,
    };
    if first.len() != other.len() {
        return Err(mismatch(
            "column count".to_string(),
            format!("{} vs {}", first.len(), other.len()),
        ));
    }
    for (index, (a, b)) in first.fields.iter().zip(&other.fields).enumerate() {
        let detail = if a.name != b.name {
            format!("named \"{}\" vs \"{}\"", a.display_name(), b.display_name())
        } else if a.type_oid != b.type_oid {
            format!("type oid {} vs {}", a.type_oid, b.type_oid)
        } else if a.type_len != b.type_len {
            format!("type size {} vs {}", a.type_len, b.type_len)
        } else if a.type_modifier != b.type_modifier {
            format!("type modifier {} vs {}", a.type_modifier, b.type_modifier)
        } else if a.format != b.format {
            format!("format code {} vs {}", a.format, b.format)
        } else {
            continue;
        };
        return Err(mismatch(
            format!("column {} (\"{}\")", index + 1, a.display_name()),
            detail,
        ));
    }
    Ok(())
}

/// The plan's sort keys with the columns `sort_names` names (under
/// `SELECT *`) found in the description: exactly one column of that name.
fn resolve_sort_names(
    plan: &MergePlan,
    description: &RowDescription,
) -> Result<Vec<SortKey>, MergeError> {
    plan.order_by
        .iter()
        .map(|key| {
            let Some(index) = key.column.checked_sub(NAMED_COLUMN) else {
                return Ok(*key);
            };
            let name = plan
                .sort_names
                .get(index)
                .ok_or_else(|| MergeError::Plan(format!("sort name {index}")))?;
            let mut found = description
                .fields
                .iter()
                .enumerate()
                .filter(|(_, field)| field.name == name.as_bytes());
            match (found.next(), found.next()) {
                (Some((column, _)), None) => Ok(SortKey { column, ..*key }),
                (None, _) => Err(MergeError::Plan(format!(
                    "ORDER BY \"{name}\" names no column of the result"
                ))),
                (Some(_), Some(_)) => Err(MergeError::Plan(format!(
                    "ORDER BY \"{name}\" is ambiguous: several result columns have that name"
                ))),
            }
        })
        .collect()
}

/// Every column the plan names must exist in the shards' rows.
fn check_plan(plan: &MergePlan, order_by: &[SortKey], columns: usize) -> Result<(), MergeError> {
    let mut named: Vec<usize> = order_by.iter().map(|k| k.column).collect();
    if let Some(aggregate) = &plan.aggregate {
        named.extend(&aggregate.group_by);
        for column in &aggregate.aggregates {
            named.push(column.column);
            named.extend(&column.partials);
        }
        if let Some(having) = &aggregate.having {
            expr_columns(having, &mut named);
        }
    }
    match named.into_iter().find(|c| *c >= columns) {
        Some(column) => Err(MergeError::Plan(format!(
            "column {column} of rows with {columns} columns"
        ))),
        None => Ok(()),
    }
}

fn expr_columns(expr: &Expr, out: &mut Vec<usize>) {
    match expr {
        Expr::Column(c) => out.push(*c),
        Expr::Literal(_) | Expr::Param(_) => {}
        Expr::Compare(_, a, b) | Expr::Arithmetic(_, a, b) => {
            expr_columns(a, out);
            expr_columns(b, out);
        }
        Expr::And(items) | Expr::Or(items) => items.iter().for_each(|e| expr_columns(e, out)),
        Expr::Not(e) | Expr::IsNull(e, _) => expr_columns(e, out),
    }
}

/// A Bind parameter with its format code ("protocol-message-formats",
/// Bind: zero codes mean all text, one applies to all).
fn param_value(
    index: usize,
    value: Option<&[u8]>,
    formats: &[i16],
) -> Result<ParamValue, MergeError> {
    let format = match formats {
        [] => 0,
        [format] => *format,
        formats => *formats.get(index).ok_or_else(|| MergeError::Param {
            index,
            reason: format!("{} format codes", formats.len()),
        })?,
    };
    Ok(match (value, format) {
        (None, _) => ParamValue::Null,
        (Some(bytes), 0) => ParamValue::Text(bytes.to_vec()),
        (Some(bytes), 1) => ParamValue::Binary(bytes.to_vec()),
        (Some(_), format) => {
            return Err(MergeError::Param {
                index,
                reason: format!("format code {format}"),
            })
        }
    })
}

/// A LIMIT or OFFSET value; `None` for no clause or NULL (LIMIT NULL is
/// LIMIT ALL, OFFSET NULL is OFFSET 0).
fn resolve_count(
    count: Option<Count>,
    params: &[ParamValue],
    clause: &'static str,
) -> Result<Option<u64>, MergeError> {
    let index = match count {
        None => return Ok(None),
        Some(Count::Literal(n)) => return Ok(Some(n)),
        Some(Count::Param(index)) => index,
    };
    let bad = |reason: String| MergeError::Param { index, reason };
    let value: i64 = match params.get(index) {
        None => return Err(bad(format!("{clause} has no value bound"))),
        Some(ParamValue::Null) => return Ok(None),
        Some(ParamValue::Text(text)) => std::str::from_utf8(text)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| bad(format!("{clause} is not a bigint")))?,
        Some(ParamValue::Binary(bytes)) => match bytes.as_slice() {
            [a, b] => i64::from(i16::from_be_bytes([*a, *b])),
            [a, b, c, d] => i64::from(i32::from_be_bytes([*a, *b, *c, *d])),
            bytes => i64::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| bad(format!("{clause} is {} bytes of binary", bytes.len())))?,
            ),
        },
    };
    u64::try_from(value)
        .map(Some)
        .map_err(|_| MergeError::Negative { clause })
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;
    use crate::fanout::plan::{
        AggKind, AggregateColumn, AggregatePlan, ArithmeticOp, CompareOp, SortKey,
    };

    const INT4: u32 = 23;
    const INT8: u32 = 20;
    const TEXT: u32 = 25;

    /// One RowDescription field; table oid and attnum vary per shard.
    #[derive(Clone)]
    struct Field {
        name: &'static str,
        oid: u32,
        typmod: i32,
        format: i16,
        table_oid: i32,
    }

    fn field(name: &'static str, oid: u32) -> Field {
        Field {
            name,
            oid,
            typmod: -1,
            format: 0,
            table_oid: 0,
        }
    }

    fn description(fields: &[Field]) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_i16(fields.len() as i16);
        for (i, f) in fields.iter().enumerate() {
            out.put_slice(f.name.as_bytes());
            out.put_u8(0);
            out.put_i32(f.table_oid);
            out.put_i16(i as i16 + 1);
            out.put_i32(f.oid as i32);
            out.put_i16(if f.oid == TEXT { -1 } else { 4 });
            out.put_i32(f.typmod);
            out.put_i16(f.format);
        }
        out.to_vec()
    }

    fn row(values: &[Option<&str>]) -> Vec<u8> {
        crate::fanout::test_bodies::row(values)
    }

    /// The DataRow messages in `out` as text values.
    fn rows(out: &[u8]) -> Vec<Vec<Option<String>>> {
        let mut rows = Vec::new();
        let mut rest = out;
        while !rest.is_empty() {
            assert_eq!(rest[0], b'D');
            let len = i32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            let body = &rest[5..1 + len];
            let mut spans = Vec::new();
            let count = i16::from_be_bytes([body[0], body[1]]) as usize;
            wire::split_data_row(body, count, &mut spans).unwrap();
            rows.push(
                spans
                    .iter()
                    .map(|s| {
                        s.value(body)
                            .map(|v| String::from_utf8(v.to_vec()).unwrap())
                    })
                    .collect(),
            );
            rest = &rest[1 + len..];
        }
        rows
    }

    fn plan() -> MergePlan {
        MergePlan {
            visible: usize::MAX,
            aggregate: None,
            distinct: false,
            order_by: vec![],
            sort_names: vec![],
            offset: None,
            limit: None,
        }
    }

    fn asc(column: usize) -> SortKey {
        SortKey {
            column,
            descending: false,
            nulls_first: false,
        }
    }

    fn desc(column: usize) -> SortKey {
        SortKey {
            column,
            descending: true,
            nulls_first: true,
        }
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    /// Runs `plan` over `shards` (each a list of rows) described by
    /// `fields`; returns the client's rows.
    fn run_with(
        plan: MergePlan,
        params: &[Option<&[u8]>],
        formats: &[i16],
        fields: &[Field],
        shards: &[Vec<Vec<Option<&str>>>],
    ) -> Result<Vec<Vec<Option<String>>>, MergeError> {
        let mut merge = Merge::new(Rc::new(plan), params, formats)?;
        for shard in 0..shards.len() {
            merge.row_description(shard, &description(fields))?;
        }
        // Interleave the shards' rows, as replies arrive: the first row of
        // every shard, then the second...
        let longest = shards.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..longest {
            for (shard, rows) in shards.iter().enumerate() {
                if let Some(values) = rows.get(i) {
                    merge.data_row(shard, &row(values))?;
                }
            }
        }
        let mut out = BytesMut::new();
        let count = merge.finish(&mut out)?;
        let rows = rows(&out);
        assert_eq!(count as usize, rows.len());
        Ok(rows)
    }

    fn run(
        plan: MergePlan,
        fields: &[Field],
        shards: &[Vec<Vec<Option<&str>>>],
    ) -> Vec<Vec<Option<String>>> {
        run_with(plan, &[], &[], fields, shards).unwrap()
    }

    /// Feeds every row of `shards` to a merge limited to `limit_bytes`.
    fn feed_limited(
        plan: MergePlan,
        limit_bytes: usize,
        fields: &[Field],
        shards: &[Vec<Vec<Option<&str>>>],
    ) -> Result<u64, MergeError> {
        let mut merge = Merge::new(Rc::new(plan), &[], &[])?.with_memory_limit(limit_bytes);
        for (shard, rows) in shards.iter().enumerate() {
            merge.row_description(shard, &description(fields))?;
            for values in rows {
                merge.data_row(shard, &row(values))?;
            }
        }
        merge.finish(&mut BytesMut::new())
    }

    #[test]
    fn a_merge_that_would_hold_too_much_fails_with_54000() {
        let fields = [field("id", INT4)];
        let values: Vec<String> = (0..2000).map(|i| i.to_string()).collect();
        let rows: Vec<Vec<Option<&str>>> = values.iter().map(|v| vec![Some(v.as_str())]).collect();
        let shards = vec![rows.clone(), rows];
        let mut sorted = plan();
        sorted.order_by = vec![asc(0)];
        let error = feed_limited(sorted.clone(), 10_000, &fields, &shards).unwrap_err();
        assert_eq!(error.sqlstate(), "54000");
        assert!(error.to_string().contains("add a LIMIT"), "{error}");
        // A LIMIT keeps only its best rows: far under the same limit.
        sorted.limit = Some(Count::Literal(10));
        assert_eq!(feed_limited(sorted, 10_000, &fields, &shards).unwrap(), 10);
        // Groups count too.
        let groups = grouped(vec![0], vec![aggregate(0, AggKind::Count)]);
        let error = feed_limited(groups.clone(), 10_000, &fields, &shards).unwrap_err();
        assert!(matches!(error, MergeError::TooLarge { .. }), "{error}");
        assert_eq!(
            feed_limited(groups, 1 << 30, &fields, &shards).unwrap(),
            2000
        );
    }

    #[test]
    fn rows_pass_through_in_arrival_order() {
        let fields = [field("id", INT4), field("name", TEXT)];
        let out = run(
            plan(),
            &fields,
            &[
                vec![vec![Some("1"), Some("a")], vec![Some("3"), None]],
                vec![vec![Some("2"), Some("b")]],
            ],
        );
        assert_eq!(
            out,
            vec![
                vec![s("1"), s("a")],
                vec![s("2"), s("b")],
                vec![s("3"), None]
            ]
        );
    }

    #[test]
    fn order_by_with_nulls_last_and_first_is_stable() {
        let fields = [field("k", INT4), field("tag", TEXT)];
        let shards = [
            vec![vec![Some("2"), Some("a")], vec![None, Some("n1")]],
            vec![vec![Some("1"), Some("b")], vec![Some("2"), Some("c")]],
            vec![vec![None, Some("n2")]],
        ];
        let mut p = plan();
        p.order_by = vec![asc(0)];
        let tags: Vec<_> = run(p.clone(), &fields, &shards)
            .into_iter()
            .map(|r| r[1].clone().unwrap())
            .collect();
        assert_eq!(tags, ["b", "a", "c", "n2", "n1"]);

        p.order_by = vec![desc(0)];
        let tags: Vec<_> = run(p.clone(), &fields, &shards)
            .into_iter()
            .map(|r| r[1].clone().unwrap())
            .collect();
        assert_eq!(tags, ["n2", "n1", "a", "c", "b"]);

        p.order_by = vec![SortKey {
            column: 0,
            descending: false,
            nulls_first: true,
        }];
        let tags: Vec<_> = run(p.clone(), &fields, &shards)
            .into_iter()
            .map(|r| r[1].clone().unwrap())
            .collect();
        assert_eq!(tags, ["n2", "n1", "b", "a", "c"]);

        p.order_by = vec![SortKey {
            column: 0,
            descending: true,
            nulls_first: false,
        }];
        let tags: Vec<_> = run(p, &fields, &shards)
            .into_iter()
            .map(|r| r[1].clone().unwrap())
            .collect();
        assert_eq!(tags, ["a", "c", "b", "n2", "n1"]);
    }

    /// A deterministic pseudo-random sequence for bulk tests.
    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn top_n_matches_a_full_sort() {
        let fields = [field("k", INT4), field("seq", INT4)];
        let mut seed = 7;
        let values: Vec<Vec<(String, String)>> = (0..4)
            .map(|shard| {
                (0..3000)
                    .map(|i| {
                        let k = if lcg(&mut seed) % 10 == 0 {
                            "NULL".to_string()
                        } else {
                            (lcg(&mut seed) % 500).to_string()
                        };
                        (k, (shard * 10000 + i).to_string())
                    })
                    .collect()
            })
            .collect();
        let shards: Vec<Vec<Vec<Option<&str>>>> = values
            .iter()
            .map(|rows| {
                rows.iter()
                    .map(|(k, seq)| vec![(k != "NULL").then_some(k.as_str()), Some(seq.as_str())])
                    .collect()
            })
            .collect();
        for key in [asc(0), desc(0)] {
            // Ties (many) must come out in arrival order, as the unbounded
            // merge's stable sort has them.
            let mut p = plan();
            p.order_by = vec![key];
            let all = run(p.clone(), &fields, &shards);
            assert_eq!(all.len(), 12000);
            for (offset, limit) in [(0, 1), (0, 10), (17, 100), (5000, 3000), (11990, 50)] {
                p.offset = Some(Count::Literal(offset));
                p.limit = Some(Count::Literal(limit));
                let expect: Vec<_> = all
                    .iter()
                    .skip(offset as usize)
                    .take(limit as usize)
                    .cloned()
                    .collect();
                assert_eq!(run(p.clone(), &fields, &shards), expect, "{offset} {limit}");
            }
        }
    }

    #[test]
    fn limit_and_offset_from_params() {
        let fields = [field("k", INT4)];
        let shards = [
            vec![vec![Some("5")], vec![Some("1")], vec![Some("3")]],
            vec![vec![Some("4")], vec![Some("2")]],
        ];
        let mut p = plan();
        p.order_by = vec![asc(0)];
        p.offset = Some(Count::Param(1));
        p.limit = Some(Count::Param(0));
        let keys = |out: Vec<Vec<Option<String>>>| -> Vec<String> {
            out.into_iter().map(|r| r[0].clone().unwrap()).collect()
        };
        // Text.
        let out = run_with(p.clone(), &[Some(b"2"), Some(b"1")], &[], &fields, &shards);
        assert_eq!(keys(out.unwrap()), ["2", "3"]);
        // Binary int8 limit, binary int4 offset.
        let limit = 3i64.to_be_bytes();
        let offset = 2i32.to_be_bytes();
        let out = run_with(
            p.clone(),
            &[Some(&limit), Some(&offset)],
            &[1],
            &fields,
            &shards,
        );
        assert_eq!(keys(out.unwrap()), ["3", "4", "5"]);
        // Mixed formats, NULL limit means all.
        let out = run_with(p.clone(), &[None, Some(b"3")], &[1, 0], &fields, &shards);
        assert_eq!(keys(out.unwrap()), ["4", "5"]);
        // LIMIT 0.
        let out = run_with(p.clone(), &[Some(b"0"), None], &[], &fields, &shards);
        assert!(out.unwrap().is_empty());
        // Errors.
        let err = Merge::new(Rc::new(p.clone()), &[Some(b"-1"), None], &[]).err();
        assert_eq!(err, Some(MergeError::Negative { clause: "LIMIT" }));
        assert_eq!(err.unwrap().to_string(), "LIMIT must not be negative");
        let err = Merge::new(Rc::new(p.clone()), &[None, Some(b"-1")], &[]).err();
        assert_eq!(err.unwrap().sqlstate(), "2201X");
        let err = Merge::new(Rc::new(p.clone()), &[Some(b"ten"), None], &[]).err();
        assert!(matches!(err, Some(MergeError::Param { index: 0, .. })));
        let err = Merge::new(Rc::new(p.clone()), &[Some(b"1")], &[]).err();
        assert!(matches!(err, Some(MergeError::Param { index: 1, .. })));
        let err = Merge::new(Rc::new(p.clone()), &[Some(b"abc"), None], &[1]).err();
        assert!(matches!(err, Some(MergeError::Param { index: 0, .. })));
        let err = Merge::new(Rc::new(p), &[Some(b"1"), None], &[0, 0, 0]).err();
        assert!(matches!(err, Some(MergeError::Param { .. })));
    }

    #[test]
    fn limit_without_order_keeps_the_first_rows() {
        let fields = [field("k", INT4)];
        let mut p = plan();
        p.offset = Some(Count::Literal(1));
        p.limit = Some(Count::Literal(2));
        let out = run(
            p,
            &fields,
            &[
                vec![vec![Some("1")], vec![Some("3")], vec![Some("5")]],
                vec![vec![Some("2")], vec![Some("4")]],
            ],
        );
        assert_eq!(out, vec![vec![s("2")], vec![s("3")]]);
    }

    #[test]
    fn hidden_columns_are_stripped() {
        let fields = [field("name", TEXT), field("sort_helper", INT4)];
        let mut p = plan();
        p.visible = 1;
        p.order_by = vec![desc(1)];
        let mut merge = Merge::new(Rc::new(p), &[], &[]).unwrap();
        merge.row_description(0, &description(&fields)).unwrap();
        merge.data_row(0, &row(&[Some("low"), Some("1")])).unwrap();
        merge.data_row(0, &row(&[Some("high"), Some("9")])).unwrap();
        let mut out = BytesMut::new();
        merge.client_row_description(&mut out);
        let mut expect = BytesMut::new();
        let body = description(&fields[..1]);
        expect.put_u8(b'T');
        expect.put_i32(4 + body.len() as i32);
        expect.put_slice(&body);
        assert_eq!(out, expect);
        let mut out = BytesMut::new();
        assert_eq!(merge.finish(&mut out).unwrap(), 2);
        assert_eq!(rows(&out), vec![vec![s("high")], vec![s("low")]]);
        // Spent: nothing more.
        let mut out = BytesMut::new();
        assert_eq!(merge.finish(&mut out).unwrap(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn descriptions_must_agree_except_table_columns() {
        let base = [field("id", INT4), field("name", TEXT)];
        let check = |other: &[Field]| {
            let mut merge = Merge::new(Rc::new(plan()), &[], &[]).unwrap();
            merge.row_description(2, &description(&base)).unwrap();
            merge.row_description(5, &description(other))
        };
        let mut other = base.clone();
        other[0].table_oid = 99999;
        assert_eq!(check(&other), Ok(()));

        let err = check(&base[..1]).unwrap_err();
        assert!(matches!(
            &err,
            MergeError::Mismatch { column, first_shard: 2, shard: 5, .. } if column == "column count"
        ));
        let mut other = base.clone();
        other[1].name = "title";
        let err = check(&other).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shards 2 and 5 describe the result differently: column 2 (\"name\"): \
             named \"name\" vs \"title\""
        );
        let mut other = base.clone();
        other[0].oid = INT8;
        assert!(check(&other)
            .unwrap_err()
            .to_string()
            .contains("type oid 23 vs 20"));
        let mut other = base.clone();
        other[1].typmod = 14;
        assert!(check(&other)
            .unwrap_err()
            .to_string()
            .contains("type modifier -1 vs 14"));
        let mut other = base.clone();
        other[1].format = 1;
        assert!(check(&other)
            .unwrap_err()
            .to_string()
            .contains("format code 0 vs 1"));
    }

    #[test]
    fn malformed_messages_are_protocol_errors() {
        let mut merge = Merge::new(Rc::new(plan()), &[], &[]).unwrap();
        let err = merge.data_row(0, &row(&[Some("1")])).unwrap_err();
        assert!(matches!(err, MergeError::Protocol(_)));
        assert!(matches!(
            merge.row_description(0, &[0, 1, b'x']),
            Err(MergeError::Protocol(_))
        ));
        merge
            .row_description(0, &description(&[field("a", INT4), field("b", TEXT)]))
            .unwrap();
        for body in [
            row(&[Some("1")]),
            row(&[Some("1"), Some("x"), Some("y")]),
            vec![0, 2, 0, 0, 0, 1, b'1', 0, 0, 0, 9, b'x'],
            vec![0, 2, 0, 0, 0, 1, b'1', 0, 0, 0, 1, b'x', 0],
            vec![0],
            vec![],
        ] {
            let err = merge.data_row(1, &body).unwrap_err();
            assert!(matches!(err, MergeError::Protocol(_)), "{body:?}");
            assert_eq!(err.sqlstate(), "08P01");
        }
    }

    #[test]
    fn plan_columns_must_exist() {
        let mut p = plan();
        p.order_by = vec![asc(3)];
        let mut merge = Merge::new(Rc::new(p), &[], &[]).unwrap();
        let err = merge
            .row_description(0, &description(&[field("a", INT4)]))
            .unwrap_err();
        assert!(matches!(err, MergeError::Plan(_)));
    }

    fn aggregate(column: usize, kind: AggKind) -> AggregateColumn {
        AggregateColumn {
            column,
            kind,
            partials: vec![],
        }
    }

    fn grouped(group_by: Vec<usize>, aggregates: Vec<AggregateColumn>) -> MergePlan {
        let mut p = plan();
        p.aggregate = Some(AggregatePlan {
            group_by,
            aggregates,
            having: None,
        });
        p
    }

    #[test]
    fn group_by_merges_counts_and_sums_nulls_grouping_together() {
        // SELECT g, count(*), sum(x) ... GROUP BY g
        let fields = [field("g", TEXT), field("count", INT8), field("sum", INT8)];
        let mut p = grouped(
            vec![0],
            vec![aggregate(1, AggKind::Count), aggregate(2, AggKind::Sum)],
        );
        p.order_by = vec![asc(0)];
        let out = run(
            p,
            &fields,
            &[
                vec![
                    vec![Some("b"), Some("2"), Some("10")],
                    vec![None, Some("1"), None],
                    vec![Some("a"), Some("1"), Some("1")],
                ],
                vec![
                    vec![Some("a"), Some("3"), Some("5")],
                    vec![None, Some("4"), Some("7")],
                ],
            ],
        );
        assert_eq!(
            out,
            vec![
                vec![s("a"), s("4"), s("6")],
                vec![s("b"), s("2"), s("10")],
                vec![None, s("5"), s("7")],
            ]
        );
    }

    #[test]
    fn avg_merges_from_its_partials() {
        // SELECT g, avg(x) ... GROUP BY g, with hidden sum(x), count(x).
        let fields = [
            field("g", TEXT),
            field("avg", 1700),
            field("sum", INT8),
            field("count", INT8),
        ];
        let mut p = grouped(
            vec![0],
            vec![AggregateColumn {
                column: 1,
                kind: AggKind::Avg,
                partials: vec![2, 3],
            }],
        );
        p.visible = 2;
        let out = run(
            p,
            &fields,
            &[
                vec![vec![Some("a"), Some("2.5"), Some("10"), Some("4")]],
                vec![
                    vec![Some("a"), Some("2.5"), Some("5"), Some("2")],
                    vec![Some("b"), None, None, Some("0")],
                ],
            ],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), 2);
        // Postgres: SELECT avg(x) over 10,5 / 4,2 rows prints this scale.
        assert_eq!(out[0][1].as_deref(), Some("2.5000000000000000"));
        assert_eq!(out[1], vec![s("b"), None]);
    }

    #[test]
    fn ungrouped_aggregate_over_no_rows_is_one_row() {
        // SELECT 'x', count(*), sum(v): no shard sent a row.
        let fields = [field("c", TEXT), field("count", INT8), field("sum", INT8)];
        let p = grouped(
            vec![],
            vec![aggregate(1, AggKind::Count), aggregate(2, AggKind::Sum)],
        );
        let out = run(p.clone(), &fields, &[vec![], vec![]]);
        assert_eq!(out, vec![vec![None, s("0"), None]]);
        // One row per shard: merged into one.
        let out = run(
            p,
            &fields,
            &[
                vec![vec![Some("x"), Some("2"), Some("3")]],
                vec![vec![Some("x"), Some("0"), None]],
            ],
        );
        assert_eq!(out, vec![vec![s("x"), s("2"), s("3")]]);
        // Grouped over no rows: no rows.
        let p = grouped(vec![0], vec![aggregate(1, AggKind::Count)]);
        assert!(run(p, &fields, &[vec![]]).is_empty());
    }

    fn col(c: usize) -> Box<Expr> {
        Box::new(Expr::Column(c))
    }

    fn lit(v: &str) -> Box<Expr> {
        Box::new(Expr::Literal(Some(v.to_string())))
    }

    #[test]
    fn having_uses_three_valued_logic() {
        // SELECT g, sum(v) ... GROUP BY g HAVING <cond>
        let fields = [field("g", TEXT), field("sum", INT8)];
        let shards = [
            vec![
                vec![Some("big"), Some("10")],
                vec![Some("null"), None],
                vec![Some("small"), Some("1")],
            ],
            vec![vec![Some("big"), Some("5")], vec![Some("small"), Some("2")]],
        ];
        let groups = |having: Expr, params: &[Option<&[u8]>]| -> Vec<String> {
            let mut p = grouped(vec![0], vec![aggregate(1, AggKind::Sum)]);
            p.aggregate.as_mut().unwrap().having = Some(having);
            run_with(p, params, &[], &fields, &shards)
                .unwrap()
                .into_iter()
                .map(|r| r[0].clone().unwrap())
                .collect()
        };
        let gt = |a, b| Expr::Compare(CompareOp::Greater, a, b);
        assert_eq!(groups(gt(col(1), lit("5")), &[]), ["big"]);
        // NOT (sum > 5): the NULL group stays out.
        assert_eq!(
            groups(Expr::Not(Box::new(gt(col(1), lit("5")))), &[]),
            ["small"]
        );
        // NULL OR true is true; NULL AND true is NULL.
        let is_null = Expr::IsNull(col(1), true);
        assert_eq!(
            groups(Expr::Or(vec![gt(col(1), lit("5")), is_null.clone()]), &[]),
            ["big", "null"]
        );
        assert_eq!(
            groups(
                Expr::And(vec![
                    gt(col(1), lit("0")),
                    Expr::Compare(CompareOp::NotEq, col(0), lit("x"))
                ]),
                &[]
            ),
            ["big", "small"]
        );
        assert_eq!(groups(Expr::IsNull(col(1), false), &[]), ["big", "small"]);
        // Arithmetic with NULL is NULL; a parameter takes the column's type.
        let doubled = Box::new(Expr::Arithmetic(ArithmeticOp::Multiply, col(1), lit("2")));
        let param = Box::new(Expr::Param(0));
        assert_eq!(
            groups(gt(doubled.clone(), param.clone()), &[Some(b"7")]),
            ["big"]
        );
        assert_eq!(groups(gt(doubled, param), &[None]), Vec::<String>::new());
        // Comparing with a NULL literal drops every group.
        let null = Box::new(Expr::Literal(None));
        assert_eq!(groups(gt(col(1), null), &[]), Vec::<String>::new());
    }

    #[test]
    fn having_errors_are_reported() {
        let fields = [field("g", TEXT), field("sum", INT8)];
        let shards = [vec![vec![Some("a"), Some("1")]]];
        let mut p = grouped(vec![0], vec![aggregate(1, AggKind::Sum)]);
        p.aggregate.as_mut().unwrap().having = Some(Expr::Column(1));
        let err = run_with(p.clone(), &[], &[], &fields, &shards).unwrap_err();
        assert!(matches!(err, MergeError::Having(_)));
        p.aggregate.as_mut().unwrap().having = Some(Expr::Compare(
            CompareOp::Eq,
            col(1),
            Box::new(Expr::Param(3)),
        ));
        let err = run_with(p, &[], &[], &fields, &shards).unwrap_err();
        assert!(matches!(err, MergeError::Param { index: 3, .. }));
    }

    #[test]
    fn distinct_over_visible_columns() {
        let fields = [field("a", TEXT), field("b", INT4)];
        let mut p = plan();
        p.distinct = true;
        p.order_by = vec![asc(0), asc(1)];
        let out = run(
            p,
            &fields,
            &[
                vec![vec![Some("x"), Some("1")], vec![Some("y"), None]],
                vec![
                    vec![Some("x"), Some("1")],
                    vec![Some("y"), None],
                    vec![Some("x"), Some("2")],
                ],
            ],
        );
        assert_eq!(
            out,
            vec![
                vec![s("x"), s("1")],
                vec![s("x"), s("2")],
                vec![s("y"), None]
            ]
        );
    }

    #[test]
    fn aggregates_then_distinct_then_order_by_hidden_then_limit() {
        // SELECT g, count(*) ... GROUP BY g, h ORDER BY max(v) DESC LIMIT 2
        // with h and max(v) hidden helper columns.
        let fields = [
            field("g", TEXT),
            field("count", INT8),
            field("h", INT4),
            field("max", INT4),
        ];
        let mut p = grouped(
            vec![0, 2],
            vec![aggregate(1, AggKind::Count), aggregate(3, AggKind::Max)],
        );
        p.visible = 2;
        p.distinct = true;
        p.order_by = vec![desc(3)];
        p.limit = Some(Count::Literal(2));
        let out = run(
            p,
            &fields,
            &[
                vec![
                    vec![Some("a"), Some("1"), Some("1"), Some("5")],
                    vec![Some("b"), Some("1"), Some("1"), Some("7")],
                    vec![Some("c"), Some("3"), Some("1"), Some("1")],
                ],
                vec![
                    vec![Some("a"), Some("1"), Some("2"), Some("9")],
                    vec![Some("b"), Some("1"), Some("2"), Some("8")],
                ],
            ],
        );
        // Groups (a,1)=1/5 (b,1)=1/7 (c,1)=3/1 (a,2)=1/9 (b,2)=1/8; visible
        // (a,1) twice and (b,1) twice collapse to their first group.
        assert_eq!(out, vec![vec![s("b"), s("1")], vec![s("a"), s("1")]]);
    }

    #[test]
    fn group_key_keeps_the_first_raw_value() {
        // Byte-equal keys: text grouped exactly; the key column is raw.
        let fields = [field("g", TEXT), field("count", INT8)];
        let p = grouped(vec![0], vec![aggregate(1, AggKind::Count)]);
        let out = run(
            p,
            &fields,
            &[
                vec![vec![Some("k"), Some("1")]],
                vec![vec![Some("k"), Some("2")], vec![Some("K"), Some("1")]],
            ],
        );
        assert_eq!(out, vec![vec![s("k"), s("3")], vec![s("K"), s("1")]]);
    }

    #[test]
    fn random_bytes_never_panic() {
        let fields = [field("g", TEXT), field("n", INT8), field("k", INT4)];
        let mut p = grouped(vec![0], vec![aggregate(1, AggKind::Sum)]);
        p.order_by = vec![asc(2)];
        let good = row(&[Some("a"), Some("1"), Some("2")]);
        let mut seed = 11;
        for _ in 0..2000 {
            let mut merge = Merge::new(Rc::new(p.clone()), &[], &[]).unwrap();
            let mut body = description(&fields);
            if lcg(&mut seed) % 4 == 0 {
                let at = lcg(&mut seed) as usize % body.len();
                body[at] = lcg(&mut seed) as u8;
                body.truncate(lcg(&mut seed) as usize % (body.len() + 1));
            }
            let _ = merge.row_description(0, &body);
            let mut body = good.clone();
            for _ in 0..(lcg(&mut seed) % 3) {
                let at = lcg(&mut seed) as usize % body.len();
                body[at] = lcg(&mut seed) as u8;
            }
            body.truncate(lcg(&mut seed) as usize % (body.len() + 2));
            let _ = merge.data_row(0, &body);
            let _ = merge.finish(&mut BytesMut::new());
        }
    }

    #[test]
    fn numeric_group_keys_compare_by_value() {
        // 1.0 and 1.00 are one group; its key is printed as first seen.
        let fields = [field("g", 1700), field("count", INT8)];
        let p = grouped(vec![0], vec![aggregate(1, AggKind::Count)]);
        let out = run(
            p,
            &fields,
            &[
                vec![vec![Some("1.0"), Some("1")], vec![Some("2"), Some("1")]],
                vec![vec![Some("1.00"), Some("2")], vec![None, Some("4")]],
            ],
        );
        assert_eq!(
            out,
            vec![
                vec![s("1.0"), s("3")],
                vec![s("2"), s("1")],
                vec![None, s("4")]
            ]
        );
    }

    #[test]
    fn distinct_floats_by_value() {
        // -0 = 0 and NaN = NaN in Postgres's float comparison.
        let fields = [field("f", 701)];
        let mut p = plan();
        p.distinct = true;
        let out = run(
            p,
            &fields,
            &[vec![
                vec![Some("0")],
                vec![Some("-0")],
                vec![Some("NaN")],
                vec![Some("NaN")],
                vec![Some("1.5")],
            ]],
        );
        assert_eq!(out, vec![vec![s("0")], vec![s("NaN")], vec![s("1.5")]]);
    }

    #[test]
    fn client_description_before_any_shard_is_empty() {
        let merge = Merge::new(Rc::new(plan()), &[], &[]).unwrap();
        let mut out = BytesMut::new();
        merge.client_row_description(&mut out);
        assert_eq!(&out[..], &[b'T', 0, 0, 0, 6, 0, 0]);
    }
}

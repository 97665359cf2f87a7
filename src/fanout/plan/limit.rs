//! LIMIT and OFFSET of a cross-shard SELECT: the counts the merge applies
//! and the LIMIT every shard runs instead.
//!
//! The merge applies OFFSET then LIMIT to the merged rows, so a shard never
//! skips rows (it cannot know which are the first overall) and returns at
//! most `limit + offset` rows. A shard statement keeps every `$n` the
//! client's text had: the client binds as many parameters as its own text
//! holds, and Postgres must infer each one's type as it would for the
//! client's text (`LIMIT $1` and `$1::bigint` both make `$1` a bigint).
//! It must not evaluate parameters: a plan holds no bound values.

use pg_query::protobuf::{a_const, AConst, Node, SelectStmt};
use pg_query::NodeEnum;

use super::node::{cast, integer, null, operator};
use super::Count;
use crate::fanout::Unsupported;

/// One LIMIT or OFFSET as written.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Bound {
    /// Not written, `LIMIT ALL`, or NULL: no limit, or an offset of 0.
    Absent,
    Literal(u64),
    /// `$n` or `$n::type`; `node` is the expression as written.
    Param {
        index: usize,
        node: Box<Node>,
    },
}

impl Bound {
    /// Reads a LIMIT (`clause` = "LIMIT") or OFFSET expression.
    pub(super) fn read(node: Option<&Node>, clause: &str) -> Result<Bound, Unsupported> {
        let Some(inner) = node.and_then(|node| node.node.as_ref()) else {
            return Ok(Bound::Absent);
        };
        let unsupported = |what: String| Unsupported {
            what,
            hint: "write a non-negative integer or a $n parameter".to_string(),
        };
        match inner {
            NodeEnum::AConst(AConst { isnull: true, .. }) => Ok(Bound::Absent),
            NodeEnum::AConst(AConst { val: Some(val), .. }) => {
                let digits = match val {
                    a_const::Val::Ival(integer) => integer.ival.to_string(),
                    a_const::Val::Fval(float) => float.fval.clone(),
                    _ => String::new(),
                };
                match digits.parse::<u64>() {
                    Ok(value) if value <= i64::MAX as u64 => Ok(Bound::Literal(value)),
                    _ => Err(unsupported(format!("{clause} {digits}"))),
                }
            }
            NodeEnum::ParamRef(param) => param_bound(param.number, node),
            NodeEnum::TypeCast(cast) => match cast.arg.as_deref().and_then(|arg| arg.node.as_ref())
            {
                Some(NodeEnum::ParamRef(param)) => param_bound(param.number, node),
                _ => Err(unsupported(format!("this {clause} expression"))),
            },
            _ => Err(unsupported(format!("this {clause} expression"))),
        }
    }

    /// The count the merge applies to a LIMIT.
    pub(super) fn limit(&self) -> Option<Count> {
        match self {
            Bound::Absent => None,
            Bound::Literal(value) => Some(Count::Literal(*value)),
            Bound::Param { index, .. } => Some(Count::Param(*index)),
        }
    }

    /// The count the merge applies to an OFFSET (`OFFSET 0` is none).
    pub(super) fn offset(&self) -> Option<Count> {
        match self {
            Bound::Literal(0) => None,
            bound => bound.limit(),
        }
    }
}

fn param_bound(number: i32, node: Option<&Node>) -> Result<Bound, Unsupported> {
    let index = usize::try_from(number)
        .ok()
        .and_then(|number| number.checked_sub(1));
    match (index, node) {
        (Some(index), Some(node)) => Ok(Bound::Param {
            index,
            node: Box::new(node.clone()),
        }),
        _ => Err(Unsupported {
            what: format!("parameter ${number}"),
            hint: "parameters are numbered from $1".to_string(),
        }),
    }
}

/// The LIMIT every shard runs, set on `shard` (OFFSET is always removed).
/// `per_shard`: whether a shard may stop early at all; with aggregates,
/// GROUP BY or DISTINCT it may not, since a group's or a value's rows on
/// another shard would be cut. Returns whether the statement changed.
pub(super) fn rewrite(
    shard: &mut SelectStmt,
    limit: &Bound,
    offset: &Bound,
    per_shard: bool,
) -> bool {
    let unchanged = if per_shard {
        shard.limit_offset.is_none()
    } else {
        shard.limit_offset.is_none() && shard.limit_count.is_none()
    };
    if unchanged {
        return false;
    }
    // `None`: no limit (NULL), which is what a sum with a NULL term gives.
    let mut literal = Some(0u64);
    let mut params = Vec::new();
    if !per_shard {
        literal = None;
    }
    for (bound, is_limit) in [(limit, true), (offset, false)] {
        match bound {
            Bound::Absent if is_limit => literal = None,
            Bound::Absent => {}
            Bound::Literal(value) => {
                literal = literal
                    .and_then(|sum| sum.checked_add(*value))
                    .filter(|sum| *sum <= i64::MAX as u64);
            }
            Bound::Param { node, .. } => params.push(cast((**node).clone(), "int8")),
        }
    }
    shard.limit_offset = None;
    shard.limit_count = shard_limit(literal, params).map(Box::new);
    true
}

/// `$1::bigint + $2::bigint + 10`; with no limit but parameters,
/// `NULL::bigint + $1::bigint`, NULL at run time (the `+` of bigints is
/// strict), which LIMIT reads as no limit.
fn shard_limit(literal: Option<u64>, params: Vec<Node>) -> Option<Node> {
    let mut terms = params.into_iter();
    let Some(first) = terms.next() else {
        return literal.map(integer);
    };
    let start = match literal {
        None => operator("+", cast(null(), "int8"), first),
        Some(_) => first,
    };
    let sum = terms.fold(start, |sum, term| operator("+", sum, term));
    Some(match literal {
        Some(value) if value > 0 => operator("+", sum, integer(value)),
        _ => sum,
    })
}

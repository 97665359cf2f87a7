//! Aggregate calls in a cross-shard SELECT: which ones the merge can
//! combine, the per-shard partial columns each needs, and where else
//! aggregates and window functions hide in an expression.
//!
//! Aggregates are recognized by name (Postgres's built-in ones, bare or
//! `pg_catalog.`-qualified); a user-defined aggregate looks like any other
//! function here and is not detected. It must not look past a sub-select:
//! an aggregate there belongs to the sub-select.

use pg_query::protobuf::{FuncCall, Node};
use pg_query::NodeEnum;

use super::node::{cast, func_call, operator, text};
use super::AggKind;
use crate::fanout::Unsupported;

/// Built-in aggregates the merge cannot combine from per-shard values, or
/// that need more than one partial kind sleddog does not compute.
const OTHER_AGGREGATES: &[&str] = &[
    "any_value",
    "array_agg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "corr",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "dense_rank",
    "every",
    "json_agg",
    "json_agg_strict",
    "json_object_agg",
    "json_object_agg_strict",
    "json_object_agg_unique",
    "json_object_agg_unique_strict",
    "jsonb_agg",
    "jsonb_agg_strict",
    "jsonb_object_agg",
    "jsonb_object_agg_strict",
    "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict",
    "mode",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "range_agg",
    "range_intersect_agg",
    "rank",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "string_agg",
    "xmlagg",
];

/// What a function call is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Call {
    NotAggregate,
    Supported(AggKind),
    /// A built-in aggregate the merge cannot combine, by name.
    Other(String),
}

/// The call's name if it names a built-in function: unqualified or in
/// `pg_catalog`, lower-cased.
fn builtin_name(call: &FuncCall) -> Option<String> {
    let name = match call.funcname.as_slice() {
        [name] => text(name)?,
        [schema, name] if text(schema)?.eq_ignore_ascii_case("pg_catalog") => text(name)?,
        _ => return None,
    };
    Some(name.to_ascii_lowercase())
}

pub(super) fn classify(call: &FuncCall) -> Call {
    let Some(name) = builtin_name(call) else {
        return Call::NotAggregate;
    };
    let kind = match name.as_str() {
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "avg" => AggKind::Avg,
        "var_pop" => AggKind::VarPop,
        "var_samp" | "variance" => AggKind::VarSamp,
        "stddev_pop" => AggKind::StddevPop,
        "stddev_samp" | "stddev" => AggKind::StddevSamp,
        _ if OTHER_AGGREGATES.contains(&name.as_str()) || call.agg_within_group => {
            return Call::Other(name)
        }
        _ => return Call::NotAggregate,
    };
    Call::Supported(kind)
}

/// The call if the node itself is a function call (not one nested deeper).
pub(super) fn as_call(node: &Node) -> Option<&FuncCall> {
    match node.node.as_ref()? {
        NodeEnum::FuncCall(call) => Some(call),
        _ => None,
    }
}

/// Checks a call of a supported aggregate for the forms whose per-shard
/// values cannot be combined. FILTER is fine: every shard filters its own
/// rows, and the partial columns carry the same FILTER.
pub(super) fn check_supported(call: &FuncCall, kind: AggKind) -> Result<(), Unsupported> {
    let name = builtin_name(call).unwrap_or_default();
    if call.agg_distinct {
        return Err(Unsupported {
            what: format!("aggregates over DISTINCT ({name}(DISTINCT ...))"),
            hint: "compute it per shard with a sharding key, or select the distinct values \
                   and aggregate in the application"
                .to_string(),
        });
    }
    if !call.agg_order.is_empty() || call.agg_within_group {
        return Err(Unsupported {
            what: format!("ORDER BY inside an aggregate ({name})"),
            hint: Unsupported::route_hint(),
        });
    }
    let arity_ok = match kind {
        AggKind::Count if call.agg_star => call.args.is_empty(),
        _ => call.args.len() == 1 && !call.agg_star,
    };
    if !arity_ok || call.func_variadic {
        return Err(Unsupported {
            what: format!("this call of {name}"),
            hint: Unsupported::route_hint(),
        });
    }
    Ok(())
}

/// The per-shard helper expressions an aggregate's merged value is
/// computed from, in the order `AggregateColumn::partials` documents.
pub(super) fn partials(call: &FuncCall, kind: AggKind) -> Vec<Node> {
    let Some(arg) = call.args.first() else {
        return Vec::new();
    };
    let filter = || call.agg_filter.clone();
    let sum = || func_call("sum", vec![arg.clone()], filter());
    let count = || func_call("count", vec![arg.clone()], filter());
    match kind {
        AggKind::Count | AggKind::Sum | AggKind::Min | AggKind::Max => Vec::new(),
        AggKind::Avg => vec![sum(), count()],
        AggKind::VarPop | AggKind::VarSamp | AggKind::StddevPop | AggKind::StddevSamp => {
            let square = operator(
                "*",
                cast(arg.clone(), "numeric"),
                cast(arg.clone(), "numeric"),
            );
            vec![count(), sum(), func_call("sum", vec![square], filter())]
        }
    }
}

/// What a search of an expression for aggregate calls found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Found {
    Nothing,
    /// The first aggregate call, by name.
    Aggregate(String),
    /// A node kind this search does not descend into; it may hold one.
    Opaque,
}

/// Searches an expression for aggregate calls, not descending into
/// sub-selects (their aggregates are their own).
pub(super) fn find_aggregate(node: &Node) -> Found {
    let Some(inner) = node.node.as_ref() else {
        return Found::Nothing;
    };
    match inner {
        NodeEnum::FuncCall(call) => {
            if classify(call) != Call::NotAggregate {
                return Found::Aggregate(builtin_name(call).unwrap_or_default());
            }
            let children = call.args.iter().chain(&call.agg_order);
            first(children.chain(call.agg_filter.as_deref()))
        }
        NodeEnum::JsonArrayAgg(_) => Found::Aggregate("json_arrayagg".to_string()),
        NodeEnum::JsonObjectAgg(_) => Found::Aggregate("json_objectagg".to_string()),
        NodeEnum::AExpr(expr) => first(
            expr.lexpr
                .as_deref()
                .into_iter()
                .chain(expr.rexpr.as_deref()),
        ),
        NodeEnum::BoolExpr(expr) => first(&expr.args),
        NodeEnum::TypeCast(cast) => first(cast.arg.as_deref()),
        NodeEnum::CollateClause(collate) => first(collate.arg.as_deref()),
        NodeEnum::CaseExpr(case) => {
            let head = case
                .arg
                .as_deref()
                .into_iter()
                .chain(case.defresult.as_deref());
            first(head.chain(&case.args))
        }
        NodeEnum::CaseWhen(when) => first(
            when.expr
                .as_deref()
                .into_iter()
                .chain(when.result.as_deref()),
        ),
        NodeEnum::CoalesceExpr(expr) => first(&expr.args),
        NodeEnum::MinMaxExpr(expr) => first(&expr.args),
        NodeEnum::NullTest(test) => first(test.arg.as_deref()),
        NodeEnum::BooleanTest(test) => first(test.arg.as_deref()),
        NodeEnum::RowExpr(expr) => first(&expr.args),
        NodeEnum::AArrayExpr(expr) => first(&expr.elements),
        NodeEnum::AIndirection(indirection) => first(
            indirection
                .arg
                .as_deref()
                .into_iter()
                .chain(&indirection.indirection),
        ),
        NodeEnum::AIndices(indices) => first(
            indices
                .lidx
                .as_deref()
                .into_iter()
                .chain(indices.uidx.as_deref()),
        ),
        NodeEnum::NamedArgExpr(arg) => first(arg.arg.as_deref()),
        NodeEnum::XmlExpr(expr) => first(expr.named_args.iter().chain(&expr.args)),
        NodeEnum::List(list) => first(&list.items),
        NodeEnum::ResTarget(target) => first(target.val.as_deref()),
        NodeEnum::SortBy(sort) => first(sort.node.as_deref()),
        // The test expression of `x IN (SELECT ...)` is this query's.
        NodeEnum::SubLink(link) => first(link.testexpr.as_deref()),
        leaf if crate::router::tree::is_leaf(leaf) => Found::Nothing,
        _ => Found::Opaque,
    }
}

/// The first finding among several expressions: an aggregate wins over
/// an opaque node, so the error names it.
fn first<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Found {
    let mut found = Found::Nothing;
    for node in nodes {
        match find_aggregate(node) {
            Found::Nothing => {}
            Found::Aggregate(name) => return Found::Aggregate(name),
            Found::Opaque => found = Found::Opaque,
        }
    }
    found
}

/// Whether the statement uses a window function anywhere, sub-selects
/// included: each shard would number, rank or sum over its own rows only.
pub(super) fn has_window(statement: &NodeEnum) -> bool {
    statement.nodes().iter().any(|(node, ..)| match node {
        pg_query::NodeRef::FuncCall(call) => call.over.is_some(),
        pg_query::NodeRef::SelectStmt(select) => !select.window_clause.is_empty(),
        _ => false,
    })
}

//! Small readers and builders of pg_query tree nodes for the planner, and
//! the deparse that turns a rewritten tree back into SQL.
//!
//! It owns how an expression is compared (by its deparsed text, which
//! ignores token positions) and how new nodes are spelled; it must not
//! decide anything about the plan.

use pg_query::protobuf::{
    self, a_const, AConst, AExpr, AExprKind, BoolExpr, BoolExprType, CoercionForm, FuncCall, Node,
    ParseResult, RawStmt, ResTarget, SelectStmt, TypeCast, TypeName,
};
use pg_query::NodeEnum;

use crate::fanout::Unsupported;

/// pg_query marks nodes that come from no token with location -1.
const NO_LOCATION: i32 = -1;

pub(super) fn node(inner: NodeEnum) -> Node {
    Node { node: Some(inner) }
}

/// `name(args) FILTER (WHERE filter)`, unqualified like a client writes it.
pub(super) fn func_call(name: &str, args: Vec<Node>, filter: Option<Box<Node>>) -> Node {
    node(NodeEnum::FuncCall(Box::new(FuncCall {
        funcname: vec![string(name)],
        args,
        agg_filter: filter,
        funcformat: CoercionForm::CoerceExplicitCall as i32,
        location: NO_LOCATION,
        ..FuncCall::default()
    })))
}

/// `arg::pg_catalog.type_name` (deparsed as `arg::bigint` for `int8`).
pub(super) fn cast(arg: Node, type_name: &str) -> Node {
    node(NodeEnum::TypeCast(Box::new(TypeCast {
        arg: Some(Box::new(arg)),
        type_name: Some(TypeName {
            names: vec![string("pg_catalog"), string(type_name)],
            typemod: -1,
            location: NO_LOCATION,
            ..TypeName::default()
        }),
        location: NO_LOCATION,
    })))
}

/// `left op right` with a built-in operator.
pub(super) fn operator(op: &str, left: Node, right: Node) -> Node {
    node(NodeEnum::AExpr(Box::new(AExpr {
        kind: AExprKind::AexprOp as i32,
        name: vec![string(op)],
        lexpr: Some(Box::new(left)),
        rexpr: Some(Box::new(right)),
        location: NO_LOCATION,
        ..AExpr::default()
    })))
}

/// An integer literal; past `i32` the parser itself keeps digits as a
/// `Float` node, and deparse writes them back as they are.
pub(super) fn integer(value: u64) -> Node {
    let val = match i32::try_from(value) {
        Ok(ival) => a_const::Val::Ival(protobuf::Integer { ival }),
        Err(_) => a_const::Val::Fval(protobuf::Float {
            fval: value.to_string(),
        }),
    };
    constant(Some(val))
}

pub(super) fn null() -> Node {
    constant(None)
}

pub(super) fn boolean(value: bool) -> Node {
    constant(Some(a_const::Val::Boolval(protobuf::Boolean {
        boolval: value,
    })))
}

fn constant(val: Option<a_const::Val>) -> Node {
    node(NodeEnum::AConst(AConst {
        isnull: val.is_none(),
        location: NO_LOCATION,
        val,
    }))
}

pub(super) fn or(args: Vec<Node>) -> Node {
    node(NodeEnum::BoolExpr(Box::new(BoolExpr {
        xpr: None,
        boolop: BoolExprType::OrExpr as i32,
        args,
        location: NO_LOCATION,
    })))
}

/// A select-list entry `val AS name`.
pub(super) fn res_target(val: Node, name: String) -> Node {
    node(NodeEnum::ResTarget(Box::new(ResTarget {
        name,
        indirection: Vec::new(),
        val: Some(Box::new(val)),
        location: NO_LOCATION,
    })))
}

fn string(text: &str) -> Node {
    node(NodeEnum::String(protobuf::String {
        sval: text.to_string(),
    }))
}

/// A `String` node's text.
pub(super) fn text(node: &Node) -> Option<&str> {
    match node.node.as_ref()? {
        NodeEnum::String(text) => Some(&text.sval),
        _ => None,
    }
}

/// The bare name of an unqualified column reference (`x`, not `t.x`).
pub(super) fn bare_name(node: &Node) -> Option<&str> {
    match node.node.as_ref()? {
        NodeEnum::ColumnRef(column) if column.fields.len() == 1 => text(&column.fields[0]),
        _ => None,
    }
}

/// An integer constant, as in `ORDER BY 2` or `GROUP BY 1`.
pub(super) fn position(node: &Node) -> Option<i32> {
    match node.node.as_ref()? {
        NodeEnum::AConst(AConst {
            val: Some(a_const::Val::Ival(integer)),
            ..
        }) => Some(integer.ival),
        _ => None,
    }
}

/// Whether a select-list entry is `*`, `t.*` or `(expr).*`: its columns
/// are known only from the RowDescription.
pub(super) fn is_star(target: &ResTarget) -> bool {
    let Some(val) = target.val.as_ref().and_then(|val| val.node.as_ref()) else {
        return false;
    };
    let last_is_star = |fields: &[Node]| {
        fields
            .last()
            .is_some_and(|last| matches!(last.node, Some(NodeEnum::AStar(_))))
    };
    match val {
        NodeEnum::ColumnRef(column) => last_is_star(&column.fields),
        NodeEnum::AIndirection(indirection) => last_is_star(&indirection.indirection),
        _ => false,
    }
}

/// The column name Postgres gives a select-list entry: its alias, else a
/// name figured from the expression (a column's last name, a function's
/// name, a cast's argument). `None` where Postgres says `?column?`.
pub(super) fn output_name(target: &ResTarget) -> Option<String> {
    if !target.name.is_empty() {
        return Some(target.name.clone());
    }
    figured_name(target.val.as_deref()?)
}

fn figured_name(node: &Node) -> Option<String> {
    match node.node.as_ref()? {
        NodeEnum::ColumnRef(column) => column.fields.last().and_then(text).map(str::to_string),
        NodeEnum::FuncCall(call) => call.funcname.last().and_then(text).map(str::to_string),
        NodeEnum::TypeCast(cast) => cast.arg.as_deref().and_then(figured_name),
        _ => None,
    }
}

/// A comparable key for an expression: its deparsed text. Two spellings
/// of the same tree (spacing, case of keywords) get the same key; token
/// positions, which the tree records, do not count.
pub(super) fn key(expression: &Node) -> Result<String, Unsupported> {
    let select = SelectStmt {
        target_list: vec![res_target(expression.clone(), String::new())],
        limit_option: protobuf::LimitOption::Default as i32,
        op: protobuf::SetOperation::SetopNone as i32,
        ..SelectStmt::default()
    };
    deparse(select, None)
}

/// The SQL of a rewritten SELECT. Comments of the client's text (a hint
/// like `/*+ IndexScan(t) */`) are carried over where pg_query can place
/// them.
pub(super) fn deparse(select: SelectStmt, sql: Option<&str>) -> Result<String, Unsupported> {
    let comments = sql
        .and_then(|sql| pg_query::deparse_comments_for_query(sql).ok())
        .unwrap_or_default();
    let tree = ParseResult {
        version: 0,
        stmts: vec![RawStmt {
            stmt: Some(Box::new(node(NodeEnum::SelectStmt(Box::new(select))))),
            stmt_location: 0,
            stmt_len: 0,
        }],
    };
    let options = pg_query::DeparseOptions {
        comments,
        ..pg_query::DeparseOptions::default()
    };
    pg_query::deparse(&tree, options).map_err(|error| Unsupported {
        what: format!("this query (it could not be rewritten for the shards: {error})"),
        hint: Unsupported::route_hint(),
    })
}

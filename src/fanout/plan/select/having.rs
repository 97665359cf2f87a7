//! HAVING of a cross-shard SELECT as an [`Expr`] the merge evaluates on
//! each merged group. Its aggregates and group-key columns become (or
//! reuse) columns of the shard row; it must not accept an expression the
//! merge could not evaluate the way Postgres does.

use pg_query::protobuf::{a_const, AConst, AExprKind, BoolExprType, Node, NullTestType};
use pg_query::NodeEnum;

use super::super::node::{self, key};
use super::super::{ArithmeticOp, CompareOp, Expr};
use super::Planner;
use crate::fanout::Unsupported;

impl Planner<'_> {
    /// HAVING as a condition over merged columns.
    pub(super) fn having(&mut self, condition: &Node) -> Result<Expr, Unsupported> {
        let Some(inner) = condition.node.as_ref() else {
            return Err(unsupported_having());
        };
        match inner {
            NodeEnum::AExpr(expr) if AExprKind::try_from(expr.kind) == Ok(AExprKind::AexprOp) => {
                let (Some(left), Some(right), [name]) = (
                    expr.lexpr.as_deref(),
                    expr.rexpr.as_deref(),
                    expr.name.as_slice(),
                ) else {
                    return Err(unsupported_having());
                };
                let operator = node::text(name).unwrap_or_default();
                let (left, right) = (Box::new(self.having(left)?), Box::new(self.having(right)?));
                if let Some(op) = compare_op(operator) {
                    Ok(Expr::Compare(op, left, right))
                } else if let Some(op) = arithmetic_op(operator) {
                    Ok(Expr::Arithmetic(op, left, right))
                } else {
                    Err(unsupported_having())
                }
            }
            NodeEnum::BoolExpr(expr) => {
                let args = expr
                    .args
                    .iter()
                    .map(|arg| self.having(arg))
                    .collect::<Result<Vec<_>, _>>()?;
                match (
                    BoolExprType::try_from(expr.boolop),
                    <[Expr; 1]>::try_from(args),
                ) {
                    (Ok(BoolExprType::NotExpr), Ok([arg])) => Ok(Expr::Not(Box::new(arg))),
                    (Ok(BoolExprType::AndExpr), Err(args)) => Ok(Expr::And(args)),
                    (Ok(BoolExprType::OrExpr), Err(args)) => Ok(Expr::Or(args)),
                    _ => Err(unsupported_having()),
                }
            }
            NodeEnum::NullTest(test) if !test.argisrow => {
                let arg = test.arg.as_deref().ok_or_else(unsupported_having)?;
                let is_null = match NullTestType::try_from(test.nulltesttype) {
                    Ok(NullTestType::IsNull) => true,
                    Ok(NullTestType::IsNotNull) => false,
                    _ => return Err(unsupported_having()),
                };
                Ok(Expr::IsNull(Box::new(self.having(arg)?), is_null))
            }
            NodeEnum::AConst(constant) => literal(constant),
            NodeEnum::ParamRef(param) => usize::try_from(param.number)
                .ok()
                .and_then(|number| number.checked_sub(1))
                .map(Expr::Param)
                .ok_or_else(unsupported_having),
            // Postgres allows only group keys here: one more key column
            // splits no group.
            NodeEnum::ColumnRef(_) => {
                let column = self.column(condition, "HAVING")?;
                self.add_group_key(column);
                Ok(Expr::Column(column))
            }
            _ => {
                if let Some(column) = self.aggregate(condition, "HAVING")? {
                    return Ok(Expr::Column(column));
                }
                // Another expression of the group keys counts only when it
                // is one the shard row already has.
                match self.column_of(condition, &key(condition)?)? {
                    Some(column) => Ok(Expr::Column(column)),
                    None => Err(unsupported_having()),
                }
            }
        }
    }
}

fn compare_op(operator: &str) -> Option<CompareOp> {
    Some(match operator {
        "=" => CompareOp::Eq,
        "<>" | "!=" => CompareOp::NotEq,
        "<" => CompareOp::Less,
        "<=" => CompareOp::LessEq,
        ">" => CompareOp::Greater,
        ">=" => CompareOp::GreaterEq,
        _ => return None,
    })
}

fn arithmetic_op(operator: &str) -> Option<ArithmeticOp> {
    Some(match operator {
        "+" => ArithmeticOp::Add,
        "-" => ArithmeticOp::Subtract,
        "*" => ArithmeticOp::Multiply,
        "/" => ArithmeticOp::Divide,
        _ => return None,
    })
}

/// A constant as written: `5`, `2.5`, `'abc'`, `true`, NULL.
fn literal(constant: &AConst) -> Result<Expr, Unsupported> {
    let text = match &constant.val {
        _ if constant.isnull => return Ok(Expr::Literal(None)),
        Some(a_const::Val::Ival(integer)) => integer.ival.to_string(),
        Some(a_const::Val::Fval(float)) => float.fval.clone(),
        Some(a_const::Val::Sval(text)) => text.sval.clone(),
        Some(a_const::Val::Boolval(boolean)) => boolean.boolval.to_string(),
        Some(a_const::Val::Bsval(_)) | None => return Err(unsupported_having()),
    };
    Ok(Expr::Literal(Some(text)))
}

fn unsupported_having() -> Unsupported {
    Unsupported {
        what: "this HAVING expression".to_string(),
        hint: "HAVING may compare aggregates, group keys, constants and $n with = <> < <= > >=, \
               + - * /, AND, OR, NOT and IS [NOT] NULL; or send it to one shard"
            .to_string(),
    }
}

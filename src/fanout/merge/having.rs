//! HAVING over one merged group, with SQL's three-valued logic: NULL
//! compared or combined with anything is NULL, `AND`/`OR` follow the truth
//! tables ("functions-logical"), and a group is kept only when the condition
//! is true. Parameters take the type of the column they meet, as Postgres
//! infers a `$n`'s type from its context. No rows, no aggregation.

use super::MergeError;
use crate::fanout::datum::{self, ColumnType, Datum, DatumError};
use crate::fanout::plan::{CompareOp, Expr};

/// One Bind parameter value as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ParamValue {
    Null,
    Text(Vec<u8>),
    Binary(Vec<u8>),
}

/// A HAVING condition ready to test groups.
pub(super) struct Having<'a> {
    expr: &'a Expr,
    types: &'a [ColumnType],
    params: &'a [ParamValue],
}

impl<'a> Having<'a> {
    pub fn new(expr: &'a Expr, types: &'a [ColumnType], params: &'a [ParamValue]) -> Self {
        Having {
            expr,
            types,
            params,
        }
    }

    /// Whether the group whose column values `column` decodes is kept.
    pub fn holds<F>(&self, column: F) -> Result<bool, MergeError>
    where
        F: Fn(usize) -> Result<Datum, DatumError>,
    {
        let value = self.eval(self.expr, None, &column)?;
        Ok(truth(&value, "HAVING")? == Some(true))
    }

    /// `hint`: the type of what the expression is compared or combined
    /// with, for a parameter.
    fn eval<F>(
        &self,
        expr: &Expr,
        hint: Option<ColumnType>,
        column: &F,
    ) -> Result<Datum, MergeError>
    where
        F: Fn(usize) -> Result<Datum, DatumError>,
    {
        Ok(match expr {
            Expr::Column(c) => column(*c)?,
            Expr::Literal(None) => Datum::Null,
            Expr::Literal(Some(text)) => datum::literal(text),
            Expr::Param(index) => self.param(*index, hint)?,
            Expr::Compare(op, a, b) => {
                let (a, b) = self.operands(a, b, column)?;
                if matches!(a, Datum::Null) || matches!(b, Datum::Null) {
                    return Ok(Datum::Null);
                }
                let order = datum::compare_mixed(&a, &b).ok_or_else(|| {
                    MergeError::Having(format!("cannot compare {a:?} with {b:?}"))
                })?;
                Datum::Bool(match op {
                    CompareOp::Eq => order.is_eq(),
                    CompareOp::NotEq => order.is_ne(),
                    CompareOp::Less => order.is_lt(),
                    CompareOp::LessEq => order.is_le(),
                    CompareOp::Greater => order.is_gt(),
                    CompareOp::GreaterEq => order.is_ge(),
                })
            }
            Expr::Arithmetic(op, a, b) => {
                let (a, b) = self.operands(a, b, column)?;
                if matches!(a, Datum::Null) || matches!(b, Datum::Null) {
                    return Ok(Datum::Null);
                }
                datum::arithmetic(*op, &a, &b)?
            }
            Expr::And(items) => self.fold(items, false, column, "AND")?,
            Expr::Or(items) => self.fold(items, true, column, "OR")?,
            Expr::Not(item) => {
                let value = self.eval(item, Some(BOOL), column)?;
                match truth(&value, "NOT")? {
                    Some(b) => Datum::Bool(!b),
                    None => Datum::Null,
                }
            }
            Expr::IsNull(item, is_null) => {
                let value = self.eval(item, None, column)?;
                Datum::Bool(matches!(value, Datum::Null) == *is_null)
            }
        })
    }

    /// Both sides of a comparison or arithmetic, each typed by the other.
    fn operands<F>(&self, a: &Expr, b: &Expr, column: &F) -> Result<(Datum, Datum), MergeError>
    where
        F: Fn(usize) -> Result<Datum, DatumError>,
    {
        let a_value = self.eval(a, self.type_of(b), column)?;
        let b_value = self.eval(b, self.type_of(a), column)?;
        Ok((a_value, b_value))
    }

    /// `AND` (`short` false) or `OR` (`short` true): `short` wins outright,
    /// otherwise any NULL makes the result NULL.
    fn fold<F>(
        &self,
        items: &[Expr],
        short: bool,
        column: &F,
        what: &str,
    ) -> Result<Datum, MergeError>
    where
        F: Fn(usize) -> Result<Datum, DatumError>,
    {
        let mut unknown = false;
        for item in items {
            let value = self.eval(item, Some(BOOL), column)?;
            match truth(&value, what)? {
                Some(b) if b == short => return Ok(Datum::Bool(short)),
                Some(_) => {}
                None => unknown = true,
            }
        }
        Ok(if unknown {
            Datum::Null
        } else {
            Datum::Bool(!short)
        })
    }

    /// The column type an expression has, if it involves a column.
    fn type_of(&self, expr: &Expr) -> Option<ColumnType> {
        match expr {
            Expr::Column(c) => self.types.get(*c).copied(),
            Expr::Arithmetic(_, a, b) => self.type_of(a).or_else(|| self.type_of(b)),
            Expr::Compare(..) | Expr::And(_) | Expr::Or(_) | Expr::Not(_) | Expr::IsNull(..) => {
                Some(BOOL)
            }
            Expr::Literal(_) | Expr::Param(_) => None,
        }
    }

    /// A parameter's value, decoded as the type it meets (text without one
    /// reads like a literal; binary without one is an error).
    fn param(&self, index: usize, hint: Option<ColumnType>) -> Result<Datum, MergeError> {
        let missing = || MergeError::Param {
            index,
            reason: "no value bound".to_string(),
        };
        match (self.params.get(index).ok_or_else(missing)?, hint) {
            (ParamValue::Null, _) => Ok(Datum::Null),
            (ParamValue::Text(text), Some(ty)) => Ok(datum::decode(
                ColumnType {
                    oid: ty.oid,
                    binary: false,
                },
                Some(text),
            )?),
            (ParamValue::Text(text), None) => {
                let text = std::str::from_utf8(text).map_err(|_| MergeError::Param {
                    index,
                    reason: "text value is not UTF-8".to_string(),
                })?;
                Ok(datum::literal(text))
            }
            (ParamValue::Binary(bytes), Some(ty)) => Ok(datum::decode(
                ColumnType {
                    oid: ty.oid,
                    binary: true,
                },
                Some(bytes),
            )?),
            (ParamValue::Binary(_), None) => Err(MergeError::Param {
                index,
                reason: "a binary value whose type HAVING cannot infer".to_string(),
            }),
        }
    }
}

const BOOL: ColumnType = ColumnType {
    oid: 16,
    binary: false,
};

/// A boolean operand: `None` is NULL (unknown).
fn truth(value: &Datum, what: &str) -> Result<Option<bool>, MergeError> {
    match value {
        Datum::Bool(b) => Ok(Some(*b)),
        Datum::Null => Ok(None),
        other => Err(MergeError::Having(format!(
            "argument of {what} must be boolean, not {other:?}"
        ))),
    }
}

//! The plan of one cross-shard SELECT: the SQL every shard runs and how the
//! merge combines their rows. Built once per statement text from pg_query's
//! parse tree and cached with the text; holds no parameter values.
//!
//! [`plan_select`] is the planner; its parts live in `plan/`: `select` (the
//! analysis of one SELECT), `aggregate` (which aggregates merge, their
//! partial columns), `limit` (LIMIT/OFFSET on the shards) and `node` (tree
//! builders and deparse). It must not decide routing: the caller has
//! already chosen to send the statement to several shards.

mod aggregate;
mod limit;
mod node;
mod select;

use std::rc::Rc;

use pg_query::protobuf::{ParseResult, SelectStmt, SetOperation};
use pg_query::NodeEnum;

use crate::fanout::Unsupported;

/// `MergePlan::visible` for a select list with `*` or `t.*`: the client
/// sees every column of the shards' RowDescription. Such a plan has no
/// helper columns (their position would not be known).
pub const ALL_COLUMNS: usize = usize::MAX;

/// What to send every shard and how to merge.
#[derive(Debug, Clone, PartialEq)]
pub struct FanoutQuery {
    /// The SQL every shard runs; `None` when it is the client's text as is.
    pub shard_sql: Option<String>,
    /// `None`: rows stream straight through (no ORDER BY, LIMIT, OFFSET,
    /// aggregate, GROUP BY or DISTINCT).
    pub merge: Option<Rc<MergePlan>>,
}

/// How shard rows become the client's rows. Column numbers index a shard's
/// row (0-based): the client's columns first, then helper columns.
#[derive(Debug, Clone, PartialEq)]
pub struct MergePlan {
    /// The client sees columns `0..visible`; the rest are stripped.
    /// [`ALL_COLUMNS`] with `*` in the select list: all of them.
    pub visible: usize,
    pub aggregate: Option<AggregatePlan>,
    /// `SELECT DISTINCT` over the visible columns (after aggregation).
    pub distinct: bool,
    /// Applied after aggregation and DISTINCT.
    pub order_by: Vec<SortKey>,
    /// Under `SELECT *`, sort keys the select list does not place: the
    /// column named `sort_names[i]` is `SortKey::column == NAMED_COLUMN + i`,
    /// found by name in the shards' RowDescription.
    pub sort_names: Vec<String>,
    pub offset: Option<Count>,
    pub limit: Option<Count>,
}

/// GROUP BY and aggregates; also a query with aggregates and no GROUP BY
/// (one group, present even when no shard had rows).
#[derive(Debug, Clone, PartialEq)]
pub struct AggregatePlan {
    /// Columns whose values form the group key.
    pub group_by: Vec<usize>,
    pub aggregates: Vec<AggregateColumn>,
    /// Evaluated on each merged group; a group is kept when it is true.
    pub having: Option<Expr>,
}

/// One aggregate column of the shard row and the helper columns its
/// merged value is computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateColumn {
    pub column: usize,
    pub kind: AggKind,
    /// `Count`, `Sum`, `Min`, `Max`: empty (the column itself merges).
    /// `Avg`: [sum(x), count(x)].
    /// A partial may also be a column of its own (`SELECT sum(x), avg(x)`
    /// reuses column 0): partials are read from each shard's row as it
    /// came, before any merging.
    /// Variance and stddev: [count(x), sum(x), sum(x::numeric * x::numeric)].
    pub partials: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    /// `var_pop`.
    VarPop,
    /// `var_samp` and `variance`.
    VarSamp,
    /// `stddev_pop`.
    StddevPop,
    /// `stddev_samp` and `stddev`.
    StddevSamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub column: usize,
    pub descending: bool,
    /// Postgres's default: NULLS FIRST for DESC, NULLS LAST for ASC.
    pub nulls_first: bool,
}

/// The first `SortKey::column` that names a column by `sort_names`.
pub const NAMED_COLUMN: usize = usize::MAX / 2;

/// A LIMIT or OFFSET count: a literal, or a parameter bound at Bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Literal(u64),
    /// `$n`, as a 0-based parameter index.
    Param(usize),
}

/// A HAVING condition over a merged group.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A shard-row column after merging (an aggregate or a group key).
    Column(usize),
    /// A constant as written in the SQL (`5`, `2.5`, `'abc'`), or NULL.
    Literal(Option<String>),
    /// `$n`, 0-based.
    Param(usize),
    Compare(CompareOp, Box<Expr>, Box<Expr>),
    Arithmetic(ArithmeticOp, Box<Expr>, Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// `IS NULL` (`false`: `IS NOT NULL`).
    IsNull(Box<Expr>, bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    NotEq,
    Less,
    LessEq,
    Greater,
    GreaterEq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithmeticOp {
    Add,
    Subtract,
    Multiply,
    Divide,
}

/// Plans one cross-shard SELECT: `None`s when the rows can stream through,
/// else the merge and, when the shards must run something else than the
/// client's text, their SQL. `sql` is the client's text (its comments are
/// kept in the rewritten SQL).
pub fn plan_select(parsed: &ParseResult, sql: &str) -> Result<FanoutQuery, Unsupported> {
    let [raw] = parsed.stmts.as_slice() else {
        return Err(select::route("several statements in one query"));
    };
    let Some(statement) = raw.stmt.as_deref().and_then(|stmt| stmt.node.as_ref()) else {
        return Err(select::route("an empty statement"));
    };
    let NodeEnum::SelectStmt(select) = statement else {
        return Err(select::route("a statement other than SELECT"));
    };
    if select.into_clause.is_some() {
        return Err(select::route("SELECT INTO"));
    }
    if aggregate::has_window(statement) {
        return Err(select::route("window functions"));
    }
    if SetOperation::try_from(select.op) != Ok(SetOperation::SetopNone) {
        set_operation(select)?;
        return Ok(FanoutQuery {
            shard_sql: None,
            merge: None,
        });
    }
    select::plan(select, sql)
}

/// A text of several statements for several shards: each statement's
/// results go to the client as the shards send them, so every SELECT among
/// them must be one that needs no merge (no ORDER BY, LIMIT, aggregate,
/// GROUP BY or DISTINCT). Err otherwise, or when one could not be answered
/// across shards at all.
pub fn plan_statements(parsed: &ParseResult, sql: &str) -> Result<FanoutQuery, Unsupported> {
    for raw in &parsed.stmts {
        let node = raw.stmt.as_deref().and_then(|stmt| stmt.node.as_ref());
        let Some(NodeEnum::SelectStmt(select)) = node else {
            continue;
        };
        if select.into_clause.is_some() {
            continue;
        }
        let one = ParseResult {
            version: parsed.version,
            stmts: vec![raw.clone()],
        };
        let planned = plan_select(&one, sql)?;
        if planned.merge.is_some() || planned.shard_sql.is_some() {
            return Err(Unsupported {
                what: "a SELECT that needs merging (ORDER BY, LIMIT, aggregates, GROUP BY, \
                       DISTINCT) among other statements of one query"
                    .to_owned(),
                hint: "send it as a query of its own".to_owned(),
            });
        }
    }
    Ok(FanoutQuery {
        shard_sql: None,
        merge: None,
    })
}

/// A set operation streams only as UNION ALL of selects that stream
/// themselves; UNION, INTERSECT and EXCEPT compare rows of different
/// shards, and ORDER BY or LIMIT over the union would need a merge of
/// arms whose columns this planner does not analyze.
fn set_operation(select: &SelectStmt) -> Result<(), Unsupported> {
    let what = match SetOperation::try_from(select.op) {
        Ok(SetOperation::SetopNone) => {
            return match select::streams(select)? {
                true => Ok(()),
                false => Err(select::route(
                    "UNION ALL of selects with ORDER BY, LIMIT, OFFSET, aggregates, GROUP BY \
                     or DISTINCT",
                )),
            };
        }
        Ok(SetOperation::SetopUnion) if select.all => None,
        Ok(SetOperation::SetopUnion) => Some("UNION (without ALL)"),
        Ok(SetOperation::SetopIntersect) => Some("INTERSECT"),
        Ok(SetOperation::SetopExcept) => Some("EXCEPT"),
        _ => Some("this set operation"),
    };
    if let Some(what) = what {
        return Err(select::route(what));
    }
    if !select.sort_clause.is_empty()
        || select.limit_count.is_some()
        || select.limit_offset.is_some()
    {
        return Err(select::route("ORDER BY, LIMIT or OFFSET on a UNION ALL"));
    }
    for arm in [&select.larg, &select.rarg].into_iter().flatten() {
        set_operation(arm)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sql: &str) -> Result<FanoutQuery, Unsupported> {
        let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).unwrap();
        plan_select(&parsed.protobuf, sql)
    }

    /// The shard SQL and the merge plan of a query that needs a merge.
    fn merged(sql: &str) -> (Option<String>, MergePlan) {
        let query = plan(sql).unwrap();
        let merge = query.merge.expect("a merge plan");
        (query.shard_sql, Rc::unwrap_or_clone(merge))
    }

    fn rejected(sql: &str) -> Unsupported {
        plan(sql).expect_err("unsupported")
    }

    #[test]
    fn several_statements_fan_out_only_when_every_select_streams() {
        let several = |sql: &str| {
            let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).unwrap();
            plan_statements(&parsed.protobuf, sql)
        };
        let streams = several("select id from t where v > 1; update t set v = 2; select * from u")
            .expect("every result streams");
        assert!(streams.merge.is_none() && streams.shard_sql.is_none());
        for sql in [
            "select 1; select count(*) from t",
            "select v from t order by v; delete from t",
            "select v from t limit 1; select 2",
            "select distinct v from t; select 2",
            "select 1; select row_number() over () from t",
        ] {
            let refused = several(sql).expect_err(sql);
            assert!(!refused.hint.is_empty(), "{sql}");
        }
    }

    fn aggregate_of(plan: &MergePlan) -> &AggregatePlan {
        plan.aggregate.as_ref().expect("an aggregate plan")
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

    fn agg(column: usize, kind: AggKind, partials: &[usize]) -> AggregateColumn {
        AggregateColumn {
            column,
            kind,
            partials: partials.to_vec(),
        }
    }

    fn col(column: usize) -> Box<Expr> {
        Box::new(Expr::Column(column))
    }

    fn lit(text: &str) -> Box<Expr> {
        Box::new(Expr::Literal(Some(text.to_string())))
    }

    const STREAM: FanoutQuery = FanoutQuery {
        shard_sql: None,
        merge: None,
    };

    // Streaming.

    #[test]
    fn plain_selects_stream() {
        for sql in [
            "SELECT id, name FROM users WHERE active",
            "SELECT * FROM users",
            "SELECT id FROM users FOR UPDATE",
            "SELECT id FROM users LIMIT ALL",
            "SELECT id FROM users LIMIT NULL OFFSET 0",
            "SELECT other.sum(x) FROM t",
            "SELECT id FROM a UNION ALL SELECT id FROM b UNION ALL SELECT id FROM c",
            "VALUES (1), (2)",
        ] {
            assert_eq!(plan(sql), Ok(STREAM), "{sql}");
        }
    }

    // ORDER BY.

    #[test]
    fn order_by_a_selected_column_needs_no_rewrite() {
        for sql in [
            "SELECT id, name FROM users ORDER BY 2",
            "SELECT id, name FROM users ORDER BY name",
            "SELECT id, lower(name) AS n FROM users ORDER BY n",
            "SELECT id, users.name FROM users ORDER BY name",
            "SELECT id, lower(name) FROM users ORDER BY lower( name )",
            "SELECT id, count FROM users ORDER BY count",
        ] {
            let (shard_sql, plan) = merged(sql);
            assert_eq!(shard_sql, None, "{sql}");
            assert_eq!(plan.visible, 2, "{sql}");
            assert_eq!(plan.order_by, vec![asc(1)], "{sql}");
            assert_eq!(plan.aggregate, None);
            assert_eq!(
                (plan.limit, plan.offset, plan.distinct),
                (None, None, false)
            );
        }
    }

    #[test]
    fn order_by_another_column_appends_a_helper_column() {
        let (shard_sql, plan) = merged("SELECT id FROM users ORDER BY name, lower(email) DESC");
        assert_eq!(
            shard_sql.as_deref(),
            Some(
                "SELECT id, name AS _sleddog_1, lower(email) AS _sleddog_2 FROM users \
                 ORDER BY name, lower(email) DESC"
            )
        );
        assert_eq!(plan.visible, 1);
        assert_eq!(plan.order_by, vec![asc(1), desc(2)]);
    }

    #[test]
    fn order_by_directions_and_nulls_follow_postgres_defaults() {
        let (_, plan) = merged(
            "SELECT a, b, c, d, e FROM t \
             ORDER BY a, b ASC, c DESC, d ASC NULLS FIRST, e DESC NULLS LAST",
        );
        let key = |column, descending, nulls_first| SortKey {
            column,
            descending,
            nulls_first,
        };
        assert_eq!(
            plan.order_by,
            vec![
                key(0, false, false),
                key(1, false, false),
                key(2, true, true),
                key(3, false, true),
                key(4, true, false),
            ]
        );
    }

    #[test]
    fn order_by_using_and_bad_positions_are_rejected() {
        let error = rejected("SELECT a FROM t ORDER BY a USING <");
        assert_eq!(error.what, "ORDER BY ... USING");
        assert_eq!(error.hint, Unsupported::route_hint());
        let error = rejected("SELECT a, b FROM t ORDER BY 3");
        assert_eq!(error.what, "ORDER BY position 3");
        assert_eq!(error.hint, "the select list has 2 columns");
        assert_eq!(
            rejected("SELECT a FROM t ORDER BY 0").what,
            "ORDER BY position 0"
        );
    }

    // LIMIT and OFFSET.

    #[test]
    fn limit_alone_runs_unchanged_on_the_shards() {
        let (shard_sql, plan) = merged("SELECT id FROM users LIMIT 10");
        assert_eq!(shard_sql, None);
        assert_eq!(plan.limit, Some(Count::Literal(10)));
        assert_eq!(plan.offset, None);
        assert!(plan.order_by.is_empty());
        let (shard_sql, plan) = merged("SELECT id FROM users ORDER BY id LIMIT $1");
        assert_eq!(shard_sql, None);
        assert_eq!(plan.limit, Some(Count::Param(0)));
    }

    #[test]
    fn shards_get_limit_plus_offset_and_no_offset() {
        let (shard_sql, plan) = merged("SELECT id FROM users ORDER BY id LIMIT 10 OFFSET 20");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT id FROM users ORDER BY id LIMIT 30")
        );
        assert_eq!(plan.limit, Some(Count::Literal(10)));
        assert_eq!(plan.offset, Some(Count::Literal(20)));
        let (shard_sql, _) = merged("SELECT id FROM users ORDER BY id OFFSET 5 LIMIT 3000000000");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT id FROM users ORDER BY id LIMIT 3000000005")
        );
    }

    #[test]
    fn parameters_stay_in_the_shard_limit_as_bigints() {
        let (shard_sql, plan) = merged("SELECT id FROM users ORDER BY id LIMIT $1 OFFSET $2");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT id FROM users ORDER BY id LIMIT $1::bigint + $2::bigint")
        );
        assert_eq!(plan.limit, Some(Count::Param(0)));
        assert_eq!(plan.offset, Some(Count::Param(1)));
        let (shard_sql, _) = merged("SELECT id FROM users ORDER BY id LIMIT $1 OFFSET 5");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT id FROM users ORDER BY id LIMIT $1::bigint + 5")
        );
        let (shard_sql, plan) = merged("SELECT id FROM users ORDER BY id LIMIT $1::int OFFSET 1");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT id FROM users ORDER BY id LIMIT $1::int::bigint + 1")
        );
        assert_eq!(plan.limit, Some(Count::Param(0)));
    }

    #[test]
    fn offset_alone_is_removed_from_the_shards() {
        let (shard_sql, plan) = merged("SELECT id FROM users ORDER BY id OFFSET 5");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT id FROM users ORDER BY id")
        );
        assert_eq!((plan.limit, plan.offset), (None, Some(Count::Literal(5))));
        // A parameter must stay: the client binds it. NULL + $1 is NULL,
        // no limit.
        let (shard_sql, plan) = merged("SELECT id FROM users OFFSET $1");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT id FROM users LIMIT NULL::bigint + $1::bigint")
        );
        assert_eq!((plan.limit, plan.offset), (None, Some(Count::Param(0))));
        let (shard_sql, _) = merged("SELECT id FROM users LIMIT ALL OFFSET 2");
        assert_eq!(shard_sql.as_deref(), Some("SELECT id FROM users"));
    }

    #[test]
    fn fetch_first_is_a_limit() {
        let (shard_sql, plan) =
            merged("SELECT id FROM users ORDER BY id OFFSET 2 ROWS FETCH FIRST 3 ROWS ONLY");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT id FROM users ORDER BY id LIMIT 5")
        );
        assert_eq!(plan.limit, Some(Count::Literal(3)));
        let (_, plan) = merged("SELECT id FROM users FETCH FIRST ROW ONLY");
        assert_eq!(plan.limit, Some(Count::Literal(1)));
    }

    #[test]
    fn a_limit_past_bigint_leaves_the_shards_unlimited() {
        let (shard_sql, plan) =
            merged("SELECT id FROM users ORDER BY id LIMIT 9223372036854775807 OFFSET 1");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT id FROM users ORDER BY id")
        );
        assert_eq!(plan.limit, Some(Count::Literal(9_223_372_036_854_775_807)));
    }

    #[test]
    fn unusual_limits_are_rejected() {
        let error = rejected("SELECT id FROM t ORDER BY id FETCH FIRST 3 ROWS WITH TIES");
        assert_eq!(error.what, "FETCH FIRST ... WITH TIES");
        assert_eq!(rejected("SELECT id FROM t LIMIT -1").what, "LIMIT -1");
        assert_eq!(rejected("SELECT id FROM t OFFSET 1.5").what, "OFFSET 1.5");
        let error = rejected("SELECT id FROM t LIMIT 1 + 1");
        assert_eq!(error.what, "this LIMIT expression");
        assert_eq!(error.hint, "write a non-negative integer or a $n parameter");
        let error = rejected("SELECT id FROM t OFFSET (SELECT 1)");
        assert_eq!(error.what, "this OFFSET expression");
    }

    // Aggregates.

    #[test]
    fn count_sum_min_max_merge_their_own_column() {
        let (shard_sql, plan) =
            merged("SELECT count(*), count(x), sum(x), min(x), max(x) FROM t WHERE y > 1");
        assert_eq!(shard_sql, None);
        assert_eq!(plan.visible, 5);
        let aggregate = aggregate_of(&plan);
        assert_eq!(aggregate.group_by, Vec::<usize>::new());
        assert_eq!(
            aggregate.aggregates,
            vec![
                agg(0, AggKind::Count, &[]),
                agg(1, AggKind::Count, &[]),
                agg(2, AggKind::Sum, &[]),
                agg(3, AggKind::Min, &[]),
                agg(4, AggKind::Max, &[]),
            ]
        );
        assert_eq!(aggregate.having, None);
    }

    #[test]
    fn avg_gets_sum_and_count_helpers() {
        let (shard_sql, plan) = merged("SELECT avg(price) FROM items");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT avg(price), sum(price) AS _sleddog_1, count(price) AS _sleddog_2 FROM items")
        );
        assert_eq!(plan.visible, 1);
        assert_eq!(
            aggregate_of(&plan).aggregates,
            vec![agg(0, AggKind::Avg, &[1, 2])]
        );
    }

    #[test]
    fn variance_and_stddev_get_count_sum_and_sum_of_squares() {
        let (shard_sql, plan) = merged("SELECT variance(x) FROM t");
        assert_eq!(
            shard_sql.as_deref(),
            Some(
                "SELECT variance(x), count(x) AS _sleddog_1, sum(x) AS _sleddog_2, \
                 sum(x::numeric * x::numeric) AS _sleddog_3 FROM t"
            )
        );
        assert_eq!(
            aggregate_of(&plan).aggregates,
            vec![agg(0, AggKind::VarSamp, &[1, 2, 3])]
        );
        for (name, kind) in [
            ("var_samp", AggKind::VarSamp),
            ("var_pop", AggKind::VarPop),
            ("stddev", AggKind::StddevSamp),
            ("stddev_samp", AggKind::StddevSamp),
            ("stddev_pop", AggKind::StddevPop),
        ] {
            let (_, plan) = merged(&format!("SELECT {name}(x) FROM t"));
            assert_eq!(
                aggregate_of(&plan).aggregates,
                vec![agg(0, kind, &[1, 2, 3])]
            );
        }
        // An expression argument is parenthesized where the cast needs it.
        let (shard_sql, _) = merged("SELECT stddev_pop(a + b) FROM t");
        assert_eq!(
            shard_sql.as_deref(),
            Some(
                "SELECT stddev_pop(a + b), count(a + b) AS _sleddog_1, sum(a + b) AS _sleddog_2, \
                 sum((a + b)::numeric * (a + b)::numeric) AS _sleddog_3 FROM t"
            )
        );
    }

    #[test]
    fn helper_columns_are_reused() {
        let (shard_sql, plan) =
            merged("SELECT count(x), avg(x), sum(x), stddev(x), var_pop(x) FROM t");
        assert_eq!(
            shard_sql.as_deref(),
            Some(
                "SELECT count(x), avg(x), sum(x), stddev(x), var_pop(x), \
                 sum(x::numeric * x::numeric) AS _sleddog_5 FROM t"
            )
        );
        assert_eq!(
            aggregate_of(&plan).aggregates,
            vec![
                agg(0, AggKind::Count, &[]),
                agg(1, AggKind::Avg, &[2, 0]),
                agg(2, AggKind::Sum, &[]),
                agg(3, AggKind::StddevSamp, &[0, 2, 5]),
                agg(4, AggKind::VarPop, &[0, 2, 5]),
            ]
        );
    }

    #[test]
    fn filter_is_kept_on_the_helpers() {
        let (shard_sql, plan) = merged("SELECT avg(x) FILTER (WHERE y > 0), sum(x) FROM t");
        assert_eq!(
            shard_sql.as_deref(),
            Some(
                "SELECT avg(x) FILTER (WHERE y > 0), sum(x), sum(x) FILTER (WHERE y > 0) \
                 AS _sleddog_2, count(x) FILTER (WHERE y > 0) AS _sleddog_3 FROM t"
            )
        );
        assert_eq!(
            aggregate_of(&plan).aggregates,
            vec![agg(0, AggKind::Avg, &[2, 3]), agg(1, AggKind::Sum, &[])]
        );
    }

    #[test]
    fn aggregate_names_ignore_case_and_pg_catalog() {
        let (_, plan) = merged("SELECT COUNT(*), pg_catalog.Sum(x), PG_CATALOG.max(x) FROM t");
        assert_eq!(
            aggregate_of(&plan).aggregates,
            vec![
                agg(0, AggKind::Count, &[]),
                agg(1, AggKind::Sum, &[]),
                agg(2, AggKind::Max, &[]),
            ]
        );
    }

    #[test]
    fn aggregates_inside_expressions_are_rejected() {
        for (sql, name) in [
            ("SELECT sum(x) + 1 FROM t", "sum"),
            ("SELECT count(*) * 2 FROM t", "count"),
            ("SELECT round(avg(x), 2) FROM t", "avg"),
            ("SELECT coalesce(max(x), 0) FROM t GROUP BY y", "max"),
            ("SELECT y FROM t GROUP BY y ORDER BY count(*) + 1", "count"),
        ] {
            let error = rejected(sql);
            assert!(
                error
                    .what
                    .starts_with(&format!("an aggregate inside an expression ({name}(...)")),
                "{sql}: {}",
                error.what
            );
        }
    }

    #[test]
    fn expressions_the_search_cannot_see_into_are_rejected_next_to_aggregates() {
        let error = rejected("SELECT json_object('k': y), count(*) FROM t GROUP BY y");
        assert_eq!(
            error.what,
            "this expression next to aggregates (in the select list)"
        );
        // Without aggregates they stream like any other expression.
        assert_eq!(plan("SELECT json_object('k': y) FROM t"), Ok(STREAM));
    }

    #[test]
    fn distinct_and_ordered_aggregates_are_rejected() {
        let error = rejected("SELECT count(DISTINCT x) FROM t");
        assert_eq!(error.what, "aggregates over DISTINCT (count(DISTINCT ...))");
        assert_eq!(
            error.hint,
            "compute it per shard with a sharding key, or select the distinct values and \
             aggregate in the application"
        );
        let error = rejected("SELECT sum(x ORDER BY y) FROM t");
        assert_eq!(error.what, "ORDER BY inside an aggregate (sum)");
    }

    #[test]
    fn other_aggregates_are_rejected_by_name() {
        for (sql, name) in [
            ("SELECT string_agg(x, ',') FROM t", "string_agg"),
            ("SELECT array_agg(x) FROM t", "array_agg"),
            ("SELECT y, bool_and(x) FROM t GROUP BY y", "bool_and"),
            ("SELECT json_agg(t) FROM t", "json_agg"),
            (
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t",
                "percentile_cont",
            ),
            ("SELECT y FROM t GROUP BY y HAVING every(x)", "every"),
            ("SELECT y FROM t GROUP BY y ORDER BY bit_or(x)", "bit_or"),
        ] {
            let error = rejected(sql);
            assert_eq!(error.what, format!("the aggregate {name}()"), "{sql}");
            assert_eq!(error.hint, Unsupported::route_hint());
        }
        assert_eq!(
            rejected("SELECT upper(string_agg(x, ',')) FROM t").what,
            "an aggregate inside an expression (string_agg(...) in the select list)"
        );
    }

    #[test]
    fn shards_get_no_limit_with_aggregates() {
        let (shard_sql, plan) = merged("SELECT y, count(*) FROM t GROUP BY y LIMIT 5 OFFSET 1");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT y, count(*) FROM t GROUP BY y")
        );
        assert_eq!(
            (plan.limit, plan.offset),
            (Some(Count::Literal(5)), Some(Count::Literal(1)))
        );
        let (shard_sql, plan) = merged("SELECT y, count(*) FROM t GROUP BY y LIMIT $1");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT y, count(*) FROM t GROUP BY y LIMIT NULL::bigint + $1::bigint")
        );
        assert_eq!(plan.limit, Some(Count::Param(0)));
    }

    // GROUP BY.

    #[test]
    fn group_by_name_position_alias_or_expression() {
        for sql in [
            "SELECT y, count(*) FROM t GROUP BY y",
            "SELECT y, count(*) FROM t GROUP BY 1",
            "SELECT t.y, count(*) FROM t GROUP BY y",
            "SELECT date_trunc('day', ts) AS day, count(*) FROM t GROUP BY day",
            "SELECT date_trunc('day', ts), count(*) FROM t GROUP BY date_trunc('day', ts)",
        ] {
            let (shard_sql, plan) = merged(sql);
            assert_eq!(shard_sql, None, "{sql}");
            let aggregate = aggregate_of(&plan);
            assert_eq!(aggregate.group_by, vec![0], "{sql}");
            assert_eq!(
                aggregate.aggregates,
                vec![agg(1, AggKind::Count, &[])],
                "{sql}"
            );
        }
    }

    #[test]
    fn group_by_a_column_not_selected_appends_it() {
        let (shard_sql, plan) = merged("SELECT count(*) FROM t GROUP BY y, z");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT count(*), y AS _sleddog_1, z AS _sleddog_2 FROM t GROUP BY y, z")
        );
        assert_eq!(plan.visible, 1);
        assert_eq!(aggregate_of(&plan).group_by, vec![1, 2]);
    }

    #[test]
    fn other_select_list_columns_are_group_keys() {
        let (shard_sql, plan) = merged("SELECT y + 1, 'k', sum(x) FROM t GROUP BY y");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT y + 1, 'k', sum(x), y AS _sleddog_3 FROM t GROUP BY y")
        );
        assert_eq!(aggregate_of(&plan).group_by, vec![3, 0, 1]);
    }

    #[test]
    fn grouping_sets_and_star_with_aggregates_are_rejected() {
        for sql in [
            "SELECT y, count(*) FROM t GROUP BY ROLLUP (y)",
            "SELECT y, count(*) FROM t GROUP BY CUBE (y)",
            "SELECT y, count(*) FROM t GROUP BY GROUPING SETS ((y), ())",
        ] {
            assert_eq!(
                rejected(sql).what,
                "GROUPING SETS, ROLLUP and CUBE",
                "{sql}"
            );
        }
        assert_eq!(
            rejected("SELECT * FROM t GROUP BY id").what,
            "* in a query with aggregates or GROUP BY"
        );
    }

    // HAVING.

    #[test]
    fn having_becomes_an_expression_over_columns() {
        let (shard_sql, plan) = merged(
            "SELECT y, count(*) FROM t GROUP BY y \
             HAVING count(*) > 5 AND (avg(x) <= $1 OR NOT y IS NULL) AND sum(x) - 1 <> 2.5",
        );
        assert_eq!(
            shard_sql.as_deref(),
            Some(
                "SELECT y, count(*), avg(x) AS _sleddog_2, sum(x) AS _sleddog_3, \
                 count(x) AS _sleddog_4 FROM t GROUP BY y \
                 HAVING (count(*) > 5 AND (avg(x) <= $1 OR NOT y IS NULL) AND sum(x) - 1 <> 2.5) \
                 OR true"
            )
        );
        let aggregate = aggregate_of(&plan);
        assert_eq!(aggregate.group_by, vec![0]);
        assert_eq!(
            aggregate.aggregates,
            vec![
                agg(1, AggKind::Count, &[]),
                agg(2, AggKind::Avg, &[3, 4]),
                agg(3, AggKind::Sum, &[]),
            ]
        );
        let expected = Expr::And(vec![
            Expr::Compare(CompareOp::Greater, col(1), lit("5")),
            Expr::Or(vec![
                Expr::Compare(CompareOp::LessEq, col(2), Box::new(Expr::Param(0))),
                Expr::Not(Box::new(Expr::IsNull(col(0), true))),
            ]),
            Expr::Compare(
                CompareOp::NotEq,
                Box::new(Expr::Arithmetic(ArithmeticOp::Subtract, col(3), lit("1"))),
                lit("2.5"),
            ),
        ]);
        assert_eq!(aggregate.having, Some(expected));
    }

    #[test]
    fn having_literals_and_operators() {
        let (_, plan) = merged(
            "SELECT y FROM t GROUP BY y, bool_col HAVING max(z) = 'abc' OR max(w) IS NOT NULL \
             OR min(x) * 2 / 3 + 1 >= NULL OR bool_col = true",
        );
        let aggregate = aggregate_of(&plan);
        assert_eq!(aggregate.group_by, vec![0, 1]);
        let arithmetic = |op, left, right| Box::new(Expr::Arithmetic(op, left, right));
        let expected = Expr::Or(vec![
            Expr::Compare(CompareOp::Eq, col(2), lit("abc")),
            Expr::IsNull(col(3), false),
            Expr::Compare(
                CompareOp::GreaterEq,
                arithmetic(
                    ArithmeticOp::Add,
                    arithmetic(
                        ArithmeticOp::Divide,
                        arithmetic(ArithmeticOp::Multiply, col(4), lit("2")),
                        lit("3"),
                    ),
                    lit("1"),
                ),
                Box::new(Expr::Literal(None)),
            ),
            Expr::Compare(CompareOp::Eq, col(1), lit("true")),
        ]);
        assert_eq!(aggregate.having, Some(expected));
    }

    #[test]
    fn having_without_group_by_keeps_the_shards_grouped() {
        let (shard_sql, plan) = merged("SELECT 1 FROM t HAVING count(*) > 0");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT 1, count(*) AS _sleddog_1 FROM t HAVING count(*) > 0 OR true")
        );
        let aggregate = aggregate_of(&plan);
        assert_eq!(aggregate.group_by, vec![0]);
        assert_eq!(aggregate.aggregates, vec![agg(1, AggKind::Count, &[])]);
    }

    #[test]
    fn other_having_expressions_are_rejected() {
        for sql in [
            "SELECT y FROM t GROUP BY y HAVING max(z) LIKE 'a%'",
            "SELECT y FROM t GROUP BY y HAVING abs(sum(x)) > 1",
            "SELECT y FROM t GROUP BY y HAVING sum(x) BETWEEN 1 AND 2",
            "SELECT y FROM t GROUP BY y HAVING sum(x) > 1::numeric",
            "SELECT y FROM t GROUP BY y HAVING sum(x) IN (1, 2)",
            "SELECT y FROM t GROUP BY y HAVING -sum(x) > 1",
        ] {
            let error = rejected(sql);
            assert_eq!(error.what, "this HAVING expression", "{sql}");
            assert!(error.hint.contains("IS [NOT] NULL"));
        }
    }

    #[test]
    fn order_by_an_aggregate_or_group_key_not_selected() {
        let (shard_sql, plan) =
            merged("SELECT y, sum(x) FROM t GROUP BY y, z ORDER BY count(*) DESC, z, sum(x)");
        assert_eq!(
            shard_sql.as_deref(),
            Some(
                "SELECT y, sum(x), z AS _sleddog_2, count(*) AS _sleddog_3 FROM t \
                 GROUP BY y, z ORDER BY count(*) DESC, z, sum(x)"
            )
        );
        assert_eq!(plan.order_by, vec![desc(3), asc(2), asc(1)]);
        let aggregate = aggregate_of(&plan);
        assert_eq!(aggregate.group_by, vec![0, 2]);
        assert_eq!(
            aggregate.aggregates,
            vec![agg(1, AggKind::Sum, &[]), agg(3, AggKind::Count, &[])]
        );
        let (_, plan) = merged("SELECT y FROM t GROUP BY y ORDER BY lower(y)");
        assert_eq!(aggregate_of(&plan).group_by, vec![0, 1]);
    }

    // DISTINCT.

    #[test]
    fn distinct_keeps_distinct_on_the_shards_and_drops_their_limit() {
        let (shard_sql, plan) = merged("SELECT DISTINCT a, b FROM t ORDER BY b LIMIT 3");
        assert_eq!(
            shard_sql.as_deref(),
            Some("SELECT DISTINCT a, b FROM t ORDER BY b")
        );
        assert!(plan.distinct);
        assert_eq!(plan.aggregate, None);
        assert_eq!(plan.order_by, vec![asc(1)]);
        assert_eq!(plan.limit, Some(Count::Literal(3)));
        let error = rejected("SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b");
        assert_eq!(error.what, "DISTINCT ON");
    }

    // SELECT *.

    #[test]
    fn star_without_helper_columns_shows_all_columns() {
        let (shard_sql, plan) = merged("SELECT * FROM t LIMIT 5 OFFSET 5");
        assert_eq!(shard_sql.as_deref(), Some("SELECT * FROM t LIMIT 10"));
        assert_eq!(plan.visible, ALL_COLUMNS);
        let (shard_sql, plan) = merged("SELECT a, t.* FROM t ORDER BY 1, a, 2 DESC");
        assert_eq!(shard_sql, None);
        assert_eq!(plan.visible, ALL_COLUMNS);
        assert_eq!(plan.order_by, vec![asc(0), asc(0), desc(1)]);
        let (_, plan) = merged("SELECT DISTINCT * FROM t");
        assert!(plan.distinct);
        assert_eq!(plan.visible, ALL_COLUMNS);
    }

    #[test]
    fn star_sorts_by_name_and_rejects_positions_it_cannot_place() {
        // The column's place in `*` is known only from the RowDescription.
        for (sql, name) in [
            ("SELECT * FROM t ORDER BY id LIMIT 10", "id"),
            ("SELECT *, a AS b FROM t ORDER BY b", "b"),
            ("SELECT * FROM t u ORDER BY u.id DESC", "id"),
        ] {
            let merge = plan(sql).unwrap().merge.unwrap();
            assert_eq!(merge.sort_names, vec![name.to_string()], "{sql}");
            assert_eq!(merge.order_by[0].column, NAMED_COLUMN, "{sql}");
            assert_eq!(merge.visible, ALL_COLUMNS, "{sql}");
        }
        let error = rejected("SELECT a, * FROM t ORDER BY 3");
        assert_eq!(error.what, "ORDER BY 3 after a * in the select list");
        let error = rejected("SELECT * FROM t ORDER BY lower(name)");
        assert_eq!(
            error.what,
            "SELECT * with ORDER BY on a column it does not list by name"
        );
    }

    // Everything else.

    #[test]
    fn window_functions_are_rejected_anywhere() {
        for sql in [
            "SELECT row_number() OVER () FROM t",
            "SELECT x FROM t ORDER BY rank() OVER (ORDER BY x)",
            "SELECT * FROM (SELECT sum(x) OVER w FROM t WINDOW w AS (PARTITION BY y)) s",
            "SELECT x FROM t WHERE x IN (SELECT lag(x) OVER () FROM u)",
        ] {
            let error = rejected(sql);
            assert_eq!(error.what, "window functions", "{sql}");
            assert_eq!(error.hint, Unsupported::route_hint());
        }
    }

    #[test]
    fn set_operations_other_than_plain_union_all_are_rejected() {
        for (sql, what) in [
            (
                "SELECT a FROM t UNION SELECT a FROM u",
                "UNION (without ALL)",
            ),
            ("SELECT a FROM t INTERSECT SELECT a FROM u", "INTERSECT"),
            ("SELECT a FROM t EXCEPT ALL SELECT a FROM u", "EXCEPT"),
            (
                "SELECT a FROM t UNION ALL SELECT a FROM u ORDER BY 1",
                "ORDER BY, LIMIT or OFFSET on a UNION ALL",
            ),
            (
                "SELECT a FROM t UNION ALL SELECT a FROM u LIMIT 1",
                "ORDER BY, LIMIT or OFFSET on a UNION ALL",
            ),
            (
                "SELECT count(*) FROM t UNION ALL SELECT 1",
                "UNION ALL of selects with ORDER BY, LIMIT, OFFSET, aggregates, GROUP BY or \
                 DISTINCT",
            ),
            (
                "SELECT 1 UNION ALL (SELECT a FROM u ORDER BY a LIMIT 1)",
                "UNION ALL of selects with ORDER BY, LIMIT, OFFSET, aggregates, GROUP BY or \
                 DISTINCT",
            ),
        ] {
            assert_eq!(rejected(sql).what, what, "{sql}");
        }
    }

    #[test]
    fn only_one_select_is_planned() {
        assert_eq!(
            rejected("SELECT 1; SELECT 2").what,
            "several statements in one query"
        );
        assert_eq!(
            rejected("DELETE FROM t").what,
            "a statement other than SELECT"
        );
        assert_eq!(rejected("SELECT * INTO u FROM t").what, "SELECT INTO");
        assert_eq!(
            rejected("VALUES (1), (2) ORDER BY 1").what,
            "VALUES with ORDER BY, LIMIT or OFFSET"
        );
    }

    #[test]
    fn comments_survive_the_rewrite() {
        let (shard_sql, _) =
            merged("/*+ IndexScan(t) */ SELECT x FROM t ORDER BY y LIMIT 5 OFFSET 1 -- end");
        assert_eq!(
            shard_sql.as_deref(),
            Some("/*+ IndexScan(t) */ SELECT x, y AS _sleddog_1 FROM t ORDER BY y LIMIT 6 -- end")
        );
    }
}

//! The plan of one cross-shard SELECT: the SQL every shard runs and how the
//! merge combines their rows. Built once per statement text from pg_query's
//! parse tree and cached with the text; holds no parameter values.

/// What to send every shard and how to merge.
#[derive(Debug, Clone, PartialEq)]
pub struct FanoutQuery {
    /// The SQL every shard runs; `None` when it is the client's text as is.
    pub shard_sql: Option<String>,
    /// `None`: rows stream straight through (no ORDER BY, LIMIT, OFFSET,
    /// aggregate, GROUP BY or DISTINCT).
    pub merge: Option<MergePlan>,
}

/// How shard rows become the client's rows. Column numbers index a shard's
/// row (0-based): the client's columns first, then helper columns.
#[derive(Debug, Clone, PartialEq)]
pub struct MergePlan {
    /// The client sees columns `0..visible`; the rest are stripped.
    pub visible: usize,
    pub aggregate: Option<AggregatePlan>,
    /// `SELECT DISTINCT` over the visible columns (after aggregation).
    pub distinct: bool,
    /// Applied after aggregation and DISTINCT.
    pub order_by: Vec<SortKey>,
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

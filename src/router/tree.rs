//! Classification from pg_query's parse tree: which statements write, what
//! transaction control the first one does, whether all are session commands,
//! and `SET`/`RESET pgdog.role`.
//!
//! It owns the statement-kind rules; it must not look at the text (the
//! lexer does: hints, function names) and must not panic on any tree
//! pg_query returns. Statement kinds it does not know are writes: a new
//! kind of utility statement is far more likely to change something than
//! to be a plain read, and the primary can always run it.

use pg_query::protobuf::{
    self, a_const, DiscardMode, Node, SelectStmt, TransactionStmtKind, VariableSetKind,
    VariableSetStmt,
};
use pg_query::NodeEnum;

use super::classified::{Access, Role, RoleSetting, Transaction};
use super::lex::is_write_function;

/// What the tree says about a whole query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TreeFacts {
    pub write: bool,
    pub statements: u32,
    pub transaction: Option<Transaction>,
    pub session_command: bool,
    pub role_setting: Option<RoleSetting>,
    /// A query held an expression node the walk does not descend into, so
    /// a locking clause inside a sub-select there could have been missed.
    pub incomplete: bool,
}

/// One statement's facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Statement {
    write: bool,
    transaction: Option<Transaction>,
    session_command: bool,
    role_setting: Option<RoleSetting>,
    incomplete: bool,
}

impl Statement {
    fn write() -> Self {
        Statement {
            write: true,
            ..Statement::default()
        }
    }

    fn session() -> Self {
        Statement {
            session_command: true,
            ..Statement::default()
        }
    }

    /// The statement inside EXPLAIN, PREPARE, DECLARE CURSOR or COPY (...)
    /// TO: classified like a statement of its own, but only its intent
    /// counts (`EXPLAIN BEGIN` is not transaction control).
    fn inner(node: Option<&Node>) -> Self {
        match node.and_then(|node| node.node.as_ref()) {
            Some(node) => {
                let inner = statement(node);
                Statement {
                    write: inner.write,
                    incomplete: inner.incomplete,
                    ..Statement::default()
                }
            }
            None => Statement::default(),
        }
    }
}

/// Combines the statements of one parse: a write if any writes, the first
/// statement's transaction control, the last `pgdog.role` setting.
pub(crate) fn classify_tree(result: &protobuf::ParseResult) -> TreeFacts {
    let mut facts = TreeFacts {
        session_command: !result.stmts.is_empty(),
        ..TreeFacts::default()
    };
    for (index, raw) in result.stmts.iter().enumerate() {
        let statement = match raw.stmt.as_deref().and_then(|node| node.node.as_ref()) {
            Some(node) => statement(node),
            None => Statement::default(),
        };
        facts.statements += 1;
        facts.write |= statement.write;
        facts.incomplete |= statement.incomplete;
        facts.session_command &= statement.session_command;
        if index == 0 {
            facts.transaction = statement.transaction;
        }
        if statement.role_setting.is_some() {
            facts.role_setting = statement.role_setting;
        }
    }
    facts
}

fn statement(node: &NodeEnum) -> Statement {
    match node {
        NodeEnum::SelectStmt(select) => {
            let mut walk = Walk::default();
            walk.select(select);
            Statement {
                write: walk.write,
                incomplete: walk.incomplete,
                ..Statement::default()
            }
        }
        NodeEnum::ExplainStmt(explain) => Statement::inner(explain.query.as_deref()),
        NodeEnum::PrepareStmt(prepare) => Statement::inner(prepare.query.as_deref()),
        NodeEnum::DeclareCursorStmt(declare) => Statement::inner(declare.query.as_deref()),
        NodeEnum::CopyStmt(copy) if copy.is_from => Statement::write(),
        NodeEnum::CopyStmt(copy) => Statement::inner(copy.query.as_deref()),
        NodeEnum::TransactionStmt(stmt) => transaction(stmt),
        NodeEnum::VariableSetStmt(set) => variable_set(set),
        NodeEnum::VariableShowStmt(_) | NodeEnum::DeallocateStmt(_) => Statement::session(),
        NodeEnum::DiscardStmt(discard) => {
            let mut statement = Statement::session();
            if DiscardMode::try_from(discard.target) == Ok(DiscardMode::DiscardAll) {
                statement.role_setting = Some(RoleSetting::Reset { local: false });
            }
            statement
        }
        // Reads that change nothing but must reach the server holding the
        // cursor or the transaction; the relay keeps them there.
        NodeEnum::FetchStmt(_) | NodeEnum::ClosePortalStmt(_) | NodeEnum::ConstraintsSetStmt(_) => {
            Statement::default()
        }
        // DML, DDL, CALL, DO, VACUUM, ANALYZE, CLUSTER, REINDEX, LOCK,
        // LISTEN/UNLISTEN/NOTIFY, REFRESH MATERIALIZED VIEW, CHECKPOINT,
        // EXECUTE (its statement is not known here), LOAD, and any kind
        // this list does not name.
        _ => Statement::write(),
    }
}

fn transaction(stmt: &protobuf::TransactionStmt) -> Statement {
    let chain = stmt.chain;
    let (control, write) = match TransactionStmtKind::try_from(stmt.kind) {
        Ok(TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart) => {
            (Transaction::Begin(access_of(&stmt.options)), false)
        }
        Ok(TransactionStmtKind::TransStmtCommit) => (Transaction::Commit { chain }, false),
        Ok(TransactionStmtKind::TransStmtRollback) => (Transaction::Rollback { chain }, false),
        Ok(TransactionStmtKind::TransStmtSavepoint) => (Transaction::Savepoint, false),
        Ok(TransactionStmtKind::TransStmtRelease) => (Transaction::ReleaseSavepoint, false),
        Ok(TransactionStmtKind::TransStmtRollbackTo) => (Transaction::RollbackToSavepoint, false),
        Ok(TransactionStmtKind::TransStmtPrepare) => (Transaction::PrepareTransaction, true),
        Ok(TransactionStmtKind::TransStmtCommitPrepared) => (Transaction::CommitPrepared, true),
        Ok(TransactionStmtKind::TransStmtRollbackPrepared) => (Transaction::RollbackPrepared, true),
        Ok(TransactionStmtKind::Undefined) | Err(_) => return Statement::write(),
    };
    Statement {
        write,
        transaction: Some(control),
        ..Statement::default()
    }
}

/// The access mode among transaction modes: a `DefElem` named
/// `transaction_read_only` holding 1 (READ ONLY) or 0 (READ WRITE). When
/// several are given, PostgreSQL lets the last one win.
fn access_of(options: &[Node]) -> Access {
    let mut access = Access::Default;
    for option in options {
        if let Some(NodeEnum::DefElem(def)) = &option.node {
            if def.defname == "transaction_read_only" {
                access = match def.arg.as_deref().and_then(truth) {
                    Some(true) => Access::ReadOnly,
                    Some(false) => Access::ReadWrite,
                    None => access,
                };
            }
        }
    }
    access
}

/// A constant read as a boolean the way GUCs read one ("config-setting" in
/// the PostgreSQL docs: on/off, true/false, yes/no, 1/0 and prefixes).
fn truth(node: &Node) -> Option<bool> {
    let NodeEnum::AConst(constant) = node.node.as_ref()? else {
        return None;
    };
    match constant.val.as_ref()? {
        a_const::Val::Ival(integer) => Some(integer.ival != 0),
        a_const::Val::Boolval(boolean) => Some(boolean.boolval),
        a_const::Val::Sval(text) => {
            let lower = text.sval.to_ascii_lowercase();
            match lower.as_str() {
                "on" | "t" | "tr" | "tru" | "true" | "y" | "ye" | "yes" | "1" => Some(true),
                "of" | "off" | "f" | "fa" | "fal" | "fals" | "false" | "n" | "no" | "0" => {
                    Some(false)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn variable_set(set: &VariableSetStmt) -> Statement {
    let kind = VariableSetKind::try_from(set.kind);
    let local = set.is_local;
    if kind == Ok(VariableSetKind::VarSetMulti) && set.name.eq_ignore_ascii_case("transaction") {
        let control = Transaction::SetAccess(access_of(&set.args));
        return Statement {
            transaction: Some(control),
            ..Statement::default()
        };
    }
    if kind == Ok(VariableSetKind::VarSetMulti)
        && set.name.eq_ignore_ascii_case("transaction snapshot")
    {
        // Only valid at the start of a transaction already open; not a
        // session setting. It sets up the transaction like SET TRANSACTION
        // (and a standby cannot import a snapshot its primary exported).
        return Statement {
            transaction: Some(Transaction::SetAccess(Access::Default)),
            ..Statement::default()
        };
    }
    if kind == Ok(VariableSetKind::VarSetValue)
        && set.name.eq_ignore_ascii_case("transaction_read_only")
    {
        let access = match set.args.first().and_then(truth) {
            Some(true) => Access::ReadOnly,
            Some(false) => Access::ReadWrite,
            None => Access::Default,
        };
        return Statement {
            transaction: Some(Transaction::SetAccess(access)),
            ..Statement::default()
        };
    }
    let mut statement = Statement::session();
    if kind == Ok(VariableSetKind::VarResetAll) {
        statement.role_setting = Some(RoleSetting::Reset { local: false });
    } else if set.name.eq_ignore_ascii_case("pgdog.role") {
        statement.role_setting = Some(match kind {
            Ok(VariableSetKind::VarSetValue) => match set.args.first().and_then(role_value) {
                Some(role) => RoleSetting::Set { role, local },
                None => RoleSetting::Invalid { local },
            },
            Ok(VariableSetKind::VarSetDefault | VariableSetKind::VarReset) => {
                RoleSetting::Reset { local }
            }
            _ => RoleSetting::Invalid { local },
        });
    }
    statement
}

fn role_value(node: &Node) -> Option<Role> {
    let NodeEnum::AConst(constant) = node.node.as_ref()? else {
        return None;
    };
    let Some(a_const::Val::Sval(text)) = constant.val.as_ref() else {
        return None;
    };
    if text.sval.eq_ignore_ascii_case("primary") {
        Some(Role::Primary)
    } else if text.sval.eq_ignore_ascii_case("replica") {
        Some(Role::Replica)
    } else {
        None
    }
}

/// A walk over a query for what makes it a write: a data-modifying
/// statement (in a CTE), a locking clause, `SELECT INTO`, or a call to a
/// write function. It descends into sub-selects wherever the common
/// expression nodes hold them.
#[derive(Debug, Default)]
struct Walk {
    write: bool,
    incomplete: bool,
}

impl Walk {
    fn list(&mut self, nodes: &[Node]) {
        for node in nodes {
            if self.write {
                return;
            }
            self.node(node);
        }
    }

    fn opt(&mut self, node: Option<&Node>) {
        if let Some(node) = node {
            self.node(node);
        }
    }

    fn select(&mut self, select: &SelectStmt) {
        if !select.locking_clause.is_empty() || select.into_clause.is_some() {
            self.write = true;
            return;
        }
        if let Some(with) = &select.with_clause {
            self.list(&with.ctes);
        }
        self.list(&select.target_list);
        self.list(&select.from_clause);
        self.opt(select.where_clause.as_deref());
        self.list(&select.values_lists);
        self.list(&select.distinct_clause);
        self.list(&select.group_clause);
        self.opt(select.having_clause.as_deref());
        self.list(&select.sort_clause);
        self.opt(select.limit_offset.as_deref());
        self.opt(select.limit_count.as_deref());
        for side in [&select.larg, &select.rarg].into_iter().flatten() {
            self.select(side);
        }
    }

    fn node(&mut self, node: &Node) {
        let Some(node) = node.node.as_ref() else {
            return;
        };
        match node {
            NodeEnum::SelectStmt(select) => self.select(select),
            NodeEnum::InsertStmt(_)
            | NodeEnum::UpdateStmt(_)
            | NodeEnum::DeleteStmt(_)
            | NodeEnum::MergeStmt(_) => self.write = true,
            NodeEnum::CommonTableExpr(cte) => self.opt(cte.ctequery.as_deref()),
            NodeEnum::RangeSubselect(sub) => self.opt(sub.subquery.as_deref()),
            NodeEnum::SubLink(link) => {
                self.opt(link.testexpr.as_deref());
                self.opt(link.subselect.as_deref());
            }
            NodeEnum::JoinExpr(join) => {
                self.opt(join.larg.as_deref());
                self.opt(join.rarg.as_deref());
                self.opt(join.quals.as_deref());
            }
            NodeEnum::RangeFunction(function) => self.list(&function.functions),
            NodeEnum::FuncCall(call) => {
                let name = call.funcname.last().and_then(|part| match &part.node {
                    Some(NodeEnum::String(text)) => Some(text.sval.as_bytes()),
                    _ => None,
                });
                if name.is_some_and(is_write_function) {
                    self.write = true;
                    return;
                }
                self.list(&call.args);
                self.list(&call.agg_order);
                self.opt(call.agg_filter.as_deref());
            }
            NodeEnum::ResTarget(target) => self.opt(target.val.as_deref()),
            NodeEnum::AExpr(expr) => {
                self.opt(expr.lexpr.as_deref());
                self.opt(expr.rexpr.as_deref());
            }
            NodeEnum::BoolExpr(expr) => self.list(&expr.args),
            NodeEnum::TypeCast(cast) => self.opt(cast.arg.as_deref()),
            NodeEnum::CaseExpr(case) => {
                self.opt(case.arg.as_deref());
                self.list(&case.args);
                self.opt(case.defresult.as_deref());
            }
            NodeEnum::CaseWhen(when) => {
                self.opt(when.expr.as_deref());
                self.opt(when.result.as_deref());
            }
            NodeEnum::CoalesceExpr(expr) => self.list(&expr.args),
            NodeEnum::MinMaxExpr(expr) => self.list(&expr.args),
            NodeEnum::RowExpr(expr) => self.list(&expr.args),
            NodeEnum::AArrayExpr(expr) => self.list(&expr.elements),
            NodeEnum::NullTest(test) => self.opt(test.arg.as_deref()),
            NodeEnum::BooleanTest(test) => self.opt(test.arg.as_deref()),
            NodeEnum::AIndirection(indirection) => self.opt(indirection.arg.as_deref()),
            NodeEnum::NamedArgExpr(arg) => self.opt(arg.arg.as_deref()),
            NodeEnum::SortBy(sort) => self.opt(sort.node.as_deref()),
            NodeEnum::CollateClause(collate) => self.opt(collate.arg.as_deref()),
            NodeEnum::GroupingSet(set) => self.list(&set.content),
            NodeEnum::List(list) => self.list(&list.items),
            NodeEnum::RangeTableSample(sample) => {
                self.opt(sample.relation.as_deref());
                self.list(&sample.args);
            }
            // Leaves: nothing below them can hold a query.
            NodeEnum::RangeVar(_) | NodeEnum::SetToDefault(_) => {}
            leaf if is_leaf(leaf) => {}
            _ => self.incomplete = true,
        }
    }
}

/// Expression nodes with no expression below them (so no sub-query, no
/// function call, no aggregate): every tree walk stops at them.
pub(crate) fn is_leaf(node: &NodeEnum) -> bool {
    matches!(
        node,
        NodeEnum::ColumnRef(_)
            | NodeEnum::AConst(_)
            | NodeEnum::ParamRef(_)
            | NodeEnum::SqlvalueFunction(_)
            | NodeEnum::AStar(_)
            | NodeEnum::String(_)
            | NodeEnum::Integer(_)
            | NodeEnum::Float(_)
            | NodeEnum::Boolean(_)
            | NodeEnum::BitString(_)
            | NodeEnum::TypeName(_)
    )
}

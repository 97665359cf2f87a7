//! The parse-tree walk behind [`super::plan`]: which tables a statement
//! reads and writes, what its WHERE clauses and VALUES rows say about their
//! sharding keys, which joins and subqueries are co-located, and what cannot
//! run across shards.
//!
//! It owns the SQL rules of shard routing (see the `shard` module docs); it
//! must not look at parameter values or the session (that is `resolve`), nor
//! panic on any tree pg_query returns. Name resolution is syntactic: without
//! the catalog, an unqualified column belongs to the only sharded table of
//! its query level whose rule has that column.

use pg_query::protobuf::{
    a_const, AExpr, AExprKind, BoolExprType, DeleteStmt, InsertStmt, JoinType, Node, ObjectType,
    RangeVar, SelectStmt, SetOperation, SubLink, SubLinkType, UpdateStmt, WithClause,
};
use pg_query::{NodeEnum, NodeRef};
use shards::{ShardId, ShardedTable, ShardingSchema};

use super::key::{and, or, KeyExpr, Leaf, Value};
use crate::fanout::Unsupported;

const SUBQUERY: &str = "a subquery that needs rows from other shards";
const CTE: &str = "a CTE that needs rows from other shards";
const WRITING_CTE: &str = "a data-modifying CTE";

/// What the walk found in one statement.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Facts {
    pub keys: Option<KeyExpr>,
    /// Fails the statement whenever its own SQL decides the route.
    pub error: Option<Unsupported>,
    /// Fails the statement when it would go to more than one shard, or
    /// when it reads more than one sharded table (`sharded_refs`): a key
    /// then pins one table's rows, not the others'.
    pub single_only: Option<Unsupported>,
    /// How many times the statement names a sharded table.
    pub sharded_refs: u32,
    pub key_change: Option<KeyChange>,
    /// Shards of the sharded schemas it names.
    pub schema_shards: Vec<ShardId>,
    /// It names a table without a schema (and schemas are sharded).
    pub unqualified: bool,
    /// Rules (indexes into `ShardingSchema::tables`) of its sharded tables.
    pub rules: Vec<u16>,
    pub sharded: bool,
    pub omni: bool,
    pub regular: bool,
    /// It writes to tables (DML, a locking SELECT, COPY FROM).
    pub writes_tables: bool,
    /// It must run everywhere whatever it names (CALL, VACUUM, DDL...).
    pub everywhere: bool,
}

/// `UPDATE ... SET key = value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyChange {
    To(Leaf),
    Expression,
}

pub(super) fn unsupported(what: &str, hint: &str) -> Unsupported {
    Unsupported {
        what: what.to_string(),
        hint: hint.to_string(),
    }
}

/// One table (or derived table) in a FROM clause.
#[derive(Debug)]
struct Rel {
    /// The alias, else the table's name.
    qualifier: String,
    schema: Option<String>,
    name: String,
    /// False for CTE references, subqueries and functions.
    table: bool,
    rule: Option<u16>,
}

/// One query level: its FROM items and the join classes among them.
#[derive(Debug)]
struct Scope<'o> {
    outer: Option<&'o Scope<'o>>,
    rels: Vec<Rel>,
    /// Union-find over `rels`: co-located tables share a root.
    parent: Vec<usize>,
    ctes: Vec<String>,
    /// Joined to a sharded table of an outer level on the sharding key.
    correlated: bool,
}

impl<'o> Scope<'o> {
    fn new(outer: Option<&'o Scope<'o>>) -> Self {
        Scope {
            outer,
            rels: Vec::new(),
            parent: Vec::new(),
            ctes: Vec::new(),
            correlated: false,
        }
    }

    fn push(&mut self, rel: Rel) -> usize {
        self.rels.push(rel);
        self.parent.push(self.parent.len());
        self.rels.len() - 1
    }

    fn root(&self, mut at: usize) -> usize {
        while self.parent[at] != at {
            at = self.parent[at];
        }
        at
    }

    fn join(&mut self, left: usize, right: usize) {
        let (left, right) = (self.root(left), self.root(right));
        self.parent[left] = right;
    }

    fn is_cte(&self, name: &str) -> bool {
        self.ctes.iter().any(|cte| cte == name) || self.outer.is_some_and(|o| o.is_cte(name))
    }
}

/// A sharding-key column reference.
#[derive(Debug, Clone, Copy)]
struct ColumnKey {
    /// In an enclosing query level (a correlated reference).
    outer: bool,
    rel: usize,
    rule: u16,
}

/// A comparison's other side.
enum Operand {
    At(u32),
    Null,
    Other,
}

pub(super) struct Walker<'s> {
    schema: &'s ShardingSchema,
    pub facts: Facts,
}

impl<'s> Walker<'s> {
    pub(super) fn new(schema: &'s ShardingSchema) -> Self {
        Walker {
            schema,
            facts: Facts::default(),
        }
    }

    fn fail(&mut self, what: &str, hint: &str) {
        if self.facts.error.is_none() {
            self.facts.error = Some(unsupported(what, hint));
        }
    }

    /// A join not on the sharding key, or a subquery or CTE reading a
    /// sharded table: fine on one shard only when the statement reads a
    /// single sharded table (its key then pins every row it needs); see
    /// `Facts::sharded_refs`.
    fn cross_shard(&mut self, what: String, hint: String) {
        if self.facts.single_only.is_none() {
            self.facts.single_only = Some(Unsupported { what, hint });
        }
    }

    // ---- statements ----

    pub(super) fn statement_select(&mut self, select: &SelectStmt) {
        if !select.locking_clause.is_empty() || select.into_clause.is_some() {
            self.facts.writes_tables = true;
        }
        let keys = self.query(None, select, None);
        self.facts.keys = and(self.facts.keys.take(), keys);
    }

    pub(super) fn statement_dml(&mut self, node: &NodeEnum) {
        let keys = match node {
            NodeEnum::InsertStmt(insert) => self.insert(None, insert).0,
            NodeEnum::UpdateStmt(update) => self.update(None, update).0,
            NodeEnum::DeleteStmt(delete) => self.delete(None, delete).0,
            _ => None,
        };
        self.facts.keys = and(self.facts.keys.take(), keys);
    }

    pub(super) fn statement_merge(&mut self, target: Option<&RangeVar>) {
        self.facts.writes_tables = true;
        let mut scope = Scope::new(None);
        if let Some(target) = target {
            let at = self.target(&mut scope, target);
            if scope.rels[at].rule.is_some() {
                self.fail("MERGE into a sharded table", &Unsupported::route_hint());
            }
        }
    }

    /// `COPY table FROM` (`from`) or `COPY table TO`.
    pub(super) fn statement_copy(&mut self, target: &RangeVar, from: bool) {
        let mut scope = Scope::new(None);
        let at = self.target(&mut scope, target);
        if from {
            self.facts.writes_tables = true;
            if scope.rels[at].rule.is_some() {
                self.fail(
                    "COPY into a sharded table",
                    "send it to one shard with a /* pgdog_shard: N */ comment or SET pgdog.shard, \
                     or INSERT the rows",
                );
            }
        }
    }

    /// DDL: runs on every shard, or on the shard of the sharded schema it
    /// names.
    pub(super) fn statement_ddl(&mut self, node: &NodeEnum) {
        self.facts.everywhere = true;
        // Schema names the statement uses; None for an unqualified name.
        let mut names: Vec<Option<String>> = Vec::new();
        let mut relation = |relation: Option<&RangeVar>| {
            if let Some(relation) = relation {
                names.push((!relation.schemaname.is_empty()).then(|| relation.schemaname.clone()));
            }
        };
        match node {
            NodeEnum::CreateStmt(s) => relation(s.relation.as_ref()),
            NodeEnum::AlterTableStmt(s) => relation(s.relation.as_ref()),
            NodeEnum::IndexStmt(s) => relation(s.relation.as_ref()),
            NodeEnum::ViewStmt(s) => relation(s.view.as_ref()),
            NodeEnum::CreateTableAsStmt(s) => {
                relation(s.into.as_ref().and_then(|into| into.rel.as_ref()))
            }
            NodeEnum::RenameStmt(s) => relation(s.relation.as_ref()),
            NodeEnum::CreateSeqStmt(s) => relation(s.sequence.as_ref()),
            NodeEnum::AlterSeqStmt(s) => relation(s.sequence.as_ref()),
            NodeEnum::TruncateStmt(s) => {
                for node in &s.relations {
                    if let Some(NodeEnum::RangeVar(r)) = &node.node {
                        relation(Some(r));
                    }
                }
            }
            NodeEnum::CreateSchemaStmt(s) => names.push(Some(s.schemaname.clone())),
            NodeEnum::DropStmt(s) => {
                let schemas = ObjectType::try_from(s.remove_type) == Ok(ObjectType::ObjectSchema);
                for object in &s.objects {
                    match &object.node {
                        Some(NodeEnum::String(name)) if schemas => {
                            names.push(Some(name.sval.clone()))
                        }
                        Some(NodeEnum::List(list)) if !schemas => {
                            let parts: Vec<&str> = list.items.iter().filter_map(string).collect();
                            let schema = parts.len().checked_sub(2).map(|at| parts[at]);
                            names.push(schema.map(str::to_string));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        if !self.schema.has_sharded_schemas() {
            return;
        }
        for name in names {
            match name {
                Some(name) => self.named_schema(&name),
                None => self.facts.unqualified = true,
            }
        }
    }

    fn named_schema(&mut self, name: &str) {
        if let Some(shard) = self.schema.schema_shard(name) {
            if !self.facts.schema_shards.contains(&shard) {
                self.facts.schema_shards.push(shard);
            }
        }
    }

    // ---- queries ----

    /// One SELECT (or set operation) at its own query level; `sub` names
    /// what it is when it is nested, for the cross-shard check.
    fn query(
        &mut self,
        outer: Option<&Scope<'_>>,
        select: &SelectStmt,
        sub: Option<&str>,
    ) -> Option<KeyExpr> {
        let mut scope = Scope::new(outer);
        let mut keys = None;
        if let Some(with) = &select.with_clause {
            keys = self.with(&mut scope, with);
        }
        if SetOperation::try_from(select.op).is_ok_and(|op| op != SetOperation::SetopNone) {
            let left = select
                .larg
                .as_deref()
                .map(|s| self.query(Some(&scope), s, sub));
            let right = select
                .rarg
                .as_deref()
                .map(|s| self.query(Some(&scope), s, sub));
            return and(keys, or(left.flatten(), right.flatten()));
        }
        for item in &select.from_clause {
            let item_keys = self.range_item(&mut scope, item, true);
            keys = and(keys, item_keys);
        }
        if let Some(clause) = select.where_clause.as_deref() {
            let where_keys = self.condition(&mut scope, clause, true);
            keys = and(keys, where_keys);
        }
        for list in [
            &select.target_list,
            &select.group_clause,
            &select.sort_clause,
            &select.distinct_clause,
            &select.values_lists,
        ] {
            self.visit_list(&mut scope, list);
        }
        for node in [
            &select.having_clause,
            &select.limit_count,
            &select.limit_offset,
        ]
        .into_iter()
        .flatten()
        {
            self.visit(&mut scope, node);
        }
        self.finish(&scope, sub);
        keys
    }

    /// The join check of one query level, and the cross-shard check of a
    /// nested one.
    fn finish(&mut self, scope: &Scope<'_>, sub: Option<&str>) {
        let mut sharded = (0..scope.rels.len()).filter(|&at| scope.rels[at].rule.is_some());
        let Some(first) = sharded.next() else {
            return;
        };
        let root = scope.root(first);
        if let Some(other) = sharded.find(|&at| scope.root(at) != root) {
            let what = format!(
                "a join of sharded tables `{}` and `{}` not on their sharding key",
                scope.rels[first].name, scope.rels[other].name
            );
            self.cross_shard(what, Unsupported::route_hint());
            return;
        }
        if let Some(what) = sub {
            if !scope.correlated {
                self.cross_shard(what.to_string(), Unsupported::route_hint());
            }
        }
    }

    fn with(&mut self, scope: &mut Scope<'_>, with: &WithClause) -> Option<KeyExpr> {
        let mut keys = None;
        for cte in &with.ctes {
            let Some(NodeEnum::CommonTableExpr(cte)) = &cte.node else {
                continue;
            };
            if with.recursive {
                scope.ctes.push(cte.ctename.clone());
            }
            let cte_keys = match cte.ctequery.as_deref().and_then(|n| n.node.as_ref()) {
                Some(NodeEnum::SelectStmt(select)) => self.query(Some(scope), select, Some(CTE)),
                Some(NodeEnum::InsertStmt(insert)) => self.writing_cte(Dml::Insert(insert), scope),
                Some(NodeEnum::UpdateStmt(update)) => self.writing_cte(Dml::Update(update), scope),
                Some(NodeEnum::DeleteStmt(delete)) => self.writing_cte(Dml::Delete(delete), scope),
                Some(other) => {
                    self.opaque(other);
                    None
                }
                None => None,
            };
            keys = and(keys, cte_keys);
            if !with.recursive {
                scope.ctes.push(cte.ctename.clone());
            }
        }
        keys
    }

    fn writing_cte(&mut self, dml: Dml<'_>, scope: &Scope<'_>) -> Option<KeyExpr> {
        let (keys, sharded) = match dml {
            Dml::Insert(insert) => self.insert(Some(scope), insert),
            Dml::Update(update) => self.update(Some(scope), update),
            Dml::Delete(delete) => self.delete(Some(scope), delete),
        };
        // A sharded target's rows may be on other shards than the outer
        // statement's; an omnisharded or unsharded one must be written on
        // every shard. Either way no single route is right.
        let _ = sharded;
        self.fail(WRITING_CTE, &Unsupported::route_hint());
        keys
    }

    /// One FROM item. Keys count only where they filter the query's rows
    /// (`inner`): not on the nullable side of an outer join.
    fn range_item(&mut self, scope: &mut Scope<'_>, node: &Node, inner: bool) -> Option<KeyExpr> {
        let keys = match node.node.as_ref()? {
            NodeEnum::RangeVar(relation) => {
                self.relation(scope, relation);
                None
            }
            NodeEnum::JoinExpr(join) => {
                let kind = JoinType::try_from(join.jointype).unwrap_or(JoinType::Undefined);
                let left_filters = matches!(kind, JoinType::JoinInner | JoinType::JoinLeft);
                let right_filters = matches!(kind, JoinType::JoinInner | JoinType::JoinRight);
                let start = scope.rels.len();
                let left = join
                    .larg
                    .as_deref()
                    .and_then(|n| self.range_item(scope, n, left_filters));
                let middle = scope.rels.len();
                let right = join
                    .rarg
                    .as_deref()
                    .and_then(|n| self.range_item(scope, n, right_filters));
                for column in join.using_clause.iter().filter_map(string) {
                    self.using(scope, start..middle, middle..scope.rels.len(), column);
                }
                let quals = join
                    .quals
                    .as_deref()
                    .and_then(|q| self.condition(scope, q, kind == JoinType::JoinInner));
                let quals = if kind == JoinType::JoinInner {
                    quals
                } else {
                    None
                };
                and(and(left, right), quals)
            }
            NodeEnum::RangeSubselect(sub) => {
                let keys = match sub.subquery.as_deref().and_then(|n| n.node.as_ref()) {
                    Some(NodeEnum::SelectStmt(select)) => {
                        self.query(Some(scope), select, Some(SUBQUERY))
                    }
                    _ => None,
                };
                let alias = sub.alias.as_ref().map(|a| a.aliasname.clone());
                scope.push(derived(alias.unwrap_or_default()));
                keys
            }
            NodeEnum::RangeFunction(function) => {
                self.visit_list(scope, &function.functions);
                let alias = function.alias.as_ref().map(|a| a.aliasname.clone());
                scope.push(derived(alias.unwrap_or_default()));
                None
            }
            NodeEnum::RangeTableSample(sample) => {
                self.visit_list(scope, &sample.args);
                sample
                    .relation
                    .as_deref()
                    .and_then(|n| self.range_item(scope, n, inner))
            }
            other => {
                self.opaque(other);
                None
            }
        };
        if inner {
            keys
        } else {
            None
        }
    }

    /// A table (or CTE reference) in FROM; returns its index in the scope.
    /// The table a statement writes: never a CTE of the same name, which
    /// Postgres does not look at for a DML target.
    fn target(&mut self, scope: &mut Scope<'_>, relation: &RangeVar) -> usize {
        self.table(scope, relation, false)
    }

    fn relation(&mut self, scope: &mut Scope<'_>, relation: &RangeVar) -> usize {
        self.table(scope, relation, true)
    }

    fn table(&mut self, scope: &mut Scope<'_>, relation: &RangeVar, ctes: bool) -> usize {
        let schema = (!relation.schemaname.is_empty()).then(|| relation.schemaname.clone());
        let name = relation.relname.clone();
        let qualifier = relation
            .alias
            .as_ref()
            .map_or_else(|| name.clone(), |alias| alias.aliasname.clone());
        if ctes && schema.is_none() && scope.is_cte(&name) {
            return scope.push(derived(qualifier));
        }
        let rule = self.table_rule(schema.as_deref(), &name);
        match rule {
            Some(rule) => self.sharded_rule(rule),
            None if self.schema.is_omnisharded(&name) || is_catalog(schema.as_deref(), &name) => {
                self.facts.omni = true
            }
            None => self.facts.regular = true,
        }
        if self.schema.has_sharded_schemas() {
            match &schema {
                Some(schema) => self.named_schema(schema),
                None => self.facts.unqualified = true,
            }
        }
        scope.push(Rel {
            qualifier,
            schema,
            name,
            table: true,
            rule,
        })
    }

    fn sharded_rule(&mut self, rule: u16) {
        self.facts.sharded = true;
        self.facts.sharded_refs += 1;
        if !self.facts.rules.contains(&rule) {
            self.facts.rules.push(rule);
        }
    }

    /// The rule naming this table, when `key_rule` agrees it applies.
    fn table_rule(&self, schema: Option<&str>, table: &str) -> Option<u16> {
        self.schema
            .tables
            .iter()
            .filter(|rule| rule.name.as_deref() == Some(table))
            .find_map(|rule| {
                let applies = self.schema.key_rule(schema, table, &rule.column)?;
                self.rule_index(applies)
            })
    }

    fn rule_index(&self, rule: &ShardedTable) -> Option<u16> {
        let at = self
            .schema
            .tables
            .iter()
            .position(|candidate| std::ptr::eq(candidate, rule))?;
        u16::try_from(at).ok()
    }

    /// The rule that makes `column` of `rel` its sharding key.
    fn key_of(&self, rel: &Rel, column: &str) -> Option<u16> {
        if !rel.table {
            return None;
        }
        let rule = self
            .schema
            .key_rule(rel.schema.as_deref(), &rel.name, column)?;
        let rule = self.rule_index(rule)?;
        match rel.rule {
            Some(known) if known != rule => None,
            _ => Some(rule),
        }
    }

    /// Resolves a column reference to a sharding key, if it is one. A table
    /// sharded by a rule without a table name becomes sharded here.
    fn column(&mut self, scope: &mut Scope<'_>, node: &Node) -> Option<ColumnKey> {
        let Some(NodeEnum::ColumnRef(column)) = &node.node else {
            return None;
        };
        let parts: Vec<&str> = column.fields.iter().filter_map(string).collect();
        if parts.len() != column.fields.len() {
            return None;
        }
        let (qualifier, schema, name) = match parts[..] {
            [name] => return self.unqualified_column(scope, name),
            [qualifier, name] => (qualifier, None, name),
            [schema, table, name] => (table, Some(schema), name),
            _ => return None,
        };
        let matches = |rel: &Rel| match schema {
            Some(schema) => rel.schema.as_deref() == Some(schema) && rel.name == qualifier,
            None => rel.qualifier == qualifier,
        };
        if let Some(at) = scope.rels.iter().position(matches) {
            let rule = self.key_of(&scope.rels[at], name)?;
            self.mark_sharded(scope, at, rule);
            return Some(ColumnKey {
                outer: false,
                rel: at,
                rule,
            });
        }
        let mut outer = scope.outer;
        while let Some(level) = outer {
            if let Some(at) = level.rels.iter().position(matches) {
                let rule = self.key_of(&level.rels[at], name)?;
                return Some(ColumnKey {
                    outer: true,
                    rel: at,
                    rule,
                });
            }
            outer = level.outer;
        }
        None
    }

    fn unqualified_column(&mut self, scope: &mut Scope<'_>, name: &str) -> Option<ColumnKey> {
        let mut found = None;
        for (at, rel) in scope.rels.iter().enumerate() {
            if let Some(rule) = self.key_of(rel, name) {
                if found.is_some() {
                    return None;
                }
                found = Some((at, rule));
            }
        }
        let (at, rule) = found?;
        self.mark_sharded(scope, at, rule);
        Some(ColumnKey {
            outer: false,
            rel: at,
            rule,
        })
    }

    fn mark_sharded(&mut self, scope: &mut Scope<'_>, at: usize, rule: u16) {
        if scope.rels[at].rule.is_none() {
            scope.rels[at].rule = Some(rule);
            self.sharded_rule(rule);
        }
    }

    fn compatible(&self, left: u16, right: u16) -> bool {
        let table = |rule: u16| self.schema.tables.get(usize::from(rule));
        match (table(left), table(right)) {
            (Some(left), Some(right)) => {
                left.data_type == right.data_type && left.mapping == right.mapping
            }
            _ => false,
        }
    }

    /// `left.key = right.key`: the two tables' rows meet on one shard.
    fn colocate(&mut self, scope: &mut Scope<'_>, left: ColumnKey, right: ColumnKey) {
        if !self.compatible(left.rule, right.rule) {
            return;
        }
        match (left.outer, right.outer) {
            (false, false) => scope.join(left.rel, right.rel),
            (true, false) | (false, true) => scope.correlated = true,
            (true, true) => {}
        }
    }

    /// `JOIN ... USING (column)` between the tables of two ranges.
    fn using(
        &mut self,
        scope: &mut Scope<'_>,
        left: std::ops::Range<usize>,
        right: std::ops::Range<usize>,
        column: &str,
    ) {
        let key = |walker: &Self, scope: &Scope<'_>, range: std::ops::Range<usize>| {
            range.into_iter().find_map(|at| {
                walker
                    .key_of(&scope.rels[at], column)
                    .map(|rule| (at, rule))
            })
        };
        let (Some((l, lrule)), Some((r, rrule))) = (
            key(self, scope, left.clone()),
            key(self, scope, right.clone()),
        ) else {
            return;
        };
        self.mark_sharded(scope, l, lrule);
        self.mark_sharded(scope, r, rrule);
        if self.compatible(lrule, rrule) {
            scope.join(l, r);
        }
    }

    // ---- conditions ----

    /// The key constraint of a boolean expression; `conjunct` when it is
    /// ANDed into the query's filter (so a sub-select there narrows too).
    fn condition(&mut self, scope: &mut Scope<'_>, node: &Node, conjunct: bool) -> Option<KeyExpr> {
        match node.node.as_ref()? {
            NodeEnum::BoolExpr(expr) => match BoolExprType::try_from(expr.boolop) {
                Ok(BoolExprType::AndExpr) => expr.args.iter().fold(None, |keys, arg| {
                    let arg_keys = self.condition(scope, arg, conjunct);
                    and(keys, arg_keys)
                }),
                Ok(BoolExprType::OrExpr) => {
                    let mut keys = Vec::with_capacity(expr.args.len());
                    for arg in &expr.args {
                        keys.push(self.condition(scope, arg, false));
                    }
                    let mut keys = keys.into_iter();
                    let first = keys.next().flatten();
                    keys.fold(first, or)
                }
                _ => {
                    self.visit_list(scope, &expr.args);
                    None
                }
            },
            NodeEnum::AExpr(expr) => self.comparison(scope, expr),
            NodeEnum::SubLink(link) => self.sublink(scope, link, conjunct),
            _ => {
                self.visit(scope, node);
                None
            }
        }
    }

    fn comparison(&mut self, scope: &mut Scope<'_>, expr: &AExpr) -> Option<KeyExpr> {
        let kind = AExprKind::try_from(expr.kind).unwrap_or(AExprKind::Undefined);
        let equals = expr.name.len() == 1 && expr.name.first().and_then(string) == Some("=");
        let (Some(left), Some(right)) = (expr.lexpr.as_deref(), expr.rexpr.as_deref()) else {
            self.visit_opt(scope, expr.lexpr.as_deref());
            self.visit_opt(scope, expr.rexpr.as_deref());
            return None;
        };
        if !equals || !matches!(kind, AExprKind::AexprOp | AExprKind::AexprIn) {
            self.visit(scope, left);
            self.visit(scope, right);
            return None;
        }
        if kind == AExprKind::AexprIn {
            let column = self.column(scope, left);
            self.visit(scope, right);
            return self.in_list(column?, right);
        }
        match (self.column(scope, left), self.column(scope, right)) {
            (Some(l), Some(r)) => {
                self.colocate(scope, l, r);
                None
            }
            (Some(column), None) => {
                self.visit(scope, right);
                leaf(column, right)
            }
            (None, Some(column)) => {
                self.visit(scope, left);
                leaf(column, left)
            }
            (None, None) => {
                self.visit(scope, left);
                self.visit(scope, right);
                None
            }
        }
    }

    /// `key IN (a, b, $1)`: any of them; NULLs in the list match nothing.
    fn in_list(&self, column: ColumnKey, list: &Node) -> Option<KeyExpr> {
        let Some(NodeEnum::List(list)) = &list.node else {
            return None;
        };
        let mut leaves = Vec::with_capacity(list.items.len());
        for item in &list.items {
            match operand(item) {
                Operand::At(at) => leaves.push(KeyExpr::Leaf(Leaf {
                    rule: column.rule,
                    value: Value::At(at),
                    insert: false,
                })),
                Operand::Null => {}
                Operand::Other => return None,
            }
        }
        match leaves.len() {
            0 => None,
            1 => leaves.pop(),
            _ => Some(KeyExpr::Or(leaves)),
        }
    }

    fn sublink(
        &mut self,
        scope: &mut Scope<'_>,
        link: &SubLink,
        conjunct: bool,
    ) -> Option<KeyExpr> {
        self.visit_opt(scope, link.testexpr.as_deref());
        let keys = match link.subselect.as_deref().and_then(|n| n.node.as_ref()) {
            Some(NodeEnum::SelectStmt(select)) => self.query(Some(scope), select, Some(SUBQUERY)),
            _ => None,
        };
        let kind = SubLinkType::try_from(link.sub_link_type).unwrap_or(SubLinkType::Undefined);
        let narrows = matches!(kind, SubLinkType::ExistsSublink | SubLinkType::AnySublink);
        if conjunct && narrows {
            keys
        } else {
            None
        }
    }

    // ---- expressions: looking for sub-selects ----

    fn visit_list(&mut self, scope: &mut Scope<'_>, nodes: &[Node]) {
        for node in nodes {
            self.visit(scope, node);
        }
    }

    fn visit_opt(&mut self, scope: &mut Scope<'_>, node: Option<&Node>) {
        if let Some(node) = node {
            self.visit(scope, node);
        }
    }

    fn visit(&mut self, scope: &mut Scope<'_>, node: &Node) {
        let Some(inner) = node.node.as_ref() else {
            return;
        };
        match inner {
            NodeEnum::SubLink(link) => {
                self.sublink(scope, link, false);
            }
            NodeEnum::AExpr(_) | NodeEnum::BoolExpr(_) => {
                self.condition(scope, node, false);
            }
            NodeEnum::ResTarget(target) => self.visit_opt(scope, target.val.as_deref()),
            NodeEnum::FuncCall(call) => {
                self.visit_list(scope, &call.args);
                self.visit_list(scope, &call.agg_order);
                self.visit_opt(scope, call.agg_filter.as_deref());
            }
            NodeEnum::TypeCast(cast) => self.visit_opt(scope, cast.arg.as_deref()),
            NodeEnum::CaseExpr(case) => {
                self.visit_opt(scope, case.arg.as_deref());
                self.visit_list(scope, &case.args);
                self.visit_opt(scope, case.defresult.as_deref());
            }
            NodeEnum::CaseWhen(when) => {
                self.visit_opt(scope, when.expr.as_deref());
                self.visit_opt(scope, when.result.as_deref());
            }
            NodeEnum::CoalesceExpr(expr) => self.visit_list(scope, &expr.args),
            NodeEnum::MinMaxExpr(expr) => self.visit_list(scope, &expr.args),
            NodeEnum::RowExpr(expr) => self.visit_list(scope, &expr.args),
            NodeEnum::AArrayExpr(expr) => self.visit_list(scope, &expr.elements),
            NodeEnum::NullTest(test) => self.visit_opt(scope, test.arg.as_deref()),
            NodeEnum::BooleanTest(test) => self.visit_opt(scope, test.arg.as_deref()),
            NodeEnum::AIndirection(ind) => self.visit_opt(scope, ind.arg.as_deref()),
            NodeEnum::NamedArgExpr(arg) => self.visit_opt(scope, arg.arg.as_deref()),
            NodeEnum::SortBy(sort) => self.visit_opt(scope, sort.node.as_deref()),
            NodeEnum::CollateClause(c) => self.visit_opt(scope, c.arg.as_deref()),
            NodeEnum::GroupingSet(set) => self.visit_list(scope, &set.content),
            NodeEnum::List(list) => self.visit_list(scope, &list.items),
            NodeEnum::MultiAssignRef(m) => self.visit_opt(scope, m.source.as_deref()),
            NodeEnum::SetToDefault(_) => {}
            leaf if crate::router::tree::is_leaf(leaf) => {}
            other => self.opaque(other),
        }
    }

    /// A node this walk does not descend into: if a sharded table appears
    /// anywhere below, it counts as a subquery that is not co-located.
    fn opaque(&mut self, node: &NodeEnum) {
        let sharded = node.nodes().into_iter().any(|(node, ..)| match node {
            NodeRef::RangeVar(relation) => {
                let schema = (!relation.schemaname.is_empty()).then_some(&*relation.schemaname);
                self.table_rule(schema, &relation.relname).is_some()
            }
            _ => false,
        });
        if sharded {
            self.cross_shard(SUBQUERY.to_string(), Unsupported::route_hint());
        }
    }

    // ---- writes ----

    /// Returns the keys and whether the target table is sharded.
    fn insert(
        &mut self,
        outer: Option<&Scope<'_>>,
        insert: &InsertStmt,
    ) -> (Option<KeyExpr>, bool) {
        self.facts.writes_tables = true;
        let mut scope = Scope::new(outer);
        if let Some(with) = &insert.with_clause {
            // A CTE's keys do not say where the new rows go.
            self.with(&mut scope, with);
        }
        let Some(relation) = &insert.relation else {
            return (None, false);
        };
        let at = self.target(&mut scope, relation);
        let columns: Vec<&str> = insert
            .cols
            .iter()
            .filter_map(|node| match &node.node {
                Some(NodeEnum::ResTarget(target)) => Some(target.name.as_str()),
                _ => None,
            })
            .collect();
        let rule = scope.rels[at].rule.or_else(|| {
            let rule = columns
                .iter()
                .find_map(|column| self.key_of(&scope.rels[at], column))?;
            self.sharded_rule(rule);
            Some(rule)
        });
        if let (Some(rule), Some(conflict)) = (rule, insert.on_conflict_clause.as_deref()) {
            let key = &self.schema.tables[usize::from(rule)].column;
            let sets_key = conflict.target_list.iter().any(|node| {
                matches!(&node.node, Some(NodeEnum::ResTarget(target)) if &target.name == key)
            });
            if sets_key {
                self.fail(
                    "changing the sharding key",
                    "ON CONFLICT DO UPDATE may not set the sharding key: delete the row and insert it with its new key",
                );
            }
        }
        let select = insert
            .select_stmt
            .as_deref()
            .and_then(|node| match &node.node {
                Some(NodeEnum::SelectStmt(select)) => Some(select.as_ref()),
                _ => None,
            });
        let Some(rule) = rule else {
            // Omnisharded or unsharded: every shard gets the rows.
            if let Some(select) = select {
                self.query(Some(&scope), select, Some(SUBQUERY));
            }
            return (None, false);
        };
        if columns.is_empty() {
            self.fail(
                "INSERT without a column list into sharded table",
                "name the columns, the sharding key among them",
            );
            return (None, true);
        }
        let values = select.filter(|s| {
            !s.values_lists.is_empty() && s.from_clause.is_empty() && s.with_clause.is_none()
        });
        let Some(values) = values else {
            if let Some(select) = select {
                self.query(Some(&scope), select, Some(SUBQUERY));
            }
            self.fail(
                "INSERT ... SELECT into a sharded table",
                "insert the rows with VALUES, or send it to one shard with a \
                 /* pgdog_shard: N */ comment or SET pgdog.shard",
            );
            return (None, true);
        };
        let key_at = self
            .schema
            .tables
            .get(usize::from(rule))
            .and_then(|table| columns.iter().position(|c| *c == table.column));
        let mut rows = Vec::with_capacity(values.values_lists.len());
        for row in &values.values_lists {
            let Some(NodeEnum::List(row)) = &row.node else {
                continue;
            };
            self.visit_list(&mut scope, &row.items);
            let value = match key_at.map(|at| row.items.get(at).map_or(Operand::Other, operand)) {
                None | Some(Operand::Null) => Value::Null,
                Some(Operand::At(at)) => Value::At(at),
                Some(Operand::Other) => {
                    self.fail(
                        "a sharding key value that is not a constant or a parameter",
                        "pass the sharding key as a constant or a $n parameter",
                    );
                    return (None, true);
                }
            };
            rows.push(Leaf {
                rule,
                value,
                insert: true,
            });
        }
        let keys = match rows.len() {
            0 => None,
            1 => rows.pop().map(KeyExpr::Leaf),
            _ => Some(KeyExpr::Rows(rows)),
        };
        (keys, true)
    }

    fn update(
        &mut self,
        outer: Option<&Scope<'_>>,
        update: &UpdateStmt,
    ) -> (Option<KeyExpr>, bool) {
        self.facts.writes_tables = true;
        let mut scope = Scope::new(outer);
        let mut keys = None;
        if let Some(with) = &update.with_clause {
            keys = self.with(&mut scope, with);
        }
        let Some(relation) = &update.relation else {
            return (None, false);
        };
        let at = self.target(&mut scope, relation);
        for item in &update.from_clause {
            let item_keys = self.range_item(&mut scope, item, true);
            keys = and(keys, item_keys);
        }
        if let Some(clause) = update.where_clause.as_deref() {
            let where_keys = self.condition(&mut scope, clause, true);
            keys = and(keys, where_keys);
        }
        for target in &update.target_list {
            let Some(NodeEnum::ResTarget(target)) = &target.node else {
                continue;
            };
            self.visit_opt(&mut scope, target.val.as_deref());
            let Some(rule) = self.key_of(&scope.rels[at], &target.name) else {
                continue;
            };
            self.mark_sharded(&mut scope, at, rule);
            let change = match target.val.as_deref().map_or(Operand::Other, operand) {
                Operand::At(value) => KeyChange::To(Leaf {
                    rule,
                    value: Value::At(value),
                    insert: true,
                }),
                Operand::Null => KeyChange::To(Leaf {
                    rule,
                    value: Value::Null,
                    insert: true,
                }),
                Operand::Other => KeyChange::Expression,
            };
            self.facts.key_change.get_or_insert(change);
        }
        self.finish(&scope, None);
        self.written(&scope, at, keys)
    }

    fn delete(
        &mut self,
        outer: Option<&Scope<'_>>,
        delete: &DeleteStmt,
    ) -> (Option<KeyExpr>, bool) {
        self.facts.writes_tables = true;
        let mut scope = Scope::new(outer);
        let mut keys = None;
        if let Some(with) = &delete.with_clause {
            keys = self.with(&mut scope, with);
        }
        let Some(relation) = &delete.relation else {
            return (None, false);
        };
        let at = self.target(&mut scope, relation);
        for item in &delete.using_clause {
            let item_keys = self.range_item(&mut scope, item, true);
            keys = and(keys, item_keys);
        }
        if let Some(clause) = delete.where_clause.as_deref() {
            let where_keys = self.condition(&mut scope, clause, true);
            keys = and(keys, where_keys);
        }
        self.finish(&scope, None);
        self.written(&scope, at, keys)
    }

    /// An omnisharded or unsharded target is written on every shard,
    /// whatever the keys of the tables it reads say.
    fn written(
        &self,
        scope: &Scope<'_>,
        at: usize,
        keys: Option<KeyExpr>,
    ) -> (Option<KeyExpr>, bool) {
        match scope.rels[at].rule {
            Some(_) => (keys, true),
            None => (None, false),
        }
    }
}

enum Dml<'a> {
    Insert(&'a InsertStmt),
    Update(&'a UpdateStmt),
    Delete(&'a DeleteStmt),
}

fn derived(qualifier: String) -> Rel {
    Rel {
        qualifier,
        schema: None,
        name: String::new(),
        table: false,
        rule: None,
    }
}

fn string(node: &Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::String(text)) => Some(&text.sval),
        _ => None,
    }
}

fn leaf(column: ColumnKey, value: &Node) -> Option<KeyExpr> {
    match operand(value) {
        Operand::At(at) => Some(KeyExpr::Leaf(Leaf {
            rule: column.rule,
            value: Value::At(at),
            insert: false,
        })),
        Operand::Null | Operand::Other => None,
    }
}

/// A constant, `$n`, NULL, or anything else; casts are looked through
/// (`'5'::bigint`, `$1::uuid`).
fn operand(node: &Node) -> Operand {
    let at = |location: i32| u32::try_from(location).map_or(Operand::Other, Operand::At);
    match node.node.as_ref() {
        Some(NodeEnum::AConst(constant)) => {
            if constant.isnull {
                return Operand::Null;
            }
            match &constant.val {
                Some(a_const::Val::Ival(_) | a_const::Val::Sval(_)) => at(constant.location),
                // Integers beyond 32 bits arrive as Float nodes.
                Some(a_const::Val::Fval(float)) if is_integer(&float.fval) => at(constant.location),
                _ => Operand::Other,
            }
        }
        Some(NodeEnum::ParamRef(param)) => at(param.location),
        Some(NodeEnum::TypeCast(cast)) => cast.arg.as_deref().map_or(Operand::Other, operand),
        Some(NodeEnum::AExpr(expr)) => {
            // Unary minus the parser did not fold into the constant.
            let minus = expr.lexpr.is_none() && expr.name.first().and_then(string) == Some("-");
            let integer = expr.rexpr.as_deref().is_some_and(|n| match &n.node {
                Some(NodeEnum::AConst(c)) => matches!(c.val, Some(a_const::Val::Ival(_))),
                _ => false,
            });
            if minus && integer {
                at(expr.location)
            } else {
                Operand::Other
            }
        }
        _ => Operand::Other,
    }
}

fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The system catalogs and `information_schema`: every shard has its own
/// copy, so a read of them goes to one shard, as a read of an omnisharded
/// table does (psql's `\d` through sleddog lists each table once).
fn is_catalog(schema: Option<&str>, name: &str) -> bool {
    match schema {
        Some(schema) => schema == "pg_catalog" || schema == "information_schema",
        None => name.starts_with("pg_"),
    }
}

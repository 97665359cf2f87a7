//! Shard routing: which shards of a sharded cluster a statement goes to,
//! PgDog-compatible. Pure logic, no I/O, in two steps:
//!
//! - [`plan`], once per distinct statement text (the core caches it): the
//!   parse tree's tables, keys and restrictions as a [`ShardPlan`]. Key values
//!   are not copied into the plan but located in the text, so one plan serves
//!   every text of the same `lex::shape` (constants differ, token positions
//!   do not).
//! - [`ShardPlan::resolve`], per request: the request's text, parameters and
//!   session settings in, a [`Target`] out. It does not parse again and does
//!   not allocate for a single key beyond the `Target`.
//!
//! Precedence: a `/* pgdog_shard: N */` comment, then a
//! `/* pgdog_sharding_key: v */` comment, then the session's `pgdog.shard`,
//! then its `pgdog.sharding_key`, then the SQL. Comments and settings are
//! trusted: they also lift every "unsupported across shards" check.
//!
//! The SQL: sharded schemas first (a table in a `[[sharded_schemas]]` schema,
//! or an unqualified table when `search_path` leads to one, pins the shard);
//! then sharding keys from WHERE (`=`, `IN`, AND narrows, OR unites), inner
//! JOIN ON, FROM subqueries and CTEs, EXISTS/IN sub-selects in the WHERE's
//! AND chain, and INSERT's VALUES. Without a key: every shard for sharded and
//! unsharded tables, any one shard for omnisharded reads and for statements
//! that name no table. Writes to omnisharded tables go everywhere.
//! Transaction control, SET, SHOW, DISCARD... go to `Any`: the relay handles
//! them. What one shard cannot answer alone (joins not on the sharding key,
//! sub-selects reading other shards' rows, multi-row INSERTs spanning shards,
//! changing a row's key) fails with SQLSTATE 0A000 unless a key pins one
//! shard.
//!
//! It must not hold session state, look at servers, or plan cross-shard
//! merges (`fanout` does; see [`ShardPlan::select`]).

mod key;
mod setting;
mod walk;

#[cfg(test)]
mod tests;

use pg_query::protobuf::ParseResult;
use pg_query::NodeEnum;
use shards::{DataType, Format, KeyError, Mapping, ShardId, ShardedTable, ShardingSchema};

use super::classified::TextSpan;
use super::lex::scan;
use crate::fanout::Unsupported;
use key::{KeyExpr, Set};
use setting::{search_path_shard, SettingPlan, SEARCH_PATH_DEFAULT};
use walk::{Facts, KeyChange, Walker};

pub use setting::ShardSetting;

/// Where a statement goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Shard(ShardId),
    /// Several shards, sorted and deduplicated.
    Shards(Vec<ShardId>),
    /// Every shard: fan-out.
    All,
    /// Any one shard will do: an omnisharded read, or a statement touching
    /// no table (`SELECT 1`, `SET`, `SHOW`).
    Any,
}

/// Why a statement cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// A key value that is not a value of the key's type.
    Key(KeyError),
    /// A `pgdog_shard` comment or `pgdog.shard` setting naming no shard.
    ShardOutOfRange {
        shard: u32,
        shards: u16,
    },
    /// A key value no shard is mapped to (a list or range mapping without a
    /// default), for a statement that must go somewhere.
    Unmapped,
    Unsupported(Unsupported),
}

impl RouteError {
    /// The SQLSTATE of the ErrorResponse ("errcodes-appendix").
    pub fn sqlstate(&self) -> &'static str {
        match self {
            RouteError::Key(_) => "22P02",
            RouteError::ShardOutOfRange { .. } | RouteError::Unmapped => "22023",
            RouteError::Unsupported(_) => "0A000",
        }
    }

    /// The ErrorResponse's hint, if any.
    pub fn hint(&self) -> Option<&str> {
        match self {
            RouteError::Unsupported(unsupported) => Some(&unsupported.hint),
            _ => None,
        }
    }
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::Key(error) => error.fmt(f),
            RouteError::ShardOutOfRange { shard, shards } => {
                write!(
                    f,
                    "shard {shard} does not exist: the cluster has {shards} shards"
                )
            }
            RouteError::Unmapped => f.write_str("no shard is mapped to the sharding key value"),
            RouteError::Unsupported(unsupported) => unsupported.fmt(f),
        }
    }
}

impl std::error::Error for RouteError {}

impl From<KeyError> for RouteError {
    fn from(error: KeyError) -> Self {
        RouteError::Key(error)
    }
}

pub(super) fn unsupported(what: &str, hint: &str) -> RouteError {
    RouteError::Unsupported(walk::unsupported(what, hint))
}

/// One request's values for [`ShardPlan::resolve`].
#[derive(Debug, Clone, Copy)]
pub struct ResolveInput<'a> {
    /// This request's text: the planned text or one of the same shape.
    pub sql: &'a str,
    /// Bind parameter values (None = NULL).
    pub params: &'a [Option<&'a [u8]>],
    /// Bind's parameter format codes as sent: none = all text, one = all,
    /// else one per parameter.
    pub param_formats: &'a [i16],
    /// The shard map the plan was made with.
    pub schema: &'a ShardingSchema,
    /// `SET pgdog.shard`.
    pub session_shard: Option<ShardId>,
    /// `SET pgdog.sharding_key`.
    pub session_key: Option<&'a str>,
    /// The session's `search_path` text; None = the server default.
    pub search_path: Option<&'a str>,
}

impl<'a> ResolveInput<'a> {
    /// A simple-protocol request without session settings.
    pub fn new(sql: &'a str, schema: &'a ShardingSchema) -> Self {
        ResolveInput {
            sql,
            params: &[],
            param_formats: &[],
            schema,
            session_shard: None,
            session_key: None,
            search_path: None,
        }
    }

    pub fn with_params(self, params: &'a [Option<&'a [u8]>], param_formats: &'a [i16]) -> Self {
        ResolveInput {
            params,
            param_formats,
            ..self
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Transaction control and session commands: the relay's business.
    Control,
    Query,
}

/// One statement's route, without values.
#[derive(Debug, Clone, PartialEq)]
struct Statement {
    /// Where it goes without a key: `All` or `Any`.
    base: Target,
    facts: Facts,
    /// It returns rows (a SELECT, RETURNING, EXPLAIN): sent to every shard
    /// when it needs only one, its rows would come once per shard.
    returns_rows: bool,
}

/// The routing plan of one statement text; cache it per text (behind an
/// `Rc` if clones must be cheap) and call [`ShardPlan::resolve`] per request.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardPlan {
    kind: Kind,
    select: bool,
    /// The text holds more than one statement.
    several: bool,
    /// The text holds a SHOW or FETCH (rows from whichever shard runs it).
    control_rows: bool,
    hint_shard: Option<u32>,
    hint_key: Option<TextSpan>,
    /// Rules of the sharded tables the text names, for key hints.
    rules: Vec<u16>,
    statements: Vec<Statement>,
    setting: Option<SettingPlan>,
}

/// Plans `sql`, whose parse is `parsed`, against `schema`.
pub fn plan(parsed: &ParseResult, sql: &str, schema: &ShardingSchema) -> ShardPlan {
    let scan = scan(sql);
    let mut plan = ShardPlan {
        kind: Kind::Control,
        select: false,
        several: false,
        control_rows: false,
        hint_shard: scan.hints.shard,
        hint_key: scan.hints.sharding_key,
        rules: Vec::new(),
        statements: Vec::new(),
        setting: None,
    };
    let nodes: Vec<&NodeEnum> = parsed
        .stmts
        .iter()
        .filter_map(|raw| raw.stmt.as_deref().and_then(|node| node.node.as_ref()))
        .collect();
    if let [NodeEnum::SelectStmt(select)] = nodes[..] {
        plan.select = select.locking_clause.is_empty() && select.into_clause.is_none();
    }
    plan.several = nodes.len() > 1;
    plan.control_rows = nodes
        .iter()
        .any(|node| matches!(node, NodeEnum::VariableShowStmt(_) | NodeEnum::FetchStmt(_)));
    if let [only] = nodes[..] {
        plan.setting = setting::plan_setting(only);
    }
    for node in nodes {
        let (kind, statement) = plan_statement(node, schema);
        if kind == Kind::Query {
            plan.kind = Kind::Query;
        }
        if let Some(mut statement) = statement {
            statement.returns_rows = returns_rows(node);
            for &rule in &statement.facts.rules {
                if !plan.rules.contains(&rule) {
                    plan.rules.push(rule);
                }
            }
            plan.statements.push(statement);
        }
    }
    plan
}

fn plan_statement(node: &NodeEnum, schema: &ShardingSchema) -> (Kind, Option<Statement>) {
    let mut walker = Walker::new(schema);
    let kind = match node {
        NodeEnum::TransactionStmt(_)
        | NodeEnum::VariableSetStmt(_)
        | NodeEnum::VariableShowStmt(_)
        | NodeEnum::DiscardStmt(_)
        | NodeEnum::DeallocateStmt(_)
        | NodeEnum::ListenStmt(_)
        | NodeEnum::UnlistenStmt(_)
        | NodeEnum::NotifyStmt(_)
        | NodeEnum::FetchStmt(_)
        | NodeEnum::ClosePortalStmt(_)
        | NodeEnum::ConstraintsSetStmt(_)
        | NodeEnum::LoadStmt(_) => return (Kind::Control, None),
        NodeEnum::SelectStmt(select) => {
            walker.statement_select(select);
            Kind::Query
        }
        NodeEnum::InsertStmt(_) | NodeEnum::UpdateStmt(_) | NodeEnum::DeleteStmt(_) => {
            walker.statement_dml(node);
            Kind::Query
        }
        NodeEnum::MergeStmt(merge) => {
            walker.statement_merge(merge.relation.as_ref());
            Kind::Query
        }
        NodeEnum::ExplainStmt(explain) => return inner(explain.query.as_deref(), schema),
        NodeEnum::DeclareCursorStmt(declare) => {
            let (kind, statement) = inner(declare.query.as_deref(), schema);
            let statement = statement.map(|mut statement| {
                statement.facts.single_only.get_or_insert(walk::unsupported(
                    "a cursor over several shards",
                    &Unsupported::route_hint(),
                ));
                statement
            });
            return (kind, statement);
        }
        NodeEnum::CopyStmt(copy) => match (&copy.relation, copy.query.as_deref()) {
            (_, Some(query)) => return inner(Some(query), schema),
            (Some(relation), None) => {
                walker.statement_copy(relation, copy.is_from);
                Kind::Query
            }
            (None, None) => Kind::Query,
        },
        NodeEnum::ExecuteStmt(_) => {
            walker.facts.error = Some(walk::unsupported(
                "SQL EXECUTE of a prepared statement",
                &Unsupported::route_hint(),
            ));
            Kind::Query
        }
        NodeEnum::CreateStmt(_)
        | NodeEnum::AlterTableStmt(_)
        | NodeEnum::DropStmt(_)
        | NodeEnum::IndexStmt(_)
        | NodeEnum::CreateSchemaStmt(_)
        | NodeEnum::RenameStmt(_)
        | NodeEnum::ViewStmt(_)
        | NodeEnum::CreateTableAsStmt(_)
        | NodeEnum::CreateSeqStmt(_)
        | NodeEnum::AlterSeqStmt(_)
        | NodeEnum::CreateFunctionStmt(_)
        | NodeEnum::AlterFunctionStmt(_)
        | NodeEnum::CreateExtensionStmt(_)
        | NodeEnum::AlterExtensionStmt(_)
        | NodeEnum::CommentStmt(_)
        | NodeEnum::GrantStmt(_)
        | NodeEnum::CreateEnumStmt(_)
        | NodeEnum::AlterEnumStmt(_)
        | NodeEnum::CompositeTypeStmt(_)
        | NodeEnum::CreateDomainStmt(_)
        | NodeEnum::AlterDomainStmt(_)
        | NodeEnum::CreateTrigStmt(_)
        | NodeEnum::CreatePolicyStmt(_)
        | NodeEnum::AlterPolicyStmt(_)
        | NodeEnum::RuleStmt(_)
        | NodeEnum::DefineStmt(_)
        | NodeEnum::AlterObjectSchemaStmt(_)
        | NodeEnum::AlterOwnerStmt(_)
        | NodeEnum::AlterDefaultPrivilegesStmt(_) => {
            walker.statement_ddl(node);
            Kind::Query
        }
        NodeEnum::TruncateStmt(_) => {
            walker.statement_ddl(node);
            walker.facts.writes_tables = true;
            Kind::Query
        }
        // PREPARE (so that EXECUTE finds it anywhere), CALL, DO, VACUUM,
        // ANALYZE, CLUSTER, REINDEX, LOCK, REFRESH, CHECKPOINT and kinds not
        // named here: every shard.
        _ => {
            walker.facts.everywhere = true;
            Kind::Query
        }
    };
    let facts = walker.facts;
    let base = if facts.everywhere
        || facts.sharded
        || facts.regular
        || (facts.omni && facts.writes_tables)
    {
        Target::All
    } else {
        Target::Any
    };
    let returns_rows = false;
    (
        kind,
        Some(Statement {
            base,
            facts,
            returns_rows,
        }),
    )
}

/// The statement inside EXPLAIN, DECLARE or COPY (query) TO.
fn inner(
    node: Option<&pg_query::protobuf::Node>,
    schema: &ShardingSchema,
) -> (Kind, Option<Statement>) {
    match node.and_then(|node| node.node.as_ref()) {
        Some(node) => {
            let (kind, statement) = plan_statement(node, schema);
            (
                if kind == Kind::Control {
                    Kind::Query
                } else {
                    kind
                },
                statement,
            )
        }
        None => (Kind::Query, None),
    }
}

impl ShardPlan {
    /// Where this request goes.
    pub fn resolve(&self, input: &ResolveInput<'_>) -> Result<Target, RouteError> {
        if self.kind == Kind::Control {
            return Ok(Target::Any);
        }
        if let Some(shard) = self.hint_shard {
            return checked(shard, input.schema.shards);
        }
        if let Some(text) = self.hint_key.and_then(|span| span.slice(input.sql)) {
            return self.key_target(text, input);
        }
        if let Some(shard) = input.session_shard {
            return checked(u32::from(shard.0), input.schema.shards);
        }
        if let Some(key) = input.session_key {
            return self.key_target(key, input);
        }
        let [first, more @ ..] = &self.statements[..] else {
            return Ok(Target::Any);
        };
        let mut target = first.resolve(input)?;
        if more.is_empty() && !self.several {
            return Ok(target);
        }
        let mut rows_from_any = first.returns_rows && target == Target::Any;
        for statement in more {
            let next = statement.resolve(input)?;
            rows_from_any |= statement.returns_rows && next == Target::Any;
            target = combine(target, next)?;
        }
        let several_shards = match &target {
            Target::All => true,
            Target::Shards(shards) => shards.len() > 1,
            Target::Any | Target::Shard(_) => false,
        };
        if several_shards && (rows_from_any || self.control_rows) {
            return Err(unsupported(
                "a query string whose statements for several shards come with one that \
                 returns rows from any one shard (it would answer once per shard)",
                "send the statements one at a time",
            ));
        }
        Ok(target)
    }

    /// Some statement of the text returns rows (SELECT, RETURNING,
    /// EXPLAIN, SHOW, FETCH).
    pub fn returns_rows(&self) -> bool {
        self.control_rows || self.statements.iter().any(|s| s.returns_rows)
    }

    /// One plain SELECT (no locking clause, no INTO): a cross-shard merge
    /// may answer it when it goes to several shards.
    pub fn select(&self) -> bool {
        self.select
    }

    /// The text holds several statements: going to several shards, each
    /// SELECT among them must stream (`fanout::plan::plan_statements`).
    pub fn several(&self) -> bool {
        self.several
    }

    /// The text is only `SET LOCAL` (or `SET LOCAL ... TO DEFAULT`) of
    /// `search_path`, `pgdog.shard` or `pgdog.sharding_key`; values read
    /// from `sql`, this request's text. None also when the value is not one
    /// the setting takes (`SET pgdog.shard TO 'x'`).
    pub fn local_setting(&self, sql: &str) -> Option<ShardSetting> {
        self.setting.as_ref().filter(|s| s.local)?.read(sql)
    }

    /// The same for session-level `SET` / `RESET`.
    pub fn session_setting(&self, sql: &str) -> Option<ShardSetting> {
        self.setting.as_ref().filter(|s| !s.local)?.read(sql)
    }

    /// A sharding key given by a comment or the session, hashed with the
    /// rule of the statement's sharded table, or of the schema's only rule.
    /// When the candidate rules differ in data type: an integer rule if the
    /// value parses as an integer, else a text rule; a plain bigint / text
    /// hash when no candidate has that type.
    fn key_target(&self, key: &str, input: &ResolveInput<'_>) -> Result<Target, RouteError> {
        let tables = &input.schema.tables;
        let named = self
            .rules
            .iter()
            .filter_map(|&rule| tables.get(usize::from(rule)));
        let every = tables.iter().take(if self.rules.is_empty() {
            tables.len()
        } else {
            0
        });
        let candidates = || named.clone().chain(every.clone());
        let first = candidates().next();
        let one_type =
            first.is_some_and(|first| candidates().all(|rule| rule.data_type == first.data_type));
        let integer = key.trim().parse::<i64>().is_ok();
        let chosen = if one_type {
            first
        } else {
            candidates().find(|rule| is_integer_type(rule.data_type) == integer)
        };
        let fallback;
        let rule = match chosen {
            Some(rule) => rule,
            None => {
                fallback = ShardedTable {
                    name: None,
                    schema: None,
                    column: String::new(),
                    data_type: if integer {
                        DataType::BigInt
                    } else {
                        DataType::Text
                    },
                    mapping: Mapping::Hash,
                };
                &fallback
            }
        };
        match rule.shard(Some(key.as_bytes()), Format::Text, input.schema.shards)? {
            Some(shard) => Ok(Target::Shard(shard)),
            None => Err(RouteError::Unmapped),
        }
    }
}

fn is_integer_type(data_type: DataType) -> bool {
    matches!(
        data_type,
        DataType::BigInt | DataType::Integer | DataType::SmallInt
    )
}

fn checked(shard: u32, shards: u16) -> Result<Target, RouteError> {
    match u16::try_from(shard) {
        Ok(id) if id < shards => Ok(Target::Shard(ShardId(id))),
        _ => Err(RouteError::ShardOutOfRange { shard, shards }),
    }
}

/// Statements of one text go to one place, or the text is unsupported.
fn returning(clause: Option<&pg_query::protobuf::ReturningClause>) -> bool {
    clause.is_some_and(|clause| !clause.exprs.is_empty())
}

/// Whether a statement answers with rows.
fn returns_rows(node: &NodeEnum) -> bool {
    match node {
        // A SELECT without FROM (`select set_config(...)`, `setval`) that
        // rides with statements for every shard runs on each: migration
        // scripts rely on it, so its repeated row is let through.
        NodeEnum::SelectStmt(select) => {
            select.into_clause.is_none() && !select.from_clause.is_empty()
        }
        NodeEnum::InsertStmt(insert) => returning(insert.returning_clause.as_ref()),
        NodeEnum::UpdateStmt(update) => returning(update.returning_clause.as_ref()),
        NodeEnum::DeleteStmt(delete) => returning(delete.returning_clause.as_ref()),
        NodeEnum::ExplainStmt(_) | NodeEnum::VariableShowStmt(_) | NodeEnum::FetchStmt(_) => true,
        _ => false,
    }
}

fn combine(left: Target, right: Target) -> Result<Target, RouteError> {
    match (left, right) {
        (Target::Any, other) | (other, Target::Any) => Ok(other),
        (left, right) if left == right => Ok(left),
        _ => Err(unsupported(
            "a query string whose statements go to different shards",
            "send the statements one at a time",
        )),
    }
}

impl Statement {
    fn resolve(&self, input: &ResolveInput<'_>) -> Result<Target, RouteError> {
        let facts = &self.facts;
        if let Some(error) = &facts.error {
            return Err(RouteError::Unsupported(error.clone()));
        }
        if let Some(shard) = self.schema_shard(input)? {
            return Ok(Target::Shard(shard));
        }
        let target = match facts
            .keys
            .as_ref()
            .map(|keys| keys.eval(input))
            .transpose()?
        {
            None | Some(Set::Unconstrained) => self.base.clone(),
            Some(Set::Empty) => Target::Any,
            Some(Set::One(shard)) => Target::Shard(shard),
            Some(Set::Many(shards)) => Target::Shards(shards),
        };
        if let Some(error) = &facts.single_only {
            // One shard is right only when a single sharded table is read:
            // a key pins that table's rows, not another table's (a join not
            // on the key, a subquery reading another sharded table).
            if facts.sharded_refs > 1 || matches!(target, Target::All | Target::Shards(_)) {
                return Err(RouteError::Unsupported(error.clone()));
            }
        }
        if let Some(change) = &facts.key_change {
            key_change(change, &target, input)?;
        }
        Ok(target)
    }

    /// The shard of the sharded schemas the statement names.
    fn schema_shard(&self, input: &ResolveInput<'_>) -> Result<Option<ShardId>, RouteError> {
        let facts = &self.facts;
        let mut found: Option<ShardId> = None;
        let from_path = if facts.unqualified {
            let path = input.search_path.unwrap_or(SEARCH_PATH_DEFAULT);
            search_path_shard(input.schema, path)
        } else {
            None
        };
        for shard in facts.schema_shards.iter().copied().chain(from_path) {
            match found {
                Some(seen) if seen != shard => {
                    return Err(unsupported(
                        "a statement on sharded schemas of different shards",
                        "query one schema's shard at a time",
                    ))
                }
                _ => found = Some(shard),
            }
        }
        Ok(found)
    }
}

/// `UPDATE ... SET key = v` keeps the row where it is only when `v` hashes
/// to the one shard the statement goes to.
fn key_change(
    change: &KeyChange,
    target: &Target,
    input: &ResolveInput<'_>,
) -> Result<(), RouteError> {
    let stays = match (change, target) {
        (KeyChange::To(leaf), Target::Shard(shard)) => {
            KeyExpr::Leaf(*leaf).eval(input)? == Set::One(*shard)
        }
        (KeyChange::To(_), Target::Any) => true,
        _ => false,
    };
    if stays {
        Ok(())
    } else {
        Err(unsupported(
            "changing the sharding key",
            "delete the row and insert it again with the new key",
        ))
    }
}

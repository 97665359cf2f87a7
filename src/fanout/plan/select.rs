//! The analysis of one plain (not set-operation) cross-shard SELECT: which
//! shard-row column every ORDER BY key, group key and aggregate is, the
//! helper columns appended for those the client did not select, and the
//! HAVING condition as an [`Expr`] (`having`).
//!
//! The shard statement is the client's with helper columns appended after
//! its select list, HAVING made always true and LIMIT/OFFSET rewritten
//! (`limit`); nothing else of it changes. It must not decide routing.

use std::rc::Rc;

use pg_query::protobuf::{LimitOption, Node, ResTarget, SelectStmt, SortByDir, SortByNulls};
use pg_query::NodeEnum;

use super::aggregate::{self, as_call, check_supported, find_aggregate, Call, Found};
use super::limit::{self, Bound};
use super::node::{self, bare_name, is_star, key, output_name, position};
use super::{
    AggKind, AggregateColumn, AggregatePlan, FanoutQuery, MergePlan, SortKey, ALL_COLUMNS,
    NAMED_COLUMN,
};
use crate::fanout::Unsupported;

mod having;

/// Helper columns are named `_sleddog_<column number>` so that no name the
/// client's ORDER BY or GROUP BY could mean resolves to one of them.
const HIDDEN_PREFIX: &str = "_sleddog_";

/// The facts that decide whether the rows need a merge at all.
struct Shape {
    aggregation: bool,
    distinct: bool,
    limit: Bound,
    offset: Bound,
}

impl Shape {
    fn read(select: &SelectStmt) -> Result<Shape, Unsupported> {
        if LimitOption::try_from(select.limit_option) == Ok(LimitOption::WithTies) {
            return Err(route("FETCH FIRST ... WITH TIES"));
        }
        let distinct = match select.distinct_clause.as_slice() {
            [] => false,
            // Plain DISTINCT is a list holding one empty node.
            [only] if only.node.is_none() => true,
            _ => return Err(route("DISTINCT ON")),
        };
        let mentions_aggregate = |nodes: &[Node]| {
            nodes
                .iter()
                .any(|node| matches!(find_aggregate(node), Found::Aggregate(_)))
        };
        let aggregation = !select.group_clause.is_empty()
            || select.having_clause.is_some()
            || mentions_aggregate(&select.target_list)
            || mentions_aggregate(&select.sort_clause);
        Ok(Shape {
            aggregation,
            distinct,
            limit: Bound::read(select.limit_count.as_deref(), "LIMIT")?,
            offset: Bound::read(select.limit_offset.as_deref(), "OFFSET")?,
        })
    }

    fn needs_merge(&self, select: &SelectStmt) -> bool {
        self.aggregation
            || self.distinct
            || !select.sort_clause.is_empty()
            || self.limit.limit().is_some()
            || self.offset.offset().is_some()
    }
}

/// Whether a SELECT's rows can go to the client as each shard sends them.
pub(super) fn streams(select: &SelectStmt) -> Result<bool, Unsupported> {
    Ok(!Shape::read(select)?.needs_merge(select))
}

pub(super) fn plan(select: &SelectStmt, sql: &str) -> Result<FanoutQuery, Unsupported> {
    let shape = Shape::read(select)?;
    if !shape.needs_merge(select) {
        return Ok(FanoutQuery {
            shard_sql: None,
            merge: None,
        });
    }
    if !select.values_lists.is_empty() {
        return Err(route("VALUES with ORDER BY, LIMIT or OFFSET"));
    }
    let mut planner = Planner::new(select)?;
    let mut having = None;
    if shape.aggregation {
        if planner.star.is_some() {
            return Err(route("* in a query with aggregates or GROUP BY"));
        }
        for item in &select.group_clause {
            planner.group_item(item)?;
        }
        planner.aggregate_targets()?;
        if let Some(condition) = select.having_clause.as_deref() {
            having = Some(planner.having(condition)?);
        }
    }
    let order_by = select
        .sort_clause
        .iter()
        .map(|sort| planner.sort_key(sort, shape.aggregation))
        .collect::<Result<Vec<_>, _>>()?;

    let mut shard = select.clone();
    let mut changed = !planner.hidden.is_empty();
    shard.target_list.append(&mut planner.hidden);
    if let Some(condition) = shard.having_clause.take() {
        // Always true, so every shard returns every group; kept rather
        // than dropped so the statement stays grouped (HAVING without
        // GROUP BY makes one group) and its `$n` keep their inferred
        // types. The planner folds `... OR true` to true before running.
        shard.having_clause = Some(Box::new(node::or(vec![*condition, node::boolean(true)])));
        changed = true;
    }
    let per_shard = !shape.aggregation && !shape.distinct;
    changed |= limit::rewrite(&mut shard, &shape.limit, &shape.offset, per_shard);
    let shard_sql = if changed {
        Some(node::deparse(shard, Some(sql))?)
    } else {
        None
    };

    let visible = if planner.star.is_some() {
        ALL_COLUMNS
    } else {
        planner.visible
    };
    let aggregate = shape.aggregation.then_some(AggregatePlan {
        group_by: planner.group_by,
        aggregates: planner.aggregates,
        having,
    });
    Ok(FanoutQuery {
        shard_sql,
        merge: Some(Rc::new(MergePlan {
            visible,
            aggregate,
            distinct: shape.distinct,
            order_by,
            sort_names: planner.sort_names,
            offset: shape.offset.offset(),
            limit: shape.limit.limit(),
        })),
    })
}

/// A shard-row column as far as matching expressions goes.
enum Key<'a> {
    /// After a `*`: its position is not known.
    Unknown,
    /// A select-list expression whose key is not computed yet.
    Pending(&'a Node),
    Known(String),
}

struct Planner<'a> {
    targets: Vec<&'a ResTarget>,
    /// The client's column count (select-list entries; a star counts one).
    visible: usize,
    /// The first star entry: from it on, positions are not known.
    star: Option<usize>,
    /// The shard row's columns, visible then hidden, for matching.
    keys: Vec<Key<'a>>,
    /// Output names of the visible columns, `None` where not known.
    names: Vec<Option<String>>,
    /// Helper select-list entries to append.
    hidden: Vec<Node>,
    group_by: Vec<usize>,
    aggregates: Vec<AggregateColumn>,
    /// ORDER BY columns of a `*`, by name (`MergePlan::sort_names`).
    sort_names: Vec<String>,
}

impl<'a> Planner<'a> {
    fn new(select: &'a SelectStmt) -> Result<Self, Unsupported> {
        let targets: Vec<&ResTarget> = select
            .target_list
            .iter()
            .filter_map(|target| match target.node.as_ref() {
                Some(NodeEnum::ResTarget(target)) => Some(&**target),
                _ => None,
            })
            .collect();
        let star = targets.iter().position(|target| is_star(target));
        let mut keys = Vec::with_capacity(targets.len());
        let mut names = Vec::with_capacity(targets.len());
        for (index, target) in targets.iter().enumerate() {
            let known = star.is_none_or(|star| index < star);
            keys.push(match target.val.as_deref() {
                Some(val) if known => Key::Pending(val),
                _ => Key::Unknown,
            });
            names.push(if known { output_name(target) } else { None });
        }
        Ok(Planner {
            visible: targets.len(),
            targets,
            star,
            keys,
            names,
            hidden: Vec::new(),
            group_by: Vec::new(),
            aggregates: Vec::new(),
            sort_names: Vec::new(),
        })
    }

    /// The column computing `expression` (whose key is `key`), if any.
    fn column_of(&mut self, expression: &Node, key: &str) -> Result<Option<usize>, Unsupported> {
        let kind = expression.node.as_ref().map(std::mem::discriminant);
        for (column, known) in self.keys.iter_mut().enumerate() {
            if let Key::Pending(val) = *known {
                // Deparse only entries of the same node kind: others
                // cannot match, and most select lists never need a key.
                if val.node.as_ref().map(std::mem::discriminant) != kind {
                    continue;
                }
                *known = Key::Known(node::key(val)?);
            }
            if matches!(known, Key::Known(text) if text == key) {
                return Ok(Some(column));
            }
        }
        Ok(None)
    }

    /// The column computing `expression`: an existing one, else a new
    /// helper column. `purpose` names why, for the error with `SELECT *`.
    fn column(&mut self, expression: &Node, purpose: &str) -> Result<usize, Unsupported> {
        let key = key(expression)?;
        if let Some(column) = self.column_of(expression, &key)? {
            return Ok(column);
        }
        if self.star.is_some() {
            return Err(route(&format!(
                "SELECT * with {purpose} on a column it does not list by name"
            )));
        }
        let column = self.keys.len();
        let alias = format!("{HIDDEN_PREFIX}{column}");
        self.hidden
            .push(node::res_target(expression.clone(), alias));
        self.keys.push(Key::Known(key));
        Ok(column)
    }

    fn add_group_key(&mut self, column: usize) {
        if !self.group_by.contains(&column) {
            self.group_by.push(column);
        }
    }

    /// The column of `ORDER BY n` / `GROUP BY n`.
    fn position(&self, position: i32, clause: &str) -> Result<usize, Unsupported> {
        let index = usize::try_from(position)
            .ok()
            .and_then(|position| position.checked_sub(1));
        match (index, self.star) {
            // A star's first column is at the star's own position; later
            // ones are not known.
            (Some(index), Some(star)) if index > star => Err(route(&format!(
                "{clause} {position} after a * in the select list"
            ))),
            (Some(index), _) if index < self.visible => Ok(index),
            _ => Err(Unsupported {
                what: format!("{clause} position {position}"),
                hint: format!("the select list has {} columns", self.visible),
            }),
        }
    }

    /// A visible column whose output name is `name`.
    fn named(&self, name: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|known| known.as_deref() == Some(name))
    }

    fn group_item(&mut self, item: &Node) -> Result<(), Unsupported> {
        if matches!(item.node, Some(NodeEnum::GroupingSet(_))) {
            return Err(route("GROUPING SETS, ROLLUP and CUBE"));
        }
        let column = if let Some(number) = position(item) {
            self.position(number, "GROUP BY")?
        } else {
            let key = key(item)?;
            // An expression of the select list, else an output name
            // (`GROUP BY day` for `date_trunc('day', ts) AS day`), else a
            // helper column. Postgres prefers an input column of that
            // name; that needs the schema, so sleddog takes the alias.
            match self.column_of(item, &key)? {
                Some(column) => column,
                None => match bare_name(item).and_then(|name| self.named(name)) {
                    Some(column) => column,
                    None => self.column(item, "GROUP BY")?,
                },
            }
        };
        self.add_group_key(column);
        Ok(())
    }

    /// The client's select list in a query with aggregates: every entry is
    /// a supported aggregate or a group key.
    fn aggregate_targets(&mut self) -> Result<(), Unsupported> {
        for index in 0..self.targets.len() {
            let target = self.targets[index];
            let Some(val) = target.val.as_deref() else {
                continue;
            };
            match as_call(val).map(|call| (call, aggregate::classify(call))) {
                Some((call, Call::Supported(kind))) => {
                    check_supported(call, kind)?;
                    self.aggregate_at(index, call, kind)?;
                }
                Some((_, Call::Other(name))) => return Err(other_aggregate(&name)),
                _ => {
                    no_aggregate_inside(val, "the select list")?;
                    self.add_group_key(index);
                }
            }
        }
        Ok(())
    }

    /// Records the aggregate at `column` and finds or adds its partials.
    fn aggregate_at(
        &mut self,
        column: usize,
        call: &pg_query::protobuf::FuncCall,
        kind: AggKind,
    ) -> Result<(), Unsupported> {
        if self.aggregates.iter().any(|known| known.column == column) {
            return Ok(());
        }
        let partials = aggregate::partials(call, kind)
            .iter()
            .map(|partial| self.column(partial, "avg, variance or stddev"))
            .collect::<Result<Vec<_>, _>>()?;
        self.aggregates.push(AggregateColumn {
            column,
            kind,
            partials,
        });
        Ok(())
    }

    /// The column of an aggregate call met in HAVING or ORDER BY.
    fn aggregate(&mut self, node: &Node, purpose: &str) -> Result<Option<usize>, Unsupported> {
        let Some(call) = as_call(node) else {
            return Ok(None);
        };
        match aggregate::classify(call) {
            Call::NotAggregate => Ok(None),
            Call::Other(name) => Err(other_aggregate(&name)),
            Call::Supported(kind) => {
                check_supported(call, kind)?;
                let column = self.column(node, purpose)?;
                self.aggregate_at(column, call, kind)?;
                Ok(Some(column))
            }
        }
    }

    fn sort_key(&mut self, sort: &Node, aggregation: bool) -> Result<SortKey, Unsupported> {
        let Some(NodeEnum::SortBy(sort)) = sort.node.as_ref() else {
            return Err(route("this ORDER BY item"));
        };
        let descending = match SortByDir::try_from(sort.sortby_dir) {
            Ok(SortByDir::SortbyUsing) => return Err(route("ORDER BY ... USING")),
            Ok(SortByDir::SortbyDesc) => true,
            _ => false,
        };
        let nulls_first = match SortByNulls::try_from(sort.sortby_nulls) {
            Ok(SortByNulls::SortbyNullsFirst) => true,
            Ok(SortByNulls::SortbyNullsLast) => false,
            // Postgres's default: NULLs sort as if larger than any value.
            _ => descending,
        };
        let Some(expression) = sort.node.as_deref() else {
            return Err(route("this ORDER BY item"));
        };
        Ok(SortKey {
            column: self.sort_column(expression, aggregation)?,
            descending,
            nulls_first,
        })
    }

    /// ORDER BY resolves a position, then an output name, then an
    /// expression (Postgres's order, "queries-order" in the docs).
    fn sort_column(&mut self, expression: &Node, aggregation: bool) -> Result<usize, Unsupported> {
        if let Some(number) = position(expression) {
            return self.position(number, "ORDER BY");
        }
        if let Some(column) = bare_name(expression).and_then(|name| self.named(name)) {
            return Ok(column);
        }
        if let Some(column) = self.column_of(expression, &key(expression)?)? {
            return Ok(column);
        }
        if !aggregation {
            if self.star.is_some() {
                // A column of the `*`: found by name once the shards
                // describe their rows.
                if let Some(name) = column_name(expression) {
                    let index = match self.sort_names.iter().position(|n| *n == name) {
                        Some(index) => index,
                        None => {
                            self.sort_names.push(name);
                            self.sort_names.len() - 1
                        }
                    };
                    return Ok(NAMED_COLUMN + index);
                }
            }
            return self.column(expression, "ORDER BY");
        }
        if let Some(column) = self.aggregate(expression, "ORDER BY")? {
            return Ok(column);
        }
        no_aggregate_inside(expression, "ORDER BY")?;
        // Postgres allows only expressions of the group keys here, so
        // adding it to the key splits no group.
        let column = self.column(expression, "ORDER BY")?;
        self.add_group_key(column);
        Ok(column)
    }
}

/// Rejects an expression that holds an aggregate below its top (or a
/// node the search cannot see into): its per-shard value cannot be merged.
fn no_aggregate_inside(expression: &Node, place: &str) -> Result<(), Unsupported> {
    match find_aggregate(expression) {
        Found::Nothing => Ok(()),
        Found::Aggregate(name) => Err(Unsupported {
            what: format!("an aggregate inside an expression ({name}(...) in {place})"),
            hint: "select the aggregate itself and compute the expression in the application, \
                   or send it to one shard"
                .to_string(),
        }),
        Found::Opaque => Err(route(&format!(
            "this expression next to aggregates (in {place})"
        ))),
    }
}

fn other_aggregate(name: &str) -> Unsupported {
    route(&format!("the aggregate {name}()"))
}

/// An unsupported construct with the usual hint.
pub(super) fn route(what: &str) -> Unsupported {
    Unsupported {
        what: what.to_string(),
        hint: Unsupported::route_hint(),
    }
}

/// The column a plain column reference names (`id`, `u.id`): its last field.
fn column_name(expression: &Node) -> Option<String> {
    match expression.node.as_ref()? {
        NodeEnum::ColumnRef(column) => match column.fields.last()?.node.as_ref()? {
            NodeEnum::String(name) => Some(name.sval.clone()),
            _ => None,
        },
        _ => None,
    }
}

//! The cluster's cache of sharding plans by statement text: where a text
//! goes (`router::shard::plan`) and, for a single SELECT, how to fan it out
//! (`fanout::plan::plan_select`), from one pg_query parse. Values of bound
//! parameters are not part of a plan; the session resolves them per request.

use std::collections::HashMap;
use std::rc::Rc;

use shards::ShardingSchema;

use crate::fanout::plan::{plan_select, plan_statements, FanoutQuery};
use crate::fanout::Unsupported;
use crate::router::lex;
use crate::router::shard::{self, ShardPlan};

/// Distinct shapes (and texts) a cluster keeps plans for; past it that
/// map starts over.
const PLAN_CACHE_LIMIT: usize = 4096;

/// One text's routing plan. None: pg_query could not parse it, and any
/// shard will give the real error.
pub struct Planned {
    pub plan: Option<ShardPlan>,
}

/// Per cluster and core. Routing plans are keyed by the text's shape
/// (`lex::shape`: constants blanked), since they read key values from each
/// request's own text; fan-out plans are keyed by the exact text, since
/// the SQL they send the shards holds its constants.
#[derive(Default)]
pub struct PlanCache {
    routes: HashMap<Box<str>, Rc<Planned>>,
    fanouts: HashMap<Box<str>, Result<Rc<FanoutQuery>, Unsupported>>,
    shape: String,
}

impl PlanCache {
    /// The routing plan of `sql`.
    pub fn route(&mut self, sql: &str, schema: &ShardingSchema) -> Rc<Planned> {
        let shaped = lex::shape(sql, &mut self.shape);
        let key = if shaped { self.shape.as_str() } else { sql };
        if let Some(planned) = self.routes.get(key) {
            return planned.clone();
        }
        let plan = parse(sql).map(|parsed| shard::plan(&parsed.protobuf, sql, schema));
        let planned = Rc::new(Planned { plan });
        if self.routes.len() >= PLAN_CACHE_LIMIT {
            self.routes.clear();
        }
        let key: Box<str> = if shaped {
            self.shape.as_str().into()
        } else {
            sql.into()
        };
        self.routes.insert(key, planned.clone());
        planned
    }

    /// How to fan out `sql`, a single SELECT its routing plan sends to
    /// several shards.
    pub fn fanout(&mut self, sql: &str) -> Result<Rc<FanoutQuery>, Unsupported> {
        if let Some(fanout) = self.fanouts.get(sql) {
            return fanout.clone();
        }
        let fanout = match parse(sql) {
            Some(parsed) if parsed.protobuf.stmts.len() > 1 => {
                plan_statements(&parsed.protobuf, sql).map(Rc::new)
            }
            Some(parsed) => plan_select(&parsed.protobuf, sql).map(Rc::new),
            None => Err(Unsupported {
                what: "a query sleddog cannot parse".to_owned(),
                hint: Unsupported::route_hint(),
            }),
        };
        if self.fanouts.len() >= PLAN_CACHE_LIMIT {
            self.fanouts.clear();
        }
        self.fanouts.insert(sql.into(), fanout.clone());
        fanout
    }
}

fn parse(sql: &str) -> Option<pg_query::ParseResult> {
    pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).ok()
}

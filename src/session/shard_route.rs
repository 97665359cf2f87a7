//! Which shards a request goes to, on a cluster of several shards: each
//! Query, and each Bind with the text its statement was prepared with, is
//! planned once per distinct text (`router::plans`), cached on the cluster,
//! and resolved per request with the bound parameters and the session's
//! sharding settings. Must not: do I/O.

use std::rc::Rc;

use shards::{ShardId, ShardingSchema};

use crate::fanout::plan::FanoutQuery;
use crate::prepared::ClientStatements;
use crate::protocol::frame;
use crate::protocol::frontend::{BindParts, FrontendKind, FrontendMessage};
use crate::protocol::DEFAULT_MAX_MESSAGE_LEN;
use crate::router::plans::PlanCache;
use crate::router::shard::{ResolveInput, RouteError, ShardPlan, ShardSetting, Target};

/// A request that is one `SET [LOCAL]` of `search_path`, `pgdog.shard` or
/// `pgdog.sharding_key` (or its `RESET`): what it sets, and whether LOCAL.
pub fn sharding_setting(
    batch: &[u8],
    cache: &mut PlanCache,
    schema: &ShardingSchema,
) -> Option<(bool, ShardSetting)> {
    let header = frame::header(batch, DEFAULT_MAX_MESSAGE_LEN).ok()??;
    if header.total_len != batch.len() {
        return None;
    }
    let Ok(FrontendMessage::Query { sql }) = FrontendMessage::decode(batch) else {
        return None;
    };
    let planned = cache.route(sql, schema);
    let plan = planned.plan.as_ref()?;
    if let Some(setting) = plan.local_setting(sql) {
        return Some((true, setting));
    }
    plan.session_setting(sql).map(|setting| (false, setting))
}

/// The session's sharding settings (`SET pgdog.shard`, `SET
/// pgdog.sharding_key`, `search_path`).
#[derive(Clone, Copy, Default)]
pub struct SessionSharding<'a> {
    pub shard: Option<ShardId>,
    pub key: Option<&'a str>,
    pub search_path: Option<&'a str>,
}

/// Where a request goes.
#[derive(Debug)]
pub enum Decision {
    /// Any one shard will do (no table, an omnisharded read, SET/SHOW...).
    Any,
    One(usize),
    /// Several shards (sorted); `fanout` for a single SELECT that needs
    /// merging or streaming.
    Many {
        shards: Vec<usize>,
        fanout: Option<Rc<FanoutQuery>>,
    },
    /// Refused before any shard sees it.
    Refuse {
        sqlstate: &'static str,
        message: String,
        hint: Option<String>,
    },
}

/// Decides where `batch` (complete messages) goes.
pub fn decide(
    batch: &[u8],
    statements: &ClientStatements,
    cache: &mut PlanCache,
    schema: &ShardingSchema,
    session: SessionSharding<'_>,
) -> Decision {
    let mut decision = Decision::Any;
    let mut statements_seen = 0;
    // A statement for any one shard returns rows: refused if the request
    // goes to several.
    let mut rows_from_any = false;
    let mut parsed: Vec<(&str, &str)> = Vec::new();
    for msg in frame::messages(batch) {
        let step = match FrontendKind::from_tag(msg[0]) {
            Ok(FrontendKind::Query) => match FrontendMessage::decode(msg) {
                Ok(FrontendMessage::Query { sql }) => {
                    statements_seen += 1;
                    let (step, rows) = resolve(cache, sql, &[], &[], schema, session);
                    rows_from_any |= rows && matches!(step, Decision::Any);
                    step
                }
                _ => continue,
            },
            Ok(FrontendKind::Parse) => {
                if let Ok(FrontendMessage::Parse { name, sql, .. }) = FrontendMessage::decode(msg) {
                    parsed.push((name, sql));
                }
                continue;
            }
            Ok(FrontendKind::Bind) => {
                let Ok(parts) = BindParts::decode(msg) else {
                    continue;
                };
                let in_batch = parsed
                    .iter()
                    .rev()
                    .find(|(name, _)| *name == parts.statement);
                let sql = match in_batch {
                    Some((_, sql)) => *sql,
                    None => match statements
                        .get(parts.statement)
                        .and_then(|s| std::str::from_utf8(s.sql()).ok())
                    {
                        Some(sql) => sql,
                        None => continue,
                    },
                };
                statements_seen += 1;
                let formats = &parts.param_formats;
                let (step, rows) = resolve(cache, sql, &parts.params, formats, schema, session);
                rows_from_any |= rows && matches!(step, Decision::Any);
                step
            }
            _ => continue,
        };
        decision = combine(decision, step, statements_seen);
        if matches!(decision, Decision::Refuse { .. }) {
            return decision;
        }
    }
    match decision {
        // A statement for any one shard that returns rows, sent to several
        // with the rest: its rows would come once per shard.
        Decision::Many { .. } if rows_from_any => Decision::Refuse {
            sqlstate: "0A000",
            message: "not supported across shards: a request whose statements for several \
                      shards come with one that returns rows from any one shard (it would \
                      answer once per shard)"
                .to_owned(),
            hint: Some("send them as separate requests".to_owned()),
        },
        decision => decision,
    }
}

/// One statement's decision, and whether it returns rows.
fn resolve(
    cache: &mut PlanCache,
    sql: &str,
    params: &[Option<&[u8]>],
    formats: &[i16],
    schema: &ShardingSchema,
    session: SessionSharding<'_>,
) -> (Decision, bool) {
    let planned = cache.route(sql, schema);
    let Some(plan) = &planned.plan else {
        return (Decision::Any, false);
    };
    (
        decide_one(cache, plan, sql, params, formats, schema, session),
        plan.returns_rows(),
    )
}

fn decide_one(
    cache: &mut PlanCache,
    plan: &ShardPlan,
    sql: &str,
    params: &[Option<&[u8]>],
    formats: &[i16],
    schema: &ShardingSchema,
    session: SessionSharding<'_>,
) -> Decision {
    let input = ResolveInput {
        sql,
        params,
        param_formats: formats,
        schema,
        session_shard: session.shard,
        session_key: session.key,
        search_path: session.search_path,
    };
    let all = || (0..usize::from(schema.shards)).collect::<Vec<_>>();
    let shards = match plan.resolve(&input) {
        Ok(Target::Any) => return Decision::Any,
        Ok(Target::Shard(shard)) => return Decision::One(usize::from(shard.0)),
        Ok(Target::Shards(shards)) if shards.len() == 1 => {
            return Decision::One(usize::from(shards[0].0))
        }
        Ok(Target::Shards(shards)) => shards.iter().map(|s| usize::from(s.0)).collect(),
        Ok(Target::All) => all(),
        Err(error) => return refuse(error),
    };
    // Several statements with rows: each SELECT among them must stream.
    let planned = plan.select() || (plan.several() && plan.returns_rows());
    if !planned {
        return Decision::Many {
            shards,
            fanout: None,
        };
    }
    match cache.fanout(sql) {
        Err(unsupported) => Decision::Refuse {
            sqlstate: "0A000",
            message: unsupported.to_string(),
            hint: Some(unsupported.hint),
        },
        Ok(fanout) => Decision::Many {
            shards,
            fanout: Some(fanout),
        },
    }
}

fn refuse(error: RouteError) -> Decision {
    Decision::Refuse {
        sqlstate: error.sqlstate(),
        message: error.to_string(),
        hint: error.hint().map(str::to_owned),
    }
}

/// Two statements of one request: the same shard, or every shard with no
/// merge; anything else must be sent as separate requests.
fn combine(so_far: Decision, next: Decision, statements: usize) -> Decision {
    match (so_far, next) {
        (refused @ Decision::Refuse { .. }, _) | (_, refused @ Decision::Refuse { .. }) => refused,
        (Decision::Any, next) if statements <= 1 => next,
        (Decision::Any, Decision::Many { fanout, .. }) if merges(&fanout) => Decision::Refuse {
            sqlstate: "0A000",
            message:
                "a cross-shard SELECT that needs merging must be the only statement of its request"
                    .to_owned(),
            hint: Some("send it as a request of its own".to_owned()),
        },
        (Decision::Many { fanout, .. }, Decision::Any) if merges(&fanout) => Decision::Refuse {
            sqlstate: "0A000",
            message:
                "a cross-shard SELECT that needs merging must be the only statement of its request"
                    .to_owned(),
            hint: Some("send it as a request of its own".to_owned()),
        },
        (Decision::Any, Decision::Many { shards, .. }) => Decision::Many {
            shards,
            fanout: None,
        },
        (Decision::Any, next) | (next, Decision::Any) => next,
        (Decision::One(a), Decision::One(b)) if a == b => Decision::One(a),
        (
            Decision::Many {
                shards: a,
                fanout: fa,
            },
            Decision::Many {
                shards: b,
                fanout: fb,
            },
        ) if a == b && !merges(&fa) && !merges(&fb) => Decision::Many {
            shards: a,
            fanout: None,
        },
        _ => Decision::Refuse {
            sqlstate: "0A000",
            message: "the statements of one request go to different shards".to_owned(),
            hint: Some("send them as separate requests".to_owned()),
        },
    }
}

fn merges(fanout: &Option<Rc<FanoutQuery>>) -> bool {
    fanout.as_ref().is_some_and(|f| f.merge.is_some())
}

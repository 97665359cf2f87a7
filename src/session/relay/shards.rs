//! The relay on a cluster of several shards. A request with one shard to go
//! to runs on the usual path, on a connection checked out from that shard.
//! A transaction attaches shards as it touches them: the connection of the
//! shard it is on is `server`; those of shards it touched before are
//! `parked`, each inside the transaction (its `BEGIN` ran when it attached).
//! A request for several shards, and the COMMIT or ROLLBACK of a
//! transaction on several, goes to all of them at once (`fan_out`).

use std::rc::Rc;

use shards::ShardId;

use bytes::{Buf, BytesMut};

use super::{Checkout, End, Relay};
use crate::fanout::assemble::{self, Rows, Stream};
use crate::fanout::merge::Merge;
use crate::fanout::plan::FanoutQuery;
use crate::pool::PooledConn;
use crate::protocol::backend::TransactionStatus;
use crate::protocol::frontend::FrontendMessage;
use crate::protocol::write::{self, Severity};
use crate::protocol::{frame, DEFAULT_MAX_MESSAGE_LEN};
use crate::router::shard::ShardSetting;
use crate::router::Transaction;
use crate::rt;
use crate::session::fanout::{self, StatementSource};
use crate::session::scan::ClientBatch;
use crate::session::shard_route::{self, Decision, SessionSharding};

/// What a transaction set for its routing (`SET LOCAL search_path`,
/// `pgdog.shard`, `pgdog.sharding_key`, or their session-level `SET` inside
/// it): it routes the rest of the transaction, and the statements replay on
/// each shard the transaction attaches later, after its `BEGIN`.
#[derive(Default)]
pub(super) struct TransactionSharding {
    search_path: Option<String>,
    shard: Option<Option<ShardId>>,
    key: Option<Option<String>>,
    /// The statements, in order, for shards attached later.
    pub(super) statements: Vec<String>,
}

impl TransactionSharding {
    fn set(&mut self, setting: ShardSetting, sql: String) {
        match setting {
            ShardSetting::SearchPath(path) => self.search_path = Some(path),
            ShardSetting::Shard(shard) => self.shard = Some(shard),
            ShardSetting::ShardingKey(key) => self.key = Some(key),
        }
        self.statements.push(sql);
    }
}

/// Where the relay takes a request on a sharded cluster.
pub(super) enum Step {
    /// The usual single-connection path, on `Relay::shard`.
    Here,
    /// Handled (fanned out or refused).
    Done,
}

impl Relay<'_> {
    /// Sharded cluster, no server held: picks the shard for the request, or
    /// fans it out, or refuses it.
    pub(super) async fn route_shards(&mut self, batch: &ClientBatch) -> Result<Step, End> {
        if self.status == TransactionStatus::Idle && self.deferred_begin.is_none() {
            self.transaction_sharding = TransactionSharding::default();
        } else if self.deferred_begin.is_some() && self.hold_setting(batch).await? {
            return Ok(Step::Done);
        }
        match self.shard_decision(batch) {
            Decision::Any => {
                if !self.cluster.omnisharded_sticky || self.sticky_shard.is_none() {
                    self.sticky_shard = Some(self.cluster.any_shard());
                }
                self.shard = self.sticky_shard.unwrap_or(0);
                Ok(Step::Here)
            }
            Decision::One(shard) => {
                self.shard = shard;
                Ok(Step::Here)
            }
            Decision::Many { shards, fanout } => {
                self.many(batch, shards, fanout).await?;
                Ok(Step::Done)
            }
            Decision::Refuse {
                sqlstate,
                message,
                hint,
            } => {
                self.refuse(batch, sqlstate, &message, hint.as_deref())
                    .await?;
                Ok(Step::Done)
            }
        }
    }

    /// Sharded cluster, a transaction open on `server`, nothing owed: the
    /// next request may be for another shard (park this connection and
    /// attach that shard's), for several (fan out over all of them), or end
    /// a transaction that spans shards (fan out to the attached ones).
    pub(super) async fn route_in_transaction(&mut self, batch: &ClientBatch) -> Result<Step, End> {
        if let Some((_, setting)) = self.setting_of(batch) {
            // Runs here, on the shard the transaction is on; routes what
            // follows, and replays on shards attached later.
            let sql = query_text(&self.client.buf[..batch.len]);
            self.transaction_sharding.set(setting, sql);
            return Ok(Step::Here);
        }
        if !self.parked.is_empty() {
            if let Some(single) = self.ends_transaction_alone(batch) {
                if !single {
                    let message = "a transaction on several shards must end with a COMMIT or ROLLBACK sent alone";
                    self.refuse(batch, "0A000", message, None).await?;
                    return Ok(Step::Done);
                }
                let shards = self.attached_shards();
                self.fan_out(batch, shards, None).await?;
                return Ok(Step::Done);
            }
        }
        match self.shard_decision(batch) {
            Decision::Any => Ok(Step::Here),
            Decision::One(shard) if shard == self.shard => Ok(Step::Here),
            Decision::One(shard) => {
                self.park_current();
                if let Some(at) = self.parked.iter().position(|(s, _)| *s == shard) {
                    let (_, conn) = self.parked.swap_remove(at);
                    self.handle.set_server(Some(conn.cancel_key.clone()));
                    self.server = Some(conn);
                    self.shard = shard;
                    return Ok(Step::Here);
                }
                // A shard the transaction has not touched: its connection
                // opens the transaction first.
                self.shard = shard;
                self.deferred_begin
                    .get_or_insert_with(|| "BEGIN".to_owned());
                self.start_request_here(batch.clone()).await?;
                Ok(Step::Done)
            }
            Decision::Many { shards, fanout } => {
                self.many(batch, shards, fanout).await?;
                Ok(Step::Done)
            }
            Decision::Refuse {
                sqlstate,
                message,
                hint,
            } => {
                self.refuse(batch, sqlstate, &message, hint.as_deref())
                    .await?;
                Ok(Step::Done)
            }
        }
    }

    /// A request for several shards, unless `cross_shard_disabled`.
    async fn many(
        &mut self,
        batch: &ClientBatch,
        shards: Vec<usize>,
        fanout: Option<Rc<FanoutQuery>>,
    ) -> Result<(), End> {
        if self.cluster.cross_shard_disabled {
            let message = "cross-shard queries are disabled (cross_shard_disabled)";
            let hint = crate::fanout::Unsupported::route_hint();
            return self.refuse(batch, "0A000", message, Some(&hint)).await;
        }
        self.fan_out(batch, shards, fanout).await
    }

    /// A held `BEGIN` and nothing attached yet: a `SET LOCAL` of a sharding
    /// setting is held too (answered `SET`), so the statement after it can
    /// be routed by it; it runs after the `BEGIN` on every shard attached.
    async fn hold_setting(&mut self, batch: &ClientBatch) -> Result<bool, End> {
        let Some((true, setting)) = self.setting_of(batch) else {
            return Ok(false);
        };
        let sql = query_text(&self.client.buf[..batch.len]);
        self.transaction_sharding.set(setting, sql);
        self.client.buf.advance(batch.len);
        write::command_complete(&mut self.client.out, "SET");
        write::ready_for_query(&mut self.client.out, self.status);
        self.client.flush().await.map_err(|_| End::ClientGone)?;
        Ok(true)
    }

    fn setting_of(&self, batch: &ClientBatch) -> Option<(bool, ShardSetting)> {
        if batch.sync_points != 1 || batch.unsynced {
            return None;
        }
        shard_route::sharding_setting(
            &self.client.buf[..batch.len],
            &mut self.cluster.plans.borrow_mut(),
            &self.cluster.sharding,
        )
    }

    fn shard_decision(&self, batch: &ClientBatch) -> Decision {
        let local = &self.transaction_sharding;
        let shard = match local.shard {
            Some(shard) => shard,
            None => self
                .params
                .get("pgdog.shard")
                .and_then(|v| v.trim().parse::<u16>().ok())
                .map(ShardId),
        };
        let key = match &local.key {
            Some(key) => key.as_deref(),
            None => self
                .params
                .get("pgdog.sharding_key")
                .filter(|v| !v.is_empty()),
        };
        let session = SessionSharding {
            shard,
            key,
            search_path: local
                .search_path
                .as_deref()
                .or_else(|| self.params.get("search_path")),
        };
        shard_route::decide(
            &self.client.buf[..batch.len],
            &self.statements,
            &mut self.cluster.plans.borrow_mut(),
            &self.cluster.sharding,
            session,
        )
    }

    /// Some(true): the request is one COMMIT/ROLLBACK (or END/ABORT) and
    /// nothing else; Some(false): it ends the transaction among other
    /// statements; None: it does not end it.
    fn ends_transaction_alone(&self, batch: &ClientBatch) -> Option<bool> {
        let mut ends = false;
        let mut statements = 0;
        for message in messages(&self.client.buf[..batch.len]) {
            let sql = match FrontendMessage::decode(message) {
                Ok(FrontendMessage::Query { sql }) | Ok(FrontendMessage::Parse { sql, .. }) => sql,
                _ => continue,
            };
            let classified = self.core.router.borrow_mut().get_or_classify(sql);
            statements += classified.statements.max(1);
            ends |= matches!(
                classified.transaction,
                Some(
                    Transaction::Commit { .. }
                        | Transaction::Rollback { .. }
                        | Transaction::PrepareTransaction
                )
            );
        }
        ends.then_some(statements == 1)
    }

    fn attached_shards(&self) -> Vec<usize> {
        let mut shards: Vec<usize> = self.parked.iter().map(|(s, _)| *s).collect();
        if self.server.is_some() {
            shards.push(self.shard);
        }
        shards.sort_unstable();
        shards
    }

    fn park_current(&mut self) {
        if let Some(conn) = self.server.take() {
            self.handle.set_server(None);
            self.parked.push((self.shard, conn));
        }
    }

    /// Answers a request no shard will see with `message` (and `hint`).
    async fn refuse(
        &mut self,
        batch: &ClientBatch,
        sqlstate: &str,
        message: &str,
        hint: Option<&str>,
    ) -> Result<(), End> {
        let out = &mut self.client.out;
        for _ in 0..batch.sync_points {
            write::error_response(out, Severity::Error, sqlstate, message, hint);
            if self.status == TransactionStatus::InTransaction {
                self.status = TransactionStatus::Failed;
            }
            write::ready_for_query(out, self.status);
        }
        if batch.unsynced {
            write::error_response(out, Severity::Error, sqlstate, message, hint);
            self.discard_until_sync = true;
        }
        self.client.buf.advance(batch.len);
        self.client.flush().await.map_err(|_| End::ClientGone)
    }

    /// Runs the request on every shard in `shards` at once, on this
    /// transaction's connections where it has them and on new ones
    /// elsewhere, and answers the client with one reply.
    async fn fan_out(
        &mut self,
        batch: &ClientBatch,
        shards: Vec<usize>,
        query: Option<Rc<FanoutQuery>>,
    ) -> Result<(), End> {
        if batch.unsynced || batch.sync_points == 0 {
            let message = "a cross-shard request must end with Sync";
            return self.refuse(batch, "0A000", message, None).await;
        }
        let source = Source {
            query: query.as_deref(),
            relay: self,
        };
        let built = fanout::build(&messages(&self.client.buf[..batch.len]), &source);
        let fanned = match built {
            Ok(fanned) => fanned,
            Err(message) => return self.refuse(batch, "0A000", &message, None).await,
        };
        let rows = match query.as_ref().and_then(|q| q.merge.as_ref()) {
            Some(plan) => {
                let params: Vec<Option<&[u8]>> =
                    fanned.params.iter().map(|(_, v)| v.as_deref()).collect();
                let formats: Vec<i16> = fanned.params.iter().map(|(f, _)| *f).collect();
                match Merge::new(Rc::new(plan.clone()), &params, &formats) {
                    Ok(merge) => FanRows::Merge(Box::new(merge)),
                    Err(error) => {
                        return self.refuse(batch, "0A000", &error.to_string(), None).await
                    }
                }
            }
            None => FanRows::Stream(Stream::default()),
        };
        let mut fanned = fanned;
        fanned.visible = query
            .as_ref()
            .and_then(|q| q.merge.as_ref())
            .map_or(usize::MAX, |m| m.visible);
        let conns = match self.attach(batch, &shards).await? {
            Some(conns) => conns,
            None => return Ok(()),
        };
        self.finish_fan_out(batch, conns, fanned, rows).await
    }

    /// A connection for each shard: the transaction's own, or a new one
    /// (brought to the session's settings, and into the transaction when one
    /// is open). None when a checkout failed (the client has its error).
    async fn attach(
        &mut self,
        batch: &ClientBatch,
        shards: &[usize],
    ) -> Result<Option<Vec<(usize, PooledConn)>>, End> {
        let in_transaction = self.status != TransactionStatus::Idle;
        let begin = self
            .deferred_begin
            .clone()
            .or_else(|| in_transaction.then(|| "BEGIN".to_owned()));
        let intent = self.route(batch).intent;
        let mut conns: Vec<(usize, PooledConn)> = Vec::with_capacity(shards.len());
        self.park_current();
        for &shard in shards {
            if let Some(at) = self.parked.iter().position(|(s, _)| *s == shard) {
                conns.push(self.parked.swap_remove(at));
                continue;
            }
            self.shard = shard;
            self.handle.waiting.set(true);
            self.handle.withdraw.reset();
            let outcome = self.checkout(intent).await;
            self.handle.waiting.set(false);
            let mut conn = match outcome {
                Checkout::Got(conn) => conn,
                Checkout::Withdrawn => {
                    self.return_conns(conns);
                    let message = "canceling statement due to user request";
                    self.fail_request(batch.clone(), "57014", message).await?;
                    return Ok(None);
                }
                Checkout::Failed(error) => {
                    self.return_conns(conns);
                    let (sqlstate, message) =
                        super::checkout_failure(&error, &self.cluster.database);
                    if !self.settings.keep_client_on_pool_error {
                        return Err(End::PoolError(sqlstate, message));
                    }
                    self.fail_request(batch.clone(), sqlstate, &message).await?;
                    return Ok(None);
                }
            };
            conn.prepared.set_limit(self.settings.statements_limit);
            let ready = match self.bring_to_client_settings(&mut conn).await {
                Ok(()) => match &begin {
                    Some(sql) => self.open_transaction(&mut conn, sql).await,
                    None => true,
                },
                Err(_) => false,
            };
            if !ready {
                self.return_conns(conns);
                let message = "could not start the transaction on a shard";
                self.fail_request(batch.clone(), "08006", message).await?;
                return Ok(None);
            }
            conns.push((shard, conn));
        }
        if self.deferred_begin.take().is_some() {
            self.status = TransactionStatus::InTransaction;
        }
        Ok(Some(conns))
    }

    /// Runs the transaction's `BEGIN` on a newly attached connection, then
    /// the sharding settings the transaction made so far.
    pub(super) async fn open_transaction(&self, conn: &mut PooledConn, begin: &str) -> bool {
        // One round trip: BEGIN and the settings in one simple Query, which
        // must end inside the transaction.
        let mut sql = begin.trim_end().trim_end_matches(';').to_owned();
        for statement in &self.transaction_sharding.statements {
            sql.push_str("; ");
            sql.push_str(statement);
        }
        matches!(
            rt::timeout(super::RESET_TIMEOUT, conn.begin(&sql)).await,
            Some(Ok(()))
        )
    }

    /// Puts connections back where they came from after a failed attach:
    /// inside a transaction they stay attached; otherwise they are clean.
    fn return_conns(&mut self, conns: Vec<(usize, PooledConn)>) {
        for (shard, conn) in conns {
            if self.status == TransactionStatus::Idle && self.deferred_begin.is_none() {
                conn.pool().clone().checkin(conn);
            } else {
                self.parked.push((shard, conn));
            }
        }
    }

    async fn finish_fan_out(
        &mut self,
        batch: &ClientBatch,
        mut conns: Vec<(usize, PooledConn)>,
        fanned: fanout::Fanned,
        mut rows: FanRows,
    ) -> Result<(), End> {
        let requests = vec![fanned.request; conns.len()];
        let exchange = fanout::exchange(
            conns.iter_mut().map(|(_, c)| &mut **c).collect(),
            &requests,
            fanned.ready,
        );
        let result = match self.settings.query_timeout {
            Some(limit) => rt::timeout(limit, exchange).await,
            None => Some(exchange.await),
        };
        self.client.buf.advance(batch.len);
        let replies = match result {
            Some(Ok(replies)) => replies,
            Some(Err(error)) => {
                tracing::warn!(shard = error.shard, error = %error.message, "cross-shard request failed");
                return self.lose_fan_out(conns, "08006", &error.message).await;
            }
            None => {
                for (_, conn) in &conns {
                    super::cancel_in_background(conn);
                }
                return self
                    .lose_fan_out(conns, "57014", "canceling statement due to query_timeout")
                    .await;
            }
        };
        let slices: Vec<&[u8]> = replies.iter().map(|r| &r[..]).collect();
        let mut out = BytesMut::new();
        let visible = fanned.visible;
        let assembled = match &mut rows {
            FanRows::Stream(stream) => {
                assemble::assemble(&fanned.ops, &slices, stream, visible, &mut out)
            }
            FanRows::Merge(merge) => {
                assemble::assemble(&fanned.ops, &slices, merge.as_mut(), visible, &mut out)
            }
        };
        let status = match assembled {
            Ok(status) => status,
            Err(error) => {
                // Every shard answered in full: the connections are sound.
                let status = combined(&slices);
                out.clear();
                for _ in 0..fanned.ready {
                    write::error_response(
                        &mut out,
                        Severity::Error,
                        "XX000",
                        &error.to_string(),
                        None,
                    );
                    write::ready_for_query(&mut out, status);
                }
                status
            }
        };
        fanout::answer_closes(&mut self.client.out, fanned.closes);
        self.client.out.extend_from_slice(&out);
        self.status = status;
        if status == TransactionStatus::Idle {
            for (_, conn) in conns {
                conn.pool().clone().checkin(conn);
            }
        } else {
            let (shard, current) = conns.remove(0);
            self.parked.extend(conns);
            self.shard = shard;
            self.handle.set_server(Some(current.cancel_key.clone()));
            self.server = Some(current);
        }
        self.client.flush().await.map_err(|_| End::ClientGone)
    }

    /// A shard failed mid-request: the connections are closed. Outside a
    /// transaction the client gets an error; inside one, its session ends,
    /// as it would if its server went away.
    async fn lose_fan_out(
        &mut self,
        conns: Vec<(usize, PooledConn)>,
        sqlstate: &str,
        message: &str,
    ) -> Result<(), End> {
        drop(conns);
        let in_transaction = self.status != TransactionStatus::Idle || !self.parked.is_empty();
        self.parked.clear();
        let out = &mut self.client.out;
        if in_transaction {
            write::error_response(out, Severity::Fatal, sqlstate, message, None);
            let _ = self.client.flush().await;
            return Err(End::ServerGone);
        }
        write::error_response(out, Severity::Error, sqlstate, message, None);
        write::ready_for_query(out, TransactionStatus::Idle);
        self.client.flush().await.map_err(|_| End::ClientGone)
    }
}

/// The transaction status the shards' last ReadyForQuery messages give.
fn combined(replies: &[&[u8]]) -> TransactionStatus {
    let mut status = TransactionStatus::Idle;
    for reply in replies {
        let last = reply
            .len()
            .checked_sub(1)
            .and_then(|i| reply.get(i))
            .copied();
        match last.and_then(|b| TransactionStatus::from_byte(b).ok()) {
            Some(TransactionStatus::Failed) => return TransactionStatus::Failed,
            Some(TransactionStatus::InTransaction) => status = TransactionStatus::InTransaction,
            _ => {}
        }
    }
    status
}

/// The text of a batch that is one simple Query.
fn query_text(batch: &[u8]) -> String {
    match FrontendMessage::decode(batch) {
        Ok(FrontendMessage::Query { sql }) => sql.to_owned(),
        _ => String::new(),
    }
}

/// The whole messages of a batch.
fn messages(batch: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut offset = 0;
    while let Ok(Some(header)) = frame::header(&batch[offset..], DEFAULT_MAX_MESSAGE_LEN) {
        let end = offset + header.total_len;
        let Some(message) = batch.get(offset..end) else {
            break;
        };
        out.push(message);
        offset = end;
    }
    out
}

/// Rows of a fan-out: streamed, or merged per the plan (boxed: a merge's
/// state is large, and fan-out is not the hot path).
enum FanRows {
    Stream(Stream),
    Merge(Box<Merge>),
}

impl Rows for Merge {
    fn description(&mut self, shard: usize, body: &[u8]) -> Result<(), String> {
        self.row_description(shard, body).map_err(|e| e.to_string())
    }
    fn client_description(&self, out: &mut BytesMut) {
        self.client_row_description(out)
    }
    fn row(&mut self, shard: usize, body: &[u8]) -> Result<(), String> {
        self.data_row(shard, body).map_err(|e| e.to_string())
    }
    fn finish(&mut self, out: &mut BytesMut) -> Result<u64, String> {
        Merge::finish(self, out).map_err(|e| e.to_string())
    }
}

/// What the shards run for the client's texts.
struct Source<'r, 'a> {
    query: Option<&'r FanoutQuery>,
    relay: &'r Relay<'a>,
}

impl StatementSource for Source<'_, '_> {
    fn shard_sql(&self, sql: &str) -> String {
        match self.query.and_then(|q| q.shard_sql.as_deref()) {
            Some(rewritten) => rewritten.to_owned(),
            None => sql.to_owned(),
        }
    }

    fn named(&self, name: &str) -> Option<(String, Vec<u32>)> {
        let statement = self.relay.statements.get(name)?;
        let sql = String::from_utf8_lossy(statement.sql()).into_owned();
        Some((sql, statement.param_types()))
    }
}

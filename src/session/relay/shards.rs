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
use crate::fanout::assemble::{self, Rows, RowsError, Stream};
use crate::fanout::merge::{Merge, MergeError};
use crate::fanout::plan::FanoutQuery;
use crate::pool::PooledConn;
use crate::protocol::backend::TransactionStatus;
use crate::protocol::frontend::{DescribeTarget, FrontendKind, FrontendMessage};
use crate::protocol::write::{self, Severity};
use crate::protocol::{frame, DEFAULT_MAX_MESSAGE_LEN};
use crate::router::shard::ShardSetting;
use crate::router::Transaction;
use crate::rt::{self, AsyncWriteExt};
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
    /// The statements, in order, for shards attached later: settings and
    /// savepoints.
    pub(super) statements: Vec<String>,
    /// The `BEGIN` the client sent, when it was held.
    pub(super) begin: Option<String>,
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

/// Transaction control and settings, which a transaction on several shards
/// must apply on all of them.
pub(super) enum Control {
    /// COMMIT or ROLLBACK (or PREPARE TRANSACTION); `alone`: the request's
    /// only statement.
    End {
        alone: bool,
    },
    /// SAVEPOINT or RELEASE.
    Savepoint,
    RollbackToSavepoint,
    /// COMMIT/ROLLBACK PREPARED, PREPARE TRANSACTION alone.
    TwoPhase,
    /// SET/RESET, SET TRANSACTION; with what it sets for routing, if that.
    Setting(Option<ShardSetting>),
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
            self.fan_dirty = false;
            if !self.parked.is_empty() {
                // Never reached by design: no transaction is open, so none
                // may stay attached. Closing them rolls them back.
                tracing::error!(
                    shards = self.parked.len(),
                    "connections parked outside a transaction"
                );
                self.parked.clear();
            }
        } else if self.deferred_begin.is_some() && self.hold_setting(batch).await? {
            return Ok(Step::Done);
        }
        if self.two_phase(batch) {
            let message = "two-phase commit commands on a sharded database are not supported yet";
            self.refuse(batch, "0A000", message, None).await?;
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
            other => self.not_here(batch, other).await,
        }
    }

    /// Sharded cluster, a server held (a transaction open on it, or the
    /// session pinned to it), nothing owed: the next request may be for
    /// another shard (park this connection and attach that shard's), for
    /// several (fan out over all of them), or control a transaction that
    /// spans shards (fan out to the attached ones).
    pub(super) async fn route_in_transaction(&mut self, batch: &ClientBatch) -> Result<Step, End> {
        let control = self.control_of(batch);
        if self.status == TransactionStatus::Failed {
            return self.in_failed_transaction(batch, control).await;
        }
        let pinned = self.status == TransactionStatus::Idle;
        match control {
            Some(Control::TwoPhase) => {
                let message = "two-phase commit commands on a sharded database";
                self.refuse(
                    batch,
                    "0A000",
                    &format!("{message} are not supported yet"),
                    None,
                )
                .await?;
                return Ok(Step::Done);
            }
            Some(Control::End { alone: false })
                if !self.parked.is_empty() || !self.stays_here(batch) =>
            {
                let message = "a COMMIT or ROLLBACK on a sharded database must be sent alone, \
                               not among other statements";
                self.refuse(batch, "0A000", message, None).await?;
                return Ok(Step::Done);
            }
            Some(Control::End { alone: true }) if !self.parked.is_empty() => {
                let shards = self.attached_shards();
                self.fan_out(batch, shards, None).await?;
                return Ok(Step::Done);
            }
            Some(Control::Savepoint | Control::RollbackToSavepoint) => {
                // Every shard of the transaction keeps the same savepoints;
                // shards attached later replay them after their BEGIN.
                let sql = query_text(&self.client.buf[..batch.len]);
                self.transaction_sharding.statements.push(sql);
                if !self.parked.is_empty() {
                    let shards = self.attached_shards();
                    self.fan_out(batch, shards, None).await?;
                    return Ok(Step::Done);
                }
                return Ok(Step::Here);
            }
            Some(Control::Setting(setting)) if !pinned => {
                // Runs here, on the shard the transaction is on; routes what
                // follows, and replays on shards attached later.
                let sql = query_text(&self.client.buf[..batch.len]);
                match setting {
                    Some(setting) => self.transaction_sharding.set(setting, sql),
                    None => self.transaction_sharding.statements.push(sql),
                }
                return Ok(Step::Here);
            }
            _ => {}
        }
        match self.shard_decision(batch) {
            Decision::Any => Ok(Step::Here),
            Decision::One(shard) if shard == self.shard => Ok(Step::Here),
            Decision::One(_) | Decision::Many { .. } if pinned => {
                let message = format!(
                    "this session is pinned to shard {} (a session advisory lock or pgdog.pin) \
                     and the request needs another shard",
                    self.shard
                );
                self.refuse(batch, "0A000", &message, None).await?;
                Ok(Step::Done)
            }
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
                // opens the transaction first (with the transaction's own
                // BEGIN and the settings and savepoints made so far).
                self.shard = shard;
                let begin = self.transaction_begin();
                self.deferred_begin.get_or_insert(begin);
                self.start_request_here(batch.clone()).await?;
                Ok(Step::Done)
            }
            other => self.not_here(batch, other).await,
        }
    }

    /// The request goes to the shard the transaction is on (or any).
    fn stays_here(&self, batch: &ClientBatch) -> bool {
        match self.shard_decision(batch) {
            Decision::Any => true,
            Decision::One(shard) => shard == self.shard,
            _ => false,
        }
    }

    /// The transaction failed (on a shard, or refused here): as Postgres
    /// does, only its end or a ROLLBACK TO SAVEPOINT is run; COMMIT and
    /// ROLLBACK roll back every shard and are answered `ROLLBACK`; anything
    /// else gets 25P02. A COMMIT never reaches the shards that did not fail.
    async fn in_failed_transaction(
        &mut self,
        batch: &ClientBatch,
        control: Option<Control>,
    ) -> Result<Step, End> {
        match control {
            Some(Control::RollbackToSavepoint) => {
                let shards = self.attached_shards();
                self.fan_out(batch, shards, None).await?;
            }
            // The same test answer_failed_transaction answers by (a COMMIT
            // or ROLLBACK without AND CHAIN), so both agree on the status.
            Some(Control::End { alone: true }) if self.ends_failed_transaction(batch) => {
                self.roll_back_attached().await;
                self.answer_failed_transaction(batch.clone()).await?;
            }
            _ => {
                let message = "current transaction is aborted, commands ignored until end of transaction block";
                self.refuse(batch, "25P02", message, None).await?;
            }
        }
        Ok(Step::Done)
    }

    fn ends_failed_transaction(&self, batch: &ClientBatch) -> bool {
        let bytes = &self.client.buf[..batch.len];
        super::ends_transaction(bytes, &mut self.core.router.borrow_mut()).is_some()
    }

    /// Rolls back the transaction on every attached shard; connections that
    /// cannot are closed (which rolls back too).
    async fn roll_back_attached(&mut self) {
        self.park_current();
        for (_, mut conn) in std::mem::take(&mut self.parked) {
            let rolled_back = matches!(
                rt::timeout(super::RESET_TIMEOUT, conn.execute("ROLLBACK")).await,
                Some(Ok(()))
            );
            if rolled_back && !self.fan_dirty {
                conn.pool().clone().checkin(conn);
            }
        }
        self.fan_dirty = false;
        self.status = TransactionStatus::Idle;
    }

    /// The BEGIN that opened the transaction (its access mode and isolation
    /// level go to every shard it attaches), else a plain one.
    fn transaction_begin(&self) -> String {
        self.transaction_sharding
            .begin
            .clone()
            .unwrap_or_else(|| "BEGIN".to_owned())
    }

    /// A simple Query that is a two-phase commit command (COMMIT/ROLLBACK
    /// PREPARED outside a transaction). Only a lone Query is looked at.
    fn two_phase(&self, batch: &ClientBatch) -> bool {
        if batch.sync_points != 1 || batch.unsynced {
            return false;
        }
        let Ok(FrontendMessage::Query { sql }) =
            FrontendMessage::decode(&self.client.buf[..batch.len])
        else {
            return false;
        };
        let classified = self.core.router.borrow_mut().get_or_classify(sql);
        matches!(
            classified.transaction,
            Some(
                Transaction::PrepareTransaction
                    | Transaction::CommitPrepared
                    | Transaction::RollbackPrepared
            )
        )
    }

    /// What the request does to the transaction, when it is transaction
    /// control or a setting sent as one simple Query (or, for COMMIT and
    /// ROLLBACK, anywhere in it).
    fn control_of(&self, batch: &ClientBatch) -> Option<Control> {
        if let Some(alone) = self.ends_transaction_alone(batch) {
            return Some(Control::End { alone });
        }
        if batch.sync_points != 1 || batch.unsynced {
            return None;
        }
        let bytes = &self.client.buf[..batch.len];
        let Ok(FrontendMessage::Query { sql }) = FrontendMessage::decode(bytes) else {
            return None;
        };
        let classified = self.core.router.borrow_mut().get_or_classify(sql);
        if classified.statements != 1 {
            return None;
        }
        match classified.transaction {
            Some(Transaction::Savepoint | Transaction::ReleaseSavepoint) => {
                return Some(Control::Savepoint)
            }
            Some(Transaction::RollbackToSavepoint) => return Some(Control::RollbackToSavepoint),
            Some(
                Transaction::PrepareTransaction
                | Transaction::CommitPrepared
                | Transaction::RollbackPrepared,
            ) => return Some(Control::TwoPhase),
            Some(Transaction::SetAccess(_)) => return Some(Control::Setting(None)),
            _ => {}
        }
        if let Some((_, setting)) = self.setting_of(batch) {
            return Some(Control::Setting(Some(setting)));
        }
        let word = crate::router::first_word(sql)?;
        (word.eq_ignore_ascii_case("set") || word.eq_ignore_ascii_case("reset"))
            .then_some(Control::Setting(None))
    }

    /// A decision the single-connection path does not take: several shards,
    /// or a refusal.
    async fn not_here(&mut self, batch: &ClientBatch, decision: Decision) -> Result<Step, End> {
        match decision {
            Decision::Many { shards, fanout } => self.many(batch, shards, fanout).await?,
            Decision::Refuse {
                sqlstate,
                message,
                hint,
            } => {
                self.refuse(batch, sqlstate, &message, hint.as_deref())
                    .await?
            }
            Decision::Any | Decision::One(_) => return Ok(Step::Here),
        }
        Ok(Step::Done)
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
        let mut parsed: Vec<(&str, &str)> = Vec::new();
        let mut router = self.core.router.borrow_mut();
        for message in frame::messages(&self.client.buf[..batch.len]) {
            let sql = match FrontendMessage::decode(message) {
                Ok(FrontendMessage::Query { sql }) => sql,
                Ok(FrontendMessage::Parse { name, sql, .. }) => {
                    parsed.push((name, sql));
                    continue;
                }
                Ok(FrontendMessage::Bind { statement, .. }) => {
                    match parsed.iter().rev().find(|(name, _)| *name == statement) {
                        Some((_, sql)) => sql,
                        None => match self.statements.get(statement) {
                            Some(known) => {
                                let Ok(sql) = std::str::from_utf8(known.sql()) else {
                                    continue;
                                };
                                let classified = router.get_or_classify(sql);
                                statements += 1;
                                ends |= classified.ends_transaction;
                                continue;
                            }
                            None => continue,
                        },
                    }
                }
                _ => continue,
            };
            let classified = router.get_or_classify(sql);
            statements += classified.statements.max(1);
            ends |= classified.ends_transaction;
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
            // The relay's reset flags follow the current connection only:
            // state it may hold (a SET, a temporary table, a lock) makes
            // every connection of the transaction close at its end.
            self.fan_dirty |= self.dirty || self.capture || self.advisory;
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
        if self.status == TransactionStatus::InTransaction && batch.sync_points > 0 {
            self.status = TransactionStatus::Failed;
        }
        self.answer_with_error(batch, sqlstate, message, hint).await
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
        self.remember_statements(batch);
        let source = Source {
            query: query.as_deref(),
            relay: self,
        };
        let built = fanout::build(frame::messages(&self.client.buf[..batch.len]), &source);
        let fanned = match built {
            Ok(fanned) => fanned,
            Err(message) => return self.refuse(batch, "0A000", &message, None).await,
        };
        let rows = match query.as_ref().and_then(|q| q.merge.as_ref()) {
            Some(plan) => {
                let params: Vec<Option<&[u8]>> =
                    fanned.params.iter().map(|(_, v)| v.as_deref()).collect();
                let formats: Vec<i16> = fanned.params.iter().map(|(f, _)| *f).collect();
                match Merge::new(plan.clone(), &params, &formats) {
                    Ok(merge) => FanRows::Merge(Box::new(merge)),
                    Err(error) => {
                        let sqlstate = error.sqlstate();
                        return self.refuse(batch, sqlstate, &error.to_string(), None).await;
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
        if matches!(rows, FanRows::Stream(_))
            && fanout::streamable(&fanned.ops, self.single_statement(batch))
        {
            return self.stream_fan_out(batch, conns, fanned).await;
        }
        self.finish_fan_out(batch, conns, fanned, rows).await
    }

    /// Named statements a cross-shard request prepares or closes: the
    /// session knows them by name for its later requests (the shards
    /// themselves run the unnamed statement).
    fn remember_statements(&mut self, batch: &ClientBatch) {
        if !self.settings.rename_statements {
            return;
        }
        for message in frame::messages(&self.client.buf[..batch.len]) {
            match FrontendMessage::decode(message) {
                Ok(FrontendMessage::Parse { name, .. }) if !name.is_empty() => {
                    let tail = &message[5 + name.len() + 1..];
                    let statement = self.core.statements.borrow_mut().intern(tail);
                    self.statements.insert(name, statement);
                }
                Ok(FrontendMessage::Close {
                    target: DescribeTarget::Statement,
                    name,
                }) if !name.is_empty() => {
                    self.statements.remove(name);
                }
                _ => {}
            }
        }
    }

    /// A request that is one simple Query of one statement (or not a
    /// simple Query at all).
    fn single_statement(&self, batch: &ClientBatch) -> bool {
        match FrontendMessage::decode(&self.client.buf[..batch.len]) {
            Ok(FrontendMessage::Query { sql }) => {
                self.core
                    .router
                    .borrow_mut()
                    .get_or_classify(sql)
                    .statements
                    == 1
            }
            _ => true,
        }
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
            .or_else(|| in_transaction.then(|| self.transaction_begin()));
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
        let mut dirty = self.fan_out_dirty(batch);
        let cancels: Vec<_> = conns.iter().map(|(_, c)| c.cancel_key.clone()).collect();
        let limits = (self.settings.query_timeout, self.settings.checkout.connect);
        let servers = conns.iter_mut().map(|(_, c)| &mut **c).collect();
        // Inside a transaction a merge's error is not cancelled (see Tap).
        let in_transaction = self.status != TransactionStatus::Idle || !self.parked.is_empty();
        let tap_cancels = if in_transaction {
            &[][..]
        } else {
            &cancels[..]
        };
        let (result, tap_error) = match &mut rows {
            FanRows::Stream(_) => {
                let tap = fanout::Tap::<Stream>::new(None, tap_cancels, limits.1);
                let exchange = fanout::exchange(servers, &fanned.request, fanned.ready, &tap);
                let result = await_with_cancel(self.handle, limits, exchange, &cancels).await;
                (result, tap.into_error())
            }
            FanRows::Merge(merge) => {
                // Rows go into the merge as they arrive (`fanout::Tap`).
                let tap = fanout::Tap::new(Some(merge.as_mut()), tap_cancels, limits.1);
                let exchange = fanout::exchange(servers, &fanned.request, fanned.ready, &tap);
                let result = await_with_cancel(self.handle, limits, exchange, &cancels).await;
                (result, tap.into_error())
            }
        };
        self.client.buf.advance(batch.len);
        let replies = match result {
            Some(Ok(replies)) => replies,
            Some(Err(error)) => {
                let shard = conns.get(error.shard).map_or(error.shard, |(s, _)| *s);
                tracing::warn!(shard, error = %error.message, "cross-shard request failed");
                return self.lose_fan_out(conns, "08006", &error.message).await;
            }
            None => return self.time_out_fan_out(conns).await,
        };
        let slices: Vec<&[u8]> = replies.iter().map(|r| &r[..]).collect();
        let mut out = BytesMut::new();
        let visible = fanned.visible;
        let assembled = match (&mut rows, tap_error) {
            (_, Some(error)) => {
                // The shards may have been cancelled: a late cancel must not
                // reach the connections' next request, so they are not reused.
                dirty = true;
                Err(assemble::AssembleError::Merge(error))
            }
            (FanRows::Stream(stream), None) => {
                assemble::assemble(&fanned.ops, &slices, stream, visible, &mut out)
            }
            (FanRows::Merge(merge), None) => {
                let mut fed = fanout::Fed(merge.as_mut());
                assemble::assemble(&fanned.ops, &slices, &mut fed, visible, &mut out)
            }
        };
        let status = match assembled {
            Ok(status) => status,
            Err(error) => {
                // Every shard's reply was read in full: the connections are
                // sound (after a tap error they are closed all the same).
                // Inside a transaction the failure fails it, as an error
                // from a server would.
                let sqlstate = match &error {
                    assemble::AssembleError::Merge(why) => why.sqlstate,
                    assemble::AssembleError::Protocol(_) => "08P01",
                };
                let status = match combined(&slices) {
                    TransactionStatus::Idle => TransactionStatus::Idle,
                    _ => TransactionStatus::Failed,
                };
                out.clear();
                for _ in 0..fanned.ready {
                    let message = error.to_string();
                    write::error_response(&mut out, Severity::Error, sqlstate, &message, None);
                    write::ready_for_query(&mut out, status);
                }
                status
            }
        };
        self.client.out.extend_from_slice(&out);
        self.settle_fan_out(conns, status, dirty);
        self.client.flush().await.map_err(|_| End::ClientGone)
    }

    /// After a cross-shard request: outside a transaction its connections
    /// go back to their pools (or close, when it left session state);
    /// inside one they stay attached, the first as `server`.
    fn settle_fan_out(
        &mut self,
        mut conns: Vec<(usize, PooledConn)>,
        status: TransactionStatus,
        dirty: bool,
    ) {
        self.status = status;
        self.fan_dirty |= dirty;
        if status == TransactionStatus::Idle {
            let close = std::mem::take(&mut self.fan_dirty);
            for (_, conn) in conns {
                // Session state a cross-shard request left (a SET among
                // its statements) must not reach the next client.
                if !close {
                    conn.pool().clone().checkin(conn);
                }
            }
        } else if !conns.is_empty() {
            let (shard, current) = conns.remove(0);
            self.parked.extend(conns);
            self.shard = shard;
            self.handle.set_server(Some(current.cancel_key.clone()));
            self.server = Some(current);
        }
    }

    /// A cross-shard request with one result and nothing to merge: sent to
    /// every shard at once, then each shard's reply read in turn and its
    /// rows written to the client as they come (`fanout::Streamer`); the
    /// other shards' replies wait in their sockets meanwhile, so memory
    /// stays bounded whatever the result's size.
    async fn stream_fan_out(
        &mut self,
        batch: &ClientBatch,
        mut conns: Vec<(usize, PooledConn)>,
        fanned: fanout::Fanned,
    ) -> Result<(), End> {
        let dirty = self.fan_out_dirty(batch);
        let cancels: Vec<_> = conns.iter().map(|(_, c)| c.cancel_key.clone()).collect();
        self.client.buf.advance(batch.len);
        let mut streamer = fanout::Streamer::new(fanned.ops.clone());
        let client = &mut *self.client;
        let run = async {
            for (_, conn) in conns.iter_mut() {
                conn.stream
                    .write_all(&fanned.request)
                    .await
                    .map_err(|e| format!("could not write to the server: {e}"))?;
            }
            for (n, (_, conn)) in conns.iter_mut().enumerate() {
                streamer.next_shard(n);
                fanout::stream_one(conn, &mut streamer, client).await?;
            }
            Ok::<(), String>(())
        };
        let limits = (self.settings.query_timeout, self.settings.checkout.connect);
        let result = await_with_cancel(self.handle, limits, run, &cancels).await;
        match result {
            Some(Ok(())) => {}
            Some(Err(message)) => {
                tracing::warn!(error = %message, "cross-shard request failed");
                return self.lose_fan_out(conns, "08006", &message).await;
            }
            None => return self.time_out_fan_out(conns).await,
        }
        let status = streamer.finish(&mut self.client.out);
        self.settle_fan_out(conns, status, dirty);
        self.client.flush().await.map_err(|_| End::ClientGone)
    }

    /// Whether the request may leave session state on the connections
    /// (settings, temporary objects, advisory locks, LISTEN).
    fn fan_out_dirty(&self, batch: &ClientBatch) -> bool {
        let mut ends = std::collections::VecDeque::new();
        let mut names = Vec::new();
        let left = crate::session::scan::note_requests(
            &self.client.buf[..batch.len],
            &mut ends,
            false,
            self.statements.sql,
            &mut names,
        );
        left.settings || left.other || left.advisory
    }

    /// `query_timeout` passed during a cross-shard request: what the shards
    /// still run is cancelled and the connections closed.
    async fn time_out_fan_out(&mut self, conns: Vec<(usize, PooledConn)>) -> Result<(), End> {
        for (_, conn) in &conns {
            super::cancel_in_background(conn);
        }
        self.lose_fan_out(conns, "57014", "canceling statement due to query_timeout")
            .await
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
    replies
        .iter()
        .fold(TransactionStatus::Idle, |status, reply| {
            let last = reply
                .last()
                .and_then(|&b| TransactionStatus::from_byte(b).ok());
            assemble::combine_status(status, last.unwrap_or(TransactionStatus::Failed))
        })
}

/// Waits for a cross-shard request, within `query_timeout` (`limits.0`). A
/// cancel for the client reaches every shard of the request (each then
/// answers with its error), and the wait goes on. None: the time ran out.
async fn await_with_cancel<F: std::future::Future>(
    handle: &crate::session::SessionHandle,
    limits: (Option<std::time::Duration>, std::time::Duration),
    work: F,
    cancels: &[crate::pool::server_conn::CancelKey],
) -> Option<F::Output> {
    let (query_timeout, connect_timeout) = limits;
    let mut work = std::pin::pin!(work);
    let deadline = query_timeout.map(|limit| std::time::Instant::now() + limit);
    handle.withdraw.reset();
    handle.waiting.set(true);
    let output = loop {
        let withdraw = handle.withdraw.clone();
        let step = rt::race(async { Some(work.as_mut().await) }, async {
            withdraw.wait().await;
            None
        });
        let step = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rt::timeout(left, step).await {
                    Some(step) => step,
                    None => break None,
                }
            }
            None => step.await,
        };
        match step {
            Some(output) => break Some(output),
            None => {
                handle.withdraw.reset();
                for key in cancels {
                    crate::pool::server_conn::cancel_in_background(key, connect_timeout);
                }
            }
        }
    };
    handle.waiting.set(false);
    output
}

/// The first request of `batch` (through its first sync point), for a
/// sharded cluster to route requests one at a time.
pub(super) fn first_request(buf: &[u8], batch: ClientBatch) -> ClientBatch {
    if batch.sync_points <= 1 {
        return batch;
    }
    let mut offset = 0;
    let mut flush = false;
    while let Ok(Some(header)) = frame::header(&buf[offset..batch.len], DEFAULT_MAX_MESSAGE_LEN) {
        offset += header.total_len;
        match FrontendKind::from_tag(header.tag) {
            Ok(FrontendKind::Query | FrontendKind::Sync | FrontendKind::FunctionCall) => {
                return ClientBatch {
                    len: offset,
                    sync_points: 1,
                    flush,
                    unsynced: false,
                    terminate: false,
                    copy_end: false,
                };
            }
            Ok(FrontendKind::Flush) => flush = true,
            _ => {}
        }
    }
    batch
}

/// The text of a batch that is one simple Query.
fn query_text(batch: &[u8]) -> String {
    match FrontendMessage::decode(batch) {
        Ok(FrontendMessage::Query { sql }) => sql.to_owned(),
        _ => String::new(),
    }
}

/// The whole messages of a batch.
/// Rows of a fan-out: streamed, or merged per the plan (boxed: a merge's
/// state is large, and fan-out is not the hot path).
enum FanRows {
    Stream(Stream),
    Merge(Box<Merge>),
}

impl Rows for Merge {
    fn description(&mut self, shard: usize, body: &[u8]) -> Result<(), RowsError> {
        self.row_description(shard, body).map_err(rows_error)
    }
    fn client_description(&self, out: &mut BytesMut) {
        self.client_row_description(out)
    }
    fn row(&mut self, shard: usize, body: &[u8]) -> Result<(), RowsError> {
        self.data_row(shard, body).map_err(rows_error)
    }
    fn finish(&mut self, out: &mut BytesMut) -> Result<u64, RowsError> {
        Merge::finish(self, out).map_err(rows_error)
    }
}

fn rows_error(error: MergeError) -> RowsError {
    RowsError {
        sqlstate: error.sqlstate(),
        message: error.to_string(),
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

//! The query loop: the hot path.
//!
//! Idle (no server connection): read the client until a complete request is in
//! hand (a Query, Sync, Flush or FunctionCall ends one), then check out a server
//! connection. Active: forward complete client messages to the server and the
//! server's bytes to the client, one write per read, decoding only message
//! headers, ReadyForQuery and fatal errors. When every request sent has had its
//! ReadyForQuery, nothing is left unsynced and the server says Idle, the server
//! connection is provably clean and goes back to the pool (transaction mode).
//! On a cluster of several servers a lone `BEGIN` is answered with no
//! server held and run by the server the next request picks.
//!
//! A client that vanishes with work in flight (before its Sync, mid-COPY,
//! mid-query) never has its work committed: the server connection is closed,
//! never sent a Sync on the client's behalf. One that vanishes idle inside a
//! transaction has it rolled back before the connection is reused.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use crate::config::{ConnectionRecovery, PreparedStatements, ReadWriteSplit, ReadWriteStrategy};
use crate::control::snapshot::Snapshot;
use crate::core::Core;
use crate::ids::Epoch;
use crate::pool::balance::{BanReason, Intent};
use crate::pool::login;
use crate::pool::server_conn::{self, read_more, write_or_read, WriteOrRead};
use crate::pool::{CheckoutError, CheckoutLimits, Cluster, PooledConn, ServerConn, ServerPool};
use crate::prepared::{self, Books, ClientStatements, ReplyPlan, Verdict};
use crate::protocol::backend::{BackendMessage, ErrorFields, TransactionStatus};
use crate::protocol::frontend::{DescribeTarget, FrontendKind, FrontendMessage};
use crate::protocol::write::{self, Severity};
use crate::protocol::{frame, ProtocolError, DEFAULT_MAX_MESSAGE_LEN};
use crate::pubsub::{self, Subscriber};
use crate::router::{QueryCache, Transaction};
use crate::rt::{self, AsyncWriteExt};
use crate::session::client::Client;
use crate::session::params::{self, Params};
use crate::session::route;
use crate::session::scan::{
    note_requests, scan_client, scan_server, scan_server_planned, ClientBatch, ServerEvent,
    ServerScan,
};
use crate::session::SessionHandle;

mod shards;

/// Bytes a client may send without ending a request (Sync, Flush, Query) while
/// it holds no server connection.
const MAX_BUFFERED_REQUEST_LEN: usize = 2 * DEFAULT_MAX_MESSAGE_LEN;
/// Bound on statements sleddog runs on its own to clean a connection.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);
/// Finds a session advisory lock this backend holds (run between transactions,
/// when transaction-level advisory locks are gone).
const ADVISORY_LOCKS_HELD: &str = "SELECT 1 FROM pg_catalog.pg_locks \
     WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() LIMIT 1";

/// What the relay needs from the configuration, copied once per session.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub session_mode: bool,
    pub checkout: CheckoutLimits,
    pub query_timeout: Option<Duration>,
    pub client_idle_timeout: Option<Duration>,
    pub client_idle_in_transaction_timeout: Option<Duration>,
    /// Give clients' named statements the core's shared server-side names
    /// (transaction mode); session mode passes names through.
    pub rename_statements: bool,
    /// `extended_anonymous`: the unnamed statement is renamed too.
    pub rename_unnamed: bool,
    /// `full`: SQL `PREPARE`/`EXECUTE` are renamed too.
    pub rename_sql: bool,
    /// `prepared_statements_limit` per server connection.
    pub statements_limit: usize,
    /// What happens to a server connection a client leaves in use.
    pub connection_recovery: ConnectionRecovery,
    /// `read_write_split`, for reads on a cluster of several servers.
    pub split: ReadWriteSplit,
    /// `read_write_strategy`: does a transaction not declared READ ONLY go
    /// to the primary, or where the statements sent with it go?
    pub strategy: ReadWriteStrategy,
    /// `client_connection_recovery`: does a client that could not get a
    /// server connection stay connected (`recover`) or is it closed (`drop`)?
    pub keep_client_on_pool_error: bool,
}

impl RelaySettings {
    pub fn from_snapshot(snapshot: &Snapshot, session_mode: bool) -> RelaySettings {
        RelaySettings {
            session_mode,
            checkout: CheckoutLimits {
                checkout: snapshot.timeouts.checkout,
                connect: snapshot.timeouts.connect,
            },
            query_timeout: snapshot.timeouts.query,
            client_idle_timeout: snapshot.timeouts.client_idle,
            client_idle_in_transaction_timeout: snapshot.timeouts.client_idle_in_transaction,
            rename_statements: !session_mode
                && snapshot.prepared_statements != PreparedStatements::Disabled,
            rename_unnamed: snapshot.prepared_statements == PreparedStatements::ExtendedAnonymous,
            rename_sql: snapshot.prepared_statements == PreparedStatements::Full,
            statements_limit: crate::core::statements_limit(snapshot),
            connection_recovery: snapshot.connection_recovery,
            split: snapshot.balancing.split,
            strategy: snapshot.balancing.read_write_strategy,
            keep_client_on_pool_error: snapshot.client_connection_recovery
                == ConnectionRecovery::Recover,
        }
    }
}

/// How the session ended, for logs.
enum End {
    ClientGone,
    Protocol(ProtocolError),
    Shutdown,
    ClientIdle,
    IdleInTransaction,
    /// Session mode: the server connection, and so the session's state, is gone.
    ServerGone,
    /// No server connection could be had and `client_connection_recovery`
    /// is `drop`: the client is told why and closed.
    PoolError(&'static str, String),
}

/// How waiting for a server connection ended. Lives on the stack for one
/// checkout; boxing the connection would allocate on every transaction.
#[allow(clippy::large_enum_variant)]
enum Checkout {
    Got(PooledConn),
    Failed(CheckoutError),
    /// A CancelRequest withdrew the wait.
    Withdrawn,
}

enum Wake {
    Server(std::io::Result<usize>),
    Client(std::io::Result<usize>),
    QueryTimeout,
    ClientIdle,
    IdleInTransaction,
    /// Notifications for the client are queued (LISTEN via the core's listener).
    Notify,
    Shutdown,
}

pub struct Relay<'a> {
    core: &'a Rc<Core>,
    handle: &'a Rc<SessionHandle>,
    cluster: Rc<Cluster>,
    client: &'a mut Client,
    settings: RelaySettings,
    server: Option<PooledConn>,
    /// ReadyForQuery messages the server still owes for requests sent.
    pending: u32,
    /// Extended-protocol messages sent after the last sync point.
    unsynced: bool,
    /// The server's transaction status at its last ReadyForQuery.
    status: TransactionStatus,
    /// Body bytes of a server message forwarded in part, still to forward.
    partial: usize,
    /// After a failed request ended by Flush: drop messages until Sync, as
    /// Postgres does after an error in the extended protocol.
    discard_until_sync: bool,
    /// The snapshot epoch `cluster` was looked up in.
    epoch: Epoch,
    /// For each request awaiting its ReadyForQuery, in order: true when a Sync
    /// ended it (extended protocol), false for Query/FunctionCall. Postgres
    /// ignores a Sync that reaches it during COPY FROM STDIN, so a COPY started
    /// by an extended request owes one ReadyForQuery less.
    request_ends: VecDeque<bool>,
    /// This checkout ran something that changes session state (SET, a named
    /// prepared statement, LISTEN, ...): reset before the next client gets it.
    dirty: bool,
    /// The client's prepared statement names (when renamed).
    statements: ClientStatements,
    /// Replies owed for rewritten batches, in order.
    plan: ReplyPlan,
    /// A rewritten batch on its way to the server.
    to_server: BytesMut,
    /// A batch is being written to the server: the connection is not
    /// released even if everything sent so far has been answered.
    sending: bool,
    /// Settings from the client's startup packet.
    startup: Params,
    /// Servers to try for a checkout (`Cluster::candidates`), kept so a
    /// checkout does not allocate.
    candidates: Vec<usize>,
    /// Its startup packet set reported settings besides application_name:
    /// their values go to the client once a server has applied them
    /// (`report_startup_settings`).
    report_startup: bool,
    /// The client's session settings: what a server connection must carry
    /// while this client uses it (transaction mode).
    params: Params,
    /// This checkout ran something that changes settings: capture them for
    /// the client before the connection goes back.
    capture: bool,
    /// Custom (dotted) settings the client has touched; `pg_settings` does
    /// not list them, so the capture asks for each by name.
    custom_names: Vec<String>,
    /// This checkout took or released session advisory locks: see at release
    /// whether the client still holds any.
    advisory: bool,
    /// The client holds session advisory locks on its server connection,
    /// which it keeps until it releases them.
    locks_held: bool,
    /// The client's LISTENs, run by the core's listener connection
    /// (transaction mode with `pub_sub_channel_size` > 0).
    subscriber: Option<Subscriber>,
    /// The client sent ROLLBACK in the transaction now open.
    rollback_sent: bool,
    /// A COPY FROM STDIN is under way (the server is waiting for data).
    copy_in: bool,
    /// A `BEGIN` answered here with no server held (aggressive read/write
    /// strategy): the next request picks the server, which runs it first.
    /// `status` says InTransaction meanwhile.
    deferred_begin: Option<String>,
    /// That `BEGIN` went to the server ahead of the request
    /// (`ServerConn::send_begin`): its replies come first and are not the
    /// client's.
    begin_owed: bool,
    /// Sharded cluster: the shard `server` is on (or the next checkout is for).
    shard: usize,
    /// Sharded cluster: connections of the other shards the open transaction
    /// has touched, each inside it (see `shards`).
    parked: Vec<(usize, PooledConn)>,
    /// Sharded cluster: the shard the last request any shard could answer
    /// went to (kept for the session under `omnisharded_sticky`).
    sticky_shard: Option<usize>,
    /// Sharded cluster: what the open transaction set for its routing.
    transaction_sharding: shards::TransactionSharding,
    /// Sharded cluster: a connection of the open transaction may hold session
    /// state (a cross-shard request changed it, or a connection was parked
    /// with `dirty`, `capture` or `advisory` set); its connections are
    /// closed at the end rather than pooled.
    fan_dirty: bool,
}

impl<'a> Relay<'a> {
    pub fn new(
        core: &'a Rc<Core>,
        handle: &'a Rc<SessionHandle>,
        cluster: Rc<Cluster>,
        client: &'a mut Client,
        settings: RelaySettings,
        startup: Params,
    ) -> Relay<'a> {
        let listen_here = !settings.session_mode && core.pubsub.is_enabled();
        let rename_unnamed = settings.rename_statements && settings.rename_unnamed;
        let rename_sql = settings.rename_statements && settings.rename_sql;
        let report_startup = !settings.session_mode
            && startup
                .iter()
                .any(|(name, _)| name != "application_name" && params::is_reported(name));
        Relay {
            core,
            handle,
            cluster,
            client,
            settings,
            server: None,
            pending: 0,
            unsynced: false,
            status: TransactionStatus::Idle,
            partial: 0,
            discard_until_sync: false,
            epoch: core.epoch(),
            request_ends: VecDeque::new(),
            dirty: false,
            statements: ClientStatements::new(listen_here, rename_unnamed, rename_sql),
            plan: ReplyPlan::default(),
            to_server: BytesMut::new(),
            sending: false,
            params: startup.clone(),
            report_startup,
            candidates: Vec::new(),
            custom_names: startup.custom_names().map(str::to_owned).collect(),
            startup,
            capture: false,
            advisory: false,
            locks_held: false,
            subscriber: None,
            rollback_sent: false,
            copy_in: false,
            deferred_begin: None,
            begin_owed: false,
            shard: 0,
            parked: Vec::new(),
            sticky_shard: None,
            transaction_sharding: shards::TransactionSharding::default(),
            fan_dirty: false,
        }
    }

    pub async fn run(mut self) {
        let end = loop {
            let step = if self.server.is_some() {
                self.active().await
            } else {
                self.idle().await
            };
            if let Err(end) = step {
                break end;
            }
        };
        match end {
            End::Protocol(error) => {
                tracing::debug!(%error, "client protocol error");
                self.client
                    .fatal(error.sqlstate(), &error.to_string())
                    .await;
            }
            End::Shutdown => {
                self.client
                    .fatal(
                        "57P01",
                        "terminating connection due to administrator command",
                    )
                    .await;
            }
            End::ClientIdle => {
                self.client
                    .fatal("57P05", "terminating connection due to idle timeout")
                    .await;
            }
            End::IdleInTransaction => {
                self.client
                    .fatal(
                        "25P03",
                        "terminating connection due to idle-in-transaction timeout",
                    )
                    .await;
            }
            End::PoolError(sqlstate, message) => {
                self.client.fatal(sqlstate, &message).await;
            }
            End::ClientGone => tracing::debug!("client gone"),
            End::ServerGone => {}
        }
        self.release_on_exit().await;
    }

    /// No server connection: wait for a complete request, then check one out.
    async fn idle(&mut self) -> Result<(), End> {
        if self.discard_until_sync {
            return self.discard_to_sync().await;
        }
        while self.listen_here().await? {}
        let batch = scan_client(&self.client.buf, self.unsynced).map_err(End::Protocol)?;
        if batch.len > 0 && batch.sync_points == 0 && !batch.unsynced {
            // Only Flush and Copy messages, with no server held: Postgres sends
            // nothing for a bare Flush and ignores Copy messages outside COPY.
            self.client.buf.advance(batch.len);
            return Ok(());
        }
        if batch.len > 0 && (batch.sync_points > 0 || batch.flush) {
            return self.start_request(batch).await;
        }
        if batch.terminate {
            return Err(End::ClientGone);
        }
        if self.client.buf.len() > MAX_BUFFERED_REQUEST_LEN {
            let error = ProtocolError::TooLong {
                len: self.client.buf.len(),
                max: MAX_BUFFERED_REQUEST_LEN,
            };
            return Err(End::Protocol(error));
        }
        self.wait_client_idle().await
    }

    /// Reads from the client with no server held, minding shutdown and
    /// client_idle_timeout.
    async fn wait_client_idle(&mut self) -> Result<(), End> {
        // Only a deferred BEGIN leaves a transaction open with no server.
        // Like any open transaction it may finish before a graceful
        // shutdown closes the session (the core's deadline still ends it).
        let in_transaction = self.status != TransactionStatus::Idle;
        if self.handle.shutdown.is_fired() && !in_transaction {
            return Err(End::Shutdown);
        }
        self.deliver_notifications().await?;
        let shutdown = self.handle.shutdown.clone();
        let idle_limit = if in_transaction {
            self.settings.client_idle_in_transaction_timeout
        } else {
            self.settings.client_idle_timeout
        };
        let notified = self
            .subscriber
            .as_ref()
            .filter(|_| !in_transaction)
            .map(Subscriber::ready);
        let client = &mut *self.client;
        let wake = rt::race(async { Wake::Client(client.read_more().await) }, async {
            rt::race(
                async {
                    if in_transaction {
                        rt::never().await
                    }
                    shutdown.wait().await;
                    Wake::Shutdown
                },
                rt::race(
                    async {
                        match idle_limit {
                            Some(limit) => rt::sleep(limit).await,
                            None => rt::never().await,
                        }
                        Wake::ClientIdle
                    },
                    async {
                        match notified {
                            Some(ready) => ready.await,
                            None => rt::never().await,
                        }
                        Wake::Notify
                    },
                ),
            )
            .await
        })
        .await;
        match wake {
            Wake::Client(Ok(n)) if n > 0 => Ok(()),
            Wake::Notify => self.deliver_notifications().await,
            Wake::Shutdown => Err(End::Shutdown),
            Wake::ClientIdle if in_transaction => Err(End::IdleInTransaction),
            Wake::ClientIdle => Err(End::ClientIdle),
            _ => Err(End::ClientGone),
        }
    }

    /// A LISTEN, UNLISTEN or UNLISTEN * alone in a simple Query at the front of
    /// the client's buffer is carried out by the core's listener connection
    /// and answered here: at once outside a transaction, staged for the
    /// transaction's end inside one. Anything else, or with replies still
    /// outstanding or the transaction failed (Postgres must refuse it), goes
    /// to the server as usual. True when one was handled.
    async fn listen_here(&mut self) -> Result<bool, End> {
        if self.settings.session_mode || !self.core.pubsub.is_enabled() {
            return Ok(false);
        }
        let outstanding = self.pending > 0
            || self.unsynced
            || self.partial > 0
            || !self.plan.is_empty()
            || self.status == TransactionStatus::Failed;
        if self.server.is_some() && outstanding {
            return Ok(false);
        }
        let Ok(Some(header)) = frame::header(&self.client.buf, DEFAULT_MAX_MESSAGE_LEN) else {
            return Ok(false);
        };
        if header.total_len > self.client.buf.len()
            || FrontendKind::from_tag(header.tag) != Ok(FrontendKind::Query)
        {
            return Ok(false);
        }
        let body = &self.client.buf[frame::HEADER_LEN..header.total_len];
        let Some(commands) = pubsub::parse_listens(body.strip_suffix(&[0]).unwrap_or(body)) else {
            return Ok(false);
        };
        if self.subscriber.is_none() {
            self.subscriber = self.core.pubsub.subscriber(&self.cluster);
        }
        let Some(subscriber) = self.subscriber.as_mut() else {
            return Ok(false);
        };
        self.client.buf.advance(header.total_len);
        let out = &mut self.client.out;
        for command in commands {
            let tag = command.tag();
            if self.status != TransactionStatus::Idle {
                subscriber.stage(command);
                write::command_complete(out, tag);
                continue;
            }
            // Answered once the listener runs it, so a NOTIFY the client
            // sends next is heard.
            let synced = subscriber.run(command);
            match rt::timeout(self.settings.checkout.connect, synced.wait()).await {
                Some(Ok(())) => write::command_complete(out, tag),
                Some(Err(error)) => {
                    let message = format!("could not {tag}: {error}");
                    write::error_response(out, Severity::Error, "08006", &message, None);
                    break;
                }
                None => {
                    let message = format!("could not {tag}: the listener connection timed out");
                    write::error_response(out, Severity::Error, "08006", &message, None);
                    break;
                }
            }
        }
        write::ready_for_query(out, self.status);
        self.client.flush().await.map_err(|_| End::ClientGone)?;
        Ok(true)
    }

    /// LISTEN/UNLISTEN commands sent over the extended protocol whose Execute
    /// completed (an empty statement stood in for each on the server): run by
    /// the core's listener, staged when inside a transaction. The client's
    /// reply waits until the listener has run them.
    async fn carry_out_listens(&mut self) {
        let commands = std::mem::take(&mut self.statements.done_listens);
        if self.subscriber.is_none() {
            self.subscriber = self.core.pubsub.subscriber(&self.cluster);
        }
        let Some(subscriber) = self.subscriber.as_mut() else {
            return;
        };
        let mut synced = Vec::new();
        for command in commands {
            if self.status == TransactionStatus::Idle {
                synced.push(subscriber.run(command));
            } else {
                subscriber.stage(command);
            }
        }
        for done in synced {
            let _ = rt::timeout(self.settings.checkout.connect, done.wait()).await;
        }
    }

    /// Writes queued notifications to the client (only ever between its
    /// transactions, as Postgres delivers them).
    async fn deliver_notifications(&mut self) -> Result<(), End> {
        let Some(subscriber) = self.subscriber.as_ref() else {
            return Ok(());
        };
        if self.status != TransactionStatus::Idle {
            return Ok(());
        }
        if subscriber.try_take(&mut self.client.out) {
            self.client.flush().await.map_err(|_| End::ClientGone)?;
        }
        Ok(())
    }

    /// Checks out a server connection for the request in hand and sends it.
    async fn start_request(&mut self, batch: ClientBatch) -> Result<(), End> {
        if self.core.epoch() != self.epoch && !self.refresh_cluster() {
            let message = format!(
                "database \"{}\" is no longer configured for user \"{}\"",
                self.cluster.database, self.cluster.user
            );
            return self.fail_request(batch, "3D000", &message).await;
        }
        if self.status == TransactionStatus::Failed {
            return self.answer_failed_transaction(batch).await;
        }
        if self.cluster.shard_count() > 1 {
            // Requests pipelined together may be for different shards:
            // each is routed on its own, the rest wait in the buffer.
            let batch = shards::first_request(&self.client.buf, batch);
            if let shards::Step::Done = self.route_shards(&batch).await? {
                return Ok(());
            }
            return self.start_request_here(batch).await;
        }
        self.start_request_here(batch).await
    }

    /// Checks out a connection on `shard` for the request and sends it.
    async fn start_request_here(&mut self, batch: ClientBatch) -> Result<(), End> {
        let route = self.route(&batch);
        if route.lone_begin {
            if let Some((tag, sql)) = self.deferrable_begin(&batch) {
                return self.defer_begin(batch, tag, sql).await;
            }
        }
        let intent = route.intent;
        self.handle.waiting.set(true);
        self.handle.withdraw.reset();
        let mut outcome = self.checkout(intent).await;
        if matches!(outcome, Checkout::Failed(CheckoutError::Retired)) {
            // A reload retired the pool while we waited: one more try on the new one.
            self.refresh_cluster();
            outcome = self.checkout(intent).await;
        }
        self.handle.waiting.set(false);
        match outcome {
            Checkout::Got(mut conn) => {
                conn.prepared.set_limit(self.settings.statements_limit);
                // A held BEGIN can travel ahead of a request with a single
                // sync point: if it fails, Postgres skips the whole request.
                // Past a first Sync the rest would run outside a transaction.
                let ahead = batch.sync_points == 1 && !batch.unsynced;
                let status = match self.prepare_conn(&mut conn, ahead).await {
                    Ok(status) => status,
                    // The connection is closed (dropped), not pooled.
                    Err((sqlstate, message)) => {
                        return self.fail_request(batch, &sqlstate, &message).await;
                    }
                };
                self.handle.set_server(Some(conn.cancel_key.clone()));
                self.server = Some(conn);
                self.dirty = false;
                self.capture = false;
                self.status = status;
                self.forward_client(batch).await
            }
            Checkout::Withdrawn => {
                let message = "canceling statement due to user request";
                self.fail_request(batch, "57014", message).await
            }
            Checkout::Failed(error) => {
                let (sqlstate, message) = checkout_failure(&error, &self.cluster.database);
                if !self.settings.keep_client_on_pool_error {
                    return Err(End::PoolError(sqlstate, message));
                }
                self.fail_request(batch, sqlstate, &message).await
            }
        }
    }

    /// Brings a connection just checked out to the session: its settings,
    /// once the startup settings report, then a deferred `BEGIN`, sent
    /// ahead of the request with no round trip of its own when `ahead`,
    /// else in one (last, so
    /// sleddog's own statements run outside the client's transaction).
    /// Returns the transaction status the client knows; Err: the SQLSTATE
    /// and message for the client.
    async fn prepare_conn(
        &mut self,
        conn: &mut PooledConn,
        ahead: bool,
    ) -> Result<TransactionStatus, (String, String)> {
        self.begin_owed = false;
        if let Err(error) = self.bring_to_client_settings(conn).await {
            let message = format!("could not apply the session's settings: {error}");
            return Err(("08006".to_owned(), message));
        }
        if self.report_startup {
            self.report_startup = false;
            self.report_startup_settings(conn).await;
        }
        let Some(sql) = self.deferred_begin.take() else {
            return Ok(TransactionStatus::Idle);
        };
        if !self.transaction_sharding.statements.is_empty() {
            // Sharding settings the transaction made before this shard
            // joined it run after its BEGIN.
            if self.open_transaction(conn, &sql).await {
                return Ok(TransactionStatus::InTransaction);
            }
            let message = "could not start the transaction".to_owned();
            return Err(("08006".to_owned(), message));
        }
        let sent = if ahead {
            rt::timeout(RESET_TIMEOUT, conn.send_begin(&sql)).await
        } else {
            rt::timeout(RESET_TIMEOUT, conn.begin(&sql)).await
        };
        match sent {
            Some(Ok(())) => {
                self.begin_owed = ahead;
                Ok(TransactionStatus::InTransaction)
            }
            Some(Err(server_conn::ServerError::Rejected { sqlstate, message })) => {
                Err((sqlstate, message))
            }
            Some(Err(error)) => Err((
                "08006".to_owned(),
                format!("could not start the transaction: {error}"),
            )),
            None => Err((
                "08006".to_owned(),
                "could not start the transaction: timed out".to_owned(),
            )),
        }
    }

    /// Reads the replies to a `BEGIN` sent ahead of the request off the
    /// front of the server's bytes (`begin_reply`). True once all are read.
    fn take_begin_reply(&mut self) -> Result<bool, (String, String)> {
        let server: &mut ServerConn = self.server.as_mut().expect("a BEGIN owed needs a server");
        let (consumed, done) = begin_reply(&server.buf, &mut self.client.out)?;
        server.buf.advance(consumed);
        Ok(done)
    }

    /// `SET pgdog.pin TO true` (PgDog's): the client stays on its server
    /// connection while the setting is on.
    fn pin_requested(&self) -> bool {
        self.params.get("pgdog.pin").is_some_and(|value| {
            ["true", "on", "1", "yes"]
                .iter()
                .any(|t| value.eq_ignore_ascii_case(t))
        })
    }

    /// Transaction mode: a server connection whose session settings differ
    /// from the client's is brought to them first, in one round trip. Clients
    /// that never change a setting never pay for it.
    async fn bring_to_client_settings(&mut self, conn: &mut PooledConn) -> Result<(), String> {
        if self.settings.session_mode || conn.session == self.params {
            return Ok(());
        }
        let Some(sql) = params::sync_sql(&conn.session, &self.params) else {
            return Ok(());
        };
        match rt::timeout(RESET_TIMEOUT, conn.execute(&sql)).await {
            Some(Ok(())) => {
                conn.session = self.params.clone();
                Ok(())
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "could not apply a session's settings; it starts over from its startup settings");
                // Do not fail every later request the same way.
                self.params = if self.params == self.startup {
                    Params::default()
                } else {
                    self.startup.clone()
                };
                Err(error.to_string())
            }
            None => Err("timed out".to_owned()),
        }
    }

    /// Once per session, on its first server connection (now at the client's
    /// settings): the reported settings its startup packet set, as Postgres
    /// shows them (`DateStyle=iso` reads `ISO, MDY`), go to the client as
    /// ParameterStatus. At login it was told the pool's values, since sleddog
    /// logs clients in without a server.
    async fn report_startup_settings(&mut self, conn: &mut PooledConn) {
        let names: Vec<String> = self
            .startup
            .iter()
            .filter(|(name, _)| *name != "application_name" && params::is_reported(name))
            .filter_map(|(name, value)| {
                // The server's spelling (DateStyle), as it reported it at login.
                let reported = conn
                    .params
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name));
                match reported {
                    // Told already: the value the client asked for is the
                    // one it was given (psql's client_encoding=UTF8).
                    Some((_, shown)) if shown == value => None,
                    Some((n, _)) => Some(n.clone()),
                    None => Some(name.to_owned()),
                }
            })
            .collect();
        if names.is_empty() {
            return;
        }
        let columns: Vec<String> = names
            .iter()
            .map(|name| format!("current_setting('{}')", name.replace('\'', "''")))
            .collect();
        let sql = format!("SELECT {}", columns.join(", "));
        let rows = match rt::timeout(RESET_TIMEOUT, conn.query_rows(&sql)).await {
            Some(Ok(rows)) => rows,
            Some(Err(error)) => {
                tracing::warn!(%error, "could not read the session's startup settings");
                return;
            }
            None => return,
        };
        let Some(Ok(values)) = rows.first().map(|row| login::row_values(row)) else {
            return;
        };
        for (name, value) in names.iter().zip(values) {
            if let Some(value) = value {
                write::parameter_status(&mut self.client.out, name, &value);
            }
        }
    }

    /// Reads the settings the client's statements left on the connection and
    /// makes them the client's. False when the connection must be closed.
    async fn capture_settings(&mut self, conn: &mut PooledConn) -> bool {
        let names = self.custom_names.iter().map(String::as_str);
        let sql = params::capture_sql(names);
        let rows = match rt::timeout(RESET_TIMEOUT, conn.query_rows(&sql)).await {
            Some(Ok(rows)) => rows,
            Some(Err(error)) => {
                tracing::warn!(%error, "could not read a session's settings");
                return false;
            }
            None => return false,
        };
        let bodies: Vec<&[u8]> = rows.iter().map(|row| &row[..]).collect();
        match Params::from_data_rows(&bodies) {
            Ok(captured) => {
                self.params = captured.with_startup_defaults(&self.startup);
                conn.session = captured;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "could not read a session's settings");
                false
            }
        }
    }

    /// Transaction mode, several servers, no transaction open, and the
    /// request is one simple Query whose statements are a lone `BEGIN`
    /// (`Route::lone_begin`): its command tag and text, for the relay to
    /// answer it and let the next request choose the server. (Under
    /// `conservative` that request goes to the primary unless it sets
    /// `pgdog.role` or carries a hint; under `aggressive` its statements
    /// decide.)
    fn deferrable_begin(&self, batch: &ClientBatch) -> Option<(&'static str, String)> {
        if self.settings.session_mode
            || self.status != TransactionStatus::Idle
            || batch.sync_points != 1
            || batch.unsynced
        {
            return None;
        }
        let message = &self.client.buf[..batch.len];
        let header = frame::header(message, DEFAULT_MAX_MESSAGE_LEN).ok()??;
        if header.total_len != batch.len {
            return None;
        }
        let Ok(FrontendMessage::Query { sql }) = FrontendMessage::decode(message) else {
            return None;
        };
        Some((route::begin_tag(sql), sql.to_owned()))
    }

    /// Answers a lone `BEGIN` as Postgres would (CommandComplete, then
    /// ReadyForQuery 'T') and keeps its text for the server the next request
    /// picks ("protocol-flow", Simple Query).
    async fn defer_begin(
        &mut self,
        batch: ClientBatch,
        tag: &'static str,
        sql: String,
    ) -> Result<(), End> {
        self.transaction_sharding.begin = Some(sql.clone());
        self.deferred_begin = Some(sql);
        self.client.buf.advance(batch.len);
        self.status = TransactionStatus::InTransaction;
        write::command_complete(&mut self.client.out, tag);
        write::ready_for_query(&mut self.client.out, self.status);
        self.client.flush().await.map_err(|_| End::ClientGone)
    }

    /// What the request needs: asked only of a cluster with a choice to
    /// make (one server: its pool, and no BEGIN is held).
    fn route(&self, batch: &ClientBatch) -> route::Route {
        let nothing_to_choose = route::Route {
            intent: Intent::Write,
            lone_begin: false,
        };
        if self.cluster.servers.len() == 1 {
            return nothing_to_choose;
        }
        // A shard of one server: only a lone BEGIN (a simple Query) is
        // worth a look.
        if self.cluster.shard_servers(self.shard) == 1
            && (batch.sync_points != 1
                || self
                    .client
                    .buf
                    .first()
                    .map(|&tag| FrontendKind::from_tag(tag))
                    != Some(Ok(FrontendKind::Query)))
        {
            return nothing_to_choose;
        }
        let session = route::session_role(self.params.get("pgdog.role"));
        route::route(
            &self.client.buf[..batch.len],
            &self.statements,
            &mut self.core.router.borrow_mut(),
            session,
            self.settings.strategy,
            self.settings.split,
            self.deferred_begin.is_some(),
        )
    }

    /// Checks out a server connection for `intent`, unless a cancel withdraws
    /// the wait. One server: its pool. Several: the balancer's candidates in
    /// order; a server whose checkout fails (refused, timed out) is banned
    /// and the next one tried, so the client sees an error only when every
    /// candidate failed.
    async fn checkout(&mut self, intent: Intent) -> Checkout {
        if self.cluster.servers.len() == 1 {
            return self.checkout_from(self.cluster.primary().clone()).await;
        }
        let mut candidates = std::mem::take(&mut self.candidates);
        self.cluster
            .candidates(self.shard, intent, Instant::now(), &mut candidates);
        let mut outcome = Checkout::Failed(CheckoutError::Timeout);
        for &index in &candidates {
            let pool = self.cluster.servers[index].pool.clone();
            outcome = self.checkout_from(pool).await;
            let (reason, about_server) = match &outcome {
                Checkout::Failed(CheckoutError::Timeout) => (BanReason::CheckoutTimeout, false),
                Checkout::Failed(CheckoutError::Connect(error)) => {
                    (BanReason::ConnectFailed, error.is_about_server())
                }
                _ => break,
            };
            let banned = self.cluster.ban(index, reason, Instant::now());
            // The other cores take the server out too when the failure is
            // the server's: not a checkout queue that is full on this core
            // (pool shares are per core), not a login this user got wrong.
            if let Some(server) = banned.filter(|_| about_server) {
                self.core.report_failure(server.clone(), reason);
            }
        }
        self.candidates = candidates;
        outcome
    }

    async fn checkout_from(&self, pool: Rc<ServerPool>) -> Checkout {
        let withdraw = self.handle.withdraw.clone();
        let checkout = async {
            match pool.checkout(self.settings.checkout).await {
                Ok(conn) => Checkout::Got(conn),
                Err(error) => Checkout::Failed(error),
            }
        };
        rt::race(checkout, async {
            withdraw.wait().await;
            Checkout::Withdrawn
        })
        .await
    }

    /// A reload happened: a transaction boundary is where the session moves to
    /// the new pools. False when its (database, user) was removed.
    fn refresh_cluster(&mut self) -> bool {
        self.epoch = self.core.epoch();
        let pools = self.core.pools.borrow();
        match pools.cluster(&self.cluster.database, &self.cluster.user) {
            Some(cluster) => {
                drop(pools);
                self.cluster = cluster;
                true
            }
            None => false,
        }
    }

    /// Answers a request no server will see: an error and a ReadyForQuery for
    /// each sync point, as if each had failed on the server. In a
    /// transaction a held `BEGIN` opened, the transaction fails with it, as
    /// on Postgres: it must be ended with ROLLBACK, and until then nothing
    /// else runs (`answer_failed_transaction`), so the statements after the
    /// failed one cannot run outside the transaction.
    async fn fail_request(
        &mut self,
        batch: ClientBatch,
        sqlstate: &str,
        message: &str,
    ) -> Result<(), End> {
        // Connections parked in a sharded transaction keep it open.
        let in_transaction = self.deferred_begin.take().is_some()
            || self.status != TransactionStatus::Idle
            || !self.parked.is_empty();
        self.status = if in_transaction {
            TransactionStatus::Failed
        } else {
            TransactionStatus::Idle
        };
        self.answer_with_error(&batch, sqlstate, message, None)
            .await
    }

    /// Answers every sync point of `batch` with the error and a
    /// ReadyForQuery of the current status (an unsynced tail gets the error
    /// and the rest through its Sync is dropped), and consumes the batch.
    async fn answer_with_error(
        &mut self,
        batch: &ClientBatch,
        sqlstate: &str,
        message: &str,
        hint: Option<&str>,
    ) -> Result<(), End> {
        let out = &mut self.client.out;
        for _ in 0..batch.sync_points {
            write::error_response(out, Severity::Error, sqlstate, message, hint);
            write::ready_for_query(out, self.status);
        }
        if batch.unsynced {
            write::error_response(out, Severity::Error, sqlstate, message, hint);
            self.discard_until_sync = true;
        }
        self.client.buf.advance(batch.len);
        self.client.flush().await.map_err(|_| End::ClientGone)
    }

    /// A transaction a held `BEGIN` opened failed with no server held (its
    /// checkout failed): as Postgres does in a failed transaction, a lone
    /// `ROLLBACK` or `COMMIT` ends it (answered `ROLLBACK`) and anything else
    /// is refused with 25P02 ("protocol-flow"). Nothing reached a server, so
    /// sleddog answers alone.
    async fn answer_failed_transaction(&mut self, batch: ClientBatch) -> Result<(), End> {
        let ending = ends_transaction(
            &self.client.buf[..batch.len],
            &mut self.core.router.borrow_mut(),
        );
        let out = &mut self.client.out;
        match ending {
            Some(steps) => {
                // Shards the failed transaction had attached roll back as
                // their connections close.
                self.parked.clear();
                for step in steps {
                    match step {
                        Reply::ParseComplete => write::parse_complete(out),
                        Reply::BindComplete => write::bind_complete(out),
                        Reply::NoData => write::no_data(out),
                        Reply::Done => write::command_complete(out, "ROLLBACK"),
                    }
                }
                self.status = TransactionStatus::Idle;
                write::ready_for_query(out, self.status);
            }
            None => {
                let message = "current transaction is aborted, commands ignored until end of transaction block";
                for _ in 0..batch.sync_points {
                    write::error_response(out, Severity::Error, "25P02", message, None);
                    write::ready_for_query(out, TransactionStatus::Failed);
                }
                if batch.unsynced {
                    write::error_response(out, Severity::Error, "25P02", message, None);
                    self.discard_until_sync = true;
                }
            }
        }
        self.unsynced = false;
        self.client.buf.advance(batch.len);
        if batch.terminate {
            return Err(End::ClientGone);
        }
        self.client.flush().await.map_err(|_| End::ClientGone)
    }

    /// Drops client messages through the next Sync and answers it.
    async fn discard_to_sync(&mut self) -> Result<(), End> {
        loop {
            let header =
                frame::header(&self.client.buf, DEFAULT_MAX_MESSAGE_LEN).map_err(End::Protocol)?;
            let Some(header) = header.filter(|h| h.total_len <= self.client.buf.len()) else {
                return self.wait_client_idle().await;
            };
            let kind = FrontendKind::from_tag(header.tag).map_err(End::Protocol)?;
            if kind == FrontendKind::Terminate {
                return Err(End::ClientGone);
            }
            self.client.buf.advance(header.total_len);
            if kind == FrontendKind::Sync {
                self.discard_until_sync = false;
                // Idle, or a failed transaction held with no server.
                write::ready_for_query(&mut self.client.out, self.status);
                return self.client.flush().await.map_err(|_| End::ClientGone);
            }
        }
    }

    /// Sends the batch's complete messages to the server, renaming prepared
    /// statements when a message names one. While the write is blocked the
    /// server is still read and relayed, so a client pipelining more than
    /// the socket buffers hold cannot stall both directions.
    async fn forward_client(&mut self, batch: ClientBatch) -> Result<(), End> {
        if batch.len > 0 {
            let bytes = &self.client.buf[..batch.len];
            // A batch that ends without a sync point is tracked too: a later
            // plan could not tell where its replies end.
            let rename = self.settings.rename_statements
                && (!self.plan.is_empty()
                    || batch.unsynced
                    || prepared::needs_rewrite(bytes, &self.statements));
            let left = note_requests(
                bytes,
                &mut self.request_ends,
                rename,
                self.statements.sql,
                &mut self.custom_names,
            );
            self.dirty |= left.other || left.advisory;
            self.capture |= left.settings;
            self.advisory |= left.advisory;
            self.rollback_sent |= left.rollback && self.status != TransactionStatus::Idle;
            if left.discard_all {
                if let Some(subscriber) = self.subscriber.as_mut() {
                    subscriber.unlisten_all();
                }
            }
            self.pending += batch.sync_points;
            self.unsynced = batch.unsynced;
            self.copy_in &= !batch.copy_end;
            if rename {
                let outstanding = self.pending - batch.sync_points;
                self.rewrite(batch.len, outstanding, !batch.unsynced)
                    .map_err(End::Protocol)?;
            }
            self.sending = true;
            let sent = self.send(rename, batch.len).await;
            self.sending = false;
            self.client.buf.advance(batch.len);
            self.to_server.clear();
            sent?;
        }
        if batch.terminate {
            return Err(End::ClientGone);
        }
        self.release_if_clean().await;
        Ok(())
    }

    /// Rewrites the first `len` client bytes into `to_server` and answers what
    /// can be answered at once. `outstanding` requests were sent before,
    /// untracked; `synced`: the batch ends with a sync point.
    fn rewrite(
        &mut self,
        len: usize,
        outstanding: u32,
        synced: bool,
    ) -> Result<(), crate::protocol::ProtocolError> {
        let server: &mut ServerConn = self.server.as_mut().expect("rewrite needs a server");
        let fresh = self.plan.is_empty();
        self.plan.begin_after(outstanding);
        let mut cache = self.core.statements.borrow_mut();
        let mut books = Books {
            client: &mut self.statements,
            server: &mut server.prepared,
            cache: &mut cache,
        };
        prepared::rewrite_batch(
            &self.client.buf[..len],
            &mut books,
            self.status,
            &mut self.to_server,
            &mut self.plan,
        )?;
        if fresh && synced {
            self.plan.drop_if_plain();
        }
        self.plan.answer_ready(&mut self.client.out);
        Ok(())
    }

    /// Writes the batch (`to_server` when rewritten, else the client's bytes)
    /// while relaying whatever the server sends meanwhile.
    async fn send(&mut self, rewritten: bool, len: usize) -> Result<(), End> {
        if !self.client.out.is_empty() {
            self.client.flush().await.map_err(|_| End::ClientGone)?;
        }
        let total = if rewritten { self.to_server.len() } else { len };
        let mut sent = 0;
        while sent < total {
            let Some(server) = self.server.as_mut() else {
                // Lost while sending; the client has its errors already.
                return Ok(());
            };
            let server: &mut ServerConn = server;
            let out = if rewritten {
                &self.to_server[sent..]
            } else {
                &self.client.buf[sent..len]
            };
            match write_or_read(&mut server.stream, out, &mut server.buf).await {
                WriteOrRead::Wrote(Ok(n)) if n > 0 => sent += n,
                WriteOrRead::Read(Ok(n)) if n > 0 => self.relay_server().await?,
                _ => return self.server_lost("08006", "server connection lost").await,
            }
        }
        Ok(())
    }

    /// Holding a server connection: relay both ways until it can be released.
    async fn active(&mut self) -> Result<(), End> {
        let busy = self.pending > 0 || self.unsynced;
        // Shutdown lets transactions finish: stop only between transactions.
        let can_stop = !busy && self.status == TransactionStatus::Idle;
        if can_stop && self.handle.shutdown.is_fired() {
            return Err(End::Shutdown);
        }
        let query_timeout = self.settings.query_timeout.filter(|_| self.pending > 0);
        // Idle with a transaction open, or idle holding a pinned connection.
        let idle_timeout = match self.status {
            _ if busy => None,
            TransactionStatus::Idle => self
                .settings
                .client_idle_timeout
                .map(|limit| (limit, Wake::ClientIdle)),
            _ => self
                .settings
                .client_idle_in_transaction_timeout
                .map(|limit| (limit, Wake::IdleInTransaction)),
        };
        // Sharded cluster: a request cannot follow one still in flight on
        // this shard's connection, since it may be for another shard; it
        // waits in the buffer until the reply is in and is routed then.
        let sharded = self.cluster.shard_count() > 1;
        let hold_client = sharded && self.pending > 0 && !self.unsynced && !self.copy_in;
        if sharded && !hold_client && !self.client.buf.is_empty() {
            let batch = scan_client(&self.client.buf, self.unsynced).map_err(End::Protocol)?;
            if batch.len > 0 && (batch.sync_points > 0 || batch.terminate || batch.flush) {
                return self.client_request(batch).await;
            }
        }
        let shutdown = self.handle.shutdown.clone();
        let server: &mut ServerConn = self.server.as_mut().expect("active needs a server");
        let client = &mut *self.client;
        let io = rt::race(
            async { Wake::Server(read_more(&mut server.stream, &mut server.buf).await) },
            async {
                if hold_client {
                    rt::never().await;
                }
                Wake::Client(client.read_more().await)
            },
        );
        let wake = if query_timeout.is_none() && idle_timeout.is_none() && !can_stop {
            io.await
        } else {
            rt::race(io, async {
                rt::race(
                    async {
                        match (query_timeout, idle_timeout) {
                            (Some(limit), _) => {
                                rt::sleep(limit).await;
                                Wake::QueryTimeout
                            }
                            (None, Some((limit, wake))) => {
                                rt::sleep(limit).await;
                                wake
                            }
                            (None, None) => {
                                rt::never().await;
                                Wake::ClientIdle
                            }
                        }
                    },
                    async {
                        if !can_stop {
                            rt::never().await;
                        }
                        shutdown.wait().await;
                        Wake::Shutdown
                    },
                )
                .await
            })
            .await
        };
        match wake {
            Wake::Server(Ok(n)) if n > 0 => self.relay_server().await,
            Wake::Server(_) => self.server_lost("08006", "server connection lost").await,
            Wake::Client(Ok(n)) if n > 0 => {
                while self.listen_here().await? {}
                let batch = scan_client(&self.client.buf, self.unsynced).map_err(End::Protocol)?;
                self.client_request(batch).await
            }
            Wake::Notify => self.deliver_notifications().await,
            Wake::Client(_) => Err(End::ClientGone),
            Wake::QueryTimeout => {
                self.server_lost("57014", "canceling statement due to query_timeout")
                    .await
            }
            Wake::ClientIdle => Err(End::ClientIdle),
            Wake::IdleInTransaction => Err(End::IdleInTransaction),
            Wake::Shutdown => Err(End::Shutdown),
        }
    }

    /// Client bytes while holding a server connection: on a sharded
    /// cluster a new request between transactions' statements is routed
    /// first; the rest goes to the server.
    async fn client_request(&mut self, batch: ClientBatch) -> Result<(), End> {
        let batch = if self.cluster.shard_count() > 1 && self.pending == 0 && !self.unsynced {
            shards::first_request(&self.client.buf, batch)
        } else {
            batch
        };
        if self.between_requests(&batch) {
            if let shards::Step::Done = self.route_in_transaction(&batch).await? {
                return Ok(());
            }
        }
        self.forward_client(batch).await
    }

    /// Sharded cluster, a server held (a transaction open on it, or the
    /// session pinned to it), everything sent answered, and a whole new
    /// request in hand: it may be for another shard.
    fn between_requests(&self, batch: &ClientBatch) -> bool {
        self.cluster.shard_count() > 1
            && self.pending == 0
            && !self.unsynced
            && self.partial == 0
            && self.plan.is_empty()
            && !self.begin_owed
            && batch.len > 0
            && batch.sync_points > 0
            && !batch.unsynced
    }

    /// Forwards what the server sent, then releases the connection if clean.
    async fn relay_server(&mut self) -> Result<(), End> {
        if self.begin_owed {
            match self.take_begin_reply() {
                Ok(false) => return Ok(()),
                Ok(true) => {
                    self.begin_owed = false;
                    if !self.client.out.is_empty() {
                        self.client.flush().await.map_err(|_| End::ClientGone)?;
                    }
                }
                Err((sqlstate, message)) => {
                    // Postgres skipped the request up to its Sync: none of
                    // it ran, and the transaction the client was told of
                    // never began.
                    self.begin_owed = false;
                    self.status = TransactionStatus::Idle;
                    return self.server_lost(&sqlstate, &message).await;
                }
            }
        }
        // One scan covers every whole message read so far.
        let server: &mut ServerConn = self.server.as_mut().expect("relay_server needs a server");
        let pending_before = self.pending;
        let status_before = self.status;
        let mut copy_in_starts = 0;
        let mut verdict = Verdict::default();
        let planned = !self.plan.is_empty();
        let (len, event) = if planned {
            let mut cache = self.core.statements.borrow_mut();
            let mut books = Books {
                client: &mut self.statements,
                server: &mut server.prepared,
                cache: &mut cache,
            };
            let scan = ServerScan {
                partial: &mut self.partial,
                pending: &mut self.pending,
                status: &mut self.status,
                copy_in_starts: &mut copy_in_starts,
            };
            scan_server_planned(
                &server.buf,
                scan,
                &mut self.plan,
                &mut books,
                &mut self.client.out,
                &mut verdict,
            )
        } else {
            scan_server(
                &server.buf,
                &mut self.partial,
                &mut self.pending,
                &mut self.status,
                &mut copy_in_starts,
            )
        };
        self.dirty |= verdict.uncertain;
        let ended =
            status_before != TransactionStatus::Idle && self.status == TransactionStatus::Idle;
        if ended {
            // LISTENs staged in the transaction take effect at its end; the
            // client hears of the end only once the listener has run them.
            let rollback_sent = std::mem::take(&mut self.rollback_sent);
            let rolled_back = rollback_sent || status_before == TransactionStatus::Failed;
            if let Some(synced) = end_listens(self.subscriber.as_mut(), rolled_back) {
                let _ = rt::timeout(self.settings.checkout.connect, synced.wait()).await;
            }
        }
        if planned {
            server.buf.advance(len);
            if !self.statements.done_listens.is_empty() {
                self.carry_out_listens().await;
            }
            self.client.flush().await.map_err(|_| End::ClientGone)?;
        } else if len > 0 {
            let written = self.client.stream.write_all(&server.buf[..len]).await;
            server.buf.advance(len);
            written.map_err(|_| End::ClientGone)?;
        }
        self.account_replies(pending_before, copy_in_starts);
        match event {
            Ok(ServerEvent::More) => {}
            Ok(ServerEvent::Fatal(len)) => {
                // The server closes after a FATAL: give up on it now rather
                // than forward anything more to it.
                let told = self.downgrade_fatal(len).await?;
                return self
                    .server_lost_after(told, "08006", "server connection lost")
                    .await;
            }
            Err(_) => {
                return self
                    .server_lost("08P01", "server sent an invalid message")
                    .await;
            }
        }
        self.release_if_clean().await;
        Ok(())
    }

    /// Keeps `request_ends` in step with the ReadyForQuery messages a scan
    /// found (`pending` fell from `pending_before`) and the COPY FROM STDIN
    /// starts it saw.
    fn account_replies(&mut self, pending_before: u32, copy_in_starts: u32) {
        for _ in self.pending..pending_before {
            self.request_ends.pop_front();
        }
        self.copy_in |= copy_in_starts > 0;
        for _ in 0..copy_in_starts {
            if self.request_ends.front() == Some(&true) {
                // The Sync after this COPY's Execute reaches the server in
                // copy-in mode and is ignored: no ReadyForQuery for it.
                self.request_ends.pop_front();
                self.pending = self.pending.saturating_sub(1);
            }
        }
    }

    /// Transaction mode: back to the pool once every request has its reply,
    /// nothing is left unsynced, no transaction is open and no bytes are
    /// held back. Bytes after the last ReadyForQuery are the start of
    /// something the server sent unasked (a notice, a FATAL): the connection
    /// is kept until they are whole and handled.
    async fn release_if_clean(&mut self) {
        let Some(server) = self.server.as_ref() else {
            return;
        };
        let drained =
            self.partial == 0 && server.buf.is_empty() && self.plan.is_empty() && !self.begin_owed;
        let clean = self.pending == 0 && !self.unsynced && self.status == TransactionStatus::Idle;
        if clean && drained && !self.sending && !self.settings.session_mode {
            self.release().await;
        }
    }

    /// In transaction mode a FATAL error ends the server connection, not the
    /// client's session: a client waiting for a reply gets it as an ERROR and
    /// keeps its connection to sleddog; an idle client is not told (its next
    /// request gets a fresh connection). In session mode it stays FATAL.
    /// Returns whether the client was sent the error.
    async fn downgrade_fatal(&mut self, len: usize) -> Result<bool, End> {
        let server = self
            .server
            .as_mut()
            .expect("downgrade_fatal needs a server");
        let message = server.buf.split_to(len);
        let waiting = self.pending > 0 || self.unsynced;
        if !waiting && !self.settings.session_mode {
            return Ok(false);
        }
        let severity = if self.settings.session_mode {
            Severity::Fatal
        } else {
            Severity::Error
        };
        let Ok(BackendMessage::ErrorResponse(fields)) = BackendMessage::decode(&message) else {
            return Ok(false);
        };
        let code = fields.code().unwrap_or("08006");
        let text = fields.message().unwrap_or("server connection lost");
        write::error_response(&mut self.client.out, severity, code, text, None);
        Ok(true)
    }

    /// Returns the (clean) server connection to its pool. One that ran
    /// session-changing statements is reset first; one a cancel was sent to
    /// during this checkout is closed, since the cancel may land later and must
    /// not hit the next client's query.
    async fn release(&mut self) {
        let Some(mut conn) = self.server.take() else {
            return;
        };
        if !self.parked.is_empty() {
            // The transaction ended on this shard without a COMMIT or
            // ROLLBACK of its own (`route_in_transaction` fans those out):
            // the others are rolled back as their connections close.
            tracing::warn!(
                shards = self.parked.len(),
                "a transaction on several shards ended on one; the others are rolled back"
            );
            self.parked.clear();
            self.fan_dirty = false;
        }
        self.handle.set_server(None);
        if self.handle.cancel_sent.replace(false) {
            return;
        }
        if std::mem::take(&mut self.capture) && !self.capture_settings(&mut conn).await {
            return;
        }
        if std::mem::take(&mut self.advisory) {
            match rt::timeout(RESET_TIMEOUT, conn.query_rows(ADVISORY_LOCKS_HELD)).await {
                Some(Ok(rows)) => self.locks_held = !rows.is_empty(),
                _ => return,
            }
        }
        if self.locks_held || self.pin_requested() {
            // Pinned: the client keeps this connection, as in session mode,
            // until it lets go.
            self.handle.set_server(Some(conn.cancel_key.clone()));
            self.server = Some(conn);
            return;
        }
        if std::mem::take(&mut self.dirty) && !discard_all(&mut conn).await {
            return;
        }
        let pool = conn.pool().clone();
        pool.checkin(conn);
    }

    /// The server connection is gone or given up on: drop it and answer every
    /// request the client still waits on with an error and a ReadyForQuery. Its
    /// next request gets a fresh connection. In session mode the session ends,
    /// as it would connected straight to Postgres.
    async fn server_lost(&mut self, sqlstate: &str, message: &str) -> Result<(), End> {
        self.server_lost_after(false, sqlstate, message).await
    }

    /// As `server_lost`, when `told`: the first waiting request already has its error.
    async fn server_lost_after(
        &mut self,
        told: bool,
        sqlstate: &str,
        message: &str,
    ) -> Result<(), End> {
        tracing::debug!(
            pending = self.pending,
            unsynced = self.unsynced,
            told,
            sqlstate,
            message,
            "server connection lost under a client"
        );
        if let Some(mut conn) = self.server.take() {
            let mut cache = self.core.statements.borrow_mut();
            let mut books = Books {
                client: &mut self.statements,
                server: &mut conn.prepared,
                cache: &mut cache,
            };
            self.plan.abandon(&mut books);
            drop(cache);
            if self.pending > 0 || self.unsynced {
                // It may still be running the client's statement: stop it.
                cancel_in_background(&conn);
            }
        }
        self.handle.set_server(None);
        self.request_ends.clear();
        self.begin_owed = false;
        if self.partial > 0 {
            // Part of a message already reached the client: its stream cannot
            // carry an error any more. End the session, as Postgres would.
            return Err(End::ServerGone);
        }
        let in_transaction = self.status != TransactionStatus::Idle || !self.parked.is_empty();
        let out = &mut self.client.out;
        if self.settings.session_mode || in_transaction {
            // Session state or an open transaction is gone with the server
            // connection; running the client's next statements outside it would
            // be wrong, so the session ends, as it would on Postgres.
            if !told {
                write::error_response(out, Severity::Fatal, sqlstate, message, None);
            }
            let _ = self.client.flush().await;
            return Err(End::ServerGone);
        }
        for request in 0..self.pending {
            if request > 0 || !told {
                write::error_response(out, Severity::Error, sqlstate, message, None);
            }
            write::ready_for_query(out, TransactionStatus::Idle);
        }
        if self.pending == 0 && self.unsynced {
            // A Flush-ended request: its error now, its Sync answered later.
            if !told {
                write::error_response(out, Severity::Error, sqlstate, message, None);
            }
            self.discard_until_sync = true;
        }
        self.pending = 0;
        self.unsynced = false;
        self.partial = 0;
        self.status = TransactionStatus::Idle;
        self.client.flush().await.map_err(|_| End::ClientGone)
    }

    /// The session is over: return the server connection only if it is clean or
    /// can be made clean by a rollback; otherwise close it.
    async fn release_on_exit(&mut self) {
        let Some(mut conn) = self.server.take() else {
            return;
        };
        self.handle.set_server(None);
        let recovery = self.settings.connection_recovery;
        let idle_between_requests = self.pending == 0 && !self.unsynced && self.partial == 0;
        if !idle_between_requests {
            // `recover`: let the server finish what it was sent and read its
            // replies away, then clean up as below. Never for a request still
            // unsynced: only a Sync would end it, and that would commit it.
            let drainable = recovery == ConnectionRecovery::Recover
                && !self.unsynced
                && !self.core.is_shutting_down()
                && !self.handle.cancel_sent.get();
            if !drainable || !self.drain(&mut conn).await {
                // A statement may be running: cancel it, then close the
                // connection (the server aborts anything uncommitted; no Sync
                // is ever sent).
                cancel_in_background(&conn);
                return;
            }
        }
        if self.core.is_shutting_down() || self.handle.cancel_sent.get() {
            return;
        }
        if self.status != TransactionStatus::Idle
            && (recovery == ConnectionRecovery::Drop || !reset(&mut conn, "ROLLBACK").await)
        {
            return;
        }
        let needs_discard = self.settings.session_mode || self.dirty || self.capture;
        if needs_discard && !discard_all(&mut conn).await {
            return;
        }
        let pool = conn.pool().clone();
        pool.checkin(conn);
    }
}

impl Relay<'_> {
    /// The client is gone with requests in flight: reads and drops the
    /// server's replies through the last ReadyForQuery owed, within
    /// RESET_TIMEOUT. A COPY FROM STDIN under way is failed (CopyFail) so the
    /// server ends it without committing. False when the connection must be
    /// closed instead.
    async fn drain(&mut self, conn: &mut PooledConn) -> bool {
        if !self.plan.is_empty() {
            // Replies the plan would have checked: the connection's prepared
            // statements are no longer known for sure.
            self.dirty = true;
        }
        let deadline = RESET_TIMEOUT;
        let work = async {
            loop {
                if self.copy_in && !send_copy_fail(conn).await {
                    return false;
                }
                self.copy_in = false;
                // The same scan as when relaying; the bytes go nowhere.
                let pending_before = self.pending;
                let mut copy_in_starts = 0;
                let (len, event) = scan_server(
                    &conn.buf,
                    &mut self.partial,
                    &mut self.pending,
                    &mut self.status,
                    &mut copy_in_starts,
                );
                conn.buf.advance(len);
                self.account_replies(pending_before, copy_in_starts);
                if !matches!(event, Ok(ServerEvent::More)) {
                    return false;
                }
                if self.pending == 0 && !self.copy_in {
                    return conn.buf.is_empty() && self.partial == 0;
                }
                let server: &mut ServerConn = conn;
                if !matches!(read_more(&mut server.stream, &mut server.buf).await, Ok(n) if n > 0) {
                    return false;
                }
            }
        };
        rt::timeout(deadline, work).await == Some(true)
    }
}

/// The replies to a `BEGIN` sent ahead of a request (`ServerConn::send_begin`)
/// at the front of `buf`: ParseComplete, BindComplete, then CommandComplete,
/// none of them the client's; a notice or ParameterStatus among them is the
/// client's and is copied to `out`. Returns how many bytes were read and
/// whether the CommandComplete was among them (else more bytes are needed).
/// Err: the server's SQLSTATE and message, the `BEGIN` failed. Bytes that
/// are not a message are left for the usual scan to report.
fn begin_reply(buf: &[u8], out: &mut BytesMut) -> Result<(usize, bool), (String, String)> {
    let mut at = 0;
    loop {
        let header = match frame::header(&buf[at..], DEFAULT_MAX_MESSAGE_LEN) {
            Ok(Some(header)) if header.total_len <= buf.len() - at => header,
            Ok(_) => return Ok((at, false)),
            Err(_) => return Ok((at, true)),
        };
        let message = &buf[at..at + header.total_len];
        at += header.total_len;
        match header.tag {
            b'1' | b'2' => {}
            b'C' => return Ok((at, true)),
            b'E' => {
                let fields = ErrorFields::parse(&message[frame::HEADER_LEN..]).ok();
                let sqlstate = fields.as_ref().and_then(|f| f.code()).unwrap_or("08P01");
                let text = fields.as_ref().and_then(|f| f.message());
                return Err((
                    sqlstate.to_owned(),
                    text.unwrap_or("BEGIN failed").to_owned(),
                ));
            }
            _ => out.extend_from_slice(message),
        }
    }
}

/// What sleddog answers, message by message, to a request that ends a
/// failed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    ParseComplete,
    BindComplete,
    NoData,
    /// The statement's CommandComplete (`ROLLBACK`).
    Done,
}

/// Is `batch` one request that only ends the transaction: a simple Query of
/// one `COMMIT`/`END`/`ROLLBACK`/`ABORT` (no `AND CHAIN`), or the same as an
/// unnamed Parse, Bind, optional Describe of the portal, Execute and Sync?
/// The replies owed before ReadyForQuery if so.
fn ends_transaction(batch: &[u8], cache: &mut QueryCache) -> Option<Vec<Reply>> {
    let mut ends = |sql: &str| {
        let classified = cache.get_or_classify(sql);
        classified.statements == 1
            && matches!(
                classified.transaction,
                Some(Transaction::Commit { chain: false } | Transaction::Rollback { chain: false })
            )
    };
    let mut messages = Vec::new();
    let mut offset = 0;
    while offset < batch.len() {
        let header = frame::header(&batch[offset..], DEFAULT_MAX_MESSAGE_LEN).ok()??;
        let end = offset + header.total_len;
        messages.push(FrontendMessage::decode(batch.get(offset..end)?).ok()?);
        offset = end;
    }
    match messages.as_slice() {
        [FrontendMessage::Query { sql }] => ends(sql).then(|| vec![Reply::Done]),
        [FrontendMessage::Parse { name: "", sql, .. }, FrontendMessage::Bind {
            portal: "",
            statement: "",
        }, rest @ ..] => {
            let mut replies = vec![Reply::ParseComplete, Reply::BindComplete];
            let rest = match rest {
                [FrontendMessage::Describe {
                    target: DescribeTarget::Portal,
                    name: "",
                }, rest @ ..] => {
                    replies.push(Reply::NoData);
                    rest
                }
                rest => rest,
            };
            let executes = matches!(
                rest,
                [
                    FrontendMessage::Execute { portal: "", .. },
                    FrontendMessage::Sync
                ]
            );
            (executes && ends(sql)).then(|| {
                replies.push(Reply::Done);
                replies
            })
        }
        _ => None,
    }
}

/// Ends a COPY FROM STDIN the client abandoned, without committing it.
async fn send_copy_fail(conn: &mut PooledConn) -> bool {
    let mut out = BytesMut::new();
    write::copy_fail(&mut out, "client disconnected");
    conn.stream.write_all(&out).await.is_ok()
}

/// Runs a statement of sleddog's own to clean a connection, within
/// RESET_TIMEOUT; false when the connection must be closed instead.
async fn reset(conn: &mut PooledConn, sql: &str) -> bool {
    matches!(
        rt::timeout(RESET_TIMEOUT, conn.execute(sql)).await,
        Some(Ok(()))
    )
}

/// A transaction ended: LISTENs staged in it take effect, unless it was
/// rolled back. Returns what to wait for before telling the client.
fn end_listens(subscriber: Option<&mut Subscriber>, rolled_back: bool) -> Option<pubsub::Synced> {
    let subscriber = subscriber.filter(|s| s.has_staged())?;
    if rolled_back {
        subscriber.rollback();
        return None;
    }
    Some(subscriber.commit())
}

/// Resets a connection's session state; its prepared statements go too.
async fn discard_all(conn: &mut PooledConn) -> bool {
    conn.prepared.clear();
    conn.session = Params::default();
    reset(conn, "DISCARD ALL").await
}

/// Sends a CancelRequest for whatever the connection runs, without waiting.
fn cancel_in_background(conn: &PooledConn) {
    server_conn::cancel_in_background(&conn.cancel_key, RESET_TIMEOUT);
}

fn checkout_failure(error: &CheckoutError, database: &str) -> (&'static str, String) {
    match error {
        CheckoutError::Timeout => (
            "53300",
            format!("no server connection for \"{database}\" became free within checkout_timeout"),
        ),
        CheckoutError::Connect(cause) => (
            "08006",
            format!("could not connect to the server for \"{database}\": {cause}"),
        ),
        CheckoutError::Retired => (
            "57P01",
            format!("the pool for \"{database}\" was reconfigured; retry"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_begin_reply_is_read_off_the_front_and_the_rest_left() {
        let notice = message(b'N', b"SWARNING\0C01000\0Mnote\0\0");
        let mut buf = [
            message(b'1', b""),
            message(b'2', b""),
            notice.clone(),
            message(b'C', b"BEGIN\0"),
        ]
        .concat();
        let client_reply = message(b'C', b"SELECT 1\0");
        buf.extend_from_slice(&client_reply);
        let mut out = BytesMut::new();
        let (consumed, done) = begin_reply(&buf, &mut out).unwrap();
        assert!(done);
        assert_eq!(&buf[consumed..], &client_reply[..]);
        assert_eq!(&out[..], &notice[..], "the notice is the client's");
    }

    #[test]
    fn a_begin_reply_in_pieces_is_read_as_it_comes() {
        let whole = [
            message(b'1', b""),
            message(b'2', b""),
            message(b'C', b"BEGIN\0"),
        ]
        .concat();
        let mut out = BytesMut::new();
        // ParseComplete and part of BindComplete: the first is read.
        assert_eq!(begin_reply(&whole[..6], &mut out), Ok((5, false)));
        assert_eq!(begin_reply(&whole[5..12], &mut out), Ok((5, false)));
        assert_eq!(begin_reply(&whole[10..], &mut out), Ok((11, true)));
        assert!(out.is_empty());
    }

    fn extended(sql: &str, describe: bool) -> Vec<u8> {
        let mut parse = vec![0];
        parse.extend_from_slice(sql.as_bytes());
        parse.extend_from_slice(&[0, 0, 0]);
        let mut out = [
            message(b'P', &parse),
            message(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]),
        ]
        .concat();
        if describe {
            out.extend(message(b'D', b"P\0"));
        }
        out.extend(message(b'E', &[0, 0, 0, 0, 0]));
        out.extend(message(b'S', b""));
        out
    }

    #[test]
    fn only_a_lone_commit_or_rollback_ends_a_failed_transaction() {
        let mut cache = QueryCache::new(16);
        for sql in ["ROLLBACK", "commit", "END", "abort work;"] {
            let query = message(b'Q', format!("{sql}\0").as_bytes());
            assert_eq!(
                ends_transaction(&query, &mut cache),
                Some(vec![Reply::Done]),
                "{sql}"
            );
        }
        assert_eq!(
            ends_transaction(&extended("ROLLBACK", true), &mut cache),
            Some(vec![
                Reply::ParseComplete,
                Reply::BindComplete,
                Reply::NoData,
                Reply::Done
            ])
        );
        assert_eq!(
            ends_transaction(&extended("COMMIT", false), &mut cache),
            Some(vec![Reply::ParseComplete, Reply::BindComplete, Reply::Done])
        );
        for sql in [
            "SELECT 1",
            "ROLLBACK; SELECT 1",
            "COMMIT AND CHAIN",
            "ROLLBACK TO SAVEPOINT s",
        ] {
            let query = message(b'Q', format!("{sql}\0").as_bytes());
            assert_eq!(ends_transaction(&query, &mut cache), None, "{sql}");
        }
        assert_eq!(
            ends_transaction(&extended("SELECT 1", false), &mut cache),
            None
        );
        let two = [message(b'Q', b"ROLLBACK\0"), message(b'Q', b"ROLLBACK\0")].concat();
        assert_eq!(ends_transaction(&two, &mut cache), None);
    }

    #[test]
    fn a_failed_begin_gives_the_servers_error() {
        let buf = [
            message(b'1', b""),
            message(b'E', b"SERROR\0C25001\0Mnot now\0\0"),
        ]
        .concat();
        let mut out = BytesMut::new();
        assert_eq!(
            begin_reply(&buf, &mut out),
            Err(("25001".to_owned(), "not now".to_owned()))
        );
    }
}

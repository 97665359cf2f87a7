//! The query loop: the hot path.
//!
//! Idle (no server connection): read the client until a complete request is in
//! hand (a Query, Sync, Flush or FunctionCall ends one), then check out a server
//! connection. Active: forward complete client messages to the server and the
//! server's bytes to the client, one write per read, decoding only message
//! headers, ReadyForQuery and fatal errors. When every request sent has had its
//! ReadyForQuery, nothing is left unsynced and the server says Idle, the server
//! connection is provably clean and goes back to the pool (transaction mode).
//!
//! A client that vanishes with work in flight (before its Sync, mid-COPY,
//! mid-query) never has its work committed: the server connection is closed,
//! never sent a Sync on the client's behalf. One that vanishes idle inside a
//! transaction has it rolled back before the connection is reused.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::Buf;

use crate::control::snapshot::Snapshot;
use crate::core::Core;
use crate::ids::Epoch;
use crate::pool::server_conn::{self, read_more};
use crate::pool::{CheckoutError, CheckoutLimits, Cluster, PooledConn, ServerConn};
use crate::protocol::backend::{BackendKind, BackendMessage, TransactionStatus};
use crate::protocol::frontend::FrontendKind;
use crate::protocol::write::{self, Severity};
use crate::protocol::{frame, ProtocolError, DEFAULT_MAX_MESSAGE_LEN};
use crate::rt::{self, AsyncWriteExt};
use crate::session::client::Client;
use crate::session::SessionHandle;

/// Bytes a client may send without ending a request (Sync, Flush, Query) while
/// it holds no server connection.
const MAX_BUFFERED_REQUEST_LEN: usize = 2 * DEFAULT_MAX_MESSAGE_LEN;
/// Bound on statements sleddog runs on its own to clean a connection.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// Postgres never sends a message over 1 GiB (MaxAllocSize).
const MAX_SERVER_MESSAGE_LEN: usize = 1 << 30;

/// What the relay needs from the configuration, copied once per session.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub session_mode: bool,
    pub checkout: CheckoutLimits,
    pub query_timeout: Option<Duration>,
    pub client_idle_timeout: Option<Duration>,
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
        }
    }
}

/// Complete client messages at the front of the buffer, as far as they go.
#[derive(Debug, Default, PartialEq, Eq)]
struct ClientBatch {
    /// Bytes of complete messages before any Terminate.
    len: usize,
    /// Messages that each earn a ReadyForQuery: Query, Sync, FunctionCall.
    sync_points: u32,
    flush: bool,
    /// Extended-protocol messages after the last sync point.
    unsynced: bool,
    terminate: bool,
}

fn scan_client(buf: &[u8], unsynced: bool) -> Result<ClientBatch, ProtocolError> {
    let mut batch = ClientBatch {
        unsynced,
        ..ClientBatch::default()
    };
    let mut offset = 0;
    while let Some(header) = frame::header(&buf[offset..], DEFAULT_MAX_MESSAGE_LEN)? {
        if offset + header.total_len > buf.len() {
            break;
        }
        match FrontendKind::from_tag(header.tag)? {
            FrontendKind::Query | FrontendKind::Sync | FrontendKind::FunctionCall => {
                batch.sync_points += 1;
                batch.unsynced = false;
            }
            FrontendKind::Flush => batch.flush = true,
            FrontendKind::Terminate => {
                batch.terminate = true;
                break;
            }
            FrontendKind::Parse
            | FrontendKind::Bind
            | FrontendKind::Describe
            | FrontendKind::Execute
            | FrontendKind::Close => batch.unsynced = true,
            FrontendKind::CopyData | FrontendKind::CopyDone | FrontendKind::CopyFail => {}
            FrontendKind::Password => {
                return Err(ProtocolError::Malformed("password message after login"));
            }
        }
        offset += header.total_len;
        batch.len = offset;
    }
    Ok(batch)
}

/// What stopped a scan of server bytes.
enum ServerEvent {
    /// Nothing more to look at now.
    More,
    /// A FATAL/PANIC ErrorResponse of this length starts at the scan end: the
    /// server is about to close.
    Fatal(usize),
}

/// How the session ended, for logs.
enum End {
    ClientGone,
    Protocol(ProtocolError),
    Shutdown,
    ClientIdle,
    /// Session mode: the server connection, and so the session's state, is gone.
    ServerGone,
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
}

impl<'a> Relay<'a> {
    pub fn new(
        core: &'a Rc<Core>,
        handle: &'a Rc<SessionHandle>,
        cluster: Rc<Cluster>,
        client: &'a mut Client,
        settings: RelaySettings,
    ) -> Relay<'a> {
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
        if self.handle.shutdown.is_fired() {
            return Err(End::Shutdown);
        }
        let shutdown = self.handle.shutdown.clone();
        let idle_limit = self.settings.client_idle_timeout;
        let client = &mut *self.client;
        let wake = rt::race(async { Wake::Client(client.read_more().await) }, async {
            rt::race(
                async {
                    shutdown.wait().await;
                    Wake::Shutdown
                },
                async {
                    match idle_limit {
                        Some(limit) => rt::sleep(limit).await,
                        None => rt::never().await,
                    }
                    Wake::ClientIdle
                },
            )
            .await
        })
        .await;
        match wake {
            Wake::Client(Ok(n)) if n > 0 => Ok(()),
            Wake::Shutdown => Err(End::Shutdown),
            Wake::ClientIdle => Err(End::ClientIdle),
            _ => Err(End::ClientGone),
        }
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
        self.handle.waiting.set(true);
        self.handle.withdraw.reset();
        let mut outcome = self.checkout().await;
        if matches!(outcome, Checkout::Failed(CheckoutError::Retired)) {
            // A reload retired the pool while we waited: one more try on the new one.
            self.refresh_cluster();
            outcome = self.checkout().await;
        }
        self.handle.waiting.set(false);
        match outcome {
            Checkout::Got(conn) => {
                self.handle.set_server(Some(conn.cancel_key.clone()));
                self.server = Some(conn);
                self.dirty = false;
                self.status = TransactionStatus::Idle;
                self.forward_client(batch).await
            }
            Checkout::Withdrawn => {
                let message = "canceling statement due to user request";
                self.fail_request(batch, "57014", message).await
            }
            Checkout::Failed(error) => {
                let (sqlstate, message) = checkout_failure(&error, &self.cluster.database);
                self.fail_request(batch, sqlstate, &message).await
            }
        }
    }

    /// Checks out from the cluster's primary, unless a cancel withdraws the wait.
    async fn checkout(&self) -> Checkout {
        let pool = self.cluster.primary().clone();
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
    /// each sync point, as if each had failed on the server.
    async fn fail_request(
        &mut self,
        batch: ClientBatch,
        sqlstate: &str,
        message: &str,
    ) -> Result<(), End> {
        let out = &mut self.client.out;
        for _ in 0..batch.sync_points {
            write::error_response(out, Severity::Error, sqlstate, message, None);
            write::ready_for_query(out, TransactionStatus::Idle);
        }
        if batch.unsynced {
            write::error_response(out, Severity::Error, sqlstate, message, None);
            self.discard_until_sync = true;
        }
        self.unsynced = false;
        self.client.buf.advance(batch.len);
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
                write::ready_for_query(&mut self.client.out, TransactionStatus::Idle);
                return self.client.flush().await.map_err(|_| End::ClientGone);
            }
        }
    }

    /// Sends the batch's complete messages to the server in one write.
    async fn forward_client(&mut self, batch: ClientBatch) -> Result<(), End> {
        if batch.len > 0 {
            let server = self.server.as_mut().expect("forward_client needs a server");
            let sent = server.stream.write_all(&self.client.buf[..batch.len]).await;
            self.dirty |= note_requests(&self.client.buf[..batch.len], &mut self.request_ends);
            self.client.buf.advance(batch.len);
            self.pending += batch.sync_points;
            self.unsynced = batch.unsynced;
            if sent.is_err() {
                return self.server_lost("08006", "server connection lost").await;
            }
        }
        if batch.terminate {
            return Err(End::ClientGone);
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
        let idle_timeout = self.settings.client_idle_timeout.filter(|_| !busy);
        let shutdown = self.handle.shutdown.clone();
        let server: &mut ServerConn = self.server.as_mut().expect("active needs a server");
        let client = &mut *self.client;
        let io = rt::race(
            async { Wake::Server(read_more(&mut server.stream, &mut server.buf).await) },
            async { Wake::Client(client.read_more().await) },
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
                            (None, Some(limit)) => {
                                rt::sleep(limit).await;
                                Wake::ClientIdle
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
                let batch = scan_client(&self.client.buf, self.unsynced).map_err(End::Protocol)?;
                self.forward_client(batch).await
            }
            Wake::Client(_) => Err(End::ClientGone),
            Wake::QueryTimeout => {
                self.server_lost("57014", "canceling statement due to query_timeout")
                    .await
            }
            Wake::ClientIdle => Err(End::ClientIdle),
            Wake::Shutdown => Err(End::Shutdown),
        }
    }

    /// Forwards what the server sent, then releases the connection if clean.
    async fn relay_server(&mut self) -> Result<(), End> {
        // One scan covers every whole message read so far.
        let server = self.server.as_mut().expect("relay_server needs a server");
        let pending_before = self.pending;
        let mut copy_in_starts = 0;
        let (len, event) = scan_server(
            &server.buf,
            &mut self.partial,
            &mut self.pending,
            &mut self.status,
            &mut copy_in_starts,
        );
        for _ in self.pending..pending_before {
            self.request_ends.pop_front();
        }
        for _ in 0..copy_in_starts {
            if self.request_ends.front() == Some(&true) {
                // The Sync after this COPY's Execute reaches the server in
                // copy-in mode and is ignored: no ReadyForQuery for it.
                self.request_ends.pop_front();
                self.pending = self.pending.saturating_sub(1);
            }
        }
        if len > 0 {
            let written = self.client.stream.write_all(&server.buf[..len]).await;
            server.buf.advance(len);
            written.map_err(|_| End::ClientGone)?;
        }
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
        // Bytes after the last ReadyForQuery are the start of something the
        // server sent unasked (a notice, a FATAL): keep the connection until
        // they are whole and handled.
        let drained = self.partial == 0 && self.server.as_ref().is_some_and(|s| s.buf.is_empty());
        let clean = self.pending == 0 && !self.unsynced && self.status == TransactionStatus::Idle;
        if clean && drained && !self.settings.session_mode {
            self.release().await;
        }
        Ok(())
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
        self.handle.set_server(None);
        if self.handle.cancel_sent.replace(false) {
            return;
        }
        if std::mem::take(&mut self.dirty) && !reset(&mut conn, "DISCARD ALL").await {
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
        if let Some(conn) = self.server.take() {
            if self.pending > 0 || self.unsynced {
                // It may still be running the client's statement: stop it.
                cancel_in_background(&conn);
            }
        }
        self.handle.set_server(None);
        self.request_ends.clear();
        if self.partial > 0 {
            // Part of a message already reached the client: its stream cannot
            // carry an error any more. End the session, as Postgres would.
            return Err(End::ServerGone);
        }
        let in_transaction = self.status != TransactionStatus::Idle;
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
        let idle_between_requests = self.pending == 0 && !self.unsynced && self.partial == 0;
        if !idle_between_requests {
            // A statement may be running: cancel it, then close the connection
            // (the server aborts anything uncommitted; no Sync is ever sent).
            cancel_in_background(&conn);
            return;
        }
        if self.core.is_shutting_down() || self.handle.cancel_sent.get() {
            return;
        }
        if self.status != TransactionStatus::Idle && !reset(&mut conn, "ROLLBACK").await {
            return;
        }
        let needs_discard = self.settings.session_mode || self.dirty;
        if needs_discard && !reset(&mut conn, "DISCARD ALL").await {
            return;
        }
        let pool = conn.pool().clone();
        pool.checkin(conn);
    }
}

/// Walks server messages from the front of `buf`: returns how many bytes can be
/// forwarded now and why it stopped. Messages the proxy must read
/// (ReadyForQuery, ErrorResponse) are forwarded only once whole; others are
/// forwarded as their bytes arrive (`partial` remembers the rest of one).
fn scan_server(
    buf: &[u8],
    partial: &mut usize,
    pending: &mut u32,
    status: &mut TransactionStatus,
    copy_in_starts: &mut u32,
) -> (usize, Result<ServerEvent, ProtocolError>) {
    let mut offset = (*partial).min(buf.len());
    *partial -= offset;
    if *partial > 0 {
        return (offset, Ok(ServerEvent::More));
    }
    loop {
        let header = match frame::header(&buf[offset..], MAX_SERVER_MESSAGE_LEN) {
            Ok(Some(header)) => header,
            Ok(None) => return (offset, Ok(ServerEvent::More)),
            Err(error) => return (offset, Err(error)),
        };
        let available = buf.len() - offset;
        let kind = match BackendKind::from_tag(header.tag) {
            Ok(kind) => kind,
            Err(error) => return (offset, Err(error)),
        };
        match kind {
            BackendKind::ReadyForQuery | BackendKind::ErrorResponse => {
                if header.total_len > available {
                    return (offset, Ok(ServerEvent::More));
                }
                let message = &buf[offset..offset + header.total_len];
                match BackendMessage::decode(message) {
                    Ok(BackendMessage::ReadyForQuery(new_status)) => {
                        *status = new_status;
                        *pending = pending.saturating_sub(1);
                    }
                    Ok(BackendMessage::ErrorResponse(fields)) => {
                        if matches!(fields.severity(), Some("FATAL") | Some("PANIC")) {
                            return (offset, Ok(ServerEvent::Fatal(header.total_len)));
                        }
                    }
                    Ok(_) => {}
                    Err(error) => return (offset, Err(error)),
                }
                offset += header.total_len;
            }
            _ => {
                if kind == BackendKind::CopyInResponse {
                    *copy_in_starts += 1;
                }
                if header.total_len > available {
                    *partial = header.total_len - available;
                    return (buf.len(), Ok(ServerEvent::More));
                }
                offset += header.total_len;
            }
        }
    }
}

/// Runs a statement of sleddog's own to clean a connection, within
/// RESET_TIMEOUT; false when the connection must be closed instead.
async fn reset(conn: &mut PooledConn, sql: &str) -> bool {
    matches!(
        rt::timeout(RESET_TIMEOUT, conn.execute(sql)).await,
        Some(Ok(()))
    )
}

/// Sends a CancelRequest for whatever the connection runs, without waiting.
fn cancel_in_background(conn: &PooledConn) {
    let key = conn.cancel_key.clone();
    rt::spawn(async move {
        let _ = server_conn::send_cancel(&key, RESET_TIMEOUT).await;
    })
    .detach();
}

/// Records how each forwarded request ends (see `Relay::request_ends`) and
/// returns true when one of the messages changes session state that would
/// outlive the transaction. The bytes were validated by `scan_client`.
fn note_requests(buf: &[u8], ends: &mut VecDeque<bool>) -> bool {
    let mut dirty = false;
    let mut offset = 0;
    while let Ok(Some(header)) = frame::header(&buf[offset..], DEFAULT_MAX_MESSAGE_LEN) {
        let end = offset + header.total_len;
        if end > buf.len() {
            break;
        }
        let body = &buf[offset + frame::HEADER_LEN..end];
        match FrontendKind::from_tag(header.tag) {
            Ok(FrontendKind::Query) => {
                ends.push_back(false);
                dirty |= changes_session_state(body);
            }
            Ok(FrontendKind::FunctionCall) => ends.push_back(false),
            Ok(FrontendKind::Sync) => ends.push_back(true),
            // A named prepared statement outlives the transaction.
            Ok(FrontendKind::Parse) => dirty |= body.first().is_some_and(|b| *b != 0),
            _ => {}
        }
        offset = end;
    }
    dirty
}

/// True when a simple-protocol SQL string starts with a statement whose effect
/// outlives its transaction. Transaction pooling hands the connection to other
/// clients afterwards, so such a connection is reset (DISCARD ALL) first.
/// Looks at the first word only (and a little past it); no allocation.
/// (Tracking and replaying this state per client is the session-state work;
/// `set_config(..., false)` and advisory locks are handled there too.)
fn changes_session_state(sql: &[u8]) -> bool {
    let (word, rest) = first_word(sql);
    let is = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
    if is("set") {
        // SET LOCAL ends with the transaction.
        return !first_word(rest).0.eq_ignore_ascii_case(b"local");
    }
    if is("create") {
        let next = first_word(rest).0;
        return next.eq_ignore_ascii_case(b"temp") || next.eq_ignore_ascii_case(b"temporary");
    }
    if is("declare") {
        return contains_ignore_case(rest, b"with hold");
    }
    ["reset", "listen", "prepare", "load", "discard"]
        .iter()
        .any(|w| is(w))
}

/// The first run of ASCII letters after leading white space, and what follows.
fn first_word(sql: &[u8]) -> (&[u8], &[u8]) {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    let end = sql[start..]
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .map_or(sql.len(), |n| start + n);
    (&sql[start..end], &sql[end..])
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
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
    use bytes::BytesMut;

    fn msg(out: &mut BytesMut, tag: u8, body: &[u8]) {
        out.extend_from_slice(&[tag]);
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
    }

    #[test]
    fn client_batch_counts_sync_points_and_unsynced() {
        let mut buf = BytesMut::new();
        msg(&mut buf, b'P', b"\0select 1\0\0\0");
        msg(&mut buf, b'B', b"\0\0\0\0\0\0\0\0");
        msg(&mut buf, b'E', b"\0\0\0\0\0");
        let batch = scan_client(&buf, false).unwrap();
        assert_eq!(batch.sync_points, 0);
        assert!(batch.unsynced);
        assert!(!batch.flush);
        msg(&mut buf, b'S', b"");
        let batch = scan_client(&buf, false).unwrap();
        assert_eq!(batch.sync_points, 1);
        assert!(!batch.unsynced);
        assert_eq!(batch.len, buf.len());
    }

    #[test]
    fn client_batch_stops_at_incomplete_and_terminate() {
        let mut buf = BytesMut::new();
        msg(&mut buf, b'Q', b"select 1\0");
        let whole = buf.len();
        msg(&mut buf, b'X', b"");
        msg(&mut buf, b'Q', b"select 2\0");
        let batch = scan_client(&buf, false).unwrap();
        assert_eq!(batch.len, whole);
        assert!(batch.terminate);
        let batch = scan_client(&buf[..whole + 2], false).unwrap();
        assert_eq!(batch.len, whole);
        assert!(!batch.terminate);
    }

    #[test]
    fn session_changing_statements() {
        for sql in [
            "SET search_path TO a",
            "  set statement_timeout = 5",
            "RESET ALL",
            "listen chan",
            "PREPARE p AS SELECT 1",
            "create temp table t (id int)",
            "CREATE TEMPORARY TABLE t (id int)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "DISCARD PLANS",
        ] {
            assert!(changes_session_state(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SET LOCAL search_path TO a",
            "select 1",
            "SELECT * FROM settings",
            "create table t (id int)",
            "DECLARE c CURSOR FOR SELECT 1",
            "insert into listen values (1)",
            "",
        ] {
            assert!(!changes_session_state(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn requests_ends_and_named_parse_are_noted() {
        let mut buf = BytesMut::new();
        msg(&mut buf, b'P', b"s1\0select 1\0\0\0");
        msg(&mut buf, b'S', b"");
        msg(&mut buf, b'Q', b"select 1\0");
        let mut ends = VecDeque::new();
        assert!(note_requests(&buf, &mut ends));
        assert_eq!(ends, [true, false]);
        let mut buf = BytesMut::new();
        msg(&mut buf, b'P', b"\0select 1\0\0\0");
        msg(&mut buf, b'S', b"");
        assert!(!note_requests(&buf, &mut ends));
    }

    #[test]
    fn client_batch_rejects_unknown_tag() {
        let mut buf = BytesMut::new();
        msg(&mut buf, b'!', b"");
        assert!(scan_client(&buf, false).is_err());
    }

    #[test]
    fn server_scan_forwards_partial_rows_but_waits_for_whole_ready_for_query() {
        let mut buf = BytesMut::new();
        msg(&mut buf, b'D', &[0u8; 100]);
        msg(&mut buf, b'C', b"SELECT 1\0");
        msg(&mut buf, b'Z', b"I");
        let (mut partial, mut pending, mut status) = (0, 1, TransactionStatus::InTransaction);
        // Half a DataRow: forwarded, 50-odd bytes still owed.
        let (len, event) = scan_server(&buf[..60], &mut partial, &mut pending, &mut status, &mut 0);
        assert_eq!(len, 60);
        assert!(matches!(event, Ok(ServerEvent::More)));
        assert_eq!(partial, 105 - 60);
        // The rest minus the last byte of ReadyForQuery: stops before it.
        let rest = &buf[60..buf.len() - 1];
        let (len, _) = scan_server(rest, &mut partial, &mut pending, &mut status, &mut 0);
        assert_eq!(len, rest.len() - 5);
        assert_eq!(pending, 1);
        let rest = &buf[60 + len..];
        let (len, _) = scan_server(rest, &mut partial, &mut pending, &mut status, &mut 0);
        assert_eq!(len, 6);
        assert_eq!(pending, 0);
        assert_eq!(status, TransactionStatus::Idle);
    }

    #[test]
    fn server_scan_stops_before_fatal() {
        let mut buf = BytesMut::new();
        msg(&mut buf, b'N', b"SNOTICE\0C00000\0Mhi\0\0");
        let notice = buf.len();
        msg(&mut buf, b'E', b"SFATAL\0VFATAL\0C57P01\0Mbye\0\0");
        let (mut partial, mut pending, mut status) = (0, 1, TransactionStatus::Idle);
        let (len, event) = scan_server(&buf, &mut partial, &mut pending, &mut status, &mut 0);
        assert_eq!(len, notice);
        match event {
            Ok(ServerEvent::Fatal(n)) => assert_eq!(n, buf.len() - notice),
            _ => panic!("expected a fatal event"),
        }
    }
}

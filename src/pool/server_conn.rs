//! One TCP connection from this core to a Postgres server: login, authentication,
//! and the small amount of state the pool needs to judge whether it is clean.
//!
//! Must not: know about clients or routing. The session drives the socket directly
//! while it holds the connection (`stream`, `buf`); this file only logs in, resets,
//! and runs the pool's own statements.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncWrite};

use crate::auth::{self, AuthError};

use super::login::{self, LoginSteps, OwnQueryReply};
use crate::prepared::ServerStatements;
use crate::protocol::startup;
use crate::protocol::{frame, write, ProtocolError, DEFAULT_MAX_MESSAGE_LEN};
use crate::rt::{self, AsyncReadExt, AsyncWriteExt, TcpStream};
use crate::session::params::Params;

/// What a server connection logs in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLogin {
    pub user: String,
    pub password: Option<String>,
    pub database: String,
}

/// PBKDF2 results per (password, salt, iterations), kept per core so a pool that
/// opens many connections derives the SCRAM key once.
/// (password, salt, iterations).
type SaltKey = (String, Vec<u8>, u32);

#[derive(Default)]
pub struct ScramCache {
    salted: RefCell<HashMap<SaltKey, [u8; 32]>>,
}

impl ScramCache {
    /// Bounded: a cache this large means salts keep changing; start over.
    const LIMIT: usize = 1024;

    fn salted_password(&self, password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
        let key = (password.to_owned(), salt.to_vec(), iterations);
        if let Some(salted) = self.salted.borrow().get(&key) {
            return *salted;
        }
        let salted = auth::salted_password(password, salt, iterations);
        let mut cache = self.salted.borrow_mut();
        if cache.len() >= Self::LIMIT {
            cache.clear();
        }
        cache.insert(key, salted);
        salted
    }
}

/// Why a server connection could not be opened or used.
#[derive(Debug)]
pub enum ServerError {
    Io(std::io::Error),
    ConnectTimeout,
    /// Control could not resolve the server's host name (see `control::resolve`).
    Unresolved {
        host: String,
        reason: String,
    },
    /// Postgres answered with an ErrorResponse during login or a pool statement.
    Rejected {
        sqlstate: String,
        message: String,
    },
    Protocol(ProtocolError),
    Auth(AuthError),
    /// Postgres asked for an authentication method sleddog does not speak.
    UnsupportedAuth(&'static str),
    /// Postgres asked for a password and none is configured.
    NoPassword,
    /// The connection closed.
    Closed,
}

impl ServerError {
    /// The server is unreachable or gone (refused, timed out, closed,
    /// unresolvable): true of it for every user. False for what Postgres
    /// answered about this login (a wrong password, too many connections
    /// for the role) and for protocol errors.
    pub fn is_about_server(&self) -> bool {
        matches!(
            self,
            ServerError::Io(_)
                | ServerError::ConnectTimeout
                | ServerError::Unresolved { .. }
                | ServerError::Closed
        )
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Io(error) => write!(f, "{error}"),
            ServerError::ConnectTimeout => write!(f, "connect timeout"),
            // Client-visible: the host name stays in the log (see connect_any).
            ServerError::Unresolved { .. } => {
                write!(f, "could not resolve the server's host name")
            }
            ServerError::Rejected { sqlstate, message } => write!(f, "{message} ({sqlstate})"),
            ServerError::Protocol(error) => write!(f, "protocol error: {error}"),
            ServerError::Auth(error) => write!(f, "authentication: {error}"),
            ServerError::UnsupportedAuth(method) => {
                write!(f, "server asked for unsupported authentication {method}")
            }
            ServerError::NoPassword => write!(f, "server asked for a password; none configured"),
            ServerError::Closed => write!(f, "server closed the connection"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<std::io::Error> for ServerError {
    fn from(error: std::io::Error) -> Self {
        ServerError::Io(error)
    }
}

impl From<ProtocolError> for ServerError {
    fn from(error: ProtocolError) -> Self {
        ServerError::Protocol(error)
    }
}

impl From<AuthError> for ServerError {
    fn from(error: AuthError) -> Self {
        ServerError::Auth(error)
    }
}

/// The server's half of a cancel key, to cancel what runs on this connection.
#[derive(Debug, Clone)]
pub struct CancelKey {
    pub addr: SocketAddr,
    pub process_id: u32,
    pub secret_key: Bytes,
}

/// Read buffer growth step, and the read window while a message accumulates.
pub const READ_CHUNK: usize = 16 * 1024;
/// The read window when the buffer is empty.
const SMALL_READ: usize = 4 * 1024;

pub struct ServerConn {
    pub stream: TcpStream,
    /// Bytes read from the server and not yet consumed.
    pub buf: BytesMut,
    pub cancel_key: CancelKey,
    /// ParameterStatus values reported at login and since.
    pub params: Vec<(String, String)>,
    pub created: Instant,
    pub last_used: Instant,
    /// The core's statements this connection has prepared.
    pub prepared: ServerStatements,
    /// Settings set in this connection's session (not its startup values), as
    /// last captured or synced by a session. Empty when fresh or reset.
    pub session: Params,
}

impl ServerConn {
    /// Connects and logs in within `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        login: &ServerLogin,
        timeout: Duration,
        scram: &ScramCache,
    ) -> Result<ServerConn, ServerError> {
        match rt::timeout(timeout, Self::connect_inner(addr, login, timeout, scram)).await {
            Some(result) => result,
            None => Err(ServerError::ConnectTimeout),
        }
    }

    async fn connect_inner(
        addr: SocketAddr,
        login: &ServerLogin,
        timeout: Duration,
        scram: &ScramCache,
    ) -> Result<ServerConn, ServerError> {
        let stream = rt::connect(addr, timeout).await.map_err(|error| {
            if error.kind() == std::io::ErrorKind::TimedOut {
                ServerError::ConnectTimeout
            } else {
                ServerError::Io(error)
            }
        })?;
        let now = Instant::now();
        let mut conn = ServerConn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            cancel_key: CancelKey {
                addr,
                process_id: 0,
                secret_key: Bytes::new(),
            },
            params: Vec::new(),
            created: now,
            last_used: now,
            prepared: ServerStatements::new(usize::MAX),
            session: Params::default(),
        };
        let mut out = BytesMut::with_capacity(256);
        let mut steps = LoginSteps::start(login, "sleddog", &mut out);
        let done = loop {
            if !out.is_empty() {
                conn.send(&mut out).await?;
            }
            let message = conn.read_message().await?;
            let salted = |password: &str, salt: &[u8], iterations: u32| {
                scram.salted_password(password, salt, iterations)
            };
            if let Some(done) = steps.on_message(&message, salted, &mut out)? {
                break done;
            }
        };
        conn.params = done.params;
        conn.cancel_key.process_id = done.process_id;
        conn.cancel_key.secret_key = done.secret_key;
        Ok(conn)
    }

    /// Reads one whole message from the server.
    pub async fn read_message(&mut self) -> Result<Bytes, ServerError> {
        loop {
            if let Some(message) = frame::split(&mut self.buf, DEFAULT_MAX_MESSAGE_LEN)? {
                return Ok(message);
            }
            if read_more(&mut self.stream, &mut self.buf).await? == 0 {
                return Err(ServerError::Closed);
            }
        }
    }

    async fn send(&mut self, out: &mut BytesMut) -> Result<(), ServerError> {
        self.stream.write_all(out).await?;
        out.clear();
        Ok(())
    }

    pub fn set_param(&mut self, name: &str, value: &str) {
        login::set_param(&mut self.params, name, value);
    }

    /// Runs one statement of the pool's own (reset, rollback) and reads through
    /// ReadyForQuery, which must say Idle.
    pub async fn execute(&mut self, sql: &str) -> Result<(), ServerError> {
        self.query_rows(sql).await.map(drop)
    }

    /// Runs one query of the pool's own and returns the bodies of the rows it
    /// sent; like `execute`, the server must end Idle.
    pub async fn query_rows(&mut self, sql: &str) -> Result<Vec<Bytes>, ServerError> {
        self.run_own(sql, OwnQueryReply::default()).await
    }

    async fn run_own(
        &mut self,
        sql: &str,
        mut reply: OwnQueryReply,
    ) -> Result<Vec<Bytes>, ServerError> {
        let mut out = BytesMut::new();
        write::query(&mut out, sql);
        self.send(&mut out).await?;
        loop {
            let message = self.read_message().await?;
            if let Some(rows) = reply.on_message(&message, &mut self.params)? {
                return Ok(rows);
            }
        }
    }

    /// Sends a client's `BEGIN` that the relay answered before it held a
    /// server, ahead of the client's next request, as Parse, Bind and
    /// Execute with no Sync ("protocol-flow", Extended Query): the request
    /// runs in the transaction it opens, with no round trip of its own. If
    /// it fails, Postgres skips every message up to the next Sync, a simple
    /// Query included, so nothing of the request runs outside the
    /// transaction the client believes open. Its replies (ParseComplete,
    /// BindComplete, CommandComplete) are the caller's to read.
    pub async fn send_begin(&mut self, sql: &str) -> Result<(), ServerError> {
        let mut out = BytesMut::with_capacity(sql.len() + 32);
        write::parse_unnamed(&mut out, sql);
        write::bind_unnamed(&mut out);
        write::execute_unnamed(&mut out);
        self.send(&mut out).await
    }

    /// Runs a client's held `BEGIN` in a round trip of its own (as a simple
    /// Query), for a request that cannot carry it (`send_begin`); reads
    /// through ReadyForQuery, which must say InTransaction.
    pub async fn begin(&mut self, sql: &str) -> Result<(), ServerError> {
        let reply = OwnQueryReply::opening_transaction();
        self.run_own(sql, reply).await.map(drop)
    }

    /// No bytes waiting and the peer has not closed: safe to hand out.
    pub fn looks_clean(&self) -> bool {
        self.buf.is_empty() && !rt::has_pending_input_or_eof(&self.stream)
    }
}

/// Reads whatever is available into the spare capacity of `buf`; returns the
/// number of bytes read (0: the peer closed).
///
/// Cancel-safe: the relay races two reads and drops the loser, so the buffer's
/// length is restored on every path, including a drop mid-await.
pub async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let start = buf.len();
    // The read needs initialised memory, so the window is zeroed first. Keep
    // it small when the buffer is empty (the common case: a short request or
    // reply), larger while a big message accumulates; never the whole capacity,
    // which may be megabytes after a large message.
    prepare_window(buf);
    let mut guard = TruncateOnDrop { buf, len: start };
    let n = stream.read(&mut guard.buf[start..]).await?;
    guard.len = start + n;
    Ok(n)
}

/// What `write_or_read` got done first.
pub enum WriteOrRead {
    /// Bytes of `out` written (0: the peer closed).
    Wrote(std::io::Result<usize>),
    /// Bytes read into the buffer (0: the peer closed).
    Read(std::io::Result<usize>),
}

/// Writes some of `out`, unless bytes arrive to read first. A sender that keeps
/// reading while its write is blocked cannot deadlock with a peer that stops
/// reading until its own replies are taken: a client pipelining more than both
/// socket buffers hold fills them in both directions at once.
///
/// Cancel-safe in the same way as `read_more`.
pub async fn write_or_read(stream: &mut TcpStream, out: &[u8], buf: &mut BytesMut) -> WriteOrRead {
    let start = buf.len();
    // Most writes complete at once: the read window is only prepared (and
    // zeroed) once the write has to wait.
    let mut unprepared = Some(buf);
    let mut window: Option<TruncateOnDrop<'_>> = None;
    let outcome = futures_lite::future::poll_fn(|cx| {
        if let Poll::Ready(written) = Pin::new(&mut *stream).poll_write(cx, out) {
            return Poll::Ready(WriteOrRead::Wrote(written));
        }
        let guard = window.get_or_insert_with(|| {
            let buf = unprepared.take().expect("prepared once");
            prepare_window(buf);
            TruncateOnDrop { buf, len: start }
        });
        Pin::new(&mut *stream)
            .poll_read(cx, &mut guard.buf[start..])
            .map(WriteOrRead::Read)
    })
    .await;
    if let (WriteOrRead::Read(Ok(n)), Some(guard)) = (&outcome, window.as_mut()) {
        guard.len = start + n;
    }
    outcome
}

/// Grows `buf` by a zeroed read window after its content.
fn prepare_window(buf: &mut BytesMut) {
    let start = buf.len();
    if buf.capacity() - start < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    let window = if start == 0 { SMALL_READ } else { READ_CHUNK };
    let end = buf.capacity().min(start + window);
    buf.resize(end, 0);
}

/// Restores a buffer's length to `len` when dropped.
struct TruncateOnDrop<'a> {
    buf: &'a mut BytesMut,
    len: usize,
}

impl Drop for TruncateOnDrop<'_> {
    fn drop(&mut self) {
        self.buf.truncate(self.len);
    }
}

/// Sends a CancelRequest for `key`'s backend from a task of its own,
/// without waiting for it (errors are the backend's to notice).
pub fn cancel_in_background(key: &CancelKey, timeout: Duration) {
    let key = key.clone();
    rt::spawn(async move {
        let _ = send_cancel(&key, timeout).await;
    })
    .detach();
}

/// Sends a CancelRequest for whatever `key`'s backend is running now.
pub async fn send_cancel(key: &CancelKey, timeout: Duration) -> Result<(), ServerError> {
    let mut stream = rt::connect(key.addr, timeout).await?;
    let mut out = BytesMut::with_capacity(16);
    startup::encode_cancel(key.process_id, &key.secret_key, &mut out);
    stream.write_all(&out).await?;
    // Postgres closes the connection without a reply; wait for that so the
    // cancel is delivered before we report anything.
    let mut byte = [0u8; 1];
    let _ = rt::timeout(timeout, stream.read(&mut byte)).await;
    Ok(())
}

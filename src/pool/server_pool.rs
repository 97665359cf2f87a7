//! A per-core pool of connections to one Postgres server for one (database, user).
//!
//! The permit semaphore bounds how many connections this core may hold open to
//! the server at once (its share of `pool_size`); waiting for a permit is the
//! checkout queue, FIFO-fair. A checked-out connection travels as a
//! [`PooledConn`]; dropping it instead of checking it in closes the connection,
//! so a session that dies in any state can never return a dirty connection.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::control::resolve::Resolved;
use crate::pool::permits::{Permit, Permits};
use crate::pool::server_conn::{ScramCache, ServerConn, ServerError, ServerLogin};
use crate::rt;

/// Idle time after which checkout probes a connection before handing it out.
const PROBE_AFTER_IDLE: Duration = Duration::from_millis(100);

/// ParameterStatus name/value pairs a server reported at login.
pub type ServerParams = Rc<Vec<(String, String)>>;

/// Timeouts a checkout obeys.
#[derive(Debug, Clone, Copy)]
pub struct CheckoutLimits {
    pub checkout: Duration,
    pub connect: Duration,
}

/// Lifetimes the pool enforces on idle connections.
#[derive(Debug, Clone, Copy)]
pub struct IdleLimits {
    pub idle: Duration,
    pub lifetime: Duration,
    /// A connection idle longer than this is checked (an empty query, bounded
    /// by `healthcheck_timeout`) before it is handed out.
    pub healthcheck_interval: Duration,
    pub healthcheck_timeout: Duration,
    /// How often the connection idle longest is checked while the pool
    /// sits idle, and how long after the pool starts the first check runs.
    pub idle_healthcheck_interval: Duration,
    pub idle_healthcheck_delay: Duration,
}

#[derive(Debug)]
pub enum CheckoutError {
    /// No connection became free within `checkout_timeout`.
    Timeout,
    /// A new connection could not be opened.
    Connect(ServerError),
    /// The pool was retired by a reload while waiting.
    Retired,
}

impl CheckoutError {
    /// The server is unreachable or gone (`ServerError::is_about_server`).
    pub fn is_about_server(&self) -> bool {
        matches!(self, CheckoutError::Connect(error) if error.is_about_server())
    }
}

impl fmt::Display for CheckoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckoutError::Timeout => write!(f, "timed out waiting for a server connection"),
            CheckoutError::Connect(error) => write!(f, "could not connect to the server: {error}"),
            CheckoutError::Retired => write!(f, "the pool was reconfigured"),
        }
    }
}

pub struct ServerPool {
    /// host:port as configured, for logs and for matching a reloaded config.
    host: String,
    port: u16,
    /// What control resolved `host` to (cores never call getaddrinfo). A DNS
    /// change arrives as a new snapshot, which replaces this pool.
    addrs: Resolved,
    login: ServerLogin,
    size: usize,
    min_size: usize,
    idle: RefCell<Vec<ServerConn>>,
    permits: Rc<Permits>,
    /// Connections open: idle + checked out + being opened.
    open: Cell<usize>,
    retired: Cell<bool>,
    /// Server parameters from the first login, sent to clients at their login.
    params: RefCell<Option<ServerParams>>,
    scram: Rc<ScramCache>,
    limits: Cell<IdleLimits>,
    /// When the next idle health check is due.
    next_idle_check: Cell<Instant>,
}

impl ServerPool {
    #[allow(clippy::too_many_arguments)] // one constructor, called from Pools::apply
    pub fn new(
        host: String,
        port: u16,
        addrs: Resolved,
        login: ServerLogin,
        size: usize,
        min_size: usize,
        limits: IdleLimits,
        scram: Rc<ScramCache>,
    ) -> Rc<ServerPool> {
        let size = size.max(1);
        Rc::new(ServerPool {
            host,
            port,
            addrs,
            login,
            size,
            min_size: min_size.min(size),
            idle: RefCell::new(Vec::new()),
            permits: Permits::new(size),
            open: Cell::new(0),
            retired: Cell::new(false),
            params: RefCell::new(None),
            scram,
            limits: Cell::new(limits),
            next_idle_check: Cell::new(Instant::now() + limits.idle_healthcheck_delay),
        })
    }

    /// True when this pool serves the same server, at the same addresses,
    /// with the same login and size.
    pub fn same_as(
        &self,
        host: &str,
        port: u16,
        addrs: &Resolved,
        login: &ServerLogin,
        size: usize,
    ) -> bool {
        self.host == host
            && self.port == port
            && self.addrs.same_as(addrs)
            && &self.login == login
            && self.size == size
    }

    pub fn set_limits(&self, limits: IdleLimits) {
        self.limits.set(limits);
    }

    /// Takes a clean idle connection or opens one, waiting for a permit at most
    /// `limits.checkout`.
    pub async fn checkout(
        self: &Rc<Self>,
        limits: CheckoutLimits,
    ) -> Result<PooledConn, CheckoutError> {
        if self.retired.get() {
            return Err(CheckoutError::Retired);
        }
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => rt::timeout(limits.checkout, self.permits.acquire())
                .await
                .ok_or(CheckoutError::Timeout)?
                .map_err(|_| CheckoutError::Retired)?,
        };
        loop {
            let next = self.idle.borrow_mut().pop();
            let Some(mut conn) = next else {
                break;
            };
            let now = Instant::now();
            if !self.usable(&conn, now) {
                tracing::debug!(host = %self.host, "closing an idle connection that is not clean");
                self.closed_one();
                continue;
            }
            let idle_limits = self.limits.get();
            if now.duration_since(conn.last_used) >= idle_limits.healthcheck_interval {
                // healthcheck_interval: a connection unused that long proves
                // itself with an empty query first; one that fails is closed.
                if !health_check(&mut conn, idle_limits.healthcheck_timeout).await {
                    tracing::warn!(host = %self.host, port = self.port, "health check failed; closing the connection");
                    self.closed_one();
                    continue;
                }
                conn.last_used = Instant::now();
            }
            return Ok(self.wrap(conn, permit));
        }
        let conn = self.open_one(limits.connect).await?;
        Ok(self.wrap(conn, permit))
    }

    fn wrap(self: &Rc<Self>, conn: ServerConn, permit: Permit) -> PooledConn {
        PooledConn {
            conn: Some(conn),
            _permit: permit,
            pool: self.clone(),
        }
    }

    async fn open_one(&self, timeout: Duration) -> Result<ServerConn, CheckoutError> {
        self.open.set(self.open.get() + 1);
        // Counts the connection as open while it is being opened; if this future
        // is dropped mid-connect (a cancel, a login timeout) the count goes back.
        let opening = OpenGuard { pool: self };
        let result = self.connect_any(timeout).await;
        std::mem::forget(opening);
        match result {
            Ok(conn) => {
                if self.params.borrow().is_none() {
                    *self.params.borrow_mut() = Some(Rc::new(conn.params.clone()));
                }
                Ok(conn)
            }
            Err(error) => {
                self.closed_one();
                tracing::warn!(host = %self.host, port = self.port, %error, "server connect failed");
                Err(CheckoutError::Connect(error))
            }
        }
    }

    /// Connects to the first address that accepts; the next is tried only
    /// when one refuses or is unreachable (nothing was sent to it).
    async fn connect_any(&self, timeout: Duration) -> Result<ServerConn, ServerError> {
        let addrs = match &self.addrs {
            Resolved::Addrs(addrs) => addrs,
            Resolved::Failed(reason) => {
                tracing::warn!(host = %self.host, %reason, "could not resolve host");
                return Err(ServerError::Unresolved {
                    host: self.host.clone(),
                    reason: reason.clone(),
                });
            }
        };
        let mut last = None;
        for &addr in addrs {
            match ServerConn::connect(addr, &self.login, timeout, &self.scram).await {
                Err(ServerError::Io(error)) if refused(&error) => last = Some(error),
                result => return result,
            }
        }
        Err(last.map_or(ServerError::Closed, ServerError::Io))
    }

    /// Opens a connection to this pool's server with its login that is not
    /// the pool's: no permit, not counted as open, never checked in. For a
    /// connection with a life of its own (pub/sub's listener connection).
    pub async fn connect_unpooled(&self, timeout: Duration) -> Result<ServerConn, ServerError> {
        self.connect_any(timeout).await
    }

    fn usable(&self, conn: &ServerConn, now: Instant) -> bool {
        let limits = self.limits.get();
        if now.duration_since(conn.created) >= limits.lifetime {
            return false;
        }
        // A connection idle for a while may have been closed by the server
        // (pg_terminate_backend, restart): probe it, one syscall. One checked in
        // moments ago is trusted; if it died since, the client gets an error and
        // its next request a fresh connection.
        now.duration_since(conn.last_used) < PROBE_AFTER_IDLE || conn.looks_clean()
    }

    fn closed_one(&self) {
        self.open.set(self.open.get().saturating_sub(1));
    }

    /// Returns a connection the caller has proven clean (ReadyForQuery Idle,
    /// nothing outstanding). Past its lifetime or in a retired pool, it is closed.
    pub fn checkin(&self, mut pooled: PooledConn) {
        let Some(mut conn) = pooled.conn.take() else {
            return;
        };
        let now = Instant::now();
        let expired = now.duration_since(conn.created) >= self.limits.get().lifetime;
        if self.retired.get() || expired || !conn.buf.is_empty() {
            // Unread bytes mean the caller could not prove it clean: close it.
            self.closed_one();
            return;
        }
        conn.last_used = now;
        self.idle.borrow_mut().push(conn);
        // `pooled` drops here and releases its permit after the conn is idle, so
        // the next waiter finds it.
    }

    /// Server parameters for a client's login; opens a connection to learn them
    /// the first time.
    pub async fn params(
        self: &Rc<Self>,
        limits: CheckoutLimits,
    ) -> Result<ServerParams, CheckoutError> {
        if let Some(params) = self.params.borrow().as_ref() {
            return Ok(params.clone());
        }
        let conn = self.checkout(limits).await?;
        let params = Rc::new(conn.params.clone());
        self.checkin(conn);
        Ok(params)
    }

    /// Closes idle connections past `idle_timeout` (keeping `min_pool_size`) or
    /// past `server_lifetime`, then, when `warm`, opens connections up to
    /// `min_pool_size`. False when such a connection could not be opened
    /// because the server is unreachable or gone.
    pub async fn maintain(
        self: &Rc<Self>,
        now: Instant,
        connect_timeout: Duration,
        warm: bool,
    ) -> bool {
        let limits = self.limits.get();
        {
            let mut idle = self.idle.borrow_mut();
            let before = idle.len();
            let mut keep = self.min_size;
            // Oldest idle first in the Vec (checkin pushes to the back).
            idle.retain(|conn| {
                let expired = now.duration_since(conn.created) >= limits.lifetime;
                let idle_too_long = now.duration_since(conn.last_used) >= limits.idle;
                let keep_this = !expired && (!idle_too_long || keep > 0);
                if keep_this && idle_too_long {
                    keep -= 1;
                }
                keep_this
            });
            let closed = before - idle.len();
            self.open.set(self.open.get().saturating_sub(closed));
        }
        if self.retired.get() || !warm {
            return true;
        }
        while self.open.get() < self.min_size {
            let Ok(permit) = self.permits.try_acquire() else {
                return true;
            };
            match self.open_one(connect_timeout).await {
                Ok(conn) => self.checkin(self.wrap(conn, permit)),
                Err(error) => return !error.is_about_server(),
            }
        }
        true
    }

    /// Idle health check (`idle_healthcheck_interval`): when one is due and
    /// a connection sits idle, the one idle longest runs an empty query,
    /// bounded by `healthcheck_timeout`. False when it failed and a new
    /// connection could not be opened either, the server unreachable or
    /// gone: the caller bans the server. A pool with
    /// every connection busy is not checked; its traffic shows its health.
    pub async fn idle_check(&self, now: Instant) -> bool {
        let limits = self.limits.get();
        if now < self.next_idle_check.get() || self.retired.get() {
            return true;
        }
        self.next_idle_check
            .set(now + limits.idle_healthcheck_interval);
        let Ok(permit) = self.permits.try_acquire() else {
            return true;
        };
        let oldest = {
            let mut idle = self.idle.borrow_mut();
            (!idle.is_empty()).then(|| idle.remove(0))
        };
        let Some(mut conn) = oldest else {
            return true;
        };
        if !health_check(&mut conn, limits.healthcheck_timeout).await {
            // That one connection may have been ended alone (a terminated
            // backend, the server's idle_session_timeout): the server is
            // judged by a fresh one.
            tracing::warn!(host = %self.host, port = self.port, "idle health check failed; closing the connection and trying a new one");
            self.closed_one();
            match self.open_one(limits.healthcheck_timeout).await {
                Ok(fresh) => conn = fresh,
                Err(error) => return !error.is_about_server(),
            }
        }
        if self.retired.get() {
            self.closed_one();
        } else {
            // Back in its place: the check does not reset its idle_timeout.
            self.idle.borrow_mut().insert(0, conn);
        }
        drop(permit);
        true
    }

    /// Stops handing out connections: idle ones close now, busy ones at checkin,
    /// and sessions waiting for one are told (they retry on the new pool).
    pub fn retire(&self) {
        self.retired.set(true);
        self.permits.close();
        let closed = self.idle.borrow_mut().drain(..).count();
        self.open.set(self.open.get().saturating_sub(closed));
    }

    pub fn open_count(&self) -> usize {
        self.open.get()
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }
}

/// The health check (checkout and idle): an empty query answered within
/// `healthcheck_timeout`.
async fn health_check(conn: &mut ServerConn, timeout: Duration) -> bool {
    matches!(rt::timeout(timeout, conn.execute(";")).await, Some(Ok(())))
}

/// A connect error that means "try the next address".
fn refused(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable
    ) || matches!(
        error.raw_os_error(),
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
    )
}

/// Undoes the open count of a connection attempt that was abandoned.
struct OpenGuard<'a> {
    pool: &'a ServerPool,
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.pool.closed_one();
    }
}

/// A checked-out server connection. Check it in with [`ServerPool::checkin`]
/// when clean; dropping it closes the connection.
pub struct PooledConn {
    conn: Option<ServerConn>,
    _permit: Permit,
    pool: Rc<ServerPool>,
}

impl PooledConn {
    pub fn pool(&self) -> &Rc<ServerPool> {
        &self.pool
    }
}

impl Deref for PooledConn {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.conn
            .as_ref()
            .expect("a PooledConn holds its conn until checkin")
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn
            .as_mut()
            .expect("a PooledConn holds its conn until checkin")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            tracing::debug!("closing a server connection that was not checked in");
            self.pool.closed_one();
        }
    }
}

//! One core: a pinned executor with its own listener, sessions, pools and inbox,
//! and its share of `max_client_connections` (`Core::admit_client`).
//!
//! Everything here is owned by the core's thread (`Rc`, `Cell`, `RefCell`); a
//! `RefCell` borrow never spans an `.await`. The only cross-thread traffic is the
//! inbox (control → core) and outbox (core → control), both crossbeam channels
//! the core polls without blocking.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::control::health::Health;
use crate::control::msg::{FromCore, ToCore};
use crate::control::snapshot::Snapshot;
use crate::ids::{ClientPid, CoreId, Epoch, ServerId};
use crate::pool::balance::BanReason;
use crate::pool::{self, Pools};
use crate::prepared::StatementCache;
use crate::pubsub::PubSub;
use crate::router::QueryCache;
use crate::rt;
use crate::session::{self, PlainAuthCache, SessionHandle};

/// What the control thread hands a core at start.
pub struct CoreContext {
    pub id: CoreId,
    pub snapshot: Arc<Snapshot>,
    pub inbox: Receiver<ToCore>,
    /// The core's end of the doorbell control rings after queueing a message.
    pub doorbell: std::os::fd::OwnedFd,
    pub outbox: Sender<FromCore>,
    pub addr: SocketAddr,
}

/// How often a shutting-down core checks whether its sessions are gone.
const SHUTDOWN_POLL: Duration = Duration::from_millis(5);

pub struct Core {
    pub id: CoreId,
    snapshot: RefCell<Arc<Snapshot>>,
    pub pools: RefCell<Pools>,
    /// Prepared statements shared by the core's clients (transaction mode).
    pub statements: RefCell<StatementCache>,
    sessions: RefCell<HashMap<u32, Rc<SessionHandle>>>,
    next_counter: Cell<u32>,
    outbox: Sender<FromCore>,
    shutting_down: Cell<bool>,
    /// Client connections admitted and not yet closed, logged in or not.
    clients: Rc<Cell<usize>>,
    /// The last client was refused for the limit (so the warning is logged
    /// once per episode, not once per refused client).
    refusing: Cell<bool>,
    /// Cleartext logins checked against a SCRAM verifier, so PBKDF2 runs
    /// once per (user, password) rather than at every login.
    pub plain_auth: PlainAuthCache,
    /// LISTEN on behalf of this core's sessions (transaction mode).
    pub pubsub: PubSub,
    /// Read/write classifications of the SQL this core's clients send.
    pub router: RefCell<QueryCache>,
    /// The control thread's latest health snapshot.
    health: RefCell<Arc<Health>>,
}

/// One admitted client connection; dropping it frees the place.
pub struct ClientSlot {
    clients: Rc<Cell<usize>>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.clients.set(self.clients.get().saturating_sub(1));
    }
}

impl Core {
    /// The configuration new sessions use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// The epoch of the snapshot the pools were last built from. A session
    /// compares it at each transaction boundary to pick up a reload.
    pub fn epoch(&self) -> Epoch {
        self.snapshot.borrow().epoch
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Admits one more client connection if this core's share of
    /// `max_client_connections` (`Snapshot::client_connections_per_core`)
    /// has room. The slot lives as long as the connection.
    pub fn admit_client(&self) -> Option<ClientSlot> {
        let limit = self.snapshot.borrow().client_connections_per_core();
        let admitted = self.clients.get();
        if admitted >= limit {
            if !self.refusing.replace(true) {
                tracing::warn!(
                    core = %self.id,
                    limit,
                    "max_client_connections reached; refusing new clients (53300)"
                );
            }
            return None;
        }
        self.refusing.set(false);
        self.clients.set(admitted + 1);
        Some(ClientSlot {
            clients: self.clients.clone(),
        })
    }

    /// Client connections this core serves now.
    pub fn client_count(&self) -> usize {
        self.clients.get()
    }

    /// Registers a session for cancel and shutdown; returns its handle.
    pub fn register(&self, secret: Vec<u8>) -> Rc<SessionHandle> {
        // Skip ids still in use after the 24-bit counter wraps.
        let mut pid;
        loop {
            let counter = self.next_counter.get().wrapping_add(1);
            self.next_counter.set(counter);
            pid = ClientPid::new(self.id, counter);
            if !self.sessions.borrow().contains_key(&pid.0) {
                break;
            }
        }
        let handle = Rc::new(SessionHandle::new(pid, secret));
        if self.shutting_down.get() {
            handle.shutdown.fire();
        }
        self.sessions.borrow_mut().insert(pid.0, handle.clone());
        handle
    }

    pub fn unregister(&self, pid: ClientPid) {
        self.sessions.borrow_mut().remove(&pid.0);
    }

    /// A CancelRequest arrived on this core: act on it here or pass it to the
    /// core that owns the session.
    pub fn route_cancel(&self, pid: ClientPid, secret: Vec<u8>) {
        if pid.core() == self.id {
            self.cancel_local(pid, &secret);
        } else {
            let _ = self.outbox.send(FromCore::Cancel { pid, secret });
        }
    }

    /// A server this core could not use (and banned): control takes it out
    /// of rotation on the other cores too.
    pub fn report_failure(&self, server: ServerId, reason: BanReason) {
        let _ = self.outbox.send(FromCore::ServerFailed { server, reason });
    }

    fn cancel_local(&self, pid: ClientPid, secret: &[u8]) {
        let handle = self.sessions.borrow().get(&pid.0).cloned();
        if let Some(handle) = handle {
            handle.cancel(secret, self.snapshot().timeouts.connect);
        }
    }

    fn apply(&self, snapshot: Arc<Snapshot>) {
        self.pools.borrow_mut().apply(&snapshot);
        self.router
            .borrow_mut()
            .set_limit(snapshot.query_cache_limit);
        self.pools.borrow().apply_health(&self.health.borrow());
        self.pubsub.apply(
            snapshot.pub_sub_channel_size,
            snapshot.timeouts.connect,
            &self.pools.borrow(),
        );
        self.statements
            .borrow_mut()
            .set_limit(statements_limit(&snapshot));
        *self.snapshot.borrow_mut() = snapshot;
    }

    fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        for handle in self.sessions.borrow().values() {
            handle.shutdown.fire();
        }
    }

    fn session_count(&self) -> usize {
        self.sessions.borrow().len()
    }
}

/// Runs one core until shutdown.
pub async fn run(context: CoreContext) {
    let CoreContext {
        id,
        snapshot,
        inbox,
        doorbell,
        outbox,
        addr,
    } = context;
    let mut doorbell = rt::doorbell(doorbell);
    let mut pools = Pools::default();
    pools.apply(&snapshot);
    let statements = StatementCache::new(statements_limit(&snapshot));
    let pubsub = PubSub::new(snapshot.pub_sub_channel_size, snapshot.timeouts.connect);
    let query_cache_limit = snapshot.query_cache_limit;
    let core = Rc::new(Core {
        id,
        snapshot: RefCell::new(snapshot),
        pools: RefCell::new(pools),
        statements: RefCell::new(statements),
        sessions: RefCell::new(HashMap::new()),
        next_counter: Cell::new(0),
        outbox,
        shutting_down: Cell::new(false),
        clients: Rc::new(Cell::new(0)),
        refusing: Cell::new(false),
        plain_auth: PlainAuthCache::default(),
        pubsub,
        health: RefCell::new(Arc::new(Health::default())),
        router: RefCell::new(QueryCache::new(query_cache_limit)),
    });
    let listener = match rt::listen(addr) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%addr, %error, "cannot listen");
            std::process::exit(crate::control::run::EXIT_STARTUP);
        }
    };
    let accept = rt::spawn(accept_loop(core.clone(), listener));
    let tick = rt::Signal::new();
    let maintenance = rt::spawn(maintenance_loop(core.clone(), tick.clone()));
    let deadline = drain_inbox(&core, &inbox, &mut doorbell, &tick).await;
    drop(accept);
    drop(maintenance);
    while core.session_count() > 0 && Instant::now() < deadline {
        // Cancels still matter while transactions finish.
        for message in inbox.try_iter() {
            if let ToCore::Cancel { pid, secret } = message {
                core.cancel_local(pid, &secret);
            }
        }
        rt::sleep(SHUTDOWN_POLL).await;
    }
    let _ = core.outbox.send(FromCore::Stopped(core.id));
}

/// Applies control messages, each time the doorbell rings, until a shutdown
/// arrives; returns its deadline. No timer: the core sleeps until rung.
async fn drain_inbox(
    core: &Rc<Core>,
    inbox: &Receiver<ToCore>,
    doorbell: &mut rt::Doorbell,
    tick: &rt::Signal,
) -> Instant {
    loop {
        for message in inbox.try_iter() {
            match message {
                ToCore::Config(snapshot) => core.apply(snapshot),
                ToCore::Health(health) => {
                    core.pools.borrow().apply_health(&health);
                    *core.health.borrow_mut() = health;
                }
                ToCore::Cancel { pid, secret } => core.cancel_local(pid, &secret),
                ToCore::Tick => tick.fire(),
                ToCore::Shutdown { deadline } => {
                    core.begin_shutdown();
                    return deadline;
                }
            }
        }
        if !rt::wait_doorbell(doorbell).await {
            // Control is gone: the process is exiting.
            return Instant::now();
        }
    }
}

async fn accept_loop(core: Rc<Core>, listener: rt::TcpListener) {
    loop {
        match rt::accept(&listener).await {
            Ok(stream) => {
                rt::spawn(session::run(core.clone(), stream)).detach();
            }
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                rt::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn maintenance_loop(core: Rc<Core>, tick: Rc<rt::Signal>) {
    loop {
        tick.wait().await;
        tick.reset();
        let clusters = core.pools.borrow().clusters();
        let snapshot = core.snapshot();
        let failed = pool::Pools::maintain(clusters, Instant::now(), &snapshot).await;
        for (server, reason) in failed {
            core.report_failure(server, reason);
        }
    }
}

/// `prepared_statements_limit`: unlimited when unset.
pub fn statements_limit(snapshot: &Snapshot) -> usize {
    snapshot.prepared_statements_limit.unwrap_or(usize::MAX)
}

//! One client connection, from startup to Terminate: handshake and login
//! (`startup`, `login_auth`), then the query loop (`relay`).
//!
//! Must not: share anything with other sessions except through the core's pools.
//! Holds a server connection only between a complete client request and the
//! ReadyForQuery that ends it (transaction mode), or for its whole life
//! (session mode).

mod client;
mod fanout;
mod login_auth;
pub mod params;
mod relay;
mod route;
mod scan;
mod shard_route;
pub mod sql_scan;
mod startup;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

pub use client::Client;
pub use login_auth::PlainAuthCache;

use crate::core::Core;
use crate::ids::ClientPid;
use crate::pool::server_conn::{self, CancelKey};
use crate::rt::{self, Signal, TcpStream};

/// What the core keeps of a session: enough to cancel it and to stop it.
pub struct SessionHandle {
    pub pid: ClientPid,
    secret: Vec<u8>,
    /// The server connection the session holds now, if any.
    server: RefCell<Option<CancelKey>>,
    /// True while the session waits for a server connection.
    waiting: Cell<bool>,
    /// Fired by a cancel that arrives while the session waits for a connection.
    pub withdraw: Rc<Signal>,
    /// Fired when the core shuts down.
    pub shutdown: Rc<Signal>,
    /// A CancelRequest was sent to the server connection held now: it must
    /// not go back to the pool, where the cancel could hit another client.
    cancel_sent: Cell<bool>,
}

impl SessionHandle {
    pub fn new(pid: ClientPid, secret: Vec<u8>) -> SessionHandle {
        SessionHandle {
            pid,
            secret,
            server: RefCell::new(None),
            waiting: Cell::new(false),
            withdraw: Signal::new(),
            shutdown: Signal::new(),
            cancel_sent: Cell::new(false),
        }
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Cancels what the session runs now, if the secret matches: the query on
    /// its server connection, or its wait for one. Otherwise nothing, as Postgres.
    pub fn cancel(&self, secret: &[u8], timeout: Duration) {
        if !crate::auth::ct_eq(secret, &self.secret) {
            return;
        }
        if let Some(key) = self.server.borrow().clone() {
            self.cancel_sent.set(true);
            rt::spawn(async move {
                if let Err(error) = server_conn::send_cancel(&key, timeout).await {
                    tracing::warn!(%error, "cancel request to server failed");
                }
            })
            .detach();
        } else if self.waiting.get() {
            self.withdraw.fire();
        }
    }

    fn set_server(&self, key: Option<CancelKey>) {
        if key.is_some() {
            self.cancel_sent.set(false);
        }
        *self.server.borrow_mut() = key;
    }
}

/// Serves one client connection to the end.
pub async fn run(core: Rc<Core>, stream: TcpStream) {
    let mut client = Client::new(stream);
    // Held to the end of the session: it is this client's place under
    // `max_client_connections`.
    let Some(_slot) = core.admit_client() else {
        startup::refuse(&core, &mut client).await;
        return;
    };
    let Some(login) = startup::handshake(&core, &mut client).await else {
        return;
    };
    let handle = login.handle.clone();
    relay::Relay::new(
        &core,
        &handle,
        login.cluster,
        &mut client,
        login.settings,
        login.startup,
    )
    .run()
    .await;
    core.unregister(handle.pid);
}

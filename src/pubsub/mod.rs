//! LISTEN/NOTIFY under transaction pooling: one listener connection per
//! (database, user) per core LISTENs on behalf of every session of the core
//! that listens, and fans each notification out to them.
//!
//! A client in transaction mode has no server connection of its own between
//! transactions, so a LISTEN run on a pooled connection would be lost (the
//! pool resets it with DISCARD ALL). Instead the session keeps a
//! [`Subscriber`]; the core's [`PubSub`] keeps, per (database, user), a hub
//! (`hub.rs`, sans-IO: reference counts, fan-out, acknowledgements) and a task
//! driving a dedicated server connection (`listener.rs`): opened with the
//! login and address of the cluster's primary pool but outside its permits,
//! it runs `LISTEN "chan"` when the core's first session subscribes to a
//! channel and `UNLISTEN "chan"` when the last one leaves, and closes when no
//! channel is left. If it dies it reconnects (backoff up to
//! `RECONNECT_BACKOFF_MAX`) and LISTENs to every channel again; notifications
//! sent while it was away are lost, and the log says so.
//!
//! NOTIFY needs nothing here: it runs on the client's own server connection
//! and Postgres delivers it at COMMIT, to this core's listener like to any
//! other listening backend.
//!
//! Transaction semantics ("sql-listen": LISTEN takes effect at commit; a
//! rolled-back LISTEN or UNLISTEN changes nothing): the relay stages each
//! command with [`Subscriber::stage`] and calls [`Subscriber::commit`] or
//! [`Subscriber::rollback`] when the transaction ends; an autocommit LISTEN is
//! staged and committed at once ([`Subscriber::listen`]).
//!
//! `pub_sub_channel_size` (PgDog's meaning: the size of the queue of
//! notifications; 0, the default, means pub/sub is disabled) bounds each
//! subscriber's queue; when it is full the oldest notification is dropped and
//! a warning logged once for that subscriber. With 0, [`PubSub::subscriber`]
//! returns `None` and the relay keeps its old behaviour (LISTEN runs on the
//! pooled connection, which is reset afterwards).
//!
//! Known differences from a direct connection: a notification committed just
//! before a session's LISTEN took effect may still reach it (the listener was
//! already listening for another session); notifications carry the process id
//! of the backend that sent them, which is a pooled connection's, not the
//! client's own (sleddog gives clients their own BackendKeyData); the channel
//! and payload bytes are in the listener connection's client_encoding (the
//! database default).
//!
//! Must not: touch the relay's server connections, hold a `RefCell` borrow
//! across an `.await`, or take permits from the pools.

mod hub;
mod inbox;
mod listener;
mod parse;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;

pub(crate) use hub::{Batch, HubState, SubscriberId};
pub use parse::{parse_listen, parse_listens, quote_ident, ListenCommand};

use crate::pool::{Cluster, Pools, ServerPool};
use crate::rt::{self, Signal};
use hub::Ack;
use inbox::Inbox;

/// Why the server-side part of a commit did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubError {
    /// The listener connection could not be opened.
    Connect(String),
    /// The server refused the LISTEN/UNLISTEN statements.
    Refused(String),
}

impl fmt::Display for PubSubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PubSubError::Connect(reason) => {
                write!(f, "could not open the listener connection: {reason}")
            }
            PubSubError::Refused(reason) => write!(f, "the server refused LISTEN: {reason}"),
        }
    }
}

impl std::error::Error for PubSubError {}

/// Whether a hub starts its listener task itself. Unit tests drive the
/// sans-IO state by hand and have no executor to spawn on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    Spawn,
    Manual,
}

/// One (database, user) of a core: the hub's state plus what its listener
/// task needs.
pub(crate) struct Hub {
    database: String,
    user: String,
    pub(crate) state: RefCell<HubState>,
    /// Fired on every change of the wanted channels; only the listener task
    /// waits on it and resets it.
    pub(crate) wake: Signal,
    /// A listener task is running for this hub.
    running: Cell<bool>,
    /// The pool whose server and login the listener connection uses: the
    /// cluster's primary, as of the latest subscriber or reload.
    target: RefCell<Option<Rc<ServerPool>>>,
    connect_timeout: Cell<Duration>,
    launch: Launch,
}

impl Hub {
    /// Wakes the listener task, starting one if none runs and a channel is
    /// wanted.
    fn kick(self: &Rc<Self>) {
        self.wake.fire();
        if self.running.get() || self.launch == Launch::Manual {
            return;
        }
        if !self.state.borrow().wants_connection() {
            return;
        }
        self.running.set(true);
        rt::spawn(listener::run(self.clone())).detach();
    }

    fn label(&self) -> String {
        format!("{}/{}", self.database, self.user)
    }
}

/// The core's pub/sub registry: one hub per (database, user) that has had a
/// subscriber. Lives on `Core`; single core, no locks.
pub struct PubSub {
    hubs: RefCell<HashMap<(String, String), Rc<Hub>>>,
    /// `pub_sub_channel_size`; 0 = disabled.
    channel_size: Cell<usize>,
    connect_timeout: Cell<Duration>,
    next_id: Cell<u64>,
    launch: Launch,
}

impl PubSub {
    /// `channel_size` is `pub_sub_channel_size` (0 = disabled);
    /// `connect_timeout` bounds each listener connection attempt.
    pub fn new(channel_size: usize, connect_timeout: Duration) -> PubSub {
        PubSub::with_launch(channel_size, connect_timeout, Launch::Spawn)
    }

    fn with_launch(channel_size: usize, connect_timeout: Duration, launch: Launch) -> PubSub {
        PubSub {
            hubs: RefCell::new(HashMap::new()),
            channel_size: Cell::new(channel_size),
            connect_timeout: Cell::new(connect_timeout),
            next_id: Cell::new(0),
            launch,
        }
    }

    /// A reload: new limits for subscribers created from now on, and each
    /// hub's listener reconnects (if it must) to its cluster's new primary.
    /// Subscribers keep the queue bound they were created with.
    pub fn apply(&self, channel_size: usize, connect_timeout: Duration, pools: &Pools) {
        self.channel_size.set(channel_size);
        self.connect_timeout.set(connect_timeout);
        for hub in self.hubs.borrow().values() {
            hub.connect_timeout.set(connect_timeout);
            if let Some(cluster) = pools.cluster(&hub.database, &hub.user) {
                *hub.target.borrow_mut() = Some(cluster.primary().clone());
            }
        }
    }

    /// False when `pub_sub_channel_size` is 0.
    pub fn is_enabled(&self) -> bool {
        self.channel_size.get() > 0
    }

    /// A subscriber for one session of `cluster`; `None` when pub/sub is
    /// disabled. Create it lazily, at the session's first LISTEN.
    pub fn subscriber(&self, cluster: &Cluster) -> Option<Subscriber> {
        let subscriber = self.subscriber_for(&cluster.database, &cluster.user)?;
        *subscriber.hub.target.borrow_mut() = Some(cluster.primary().clone());
        Some(subscriber)
    }

    fn subscriber_for(&self, database: &str, user: &str) -> Option<Subscriber> {
        if !self.is_enabled() {
            return None;
        }
        let hub = self.hub(database, user);
        let id = SubscriberId(self.next_id.get());
        self.next_id.set(id.0 + 1);
        let inbox = Rc::new(Inbox::new(self.channel_size.get()));
        hub.state.borrow_mut().add_subscriber(id, inbox.clone());
        Some(Subscriber {
            id,
            hub,
            inbox,
            staged: Vec::new(),
        })
    }

    fn hub(&self, database: &str, user: &str) -> Rc<Hub> {
        let key = (database.to_owned(), user.to_owned());
        self.hubs
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| {
                Rc::new(Hub {
                    database: database.to_owned(),
                    user: user.to_owned(),
                    state: RefCell::new(HubState::default()),
                    wake: Signal::default(),
                    running: Cell::new(false),
                    target: RefCell::new(None),
                    connect_timeout: Cell::new(self.connect_timeout.get()),
                    launch: self.launch,
                })
            })
            .clone()
    }
}

/// One session's LISTEN state and notification queue. Dropping it
/// unsubscribes from everything it listened on.
pub struct Subscriber {
    id: SubscriberId,
    hub: Rc<Hub>,
    inbox: Rc<Inbox>,
    /// Commands of the open transaction, in order, not yet in effect.
    staged: Vec<ListenCommand>,
}

impl Subscriber {
    /// Records a LISTEN/UNLISTEN run inside a transaction; it takes effect
    /// at [`commit`](Self::commit) and is forgotten at
    /// [`rollback`](Self::rollback).
    pub fn stage(&mut self, command: ListenCommand) {
        self.staged.push(command);
    }

    /// True when a transaction staged commands not yet committed.
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Puts the staged commands into effect, in order. Takes effect at once
    /// for fan-out; the returned [`Synced`] resolves when the listener
    /// connection has LISTENed every channel this commit added (at once when
    /// none was new).
    pub fn commit(&mut self) -> Synced {
        if self.staged.is_empty() {
            return Synced::done();
        }
        let mut needs_listen = false;
        {
            let mut state = self.hub.state.borrow_mut();
            for command in self.staged.drain(..) {
                match command {
                    ListenCommand::Listen(channel) => {
                        needs_listen |= state.subscribe(self.id, &channel);
                    }
                    ListenCommand::Unlisten(channel) => state.unsubscribe(self.id, &channel),
                    ListenCommand::UnlistenAll => state.unsubscribe_all(self.id),
                }
            }
        }
        let synced = if needs_listen {
            Synced(Some(self.hub.state.borrow_mut().wait_for_server()))
        } else {
            Synced::done()
        };
        self.hub.kick();
        synced
    }

    /// Forgets the staged commands.
    pub fn rollback(&mut self) {
        self.staged.clear();
    }

    /// An autocommit `LISTEN channel`.
    pub fn listen(&mut self, channel: &str) -> Synced {
        self.run(ListenCommand::Listen(channel.to_owned()))
    }

    /// An autocommit `UNLISTEN channel`.
    pub fn unlisten(&mut self, channel: &str) {
        let _ = self.run(ListenCommand::Unlisten(channel.to_owned()));
    }

    /// An autocommit `UNLISTEN *` (also what DISCARD ALL does).
    pub fn unlisten_all(&mut self) {
        let _ = self.run(ListenCommand::UnlistenAll);
    }

    /// Runs one command outside a transaction: staged and committed alone,
    /// leaving any staged commands of an open transaction staged.
    pub fn run(&mut self, command: ListenCommand) -> Synced {
        let open = std::mem::take(&mut self.staged);
        self.staged.push(command);
        let synced = self.commit();
        self.staged = open;
        synced
    }

    /// The channels this session listens on (committed), sorted.
    pub fn channels(&self) -> Vec<String> {
        self.hub.state.borrow().channels_of(self.id)
    }

    /// True when the session listens on at least one channel.
    pub fn is_listening(&self) -> bool {
        !self.channels().is_empty()
    }

    /// Appends every queued NotificationResponse to `out`, byte for byte as
    /// the server sent it; true when there was any. Write them to the client
    /// only between its transactions, as Postgres does ("sql-notify": a
    /// session in a transaction gets its notifications after it ends).
    pub fn try_take(&self, out: &mut BytesMut) -> bool {
        self.inbox.take(out)
    }

    /// Resolves when a notification is queued. Owns what it needs (no borrow
    /// of `self`), so the relay can race it with its socket reads; dropping
    /// it loses nothing.
    pub fn ready(&self) -> impl Future<Output = ()> + 'static {
        let inbox = self.inbox.clone();
        async move { inbox.ready().await }
    }

    /// Notifications queued and not yet taken.
    pub fn queued(&self) -> usize {
        self.inbox.len()
    }

    /// Notifications dropped because the queue was full.
    pub fn dropped_total(&self) -> u64 {
        self.inbox.dropped()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.hub.state.borrow_mut().remove_subscriber(self.id);
        self.hub.kick();
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("id", &self.id)
            .field("hub", &self.hub.label())
            .field("staged", &self.staged)
            .finish()
    }
}

/// The server-side part of a commit: wait on it before telling the client
/// its LISTEN is done, so a NOTIFY the client triggers next is heard.
#[must_use = "wait on it before answering the client, or drop it knowingly"]
pub struct Synced(Option<Rc<Ack>>);

impl Synced {
    fn done() -> Synced {
        Synced(None)
    }

    /// True when there is nothing (more) to wait for.
    pub fn is_done(&self) -> bool {
        self.0.as_ref().is_none_or(|ack| ack.outcome().is_some())
    }

    /// Resolves when the listener connection has run the LISTENs, or failed
    /// to (the subscription stays and is retried on reconnect). Does not time
    /// out by itself beyond the listener's connect timeout and backoff: wrap
    /// it in `rt::timeout` if a bound is needed.
    pub async fn wait(self) -> Result<(), PubSubError> {
        let Some(ack) = self.0 else {
            return Ok(());
        };
        loop {
            if let Some(outcome) = ack.outcome() {
                return outcome;
            }
            ack.signal.wait().await;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;

    /// A NotificationResponse as Postgres sends it.
    pub(crate) fn notification(pid: u32, channel: &str, payload: &str) -> Bytes {
        let mut out = BytesMut::new();
        out.extend_from_slice(b"A");
        let len = 4 + 4 + channel.len() + 1 + payload.len() + 1;
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&pid.to_be_bytes());
        out.extend_from_slice(channel.as_bytes());
        out.extend_from_slice(b"\0");
        out.extend_from_slice(payload.as_bytes());
        out.extend_from_slice(b"\0");
        out.freeze()
    }

    fn manual(channel_size: usize) -> PubSub {
        PubSub::with_launch(channel_size, Duration::from_secs(1), Launch::Manual)
    }

    fn hub_of(pubsub: &PubSub) -> Rc<Hub> {
        pubsub.hub("db", "user")
    }

    fn deliver(pubsub: &PubSub, message: &Bytes) -> usize {
        hub_of(pubsub).state.borrow().deliver(message)
    }

    fn taken(subscriber: &Subscriber) -> Vec<u8> {
        let mut out = BytesMut::new();
        subscriber.try_take(&mut out);
        out.to_vec()
    }

    #[test]
    fn zero_means_disabled() {
        let pubsub = manual(0);
        assert!(!pubsub.is_enabled());
        assert!(pubsub.subscriber_for("db", "user").is_none());
    }

    #[test]
    fn autocommit_listen_and_unlisten() {
        let pubsub = manual(16);
        let mut a = pubsub.subscriber_for("db", "user").unwrap();
        let mut b = pubsub.subscriber_for("db", "user").unwrap();
        let synced = a.listen("chan");
        assert!(!synced.is_done(), "waits for the listener's LISTEN");
        assert!(!b.listen("chan").is_done(), "not on the server yet either");
        assert_eq!(a.channels(), ["chan"]);
        assert!(a.is_listening());
        let message = notification(77, "chan", "x");
        assert_eq!(deliver(&pubsub, &message), 2);
        assert_eq!(taken(&a), message.to_vec());
        assert_eq!(taken(&b), message.to_vec());
        b.unlisten("chan");
        assert_eq!(deliver(&pubsub, &message), 1);
        a.unlisten_all();
        assert_eq!(deliver(&pubsub, &message), 0);
        assert!(!a.is_listening());
        assert!(taken(&b).is_empty());
    }

    #[test]
    fn staged_commands_take_effect_at_commit_only() {
        let pubsub = manual(16);
        let mut a = pubsub.subscriber_for("db", "user").unwrap();
        a.stage(ListenCommand::Listen("x".into()));
        a.stage(ListenCommand::Listen("y".into()));
        assert!(a.has_staged());
        assert!(a.channels().is_empty());
        assert_eq!(deliver(&pubsub, &notification(1, "x", "")), 0);
        let _ = a.commit();
        assert!(!a.has_staged());
        assert_eq!(a.channels(), ["x", "y"]);
        // A rolled-back UNLISTEN changes nothing.
        a.stage(ListenCommand::Unlisten("x".into()));
        a.stage(ListenCommand::UnlistenAll);
        a.rollback();
        assert!(a.commit().is_done());
        assert_eq!(a.channels(), ["x", "y"]);
        // Order matters within a transaction: the last word wins.
        a.stage(ListenCommand::UnlistenAll);
        a.stage(ListenCommand::Listen("z".into()));
        a.stage(ListenCommand::Unlisten("z".into()));
        a.stage(ListenCommand::Listen("y".into()));
        let _ = a.commit();
        assert_eq!(a.channels(), ["y"]);
    }

    #[test]
    fn run_leaves_an_open_transaction_staged() {
        let pubsub = manual(16);
        let mut a = pubsub.subscriber_for("db", "user").unwrap();
        a.stage(ListenCommand::Listen("later".into()));
        let _ = a.listen("now");
        assert_eq!(a.channels(), ["now"]);
        assert!(a.has_staged());
        a.rollback();
        assert_eq!(a.channels(), ["now"]);
    }

    #[test]
    fn dropping_a_subscriber_unsubscribes_it() {
        let pubsub = manual(16);
        let hub = hub_of(&pubsub);
        let mut a = pubsub.subscriber_for("db", "user").unwrap();
        let _ = a.listen("chan");
        hub.state.borrow_mut().connected();
        hub.state.borrow_mut().next_batch().unwrap();
        hub.state.borrow_mut().batch_done(Ok(()));
        drop(a);
        assert!(!hub.state.borrow().wants_connection());
        let unlisten = hub.state.borrow_mut().next_batch().unwrap();
        assert_eq!(unlisten.unlistens, ["chan"]);
    }

    #[test]
    fn synced_resolves_with_the_batch_outcome() {
        use std::pin::pin;
        use std::task::{Context, Poll, Waker};
        let pubsub = manual(16);
        let hub = hub_of(&pubsub);
        let mut a = pubsub.subscriber_for("db", "user").unwrap();
        let mut wait = pin!(a.listen("chan").wait());
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Pending);
        hub.state.borrow_mut().connected();
        let batch = hub.state.borrow_mut().next_batch().unwrap();
        assert_eq!(batch.sql(), "LISTEN \"chan\"");
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Pending);
        hub.state.borrow_mut().batch_done(Ok(()));
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
        // Already on the server: nothing to wait for.
        let mut b = pubsub.subscriber_for("db", "user").unwrap();
        assert!(b.listen("chan").is_done());
    }

    #[test]
    fn the_queue_is_bounded_per_subscriber() {
        let pubsub = manual(3);
        let mut slow = pubsub.subscriber_for("db", "user").unwrap();
        let mut fast = pubsub.subscriber_for("db", "user").unwrap();
        let _ = slow.listen("c");
        let _ = fast.listen("c");
        for i in 0..10 {
            let message = notification(5, "c", &i.to_string());
            deliver(&pubsub, &message);
            if i < 9 {
                assert_eq!(taken(&fast), message.to_vec());
            }
        }
        let expected: Vec<u8> = (7..10)
            .flat_map(|i| notification(5, "c", &i.to_string()).to_vec())
            .collect();
        assert_eq!(taken(&slow), expected);
        assert_eq!(slow.dropped_total(), 7);
        assert_eq!(fast.dropped_total(), 0);
    }

    #[test]
    fn ready_wakes_on_delivery() {
        use std::pin::pin;
        use std::task::{Context, Poll, Waker};
        let pubsub = manual(4);
        let mut a = pubsub.subscriber_for("db", "user").unwrap();
        let _ = a.listen("c");
        let mut ready = pin!(a.ready());
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(ready.as_mut().poll(&mut cx), Poll::Pending);
        deliver(&pubsub, &notification(1, "c", "p"));
        assert_eq!(ready.as_mut().poll(&mut cx), Poll::Ready(()));
    }

    #[test]
    fn hubs_are_per_database_and_user() {
        let pubsub = manual(4);
        let mut a = pubsub.subscriber_for("db", "user").unwrap();
        let mut b = pubsub.subscriber_for("db", "other").unwrap();
        let _ = a.listen("c");
        let _ = b.listen("c");
        assert_eq!(deliver(&pubsub, &notification(1, "c", "")), 1);
        assert!(!taken(&a).is_empty());
        assert!(taken(&b).is_empty());
        assert_eq!(pubsub.hubs.borrow().len(), 2);
    }
}

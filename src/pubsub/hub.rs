//! The sans-IO heart of one listener: which sessions of this core listen on
//! which channels for one (database, user), what the listener connection has
//! LISTENed, the statements that bring the two in line, and the fan-out of
//! each notification to the sessions' inboxes.
//!
//! Owns the reference counts (a channel is LISTENed on the server while at
//! least one session listens on it) and the acknowledgements sessions wait
//! for after a commit that needs a new LISTEN. Must not: do I/O, sleep or
//! spawn (the driver in `listener.rs` does); every method is synchronous, so
//! a caller's `RefCell` borrow of the state never spans an `.await`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use bytes::Bytes;

use crate::protocol::backend::BackendMessage;
use crate::pubsub::inbox::Inbox;
use crate::pubsub::parse::quote_ident;
use crate::pubsub::PubSubError;
use crate::rt::Signal;

/// One session's subscriber on this core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(pub u64);

/// What the listener connection must run next: one simple Query of
/// `LISTEN`/`UNLISTEN` statements. Postgres runs a multi-statement Query as
/// one implicit transaction ("protocol-flow-multi-statement"), so it either
/// all takes effect or none of it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub listens: Vec<String>,
    pub unlistens: Vec<String>,
    /// Every commit up to this generation is covered by this batch or was
    /// already in effect on the server.
    generation: u64,
}

impl Batch {
    /// The SQL text, channel names quoted.
    pub fn sql(&self) -> String {
        let listens = self
            .listens
            .iter()
            .map(|c| format!("LISTEN {}", quote_ident(c)));
        let unlistens = self
            .unlistens
            .iter()
            .map(|c| format!("UNLISTEN {}", quote_ident(c)));
        listens.chain(unlistens).collect::<Vec<_>>().join("; ")
    }
}

/// The outcome of the server-side work a commit waits for.
#[derive(Default)]
pub(crate) struct Ack {
    outcome: RefCell<Option<Result<(), PubSubError>>>,
    pub(crate) signal: Signal,
}

impl Ack {
    fn complete(&self, outcome: Result<(), PubSubError>) {
        let mut slot = self.outcome.borrow_mut();
        if slot.is_none() {
            *slot = Some(outcome);
        }
        drop(slot);
        self.signal.fire();
    }

    pub(crate) fn outcome(&self) -> Option<Result<(), PubSubError>> {
        self.outcome.borrow().clone()
    }
}

struct Subscription {
    inbox: Rc<Inbox>,
    channels: BTreeSet<String>,
}

#[derive(Default)]
pub struct HubState {
    /// Committed subscriptions: channel → its subscribers, oldest first.
    /// A channel is present only while it has one.
    channels: BTreeMap<String, Vec<SubscriberId>>,
    subscribers: HashMap<SubscriberId, Subscription>,
    /// Channels the listener connection has LISTENed (acknowledged).
    server: BTreeSet<String>,
    /// Channels whose wanted state may differ from `server`.
    changed: BTreeSet<String>,
    connected: bool,
    in_flight: Option<Batch>,
    /// Bumped by each commit that waits for a LISTEN.
    generation: u64,
    waiters: Vec<(u64, Rc<Ack>)>,
}

impl HubState {
    pub(crate) fn add_subscriber(&mut self, id: SubscriberId, inbox: Rc<Inbox>) {
        self.subscribers.insert(
            id,
            Subscription {
                inbox,
                channels: BTreeSet::new(),
            },
        );
    }

    /// Forgets a subscriber and every channel it listened on.
    pub fn remove_subscriber(&mut self, id: SubscriberId) {
        self.unsubscribe_all(id);
        self.subscribers.remove(&id);
    }

    /// Adds `id` to `channel`'s listeners; true when the server must LISTEN
    /// (or is already on its way to) before the subscriber hears it.
    pub fn subscribe(&mut self, id: SubscriberId, channel: &str) -> bool {
        let Some(subscription) = self.subscribers.get_mut(&id) else {
            return false;
        };
        if subscription.channels.insert(channel.to_owned()) {
            self.channels
                .entry(channel.to_owned())
                .or_default()
                .push(id);
            self.changed.insert(channel.to_owned());
        }
        self.needs_listen(channel)
    }

    pub fn unsubscribe(&mut self, id: SubscriberId, channel: &str) {
        let Some(subscription) = self.subscribers.get_mut(&id) else {
            return;
        };
        if !subscription.channels.remove(channel) {
            return;
        }
        subscription
            .inbox
            .retain_channels(|c| subscription.channels.contains(c));
        self.drop_listener(id, channel);
    }

    pub fn unsubscribe_all(&mut self, id: SubscriberId) {
        let Some(subscription) = self.subscribers.get_mut(&id) else {
            return;
        };
        let channels = std::mem::take(&mut subscription.channels);
        subscription.inbox.retain_channels(|_| false);
        for channel in channels {
            self.drop_listener(id, &channel);
        }
    }

    fn drop_listener(&mut self, id: SubscriberId, channel: &str) {
        if let Some(listeners) = self.channels.get_mut(channel) {
            listeners.retain(|l| *l != id);
            if listeners.is_empty() {
                self.channels.remove(channel);
                self.changed.insert(channel.to_owned());
            }
        }
    }

    /// True while the server does not (or will soon not) listen on `channel`.
    fn needs_listen(&self, channel: &str) -> bool {
        let unlistening = self
            .in_flight
            .as_ref()
            .is_some_and(|b| b.unlistens.iter().any(|c| c == channel));
        !self.server.contains(channel) || unlistening
    }

    /// Registers a wait for the LISTENs committed so far to reach the server.
    pub(crate) fn wait_for_server(&mut self) -> Rc<Ack> {
        self.generation += 1;
        let ack = Rc::new(Ack::default());
        self.waiters.push((self.generation, ack.clone()));
        ack
    }

    /// The channels `id` listens on, sorted.
    pub fn channels_of(&self, id: SubscriberId) -> Vec<String> {
        self.subscribers
            .get(&id)
            .map(|s| s.channels.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Some session listens: the listener connection must be open.
    pub fn wants_connection(&self) -> bool {
        !self.channels.is_empty()
    }

    /// The listener connection logged in: LISTEN every wanted channel.
    pub fn connected(&mut self) {
        self.connected = true;
        self.server.clear();
        self.in_flight = None;
        self.changed = self.channels.keys().cloned().collect();
    }

    /// The listener connection is gone (closed or lost): the server forgot
    /// every LISTEN. Waiters keep waiting for the next connection.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.server.clear();
        self.in_flight = None;
        if !self.wants_connection() {
            self.finish_waiters(u64::MAX, Ok(()));
        }
    }

    /// A connection attempt failed: commits waiting for the server learn it
    /// now rather than after the backoff.
    pub fn connect_failed(&mut self, error: PubSubError) {
        self.finish_waiters(u64::MAX, Err(error));
    }

    /// The next statements for the listener connection; `None` when it is
    /// not connected, a batch is in flight, or the server is in line.
    pub fn next_batch(&mut self) -> Option<Batch> {
        if !self.connected || self.in_flight.is_some() {
            return None;
        }
        let mut batch = Batch {
            listens: Vec::new(),
            unlistens: Vec::new(),
            generation: self.generation,
        };
        for channel in std::mem::take(&mut self.changed) {
            let wanted = self.channels.contains_key(&channel);
            let on_server = self.server.contains(&channel);
            if wanted && !on_server {
                batch.listens.push(channel);
            } else if !wanted && on_server {
                batch.unlistens.push(channel);
            }
        }
        if batch.listens.is_empty() && batch.unlistens.is_empty() {
            // Everything committed so far is in effect.
            self.finish_waiters(self.generation, Ok(()));
            return None;
        }
        self.in_flight = Some(batch.clone());
        Some(batch)
    }

    /// The server answered the batch in flight: `Ok` at its ReadyForQuery
    /// without an error, else the error it reported (nothing took effect).
    pub fn batch_done(&mut self, outcome: Result<(), PubSubError>) {
        let Some(batch) = self.in_flight.take() else {
            return;
        };
        match &outcome {
            Ok(()) => {
                for channel in batch.listens {
                    self.server.insert(channel);
                }
                for channel in batch.unlistens {
                    self.server.remove(&channel);
                }
            }
            Err(error) => {
                // Not retried until the channel changes again or the
                // connection is replaced: a LISTEN the server refuses once
                // would be refused in a loop.
                tracing::warn!(%error, sql = %batch.sql(), "listener connection refused");
            }
        }
        self.finish_waiters(batch.generation, outcome);
    }

    fn finish_waiters(&mut self, up_to: u64, outcome: Result<(), PubSubError>) {
        self.waiters.retain(|(generation, ack)| {
            if *generation <= up_to {
                ack.complete(outcome.clone());
                false
            } else {
                true
            }
        });
    }

    /// Fans one NotificationResponse (the whole message) out to the inboxes
    /// of the channel's subscribers; returns how many got it.
    pub fn deliver(&self, message: &Bytes) -> usize {
        let channel = match BackendMessage::decode(message) {
            Ok(BackendMessage::NotificationResponse { channel, .. }) => channel,
            _ => return 0,
        };
        let Some(listeners) = self.channels.get(channel) else {
            return 0;
        };
        for id in listeners {
            if let Some(subscription) = self.subscribers.get(id) {
                subscription.inbox.push(message.clone());
            }
        }
        listeners.len()
    }

    #[cfg(test)]
    pub(crate) fn server_channels(&self) -> Vec<String> {
        self.server.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::tests::notification;
    use bytes::BytesMut;

    fn hub_with(ids: &[u64]) -> (HubState, Vec<Rc<Inbox>>) {
        let mut hub = HubState::default();
        let inboxes = ids
            .iter()
            .map(|id| {
                let inbox = Rc::new(Inbox::new(16));
                hub.add_subscriber(SubscriberId(*id), inbox.clone());
                inbox
            })
            .collect();
        (hub, inboxes)
    }

    fn taken(inbox: &Inbox) -> BytesMut {
        let mut out = BytesMut::new();
        inbox.take(&mut out);
        out
    }

    fn batch(listens: &[&str], unlistens: &[&str]) -> (Vec<String>, Vec<String>) {
        (
            listens.iter().map(|s| s.to_string()).collect(),
            unlistens.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn lists(b: &Batch) -> (Vec<String>, Vec<String>) {
        (b.listens.clone(), b.unlistens.clone())
    }

    #[test]
    fn one_listen_per_channel_however_many_subscribe() {
        let (mut hub, _) = hub_with(&[1, 2]);
        assert!(hub.subscribe(SubscriberId(1), "a"));
        assert!(hub.subscribe(SubscriberId(2), "a"));
        assert!(hub.subscribe(SubscriberId(2), "b"));
        assert!(hub.wants_connection());
        assert_eq!(hub.next_batch(), None, "not connected yet");
        hub.connected();
        let first = hub.next_batch().unwrap();
        assert_eq!(lists(&first), batch(&["a", "b"], &[]));
        assert_eq!(first.sql(), "LISTEN \"a\"; LISTEN \"b\"");
        assert_eq!(hub.next_batch(), None, "one batch in flight at a time");
        hub.batch_done(Ok(()));
        assert_eq!(hub.server_channels(), ["a", "b"]);
        assert_eq!(hub.next_batch(), None);
        // Already listened: no new LISTEN needed.
        assert!(!hub.subscribe(SubscriberId(1), "b"));
        assert_eq!(hub.next_batch(), None);
    }

    #[test]
    fn unlisten_when_the_last_subscriber_leaves() {
        let (mut hub, _) = hub_with(&[1, 2]);
        hub.connected();
        hub.subscribe(SubscriberId(1), "a");
        hub.subscribe(SubscriberId(2), "a");
        hub.next_batch().unwrap();
        hub.batch_done(Ok(()));
        hub.unsubscribe(SubscriberId(1), "a");
        assert_eq!(hub.next_batch(), None, "subscriber 2 still listens");
        hub.unsubscribe(SubscriberId(1), "a"); // twice: no effect
        hub.remove_subscriber(SubscriberId(2));
        assert!(!hub.wants_connection());
        let b = hub.next_batch().unwrap();
        assert_eq!(lists(&b), batch(&[], &["a"]));
        assert_eq!(b.sql(), "UNLISTEN \"a\"");
        hub.batch_done(Ok(()));
        assert!(hub.server_channels().is_empty());
    }

    #[test]
    fn subscribe_then_leave_before_the_batch_sends_nothing() {
        let (mut hub, _) = hub_with(&[1]);
        hub.connected();
        hub.subscribe(SubscriberId(1), "a");
        let ack = hub.wait_for_server();
        hub.unsubscribe_all(SubscriberId(1));
        assert_eq!(hub.next_batch(), None);
        assert_eq!(ack.outcome(), Some(Ok(())));
    }

    #[test]
    fn fan_out_goes_to_each_subscriber_of_the_channel_only() {
        let (mut hub, inboxes) = hub_with(&[1, 2, 3]);
        hub.subscribe(SubscriberId(1), "a");
        hub.subscribe(SubscriberId(2), "a");
        hub.subscribe(SubscriberId(3), "b");
        let message = notification(4242, "a", "hello");
        assert_eq!(hub.deliver(&message), 2);
        assert_eq!(&taken(&inboxes[0])[..], &message[..]);
        assert_eq!(&taken(&inboxes[1])[..], &message[..]);
        assert!(inboxes[2].is_empty());
        assert_eq!(hub.deliver(&notification(1, "c", "")), 0);
        assert_eq!(hub.deliver(&Bytes::from_static(b"Z\0\0\0\x05I")), 0);
    }

    #[test]
    fn unsubscribing_drops_what_was_queued_for_that_channel() {
        let (mut hub, inboxes) = hub_with(&[1]);
        hub.subscribe(SubscriberId(1), "a");
        hub.subscribe(SubscriberId(1), "b");
        hub.deliver(&notification(1, "a", "1"));
        hub.deliver(&notification(1, "b", "2"));
        hub.unsubscribe(SubscriberId(1), "a");
        assert_eq!(&taken(&inboxes[0])[..], &notification(1, "b", "2")[..]);
        hub.deliver(&notification(1, "b", "3"));
        hub.unsubscribe_all(SubscriberId(1));
        assert!(inboxes[0].is_empty());
        assert!(hub.channels_of(SubscriberId(1)).is_empty());
    }

    #[test]
    fn waiters_are_acked_by_the_batch_that_covers_them() {
        let (mut hub, _) = hub_with(&[1, 2]);
        hub.connected();
        hub.subscribe(SubscriberId(1), "a");
        let first = hub.wait_for_server();
        let _in_flight = hub.next_batch().unwrap();
        // A commit after the batch left is not covered by it.
        assert!(hub.subscribe(SubscriberId(2), "b"));
        let second = hub.wait_for_server();
        hub.batch_done(Ok(()));
        assert_eq!(first.outcome(), Some(Ok(())));
        assert_eq!(second.outcome(), None);
        let next = hub.next_batch().unwrap();
        assert_eq!(lists(&next), batch(&["b"], &[]));
        hub.batch_done(Ok(()));
        assert_eq!(second.outcome(), Some(Ok(())));
    }

    #[test]
    fn listen_during_an_unlisten_in_flight_listens_again() {
        let (mut hub, _) = hub_with(&[1, 2]);
        hub.connected();
        hub.subscribe(SubscriberId(1), "a");
        hub.next_batch().unwrap();
        hub.batch_done(Ok(()));
        hub.unsubscribe(SubscriberId(1), "a");
        let unlisten = hub.next_batch().unwrap();
        assert_eq!(lists(&unlisten), batch(&[], &["a"]));
        assert!(
            hub.subscribe(SubscriberId(2), "a"),
            "the server is leaving a"
        );
        hub.batch_done(Ok(()));
        let relisten = hub.next_batch().unwrap();
        assert_eq!(lists(&relisten), batch(&["a"], &[]));
    }

    #[test]
    fn a_refused_batch_changes_nothing_and_fails_its_waiters() {
        let (mut hub, _) = hub_with(&[1]);
        hub.connected();
        hub.subscribe(SubscriberId(1), "a");
        let ack = hub.wait_for_server();
        hub.next_batch().unwrap();
        let error = PubSubError::Refused("out of shared memory (53200)".into());
        hub.batch_done(Err(error.clone()));
        assert_eq!(ack.outcome(), Some(Err(error)));
        assert!(hub.server_channels().is_empty());
        assert_eq!(hub.next_batch(), None, "not retried in a loop");
        // A reconnect tries again.
        hub.disconnected();
        hub.connected();
        assert_eq!(lists(&hub.next_batch().unwrap()), batch(&["a"], &[]));
    }

    #[test]
    fn reconnect_listens_to_every_wanted_channel_again() {
        let (mut hub, _) = hub_with(&[1, 2]);
        hub.connected();
        hub.subscribe(SubscriberId(1), "a");
        hub.subscribe(SubscriberId(2), "b");
        hub.next_batch().unwrap();
        hub.batch_done(Ok(()));
        hub.subscribe(SubscriberId(1), "c");
        let ack = hub.wait_for_server();
        hub.next_batch().unwrap(); // in flight when the connection dies
        hub.disconnected();
        assert_eq!(ack.outcome(), None, "waits for the next connection");
        assert_eq!(hub.next_batch(), None);
        hub.connect_failed(PubSubError::Connect("refused".into()));
        assert_eq!(
            ack.outcome(),
            Some(Err(PubSubError::Connect("refused".into())))
        );
        hub.connected();
        let again = hub.next_batch().unwrap();
        assert_eq!(lists(&again), batch(&["a", "b", "c"], &[]));
        hub.batch_done(Ok(()));
        assert_eq!(hub.server_channels(), ["a", "b", "c"]);
    }

    #[test]
    fn closing_when_nobody_listens_acks_the_waiters() {
        let (mut hub, _) = hub_with(&[1]);
        hub.subscribe(SubscriberId(1), "a");
        let ack = hub.wait_for_server();
        hub.remove_subscriber(SubscriberId(1));
        assert!(!hub.wants_connection());
        hub.disconnected();
        assert_eq!(ack.outcome(), Some(Ok(())));
    }

    #[test]
    fn quoting_in_batches() {
        let (mut hub, _) = hub_with(&[1]);
        hub.connected();
        hub.subscribe(SubscriberId(1), "Mixed \"Case\"");
        assert_eq!(
            hub.next_batch().unwrap().sql(),
            "LISTEN \"Mixed \"\"Case\"\"\""
        );
    }

    #[test]
    fn unknown_subscribers_are_ignored() {
        let (mut hub, _) = hub_with(&[]);
        assert!(!hub.subscribe(SubscriberId(9), "a"));
        hub.unsubscribe(SubscriberId(9), "a");
        hub.unsubscribe_all(SubscriberId(9));
        hub.remove_subscriber(SubscriberId(9));
        assert!(!hub.wants_connection());
    }
}

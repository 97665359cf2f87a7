//! One session's queue of notifications waiting to be written to its client.
//!
//! Owns the bound (`pub_sub_channel_size` messages), the drop-oldest rule on
//! overflow (with one warning per inbox), and the wake-up of the session
//! waiting in `ready`. Entries are the NotificationResponse messages exactly
//! as the listener connection read them (tag, length, the notifying backend's
//! process id, channel, payload: "protocol-message-formats"), shared between
//! every inbox they were fanned out to.
//!
//! Must not: decide which session gets what (that is the hub's fan-out) or do
//! I/O. Single core: `Cell`/`RefCell`; no borrow spans an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::protocol::backend::BackendMessage;
use crate::rt::Signal;

pub(crate) struct Inbox {
    queue: RefCell<VecDeque<Bytes>>,
    /// Most messages kept; at least 1.
    limit: usize,
    /// The overflow warning was logged for this inbox.
    warned: Cell<bool>,
    /// Messages dropped for overflow, for the log and tests.
    dropped: Cell<u64>,
    /// Fired on every push; only the owning session waits on it and resets it.
    signal: Signal,
}

impl Inbox {
    pub(crate) fn new(limit: usize) -> Inbox {
        Inbox {
            queue: RefCell::new(VecDeque::new()),
            limit: limit.max(1),
            warned: Cell::new(false),
            dropped: Cell::new(0),
            signal: Signal::default(),
        }
    }

    /// Queues one NotificationResponse, dropping the oldest when full.
    pub(crate) fn push(&self, message: Bytes) {
        {
            let mut queue = self.queue.borrow_mut();
            if queue.len() >= self.limit {
                queue.pop_front();
                self.dropped.set(self.dropped.get() + 1);
                if !self.warned.replace(true) {
                    tracing::warn!(
                        limit = self.limit,
                        "a client reads notifications slower than they arrive; \
                         dropping the oldest (pub_sub_channel_size)"
                    );
                }
            }
            queue.push_back(message);
        }
        self.signal.fire();
    }

    /// Appends every queued message to `out`; true when there was any.
    pub(crate) fn take(&self, out: &mut BytesMut) -> bool {
        let mut queue = self.queue.borrow_mut();
        if queue.is_empty() {
            return false;
        }
        for message in queue.drain(..) {
            out.extend_from_slice(&message);
        }
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Forgets queued notifications whose channel `keep` rejects: after
    /// UNLISTEN, Postgres does not deliver what it had not yet sent for that
    /// channel.
    pub(crate) fn retain_channels(&self, keep: impl Fn(&str) -> bool) {
        self.queue
            .borrow_mut()
            .retain(|message| match BackendMessage::decode(message) {
                Ok(BackendMessage::NotificationResponse { channel, .. }) => keep(channel),
                _ => false,
            });
    }

    /// Resolves when something is queued. Cancel-safe: dropping it loses
    /// nothing, the queue is the truth and the signal only a wake-up.
    pub(crate) async fn ready(&self) {
        loop {
            if !self.is_empty() {
                return;
            }
            // Nothing queued: any earlier fire has been consumed. No await
            // between the check and the reset, so no push can fall between.
            self.signal.reset();
            self.signal.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::tests::notification;

    #[test]
    fn takes_exact_bytes_in_order() {
        let inbox = Inbox::new(8);
        let mut out = BytesMut::new();
        assert!(!inbox.take(&mut out));
        inbox.push(notification(7, "a", "1"));
        inbox.push(notification(9, "b", ""));
        assert!(inbox.take(&mut out));
        assert_eq!(
            &out[..],
            &b"A\0\0\0\x0c\0\0\0\x07a\x001\0A\0\0\0\x0b\0\0\0\x09b\0\0"[..]
        );
        assert!(inbox.is_empty());
        assert!(!inbox.take(&mut out));
    }

    #[test]
    fn overflow_drops_the_oldest() {
        let inbox = Inbox::new(2);
        for i in 0..5 {
            inbox.push(notification(1, "c", &i.to_string()));
        }
        assert_eq!(inbox.len(), 2);
        assert_eq!(inbox.dropped(), 3);
        assert!(inbox.warned.get());
        let mut out = BytesMut::new();
        inbox.take(&mut out);
        let expected: Vec<u8> = [notification(1, "c", "3"), notification(1, "c", "4")].concat();
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn a_limit_of_zero_still_keeps_one() {
        let inbox = Inbox::new(0);
        inbox.push(notification(1, "c", "x"));
        inbox.push(notification(1, "c", "y"));
        assert_eq!(inbox.len(), 1);
    }

    #[test]
    fn retain_drops_other_channels() {
        let inbox = Inbox::new(8);
        inbox.push(notification(1, "a", "1"));
        inbox.push(notification(1, "b", "2"));
        inbox.push(notification(1, "a", "3"));
        inbox.retain_channels(|c| c == "b");
        let mut out = BytesMut::new();
        inbox.take(&mut out);
        assert_eq!(&out[..], &notification(1, "b", "2")[..]);
    }

    #[test]
    fn ready_resolves_only_when_something_is_queued() {
        use std::future::Future;
        use std::pin::pin;
        use std::task::{Context, Poll, Waker};
        let inbox = Inbox::new(4);
        let mut cx = Context::from_waker(Waker::noop());
        {
            let mut ready = pin!(inbox.ready());
            assert_eq!(ready.as_mut().poll(&mut cx), Poll::Pending);
            inbox.push(notification(1, "a", ""));
            assert_eq!(ready.as_mut().poll(&mut cx), Poll::Ready(()));
        }
        // Taken: the fired signal from the push must not wake it again.
        inbox.take(&mut BytesMut::new());
        let mut ready = pin!(inbox.ready());
        assert_eq!(ready.as_mut().poll(&mut cx), Poll::Pending);
    }
}

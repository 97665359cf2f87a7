//! A strictly FIFO counting semaphore for one core: the checkout queue.
//!
//! A released permit is handed straight to the oldest waiter, so a newcomer can
//! never take it first (glommio's semaphore lets newcomers barge, which let a
//! waiter time out while later requests were served). Single-core: `Rc` and
//! `Cell` only; no borrow is held across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// The semaphore was closed (its pool retired).
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

struct Waiter {
    granted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

pub struct Permits {
    available: Cell<usize>,
    closed: Cell<bool>,
    waiters: RefCell<VecDeque<Rc<Waiter>>>,
}

impl Permits {
    pub fn new(count: usize) -> Rc<Permits> {
        Rc::new(Permits {
            available: Cell::new(count),
            closed: Cell::new(false),
            waiters: RefCell::new(VecDeque::new()),
        })
    }

    /// A permit now, if one is free and nobody waits ahead of us.
    pub fn try_acquire(self: &Rc<Self>) -> Result<Permit, Closed> {
        if self.closed.get() {
            return Err(Closed);
        }
        let free = self.available.get();
        if free > 0 && self.waiters.borrow().is_empty() {
            self.available.set(free - 1);
            return Ok(Permit {
                permits: self.clone(),
            });
        }
        Err(Closed)
    }

    /// Waits in line for a permit. Dropping the future leaves the line (and
    /// passes on a permit granted in the meantime).
    pub fn acquire(self: &Rc<Self>) -> Acquire {
        Acquire {
            permits: self.clone(),
            waiter: None,
        }
    }

    /// Fails every waiter and every later acquire.
    pub fn close(&self) {
        self.closed.set(true);
        let waiters: Vec<_> = self.waiters.borrow_mut().drain(..).collect();
        for waiter in waiters {
            if let Some(waker) = waiter.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    fn release(&self) {
        let next = self.waiters.borrow_mut().pop_front();
        match next {
            Some(waiter) => {
                waiter.granted.set(true);
                if let Some(waker) = waiter.waker.borrow_mut().take() {
                    waker.wake();
                }
            }
            None => self.available.set(self.available.get() + 1),
        }
    }
}

/// One unit of the semaphore; released (to the next waiter) on drop.
pub struct Permit {
    permits: Rc<Permits>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.permits.release();
    }
}

pub struct Acquire {
    permits: Rc<Permits>,
    waiter: Option<Rc<Waiter>>,
}

impl Future for Acquire {
    type Output = Result<Permit, Closed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let permits = self.permits.clone();
        match &self.waiter {
            None => {
                if let Ok(permit) = permits.try_acquire() {
                    return Poll::Ready(Ok(permit));
                }
                if permits.closed.get() {
                    return Poll::Ready(Err(Closed));
                }
                let waiter = Rc::new(Waiter {
                    granted: Cell::new(false),
                    waker: RefCell::new(Some(cx.waker().clone())),
                });
                permits.waiters.borrow_mut().push_back(waiter.clone());
                self.waiter = Some(waiter);
                Poll::Pending
            }
            Some(waiter) => {
                if waiter.granted.get() {
                    self.waiter = None;
                    return Poll::Ready(Ok(Permit { permits }));
                }
                if permits.closed.get() {
                    self.waiter = None;
                    return Poll::Ready(Err(Closed));
                }
                *waiter.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        if waiter.granted.get() {
            // Granted but never taken: pass it on.
            self.permits.release();
        } else {
            self.permits
                .waiters
                .borrow_mut()
                .retain(|w| !Rc::ptr_eq(w, &waiter));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll(future: &mut Acquire) -> Poll<Result<Permit, Closed>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(future).poll(&mut cx)
    }

    #[test]
    fn released_permits_go_to_the_oldest_waiter() {
        let permits = Permits::new(1);
        let held = permits.try_acquire().unwrap();
        let mut first = permits.acquire();
        let mut second = permits.acquire();
        assert!(poll(&mut first).is_pending());
        assert!(poll(&mut second).is_pending());
        drop(held);
        // A newcomer cannot barge ahead of the waiters.
        assert!(permits.try_acquire().is_err());
        assert!(poll(&mut second).is_pending());
        let granted = poll(&mut first);
        assert!(matches!(granted, Poll::Ready(Ok(_))));
        drop(granted);
        assert!(matches!(poll(&mut second), Poll::Ready(Ok(_))));
    }

    #[test]
    fn a_dropped_waiter_passes_its_grant_on() {
        let permits = Permits::new(1);
        let held = permits.try_acquire().unwrap();
        let mut first = permits.acquire();
        let mut second = permits.acquire();
        assert!(poll(&mut first).is_pending());
        assert!(poll(&mut second).is_pending());
        drop(held);
        drop(first); // granted, never taken
        assert!(matches!(poll(&mut second), Poll::Ready(Ok(_))));
    }

    #[test]
    fn close_fails_waiters_and_later_acquires() {
        let permits = Permits::new(0);
        let mut waiting = permits.acquire();
        assert!(poll(&mut waiting).is_pending());
        permits.close();
        assert!(matches!(poll(&mut waiting), Poll::Ready(Err(Closed))));
        assert!(permits.try_acquire().is_err());
    }

    #[test]
    fn permits_count_back_up_with_no_waiters() {
        let permits = Permits::new(2);
        let a = permits.try_acquire().unwrap();
        let b = permits.try_acquire().unwrap();
        assert!(permits.try_acquire().is_err());
        drop(a);
        drop(b);
        assert_eq!(permits.available.get(), 2);
    }
}

//! The connections of one serving thread that wait for a request (a new connection before its
//! first byte, a kept-alive one between requests), so that a full proxy makes room by closing
//! the one that has waited longest instead of refusing a newcomer: ten thousand sockets that
//! never send anything must not lock real clients out.
//!
//! Each serving thread has its own list; only its own connections and its own hand-offs touch
//! it, so its lock is never contended. The accept loop reads each list's published length to
//! choose the thread that has the most to give up, and that thread closes its own connection
//! that has waited longest (nginx, out of connections, likewise reuses each worker's oldest
//! kept-alive ones): longest by thread, not across the process, which would take a lock
//! shared between threads on every request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

#[derive(Debug)]
pub struct IdleConnections {
    slots: Mutex<Slots>,
    /// How many wait now, for the accept loop.
    waiting: Arc<AtomicUsize>,
}

#[derive(Debug, Default)]
struct Slots {
    entries: Vec<Entry>,
    vacant: Vec<usize>,
}

#[derive(Debug)]
enum Entry {
    Vacant,
    Waiting {
        since: Instant,
        waker: Option<Waker>,
    },
    /// Chosen to make room; its connection closes when it next looks.
    Shed,
}

/// A connection's place in the list while it waits. Not `Clone`: one per wait, given back
/// with [`IdleConnections::leave`].
#[derive(Debug)]
pub struct IdleTicket(usize);

impl IdleConnections {
    pub fn new(waiting: Arc<AtomicUsize>) -> Self {
        Self {
            slots: Mutex::new(Slots::default()),
            waiting,
        }
    }

    /// A connection begins to wait, as of `since`.
    pub fn enter(&self, since: Instant) -> IdleTicket {
        let mut slots = self.lock();
        let entry = Entry::Waiting { since, waker: None };
        let index = match slots.vacant.pop() {
            Some(index) => {
                slots.entries[index] = entry;
                index
            }
            None => {
                slots.entries.push(entry);
                slots.entries.len() - 1
            }
        };
        self.waiting.fetch_add(1, Ordering::Relaxed);
        IdleTicket(index)
    }

    /// Ready once the connection has been chosen to close; until then `cx` is woken if it is.
    pub fn poll_shed(&self, ticket: &IdleTicket, cx: &mut Context<'_>) -> Poll<()> {
        let mut slots = self.lock();
        match &mut slots.entries[ticket.0] {
            Entry::Waiting { waker, .. } => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Entry::Shed | Entry::Vacant => Poll::Ready(()),
        }
    }

    /// The connection no longer waits (a request began, or it closes).
    pub fn leave(&self, ticket: IdleTicket) {
        let mut slots = self.lock();
        if matches!(slots.entries[ticket.0], Entry::Waiting { .. }) {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        slots.entries[ticket.0] = Entry::Vacant;
        slots.vacant.push(ticket.0);
    }

    /// Tells the connection that has waited longest to close: whether there was one. Called
    /// only when the proxy is full, so a walk over the list is cheap enough.
    pub fn shed_longest_waiting(&self) -> bool {
        let mut slots = self.lock();
        let longest = slots
            .entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| match entry {
                Entry::Waiting { since, .. } => Some((*since, index)),
                Entry::Shed | Entry::Vacant => None,
            })
            .min();
        let Some((_, index)) = longest else {
            return false;
        };
        if let Entry::Waiting {
            waker: Some(waker), ..
        } = std::mem::replace(&mut slots.entries[index], Entry::Shed)
        {
            waker.wake();
        }
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        true
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // The list holds no invariant a panic could break half-way.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_connection_that_waited_longest_is_shed_first_and_only_waiting_ones() {
        let waiting = Arc::new(AtomicUsize::new(0));
        let idle = IdleConnections::new(waiting.clone());
        let now = Instant::now();
        let newer = idle.enter(now);
        let oldest = idle.enter(now - Duration::from_secs(30));
        let busy = idle.enter(now - Duration::from_secs(60));
        idle.leave(busy);
        assert_eq!(waiting.load(Ordering::Relaxed), 2);

        let mut cx = Context::from_waker(Waker::noop());
        assert!(idle.shed_longest_waiting());
        assert!(idle.poll_shed(&oldest, &mut cx).is_ready());
        assert!(idle.poll_shed(&newer, &mut cx).is_pending());
        assert_eq!(waiting.load(Ordering::Relaxed), 1);

        // The shed connection leaving does not count twice; its place is reused.
        idle.leave(oldest);
        assert_eq!(waiting.load(Ordering::Relaxed), 1);
        let again = idle.enter(now);
        assert_eq!(again.0, 1);
        assert!(idle.shed_longest_waiting());
        assert!(idle.shed_longest_waiting());
        assert!(!idle.shed_longest_waiting(), "nothing is left waiting");
        assert_eq!(waiting.load(Ordering::Relaxed), 0);
        idle.leave(again);
        idle.leave(newer);
        assert_eq!(waiting.load(Ordering::Relaxed), 0);
    }
}

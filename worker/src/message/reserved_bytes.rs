//! The byte budget of reserved messages (`reserved_bytes`): every message from its fetch until
//! its handling ends — waiting for a slot, a rate limit or its run, running, writing its
//! outcome — counts its size as on the wire, except ETA messages waiting without a reservation
//! (those count under `eta_held_bytes`). While the total is at the budget the fetch loop fetches
//! nothing, and a fetch asks Redis for at most the room left (the first element is always
//! taken), so the total goes past the budget by less than one message.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bytes of the messages reserved now, against a budget.
#[derive(Debug)]
pub(crate) struct ReservedBytes {
    used: AtomicUsize,
    budget: usize,
    freed: Notify,
}

impl ReservedBytes {
    /// An empty count with `budget` bytes of room.
    pub(crate) fn new(budget: usize) -> Self {
        ReservedBytes {
            used: AtomicUsize::new(0),
            budget: budget.max(1),
            freed: Notify::new(),
        }
    }

    /// Count `bytes` more.
    pub(crate) fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Count `bytes` fewer (what [`ReservedBytes::add`] counted) and wake a waiting fetch.
    pub(crate) fn sub(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        self.freed.notify_one();
    }

    /// Bytes counted now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The room left, `None` when the budget is used up.
    pub(crate) fn room(&self) -> Option<usize> {
        self.budget
            .checked_sub(self.used())
            .filter(|room| *room > 0)
    }

    /// Wait until there is room (returns at once when there is).
    pub(crate) async fn wait_for_room(&self) {
        loop {
            let freed = self.freed.notified();
            if self.room().is_some() {
                return;
            }
            freed.await;
        }
    }
}

/// How many ETA messages may wait without holding a reservation.
pub(crate) const MAX_ETA_HELD: usize = 100_000;

/// The ETA messages waiting now, and the bytes (as on the wire) of those waiting without a
/// reservation, against `eta_held_bytes` (see [`crate::message::scheduled`]).
#[derive(Debug, Default)]
pub(crate) struct EtaHeld {
    count: AtomicUsize,
    bytes: AtomicUsize,
}

impl EtaHeld {
    /// A message of `bytes` starts waiting for its ETA: whether it waits without its reservation
    /// (fewer than [`MAX_ETA_HELD`] wait already and its bytes fit in `budget`; they are then
    /// counted).
    pub(crate) fn enter(&self, bytes: usize, budget: usize) -> bool {
        let under_count = self.count.fetch_add(1, Ordering::Relaxed) < MAX_ETA_HELD;
        under_count && take_bytes(&self.bytes, bytes, budget)
    }

    /// The message's wait ended; `unreserved`: what [`EtaHeld::enter`] answered for it.
    pub(crate) fn leave(&self, bytes: usize, unreserved: bool) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        if unreserved {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// The ETA messages waiting now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// Add `bytes` to `held` if the total stays within `budget`; whether it was added.
fn take_bytes(held: &AtomicUsize, bytes: usize, budget: usize) -> bool {
    held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
        cur.checked_add(bytes).filter(|n| *n <= budget)
    })
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_shrinks_and_comes_back() {
        let r = ReservedBytes::new(1000);
        assert_eq!(r.room(), Some(1000));
        r.add(600);
        assert_eq!(r.room(), Some(400));
        r.add(600);
        assert_eq!(r.room(), None);
        let waiting = {
            let r = &r;
            async move {
                r.wait_for_room().await;
                r.room()
            }
        };
        let (room, ()) = tokio::join!(waiting, async {
            tokio::task::yield_now().await;
            r.sub(600);
        });
        assert_eq!(room, Some(400));
        assert_eq!(r.used(), 600);
    }

    #[test]
    fn the_eta_byte_budget_is_never_exceeded() {
        let held = AtomicUsize::new(0);
        assert!(take_bytes(&held, 600, 1000));
        assert!(!take_bytes(&held, 600, 1000), "over the budget");
        assert!(take_bytes(&held, 400, 1000), "exactly the budget");
        assert!(!take_bytes(&held, 1, 1000));
        assert!(!take_bytes(&held, usize::MAX, usize::MAX), "no overflow");
        assert_eq!(held.load(Ordering::Relaxed), 1000);
    }
}

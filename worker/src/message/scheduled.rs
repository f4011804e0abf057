//! Messages with an ETA or countdown: held unacked (their `unacked_index` score kept fresh, so no
//! restore sweep duplicates them) until they are due, without taking an execution slot.
//!
//! A held message gives back its reservation while it waits, so ETA tasks do not stop the worker
//! from consuming — up to [`MAX_ETA_HELD`] of them and `eta_held_bytes` (their size on the wire);
//! past that, new ETA messages keep their reservation, so the worker fetches less, which bounds
//! the memory ETA messages can take.

use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::OwnedSemaphorePermit;

use crate::runtime::Runtime;

/// How many ETA messages may wait without holding a reservation.
pub(crate) const MAX_ETA_HELD: usize = 100_000;

/// How a wait for an ETA ended.
pub(crate) enum Waited {
    /// The ETA has come.
    Due,
    /// The worker began a warm shutdown; the message is still held and will be restored.
    Draining,
}

/// Wait until `eta`; gives back `reservation` (sets it to `None`) while the ETA-held count and
/// byte budget allow (`bytes`: this message's size on the wire).
pub(crate) async fn wait_for_eta(
    rt: &Runtime,
    eta: DateTime<Utc>,
    bytes: usize,
    reservation: &mut Option<OwnedSemaphorePermit>,
) -> Waited {
    let under_count = rt.eta_held.fetch_add(1, Ordering::Relaxed) < MAX_ETA_HELD;
    let budget = usize::try_from(rt.settings.eta_held_bytes).unwrap_or(usize::MAX);
    let counted = under_count && take_bytes(&rt.eta_held_bytes, bytes, budget);
    if counted {
        reservation.take();
        rt.reserved_bytes.sub(bytes);
    }
    tracing::info!(eta = %eta.to_rfc3339(), "task scheduled");
    let delay = (eta - Utc::now()).to_std().unwrap_or_default();
    let waited = tokio::select! {
        _ = tokio::time::sleep(delay) => Waited::Due,
        _ = rt.draining.cancelled() => Waited::Draining,
    };
    rt.eta_held.fetch_sub(1, Ordering::Relaxed);
    if counted {
        rt.eta_held_bytes.fetch_sub(bytes, Ordering::Relaxed);
        // Due (or draining): reserved again until its handling ends.
        rt.reserved_bytes.add(bytes);
    }
    waited
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

    #[test]
    fn the_byte_budget_is_never_exceeded() {
        let held = AtomicUsize::new(0);
        assert!(take_bytes(&held, 600, 1000));
        assert!(!take_bytes(&held, 600, 1000), "over the budget");
        assert!(take_bytes(&held, 400, 1000), "exactly the budget");
        assert!(!take_bytes(&held, 1, 1000));
        assert!(!take_bytes(&held, usize::MAX, usize::MAX), "no overflow");
        assert_eq!(held.load(Ordering::Relaxed), 1000);
    }
}

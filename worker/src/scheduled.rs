//! Messages with an ETA or countdown: held unacked (their `unacked_index` score kept fresh, so no
//! restore sweep duplicates them) until they are due, without taking an execution slot.
//!
//! A held message gives back its reservation while it waits, so ETA tasks do not stop the worker
//! from consuming — up to [`MAX_ETA_HELD`] of them; past that, new ETA messages keep their
//! reservation, which bounds the memory ETA messages can take.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use tokio::sync::OwnedSemaphorePermit;

use crate::runtime::Runtime;

/// How many ETA messages may wait without holding a reservation.
pub const MAX_ETA_HELD: usize = 100_000;

/// How a wait for an ETA ended.
pub enum Waited {
    /// The ETA has come.
    Due,
    /// The worker began a warm shutdown; the message is still held and will be restored.
    Draining,
}

/// Wait until `eta`; gives back `reservation` (sets it to `None`) while the ETA-held count allows.
pub async fn wait_for_eta(
    rt: &Runtime,
    eta: DateTime<Utc>,
    reservation: &mut Option<OwnedSemaphorePermit>,
) -> Waited {
    let counted = rt.eta_held.fetch_add(1, Ordering::Relaxed) < MAX_ETA_HELD;
    if counted {
        reservation.take();
    }
    tracing::info!(eta = %eta.to_rfc3339(), "task scheduled");
    let delay = (eta - Utc::now()).to_std().unwrap_or_default();
    let waited = tokio::select! {
        _ = tokio::time::sleep(delay) => Waited::Due,
        _ = rt.draining.cancelled() => Waited::Draining,
    };
    rt.eta_held.fetch_sub(1, Ordering::Relaxed);
    waited
}

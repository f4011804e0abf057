//! Messages with an ETA or countdown: held unacked (their `unacked_index` score kept fresh, so no
//! restore sweep duplicates them) until they are due, without taking an execution slot.
//!
//! A held message gives back its reservation while it waits, so ETA tasks do not stop the worker
//! from consuming — up to [`MAX_ETA_HELD`](crate::message::reserved_bytes::MAX_ETA_HELD) of them
//! and `eta_held_bytes` (their size on the wire); past that, new ETA messages keep their
//! reservation, so the worker fetches less, which bounds the memory ETA messages can take.

use chrono::{DateTime, Utc};
use tokio::sync::OwnedSemaphorePermit;

use crate::runtime::Runtime;

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
    let counted = rt.start_eta_wait(bytes);
    if counted {
        reservation.take();
        rt.reserved_bytes().sub(bytes);
    }
    tracing::info!(eta = %eta.to_rfc3339(), "task scheduled");
    let delay = (eta - Utc::now()).to_std().unwrap_or_default();
    let waited = tokio::select! {
        _ = tokio::time::sleep(delay) => Waited::Due,
        _ = rt.draining().cancelled() => Waited::Draining,
    };
    rt.end_eta_wait(bytes, counted);
    if counted {
        // Due (or draining): reserved again until its handling ends.
        rt.reserved_bytes().add(bytes);
    }
    waited
}

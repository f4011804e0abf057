//! The fetch loop: takes messages off the queues only when a reservation slot is free, so the
//! queue length in Redis always shows the real backlog.
//!
//! Reserved messages are bounded in bytes too (`reserved_bytes`, see
//! [`crate::message::reserved_bytes`]): at the budget the loop fetches nothing until a message is done.
//!
//! Each fetch is one atomic pop-and-stash script in Redis (see broker-bridge's transport), so a
//! kill at any instant loses nothing. When a fetch leaves free slots (every consumed list was
//! empty), the loop waits for an arrival with [`ArrivalWait`]: one `BLMOVE list list RIGHT RIGHT`
//! per consumed list, which returns as soon as the list is non-empty and leaves the message where
//! it is; then the same atomic fetch runs. While the watchers reconnect, or when Redis refuses
//! `BLMOVE` (an ACL user without it, Redis before 6.2), the loop polls with a backoff (5 ms
//! doubling up to [`POLL_INTERVAL_MAX`]). When Redis is unreachable it retries with a backoff up
//! to 5 s and resumes by itself when Redis is back.

use std::sync::Arc;
use std::time::Duration;

use celeriac_broker_bridge::transport::{ArrivalWait, Woken, BLOCK_TIMEOUT};

use crate::message::processor;
use crate::runtime::Runtime;

/// Most messages one fetch takes. A fetch's messages start only once its whole reply is read, so
/// when many slots are free at once (at start, after a burst) several smaller fetches start the
/// first tasks sooner than one big one (`-c 1000`: the first task 30 ms after the worker is
/// ready with one fetch of every free slot, 2 ms with this bound), and the worker decodes one
/// batch while Redis runs the next fetch.
pub(crate) const FETCH_MAX: usize = 256;

/// Longest pause between two polls of empty queues, when waiting for arrivals is not possible.
pub(crate) const POLL_INTERVAL_MAX: Duration = Duration::from_millis(100);
const POLL_INTERVAL_MIN: Duration = Duration::from_millis(5);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Run until the worker starts draining.
pub(crate) async fn run(rt: Arc<Runtime>) {
    if let Some(sqs) = rt.sqs().cloned() {
        return crate::message::sqs_fetch::fetch_loop(rt, sqs).await;
    }
    let mut arrivals = rt.broker().arrival_wait();
    let mut idle = POLL_INTERVAL_MIN;
    let mut failing = Duration::ZERO;
    let mut watchers_lost = false;
    loop {
        if rt.draining().is_cancelled() {
            return;
        }
        let free = rt.reservations().available_permits();
        if free == 0 {
            tokio::select! {
                permit = rt.reservations().acquire() => { drop(permit); continue }
                _ = rt.draining().cancelled() => return,
            }
        }
        let Some(room) = rt.reserved_bytes().room() else {
            tokio::select! {
                _ = rt.reserved_bytes().wait_for_room() => continue,
                _ = rt.draining().cancelled() => return,
            }
        };
        let queues = rt.consumed_queues();
        let want = free.min(FETCH_MAX);
        match rt.broker().fetch_within(&queues, want, room).await {
            Ok(fetched) => {
                rt.metrics().broker_reachable(true);
                if !failing.is_zero() {
                    tracing::info!("broker reachable again; consuming resumed");
                    failing = Duration::ZERO;
                    arrivals.reset();
                    rt.reconnected().notify_one();
                }
                for dead in &fetched.dead_lettered {
                    rt.count_dead_lettered();
                    tracing::error!(queue = %dead.queue, reason = %dead.reason, "moved an element that is not a kombu message to the dead-letter list");
                }
                let taken = fetched.deliveries.len() + fetched.dead_lettered.len();
                for delivery in fetched.deliveries {
                    processor::spawn_dispatch(&rt, delivery);
                }
                // Fewer than asked because the byte room ran out: wait for room, not arrivals.
                if taken >= want || rt.reserved_bytes().room().is_none() {
                    idle = POLL_INTERVAL_MIN;
                    continue;
                }
                // Fewer than asked: every list was empty when the script ran.
                match wait_for_arrival(&rt, &mut arrivals, &queues, idle).await {
                    Waited::Blocked => {
                        idle = POLL_INTERVAL_MIN;
                        if std::mem::take(&mut watchers_lost) {
                            // The watchers' connections broke and work again: the server may
                            // be a new one (restarted empty, a promoted replica).
                            rt.reconnected().notify_one();
                        }
                    }
                    Waited::Polled { lost } => {
                        idle = (idle * 2).min(POLL_INTERVAL_MAX);
                        watchers_lost |= lost;
                    }
                }
            }
            Err(e) => {
                rt.metrics().broker_reachable(false);
                failing = (failing * 2).clamp(Duration::from_millis(100), RECONNECT_BACKOFF_MAX);
                tracing::warn!(error = %e, retry_in_ms = failing.as_millis() as u64, "fetch failed; retrying");
                pause(&rt, failing).await;
            }
        }
    }
}

/// How [`wait_for_arrival`] waited.
enum Waited {
    /// On the watchers (or cut short by a queue change or draining).
    Blocked,
    /// A poll pause instead; `lost` when watchers lost their connections (not when new ones
    /// are connecting for the first time).
    Polled { lost: bool },
}

/// Wait until a message may be there: an arrival, a change of the consumed queues, the
/// watchers' time limit, or — when waiting is not possible — a poll pause of `idle`.
async fn wait_for_arrival(
    rt: &Runtime,
    arrivals: &mut ArrivalWait,
    queues: &[String],
    idle: Duration,
) -> Waited {
    let lists = rt.broker().consumed_lists(queues);
    let woken = tokio::select! {
        w = arrivals.wait(&lists, BLOCK_TIMEOUT) => w,
        _ = rt.queues_changed().notified() => return Waited::Blocked,
        _ = rt.draining().cancelled() => return Waited::Blocked,
    };
    match woken {
        Woken::Arrived => {
            rt.metrics().fetch_woken();
            Waited::Blocked
        }
        Woken::TimedOut => Waited::Blocked,
        Woken::Reconnecting => {
            pause(rt, idle).await;
            Waited::Polled { lost: true }
        }
        Woken::Connecting | Woken::Unavailable(_) => {
            pause(rt, idle).await;
            Waited::Polled { lost: false }
        }
    }
}

async fn pause(rt: &Runtime, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = rt.draining().cancelled() => {}
    }
}

//! The fetch loop: takes messages off the queues only when a reservation slot is free, so the
//! queue length in Redis always shows the real backlog.
//!
//! Each fetch is one atomic pop-and-stash script in Redis (see broker-bridge's transport), so a
//! kill at any instant loses nothing. When the queues are empty the loop polls with a backoff
//! (10 ms doubling up to `poll_interval_max`); when Redis is unreachable it retries with a
//! backoff up to 5 s and resumes by itself when Redis is back.

use std::sync::Arc;
use std::time::Duration;

use crate::processor;
use crate::runtime::Runtime;

/// Longest pause between two polls of empty queues.
pub const POLL_INTERVAL_MAX: Duration = Duration::from_millis(100);
const POLL_INTERVAL_MIN: Duration = Duration::from_millis(5);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Run until the worker starts draining.
pub async fn run(rt: Arc<Runtime>) {
    let mut idle = POLL_INTERVAL_MIN;
    let mut failing = Duration::ZERO;
    loop {
        if rt.draining.is_cancelled() {
            return;
        }
        let free = rt.reservations.available_permits();
        if free == 0 {
            tokio::select! {
                permit = rt.reservations.acquire() => { drop(permit); continue }
                _ = rt.draining.cancelled() => return,
            }
        }
        let queues = rt.consumed_queues();
        match rt.broker.fetch(&queues, free).await {
            Ok(fetched) => {
                rt.metrics.broker_reachable(true);
                if !failing.is_zero() {
                    tracing::info!("broker reachable again; consuming resumed");
                    failing = Duration::ZERO;
                    rt.reconnected.notify_one();
                }
                for dead in &fetched.dead_lettered {
                    rt.counters
                        .dead_lettered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(queue = %dead.queue, reason = %dead.reason, "moved an element that is not a kombu message to the dead-letter list");
                }
                if fetched.deliveries.is_empty() {
                    pause(&rt, idle).await;
                    idle = (idle * 2).min(POLL_INTERVAL_MAX);
                    continue;
                }
                idle = POLL_INTERVAL_MIN;
                for delivery in fetched.deliveries {
                    let permit = rt.reservations.clone().try_acquire_owned().expect(
                        "only the fetch loop takes reservations, and it asked for free ones",
                    );
                    rt.hold(&delivery.delivery_tag);
                    let rt2 = rt.clone();
                    rt.tracker.spawn(async move {
                        processor::dispatch(rt2, delivery, permit).await;
                    });
                }
            }
            Err(e) => {
                rt.metrics.broker_reachable(false);
                failing = (failing * 2).clamp(Duration::from_millis(100), RECONNECT_BACKOFF_MAX);
                tracing::warn!(error = %e, retry_in_ms = failing.as_millis() as u64, "fetch failed; retrying");
                pause(&rt, failing).await;
            }
        }
    }
}

async fn pause(rt: &Runtime, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = rt.draining.cancelled() => {}
    }
}

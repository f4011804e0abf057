//! The fetch loop on an SQS broker (see [`crate::sqs`] for the SQS side the runtime holds): one
//! `ReceiveMessage` at a time (up to the free reservations, at most 10), long polling
//! `wait_time_seconds`, then `polling_interval` after an empty poll, as kombu does. A receive
//! still in flight at shutdown is let finish and what it got is made visible again.

use std::sync::Arc;
use std::time::Duration;

use celeriac_broker_bridge::sqs::SQS_MAX_MESSAGES;

use crate::message::processor;
use crate::runtime::Runtime;
use crate::sqs::{dead_letter, SqsSide};

const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The fetch loop on SQS; runs until the worker starts draining.
pub(crate) async fn fetch_loop(rt: Arc<Runtime>, sqs: Arc<SqsSide>) {
    let mut failing = Duration::ZERO;
    let mut next = 0usize;
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
        // The reserved-bytes budget: SQS cannot bound a receive in bytes, so one receive (at most
        // 10 messages) may go past it; nothing more is received until there is room again.
        if rt.reserved_bytes().room().is_none() {
            tokio::select! {
                _ = rt.reserved_bytes().wait_for_room() => continue,
                _ = rt.draining().cancelled() => return,
            }
        }
        let queues = rt.consumed_queues();
        if queues.is_empty() {
            pause(
                &rt,
                sqs.broker
                    .options()
                    .polling_interval
                    .max(Duration::from_millis(100)),
            )
            .await;
            continue;
        }
        let queue = queues[next % queues.len()].clone();
        next = next.wrapping_add(1);
        // Bounded before the cast: with no prefetch limit `free` is far past u32.
        let max = free.min(SQS_MAX_MESSAGES as usize) as u32;
        match sqs.broker.receive(&queue, max, None).await {
            Ok(received) => {
                rt.metrics().broker_reachable(true);
                if !failing.is_zero() {
                    tracing::info!("SQS reachable again; consuming resumed");
                    failing = Duration::ZERO;
                }
                let got = received.deliveries.len() + received.undecodable.len();
                for bad in received.undecodable {
                    rt.count_dead_lettered();
                    tracing::error!(queue = %bad.queue, message_id = %bad.message_id, reason = %bad.reason, "an SQS message is not a kombu message");
                    dead_letter(
                        rt.broker(),
                        &sqs,
                        &bad.queue,
                        bad.body.as_bytes(),
                        &bad.receipt_handle,
                        &bad.reason,
                    )
                    .await;
                }
                for d in received.deliveries {
                    let delivery = d.to_delivery();
                    if rt.draining().is_cancelled() {
                        // Received while shutting down: visible again now for other workers.
                        if let Err(e) = sqs.broker.requeue(&queue, &delivery.delivery_tag).await {
                            tracing::warn!(error = %e, "could not release a message received at shutdown; it returns after the visibility timeout");
                        }
                        continue;
                    }
                    sqs.remember(&delivery.delivery_tag, &queue);
                    processor::spawn_dispatch(&rt, delivery);
                }
                if got == 0 {
                    pause(&rt, sqs.broker.options().polling_interval).await;
                }
            }
            Err(e) => {
                rt.metrics().broker_reachable(false);
                failing = (failing * 2).clamp(Duration::from_millis(100), RECONNECT_BACKOFF_MAX);
                tracing::warn!(error = %e, queue = %queue, retry_in_ms = failing.as_millis() as u64, "SQS receive failed; retrying");
                pause(&rt, failing).await;
            }
        }
    }
}

async fn pause(rt: &Runtime, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = rt.draining().cancelled() => {}
    }
}

//! Amazon SQS as the broker (`CELERY_BROKER_URL=sqs://…`), beside the unchanged Redis path.
//!
//! With an `sqs://` broker, fetching, acking, requeueing, dead-lettering and publishing (retries,
//! canvas) go to SQS through broker-bridge's [`SqsBroker`]; everything else stays on Redis: the
//! result backend, and a Redis transport handle on the result backend's server for celeriac's
//! dead-letter list, the revoked store and rate limits. Events and remote control are off
//! (kombu's SQS transport has no fanout exchange without SNS).
//!
//! * Fetch: one `ReceiveMessage` at a time (up to the free reservations, at most 10), long
//!   polling `wait_time_seconds`, then `polling_interval` after an empty poll, as kombu does.
//!   A delivery's tag is its receipt handle. A receive still in flight at shutdown is let
//!   finish and what it got is made visible again.
//! * Ack = `DeleteMessage`; requeue = `ChangeMessageVisibility` 0.
//! * Dead-letter rule: when the queue has a redrive policy, the message is made visible again
//!   and SQS moves it to the dead-letter queue after `maxReceiveCount` receives (kombu 5.7
//!   also leaves rejected messages to the redrive policy); without one, it is pushed to
//!   celeriac's dead-letter list in Redis (the kombu envelope decoded from the body, or the
//!   body exactly as received when it is not one) with its reason, then deleted from SQS.
//! * Messages held (waiting for an ETA, or running with late acks) have their visibility
//!   extended to `visibility_timeout` every third of it, so a long ETA or a long run is not
//!   delivered again while this worker lives (kombu does not extend; Celery's docs tell users to
//!   raise the timeout instead). When the worker dies, they come back after at most
//!   `visibility_timeout`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_broker_bridge::envelope::Envelope;
use celeriac_broker_bridge::sqs::{SqsBroker, SQS_MAX_MESSAGES};
use celeriac_broker_bridge::transport::{Delivery, Depths};

use tokio_util::sync::CancellationToken;

use crate::message::processor;
use crate::message::retrying::{retrying, Write};
use crate::runtime::Runtime;

const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The SQS broker and the queue of each message held.
pub(crate) struct SqsSide {
    /// The SQS client.
    pub broker: SqsBroker,
    /// Receipt handle → Celery queue, for the messages held now.
    queue_of: Mutex<HashMap<String, String>>,
}

impl SqsSide {
    /// Wrap a connected broker.
    pub(crate) fn new(broker: SqsBroker) -> Self {
        SqsSide {
            broker,
            queue_of: Mutex::default(),
        }
    }

    fn remember(&self, tag: &str, queue: &str) {
        self.queue_of
            .lock()
            .expect("queue_of lock")
            .insert(tag.to_string(), queue.to_string());
    }

    fn forget(&self, tag: &str) -> Option<String> {
        self.queue_of.lock().expect("queue_of lock").remove(tag)
    }
}

/// The fetch loop on SQS; runs until the worker starts draining.
pub(crate) async fn fetch_loop(rt: Arc<Runtime>, sqs: Arc<SqsSide>) {
    let mut failing = Duration::ZERO;
    let mut next = 0usize;
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
        // The reserved-bytes budget: SQS cannot bound a receive in bytes, so one receive (at most
        // 10 messages) may go past it; nothing more is received until there is room again.
        if rt.reserved_bytes.room().is_none() {
            tokio::select! {
                _ = rt.reserved_bytes.wait_for_room() => continue,
                _ = rt.draining.cancelled() => return,
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
        let max = (free as u32).min(SQS_MAX_MESSAGES);
        match sqs.broker.receive(&queue, max, None).await {
            Ok(received) => {
                rt.metrics.broker_reachable(true);
                if !failing.is_zero() {
                    tracing::info!("SQS reachable again; consuming resumed");
                    failing = Duration::ZERO;
                }
                let got = received.deliveries.len() + received.undecodable.len();
                for bad in received.undecodable {
                    rt.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(queue = %bad.queue, message_id = %bad.message_id, reason = %bad.reason, "an SQS message is not a kombu message");
                    dead_letter(
                        &rt,
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
                    if rt.draining.is_cancelled() {
                        // Received while shutting down: visible again now for other workers.
                        if let Err(e) = sqs.broker.requeue(&queue, &delivery.delivery_tag).await {
                            tracing::warn!(error = %e, "could not release a message received at shutdown; it returns after the visibility timeout");
                        }
                        continue;
                    }
                    let permit = rt.reservations.clone().try_acquire_owned().expect(
                        "only the fetch loop takes reservations, and it asked for free ones",
                    );
                    sqs.remember(&delivery.delivery_tag, &queue);
                    rt.hold(&delivery.delivery_tag);
                    let bytes = delivery.raw.len();
                    rt.reserved_bytes.add(bytes);
                    let rt2 = rt.clone();
                    // Boxed, as in the Redis fetch loop: the handling future is large.
                    rt.tracker.spawn(Box::pin(async move {
                        let rt3 = rt2.clone();
                        processor::dispatch(rt2, delivery, permit).await;
                        rt3.reserved_bytes.sub(bytes);
                    }));
                }
                if got == 0 {
                    pause(&rt, sqs.broker.options().polling_interval).await;
                }
            }
            Err(e) => {
                rt.metrics.broker_reachable(false);
                failing = (failing * 2).clamp(Duration::from_millis(100), RECONNECT_BACKOFF_MAX);
                tracing::warn!(error = %e, queue = %queue, retry_in_ms = failing.as_millis() as u64, "SQS receive failed; retrying");
                pause(&rt, failing).await;
            }
        }
    }
}

/// Ack (`DeleteMessage`, retried); on failure the message returns after its visibility timeout.
pub(crate) async fn ack(rt: &Runtime, sqs: &SqsSide, delivery: &Delivery) {
    let tag = &delivery.delivery_tag;
    let queue = sqs.forget(tag).unwrap_or_else(|| delivery.queue.clone());
    let del = || sqs.broker.ack(&queue, tag);
    if let Err(e) = retrying(&rt.metrics, Write::Ack, del).await {
        tracing::error!(queue = %queue, error = %e, "SQS ack failed; the message will be redelivered after the visibility timeout");
    }
    rt.release(tag);
}

/// Requeue (`ChangeMessageVisibility` 0) or dead-letter (see the module's rule) a held message.
pub(crate) async fn reject(
    rt: &Runtime,
    sqs: &SqsSide,
    delivery: &Delivery,
    requeue: bool,
    reason: &str,
) {
    let tag = &delivery.delivery_tag;
    let queue = sqs.forget(tag).unwrap_or_else(|| delivery.queue.clone());
    if requeue {
        if let Err(e) = sqs.broker.requeue(&queue, tag).await {
            tracing::error!(queue = %queue, error = %e, "could not requeue; the message returns after the visibility timeout");
        }
    } else {
        dead_letter(rt, sqs, &queue, &delivery.raw, tag, reason).await;
    }
    rt.release(tag);
}

/// The dead-letter rule: the queue's redrive policy when it has one, else celeriac's Redis
/// dead-letter list and `DeleteMessage`. On any failure the message stays in SQS.
pub(crate) async fn dead_letter(
    rt: &Runtime,
    sqs: &SqsSide,
    queue: &str,
    raw: &[u8],
    tag: &str,
    reason: &str,
) {
    match sqs.broker.redrive_policy(queue).await {
        Ok(Some(policy)) => {
            tracing::warn!(queue, %reason, redrive_policy = %policy, "message left to the queue's redrive policy (dead-letter queue after maxReceiveCount)");
            if let Err(e) = sqs.broker.requeue(queue, tag).await {
                tracing::warn!(queue, error = %e, "could not make the message visible again; it returns after the visibility timeout");
            }
        }
        Ok(None) => match rt.broker.dead_letter_foreign(raw, queue, tag, reason).await {
            Ok(()) => {
                if let Err(e) = sqs.broker.ack(queue, tag).await {
                    tracing::error!(queue, error = %e, "dead-lettered in Redis but not deleted from SQS; it will be delivered again");
                }
            }
            Err(e) => {
                tracing::error!(queue, error = %e, "could not dead-letter the message; it stays in SQS");
            }
        },
        Err(e) => {
            tracing::error!(queue, error = %e, "could not read the queue's redrive policy; the message stays in SQS");
        }
    }
}

/// Publish an envelope to an SQS queue (retries, canvas): the routing key names the queue.
pub(crate) async fn publish(
    sqs: &SqsSide,
    envelope: &Envelope,
    exchange: &str,
    routing_key: &str,
) -> Result<(), String> {
    sqs.broker
        .send(envelope, exchange, routing_key)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Make every given held message visible again (shutdown).
pub(crate) async fn give_back(rt: &Runtime, sqs: &SqsSide, tags: &[String]) {
    let mut restored = 0;
    for tag in tags {
        if let Some(queue) = sqs.forget(tag) {
            match sqs.broker.requeue(&queue, tag).await {
                Ok(()) => restored += 1,
                Err(e) => {
                    tracing::error!(queue = %queue, error = %e, "could not give a held message back; it returns after the visibility timeout")
                }
            }
        }
        rt.release(tag);
    }
    tracing::info!(restored, "gave back held messages to their SQS queues");
}

/// The depth of the worker's SQS queues for `/metrics` and `/keda`: per queue
/// `ApproximateNumberOfMessages` (waiting), summed `ApproximateNumberOfMessagesNotVisible` as
/// unacked (SQS cannot tell ETA-held messages apart: they are in it), and celeriac's Redis
/// dead-letter list.
pub(crate) async fn depths(rt: &Runtime, sqs: &SqsSide) -> anyhow::Result<Depths> {
    let mut queues = Vec::new();
    let mut unacked = 0;
    for queue in &rt.settings.queues {
        let d = sqs.broker.depth(queue).await?;
        queues.push((queue.clone(), d.visible));
        unacked += d.not_visible;
    }
    let dead_letter = rt.broker.depths(&[]).await?.dead_letter;
    Ok(Depths {
        queues,
        unacked,
        eta_held: 0,
        dead_letter,
    })
}

/// Keep the messages held here invisible to other consumers until `stop`.
pub(crate) async fn extend_loop(rt: Arc<Runtime>, sqs: Arc<SqsSide>, stop: CancellationToken) {
    let timeout = sqs.broker.options().visibility_timeout;
    let period = Duration::from_secs(u64::from(timeout) / 3).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        let held: Vec<(String, String)> = {
            let queue_of = sqs.queue_of.lock().expect("queue_of lock");
            rt.held_tags()
                .into_iter()
                .filter_map(|t| queue_of.get(&t).map(|q| (t, q.clone())))
                .collect()
        };
        for (tag, queue) in held {
            if let Err(e) = sqs.broker.change_visibility(&queue, &tag, timeout).await {
                tracing::warn!(queue = %queue, error = %e, "could not extend a held message's visibility");
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

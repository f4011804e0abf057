//! Amazon SQS as the broker (`CELERY_BROKER_URL=sqs://…`), beside the unchanged Redis path.
//!
//! With an `sqs://` broker, fetching, acking, requeueing, dead-lettering and publishing (retries,
//! canvas) go to SQS through broker-bridge's [`SqsBroker`]; everything else stays on Redis: the
//! result backend, and a Redis transport handle on the result backend's server for celeriac's
//! dead-letter list, the revoked store and rate limits. Events and remote control are off
//! (kombu's SQS transport has no fanout exchange without SNS).
//!
//! * Fetch (the loop is [`crate::message::sqs_fetch`]): one `ReceiveMessage` at a time, long
//!   polling. A delivery's tag is its receipt handle.
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_broker_bridge::envelope::Envelope;
use celeriac_broker_bridge::sqs::SqsBroker;
use celeriac_broker_bridge::transport::{Broker, Delivery, Depths};

use tokio_util::sync::CancellationToken;

use crate::message::inflight::InFlight;
use crate::message::retrying::{retrying, Write};
use crate::observe::metrics::Metrics;

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

    /// Remember that the message `tag` was received from `queue`.
    pub(crate) fn remember(&self, tag: &str, queue: &str) {
        self.queue_of
            .lock()
            .expect("queue_of lock")
            .insert(tag.to_string(), queue.to_string());
    }

    fn forget(&self, tag: &str) -> Option<String> {
        self.queue_of.lock().expect("queue_of lock").remove(tag)
    }
}

/// Ack (`DeleteMessage`, retried with [`retrying`], which reports to `metrics`) and stop holding
/// the message in `inflight`; on failure the message returns after its visibility timeout.
pub(crate) async fn ack(
    metrics: &Metrics,
    inflight: &InFlight,
    sqs: &SqsSide,
    delivery: &Delivery,
) {
    let tag = &delivery.delivery_tag;
    let queue = sqs.forget(tag).unwrap_or_else(|| delivery.queue.clone());
    let del = || sqs.broker.ack(&queue, tag);
    if let Err(e) = retrying(metrics, Write::Ack, del).await {
        tracing::error!(queue = %queue, error = %e, "SQS ack failed; the message will be redelivered after the visibility timeout");
    }
    inflight.release(tag);
}

/// Requeue (`ChangeMessageVisibility` 0) or dead-letter (see the module's rule, `redis`: as for
/// [`dead_letter`]) a held message, and stop holding it in `inflight`.
pub(crate) async fn reject(
    redis: &Broker,
    inflight: &InFlight,
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
        dead_letter(redis, sqs, &queue, &delivery.raw, tag, reason).await;
    }
    inflight.release(tag);
}

/// The dead-letter rule: the queue's redrive policy when it has one, else celeriac's Redis
/// dead-letter list (on `redis`, the transport handle on the result backend's server) and
/// `DeleteMessage`. On any failure the message stays in SQS.
pub(crate) async fn dead_letter(
    redis: &Broker,
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
        Ok(None) => match redis.dead_letter_foreign(raw, queue, tag, reason).await {
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

/// Make every given held message visible again and stop holding it in `inflight` (shutdown).
pub(crate) async fn give_back(inflight: &InFlight, sqs: &SqsSide, tags: &[String]) {
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
        inflight.release(tag);
    }
    tracing::info!(restored, "gave back held messages to their SQS queues");
}

/// The depth of the worker's SQS queues for `/metrics` and `/keda`: per queue
/// `ApproximateNumberOfMessages` (waiting), summed `ApproximateNumberOfMessagesNotVisible` as
/// unacked (SQS cannot tell ETA-held messages apart: they are in it), and celeriac's Redis
/// dead-letter list.
pub(crate) async fn depths(
    sqs: &SqsSide,
    redis: &Broker,
    queues: &[String],
) -> anyhow::Result<Depths> {
    let mut waiting = Vec::new();
    let mut unacked = 0;
    for queue in queues {
        let d = sqs.broker.depth(queue).await?;
        waiting.push((queue.clone(), d.visible));
        unacked += d.not_visible;
    }
    let dead_letter = redis.depths(&[]).await?.dead_letter;
    Ok(Depths {
        queues: waiting,
        unacked,
        eta_held: 0,
        dead_letter,
    })
}

/// Keep the messages held here (of those `held` names) invisible to other consumers until
/// `stop`.
pub(crate) async fn extend_loop(
    sqs: Arc<SqsSide>,
    held: impl Fn() -> Vec<String>,
    stop: CancellationToken,
) {
    let timeout = sqs.broker.options().visibility_timeout;
    let period = Duration::from_secs(u64::from(timeout) / 3).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        let held: Vec<(String, String)> = {
            let queue_of = sqs.queue_of.lock().expect("queue_of lock");
            held()
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

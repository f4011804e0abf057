//! Messages the worker cannot run: moved intact to the dead-letter list, or handed to another queue.

use celeriac_broker_bridge::transport::Delivery;

use crate::config::DeadLetterPolicy;
use crate::runtime::Runtime;

/// Apply the policy to `delivery`; the message is removed from `unacked` in the same atomic step.
/// Only unknown task names may be requeued; a message that cannot be decoded always goes to the
/// dead-letter list (no other worker could run it either).
pub(crate) async fn dispose(rt: &Runtime, delivery: &Delivery, reason: &str, decodable: bool) {
    rt.count_dead_lettered();
    if let Some(sqs) = rt.sqs() {
        tracing::error!(queue = %delivery.queue, %reason, "dead-lettering an SQS message");
        crate::sqs::dead_letter(
            rt.broker(),
            sqs,
            &delivery.queue,
            &delivery.raw,
            &delivery.delivery_tag,
            reason,
        )
        .await;
        return rt.release(&delivery.delivery_tag);
    }
    let result = match (&rt.settings().dead_letter_policy, decodable) {
        (DeadLetterPolicy::Requeue(queue), true) => {
            tracing::warn!(queue = %delivery.queue, target = %queue, delivery_tag = %delivery.delivery_tag, %reason, "handing message to another queue");
            rt.broker().move_to(delivery, queue, reason).await
        }
        _ => {
            tracing::error!(queue = %delivery.queue, delivery_tag = %delivery.delivery_tag, %reason, "moving message to the dead-letter list");
            rt.broker().dead_letter(delivery, reason).await
        }
    };
    if let Err(e) = result {
        tracing::error!(delivery_tag = %delivery.delivery_tag, error = %e, "could not dead-letter the message; it stays unacked and will be restored after the visibility timeout");
    }
    rt.release(&delivery.delivery_tag);
}

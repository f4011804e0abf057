//! Retries as Celery does them: a new message with the same task id, `retries + 1` and an ETA,
//! published where the original came from; RETRY stored; FAILURE once `max_retries` is reached.

use std::sync::atomic::Ordering;
use std::time::Duration;

use celeriac_broker_bridge::codec::{EncodeOptions, TaskMessage, WireTime};
use celeriac_broker_bridge::transport::Delivery;
use chrono::Utc;

use crate::registry::RegisteredTask;
use crate::results;
use crate::runtime::Runtime;
use crate::task::{PyException, RetryRequest};

/// Handle a task's retry request (the message itself is settled by the caller as usual).
/// `Err(exc)`: no retry happens — retries are exhausted, or the retry could not be published —
/// and the run failed with `exc` (as in Celery, where `self.retry()` then raises); the caller
/// stores and reports that failure.
pub async fn retry(
    rt: &Runtime,
    delivery: &Delivery,
    msg: &TaskMessage,
    task: &RegisteredTask,
    request: RetryRequest,
    ignore_result: bool,
) -> Result<(), PyException> {
    let store_errors = !ignore_result || rt.settings.task_store_errors_even_if_ignored;
    let max_retries = request.max_retries.or(task.options.max_retries);
    if max_retries.is_some_and(|max| msg.retries >= i64::from(max)) {
        let exc = request.exc.unwrap_or_else(|| {
            PyException::in_module(
                "celery.exceptions",
                "MaxRetriesExceededError",
                format!(
                    "Can't retry {}[{}] args:{} kwargs:{}",
                    msg.task,
                    msg.id,
                    serde_json::Value::Array(msg.args.clone()),
                    serde_json::Value::Object(msg.kwargs.clone())
                ),
            )
        });
        tracing::warn!(retries = msg.retries, exception = %exc, "retries exhausted");
        return Err(exc);
    }
    let delay = request
        .countdown
        .unwrap_or(task.options.default_retry_delay);
    let eta = match request.eta {
        Some(eta) => eta,
        // As Python's `now + timedelta(seconds=countdown)`, a countdown past the calendar fails.
        None => chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .ok_or_else(|| PyException::new("OverflowError", "date value out of range"))?,
    };
    let next = next_attempt(msg, eta);
    let opts = EncodeOptions {
        exchange: delivery.exchange.clone(),
        routing_key: delivery.routing_key.clone(),
        now: Utc::now(),
    };
    let envelope = next
        .to_envelope_as(&opts, &rt.signing.tasks)
        .map_err(|e| PyException::new("RuntimeError", format!("could not sign the retry: {e}")))?;
    let publish = || async {
        match &rt.sqs {
            Some(sqs) => {
                crate::sqs::publish(sqs, &envelope, &delivery.exchange, &delivery.routing_key).await
            }
            None => rt
                .broker
                .publish_once(&envelope, &delivery.exchange, &delivery.routing_key)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    };
    if let Err(e) =
        crate::retrying::retrying(&rt.metrics, crate::retrying::Write::Retry, publish).await
    {
        tracing::error!(error = %e, "could not publish the retry");
        return Err(PyException::new(
            "RuntimeError",
            format!("could not publish the retry: {e}"),
        ));
    }
    rt.counters.retried.fetch_add(1, Ordering::Relaxed);
    let exc = request.exc.unwrap_or_else(|| {
        PyException::in_module(
            "celery.exceptions",
            "Retry",
            format!("Retry in {}s", humanize(eta - Utc::now())),
        )
    });
    tracing::info!(retries = next.retries, eta = %eta.to_rfc3339(), "task retry published");
    if store_errors {
        results::store_retry(rt, msg, &exc).await;
    }
    Ok(())
}

/// The message of the next attempt: same id, args and options; `retries + 1`; the new ETA;
/// `parent_id` kept, or this task's own id when it had none (as Celery).
pub fn next_attempt(msg: &TaskMessage, eta: chrono::DateTime<Utc>) -> TaskMessage {
    let mut next = msg.clone();
    next.retries = msg.retries.saturating_add(1);
    next.eta = Some(WireTime::from_utc(eta));
    if next.parent_id.is_none() {
        next.parent_id = Some(msg.id.clone());
    }
    next
}

fn humanize(d: chrono::Duration) -> u64 {
    Duration::from_millis(d.num_milliseconds().max(0) as u64)
        .as_secs_f64()
        .round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_attempt_saturates_the_retry_count() {
        let mut msg = TaskMessage::new("id", "t", vec![], serde_json::Map::new());
        msg.retries = i64::MAX;
        let next = next_attempt(&msg, Utc::now());
        assert_eq!(next.retries, i64::MAX);
        assert_eq!(next.parent_id.as_deref(), Some("id"));
    }
}

//! How a late-acked message leaves the worker once its run is over, as Celery's
//! `Request.acknowledge` / `Request.reject`: acked, requeued (reject with requeue), or rejected
//! without requeue — which kombu's Redis transport drops, and celeriac moves intact to the
//! dead-letter list instead (like a dead-letter exchange on RabbitMQ). Each rejection sends
//! `task-rejected` (`uuid`, `requeue`).

use celeriac_broker_bridge::transport::Delivery;

use crate::config::Settings;
use crate::runtime::Runtime;
use crate::task_api::{PyException, TaskOptions};

/// What becomes of the message after the run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Settle {
    /// Ack it.
    Ack,
    /// Reject it: back to its queue (`requeue`) or to the dead-letter list with `reason`.
    Reject {
        /// Back to the queue instead of the dead-letter list.
        requeue: bool,
        /// Why (the dead-letter reason).
        reason: String,
    },
}

/// The ack rules of one task: Celery's `acks_late`, `acks_on_failure_or_timeout` and
/// `reject_on_worker_lost`, each from the task's options, else the worker's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AckPolicy {
    /// Ack after the run (else before it, and nothing is left to settle).
    pub acks_late: bool,
    /// With late acks, ack failed and timed-out runs (else reject them without requeue).
    pub acks_on_failure_or_timeout: bool,
    /// With late acks, requeue a run whose process was lost (`WorkerLostError`).
    pub reject_on_worker_lost: bool,
}

impl AckPolicy {
    /// The task's options first, then the settings.
    pub(crate) fn resolve(options: &TaskOptions, settings: &Settings) -> Self {
        AckPolicy {
            acks_late: options.acks_late.unwrap_or(settings.task_acks_late),
            acks_on_failure_or_timeout: options
                .acks_on_failure_or_timeout
                .unwrap_or(settings.task_acks_on_failure_or_timeout),
            reject_on_worker_lost: options
                .reject_on_worker_lost
                .unwrap_or(settings.task_reject_on_worker_lost),
        }
    }

    /// Whether a failure with `exc` requeues the message instead of being stored (Celery:
    /// `acks_late and reject_on_worker_lost and isinstance(exc, WorkerLostError)`).
    pub(crate) fn requeues_lost_run(&self, exc: &PyException) -> bool {
        self.acks_late && self.reject_on_worker_lost && is_worker_lost(exc)
    }

    /// What a failed (or timed-out) run does with its message.
    pub(crate) fn after_failure(&self, exc: &PyException) -> Settle {
        if self.requeues_lost_run(exc) {
            Settle::Reject {
                requeue: true,
                reason: format!("worker lost: {exc}"),
            }
        } else if self.acks_on_failure_or_timeout {
            Settle::Ack
        } else {
            Settle::Reject {
                requeue: false,
                reason: format!("task failed (task_acks_on_failure_or_timeout off): {exc}"),
            }
        }
    }
}

/// Celery's `billiard.exceptions.WorkerLostError`.
pub(crate) fn is_worker_lost(exc: &PyException) -> bool {
    exc.exc_type == "WorkerLostError"
        && matches!(
            exc.exc_module.as_str(),
            "billiard.exceptions" | "celery.exceptions"
        )
}

/// Reject a held message: requeue it (back of its queue, `redelivered`) or move it intact to the
/// dead-letter list with `reason` (the caller reports `task-rejected`).
pub(crate) async fn reject(rt: &Runtime, delivery: &Delivery, requeue: bool, reason: &str) {
    if let Some(sqs) = rt.sqs() {
        tracing::warn!(%reason, requeue, "task rejected");
        return crate::sqs::reject(rt.broker(), rt.inflight(), sqs, delivery, requeue, reason)
            .await;
    }
    let tag = &delivery.delivery_tag;
    let result = if requeue {
        tracing::warn!(delivery_tag = %tag, %reason, "task rejected; message requeued");
        rt.broker().requeue(delivery).await
    } else {
        tracing::warn!(delivery_tag = %tag, %reason, "task rejected; message moved to the dead-letter list");
        rt.count_dead_lettered();
        rt.broker().dead_letter(delivery, reason).await
    };
    match result {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(delivery_tag = %tag, "the rejected message was no longer held here")
        }
        Err(e) => {
            tracing::error!(delivery_tag = %tag, error = %e, "could not reject the message; it stays unacked and is restored after the visibility timeout")
        }
    }
    rt.release(tag);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(acks_on_failure_or_timeout: bool, reject_on_worker_lost: bool) -> AckPolicy {
        AckPolicy {
            acks_late: true,
            acks_on_failure_or_timeout,
            reject_on_worker_lost,
        }
    }

    #[test]
    fn failures_ack_or_reject_as_celery() {
        let value_error = PyException::new("ValueError", "x");
        let lost = PyException::in_module(
            "billiard.exceptions",
            "WorkerLostError",
            "signal 9 (SIGKILL)",
        );
        assert_eq!(policy(true, false).after_failure(&value_error), Settle::Ack);
        assert!(matches!(
            policy(false, false).after_failure(&value_error),
            Settle::Reject { requeue: false, .. }
        ));
        assert_eq!(policy(true, false).after_failure(&lost), Settle::Ack);
        assert!(matches!(
            policy(true, true).after_failure(&lost),
            Settle::Reject { requeue: true, .. }
        ));
        assert!(matches!(
            policy(false, true).after_failure(&value_error),
            Settle::Reject { requeue: false, .. }
        ));
        let early = AckPolicy {
            acks_late: false,
            ..policy(true, true)
        };
        assert!(!early.requeues_lost_run(&lost));
    }

    #[test]
    fn options_win_over_settings() {
        let settings = Settings {
            task_acks_late: true,
            task_acks_on_failure_or_timeout: true,
            ..Settings::default()
        };
        let options = TaskOptions {
            acks_on_failure_or_timeout: Some(false),
            reject_on_worker_lost: Some(true),
            ..TaskOptions::default()
        };
        assert_eq!(AckPolicy::resolve(&options, &settings), policy(false, true));
        assert_eq!(
            AckPolicy::resolve(&TaskOptions::default(), &settings),
            policy(true, false)
        );
    }
}

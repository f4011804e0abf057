//! One message from reservation to ack: decode, check, hold for its ETA, run, store the outcome.
//!
//! Everything derived from the message (limits, ETA, expiry, the task's context) is computed
//! before an early ack, and a panic anywhere in the handling of a message is caught: the message
//! is dead-lettered with the panic text as reason when it was not acked yet, and a FAILURE is
//! stored for its id when no outcome was — never an ack with nothing stored.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use celeriac_broker_bridge::codec::{decode, DecodeError, DecodeOptions, TaskMessage};
use celeriac_broker_bridge::transport::Delivery;
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::message::job::{panic_text, Decoded, Job, Progress};
use crate::observe::lifecycle::TaskRef;
use crate::runtime::Runtime;
use crate::task_api::PyException;
use crate::{message::dead_letter, message::results};

/// Start handling a fetched message on the runtime's task tracker: it takes a free reservation
/// slot (the fetch loops ask only for as many messages as there are free slots), is held, and
/// counts against the reserved bytes until it is handled.
pub(crate) fn spawn_dispatch(rt: &Arc<Runtime>, delivery: Delivery) {
    let permit = rt
        .reservations()
        .clone()
        .try_acquire_owned()
        .expect("only the fetch loop takes reservations, and it asked for free ones");
    rt.hold(&delivery.delivery_tag);
    let bytes = delivery.raw.len();
    rt.reserved_bytes().add(bytes);
    let handling = rt.clone();
    // Boxed: tokio moves a spawned future (and its finished stage) by value several times. The
    // rare paths (undecodable, unregistered, panicked, revoked, retried, rejected, canvas steps)
    // are boxed where they are awaited, and so is the decoded message (~1 KB, which each level
    // of futures would otherwise hold a copy of), so this future stays small (5.5 KB in a debug
    // build, `-Zprint-type-sizes`; 12 KB before the message was boxed): less to copy and to
    // fault in for each message.
    rt.tracker().spawn(Box::pin(async move {
        dispatch(handling.clone(), delivery, permit).await;
        handling.reserved_bytes().sub(bytes);
    }));
}

/// Handle one fetched message. `reservation` is released when the message leaves this worker's
/// hands (or when it starts waiting for a far ETA).
async fn dispatch(rt: Arc<Runtime>, delivery: Delivery, reservation: OwnedSemaphorePermit) {
    let progress = Progress::default();
    let handled = AssertUnwindSafe(decode_and_handle(&rt, &delivery, reservation, &progress))
        .catch_unwind()
        .await;
    if let Err(payload) = handled {
        Box::pin(panicked(
            &rt,
            &delivery,
            &progress,
            &panic_text(payload.as_ref()),
        ))
        .await;
    }
}

async fn decode_and_handle(
    rt: &Arc<Runtime>,
    delivery: &Delivery,
    reservation: OwnedSemaphorePermit,
    progress: &Progress,
) {
    let msg = match decode(&delivery.raw, &decode_options(rt)) {
        Ok(msg) => Box::new(msg),
        Err(err) => {
            Box::pin(undecodable(rt, delivery, &err)).await;
            return;
        }
    };
    let _ = progress.task.set(Decoded::of(&msg));
    let span = crate::observe::telemetry::task_span(&msg);
    handle(rt, delivery, msg, reservation, progress)
        .instrument(span)
        .await;
}

/// What to do after a panic, given what had been done.
#[derive(Debug, PartialEq, Eq)]
struct AfterPanic {
    /// Store a FAILURE for the task id.
    store_failure: bool,
    /// Move the message, intact, to the dead-letter list.
    dead_letter: bool,
}

fn after_panic(progress: &Progress) -> AfterPanic {
    let acked = progress.acked.load(Ordering::Acquire);
    let recorded = progress.recorded.load(Ordering::Acquire);
    AfterPanic {
        store_failure: !recorded && progress.task.get().is_some(),
        dead_letter: !acked,
    }
}

/// A panic while `delivery` was handled: a failure reported (the lifecycle hooks) and stored when
/// no outcome was, the message dead-lettered when it was not acked; the worker goes on.
async fn panicked(rt: &Runtime, delivery: &Delivery, progress: &Progress, text: &str) {
    let tag = &delivery.delivery_tag;
    let after = after_panic(progress);
    tracing::error!(delivery_tag = %tag, panic = %text, store_failure = after.store_failure, dead_letter = after.dead_letter, "panic while handling a message");
    let reason = format!("worker panicked while handling the message: {text}");
    if after.dead_letter {
        dead_letter::dispose(rt, delivery, &reason, false).await;
    }
    if let (true, Some(task)) = (after.store_failure, progress.task.get()) {
        let exc = PyException::new("RuntimeError", reason);
        rt.hooks()
            .failed(&task.task_ref(&delivery.queue), &exc, String::new(), None)
            .await;
        results::store_failure(rt, &task.id, None, &exc, Some(rt.hostname())).await;
    }
    if !after.dead_letter {
        rt.release(tag);
    }
}

/// A decoded message's walk: received; refused if expired or revoked; held until its ETA; its
/// rate-limit turn and an execution slot awaited; checked for revocation once more; run and
/// settled.
async fn handle(
    rt: &Arc<Runtime>,
    delivery: &Delivery,
    msg: Box<TaskMessage>,
    reservation: OwnedSemaphorePermit,
    progress: &Progress,
) {
    let Some(task) = rt.registry().get(&msg.task).cloned() else {
        Box::pin(unregistered(rt, delivery, &msg)).await;
        return;
    };
    let mut job = Job::receive(rt, delivery, msg, task, reservation, progress).await;
    if job.refused().await || !job.wait_for_eta().await || !job.wait_turn().await {
        return;
    }
    let Some(slot) = job.slot().await else {
        return;
    };
    if job.revoked().await {
        return;
    }
    job.execute(slot).await;
}

fn decode_options(rt: &Runtime) -> DecodeOptions {
    DecodeOptions {
        accept: results::accepted_content_types(&rt.settings().accept_content),
        max_bytes: usize::try_from(rt.settings().max_message_bytes).unwrap_or(usize::MAX),
        verifier: rt.signing().verifier.clone(),
    }
}

async fn undecodable(rt: &Runtime, delivery: &Delivery, err: &DecodeError) {
    let reason = err.to_string();
    // When only signed messages are accepted, a refused message's headers are nobody's word:
    // no result is written for its id, or anyone could fail anyone's task.
    let trusted_ids = rt.signing().unsigned_tasks;
    if let (true, true, Some(id), Some(_)) = (trusted_ids, err.is_refused(), err.id(), rt.backend())
    {
        let exc = PyException::in_module("kombu.exceptions", "ContentDisallowed", reason.clone());
        results::store_failure(rt, id, None, &exc, None).await;
    }
    dead_letter::dispose(rt, delivery, &reason, false).await;
}

async fn unregistered(rt: &Runtime, delivery: &Delivery, msg: &TaskMessage) {
    let reason = format!("Received unregistered task of type '{}'", msg.task);
    // `task-failed` with `NotRegistered('<name>')`.
    let raised = PyException::in_module("celery.exceptions", "NotRegistered", msg.task.clone());
    let task = TaskRef::of(msg, &delivery.queue);
    rt.hooks().failed(&task, &raised, String::new(), None).await;
    if rt.settings().dead_letter_policy == crate::config::DeadLetterPolicy::DeadLetter {
        // As a Python worker does, so callers waiting on the result fail fast instead of hanging.
        let exc = PyException::in_module(
            "celery.exceptions",
            "NotRegistered",
            format!("'{}'", msg.task),
        );
        results::store_failure(rt, &msg.id, Some(msg), &exc, None).await;
    }
    dead_letter::dispose(rt, delivery, &reason, true).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(id: bool, acked: bool, recorded: bool) -> AfterPanic {
        let p = Progress::default();
        if id {
            let decoded = Decoded {
                id: "id".into(),
                name: "t".into(),
                retries: 0,
            };
            assert!(p.task.set(decoded).is_ok());
        }
        p.acked.store(acked, Ordering::Release);
        p.recorded.store(recorded, Ordering::Release);
        after_panic(&p)
    }

    #[test]
    fn a_panic_never_leaves_an_ack_with_nothing_stored() {
        let both = AfterPanic {
            store_failure: true,
            dead_letter: true,
        };
        // Not decoded: kept in the dead-letter list (no id to store under).
        assert_eq!(
            after(false, false, false),
            AfterPanic {
                store_failure: false,
                dead_letter: true
            }
        );
        // Before any ack: kept, and the caller gets a FAILURE.
        assert_eq!(after(true, false, false), both);
        // Early-acked, the run's outcome not recorded: FAILURE stored.
        assert_eq!(
            after(true, true, false),
            AfterPanic {
                store_failure: true,
                dead_letter: false
            }
        );
        // Outcome recorded but not settled (late ack): kept, the outcome left as it is.
        assert_eq!(
            after(true, false, true),
            AfterPanic {
                store_failure: false,
                dead_letter: true
            }
        );
        // All done: nothing more.
        assert_eq!(
            after(true, true, true),
            AfterPanic {
                store_failure: false,
                dead_letter: false
            }
        );
    }
}

//! One message from reservation to ack: decode, check, hold for its ETA, run, store the outcome.
//!
//! Everything derived from the message (limits, ETA, expiry, the task's context) is computed
//! before an early ack, and a panic anywhere in the handling of a message is caught: the message
//! is dead-lettered with the panic text as reason when it was not acked yet, and a FAILURE is
//! stored for its id when no outcome was — never an ack with nothing stored.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use celeriac_broker_bridge::codec::{decode, DecodeError, DecodeOptions, TaskMessage};
use celeriac_broker_bridge::envelope::trailing_properties;
use celeriac_broker_bridge::transport::Delivery;
use chrono::Utc;
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::canvas;
use crate::message::dead_letter;
use crate::message::results;
use crate::message::retry;
use crate::message::revoked;
use crate::message::scheduled;
use crate::message::settle::{self, AckPolicy, Settle};
use crate::message::time_limits;
use crate::message::tracked::{Stage, Tracked};
use crate::observe::events;
use crate::runtime::{Running, Runtime};
use crate::task_api::registry::RegisteredTask;
use crate::task_api::{DeliveryInfo, PyException, TaskContext, TaskError};

/// Handle one fetched message. `reservation` is released when the message leaves this worker's
/// hands (or when it starts waiting for a far ETA).
pub(crate) async fn dispatch(
    rt: Arc<Runtime>,
    delivery: Delivery,
    reservation: OwnedSemaphorePermit,
) {
    let progress = Progress::default();
    let handled = AssertUnwindSafe(decode_and_handle(&rt, &delivery, reservation, &progress))
        .catch_unwind()
        .await;
    if let Err(payload) = handled {
        panicked(&rt, &delivery, &progress, &panic_text(payload.as_ref())).await;
    }
}

async fn decode_and_handle(
    rt: &Arc<Runtime>,
    delivery: &Delivery,
    reservation: OwnedSemaphorePermit,
    progress: &Progress,
) {
    let msg = match decode(&delivery.raw, &decode_options(rt)) {
        Ok(msg) => msg,
        Err(err) => {
            undecodable(rt, delivery, &err).await;
            return;
        }
    };
    let _ = progress.id.set(msg.id.clone());
    let span = crate::observe::telemetry::task_span(&msg);
    handle(rt, delivery, msg, reservation, progress)
        .instrument(span)
        .await;
}

/// What has become of one message so far; read when its handling panics.
#[derive(Default)]
struct Progress {
    /// The task id, once decoded.
    id: OnceLock<String>,
    /// The message was acked (early, or settled).
    acked: AtomicBool,
    /// The run's outcome is recorded (stored, or deliberately not: an ignored result).
    recorded: AtomicBool,
}

/// What to do after a panic, given what had been done.
#[derive(Debug, PartialEq, Eq)]
struct AfterPanic {
    /// Store a FAILURE for the task id.
    store_failure: bool,
    /// Move the message, intact, to the dead-letter list.
    dead_letter: bool,
}

impl Progress {
    fn after_panic(&self) -> AfterPanic {
        let acked = self.acked.load(Ordering::Acquire);
        let recorded = self.recorded.load(Ordering::Acquire);
        AfterPanic {
            store_failure: !recorded && self.id.get().is_some(),
            dead_letter: !acked,
        }
    }
}

/// A panic while `delivery` was handled: a FAILURE stored when no outcome was, the message
/// dead-lettered when it was not acked; the worker goes on.
async fn panicked(rt: &Runtime, delivery: &Delivery, progress: &Progress, text: &str) {
    let tag = &delivery.delivery_tag;
    if let Ok(mut running) = rt.running.lock() {
        running.remove(tag);
    }
    let after = progress.after_panic();
    tracing::error!(delivery_tag = %tag, panic = %text, store_failure = after.store_failure, dead_letter = after.dead_letter, "panic while handling a message");
    let reason = format!("worker panicked while handling the message: {text}");
    if after.dead_letter {
        dead_letter::dispose(rt, delivery, &reason, false).await;
    }
    if let (true, Some(id)) = (after.store_failure, progress.id.get()) {
        let exc = PyException::new("RuntimeError", reason);
        events::task_failed(rt, id, events::exception_repr(&exc), String::new()).await;
        results::store_failure(rt, id, None, &exc, Some(&rt.hostname)).await;
    }
    if !after.dead_letter {
        rt.release(tag);
    }
}

async fn handle(
    rt: &Arc<Runtime>,
    delivery: &Delivery,
    msg: TaskMessage,
    reservation: OwnedSemaphorePermit,
    progress: &Progress,
) {
    let Some(task) = rt.registry.get(&msg.task).cloned() else {
        unregistered(rt, delivery, &msg).await;
        return;
    };
    tracing::info!(queue = %delivery.queue, "task received");
    let _tracked = Tracked::received(rt, delivery, &msg);
    events::task_received(rt, &msg).await;
    rt.metrics.task_received(&msg.task, &delivery.queue);
    if revoke_if_expired(rt, delivery, &msg).await
        || revoked::reject_if_revoked(rt, delivery, &msg).await
    {
        return;
    }
    let mut reservation = Some(reservation);
    if let Some(eta) = msg.eta.as_ref().map(|t| t.utc) {
        if eta > Utc::now() {
            rt.tracked
                .set_stage(&delivery.delivery_tag, Stage::Scheduled(eta));
            match scheduled::wait_for_eta(rt, eta, delivery.raw.len(), &mut reservation).await {
                scheduled::Waited::Due => {
                    rt.tracked
                        .set_stage(&delivery.delivery_tag, Stage::Reserved);
                    if revoke_if_expired(rt, delivery, &msg).await
                        || revoked::reject_if_revoked(rt, delivery, &msg).await
                    {
                        return;
                    }
                }
                // Draining: the message stays held and is restored at the end of the shutdown.
                scheduled::Waited::Draining => return,
            }
        }
    }
    // Rate limit: the message waits reserved, holding no execution slot.
    if !crate::message::rate_limit::wait_turn(rt, &msg.task, &task.options).await {
        return;
    }
    let slot = tokio::select! {
        biased;
        _ = rt.draining.cancelled() => return,
        slot = if task.handler.on_threads() { &rt.slots } else { &rt.async_slots }.clone().acquire_owned() => slot.expect("the slot semaphore is never closed"),
    };
    if revoked::reject_if_revoked(rt, delivery, &msg).await {
        return;
    }
    execute(rt, delivery, msg, task, slot, reservation, progress).await;
}

fn decode_options(rt: &Runtime) -> DecodeOptions {
    DecodeOptions {
        accept: results::accepted_content_types(&rt.settings.accept_content),
        max_bytes: usize::try_from(rt.settings.max_message_bytes).unwrap_or(usize::MAX),
        verifier: rt.signing.verifier.clone(),
    }
}

async fn undecodable(rt: &Runtime, delivery: &Delivery, err: &DecodeError) {
    let reason = err.to_string();
    // When only signed messages are accepted, a refused message's headers are nobody's word:
    // no result is written for its id, or anyone could fail anyone's task.
    let trusted_ids = rt.signing.unsigned_tasks;
    if let (true, true, Some(id), Some(_)) = (trusted_ids, err.is_refused(), err.id(), &rt.backend)
    {
        let exc = PyException::in_module("kombu.exceptions", "ContentDisallowed", reason.clone());
        results::store_failure(rt, id, None, &exc, None).await;
    }
    dead_letter::dispose(rt, delivery, &reason, false).await;
}

async fn unregistered(rt: &Runtime, delivery: &Delivery, msg: &TaskMessage) {
    let reason = format!("Received unregistered task of type '{}'", msg.task);
    let exception = format!("NotRegistered('{}')", msg.task);
    rt.metrics
        .task_failed(&msg.task, &delivery.queue, &exception);
    events::task_failed(rt, &msg.id, exception, String::new()).await;
    if rt.settings.dead_letter_policy == crate::config::DeadLetterPolicy::DeadLetter {
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

/// If the message's `expires` has passed: store REVOKED ("expired"), ack, and return true.
async fn revoke_if_expired(rt: &Runtime, delivery: &Delivery, msg: &TaskMessage) -> bool {
    match msg.expires.as_ref().map(|t| t.utc) {
        Some(expires) if expires <= Utc::now() => {
            tracing::info!("task expired; not run");
            rt.metrics.task_revoked(&msg.task, &delivery.queue);
            results::store_revoked(rt, msg, "expired").await;
            crate::canvas::on_revoked(rt, msg, "expired").await;
            events::task_revoked(rt, &msg.id, false, true).await;
            rt.ack(delivery).await;
            true
        }
        _ => false,
    }
}

/// The envelope's `properties` object as stored (Celery's `request.properties`); empty when the
/// element has none (it was decoded already, so that does not happen for a task run). Read from
/// the trailing `properties` text alone when it parses (kombu writes it last), else from the
/// whole element.
fn properties(raw: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    #[derive(serde::Deserialize)]
    struct Properties {
        properties: serde_json::Map<String, serde_json::Value>,
    }
    if let Some(Ok(map)) = trailing_properties(raw).map(serde_json::from_slice) {
        return map;
    }
    serde_json::from_slice::<Properties>(raw)
        .map(|p| p.properties)
        .unwrap_or_default()
}

async fn execute(
    rt: &Arc<Runtime>,
    delivery: &Delivery,
    msg: TaskMessage,
    task: RegisteredTask,
    slot: OwnedSemaphorePermit,
    reservation: Option<OwnedSemaphorePermit>,
    progress: &Progress,
) {
    let settings = &rt.settings;
    let policy = AckPolicy::resolve(&task.options, settings);
    let acks_late = policy.acks_late;
    let ignore_result = msg
        .ignore_result
        .or(task.options.ignore_result)
        .unwrap_or(settings.task_ignore_result);
    let track_started = task
        .options
        .track_started
        .unwrap_or(settings.task_track_started);
    if ignore_result && !settings.task_store_errors_even_if_ignored {
        progress.recorded.store(true, Ordering::Release);
    }
    // Everything the run needs from the message, before an early ack.
    let limits = time_limits::Limits::resolve(&msg, &task.options, settings);
    let signals = time_limits::Signals::default();
    let ctx = TaskContext {
        id: msg.id.clone(),
        name: msg.task.clone(),
        retries: u32::try_from(msg.retries).unwrap_or(0),
        root_id: msg.root_id.clone(),
        parent_id: msg.parent_id.clone(),
        group: msg.group.clone(),
        queue: delivery.queue.clone(),
        hostname: rt.hostname.clone(),
        headers: msg.extra_headers.clone(),
        args: msg.args.clone(),
        kwargs: msg.kwargs.clone(),
        delivery_info: DeliveryInfo {
            exchange: msg.exchange.clone(),
            routing_key: msg.routing_key.clone(),
            priority: msg.priority,
            redelivered: msg.redelivered,
        },
        eta: msg.eta.clone(),
        expires: msg.expires.clone(),
        properties: properties(&delivery.raw),
        time_limit: limits.hard,
        soft_time_limit: limits.soft,
        replaced_task_nesting: u32::try_from(msg.replaced_task_nesting).unwrap_or(0),
        reply_to: msg.reply_to.clone(),
        correlation_id: msg.correlation_id.clone(),
        chord: msg.chord.clone(),
        group_index: msg.group_index,
        data: rt.registry.data().cloned(),
        time_limits: signals.clone(),
        client: rt.client.as_ref().map(|c| c.for_task(&msg)),
    };
    if !acks_late {
        rt.ack(delivery).await;
        progress.acked.store(true, Ordering::Release);
        rt.tracked.set_acked(&delivery.delivery_tag);
    }
    rt.tracked
        .set_stage(&delivery.delivery_tag, Stage::Active(events::timestamp()));
    events::task_started(rt, &msg.id).await;
    if track_started && !ignore_result {
        results::store_started(rt, &msg).await;
    }
    let started = std::time::Instant::now();
    rt.metrics.task_started(&msg.task, &delivery.queue);
    // The handler is called inside the spawned run: a panic there fails the run (FAILURE stored).
    let handler = task.handler.clone();
    let join = tokio::spawn(async move { handler.call(ctx).await }.in_current_span());
    rt.running.lock().expect("running lock").insert(
        delivery.delivery_tag.clone(),
        Running {
            abort: join.abort_handle(),
            delivery: delivery.clone(),
            acked: !acks_late,
        },
    );
    let outcome = match time_limits::supervise(join, limits, &signals).await {
        time_limits::Supervised::Finished(outcome) => outcome,
        time_limits::Supervised::TimedOut(limit) => Ok(Err(TaskError::Fail(
            time_limits::time_limit_exceeded(limit),
        ))),
        time_limits::Supervised::SoftTimedOut => Ok(Err(time_limits::SoftTimeLimitExceeded.into())),
    };
    // The task's work is done: its slot goes to the next task while this one's outcome is written
    // (still bounded by the reservation, which is held until the end).
    drop(slot);
    let _finishing = Finishing::new(rt, &delivery.delivery_tag);
    rt.running
        .lock()
        .expect("running lock")
        .remove(&delivery.delivery_tag);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        // Terminated by `revoke(terminate=True)`: REVOKED, acked, the worker goes on.
        Err(e) if e.is_cancelled() && !rt.draining.is_cancelled() => {
            terminated(rt, delivery, &msg, acks_late).await;
            return;
        }
        // Stopped by the end of a warm shutdown's grace: the shutdown puts the message back.
        Err(e) if e.is_cancelled() => return,
        Err(e) => Err(TaskError::Fail(PyException::new(
            "RuntimeError",
            format!("task panicked: {}", panic_message(e)),
        ))),
    };
    let elapsed = started.elapsed();
    let runtime_s = elapsed.as_secs_f64();
    let ended = Ended {
        rt,
        msg: &msg,
        queue: &delivery.queue,
        ignore_result,
        runtime_s,
        policy: &policy,
    };
    let settle = match outcome {
        // Canvas: callbacks and the next chain step are published before the result is stored.
        Ok(value) => match canvas::on_success(rt, &msg, &value).await {
            Ok(children) => {
                tracing::info!(runtime_s, "task succeeded");
                rt.metrics
                    .task_succeeded(&msg.task, &delivery.queue, elapsed);
                events::task_succeeded(rt, &msg.id, &value, runtime_s).await;
                if !ignore_result {
                    results::store_success_with_children(rt, &msg, value.clone(), children).await;
                }
                progress.recorded.store(true, Ordering::Release);
                canvas::after_success(rt, &msg, &value).await;
                Settle::Ack
            }
            Err(exc) => ended.failed(&exc).await,
        },
        Err(TaskError::Fail(exc)) => ended.failed(&exc).await,
        Err(TaskError::Replace(sig)) => match canvas::replace(rt, &msg, &sig).await {
            Ok(()) => {
                tracing::info!(runtime_s, replaced_by = %sig.task, "task replaced");
                Settle::Ack
            }
            Err(exc) => ended.failed(&exc).await,
        },
        Err(TaskError::Retry(request)) => {
            let retried = request.clone();
            match retry::retry(rt, delivery, &msg, &task, *request, ignore_result).await {
                Ok(()) => {
                    rt.metrics.task_retried(&msg.task, &delivery.queue);
                    events::task_retried_request(rt, &msg, &retried).await;
                    Settle::Ack
                }
                // Retries exhausted (or the retry could not be sent): the run failed.
                Err(exc) => ended.failed(&exc).await,
            }
        }
        // Celery's `Reject`. Requeued: nothing stored. Not requeued, the task never runs again:
        // Celery 5.7's worker stores a terminal FAILURE (`celery.exceptions.Reject(reason,
        // False)`, with its chord and errbacks) and sends `task-failed`, then rejects the
        // message. An early-acked message is already gone either way.
        Err(TaskError::Reject { reason, requeue }) => {
            tracing::warn!(runtime_s, requeue, %reason, "task rejected its message");
            if !requeue {
                let exc = PyException {
                    exc_type: "Reject".into(),
                    exc_module: "celery.exceptions".into(),
                    args: vec![reason.clone().into(), false.into()],
                };
                ended.failed(&exc).await;
            }
            Settle::Reject { requeue, reason }
        }
    };
    progress.recorded.store(true, Ordering::Release);
    rt.counters.processed.fetch_add(1, Ordering::Relaxed);
    if acks_late {
        if matches!(settle, Settle::Reject { .. }) {
            rt.metrics.task_rejected(&msg.task, &delivery.queue);
        }
        settle::apply(rt, delivery, &msg.id, settle).await;
        progress.acked.store(true, Ordering::Release);
    }
    drop(reservation);
}

/// Marks a message whose run is over as finishing (see [`Runtime::finishing`]) until dropped.
struct Finishing<'a>(&'a Runtime, &'a str);

impl<'a> Finishing<'a> {
    fn new(rt: &'a Runtime, tag: &'a str) -> Self {
        if let Ok(mut f) = rt.finishing.lock() {
            f.insert(tag.to_string());
        }
        Finishing(rt, tag)
    }
}

impl Drop for Finishing<'_> {
    fn drop(&mut self) {
        if let Ok(mut f) = self.0.finishing.lock() {
            f.remove(self.1);
        }
    }
}

/// A finished run, for recording its failure: the run and how its message is settled.
struct Ended<'a> {
    rt: &'a Runtime,
    msg: &'a TaskMessage,
    queue: &'a str,
    ignore_result: bool,
    runtime_s: f64,
    policy: &'a AckPolicy,
}

impl Ended<'_> {
    /// FAILURE stored (unless ignored), then the canvas follow-ups: chord part, chain, errbacks.
    /// A run whose process was lost with late acks and `reject_on_worker_lost` is requeued
    /// instead: nothing stored, no `task-failed` (as Celery). Returns what becomes of the message.
    async fn failed(&self, exc: &PyException) -> Settle {
        let Ended {
            rt,
            msg,
            queue,
            ignore_result,
            runtime_s,
            policy,
        } = *self;
        let settle = policy.after_failure(exc);
        if policy.requeues_lost_run(exc) {
            tracing::warn!(runtime_s, exception = %exc, "task lost its process; requeued");
            return settle;
        }
        tracing::warn!(runtime_s, exception = %exc, "task failed");
        let exception = events::exception_repr(exc);
        rt.metrics.task_failed(&msg.task, queue, &exception);
        crate::observe::telemetry::task_failed(&exc.to_string());
        let tb = results::traceback(msg, &rt.hostname, exc);
        events::task_failed(rt, &msg.id, exception, tb).await;
        if !ignore_result || rt.settings.task_store_errors_even_if_ignored {
            results::store_failure(rt, &msg.id, Some(msg), exc, Some(&rt.hostname)).await;
        }
        canvas::on_failure(rt, msg, exc).await;
        settle
    }
}

/// A running task stopped by `revoke(terminate=True)`.
async fn terminated(rt: &Runtime, delivery: &Delivery, msg: &TaskMessage, acks_late: bool) {
    tracing::info!("task terminated (revoked)");
    rt.metrics.task_revoked(&msg.task, &delivery.queue);
    results::store_revoked(rt, msg, "terminated").await;
    crate::canvas::on_revoked(rt, msg, "terminated").await;
    events::task_revoked(rt, &msg.id, true, false).await;
    rt.counters
        .processed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if acks_late {
        rt.ack(delivery).await;
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => panic_text(payload.as_ref()),
        Err(e) => e.to_string(),
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_the_envelopes_as_stored() {
        let raw = br#"{"body": "W10=", "content-type": "application/json", "headers": {},
            "properties": {"correlation_id": "c1", "app_id": "1234", "priority": 7,
            "delivery_info": {"exchange": "", "routing_key": "celery", "redelivered": true}}}"#;
        let props = properties(raw);
        assert_eq!(props["app_id"], "1234");
        assert_eq!(props["priority"], 7);
        assert_eq!(props["delivery_info"]["redelivered"], true);
        assert_eq!(props.len(), 4);
        assert!(properties(b"not json").is_empty());
        let later = br#"{"properties": {"priority": 7}, "headers": {"properties": {"a": 1}}}"#;
        assert_eq!(properties(later)["priority"], 7);
    }

    fn after(id: bool, acked: bool, recorded: bool) -> AfterPanic {
        let p = Progress::default();
        if id {
            p.id.set("id".into()).unwrap();
        }
        p.acked.store(acked, Ordering::Release);
        p.recorded.store(recorded, Ordering::Release);
        p.after_panic()
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

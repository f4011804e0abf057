//! One task message in this worker's hands — its delivery, the decoded message, the task it
//! names, its reservation and its entry in the in-flight table — and the transitions that move
//! it: received, refused (expired or revoked), held for its ETA, run, and settled (acked,
//! rejected, retried, revoked). Each transition is written once, here; [`crate::message::processor`]
//! walks a message through them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use celeriac_broker_bridge::codec::TaskMessage;
use celeriac_broker_bridge::transport::Delivery;
use chrono::Utc;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::canvas;
use crate::message::inflight::Tracking;
use crate::message::settle::{self, AckPolicy, Settle};
use crate::observe::lifecycle::{Revocation, TaskRef};
use crate::runtime::Runtime;
use crate::task_api::registry::RegisteredTask;
use crate::task_api::{DeliveryInfo, Properties, PyException, TaskContext, TaskError};
use crate::{message::results, message::retry, message::scheduled, message::time_limits};

/// What has become of one message so far; read when its handling panics.
#[derive(Default)]
pub(crate) struct Progress {
    /// The task, once decoded.
    pub(crate) task: OnceLock<Decoded>,
    /// The message was acked (early, or settled).
    pub(crate) acked: AtomicBool,
    /// The run's outcome is recorded (stored, or deliberately not: an ignored result).
    pub(crate) recorded: AtomicBool,
}

/// What a panic's failure is reported about: the task a decoded message carries.
pub(crate) struct Decoded {
    /// The task id.
    pub(crate) id: String,
    /// The task name.
    pub(crate) name: String,
    /// How many times the task was retried before this run.
    pub(crate) retries: i64,
}

impl Decoded {
    pub(crate) fn of(msg: &TaskMessage) -> Self {
        Decoded {
            id: msg.id.clone(),
            name: msg.task.clone(),
            retries: msg.retries,
        }
    }

    /// As the lifecycle hooks see it, taken from `queue`.
    pub(crate) fn task_ref<'a>(&'a self, queue: &'a str) -> TaskRef<'a> {
        TaskRef {
            id: &self.id,
            name: &self.name,
            queue,
            retries: self.retries,
        }
    }
}

/// A decoded message of a registered task, from receipt until it leaves this worker's hands.
pub(crate) struct Job<'a> {
    rt: &'a Arc<Runtime>,
    delivery: &'a Delivery,
    progress: &'a Progress,
    /// Boxed: a message is ~1 KB, and each future that holds it would otherwise hold a copy.
    msg: Box<TaskMessage>,
    task: RegisteredTask,
    /// Released when the message leaves (or while it waits for a far ETA); once an early-acked
    /// run is over, a recording permit instead (see [`Job::pass_on_reservation`]).
    reservation: Option<OwnedSemaphorePermit>,
    policy: AckPolicy,
    tracking: Tracking,
}

/// How the run of a job went, for recording its outcome.
struct Ran {
    /// What the handler returned (`Err`: it failed, asked for a retry, replaced itself ...).
    outcome: Result<Value, TaskError>,
    runtime: Duration,
    /// The result is not stored (`ignore_result`).
    ignore_result: bool,
}

impl<'a> Job<'a> {
    /// Take a decoded message of `task` in hand: tracked (inspect `reserved`) and reported
    /// received.
    pub(crate) async fn receive(
        rt: &'a Arc<Runtime>,
        delivery: &'a Delivery,
        msg: Box<TaskMessage>,
        task: RegisteredTask,
        reservation: OwnedSemaphorePermit,
        progress: &'a Progress,
    ) -> Job<'a> {
        tracing::info!(queue = %delivery.queue, "task received");
        let tracking = rt.inflight().track(delivery, &msg);
        rt.hooks().received(&msg, &delivery.queue).await;
        Job {
            rt,
            delivery,
            progress,
            policy: AckPolicy::resolve(&task.options, rt.settings()),
            msg,
            task,
            reservation: Some(reservation),
            tracking,
        }
    }

    /// Whether the message is refused — expired or revoked — and was revoked (see
    /// [`Job::revoke`]).
    pub(crate) async fn refused(&self) -> bool {
        self.expired().await || self.revoked().await
    }

    /// If the message's `expires` has passed: revoked ("expired"), true.
    async fn expired(&self) -> bool {
        match self.msg.expires.as_ref().map(|t| t.utc) {
            Some(expires) if expires <= Utc::now() => {
                tracing::info!("task expired; not run");
                self.revoke(Revocation::Expired).await;
                true
            }
            _ => false,
        }
    }

    /// If the task (its id or one of its stamps) is revoked: revoked ("revoked"), true.
    pub(crate) async fn revoked(&self) -> bool {
        if !self.rt.revoked().refuses(&self.msg) {
            return false;
        }
        self.revoke(Revocation::Revoked).await;
        true
    }

    /// The revoke sequence: REVOKED stored, the canvas told (chord part), `task-revoked` and the
    /// hooks, then the message acked (when it was not already).
    async fn revoke(&self, why: Revocation) {
        let reason = match why {
            Revocation::Revoked => "revoked",
            Revocation::Expired => "expired",
            Revocation::Terminated => "terminated",
        };
        // Boxed: the rare path's large future is not carried by every message's.
        Box::pin(async move {
            results::store_revoked(self.rt, &self.msg, reason).await;
            canvas::on_revoked(self.rt, &self.msg, reason).await;
            self.rt
                .hooks()
                .revoked(&self.msg, &self.delivery.queue, why)
                .await;
            self.ack().await;
        })
        .await;
    }

    /// Ack the message, unless it was acked already.
    async fn ack(&self) {
        ack(self.rt, self.delivery, self.progress).await;
    }

    /// Hold the message until its ETA, if it has one in the future, then check it again; false
    /// when it is not to run (refused, or the worker began a warm shutdown: it stays held and is
    /// given back at the end).
    pub(crate) async fn wait_for_eta(&mut self) -> bool {
        let Some(eta) = self.msg.eta.as_ref().map(|t| t.utc) else {
            return true;
        };
        if eta <= Utc::now() {
            return true;
        }
        self.tracking.scheduled(eta);
        let bytes = self.delivery.raw.len();
        match scheduled::wait_for_eta(self.rt, eta, bytes, &mut self.reservation).await {
            scheduled::Waited::Due => {
                self.tracking.reserved();
                !self.refused().await
            }
            scheduled::Waited::Draining => false,
        }
    }

    /// Wait for the task's rate limit to allow a run (holding no execution slot); false when the
    /// worker began a warm shutdown.
    pub(crate) async fn wait_turn(&self) -> bool {
        let rt = self.rt;
        rt.rate_limits()
            .wait_turn(
                rt.broker(),
                rt.draining(),
                &self.msg.task,
                &self.task.options,
            )
            .await
    }

    /// An execution slot of the task's kind; `None` when the worker began a warm shutdown.
    pub(crate) async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        let rt = self.rt;
        let slots = if self.task.handler.on_threads() {
            rt.slots()
        } else {
            rt.async_slots()
        };
        tokio::select! {
            biased;
            _ = rt.draining().cancelled() => None,
            slot = slots.clone().acquire_owned() => Some(slot.expect("the slot semaphore is never closed")),
        }
    }

    /// Run the task in `slot` and settle the message with its outcome.
    pub(crate) async fn execute(mut self, slot: OwnedSemaphorePermit) {
        let Some(ran) = self.run(slot).await else {
            return;
        };
        if !self.policy.acks_late {
            self.pass_on_reservation();
        }
        let settle = self.record(ran).await;
        self.progress.recorded.store(true, Ordering::Release);
        self.rt.count_processed();
        if self.policy.acks_late {
            self.settle(settle).await;
        }
    }

    /// An acked message whose run is over is no longer held: its reservation goes to the next
    /// message while this outcome is written, against the recording budget. When that budget is
    /// full the reservation is kept to the end, so outcomes waiting to be written stay bounded.
    fn pass_on_reservation(&mut self) {
        if let Ok(recording) = self.rt.recording().clone().try_acquire_owned() {
            self.reservation = Some(recording);
        }
    }

    /// The task's context: everything the run needs from the message (computed before an
    /// early ack).
    fn context(&self, limits: &time_limits::Limits, signals: &time_limits::Signals) -> TaskContext {
        let (rt, msg, delivery) = (self.rt, &self.msg, self.delivery);
        TaskContext {
            id: msg.id.clone(),
            name: msg.task.clone(),
            retries: u32::try_from(msg.retries).unwrap_or(0),
            root_id: msg.root_id.clone(),
            parent_id: msg.parent_id.clone(),
            group: msg.group.clone(),
            queue: delivery.queue.clone(),
            hostname: rt.hostname().to_string(),
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
            properties: Properties::of_envelope(&delivery.raw),
            time_limit: limits.hard,
            soft_time_limit: limits.soft,
            replaced_task_nesting: u32::try_from(msg.replaced_task_nesting).unwrap_or(0),
            reply_to: msg.reply_to.clone(),
            correlation_id: msg.correlation_id.clone(),
            chord: msg.chord.clone(),
            group_index: msg.group_index,
            data: rt.registry().data().cloned(),
            time_limits: signals.clone(),
            client: rt.client().map(|c| c.for_task(msg)),
        }
    }

    /// Start the run (early ack, `task-started`, STARTED stored when tracked), supervise it
    /// within its time limits, free `slot` when it is over. `None` when there is nothing more to
    /// record: terminated by `revoke(terminate=True)` (revoked here) or stopped by the end of a
    /// warm shutdown's grace (the shutdown puts the message back).
    async fn run(&mut self, slot: OwnedSemaphorePermit) -> Option<Ran> {
        let (rt, settings) = (self.rt, self.rt.settings());
        let ignore_result = self
            .msg
            .ignore_result
            .or(self.task.options.ignore_result)
            .unwrap_or(settings.task_ignore_result);
        let track_started = self
            .task
            .options
            .track_started
            .unwrap_or(settings.task_track_started);
        if ignore_result && !settings.task_store_errors_even_if_ignored {
            self.progress.recorded.store(true, Ordering::Release);
        }
        let limits = time_limits::Limits::resolve(&self.msg, &self.task.options, settings);
        let signals = time_limits::Signals::default();
        let ctx = self.context(&limits, &signals);
        // An early ack goes out as the run starts and is awaited beside it, as Celery's pool
        // acks when a child accepts the job: the task does not wait for the ack's round trip.
        let (delivery, progress, acks_late) = (self.delivery, self.progress, self.policy.acks_late);
        let early_ack = async move {
            if !acks_late {
                ack(rt, delivery, progress).await;
            }
        };
        self.tracking.started(self.delivery);
        rt.hooks().started(&self.msg, &self.delivery.queue).await;
        if track_started && !ignore_result {
            results::store_started(rt, &self.msg).await;
        }
        let started = std::time::Instant::now();
        // The handler is called inside the spawned run: a panic there fails the run (FAILURE
        // stored).
        let handler = self.task.handler.clone();
        let join = tokio::spawn(async move { handler.call(ctx).await }.in_current_span());
        self.tracking.attach(join.abort_handle());
        let ((), supervised) =
            tokio::join!(early_ack, time_limits::supervise(join, limits, &signals));
        let outcome = match supervised {
            time_limits::Supervised::Finished(outcome) => outcome,
            time_limits::Supervised::TimedOut(limit) => Ok(Err(TaskError::Fail(
                time_limits::time_limit_exceeded(limit),
            ))),
            time_limits::Supervised::SoftTimedOut => {
                Ok(Err(time_limits::SoftTimeLimitExceeded.into()))
            }
        };
        // The task's work is done: its slot goes to the next task while this one's outcome is
        // written (still bounded by the reservation or, once passed on, the recording budget).
        drop(slot);
        self.tracking.finishing();
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // Terminated by `revoke(terminate=True)`: REVOKED, acked, the worker goes on.
            Err(e) if e.is_cancelled() && !rt.draining().is_cancelled() => {
                tracing::info!("task terminated (revoked)");
                self.revoke(Revocation::Terminated).await;
                rt.count_processed();
                return None;
            }
            // Stopped by the end of a warm shutdown's grace: the shutdown puts the message back.
            Err(e) if e.is_cancelled() => return None,
            Err(e) => Err(TaskError::Fail(PyException::new(
                "RuntimeError",
                format!("task panicked: {}", panic_message(e)),
            ))),
        };
        Some(Ran {
            outcome,
            runtime: started.elapsed(),
            ignore_result,
        })
    }

    /// Record a run's outcome (result stored, canvas follow-ups, events and hooks); returns what
    /// becomes of the message.
    async fn record(&self, ran: Ran) -> Settle {
        let (rt, msg) = (self.rt, &self.msg);
        let Ran {
            outcome,
            runtime,
            ignore_result,
        } = ran;
        let runtime_s = runtime.as_secs_f64();
        let failed =
            |exc: PyException| async move { self.failed(&exc, runtime, ignore_result).await };
        match outcome {
            // Canvas: callbacks and the next chain step are published before the result is
            // stored.
            Ok(value) => match canvas::on_success(rt, msg, &value).await {
                Ok(children) => {
                    tracing::info!(runtime_s, "task succeeded");
                    rt.hooks()
                        .succeeded(msg, &self.delivery.queue, &value, runtime)
                        .await;
                    if !ignore_result {
                        results::store_success_with_children(rt, msg, value.clone(), children)
                            .await;
                    }
                    self.progress.recorded.store(true, Ordering::Release);
                    canvas::after_success(rt, msg, &value).await;
                    Settle::Ack
                }
                Err(exc) => failed(exc).await,
            },
            Err(TaskError::Fail(exc)) => failed(exc).await,
            Err(TaskError::Replace(sig)) => match Box::pin(canvas::replace(rt, msg, &sig)).await {
                Ok(()) => {
                    tracing::info!(runtime_s, replaced_by = %sig.task, "task replaced");
                    Settle::Ack
                }
                Err(exc) => failed(exc).await,
            },
            Err(TaskError::Retry(request)) => {
                let exc = request.exc.clone();
                let task = &self.task;
                match Box::pin(retry::retry(
                    rt,
                    self.delivery,
                    msg,
                    task,
                    *request,
                    ignore_result,
                ))
                .await
                {
                    Ok(()) => {
                        self.retried(exc).await;
                        Settle::Ack
                    }
                    // Retries exhausted (or the retry could not be sent): the run failed.
                    Err(exc) => failed(exc).await,
                }
            }
            // Celery's `Reject`. Requeued: nothing stored. Not requeued, the task never runs
            // again: Celery 5.7's worker stores a terminal FAILURE (`celery.exceptions.Reject(
            // reason, False)`, with its chord and errbacks) and sends `task-failed`, then rejects
            // the message. An early-acked message is already gone either way.
            Err(TaskError::Reject { reason, requeue }) => {
                tracing::warn!(runtime_s, requeue, %reason, "task rejected its message");
                if !requeue {
                    let exc = PyException {
                        exc_type: "Reject".into(),
                        exc_module: "celery.exceptions".into(),
                        args: vec![reason.clone().into(), false.into()],
                    };
                    failed(exc).await;
                }
                Settle::Reject { requeue, reason }
            }
        }
    }

    /// A retry was published: `task-retried` (with the retry's exception, or `Retry`) and the
    /// hooks.
    async fn retried(&self, exc: Option<PyException>) {
        let exc = exc.unwrap_or_else(|| PyException::new("Retry", "Retry in"));
        let tb = results::traceback(&self.msg, self.rt.hostname(), &exc);
        self.rt
            .hooks()
            .retried(&self.msg, &self.delivery.queue, &exc, tb)
            .await;
    }

    /// The run failed with `exc`: FAILURE stored (unless ignored), then the canvas follow-ups:
    /// chord part, chain, errbacks. A run whose process was lost with late acks and
    /// `reject_on_worker_lost` is requeued instead: nothing stored, no `task-failed` (as
    /// Celery). Returns what becomes of the message.
    async fn failed(&self, exc: &PyException, runtime: Duration, ignore_result: bool) -> Settle {
        let (rt, msg) = (self.rt, &self.msg);
        let runtime_s = runtime.as_secs_f64();
        let settle = self.policy.after_failure(exc);
        if self.policy.requeues_lost_run(exc) {
            tracing::warn!(runtime_s, exception = %exc, "task lost its process; requeued");
            return settle;
        }
        tracing::warn!(runtime_s, exception = %exc, "task failed");
        let tb = results::traceback(msg, rt.hostname(), exc);
        let task = TaskRef::of(msg, &self.delivery.queue);
        rt.hooks().failed(&task, exc, tb, Some(runtime)).await;
        if !ignore_result || rt.settings().task_store_errors_even_if_ignored {
            results::store_failure(rt, &msg.id, Some(msg), exc, Some(rt.hostname())).await;
        }
        canvas::on_failure(rt, msg, exc).await;
        settle
    }

    /// Settle a late-acked message after its run: ack it, or reject it (requeued, or to the
    /// dead-letter list) and report `task-rejected`.
    async fn settle(&self, settle: Settle) {
        match settle {
            Settle::Ack => self.ack().await,
            Settle::Reject { requeue, reason } => {
                // Boxed: a reject (SQS's included) is rare; its future stays out of every job's.
                Box::pin(settle::reject(self.rt, self.delivery, requeue, &reason)).await;
                self.progress.acked.store(true, Ordering::Release);
                self.rt
                    .hooks()
                    .rejected(&self.msg, &self.delivery.queue, requeue)
                    .await;
            }
        }
    }
}

/// Ack `delivery`, unless it was acked already (`progress` says so afterwards).
async fn ack(rt: &Runtime, delivery: &Delivery, progress: &Progress) {
    if progress.acked.load(Ordering::Acquire) {
        return;
    }
    rt.ack(delivery).await;
    progress.acked.store(true, Ordering::Release);
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => panic_text(payload.as_ref()),
        Err(e) => e.to_string(),
    }
}

pub(crate) use crate::task_api::blocking::panic_text;

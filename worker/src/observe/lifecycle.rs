//! The lifecycle hook: what happens to each task message (received, started, succeeded, failed,
//! retried, revoked, rejected), told once by the message path and fanned out to the monitoring
//! events, the Prometheus metrics, the OpenTelemetry span and any hook a user added with
//! [`crate::WorkerBuilder::hook`] (their own metrics, audit logging) — Sidekiq's middleware in
//! celeriac's terms.

use std::sync::Arc;
use std::time::Duration;

use celeriac_broker_bridge::codec::TaskMessage;
use serde_json::Value;

use crate::observe::events::{exception_repr, Events};
use crate::observe::metrics::Metrics;
use crate::task_api::PyException;

/// The task message a lifecycle call is about.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct TaskRef<'a> {
    /// The task id.
    pub id: &'a str,
    /// The task name.
    pub name: &'a str,
    /// The queue the message was taken from.
    pub queue: &'a str,
    /// How many times the task was retried before this run.
    pub retries: i64,
}

impl<'a> TaskRef<'a> {
    pub(crate) fn of(msg: &'a TaskMessage, queue: &'a str) -> Self {
        TaskRef {
            id: &msg.id,
            name: &msg.task,
            queue,
            retries: msg.retries,
        }
    }
}

/// Why a task was revoked (Celery's `task-revoked` `expired` and `terminated` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// Its id (or one of its stamps) was revoked before it ran.
    Revoked,
    /// Its `expires` time had passed before it ran.
    Expired,
    /// It was running and was stopped by `revoke(terminate=True)`.
    Terminated,
}

/// Told what happens to every task message this worker handles. Each method has an empty
/// default; implement those you need. They are called on the message's path, in order, after
/// the step they report (the result written, the message acked or not yet): keep them quick and
/// hand slow work (I/O) to a task of your own.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use celeriac_worker::{Lifecycle, PyException, TaskRef, Worker};
///
/// /// Counts failures per run, for an audit log of one's own.
/// #[derive(Default)]
/// struct Audit {
///     failures: AtomicU64,
/// }
///
/// impl Lifecycle for Audit {
///     fn failed(&self, task: &TaskRef<'_>, exception: &PyException, _runtime: Option<Duration>) {
///         self.failures.fetch_add(1, Ordering::Relaxed);
///         eprintln!("{}[{}] failed: {exception}", task.name, task.id);
///     }
/// }
///
/// let audit = Arc::new(Audit::default());
/// let worker = Worker::builder().hook(audit.clone()).build();
/// # drop(worker);
/// assert_eq!(audit.failures.load(Ordering::Relaxed), 0);
/// ```
pub trait Lifecycle: Send + Sync + 'static {
    /// The message was decoded and its task is registered here (`task-received`).
    fn received(&self, task: &TaskRef<'_>) {
        let _ = task;
    }

    /// The task starts running (`task-started`).
    fn started(&self, task: &TaskRef<'_>) {
        let _ = task;
    }

    /// The run returned `result` after `runtime`; the result is stored (`task-succeeded`).
    fn succeeded(&self, task: &TaskRef<'_>, result: &Value, runtime: Duration) {
        let _ = (task, result, runtime);
    }

    /// The run failed for good with `exception` (after `runtime`, when it ran), as Celery's
    /// `task-failed`. A retry is not a failure, nor is a lost run given back to the queue.
    fn failed(&self, task: &TaskRef<'_>, exception: &PyException, runtime: Option<Duration>) {
        let _ = (task, exception, runtime);
    }

    /// A retry of the task was published (`task-retried`); `exception` is the retry's reason.
    fn retried(&self, task: &TaskRef<'_>, exception: &PyException) {
        let _ = (task, exception);
    }

    /// The task was revoked: not run, or stopped (`task-revoked`).
    fn revoked(&self, task: &TaskRef<'_>, why: Revocation) {
        let _ = (task, why);
    }

    /// The message was rejected after its run: back to its queue (`requeue`) or to the
    /// dead-letter list (`task-rejected`).
    fn rejected(&self, task: &TaskRef<'_>, requeue: bool) {
        let _ = (task, requeue);
    }
}

impl<T: Lifecycle> Lifecycle for Arc<T> {
    fn received(&self, task: &TaskRef<'_>) {
        (**self).received(task);
    }
    fn started(&self, task: &TaskRef<'_>) {
        (**self).started(task);
    }
    fn succeeded(&self, task: &TaskRef<'_>, result: &Value, runtime: Duration) {
        (**self).succeeded(task, result, runtime);
    }
    fn failed(&self, task: &TaskRef<'_>, exception: &PyException, runtime: Option<Duration>) {
        (**self).failed(task, exception, runtime);
    }
    fn retried(&self, task: &TaskRef<'_>, exception: &PyException) {
        (**self).retried(task, exception);
    }
    fn revoked(&self, task: &TaskRef<'_>, why: Revocation) {
        (**self).revoked(task, why);
    }
    fn rejected(&self, task: &TaskRef<'_>, requeue: bool) {
        (**self).rejected(task, requeue);
    }
}

/// The Prometheus metrics (`/metrics`, celery-exporter's series).
impl Lifecycle for Metrics {
    fn received(&self, t: &TaskRef<'_>) {
        self.task_received(t.name, t.queue);
    }
    fn started(&self, t: &TaskRef<'_>) {
        self.task_started(t.name, t.queue);
    }
    fn succeeded(&self, t: &TaskRef<'_>, _result: &Value, runtime: Duration) {
        self.task_succeeded(t.name, t.queue, runtime);
    }
    fn failed(&self, t: &TaskRef<'_>, exception: &PyException, _runtime: Option<Duration>) {
        self.task_failed(t.name, t.queue, &exception_repr(exception));
    }
    fn retried(&self, t: &TaskRef<'_>, _exception: &PyException) {
        self.task_retried(t.name, t.queue);
    }
    fn revoked(&self, t: &TaskRef<'_>, _why: Revocation) {
        self.task_revoked(t.name, t.queue);
    }
    fn rejected(&self, t: &TaskRef<'_>, _requeue: bool) {
        self.task_rejected(t.name, t.queue);
    }
}

/// OpenTelemetry: a failed run marks the task's span as failed.
pub(crate) struct Telemetry;

impl Lifecycle for Telemetry {
    fn failed(&self, _t: &TaskRef<'_>, exception: &PyException, _runtime: Option<Duration>) {
        crate::observe::telemetry::task_failed(&exception.to_string());
    }
}

/// Where the message path reports: the monitoring events first (they are sent in order, as the
/// path goes), then each hook in turn (metrics, telemetry, then the user's).
pub(crate) struct Hooks {
    events: Arc<Events>,
    hooks: Vec<Arc<dyn Lifecycle>>,
}

impl Hooks {
    /// The built-in hooks (events, `metrics`, telemetry) followed by `user`'s.
    pub(crate) fn new(
        events: Arc<Events>,
        metrics: Arc<Metrics>,
        user: Vec<Arc<dyn Lifecycle>>,
    ) -> Self {
        let mut hooks: Vec<Arc<dyn Lifecycle>> = vec![metrics, Arc::new(Telemetry)];
        hooks.extend(user);
        Hooks { events, hooks }
    }

    fn each(&self, f: impl Fn(&dyn Lifecycle)) {
        for h in &self.hooks {
            f(h.as_ref());
        }
    }

    pub(crate) async fn received(&self, msg: &TaskMessage, queue: &str) {
        self.events.task_received(msg).await;
        self.each(|h| h.received(&TaskRef::of(msg, queue)));
    }

    pub(crate) async fn started(&self, msg: &TaskMessage, queue: &str) {
        self.events.task_started(&msg.id).await;
        self.each(|h| h.started(&TaskRef::of(msg, queue)));
    }

    pub(crate) async fn succeeded(
        &self,
        msg: &TaskMessage,
        queue: &str,
        result: &Value,
        runtime: Duration,
    ) {
        self.events
            .task_succeeded(&msg.id, result, runtime.as_secs_f64())
            .await;
        self.each(|h| h.succeeded(&TaskRef::of(msg, queue), result, runtime));
    }

    /// `traceback`: the text `task-failed` carries.
    pub(crate) async fn failed(
        &self,
        task: &TaskRef<'_>,
        exception: &PyException,
        traceback: String,
        runtime: Option<Duration>,
    ) {
        self.events
            .task_failed(task.id, exception_repr(exception), traceback)
            .await;
        self.each(|h| h.failed(task, exception, runtime));
    }

    /// `traceback`: the text `task-retried` carries.
    pub(crate) async fn retried(
        &self,
        msg: &TaskMessage,
        queue: &str,
        exception: &PyException,
        traceback: String,
    ) {
        self.events
            .task_retried(&msg.id, exception_repr(exception), traceback)
            .await;
        self.each(|h| h.retried(&TaskRef::of(msg, queue), exception));
    }

    pub(crate) async fn revoked(&self, msg: &TaskMessage, queue: &str, why: Revocation) {
        self.events
            .task_revoked(
                &msg.id,
                why == Revocation::Terminated,
                why == Revocation::Expired,
            )
            .await;
        self.each(|h| h.revoked(&TaskRef::of(msg, queue), why));
    }

    pub(crate) async fn rejected(&self, msg: &TaskMessage, queue: &str, requeue: bool) {
        self.events.task_rejected(&msg.id, requeue).await;
        self.each(|h| h.rejected(&TaskRef::of(msg, queue), requeue));
    }
}

//! The shared state of a running worker: connections, registry, slots and the messages it holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use celeriac_broker_bridge::backend::{EncodedMeta, ResultBackend, StoreOutcome};
use celeriac_broker_bridge::transport::{Broker, Delivery};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::Client;
use crate::config::Settings;
use crate::message::batch::Batcher;
use crate::message::inflight::InFlight;
use crate::message::rate_limit::RateLimits;
use crate::message::reserved_bytes::{EtaHeld, ReservedBytes};
use crate::message::retrying::{retrying, Write};
use crate::message::revoked::Revoked;
use crate::observe::events::Events;
use crate::observe::lifecycle::Hooks;
use crate::observe::metrics::Metrics;
use crate::signing::Signing;
use crate::sqs::SqsSide;
use crate::task_api::registry::Registry;

/// Counters kept for logs and metrics.
#[derive(Default)]
struct Counters {
    /// Tasks that finished (any state).
    processed: AtomicU64,
    /// Messages moved to the dead-letter list or requeued elsewhere.
    dead_lettered: AtomicU64,
    /// Retries published.
    retried: AtomicU64,
}

/// The batched writer of result metas (encoded by their tasks).
pub(crate) type ResultWriter = Batcher<EncodedMeta, Result<StoreOutcome, String>>;

/// What [`Runtime::new`] is given: the connections and parts assembled at start.
pub(crate) struct Parts {
    /// Effective settings.
    pub(crate) settings: Settings,
    /// Message signing.
    pub(crate) signing: Signing,
    /// Registered tasks.
    pub(crate) registry: Registry,
    /// The broker connection (on SQS: a Redis transport handle on the result backend's server).
    pub(crate) broker: Broker,
    /// The SQS broker, when there is one.
    pub(crate) sqs: Option<Arc<SqsSide>>,
    /// The result backend, when `result_backend` is set.
    pub(crate) backend: Option<ResultBackend>,
    /// The producer API on this worker's connections (`None` on SQS).
    pub(crate) client: Option<Client>,
    /// Batched acks.
    pub(crate) acker: Batcher<String, Result<(), String>>,
    /// Batched result writes, when there is a backend.
    pub(crate) writer: Option<ResultWriter>,
    /// Execution slots of tasks on threads or in task processes.
    pub(crate) slots: Arc<Semaphore>,
    /// Execution slots of async tasks (maybe the same semaphore as `slots`).
    pub(crate) async_slots: Arc<Semaphore>,
    /// Tasks this worker may run at once, every kind together.
    pub(crate) concurrency: usize,
    /// Messages held at once at most (the prefetch count); `None`: no limit.
    pub(crate) reservations: Option<usize>,
    /// The event sender and Lamport clock.
    pub(crate) events: Arc<Events>,
    /// Where the message path reports each step.
    pub(crate) hooks: Hooks,
    /// The revoked set.
    pub(crate) revoked: Revoked,
    /// Prometheus metrics.
    pub(crate) metrics: Arc<Metrics>,
}

/// Everything the worker's parts share. Built by [`Runtime::new`]; read through its accessors,
/// its counters changed through methods named for what happened.
pub(crate) struct Runtime {
    /// Effective settings.
    settings: Settings,
    /// Message signing: serializers for what the worker writes, the verifier for what it reads.
    signing: Signing,
    /// Registered tasks.
    registry: Registry,
    /// The broker connection (with an SQS broker: a Redis transport handle on the result
    /// backend's server, for the dead-letter list, the revoked store and rate limits).
    broker: Broker,
    /// The SQS broker, when `CELERY_BROKER_URL` is `sqs://` (see [`crate::sqs`]).
    sqs: Option<Arc<SqsSide>>,
    /// The result backend, when `result_backend` is set.
    backend: Option<ResultBackend>,
    /// The producer API on this worker's connections (for [`crate::TaskContext::client`]);
    /// `None` on an SQS broker.
    client: Option<Client>,
    /// Batched acks (see [`crate::message::batch`]).
    acker: Batcher<String, Result<(), String>>,
    /// Batched result writes (metas encoded by their tasks), when there is a backend.
    writer: Option<ResultWriter>,
    /// This worker's node name.
    hostname: String,
    /// Execution slots of tasks on threads or in task processes (`worker_concurrency`).
    slots: Arc<Semaphore>,
    /// Execution slots of async tasks (the same semaphore as `slots` when they are shared; see
    /// [`crate::config::Settings::slots`]).
    async_slots: Arc<Semaphore>,
    /// Tasks this worker may run at once, every kind together.
    concurrency: usize,
    /// Reservation slots: messages taken off the queue and not yet finished (ETA-held excluded).
    reservations: Arc<Semaphore>,
    /// Outcomes of early-acked runs being written after their reservation went to the next
    /// message (as many as there are reservation slots).
    recording: Arc<Semaphore>,
    /// Every message held, by delivery tag (see [`InFlight`]).
    inflight: Arc<InFlight>,
    /// ETA-held messages right now, and the bytes of those held without a reservation.
    eta_held: EtaHeld,
    /// Bytes (as on the wire) of the reserved messages, against `reserved_bytes`.
    reserved_bytes: ReservedBytes,
    /// Cancelled when the worker stops taking new work (warm shutdown begins).
    draining: CancellationToken,
    /// Tracks every spawned message handler so shutdown can wait for them.
    tracker: TaskTracker,
    /// Counters.
    counters: Counters,
    /// Remote control, revocation and events (see [`crate::upkeep::control`]).
    revoked: Revoked,
    /// The event sender and Lamport clock.
    events: Arc<Events>,
    /// Where the message path reports each step (events, metrics, telemetry, the user's hooks).
    hooks: Hooks,
    /// Rate limits set by remote control (read by the rate-limit enforcement).
    rate_limits: RateLimits,
    /// The queues consumed now (`add_consumer` / `cancel_consumer` change it).
    queues: Mutex<Vec<String>>,
    /// Cancelled by the `shutdown` control command: the launcher starts a warm shutdown.
    remote_stop: CancellationToken,
    /// When the worker started.
    started: Instant,
    /// The prefetch count (`None`: no limit).
    reservations_capacity: Option<usize>,
    /// Prometheus metrics (served by [`crate::observe::http`]).
    metrics: Arc<Metrics>,
    /// Signalled by the fetch loop when the broker answers again after failing (see
    /// [`crate::upkeep::registration`]).
    reconnected: Notify,
    /// Signalled when the consumed queues change, so the fetch loop stops waiting on the old ones.
    queues_changed: Notify,
}

impl Runtime {
    /// Assemble the runtime from `parts`; the rest (the in-flight table, the budgets, the
    /// consumed queues, the shutdown tokens) starts empty, from the settings.
    pub(crate) fn new(parts: Parts) -> Self {
        let Parts {
            settings,
            signing,
            registry,
            broker,
            sqs,
            backend,
            client,
            acker,
            writer,
            slots,
            async_slots,
            concurrency,
            reservations,
            events,
            hooks,
            revoked,
            metrics,
        } = parts;
        Runtime {
            hostname: settings.worker_hostname.clone(),
            reservations: Arc::new(Semaphore::new(
                reservations.unwrap_or(Semaphore::MAX_PERMITS),
            )),
            recording: Arc::new(Semaphore::new(reservations.unwrap_or(concurrency).max(1))),
            reservations_capacity: reservations,
            inflight: Arc::default(),
            eta_held: EtaHeld::default(),
            reserved_bytes: ReservedBytes::new(
                usize::try_from(settings.reserved_bytes).unwrap_or(usize::MAX),
            ),
            draining: CancellationToken::new(),
            tracker: TaskTracker::new(),
            counters: Counters::default(),
            rate_limits: RateLimits::new(&settings),
            queues: Mutex::new(settings.queues.clone()),
            remote_stop: CancellationToken::new(),
            started: Instant::now(),
            reconnected: Notify::new(),
            queues_changed: Notify::new(),
            settings,
            signing,
            registry,
            broker,
            sqs,
            backend,
            client,
            acker,
            writer,
            slots,
            async_slots,
            concurrency,
            events,
            hooks,
            revoked,
            metrics,
        }
    }

    /// Effective settings.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Message signing: serializers for what the worker writes, the verifier for what it reads.
    pub(crate) fn signing(&self) -> &Signing {
        &self.signing
    }

    /// Registered tasks.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The broker connection (on SQS: the Redis handle on the result backend's server).
    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The SQS broker, when there is one.
    pub(crate) fn sqs(&self) -> Option<&Arc<SqsSide>> {
        self.sqs.as_ref()
    }

    /// The result backend, when there is one.
    pub(crate) fn backend(&self) -> Option<&ResultBackend> {
        self.backend.as_ref()
    }

    /// The producer API on this worker's connections (`None` on SQS).
    pub(crate) fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    /// Batched result writes, when there is a backend.
    pub(crate) fn writer(&self) -> Option<&ResultWriter> {
        self.writer.as_ref()
    }

    /// This worker's node name.
    pub(crate) fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Execution slots of tasks on threads or in task processes.
    pub(crate) fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// Execution slots of async tasks.
    pub(crate) fn async_slots(&self) -> &Arc<Semaphore> {
        &self.async_slots
    }

    /// Tasks this worker may run at once, every kind together.
    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Reservation slots: messages taken off the queue and not yet finished (ETA-held excluded).
    pub(crate) fn reservations(&self) -> &Arc<Semaphore> {
        &self.reservations
    }

    /// The budget of outcomes written after their reservation was given back (see
    /// [`crate::message::job`]).
    pub(crate) fn recording(&self) -> &Arc<Semaphore> {
        &self.recording
    }

    /// The prefetch count (`stats.prefetch_count`; `None`: no limit).
    pub(crate) fn reservations_capacity(&self) -> Option<usize> {
        self.reservations_capacity
    }

    /// Every message held, by delivery tag.
    pub(crate) fn inflight(&self) -> &Arc<InFlight> {
        &self.inflight
    }

    /// Bytes (as on the wire) of the reserved messages, against `reserved_bytes`.
    pub(crate) fn reserved_bytes(&self) -> &ReservedBytes {
        &self.reserved_bytes
    }

    /// A message of `bytes` starts waiting for its ETA: whether it waits without its reservation
    /// (the ETA-held count and `eta_held_bytes` allow; see [`EtaHeld::enter`]).
    pub(crate) fn start_eta_wait(&self, bytes: usize) -> bool {
        let budget = usize::try_from(self.settings.eta_held_bytes).unwrap_or(usize::MAX);
        self.eta_held.enter(bytes, budget)
    }

    /// A message's ETA wait ended; `unreserved`: what [`Runtime::start_eta_wait`] answered.
    pub(crate) fn end_eta_wait(&self, bytes: usize, unreserved: bool) {
        self.eta_held.leave(bytes, unreserved);
    }

    /// ETA-held messages right now.
    pub(crate) fn eta_held(&self) -> usize {
        self.eta_held.count()
    }

    /// Cancelled when the worker stops taking new work (warm shutdown begins).
    pub(crate) fn draining(&self) -> &CancellationToken {
        &self.draining
    }

    /// Tracks every spawned message handler so shutdown can wait for them.
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Count a task finished (any state).
    pub(crate) fn count_processed(&self) {
        self.counters.processed.fetch_add(1, Ordering::Relaxed);
    }

    /// Tasks finished so far.
    pub(crate) fn processed(&self) -> u64 {
        self.counters.processed.load(Ordering::Relaxed)
    }

    /// Count a message moved to the dead-letter list or requeued elsewhere.
    pub(crate) fn count_dead_lettered(&self) {
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages dead-lettered so far.
    pub(crate) fn dead_lettered(&self) -> u64 {
        self.counters.dead_lettered.load(Ordering::Relaxed)
    }

    /// Count a retry published.
    pub(crate) fn count_retried(&self) {
        self.counters.retried.fetch_add(1, Ordering::Relaxed);
    }

    /// The revoked set.
    pub(crate) fn revoked(&self) -> &Revoked {
        &self.revoked
    }

    /// The event sender and Lamport clock.
    pub(crate) fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// Where the message path reports each step (events, metrics, telemetry, the user's hooks).
    pub(crate) fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// Rate limits set by remote control.
    pub(crate) fn rate_limits(&self) -> &RateLimits {
        &self.rate_limits
    }

    /// Cancelled by the `shutdown` control command: the launcher starts a warm shutdown.
    pub(crate) fn remote_stop(&self) -> &CancellationToken {
        &self.remote_stop
    }

    /// When the worker started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Prometheus metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Signalled by the fetch loop when the broker answers again after failing (see
    /// [`crate::upkeep::registration`]).
    pub(crate) fn reconnected(&self) -> &Notify {
        &self.reconnected
    }

    /// Signalled when the consumed queues change, so the fetch loop stops waiting on the old ones.
    pub(crate) fn queues_changed(&self) -> &Notify {
        &self.queues_changed
    }

    /// The queues consumed now.
    pub(crate) fn consumed_queues(&self) -> Vec<String> {
        self.queues.lock().expect("queues lock").clone()
    }

    /// Consume `queue` too (no-op when consumed already).
    pub(crate) fn add_queue(&self, queue: &str) {
        let mut queues = self.queues.lock().expect("queues lock");
        if !queues.iter().any(|q| q == queue) {
            queues.push(queue.to_string());
            self.queues_changed.notify_one();
        }
    }

    /// Stop consuming `queue`.
    pub(crate) fn remove_queue(&self, queue: &str) {
        self.queues
            .lock()
            .expect("queues lock")
            .retain(|q| q != queue);
        self.queues_changed.notify_one();
    }

    /// Start holding `tag` (its `unacked_index` score is kept fresh from now on).
    pub(crate) fn hold(&self, tag: &str) {
        self.inflight.hold(tag);
    }

    /// Stop holding `tag` (it was acked, restored or dead-lettered).
    pub(crate) fn release(&self, tag: &str) {
        self.inflight.release(tag);
    }

    /// A snapshot of the tags held unacked.
    pub(crate) fn held_tags(&self) -> Vec<String> {
        self.inflight.held_tags()
    }

    /// The tasks running now and those finished, for the worker events.
    pub(crate) fn load(&self) -> (usize, u64) {
        (self.inflight.running(), self.processed())
    }

    /// Ack a message in Redis and stop holding it. Errors are logged: the message then comes back
    /// after the visibility timeout (at-least-once).
    pub(crate) async fn ack(&self, delivery: &Delivery) {
        if let Some(sqs) = &self.sqs {
            // Boxed: the SQS client's large future is not carried by every Redis ack.
            return Box::pin(crate::sqs::ack(
                &self.metrics,
                &self.inflight,
                sqs,
                delivery,
            ))
            .await;
        }
        let tag = &delivery.delivery_tag;
        let ack = || async {
            self.acker
                .submit(tag.clone())
                .await
                .unwrap_or_else(|| Err("the ack writer stopped".into()))
        };
        if let Err(e) = retrying(&self.metrics, Write::Ack, ack).await {
            tracing::error!(delivery_tag = %delivery.delivery_tag, error = %e, "ack failed; the message will be redelivered after the visibility timeout");
        }
        self.release(&delivery.delivery_tag);
    }
}

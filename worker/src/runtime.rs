//! The shared state of a running worker: connections, registry, slots and the messages it holds.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use celeriac_broker_bridge::backend::{EncodedMeta, ResultBackend, StoreOutcome};
use celeriac_broker_bridge::transport::{Broker, Delivery};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::message::batch::Batcher;
use crate::message::inflight::InFlight;
use crate::message::retrying::{retrying, Write};
use crate::observe::lifecycle::Hooks;
use crate::task_api::registry::Registry;

/// Counters kept for logs and, later, metrics.
#[derive(Default)]
pub(crate) struct Counters {
    /// Tasks that finished (any state).
    pub processed: AtomicU64,
    /// Messages moved to the dead-letter list or requeued elsewhere.
    pub dead_lettered: AtomicU64,
    /// Retries published.
    pub retried: AtomicU64,
}

/// Everything the worker's parts share.
pub(crate) struct Runtime {
    /// Effective settings.
    pub settings: Settings,
    /// Message signing: serializers for what the worker writes, the verifier for what it reads.
    pub signing: crate::signing::Signing,
    /// Registered tasks.
    pub registry: Registry,
    /// The broker connection (with an SQS broker: a Redis transport handle on the result
    /// backend's server, for the dead-letter list, the revoked store and rate limits).
    pub broker: Broker,
    /// The SQS broker, when `CELERY_BROKER_URL` is `sqs://` (see [`crate::sqs`]).
    pub sqs: Option<Arc<crate::sqs::SqsSide>>,
    /// The result backend, when `result_backend` is set.
    pub backend: Option<ResultBackend>,
    /// The producer API on this worker's connections (for [`crate::TaskContext::client`]);
    /// `None` on an SQS broker.
    pub client: Option<crate::client::Client>,
    /// Batched acks (see [`crate::message::batch`]).
    pub acker: Batcher<String, Result<(), String>>,
    /// Batched result writes (metas encoded by their tasks), when there is a backend.
    pub writer: Option<Batcher<EncodedMeta, Result<StoreOutcome, String>>>,
    /// This worker's node name.
    pub hostname: String,
    /// Execution slots of tasks on threads or in task processes (`worker_concurrency`).
    pub slots: Arc<Semaphore>,
    /// Execution slots of async tasks (the same semaphore as `slots` when they are shared; see
    /// [`crate::config::Settings::slots`]).
    pub async_slots: Arc<Semaphore>,
    /// Tasks this worker may run at once, every kind together.
    pub concurrency: usize,
    /// Reservation slots: messages taken off the queue and not yet finished (ETA-held excluded).
    pub reservations: Arc<Semaphore>,
    /// Every message held, by delivery tag (see [`InFlight`]).
    pub(crate) inflight: Arc<InFlight>,
    /// ETA-held messages right now.
    pub eta_held: AtomicUsize,
    /// Bytes (as on the wire) of the ETA messages held without a reservation.
    pub eta_held_bytes: AtomicUsize,
    /// Bytes (as on the wire) of the reserved messages, against `reserved_bytes`.
    pub reserved_bytes: crate::message::reserved_bytes::ReservedBytes,
    /// Cancelled when the worker stops taking new work (warm shutdown begins).
    pub draining: CancellationToken,
    /// Tracks every spawned message handler so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Counters.
    pub counters: Counters,
    /// Remote control, revocation and events (see [`crate::upkeep::control`]).
    pub revoked: crate::message::revoked::Revoked,
    /// The event sender and Lamport clock.
    pub events: Arc<crate::observe::events::Events>,
    /// Where the message path reports each step (events, metrics, telemetry, the user's hooks).
    pub(crate) hooks: Hooks,
    /// Rate limits set by remote control (read by the rate-limit enforcement).
    pub rate_limits: crate::message::rate_limit::RateLimits,
    /// The queues consumed now (`add_consumer` / `cancel_consumer` change it).
    pub queues: Mutex<Vec<String>>,
    /// Cancelled by the `shutdown` control command: the launcher starts a warm shutdown.
    pub remote_stop: CancellationToken,
    /// When the worker started.
    pub started: std::time::Instant,
    /// Reservation slots in all (`stats.prefetch_count`).
    pub reservations_capacity: usize,
    /// Prometheus metrics (served by [`crate::observe::http`]).
    pub metrics: Arc<crate::observe::metrics::Metrics>,
    /// Signalled by the fetch loop when the broker answers again after failing (see
    /// [`crate::upkeep::registration`]).
    pub reconnected: tokio::sync::Notify,
    /// Signalled when the consumed queues change, so the fetch loop stops waiting on the old ones.
    pub queues_changed: tokio::sync::Notify,
}

impl Runtime {
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
        let processed = self
            .counters
            .processed
            .load(std::sync::atomic::Ordering::Relaxed);
        (self.inflight.running(), processed)
    }

    /// Ack a message in Redis and stop holding it. Errors are logged: the message then comes back
    /// after the visibility timeout (at-least-once).
    pub(crate) async fn ack(&self, delivery: &Delivery) {
        if let Some(sqs) = &self.sqs {
            return crate::sqs::ack(self, sqs, delivery).await;
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

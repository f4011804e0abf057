//! Prometheus metrics of a worker: task counters and runtimes (celery-exporter's names where they
//! exist), what this worker holds and runs, and the queue depth in Redis (every priority list,
//! plus everything unacked) read in one round trip and cached for [`DEPTH_CACHE_TTL`], so many
//! replicas scraped often do not load Redis.
//!
//! More collectors (e.g. caches) are added with [`Metrics::register`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use celeriac_broker_bridge::transport::Depths;
use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::sync::Mutex;

use crate::retrying::Write;
use crate::runtime::Runtime;

/// How long one read of the queue depth is reused.
pub const DEPTH_CACHE_TTL: Duration = Duration::from_secs(1);

/// Task runtime histogram buckets, seconds.
const RUNTIME_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Every metric of one worker. Created before the broker connection, shared through
/// [`Runtime::metrics`].
pub struct Metrics {
    registry: Registry,
    received: IntCounterVec,
    started: IntCounterVec,
    succeeded: IntCounterVec,
    failed: IntCounterVec,
    retried: IntCounterVec,
    revoked: IntCounterVec,
    runtime: HistogramVec,
    dead_lettered: IntCounter,
    reconnects: IntCounter,
    wakeups: IntCounter,
    write_retries: IntCounterVec,
    write_failures: IntCounterVec,
    depth_errors: IntCounter,
    worker_up: IntGauge,
    queue_length: IntGaugeVec,
    unacked: IntGauge,
    dead_letter_length: IntGauge,
    running: IntGauge,
    reserved: IntGauge,
    eta_held: IntGauge,
    prefetch_in_use: IntGauge,
    prefetch_capacity: IntGauge,
    concurrency: IntGauge,
    capacity: AtomicUsize,
    dead_lettered_seen: AtomicU64,
    broker_reachable: AtomicBool,
    depths: Mutex<Option<(Instant, Depths)>>,
}

impl Metrics {
    /// Metrics of the worker named `hostname` (a constant `hostname` label on every series).
    pub fn new(hostname: &str) -> Metrics {
        let registry =
            Registry::new_custom(None, Some([("hostname".into(), hostname.into())].into()))
                .expect("a fixed, valid label set");
        let task = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["name", "queue_name"])
                .expect("valid metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric name");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            c
        };
        let write = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["operation"])
                .expect("valid metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            for w in Write::ALL {
                c.with_label_values(&[w.label()]);
            }
            c
        };
        let runtime = HistogramVec::new(
            HistogramOpts::new(
                "celery_task_runtime_seconds",
                "Task run time in seconds, from start to outcome.",
            )
            .buckets(RUNTIME_BUCKETS.to_vec()),
            &["name", "queue_name"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(runtime.clone()))
            .expect("unique metric name");
        let queue_length = IntGaugeVec::new(
            Opts::new(
                "celery_queue_length",
                "Messages waiting in the queue: the base list and every priority list summed.",
            ),
            &["queue_name"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(queue_length.clone()))
            .expect("unique metric name");
        Metrics {
            received: task(
                "celery_task_received_total",
                "Task messages received by this worker.",
            ),
            started: task(
                "celery_task_started_total",
                "Tasks this worker started running.",
            ),
            succeeded: task("celery_task_succeeded_total", "Tasks that succeeded."),
            failed: task("celery_task_failed_total", "Tasks that failed."),
            retried: task(
                "celery_task_retried_total",
                "Task retries published by this worker.",
            ),
            revoked: task(
                "celery_task_revoked_total",
                "Tasks not run because they expired.",
            ),
            runtime,
            dead_lettered: counter(
                "celeriac_dead_lettered_total",
                "Messages this worker moved to the dead-letter list or handed to another queue.",
            ),
            reconnects: counter(
                "celeriac_broker_reconnects_total",
                "Times the broker became reachable again after failing.",
            ),
            wakeups: counter(
                "celeriac_fetch_wakeups_total",
                "Times the idle fetch loop was woken by a message arriving in a consumed queue.",
            ),
            write_retries: write("celeriac_redis_write_retries_total",
                "Redis writes (results, acks, canvas and retry messages) that failed and were tried again.",
            ),
            write_failures: write("celeriac_redis_write_failures_total",
                "Redis writes given up after the retry budget (30 s): a result not stored, an ack not done (the message comes back), a canvas or retry message not sent.",
            ),
            depth_errors: counter(
                "celeriac_queue_depth_errors_total",
                "Failed reads of the queue depth (the depth series are absent after one).",
            ),
            worker_up: gauge(
                "celery_worker_up",
                "1 while the worker consumes, 0 while it drains.",
            ),
            queue_length,
            unacked: gauge(
                "celeriac_unacked_messages",
                "Messages taken by any worker and not acked yet (the broker's `unacked` hash).",
            ),
            dead_letter_length: gauge(
                "celeriac_dead_letter_length",
                "Elements in the dead-letter list.",
            ),
            running: gauge(
                "celeriac_worker_running",
                "Tasks this worker is running now.",
            ),
            reserved: gauge(
                "celeriac_worker_reserved",
                "Messages this worker holds and is not running (prefetched or waiting for an ETA).",
            ),
            eta_held: gauge(
                "celeriac_worker_eta_held",
                "Messages this worker holds until their ETA.",
            ),
            prefetch_in_use: gauge(
                "celeriac_worker_prefetch_slots_in_use",
                "Reservation slots in use: messages taken and not finished (ETA-held excluded).",
            ),
            prefetch_capacity: gauge(
                "celeriac_worker_prefetch_slots",
                "Reservation slots: concurrency plus prefetch lookahead.",
            ),
            concurrency: gauge(
                "celeriac_worker_concurrency",
                "Tasks this worker runs at once.",
            ),
            registry,
            capacity: AtomicUsize::new(0),
            dead_lettered_seen: AtomicU64::new(0),
            broker_reachable: AtomicBool::new(true),
            depths: Mutex::new(None),
        }
    }

    /// Register another collector (its series get the `hostname` label too).
    pub fn register(&self, collector: Box<dyn Collector>) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// Record the worker's concurrency and its number of reservation slots.
    pub fn set_capacity(&self, concurrency: usize, reservation_slots: usize) {
        self.concurrency.set(concurrency as i64);
        self.prefetch_capacity.set(reservation_slots as i64);
        self.capacity.store(reservation_slots, Ordering::Relaxed);
    }

    /// A task message was received.
    pub fn task_received(&self, name: &str, queue: &str) {
        self.received.with_label_values(&[name, queue]).inc();
    }

    /// A task was not run because it expired.
    pub fn task_revoked(&self, name: &str, queue: &str) {
        self.revoked.with_label_values(&[name, queue]).inc();
    }

    /// A task started running.
    pub fn task_started(&self, name: &str, queue: &str) {
        self.started.with_label_values(&[name, queue]).inc();
    }

    /// A task succeeded (its result and follow-ups were handled).
    pub fn task_succeeded(&self, name: &str, queue: &str) {
        self.succeeded.with_label_values(&[name, queue]).inc();
    }

    /// A task failed for good: FAILURE stored, `task-failed` sent. A lost run given back to the
    /// queue is not a failure, nor is a retry request.
    pub fn task_failed(&self, name: &str, queue: &str) {
        self.failed.with_label_values(&[name, queue]).inc();
    }

    /// A task's retry was published (an exhausted retry is a failure instead).
    pub fn task_retried(&self, name: &str, queue: &str) {
        self.retried.with_label_values(&[name, queue]).inc();
    }

    /// A task run ended after `elapsed`, whatever its outcome.
    pub fn task_runtime(&self, name: &str, queue: &str, elapsed: Duration) {
        self.runtime
            .with_label_values(&[name, queue])
            .observe(elapsed.as_secs_f64());
    }

    /// A Redis write failed and is tried again.
    pub fn redis_write_retried(&self, write: Write) {
        self.write_retries.with_label_values(&[write.label()]).inc();
    }

    /// A Redis write was given up after the retry budget.
    pub fn redis_write_failed(&self, write: Write) {
        self.write_failures
            .with_label_values(&[write.label()])
            .inc();
    }

    /// The fetch loop reached the broker (`true`) or failed to (`false`).
    pub fn broker_reachable(&self, reachable: bool) {
        let was = self.broker_reachable.swap(reachable, Ordering::Relaxed);
        if reachable && !was {
            self.reconnects.inc();
        }
    }

    /// The idle fetch loop was woken by an arrival.
    pub fn fetch_woken(&self) {
        self.wakeups.inc();
    }

    /// Whether the last fetch reached the broker.
    pub fn is_broker_reachable(&self) -> bool {
        self.broker_reachable.load(Ordering::Relaxed)
    }

    /// The queue depth of the worker's queues: a fresh read at most every [`DEPTH_CACHE_TTL`];
    /// concurrent callers share one read.
    pub async fn depths(&self, rt: &Runtime) -> anyhow::Result<Depths> {
        let mut cached = self.depths.lock().await;
        if let Some((at, d)) = cached.as_ref() {
            if at.elapsed() < DEPTH_CACHE_TTL {
                return Ok(d.clone());
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            match &rt.sqs {
                Some(sqs) => crate::sqs::depths(rt, sqs).await,
                None => Ok(rt.broker.depths(&rt.settings.queues).await?),
            }
        })
        .await;
        match read {
            Ok(Ok(d)) => {
                *cached = Some((Instant::now(), d.clone()));
                Ok(d)
            }
            Ok(Err(e)) => {
                *cached = None;
                Err(e)
            }
            Err(_) => {
                *cached = None;
                anyhow::bail!("reading the queue depth timed out")
            }
        }
    }

    /// The Prometheus text exposition of every metric, with `rt`'s state and the queue depth
    /// read now (or from the cache); without a runtime (still connecting) only the counters.
    pub async fn render(&self, rt: Option<&Runtime>) -> String {
        match rt {
            Some(rt) => {
                self.update_worker(rt);
                match self.depths(rt).await {
                    Ok(d) => self.update_depths(&d),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the queue depth for metrics");
                        self.depth_errors.inc();
                        self.queue_length.reset();
                    }
                }
            }
            None => self.worker_up.set(0),
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn update_worker(&self, rt: &Runtime) {
        let (running, running_held) = {
            let running = rt.running.lock().expect("running lock");
            (running.len(), running.values().filter(|r| !r.acked).count())
        };
        let held = rt.held.lock().expect("held lock").len();
        self.running.set(running as i64);
        self.reserved.set(held.saturating_sub(running_held) as i64);
        self.eta_held
            .set(rt.eta_held.load(Ordering::Relaxed) as i64);
        let capacity = self.capacity.load(Ordering::Relaxed);
        self.prefetch_in_use
            .set(capacity.saturating_sub(rt.reservations.available_permits()) as i64);
        self.worker_up.set(i64::from(!rt.draining.is_cancelled()));
        let total = rt.counters.dead_lettered.load(Ordering::Relaxed);
        let seen = self.dead_lettered_seen.swap(total, Ordering::Relaxed);
        self.dead_lettered.inc_by(total.saturating_sub(seen));
    }

    fn update_depths(&self, d: &Depths) {
        for (queue, n) in &d.queues {
            self.queue_length.with_label_values(&[queue]).set(*n as i64);
        }
        self.unacked.set(d.unacked as i64);
        self.dead_letter_length.set(d.dead_letter as i64);
    }
}

/// Replicas needed for `work` messages (waiting plus unacked) at `per_replica` tasks each:
/// `ceil(work / per_replica)`.
pub fn desired_replicas(work: u64, per_replica: usize) -> u64 {
    work.div_ceil(per_replica.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_replicas_rounds_up() {
        assert_eq!(desired_replicas(0, 4), 0);
        assert_eq!(desired_replicas(1, 4), 1);
        assert_eq!(desired_replicas(8, 4), 2);
        assert_eq!(desired_replicas(9, 4), 3);
        assert_eq!(desired_replicas(5, 0), 5);
    }

    #[test]
    fn task_counters_and_histogram_are_exposed_with_labels() {
        let m = Metrics::new("w1@host");
        m.task_received("t.add", "celery");
        m.task_started("t.add", "celery");
        m.task_succeeded("t.add", "celery");
        m.task_runtime("t.add", "celery", Duration::from_millis(20));
        m.task_failed("t.add", "celery");
        m.task_runtime("t.add", "celery", Duration::from_millis(2));
        m.broker_reachable(false);
        m.broker_reachable(true);
        let text = block_on(m.render(None));
        assert!(text.contains(
            r#"celery_task_received_total{name="t.add",queue_name="celery",hostname="w1@host"} 1"#
        ), "{text}");
        assert!(text.contains(
            r#"celery_task_succeeded_total{name="t.add",queue_name="celery",hostname="w1@host"} 1"#
        ), "{text}");
        assert!(
            text.contains(
                r#"celery_task_failed_total{name="t.add",queue_name="celery",hostname="w1@host"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"celery_task_runtime_seconds_count{name="t.add",queue_name="celery",hostname="w1@host"} 2"#
        ), "{text}");
        assert!(
            text.contains(r#"celeriac_broker_reconnects_total{hostname="w1@host"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("# TYPE celery_task_runtime_seconds histogram"),
            "{text}"
        );
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }
}

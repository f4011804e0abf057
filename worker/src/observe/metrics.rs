//! Prometheus metrics of a worker: task counters and runtimes named, typed and labelled as
//! celery-exporter names the same things (so its dashboards and alerts work), what this worker
//! holds and runs, the standard `process_*` series, and the queue depth in Redis (every priority
//! list, plus everything unacked) read in one round trip and cached for [`DEPTH_CACHE_TTL`], so
//! many replicas scraped often do not load Redis.
//!
//! More collectors (e.g. caches) are added with [`Metrics::register`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use celeriac_broker_bridge::transport::Depths;
use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::sync::Mutex;

use crate::message::retrying::{Write, WriteCounter};

/// How long one read of the queue depth is reused.
pub(crate) const DEPTH_CACHE_TTL: Duration = Duration::from_secs(1);

/// Task runtime histogram buckets, seconds: celery-exporter's default (Python
/// prometheus_client's `Histogram.DEFAULT_BUCKETS`).
const RUNTIME_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Labels of the task series (besides the constant `hostname`), as celery-exporter's.
const TASK_LABELS: &[&str] = &["name", "queue_name"];

/// What a worker holds and runs at a scrape (read from its runtime by the HTTP endpoints).
#[derive(Debug, Default)]
pub(crate) struct WorkerState {
    /// Tasks running now.
    pub(crate) running: usize,
    /// Of them, those whose message is still held (late ack).
    pub(crate) running_held: usize,
    /// Messages held unacked (waiting, ETA-held, running with late ack).
    pub(crate) held: usize,
    /// ETA-held messages.
    pub(crate) eta_held: usize,
    /// Reservation slots free.
    pub(crate) reservations_free: usize,
    /// Whether a warm shutdown began.
    pub(crate) draining: bool,
    /// Messages dead-lettered since the start.
    pub(crate) dead_lettered: u64,
    /// Blocking-task threads stopped by their hard time limit and still running.
    pub(crate) abandoned_threads: usize,
}

/// Every metric of one worker. Created before the broker connection, shared through
/// the runtime's `metrics`.
pub(crate) struct Metrics {
    registry: Registry,
    received: IntCounterVec,
    started: IntCounterVec,
    succeeded: IntCounterVec,
    failed: IntCounterVec,
    retried: IntCounterVec,
    revoked: IntCounterVec,
    rejected: IntCounterVec,
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
    unacked_eta_held: IntGauge,
    dead_letter_length: IntGauge,
    tasks_active: IntGauge,
    abandoned_threads: IntGauge,
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
    /// Metrics of the worker with node name `nodename`: every series carries the constant label
    /// `hostname`, the host part of the node name (after `@`), as celery-exporter labels it.
    pub(crate) fn new(nodename: &str) -> Metrics {
        let registry = Registry::new_custom(
            None,
            Some([("hostname".into(), host_part(nodename).into())].into()),
        )
        .expect("a fixed, valid label set");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric names");
        let task = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), TASK_LABELS)
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
        let failed = IntCounterVec::new(
            Opts::new(
                "celery_task_failed_total",
                "Tasks that failed, by exception class.",
            ),
            &["name", "exception", "queue_name"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(failed.clone()))
            .expect("unique metric name");
        let runtime = HistogramVec::new(
            HistogramOpts::new(
                "celery_task_runtime",
                "Run time in seconds of the tasks that succeeded.",
            )
            .buckets(RUNTIME_BUCKETS.to_vec()),
            TASK_LABELS,
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
            failed,
            retried: task(
                "celery_task_retried_total",
                "Task retries published by this worker.",
            ),
            revoked: task(
                "celery_task_revoked_total",
                "Tasks revoked: expired or revoked before they ran, or terminated.",
            ),
            rejected: task(
                "celery_task_rejected_total",
                "Task messages rejected: requeued or dead-lettered.",
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
                "Messages of the worker's queues taken by any worker and not acked yet, ETA-held ones excluded (running, prefetched or due).",
            ),
            unacked_eta_held: gauge(
                "celeriac_unacked_eta_held_messages",
                "Messages of the worker's queues held unacked by any worker until an ETA still in the future (reserved, not backlog).",
            ),
            dead_letter_length: gauge(
                "celeriac_dead_letter_length",
                "Elements in the dead-letter list.",
            ),
            tasks_active: gauge(
                "celery_worker_tasks_active",
                "Tasks this worker is running now.",
            ),
            abandoned_threads: gauge(
                "celeriac_worker_abandoned_threads",
                "Threads of blocking tasks stopped by their hard time limit that have not returned yet (each still holds a thread and may use CPU).",
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
                "Reservation slots: the prefetch count (concurrency times the prefetch multiplier); 0: no limit.",
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
    pub(crate) fn register(&self, collector: Box<dyn Collector>) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// Record the worker's concurrency and its number of reservation slots (`None`: no limit,
    /// shown as 0).
    pub(crate) fn set_capacity(&self, concurrency: usize, reservation_slots: Option<usize>) {
        self.concurrency.set(concurrency as i64);
        self.prefetch_capacity
            .set(reservation_slots.unwrap_or(0) as i64);
        self.capacity.store(
            reservation_slots.unwrap_or(tokio::sync::Semaphore::MAX_PERMITS),
            Ordering::Relaxed,
        );
    }

    /// A task message was received. Every outcome series of the task starts at zero here (the
    /// failure one with an empty `exception`), as celery-exporter does, so rates start at once.
    pub(crate) fn task_received(&self, name: &str, queue: &str) {
        let labels = [name, queue];
        let received = self.received.with_label_values(&labels);
        // Counters never go down, so a non-zero count means the series were started already
        // (two first messages at once may both start them, which is harmless).
        let first = received.get() == 0;
        received.inc();
        if !first {
            return;
        }
        for c in [
            &self.started,
            &self.succeeded,
            &self.retried,
            &self.revoked,
            &self.rejected,
        ] {
            c.with_label_values(&labels);
        }
        self.failed.with_label_values(&[name, "", queue]);
    }

    /// A task was revoked (`task-revoked`): expired or revoked before it ran, or terminated.
    pub(crate) fn task_revoked(&self, name: &str, queue: &str) {
        self.revoked.with_label_values(&[name, queue]).inc();
    }

    /// A task message was rejected (`task-rejected`): requeued or dead-lettered.
    pub(crate) fn task_rejected(&self, name: &str, queue: &str) {
        self.rejected.with_label_values(&[name, queue]).inc();
    }

    /// A task started running.
    pub(crate) fn task_started(&self, name: &str, queue: &str) {
        self.started.with_label_values(&[name, queue]).inc();
    }

    /// A task succeeded after running for `runtime`.
    pub(crate) fn task_succeeded(&self, name: &str, queue: &str, runtime: Duration) {
        self.succeeded.with_label_values(&[name, queue]).inc();
        self.runtime
            .with_label_values(&[name, queue])
            .observe(runtime.as_secs_f64());
    }

    /// A task failed for good (`task-failed` with the exception's repr `exception`). A lost run
    /// given back to the queue is not a failure, nor is a retry request.
    pub(crate) fn task_failed(&self, name: &str, queue: &str, exception: &str) {
        self.failed
            .with_label_values(&[name, exception_class(exception), queue])
            .inc();
    }

    /// A task's retry was published (an exhausted retry is a failure instead).
    pub(crate) fn task_retried(&self, name: &str, queue: &str) {
        self.retried.with_label_values(&[name, queue]).inc();
    }

    /// The fetch loop reached the broker (`true`) or failed to (`false`).
    pub(crate) fn broker_reachable(&self, reachable: bool) {
        let was = self.broker_reachable.swap(reachable, Ordering::Relaxed);
        if reachable && !was {
            self.reconnects.inc();
        }
    }

    /// The idle fetch loop was woken by an arrival.
    pub(crate) fn fetch_woken(&self) {
        self.wakeups.inc();
    }

    /// Whether the last fetch reached the broker.
    pub(crate) fn is_broker_reachable(&self) -> bool {
        self.broker_reachable.load(Ordering::Relaxed)
    }

    /// The queue depth of the worker's queues: `read` at most every [`DEPTH_CACHE_TTL`] (given
    /// up after 5 s), else the last read; concurrent callers share one read.
    pub(crate) async fn depths(
        &self,
        read: impl Future<Output = anyhow::Result<Depths>>,
    ) -> anyhow::Result<Depths> {
        let mut cached = self.depths.lock().await;
        if let Some((at, d)) = cached.as_ref() {
            if at.elapsed() < DEPTH_CACHE_TTL {
                return Ok(d.clone());
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), read).await {
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

    /// The Prometheus text exposition of every metric, with the worker's state and its queue
    /// depth (see [`Metrics::depths`]); without them (still connecting) only the counters.
    pub(crate) fn render(&self, worker: Option<(&WorkerState, anyhow::Result<Depths>)>) -> String {
        match worker {
            Some((state, depths)) => {
                self.update_worker(state);
                match depths {
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

    fn update_worker(&self, w: &WorkerState) {
        self.tasks_active.set(w.running as i64);
        self.abandoned_threads.set(w.abandoned_threads as i64);
        self.reserved
            .set(w.held.saturating_sub(w.running_held) as i64);
        self.eta_held.set(w.eta_held as i64);
        let capacity = self.capacity.load(Ordering::Relaxed);
        self.prefetch_in_use
            .set(capacity.saturating_sub(w.reservations_free) as i64);
        self.worker_up.set(i64::from(!w.draining));
        let seen = self
            .dead_lettered_seen
            .swap(w.dead_lettered, Ordering::Relaxed);
        self.dead_lettered
            .inc_by(w.dead_lettered.saturating_sub(seen));
    }

    fn update_depths(&self, d: &Depths) {
        for (queue, n) in &d.queues {
            self.queue_length.with_label_values(&[queue]).set(*n as i64);
        }
        self.unacked.set(d.unacked as i64);
        self.unacked_eta_held.set(d.eta_held as i64);
        self.dead_letter_length.set(d.dead_letter as i64);
    }
}

/// Redis writes retried (`celeriac_redis_write_retries_total`) and given up
/// (`celeriac_redis_write_failures_total`).
impl WriteCounter for Metrics {
    fn retried(&self, write: Write) {
        self.write_retries.with_label_values(&[write.label()]).inc();
    }

    fn failed(&self, write: Write) {
        self.write_failures
            .with_label_values(&[write.label()])
            .inc();
    }
}

/// The host part of a node name (`worker@host` → `host`; a name without `@` is all host), as
/// Celery's `nodesplit` reads it.
pub(crate) fn host_part(nodename: &str) -> &str {
    nodename.split_once('@').map_or(nodename, |(_, host)| host)
}

/// The `exception` label of a failure, from the exception's repr (`ValueError('x')` →
/// `ValueError`): the word before the opening parenthesis, `UnknownException` when there is
/// none, as celery-exporter reads it from `task-failed` events.
pub(crate) fn exception_class(repr: &str) -> &str {
    let word = repr
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(repr.len());
    match repr[word..].starts_with('(') && word > 0 {
        true => &repr[..word],
        false => "UnknownException",
    }
}

/// Replicas needed for `work` messages (waiting plus unacked) at `per_replica` tasks each:
/// `ceil(work / per_replica)`.
pub(crate) fn desired_replicas(work: u64, per_replica: usize) -> u64 {
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
    fn task_series_are_named_and_labelled_as_celery_exporters() {
        let m = Metrics::new("w1@host");
        m.task_received("t.add", "celery");
        m.task_received("t.add", "other");
        m.task_received("t.add", "other");
        m.task_started("t.add", "celery");
        m.task_succeeded("t.add", "celery", Duration::from_millis(20));
        m.task_failed("t.add", "celery", "ValueError('bad')");
        m.broker_reachable(false);
        m.broker_reachable(true);
        let text = m.render(None);
        for line in [
            r#"celery_task_received_total{name="t.add",queue_name="celery",hostname="host"} 1"#,
            r#"celery_task_succeeded_total{name="t.add",queue_name="celery",hostname="host"} 1"#,
            r#"celery_task_retried_total{name="t.add",queue_name="celery",hostname="host"} 0"#,
            r#"celery_task_received_total{name="t.add",queue_name="other",hostname="host"} 2"#,
            r#"celery_task_revoked_total{name="t.add",queue_name="other",hostname="host"} 0"#,
            r#"celery_task_rejected_total{name="t.add",queue_name="celery",hostname="host"} 0"#,
            r#"celery_task_failed_total{exception="",name="t.add",queue_name="celery",hostname="host"} 0"#,
            r#"celery_task_failed_total{exception="ValueError",name="t.add",queue_name="celery",hostname="host"} 1"#,
            r#"celery_task_runtime_bucket{name="t.add",queue_name="celery",hostname="host",le="0.025"} 1"#,
            r#"celery_task_runtime_bucket{name="t.add",queue_name="celery",hostname="host",le="0.01"} 0"#,
            r#"celery_task_runtime_count{name="t.add",queue_name="celery",hostname="host"} 1"#,
            r#"celeriac_broker_reconnects_total{hostname="host"} 1"#,
            "# TYPE celery_task_runtime histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{name}{{"))),
                "{name} in\n{text}"
            );
        }
    }

    #[test]
    fn labels_read_as_celery_exporter_reads_them() {
        assert_eq!(host_part("w1@pod-7"), "pod-7");
        assert_eq!(host_part("a@b@c"), "b@c");
        assert_eq!(host_part("plain"), "plain");
        assert_eq!(exception_class("ValueError('bad')"), "ValueError");
        assert_eq!(exception_class("KeyError(1, 2)"), "KeyError");
        assert_eq!(exception_class("NotRegistered('t.x')"), "NotRegistered");
        assert_eq!(exception_class("mod.Error('x')"), "UnknownException");
        assert_eq!(exception_class("Boom"), "UnknownException");
        assert_eq!(exception_class("(1)"), "UnknownException");
    }

    #[test]
    fn worker_state_write_retries_and_depth_are_rendered() {
        let m = Metrics::new("w1@host");
        m.set_capacity(4, Some(6));
        m.retried(Write::Ack);
        m.retried(Write::Ack);
        m.failed(Write::Result);
        let state = WorkerState {
            running: 2,
            running_held: 1,
            held: 5,
            eta_held: 1,
            reservations_free: 2,
            draining: false,
            dead_lettered: 3,
            abandoned_threads: 1,
        };
        let depths = Depths {
            queues: vec![("celery".into(), 7)],
            unacked: 5,
            eta_held: 1,
            dead_letter: 3,
        };
        let text = m.render(Some((&state, Ok(depths))));
        for line in [
            r#"celeriac_redis_write_retries_total{operation="ack",hostname="host"} 2"#,
            r#"celeriac_redis_write_failures_total{operation="result",hostname="host"} 1"#,
            r#"celeriac_redis_write_failures_total{operation="ack",hostname="host"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        for (name, value) in [
            ("celery_worker_up", 1),
            ("celery_worker_tasks_active", 2),
            ("celeriac_worker_prefetch_slots_in_use", 4),
            ("celeriac_worker_reserved", 4),
            ("celeriac_worker_eta_held", 1),
            ("celeriac_unacked_messages", 5),
            ("celeriac_dead_lettered_total", 3),
            ("celeriac_worker_abandoned_threads", 1),
        ] {
            let line = format!(r#"{name}{{hostname="host"}} {value}"#);
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        let text = m.render(Some((&state, Err(anyhow::anyhow!("down")))));
        assert!(
            text.contains(r#"celeriac_dead_lettered_total{hostname="host"} 3"#),
            "counted once: {text}"
        );
        assert!(m
            .render(None)
            .contains(r#"celery_worker_up{hostname="host"} 0"#));
    }
}

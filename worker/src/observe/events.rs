//! Monitoring events for Flower and `celery events`: task events when `worker_send_task_events`
//! (`-E`) is on; `worker-online`, a `worker-heartbeat` every [`HEARTBEAT_FREQ`] and
//! `worker-offline` always (as a Python worker with heartbeats on). Fire and forget: a failed
//! publish is logged at debug level and never stops a task. With the celeriac setting
//! `events_batch`, task events go out in batched `task.multi` messages, as a Python prefork
//! worker sends them (Celery's `EventReceiver` splits them).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use celeriac_broker_bridge::codec::{args_repr, kwargs_repr, value_repr, TaskMessage};
use celeriac_broker_bridge::events::{publish_batch, publish_event};
use celeriac_broker_bridge::signing::BodySerializer;
use celeriac_broker_bridge::transport::Broker;
use chrono::{Local, Offset};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Seconds between heartbeats (Celery's default `freq`).
pub(crate) const HEARTBEAT_FREQ: f64 = 2.0;
/// What `sw_ident` says.
pub(crate) const SW_IDENT: &str = "celeriac";

/// The event sender: the broker connection and node name events go out with, their serializer
/// (signed with `auth`), whether task events are on, the Lamport clock shared with remote
/// control, and the batch of task events waiting to go out as one `task.multi` message
/// (`events_batch`).
pub(crate) struct Events {
    broker: Broker,
    hostname: String,
    serializer: BodySerializer,
    /// Task events enabled (`-E`, `enable_events` / `disable_events`).
    pub task_events: AtomicBool,
    clock: Clock,
    batch: Option<Batch>,
}

/// A Lamport clock (Celery's `app.clock`).
#[derive(Default)]
pub(crate) struct Clock(AtomicU64);

/// Task events queued for [`batch_loop`].
struct Batch {
    limit: usize,
    tx: mpsc::UnboundedSender<Map<String, Value>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Map<String, Value>>>>,
}

impl Events {
    /// Events of node `hostname` sent on `broker` with `serializer`; task events on or off,
    /// batched in `task.multi` messages of up to `batch` events when `batch` is above 1.
    pub(crate) fn new(
        broker: Broker,
        hostname: String,
        serializer: BodySerializer,
        task_events: bool,
        batch: usize,
    ) -> Self {
        let batch = (batch > 1).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            Batch {
                limit: batch,
                tx,
                rx: Mutex::new(Some(rx)),
            }
        });
        Events {
            broker,
            hostname,
            serializer,
            task_events: AtomicBool::new(task_events),
            clock: Clock::default(),
            batch,
        }
    }

    /// Advance the clock and return the new value.
    pub(crate) fn forward(&self) -> u64 {
        self.clock.forward()
    }

    /// Merge a clock value received from another node (see [`Clock::adjust`]).
    pub(crate) fn adjust(&self, other: u64) -> u64 {
        self.clock.adjust(other)
    }

    /// The clock now.
    pub(crate) fn clock(&self) -> u64 {
        self.clock.now()
    }
}

impl Clock {
    /// Advance the clock and return the new value.
    pub(crate) fn forward(&self) -> u64 {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(1);
            match self
                .0
                .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(c) => cur = c,
            }
        }
    }

    /// Merge a clock value received from another node (Lamport: max + 1; saturates at
    /// `u64::MAX`, where a hostile value cannot wrap it back to 0).
    pub(crate) fn adjust(&self, other: u64) -> u64 {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let next = cur.max(other).saturating_add(1);
            match self
                .0
                .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(c) => cur = c,
            }
        }
    }

    /// The clock now.
    pub(crate) fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Unix time as a float, as `time.time()`.
pub(crate) fn timestamp() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Celery's `utcoffset`: hours to add to local time to get UTC (negative east of UTC), a float.
pub(crate) fn utcoffset() -> f64 {
    let east = Local::now().offset().fix().local_minus_utc();
    -f64::from(east) / 3600.0
}

/// The 1, 5 and 15 minute load averages, rounded up to 2 decimals (zeros when unavailable).
pub(crate) fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (slot, field) in out.iter_mut().zip(text.split_whitespace()) {
        if let Ok(v) = field.parse::<f64>() {
            *slot = (v * 100.0).ceil() / 100.0;
        }
    }
    out
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn time_or_null(t: Option<&celeriac_broker_bridge::codec::WireTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.utc.to_rfc3339()))
}

impl Events {
    fn base(&self, kind: &str) -> Map<String, Value> {
        let mut e = Map::new();
        e.insert("hostname".into(), self.hostname.clone().into());
        e.insert("utcoffset".into(), float(utcoffset()));
        e.insert("pid".into(), std::process::id().into());
        e.insert("clock".into(), self.forward().into());
        e.insert("type".into(), kind.into());
        e.insert("timestamp".into(), float(timestamp()));
        e
    }

    async fn send(&self, event: Map<String, Value>) {
        if let Err(e) = publish_event(&self.broker, &event, &self.hostname, &self.serializer).await
        {
            tracing::debug!(error = %e, "could not send an event");
        }
    }

    async fn send_task(&self, kind: &str, uuid: &str, fields: Vec<(&str, Value)>) {
        if !self.task_events.load(Ordering::Relaxed) {
            return;
        }
        let mut e = self.base(kind);
        e.insert("uuid".into(), uuid.into());
        for (k, v) in fields {
            e.insert(k.into(), v);
        }
        match &self.batch {
            Some(batch) => {
                if let Err(mpsc::error::SendError(e)) = batch.tx.send(e) {
                    self.send(e).await;
                }
            }
            None => self.send(e).await,
        }
    }

    /// With `events_batch`, publish queued task events as `task.multi` messages: each batch
    /// takes what was queued by the time the loop runs again (as a Python worker flushes its
    /// buffer on the next turn of its event loop), up to the limit. At `stop`, what is left is
    /// sent.
    pub(crate) async fn batch_loop(&self, stop: CancellationToken) {
        let Some(batch) = &self.batch else {
            return;
        };
        let Some(mut rx) = batch.rx.lock().expect("events batch lock").take() else {
            return;
        };
        loop {
            let first = tokio::select! {
                e = rx.recv() => e,
                _ = stop.cancelled() => None,
            };
            let Some(first) = first else { break };
            tokio::task::yield_now().await;
            let mut events = vec![first];
            while events.len() < batch.limit {
                match rx.try_recv() {
                    Ok(e) => events.push(e),
                    Err(_) => break,
                }
            }
            self.publish_batch_logged(&events).await;
        }
        let mut rest = Vec::new();
        while let Ok(e) = rx.try_recv() {
            rest.push(e);
            if rest.len() == batch.limit {
                self.publish_batch_logged(&std::mem::take(&mut rest)).await;
            }
        }
        if !rest.is_empty() {
            self.publish_batch_logged(&rest).await;
        }
    }

    async fn publish_batch_logged(&self, events: &[Map<String, Value>]) {
        if let Err(e) = publish_batch(&self.broker, events, &self.hostname, &self.serializer).await
        {
            tracing::debug!(error = %e, events = events.len(), "could not send a batch of events");
        }
    }

    /// `task-received`.
    pub(crate) async fn task_received(&self, msg: &TaskMessage) {
        let args = msg.argsrepr.clone().unwrap_or_else(|| args_repr(&msg.args));
        let kwargs = msg
            .kwargsrepr
            .clone()
            .unwrap_or_else(|| kwargs_repr(&msg.kwargs));
        let fields = vec![
            ("name", msg.task.clone().into()),
            ("args", args.into()),
            ("kwargs", kwargs.into()),
            ("root_id", msg.root_id.clone().into()),
            ("parent_id", msg.parent_id.clone().into()),
            ("retries", msg.retries.into()),
            ("eta", time_or_null(msg.eta.as_ref())),
            ("expires", time_or_null(msg.expires.as_ref())),
        ];
        self.send_task("task-received", &msg.id, fields).await;
    }

    /// `task-started`.
    pub(crate) async fn task_started(&self, id: &str) {
        self.send_task("task-started", id, Vec::new()).await;
    }

    /// `task-succeeded` with the result's repr (truncated to 1024 characters) and the runtime.
    pub(crate) async fn task_succeeded(&self, id: &str, result: &Value, runtime_s: f64) {
        let repr = value_repr(result);
        let fields = vec![("result", repr.into()), ("runtime", float(runtime_s))];
        self.send_task("task-succeeded", id, fields).await;
    }

    /// `task-failed` with the exception's repr and a traceback text.
    pub(crate) async fn task_failed(&self, id: &str, exception: String, traceback: String) {
        let fields = vec![
            ("exception", exception.into()),
            ("traceback", traceback.into()),
        ];
        self.send_task("task-failed", id, fields).await;
    }

    /// `task-retried` with the exception's repr and a traceback text.
    pub(crate) async fn task_retried(&self, id: &str, exception: String, traceback: String) {
        let fields = vec![
            ("exception", exception.into()),
            ("traceback", traceback.into()),
        ];
        self.send_task("task-retried", id, fields).await;
    }

    /// `task-rejected`.
    pub(crate) async fn task_rejected(&self, id: &str, requeue: bool) {
        self.send_task("task-rejected", id, vec![("requeue", requeue.into())])
            .await;
    }

    /// `task-revoked`.
    pub(crate) async fn task_revoked(&self, id: &str, terminated: bool, expired: bool) {
        let signum = if terminated {
            Value::from(15)
        } else {
            Value::Null
        };
        let fields = vec![
            ("terminated", terminated.into()),
            ("signum", signum),
            ("expired", expired.into()),
        ];
        self.send_task("task-revoked", id, fields).await;
    }

    /// A `worker-*` event with `freq`, `active` (tasks running now), `processed` (tasks
    /// finished), `loadavg` and `sw_*`.
    pub(crate) async fn worker_event(&self, kind: &str, (active, processed): (usize, u64)) {
        let mut e = self.base(kind);
        e.insert("freq".into(), float(HEARTBEAT_FREQ));
        e.insert("active".into(), active.into());
        e.insert("processed".into(), processed.into());
        e.insert(
            "loadavg".into(),
            Value::Array(loadavg().iter().map(|v| float(*v)).collect()),
        );
        e.insert("sw_ident".into(), SW_IDENT.into());
        e.insert("sw_ver".into(), env!("CARGO_PKG_VERSION").into());
        e.insert("sw_sys".into(), sw_sys().into());
        self.send(e).await;
    }

    /// `worker-online`, then a heartbeat every [`HEARTBEAT_FREQ`] until `stop`; `load` gives
    /// the tasks running and finished.
    pub(crate) async fn heartbeat_loop(
        &self,
        load: impl Fn() -> (usize, u64),
        stop: CancellationToken,
    ) {
        self.worker_event("worker-online", load()).await;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(HEARTBEAT_FREQ));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.worker_event("worker-heartbeat", load()).await,
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// `repr()` of a Python exception: `ValueError('bad')`, `KeyError(1, 2)`.
pub(crate) fn exception_repr(exc: &crate::task_api::PyException) -> String {
    if let ("celery.exceptions", "Reject", [reason, requeue]) = (
        exc.exc_module.as_str(),
        exc.exc_type.as_str(),
        exc.args.as_slice(),
    ) {
        // Celery's `Reject.__repr__`: `reject requeue=False: <reason>`.
        let reason = match reason {
            serde_json::Value::String(s) => s.clone(),
            other => value_repr(other),
        };
        return format!("reject requeue={}: {reason}", value_repr(requeue));
    }
    match exc.args.as_slice() {
        [one] => format!("{}({})", exc.exc_type, value_repr(one)),
        args => format!("{}{}", exc.exc_type, args_repr(args)),
    }
}

fn sw_sys() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        other => other,
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn the_clock_saturates_instead_of_overflowing() {
        let events = Clock::default();
        assert_eq!(events.adjust(5), 6);
        assert_eq!(events.forward(), 7);
        assert_eq!(events.adjust(u64::MAX - 1), u64::MAX);
        assert_eq!(events.adjust(u64::MAX), u64::MAX);
        assert_eq!(events.forward(), u64::MAX);
        assert_eq!(events.now(), u64::MAX);
    }
}

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
use chrono::{Local, Offset};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::runtime::Runtime;

/// Seconds between heartbeats (Celery's default `freq`).
pub(crate) const HEARTBEAT_FREQ: f64 = 2.0;
/// What `sw_ident` says.
pub(crate) const SW_IDENT: &str = "celeriac";

/// Event state: whether task events are on, the Lamport clock shared with remote control, and
/// the batch of task events waiting to go out as one `task.multi` message (`events_batch`).
pub(crate) struct Events {
    /// Task events enabled (`-E`, `enable_events` / `disable_events`).
    pub task_events: AtomicBool,
    clock: AtomicU64,
    batch: Option<Batch>,
}

/// Task events queued for [`batch_loop`].
struct Batch {
    limit: usize,
    tx: mpsc::UnboundedSender<Map<String, Value>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Map<String, Value>>>>,
}

impl Events {
    /// Task events on or off; batched in `task.multi` messages of up to `batch` events when
    /// `batch` is above 1.
    pub(crate) fn new(task_events: bool, batch: usize) -> Self {
        let batch = (batch > 1).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            Batch {
                limit: batch,
                tx,
                rx: Mutex::new(Some(rx)),
            }
        });
        Events {
            task_events: AtomicBool::new(task_events),
            clock: AtomicU64::new(0),
            batch,
        }
    }

    /// Advance the clock and return the new value.
    pub(crate) fn forward(&self) -> u64 {
        let mut cur = self.clock.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(1);
            match self
                .clock
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
        let mut cur = self.clock.load(Ordering::Relaxed);
        loop {
            let next = cur.max(other).saturating_add(1);
            match self
                .clock
                .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(c) => cur = c,
            }
        }
    }

    /// The clock now.
    pub(crate) fn clock(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
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

fn base(rt: &Runtime, kind: &str) -> Map<String, Value> {
    let mut e = Map::new();
    e.insert("hostname".into(), rt.hostname.clone().into());
    e.insert("utcoffset".into(), float(utcoffset()));
    e.insert("pid".into(), std::process::id().into());
    e.insert("clock".into(), rt.events.forward().into());
    e.insert("type".into(), kind.into());
    e.insert("timestamp".into(), float(timestamp()));
    e
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

async fn send(rt: &Runtime, event: Map<String, Value>) {
    if let Err(e) = publish_event(&rt.broker, &event, &rt.hostname, &rt.signing.events).await {
        tracing::debug!(error = %e, "could not send an event");
    }
}

async fn send_task(rt: &Runtime, kind: &str, uuid: &str, fields: Vec<(&str, Value)>) {
    if !rt.events.task_events.load(Ordering::Relaxed) {
        return;
    }
    let mut e = base(rt, kind);
    e.insert("uuid".into(), uuid.into());
    for (k, v) in fields {
        e.insert(k.into(), v);
    }
    match &rt.events.batch {
        Some(batch) => {
            if let Err(mpsc::error::SendError(e)) = batch.tx.send(e) {
                send(rt, e).await;
            }
        }
        None => send(rt, e).await,
    }
}

/// With `events_batch`, publish queued task events as `task.multi` messages: each batch takes
/// what was queued by the time the loop runs again (as a Python worker flushes its buffer on
/// the next turn of its event loop), up to the limit. At `stop`, what is left is sent.
pub(crate) async fn batch_loop(rt: std::sync::Arc<Runtime>, stop: CancellationToken) {
    let Some(batch) = &rt.events.batch else {
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
        publish_batch_logged(&rt, &events).await;
    }
    let mut rest = Vec::new();
    while let Ok(e) = rx.try_recv() {
        rest.push(e);
        if rest.len() == batch.limit {
            publish_batch_logged(&rt, &std::mem::take(&mut rest)).await;
        }
    }
    if !rest.is_empty() {
        publish_batch_logged(&rt, &rest).await;
    }
}

async fn publish_batch_logged(rt: &Runtime, events: &[Map<String, Value>]) {
    if let Err(e) = publish_batch(&rt.broker, events, &rt.hostname, &rt.signing.events).await {
        tracing::debug!(error = %e, events = events.len(), "could not send a batch of events");
    }
}

fn time_or_null(t: Option<&celeriac_broker_bridge::codec::WireTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.utc.to_rfc3339()))
}

/// `task-received`.
pub(crate) async fn task_received(rt: &Runtime, msg: &TaskMessage) {
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
    send_task(rt, "task-received", &msg.id, fields).await;
}

/// `task-started`.
pub(crate) async fn task_started(rt: &Runtime, id: &str) {
    send_task(rt, "task-started", id, Vec::new()).await;
}

/// `task-succeeded` with the result's repr (truncated to 1024 characters) and the runtime.
pub(crate) async fn task_succeeded(rt: &Runtime, id: &str, result: &Value, runtime_s: f64) {
    let repr = value_repr(result);
    let fields = vec![("result", repr.into()), ("runtime", float(runtime_s))];
    send_task(rt, "task-succeeded", id, fields).await;
}

/// `task-failed` with the exception's repr and a traceback text.
pub(crate) async fn task_failed(rt: &Runtime, id: &str, exception: String, traceback: String) {
    let fields = vec![
        ("exception", exception.into()),
        ("traceback", traceback.into()),
    ];
    send_task(rt, "task-failed", id, fields).await;
}

/// `task-retried` with the exception's repr and a traceback text.
pub(crate) async fn task_retried(rt: &Runtime, id: &str, exception: String, traceback: String) {
    let fields = vec![
        ("exception", exception.into()),
        ("traceback", traceback.into()),
    ];
    send_task(rt, "task-retried", id, fields).await;
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

/// `task-retried` for a retry request (its exception, or `Retry` when it gave none).
pub(crate) async fn task_retried_request(
    rt: &Runtime,
    msg: &TaskMessage,
    request: &crate::task_api::RetryRequest,
) {
    let exc = request
        .exc
        .clone()
        .unwrap_or_else(|| crate::task_api::PyException::new("Retry", "Retry in"));
    let tb = crate::message::results::traceback(msg, &rt.hostname, &exc);
    task_retried(rt, &msg.id, exception_repr(&exc), tb).await;
}

/// `task-rejected`.
pub(crate) async fn task_rejected(rt: &Runtime, id: &str, requeue: bool) {
    send_task(rt, "task-rejected", id, vec![("requeue", requeue.into())]).await;
}

/// `task-revoked`.
pub(crate) async fn task_revoked(rt: &Runtime, id: &str, terminated: bool, expired: bool) {
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
    send_task(rt, "task-revoked", id, fields).await;
}

/// A `worker-*` event with `freq`, `active`, `processed`, `loadavg` and `sw_*`.
pub(crate) async fn worker_event(rt: &Runtime, kind: &str) {
    let mut e = base(rt, kind);
    e.insert("freq".into(), float(HEARTBEAT_FREQ));
    let active = rt.running.lock().map(|r| r.len()).unwrap_or(0);
    e.insert("active".into(), active.into());
    e.insert(
        "processed".into(),
        rt.counters.processed.load(Ordering::Relaxed).into(),
    );
    e.insert(
        "loadavg".into(),
        Value::Array(loadavg().iter().map(|v| float(*v)).collect()),
    );
    e.insert("sw_ident".into(), SW_IDENT.into());
    e.insert("sw_ver".into(), env!("CARGO_PKG_VERSION").into());
    e.insert("sw_sys".into(), sw_sys().into());
    send(rt, e).await;
}

fn sw_sys() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        other => other,
    }
}

/// `worker-online`, then a heartbeat every [`HEARTBEAT_FREQ`] until `stop`.
pub(crate) async fn heartbeat_loop(rt: std::sync::Arc<Runtime>, stop: CancellationToken) {
    worker_event(&rt, "worker-online").await;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(HEARTBEAT_FREQ));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => worker_event(&rt, "worker-heartbeat").await,
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn the_clock_saturates_instead_of_overflowing() {
        let events = Events::new(false, 1);
        assert_eq!(events.adjust(5), 6);
        assert_eq!(events.forward(), 7);
        assert_eq!(events.adjust(u64::MAX - 1), u64::MAX);
        assert_eq!(events.adjust(u64::MAX), u64::MAX);
        assert_eq!(events.forward(), u64::MAX);
    }
}

//! The requests this worker holds, for remote inspection (`active`, `reserved`, `scheduled`,
//! `query_task`) and for `revoke(terminate=True)`: each message from receipt until it leaves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use celeriac_broker_bridge::codec::TaskMessage;
use celeriac_broker_bridge::transport::Delivery;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::runtime::Runtime;

/// Where a held request is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stage {
    /// Waiting for an execution slot.
    Reserved,
    /// Waiting for its ETA.
    Scheduled(DateTime<Utc>),
    /// Running since this unix time.
    Active(f64),
}

/// The priority Celery's consumer gives the timer entry of every ETA task (`call_at(eta, ...,
/// priority=6)`), which `inspect scheduled` reports.
const ETA_TIMER_PRIORITY: u8 = 6;

/// One held request.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The task id.
    pub id: String,
    /// The task name.
    pub name: String,
    args: Value,
    kwargs: Value,
    delivery_info: Value,
    /// Where it is.
    pub stage: Stage,
    /// Whether the message is acked.
    pub acknowledged: bool,
    /// Its stamps (Celery's `Request.stamps`: name → value).
    pub stamps: Map<String, Value>,
}

impl Request {
    /// Celery's `Request.info()`.
    pub(crate) fn info(&self, hostname: &str) -> Value {
        let time_start = match self.stage {
            Stage::Active(t) => serde_json::Number::from_f64(t).map_or(Value::Null, Value::Number),
            _ => Value::Null,
        };
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "args": self.args,
            "kwargs": self.kwargs,
            "type": self.name,
            "hostname": hostname,
            "time_start": time_start,
            "acknowledged": self.acknowledged,
            "delivery_info": self.delivery_info,
            // Celery's is the pool process running it: none before the run starts.
            "worker_pid": match self.stage {
                Stage::Active(_) => Value::from(std::process::id()),
                _ => Value::Null,
            },
        })
    }

    /// The `scheduled` entry: `{"eta", "priority", "request"}`. `priority` is that of Celery's
    /// timer entry, which its consumer sets to 6 for every ETA task (the message's priority is
    /// in `request.delivery_info`).
    pub(crate) fn scheduled_info(&self, hostname: &str) -> Option<Value> {
        match self.stage {
            Stage::Scheduled(eta) => Some(serde_json::json!({
                "eta": eta.to_rfc3339(),
                "priority": ETA_TIMER_PRIORITY,
                "request": self.info(hostname),
            })),
            _ => None,
        }
    }
}

/// Held requests by delivery tag, and per-task-name totals.
#[derive(Default)]
pub(crate) struct Tracked {
    requests: Mutex<HashMap<String, Request>>,
    totals: Mutex<HashMap<String, u64>>,
}

/// Stops tracking a request when dropped (whatever way the message leaves the worker).
pub(crate) struct TrackGuard {
    rt: Arc<Runtime>,
    tag: String,
}

impl Drop for TrackGuard {
    fn drop(&mut self) {
        if let Ok(mut r) = self.rt.tracked.requests.lock() {
            r.remove(&self.tag);
        }
    }
}

impl Tracked {
    /// Start tracking a received message; tracking ends when the guard is dropped.
    pub(crate) fn received(
        rt: &Arc<Runtime>,
        delivery: &Delivery,
        msg: &TaskMessage,
    ) -> TrackGuard {
        let mut info = Map::new();
        info.insert("exchange".into(), delivery.exchange.clone().into());
        info.insert("routing_key".into(), delivery.routing_key.clone().into());
        info.insert("priority".into(), delivery.priority.into());
        info.insert("redelivered".into(), msg.redelivered.into());
        let request = Request {
            id: msg.id.clone(),
            name: msg.task.clone(),
            args: Value::Array(msg.args.clone()),
            kwargs: Value::Object(msg.kwargs.clone()),
            delivery_info: Value::Object(info),
            stage: Stage::Reserved,
            acknowledged: false,
            stamps: crate::message::revoked::request_stamps(msg),
        };
        rt.tracked
            .requests
            .lock()
            .expect("tracked lock")
            .insert(delivery.delivery_tag.clone(), request);
        TrackGuard {
            rt: rt.clone(),
            tag: delivery.delivery_tag.clone(),
        }
    }

    /// Move a request to another stage.
    pub(crate) fn set_stage(&self, tag: &str, stage: Stage) {
        if let Some(r) = self.requests.lock().expect("tracked lock").get_mut(tag) {
            if matches!(stage, Stage::Active(_)) {
                *self
                    .totals
                    .lock()
                    .expect("totals lock")
                    .entry(r.name.clone())
                    .or_default() += 1;
            }
            r.stage = stage;
        }
    }

    /// Mark a request acked.
    pub(crate) fn set_acked(&self, tag: &str) {
        if let Some(r) = self.requests.lock().expect("tracked lock").get_mut(tag) {
            r.acknowledged = true;
        }
    }

    /// Snapshot of the held requests.
    pub(crate) fn all(&self) -> Vec<Request> {
        self.requests
            .lock()
            .expect("tracked lock")
            .values()
            .cloned()
            .collect()
    }

    /// The delivery tags of the requests with task id `id`.
    pub(crate) fn tags_of(&self, id: &str) -> Vec<String> {
        self.requests
            .lock()
            .expect("tracked lock")
            .iter()
            .filter(|(_, r)| r.id == id)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Tasks started since the worker started, by name (`stats.total`).
    pub(crate) fn totals(&self) -> HashMap<String, u64> {
        self.totals.lock().expect("totals lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(stage: Stage) -> Request {
        Request {
            id: "id".into(),
            name: "t.add".into(),
            args: serde_json::json!([1, 2]),
            kwargs: serde_json::json!({}),
            delivery_info: serde_json::json!({"priority": 0}),
            stage,
            acknowledged: false,
            stamps: Map::new(),
        }
    }

    #[test]
    fn scheduled_entries_read_as_celerys() {
        let eta = Utc::now();
        let entry = request(Stage::Scheduled(eta))
            .scheduled_info("w@h")
            .expect("scheduled");
        assert_eq!(entry["priority"], 6, "{entry}");
        assert_eq!(entry["request"]["worker_pid"], Value::Null, "{entry}");
        assert_eq!(entry["request"]["delivery_info"]["priority"], 0, "{entry}");
        assert!(request(Stage::Reserved).scheduled_info("w@h").is_none());
    }

    #[test]
    fn only_a_running_request_has_a_worker_pid() {
        assert_eq!(
            request(Stage::Reserved).info("w@h")["worker_pid"],
            Value::Null
        );
        assert_eq!(
            request(Stage::Active(1.0)).info("w@h")["worker_pid"],
            std::process::id()
        );
    }
}

//! [`Signature`]: a task call to send, with Celery's options, and the canvas builders
//! [`chain`], [`group`] and [`chord`] — the same dicts Python's `add.s(2, 3)`, `chain(...)`,
//! `group(...)` and `chord(...)` serialize to.

use celeriac_broker_bridge::codec;
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// A task call: name, arguments and `apply_async` options (Celery's `Signature`).
///
/// Built with chained methods; options are stored under Celery's names, so the signature
/// travels inside messages (links, chain steps, chord bodies) exactly as Python writes it.
///
/// ```
/// use celeriac_worker::client::Signature;
/// use serde_json::json;
///
/// let sig = Signature::new("tasks.add").arg(2).arg(3).queue("high").countdown(10.0);
/// assert_eq!(sig.to_value()["options"], json!({"queue": "high", "countdown": 10.0}));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    wire: codec::Signature,
}

impl Signature {
    /// A call of the task registered as `name` (`app.signature(name)`), no arguments yet.
    pub fn new(name: impl Into<String>) -> Self {
        Signature {
            wire: codec::Signature::new(name, Vec::new(), Map::new()),
        }
    }

    /// Read a signature dict as Celery serializes it.
    pub fn from_value(value: &Value) -> Result<Self, codec::DecodeErrorKind> {
        codec::Signature::from_value(value, "signature").map(Self::from)
    }

    /// The signature dict as Celery serializes it.
    pub fn to_value(&self) -> Value {
        self.wire.to_value()
    }

    /// The wire form.
    pub fn as_wire(&self) -> &codec::Signature {
        &self.wire
    }

    /// The task name.
    pub fn name(&self) -> &str {
        &self.wire.task
    }

    /// Append one positional argument.
    pub fn arg(mut self, value: impl Into<Value>) -> Self {
        self.wire.args.push(value.into());
        self
    }

    /// Replace the positional arguments.
    pub fn args(mut self, args: impl IntoIterator<Item = Value>) -> Self {
        self.wire.args = args.into_iter().collect();
        self
    }

    /// Set one keyword argument.
    pub fn kwarg(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.wire.kwargs.insert(name.into(), value.into());
        self
    }

    /// Replace the keyword arguments.
    pub fn kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        self.wire.kwargs = kwargs;
        self
    }

    /// Immutable (Celery's `.si()`): a parent's result is not prepended to the arguments.
    pub fn immutable(mut self) -> Self {
        self.wire.immutable = true;
        self
    }

    /// Any `apply_async` option under its Celery name (`option("retries", 3)`).
    pub fn option(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.wire.options.insert(name.into(), value.into());
        self
    }

    /// The queue to send to (default: the client's default queue, `celery`).
    pub fn queue(self, queue: impl Into<String>) -> Self {
        self.option("queue", queue.into())
    }

    /// Run no earlier than `seconds` after sending.
    pub fn countdown(self, seconds: f64) -> Self {
        self.option("countdown", seconds)
    }

    /// Run no earlier than `eta`.
    pub fn eta(self, eta: DateTime<Utc>) -> Self {
        self.option("eta", codec::WireTime::from_utc(eta).raw)
    }

    /// Expire (revoked, not run) `seconds` after sending.
    pub fn expires_in(self, seconds: f64) -> Self {
        self.option("expires", seconds)
    }

    /// Expire (revoked, not run) at `at`.
    pub fn expires_at(self, at: DateTime<Utc>) -> Self {
        self.option("expires", codec::WireTime::from_utc(at).raw)
    }

    /// Message priority, 0–9 (on Redis, 0 is served first).
    pub fn priority(self, priority: u8) -> Self {
        self.option("priority", priority)
    }

    /// The task id (default: a fresh UUID4).
    pub fn task_id(self, id: impl Into<String>) -> Self {
        self.option("task_id", id.into())
    }

    /// The hard time limit in seconds for this call.
    pub fn time_limit(self, seconds: f64) -> Self {
        self.option("time_limit", seconds)
    }

    /// The soft time limit in seconds for this call.
    pub fn soft_time_limit(self, seconds: f64) -> Self {
        self.option("soft_time_limit", seconds)
    }

    /// Do not store the result (overrides the task's setting).
    pub fn ignore_result(self, ignore: bool) -> Self {
        self.option("ignore_result", ignore)
    }

    /// The name shown in logs and events instead of the task name.
    pub fn shadow(self, name: impl Into<String>) -> Self {
        self.option("shadow", name.into())
    }

    /// A custom message header (`apply_async(headers={...})`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let headers = self
            .wire
            .options
            .entry("headers")
            .or_insert_with(|| Value::Object(Map::new()));
        if !headers.is_object() {
            *headers = Value::Object(Map::new());
        }
        if let Value::Object(h) = headers {
            h.insert(name.into(), value.into());
        }
        self
    }

    /// A stamp (`sig.stamp(name=value)`): sent in the `stamps` header and listed in
    /// `stamped_headers`.
    pub fn stamp(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        push(
            &mut self.wire.options,
            "stamped_headers",
            Value::from(name.as_str()),
        );
        self.wire.options.insert(name, value.into());
        self
    }

    /// A callback applied with this task's result when it succeeds (`link`).
    pub fn link(mut self, callback: Signature) -> Self {
        push(&mut self.wire.options, "link", callback.to_value());
        self
    }

    /// A callback applied with this task's id when it fails (`link_error`).
    pub fn link_error(mut self, errback: Signature) -> Self {
        push(&mut self.wire.options, "link_error", errback.to_value());
        self
    }

    /// The wire form (e.g. for `TaskError::replace`).
    pub fn into_wire(self) -> codec::Signature {
        self.wire
    }
}

/// Serialized as the signature dict, so a task can return a canvas as its result
/// (`Result<Signature, TaskError>`), as a Python task returns `chain(...)`.
impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl From<codec::Signature> for Signature {
    fn from(wire: codec::Signature) -> Self {
        Signature { wire }
    }
}

impl From<Signature> for codec::Signature {
    fn from(sig: Signature) -> Self {
        sig.wire
    }
}

fn push(options: &mut Map<String, Value>, key: &str, value: Value) {
    let slot = options
        .entry(key)
        .or_insert_with(|| Value::Array(Vec::new()));
    match slot {
        Value::Array(items) => items.push(value),
        other => *other = Value::Array(vec![other.take(), value]),
    }
}

fn canvas(task: &str, kind: &str, kwargs: Map<String, Value>) -> Signature {
    let mut wire = codec::Signature::new(task, Vec::new(), kwargs);
    wire.subtask_type = Some(kind.into());
    Signature { wire }
}

fn list(sigs: impl IntoIterator<Item = Signature>) -> Value {
    Value::Array(sigs.into_iter().map(|s| s.to_value()).collect())
}

/// Steps run one after another, each result prepended to the next step's arguments (Celery's
/// `chain(a, b, c)`); its result is the last step's.
pub fn chain(steps: impl IntoIterator<Item = Signature>) -> Signature {
    let mut kwargs = Map::new();
    kwargs.insert("tasks".into(), list(steps));
    canvas("celery.chain", "chain", kwargs)
}

/// Tasks run in parallel (Celery's `group(a, b, c)`); send it with
/// [`Client::send_group`](super::Client::send_group) to get a [`GroupResult`](super::GroupResult).
pub fn group(tasks: impl IntoIterator<Item = Signature>) -> Signature {
    let mut kwargs = Map::new();
    kwargs.insert("tasks".into(), list(tasks));
    canvas("celery.group", "group", kwargs)
}

/// `body` applied with the list of the `header` tasks' results once they all succeeded
/// (Celery's `chord(header, body)`); its result is the body's. The header is a list of
/// signatures, as Python's chord holds it until it is frozen (sending it makes it a group).
pub fn chord(header: impl IntoIterator<Item = Signature>, body: Signature) -> Signature {
    let mut kwargs = Map::new();
    kwargs.insert("kwargs".into(), Value::Object(Map::new()));
    kwargs.insert("header".into(), list(header));
    kwargs.insert("body".into(), body.to_value());
    canvas("celery.chord", "chord", kwargs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_use_celery_names() {
        let sig = Signature::new("t.add")
            .arg(2)
            .kwarg("b", 3)
            .header("tenant", 42)
            .stamp("tags", json!(["a"]))
            .link(Signature::new("t.mul").arg(4))
            .link_error(Signature::new("t.err").immutable());
        let v = sig.to_value();
        assert_eq!(v["args"], json!([2]));
        assert_eq!(v["kwargs"], json!({"b": 3}));
        assert_eq!(v["options"]["headers"], json!({"tenant": 42}));
        assert_eq!(v["options"]["stamped_headers"], json!(["tags"]));
        assert_eq!(v["options"]["tags"], json!(["a"]));
        assert_eq!(v["options"]["link"][0]["task"], "t.mul");
        assert_eq!(v["options"]["link_error"][0]["immutable"], true);
        assert_eq!(Signature::from_value(&v).unwrap(), sig);
    }

    #[test]
    fn canvas_dicts_as_celery_writes_them() {
        let c = chord([Signature::new("t.a")], Signature::new("t.sum"));
        let v = c.to_value();
        assert_eq!(v["task"], "celery.chord");
        assert_eq!(v["subtask_type"], "chord");
        let keys: Vec<&String> = v["kwargs"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["kwargs", "header", "body"]);
        assert_eq!(v["kwargs"]["header"][0]["task"], "t.a");
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            v,
            "serialized as its dict"
        );
        assert_eq!(
            chain([Signature::new("t.a")]).to_value()["kwargs"]["tasks"][0]["task"],
            "t.a"
        );
    }

    /// Python's `kombu.utils.json.dumps` of `chain(chain([add.s()]))` and
    /// `chord(chord([add.s()], add.s()), add.s())` (unfrozen, as a task returns them).
    #[test]
    fn unfrozen_canvases_byte_for_byte() {
        let add = || Signature::new("t.add");
        let same = |sig: Signature, python: &str| {
            let python: Value = serde_json::from_str(python).unwrap();
            assert_eq!(
                serde_json::to_string(&sig).unwrap(),
                serde_json::to_string(&python).unwrap()
            );
        };
        same(
            chain([chain([add()])]),
            r#"{"task": "celery.chain", "args": [], "kwargs": {"tasks": [{"task": "celery.chain", "args": [], "kwargs": {"tasks": [{"task": "t.add", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}]}, "options": {}, "subtask_type": "chain", "immutable": false}]}, "options": {}, "subtask_type": "chain", "immutable": false}"#,
        );
        same(
            chord([chord([add()], add())], add()),
            r#"{"task": "celery.chord", "args": [], "kwargs": {"kwargs": {}, "header": [{"task": "celery.chord", "args": [], "kwargs": {"kwargs": {}, "header": [{"task": "t.add", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}], "body": {"task": "t.add", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}}, "options": {}, "subtask_type": "chord", "immutable": false}], "body": {"task": "t.add", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}}, "options": {}, "subtask_type": "chord", "immutable": false}"#,
        );
    }
}

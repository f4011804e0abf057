//! The lines exchanged with a task process: requests on its stdin, replies on its stdout.
//!
//! Parent → child, one JSON object a line: `{"run": {"id", "task", "args", "kwargs"}}` or
//! `{"soft_limit": "<id>"}`. Child → parent: [`REPLY_PREFIX`] then `{"id", "ok": value}` or
//! `{"id", "error": {...}}`; other stdout lines (a task's own prints) are passed to the log.

use std::time::Duration;

use celeriac_broker_bridge::codec::Signature;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::task_api::{PyException, RetryRequest, TaskError};

/// Starts every reply line, so a task printing to stdout cannot be taken for a reply.
pub(crate) const REPLY_PREFIX: &str = "\u{1e}celeriac-process-reply ";

/// One run asked of a child.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunRequest {
    /// Task id.
    pub id: String,
    /// Registered task name.
    pub task: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
}

/// A line a child reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ToChild {
    /// Run a task.
    Run(RunRequest),
    /// The soft time limit of run `id` passed.
    SoftLimit(String),
}

impl ToChild {
    /// The JSON line (without the newline).
    pub(crate) fn to_line(&self) -> String {
        match self {
            ToChild::Run(r) => json!({"run": {
                "id": r.id, "task": r.task, "args": r.args, "kwargs": r.kwargs,
            }}),
            ToChild::SoftLimit(id) => json!({ "soft_limit": id }),
        }
        .to_string()
    }

    /// Parse a line; `None` for anything else.
    pub(crate) fn parse(line: &str) -> Option<ToChild> {
        let v: Value = serde_json::from_str(line).ok()?;
        if let Some(id) = v.get("soft_limit").and_then(Value::as_str) {
            return Some(ToChild::SoftLimit(id.to_string()));
        }
        let run = v.get("run")?;
        Some(ToChild::Run(RunRequest {
            id: run.get("id")?.as_str()?.to_string(),
            task: run.get("task")?.as_str()?.to_string(),
            args: run.get("args")?.as_array()?.clone(),
            kwargs: run.get("kwargs")?.as_object()?.clone(),
        }))
    }
}

/// The reply line of run `id` (with [`REPLY_PREFIX`], without the newline).
pub(crate) fn reply_line(id: &str, outcome: &Result<Value, TaskError>) -> String {
    let body = match outcome {
        Ok(v) => json!({"id": id, "ok": v}),
        Err(e) => json!({"id": id, "error": error_to_value(e)}),
    };
    format!("{REPLY_PREFIX}{body}")
}

/// Parse a reply line: the run id and its outcome. `None` when the line is not a reply.
pub(crate) fn parse_reply(line: &str) -> Option<(String, Result<Value, TaskError>)> {
    let v: Value = serde_json::from_str(line.strip_prefix(REPLY_PREFIX)?).ok()?;
    let id = v.get("id")?.as_str()?.to_string();
    if let Some(ok) = v.get("ok") {
        return Some((id, Ok(ok.clone())));
    }
    Some((id, Err(error_from_value(v.get("error")?)?)))
}

fn exc_to_value(e: &PyException) -> Value {
    json!({"exc_type": e.exc_type, "exc_module": e.exc_module, "args": e.args})
}

fn exc_from_value(v: &Value) -> Option<PyException> {
    Some(PyException {
        exc_type: v.get("exc_type")?.as_str()?.to_string(),
        exc_module: v.get("exc_module")?.as_str()?.to_string(),
        args: v.get("args")?.as_array()?.clone(),
    })
}

fn error_to_value(e: &TaskError) -> Value {
    match e {
        TaskError::Fail(exc) => json!({ "fail": exc_to_value(exc) }),
        TaskError::Retry(r) => json!({"retry": {
            "countdown": r.countdown.map(|d| d.as_secs_f64()),
            "eta": r.eta.map(|t| t.to_rfc3339()),
            "max_retries": r.max_retries,
            "exc": r.exc.as_ref().map(exc_to_value),
            "args": r.args,
            "kwargs": r.kwargs,
            "expires": r.expires.map(|t| t.to_rfc3339()),
            "queue": r.queue,
            "priority": r.priority,
        }}),
        TaskError::Reject { reason, requeue } => {
            json!({"reject": {"reason": reason, "requeue": requeue}})
        }
        TaskError::Replace(sig) => json!({ "replace": sig.to_value() }),
    }
}

fn error_from_value(v: &Value) -> Option<TaskError> {
    if let Some(exc) = v.get("fail") {
        return exc_from_value(exc).map(TaskError::Fail);
    }
    if let Some(r) = v.get("retry") {
        let countdown = r
            .get("countdown")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let eta = r
            .get("eta")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        let max_retries = r
            .get("max_retries")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        let exc = r.get("exc").and_then(exc_from_value);
        let expires = r
            .get("expires")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        return Some(TaskError::Retry(Box::new(RetryRequest {
            countdown,
            eta,
            max_retries,
            exc,
            args: r.get("args").and_then(Value::as_array).cloned(),
            kwargs: r.get("kwargs").and_then(Value::as_object).cloned(),
            expires,
            queue: r.get("queue").and_then(Value::as_str).map(str::to_string),
            priority: r
                .get("priority")
                .and_then(Value::as_u64)
                .and_then(|p| u8::try_from(p).ok()),
        })));
    }
    if let Some(r) = v.get("reject") {
        return Some(TaskError::Reject {
            reason: r.get("reason")?.as_str()?.to_string(),
            requeue: r.get("requeue")?.as_bool()?,
        });
    }
    if let Some(sig) = v.get("replace") {
        return Signature::from_value(sig, "replace")
            .ok()
            .map(TaskError::replace);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let run = ToChild::Run(RunRequest {
            id: "a1".into(),
            task: "t.spin".into(),
            args: vec![json!(5), json!("x")],
            kwargs: json!({"k": [1, 2]}).as_object().unwrap().clone(),
        });
        assert_eq!(ToChild::parse(&run.to_line()), Some(run));
        let soft = ToChild::SoftLimit("a1".into());
        assert_eq!(ToChild::parse(&soft.to_line()), Some(soft));
        assert_eq!(ToChild::parse("hello"), None);

        let outcomes = [
            Ok(json!({"n": 18446744073709551615u64})),
            Err(TaskError::fail("ValueError", "bad")),
            Err(TaskError::retry_in(Duration::from_millis(1500))
                .max_retries(4)
                .because(PyException::new("IOError", "later"))),
            Err(TaskError::retry()
                .with_args(vec![json!(2), json!(3)])
                .with_kwargs(json!({"label": "kept"}).as_object().unwrap().clone())
                .expires_at(DateTime::from_timestamp(1_900_000_000, 123_456_000).unwrap())
                .queue("slow")
                .priority(9)),
            Err(TaskError::reject("no", true)),
            Err(TaskError::replace(Signature::new(
                "t.add",
                vec![json!(1), json!(2)],
                Map::new(),
            ))),
        ];
        for outcome in outcomes {
            let line = reply_line("a1", &outcome);
            assert!(!line[1..].contains('\n'));
            let (id, back) = parse_reply(&line).expect("a reply");
            assert_eq!(id, "a1");
            match (&outcome, &back) {
                (Err(TaskError::Replace(a)), Err(TaskError::Replace(b))) => {
                    assert_eq!(a.to_value(), b.to_value())
                }
                _ => assert_eq!(back, outcome),
            }
        }
        assert_eq!(parse_reply("{\"id\": \"a1\", \"ok\": 1}"), None);
    }
}

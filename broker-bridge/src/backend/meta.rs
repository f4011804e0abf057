//! The task meta stored in `celery-task-meta-<id>`: fields, order and formats as Celery 5.7
//! writes them (`celery/backends/base.py` `_get_result_meta` and `_store_result`).

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::{json, Map, Value};

use super::exception::ExceptionInfo;
use super::python_json;
use super::states::TaskState;

/// Request fields added to the meta when `result_extended` is on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExtendedMeta {
    /// Task name.
    pub name: Option<String>,
    /// Positional arguments (a JSON array as received).
    pub args: Value,
    /// Keyword arguments (a JSON object as received).
    pub kwargs: Value,
    /// Hostname of the worker (`celery@host`).
    pub worker: Option<String>,
    /// Retry count of this execution.
    pub retries: Option<u64>,
    /// `delivery_info.routing_key` of the message.
    pub queue: Option<String>,
    /// The message's `stamped_headers`; written, with each stamp, only when `stamps` is not empty.
    pub stamped_headers: Vec<String>,
    /// The message's stamps (header name → value).
    pub stamps: Map<String, Value>,
}

/// One task meta, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMeta {
    /// The task id (Celery ids are arbitrary strings).
    pub task_id: String,
    /// The state.
    pub status: TaskState,
    /// SUCCESS: the return value; FAILURE/RETRY/REVOKED: [`ExceptionInfo::to_json`];
    /// STARTED: `{"pid", "hostname"}`; RETRY without exception: `null`.
    pub result: Value,
    /// The formatted traceback, if any.
    pub traceback: Option<String>,
    /// Result tuples of tasks published by this task (`[["<id>", null], null]` each).
    /// `None` writes `null`, as Celery does for a meta stored outside any task request.
    pub children: Option<Vec<Value>>,
    /// When the task finished: set for ready states, `null` otherwise.
    pub date_done: Option<DateTime<Utc>>,
    /// The request's group id (written only when set).
    pub group_id: Option<String>,
    /// The request's parent task id (written only when set).
    pub parent_id: Option<String>,
    /// Request fields for `result_extended` (written only when that option is on).
    pub extended: Option<ExtendedMeta>,
}

impl TaskMeta {
    /// A meta for any state and result; `date_done` is now for ready states, else none;
    /// `children` is `[]`.
    pub fn new(task_id: impl Into<String>, status: TaskState, result: Value) -> Self {
        TaskMeta {
            task_id: task_id.into(),
            status,
            result,
            traceback: None,
            children: Some(Vec::new()),
            date_done: status.is_ready().then(Utc::now),
            group_id: None,
            parent_id: None,
            extended: None,
        }
    }

    /// SUCCESS with the task's return value (kombu JSON: tagged types stay tagged).
    pub fn success(task_id: impl Into<String>, value: Value) -> Self {
        Self::new(task_id, TaskState::Success, value)
    }

    /// FAILURE with the exception and its formatted traceback.
    pub fn failure(
        task_id: impl Into<String>,
        exc: &ExceptionInfo,
        traceback: Option<String>,
    ) -> Self {
        Self::new(task_id, TaskState::Failure, exc.to_json()).with_traceback(traceback)
    }

    /// STARTED with `{"pid": <pid>, "hostname": <hostname>}`.
    pub fn started(task_id: impl Into<String>, hostname: &str, pid: u32) -> Self {
        Self::new(
            task_id,
            TaskState::Started,
            json!({"pid": pid, "hostname": hostname}),
        )
    }

    /// RETRY with the exception that caused it (`None` → `null`, as `self.retry()` without `exc`).
    pub fn retry(
        task_id: impl Into<String>,
        exc: Option<&ExceptionInfo>,
        traceback: Option<String>,
    ) -> Self {
        let result = exc.map_or(Value::Null, ExceptionInfo::to_json);
        Self::new(task_id, TaskState::Retry, result).with_traceback(traceback)
    }

    /// REVOKED with `TaskRevokedError(reason)` and no traceback.
    pub fn revoked(task_id: impl Into<String>, reason: &str) -> Self {
        Self::new(
            task_id,
            TaskState::Revoked,
            ExceptionInfo::task_revoked(reason).to_json(),
        )
    }

    /// Set the traceback.
    pub fn with_traceback(mut self, traceback: Option<String>) -> Self {
        self.traceback = traceback;
        self
    }

    /// Set the group and parent ids of the request.
    pub fn with_request_ids(mut self, group_id: Option<String>, parent_id: Option<String>) -> Self {
        self.group_id = group_id;
        self.parent_id = parent_id;
        self
    }

    /// Set the `result_extended` request fields.
    pub fn with_extended(mut self, extended: ExtendedMeta) -> Self {
        self.extended = Some(extended);
        self
    }

    /// The JSON object Celery would store, keys in Celery's order. Extended fields are included
    /// only when `result_extended` is true and [`TaskMeta::extended`] is set.
    pub fn to_json(&self, result_extended: bool) -> Value {
        let mut m = Map::new();
        m.insert("status".into(), Value::from(self.status.as_str()));
        m.insert("result".into(), self.result.clone());
        m.insert(
            "traceback".into(),
            self.traceback.clone().map_or(Value::Null, Value::String),
        );
        m.insert(
            "children".into(),
            self.children.clone().map_or(Value::Null, Value::Array),
        );
        m.insert(
            "date_done".into(),
            self.date_done
                .map_or(Value::Null, |d| Value::String(python_isoformat(d))),
        );
        if let Some(g) = self.group_id.as_ref().filter(|g| !g.is_empty()) {
            m.insert("group_id".into(), Value::from(g.as_str()));
        }
        if let Some(p) = self.parent_id.as_ref().filter(|p| !p.is_empty()) {
            m.insert("parent_id".into(), Value::from(p.as_str()));
        }
        if let (true, Some(ext)) = (result_extended, &self.extended) {
            let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
            m.insert("name".into(), opt(&ext.name));
            m.insert("args".into(), ext.args.clone());
            m.insert("kwargs".into(), ext.kwargs.clone());
            m.insert("worker".into(), opt(&ext.worker));
            m.insert(
                "retries".into(),
                ext.retries.map_or(Value::Null, Value::from),
            );
            m.insert("queue".into(), opt(&ext.queue));
            if !ext.stamps.is_empty() {
                m.insert(
                    "stamped_headers".into(),
                    Value::from(ext.stamped_headers.clone()),
                );
                for (k, v) in &ext.stamps {
                    if ext.stamped_headers.contains(k) {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        m.insert("task_id".into(), Value::from(self.task_id.as_str()));
        Value::Object(m)
    }

    /// The stored bytes: [`TaskMeta::to_json`] as Python's `json.dumps` writes it.
    pub fn encode(&self, result_extended: bool) -> Vec<u8> {
        python_json::to_vec(&self.to_json(result_extended))
    }
}

/// Python's `datetime.isoformat()` of an aware UTC datetime: microseconds, omitted when zero,
/// and `+00:00`.
pub fn python_isoformat(d: DateTime<Utc>) -> String {
    let micros = d.nanosecond() / 1_000 % 1_000_000;
    // A leap second (nanoseconds past 1e9) shows as :60, as chrono's `%S` writes it.
    let second = d.second() + u32::from(d.nanosecond() >= 1_000_000_000);
    let (year, month, day) = (d.year(), d.month(), d.day());
    let (hour, minute) = (d.hour(), d.minute());
    let Ok(year4 @ 0..=9999) = u32::try_from(year) else {
        let base = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
        return if micros == 0 {
            base + "+00:00"
        } else {
            format!("{base}.{micros:06}+00:00")
        };
    };
    // Written digit by digit: this runs for every stored result, and `format!` costs several
    // times more.
    let mut out = String::with_capacity(32);
    for (sep, value, width) in [
        ("", year4, 4),
        ("-", month, 2),
        ("-", day, 2),
        ("T", hour, 2),
        (":", minute, 2),
        (":", second, 2),
    ] {
        out.push_str(sep);
        push_digits(&mut out, value, width);
    }
    if micros != 0 {
        out.push('.');
        push_digits(&mut out, micros, 6);
    }
    out.push_str("+00:00");
    out
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        out.push(char::from(b'0' + (value / div % 10) as u8));
        div /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn isoformat_like_python() {
        let d = Utc.with_ymd_and_hms(2026, 11, 21, 23, 44, 34).unwrap();
        assert_eq!(python_isoformat(d), "2026-11-21T23:44:34+00:00");
        let d = d + chrono::Duration::microseconds(32731);
        assert_eq!(python_isoformat(d), "2026-11-21T23:44:34.032731+00:00");
        let d = d + chrono::Duration::nanoseconds(999);
        assert_eq!(python_isoformat(d), "2026-11-21T23:44:34.032731+00:00");
        let d = Utc.with_ymd_and_hms(7, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(python_isoformat(d), "0007-01-02T03:04:05+00:00");
        let d = Utc.with_ymd_and_hms(12345, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(python_isoformat(d), "12345-01-02T03:04:05+00:00");
    }

    #[test]
    fn success_field_order() {
        let mut m = TaskMeta::success("id-1", json!(42));
        m.date_done = Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
        assert_eq!(
            String::from_utf8(m.encode(false)).unwrap(),
            r#"{"status": "SUCCESS", "result": 42, "traceback": null, "children": [], "date_done": "2026-01-02T03:04:05+00:00", "task_id": "id-1"}"#
        );
    }

    #[test]
    fn optional_fields_in_order_and_extended_only_when_enabled() {
        let ext = ExtendedMeta {
            name: Some("t.add".into()),
            args: json!([1, 2]),
            kwargs: json!({}),
            worker: Some("celery@h".into()),
            retries: Some(0),
            queue: Some("celery".into()),
            ..Default::default()
        };
        let m = TaskMeta::started("x", "celery@h", 7)
            .with_request_ids(Some("g".into()), Some("p".into()))
            .with_extended(ext);
        let keys = |v: Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
        assert_eq!(
            keys(m.to_json(true)),
            [
                "status",
                "result",
                "traceback",
                "children",
                "date_done",
                "group_id",
                "parent_id",
                "name",
                "args",
                "kwargs",
                "worker",
                "retries",
                "queue",
                "task_id"
            ]
        );
        assert_eq!(
            keys(m.to_json(false)),
            [
                "status",
                "result",
                "traceback",
                "children",
                "date_done",
                "group_id",
                "parent_id",
                "task_id"
            ]
        );
        assert_eq!(m.to_json(false)["date_done"], Value::Null);
        assert_eq!(
            m.to_json(false)["result"],
            json!({"pid": 7, "hostname": "celery@h"})
        );
    }

    #[test]
    fn retry_without_exception_has_null_result() {
        let m = TaskMeta::retry("x", None, None);
        assert_eq!(m.result, Value::Null);
        assert!(m.date_done.is_none());
    }
}

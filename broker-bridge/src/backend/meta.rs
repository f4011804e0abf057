//! The task meta stored in `celery-task-meta-<id>`: fields, order and formats as Celery 5.7
//! writes them (`celery/backends/base.py` `_get_result_meta` and `_store_result`).

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::ser::{Serialize, SerializeMap, Serializer};
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
        serde_json::to_value(self.fields(result_extended)).expect("a meta always serializes")
    }

    /// The stored bytes: [`TaskMeta::to_json`] as Python's `json.dumps` writes it, written
    /// straight from the fields (this runs for every result).
    pub fn encode(&self, result_extended: bool) -> Vec<u8> {
        let fields = self.fields(result_extended);
        if fields.stamp_overrides_a_field() {
            // A stamp named like a field replaces that field's value in place, as Python's
            // `dict.update` does; the map does the same.
            return python_json::to_vec(&self.to_json(result_extended));
        }
        python_json::to_vec(&fields)
    }

    fn fields(&self, result_extended: bool) -> MetaFields<'_> {
        MetaFields {
            meta: self,
            extended: self.extended.as_ref().filter(|_| result_extended),
        }
    }
}

/// An id that is set and not empty (Celery writes `group_id`/`parent_id` only then).
fn nonempty(id: &Option<String>) -> Option<&str> {
    id.as_deref().filter(|s| !s.is_empty())
}

/// A meta's fields in the order Celery writes them (a stamp may repeat a field's name).
struct MetaFields<'a> {
    meta: &'a TaskMeta,
    extended: Option<&'a ExtendedMeta>,
}

/// Every key [`MetaFields`] writes besides the stamps.
const FIELD_NAMES: [&str; 14] = [
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
    "task_id",
];

impl MetaFields<'_> {
    fn stamps(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.extended
            .filter(|ext| !ext.stamps.is_empty())
            .into_iter()
            .flat_map(|ext| {
                ext.stamps
                    .iter()
                    .filter(|(k, _)| ext.stamped_headers.contains(k))
            })
    }

    fn stamp_overrides_a_field(&self) -> bool {
        self.stamps()
            .any(|(k, _)| k == "stamped_headers" || FIELD_NAMES.contains(&k.as_str()))
    }
}

impl Serialize for MetaFields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = self.meta;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("status", m.status.as_str())?;
        map.serialize_entry("result", &m.result)?;
        map.serialize_entry("traceback", &m.traceback)?;
        map.serialize_entry("children", &m.children)?;
        map.serialize_entry("date_done", &m.date_done.map(python_isoformat))?;
        if let Some(g) = nonempty(&m.group_id) {
            map.serialize_entry("group_id", g)?;
        }
        if let Some(p) = nonempty(&m.parent_id) {
            map.serialize_entry("parent_id", p)?;
        }
        if let Some(ext) = self.extended {
            map.serialize_entry("name", &ext.name)?;
            map.serialize_entry("args", &ext.args)?;
            map.serialize_entry("kwargs", &ext.kwargs)?;
            map.serialize_entry("worker", &ext.worker)?;
            map.serialize_entry("retries", &ext.retries)?;
            map.serialize_entry("queue", &ext.queue)?;
            if !ext.stamps.is_empty() {
                map.serialize_entry("stamped_headers", &ext.stamped_headers)?;
            }
            for (k, v) in self.stamps() {
                map.serialize_entry(k, v)?;
            }
        }
        map.serialize_entry("task_id", &m.task_id)?;
        map.end()
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
    fn encoded_straight_from_the_fields_as_from_the_map() {
        let stamped = |stamps: Value, names: &[&str]| ExtendedMeta {
            name: Some("t.ü".into()),
            args: json!([1, "é", {"x": [null, 1.5]}]),
            kwargs: json!({"k": 12345678901234567890u64}),
            retries: Some(2),
            stamped_headers: names.iter().map(|s| s.to_string()).collect(),
            stamps: stamps.as_object().unwrap().clone(),
            ..Default::default()
        };
        let failure = TaskMeta::failure(
            "f",
            &ExceptionInfo::builtin("ValueError", "bad ☃"),
            Some("Traceback\n".into()),
        )
        .with_request_ids(Some(String::new()), Some("p".into()));
        let metas = [
            TaskMeta::success("s", json!({"a": [1, 2], "b": "x"})),
            failure,
            TaskMeta::revoked("r", "expired").with_extended(stamped(json!({}), &[])),
            TaskMeta::success("e", json!(1)).with_extended(stamped(
                json!({"colour": "red", "unlisted": 1, "tier": [1]}),
                &["colour", "tier"],
            )),
            TaskMeta::success("o", json!(1)).with_extended(stamped(
                json!({"name": "stamp", "task_id": "stamp", "stamped_headers": 3}),
                &["name", "task_id", "stamped_headers"],
            )),
        ];
        for meta in &metas {
            for extended in [false, true] {
                assert_eq!(
                    String::from_utf8(meta.encode(extended)).unwrap(),
                    String::from_utf8(python_json::to_vec(&meta.to_json(extended))).unwrap()
                );
            }
        }
        let overridden = metas[4].to_json(true);
        let keys: Vec<&String> = overridden.as_object().unwrap().keys().collect();
        assert_eq!(overridden["name"], "stamp");
        assert_eq!(overridden["task_id"], "o");
        assert_eq!(keys.iter().filter(|k| k.as_str() == "name").count(), 1);
        assert_eq!(keys.last().unwrap().as_str(), "task_id");
        assert_eq!(overridden["stamped_headers"], 3);
    }

    #[test]
    fn retry_without_exception_has_null_result() {
        let m = TaskMeta::retry("x", None, None);
        assert_eq!(m.result, Value::Null);
        assert!(m.date_done.is_none());
    }
}

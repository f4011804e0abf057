//! Signature dicts (callbacks, errbacks, chain steps, chord callbacks) as Celery serializes them.

use serde_json::{Map, Value};

use super::error::DecodeErrorKind;
use super::fields::{bad, get_bool, get_str};

/// A Celery signature: `{"task", "args", "kwargs", "options", "subtask_type", "immutable"}`.
/// Keys Celery may add in other versions are kept in `extra` and written back by [`to_value`].
///
/// [`to_value`]: Signature::to_value
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// Task name (`celery.group`, `celery.chord`, … for canvas primitives).
    pub task: String,
    /// Partial positional arguments.
    pub args: Vec<Value>,
    /// Partial keyword arguments.
    pub kwargs: Map<String, Value>,
    /// `apply_async` options (`task_id`, `group_id`, `queue`, `link`, …).
    pub options: Map<String, Value>,
    /// `null` for a plain task; `chain`, `group`, `chord`, `chunks`, `xmap`, `xstarmap` otherwise.
    pub subtask_type: Option<String>,
    /// If true, a parent's result is not prepended to `args`.
    pub immutable: bool,
    /// Any other key of the dict, in order.
    pub extra: Map<String, Value>,
}

const KNOWN: [&str; 6] = [
    "task",
    "args",
    "kwargs",
    "options",
    "subtask_type",
    "immutable",
];

impl Signature {
    /// A plain task signature with no options.
    pub fn new(task: impl Into<String>, args: Vec<Value>, kwargs: Map<String, Value>) -> Self {
        Signature {
            task: task.into(),
            args,
            kwargs,
            options: Map::new(),
            subtask_type: None,
            immutable: false,
            extra: Map::new(),
        }
    }

    /// Read a signature dict; `path` names it in errors (e.g. `embed.callbacks[0]`).
    pub fn from_value(value: &Value, path: &str) -> Result<Self, DecodeErrorKind> {
        let obj = value
            .as_object()
            .ok_or_else(|| bad(path, "should be a signature object"))?;
        let field = |k: &str| format!("{path}.{k}");
        let task = get_str(obj, "task", field("task"))?
            .ok_or_else(|| bad(&field("task"), "is missing"))?;
        let args = match obj.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(bad(&field("args"), "should be a list")),
        };
        let map = |k: &str| -> Result<Map<String, Value>, DecodeErrorKind> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m.clone()),
                Some(_) => Err(bad(&field(k), "should be an object")),
            }
        };
        Ok(Signature {
            task,
            args,
            kwargs: map("kwargs")?,
            options: map("options")?,
            subtask_type: get_str(obj, "subtask_type", field("subtask_type"))?,
            immutable: get_bool(obj, "immutable", field("immutable"))?.unwrap_or(false),
            extra: obj
                .iter()
                .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// The dict as Celery writes it (known keys first, then any extra keys).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("task".into(), Value::String(self.task.clone()));
        m.insert("args".into(), Value::Array(self.args.clone()));
        m.insert("kwargs".into(), Value::Object(self.kwargs.clone()));
        m.insert("options".into(), Value::Object(self.options.clone()));
        m.insert(
            "subtask_type".into(),
            self.subtask_type.clone().map_or(Value::Null, Value::String),
        );
        m.insert("immutable".into(), Value::Bool(self.immutable));
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }

    /// `options.task_id` when the signature was frozen with an id.
    pub fn task_id(&self) -> Option<&str> {
        self.options.get("task_id").and_then(Value::as_str)
    }
}

/// Read an embed list (`callbacks`, `errbacks`, `chain`): `null` and `[]` are both empty.
pub(crate) fn list(value: Option<&Value>, path: &str) -> Result<Vec<Signature>, DecodeErrorKind> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| Signature::from_value(v, &format!("{path}[{i}]")))
            .collect(),
        Some(_) => Err(bad(path, "should be a list of signatures or null")),
    }
}

/// Write an embed list: empty → `null`, as Celery writes an unset list.
pub(crate) fn list_to_value(list: &[Signature]) -> Value {
    if list.is_empty() {
        Value::Null
    } else {
        Value::Array(list.iter().map(Signature::to_value).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_back_with_extra_keys() {
        let v = json!({"task": "t.mul", "args": [4], "kwargs": {}, "options": {"task_id": "x"},
                       "subtask_type": null, "immutable": true, "chord_size": 3});
        let s = Signature::from_value(&v, "sig").unwrap();
        assert_eq!(s.task, "t.mul");
        assert_eq!(s.task_id(), Some("x"));
        assert!(s.immutable);
        assert_eq!(s.to_value(), v);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e =
            Signature::from_value(&json!({"task": "t", "args": 3}), "embed.chain[1]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `embed.chain[1].args` should be a list"
        );
        assert!(list(Some(&json!({})), "embed.callbacks").is_err());
        assert!(list(Some(&json!([])), "x").unwrap().is_empty());
        assert!(list(Some(&Value::Null), "x").unwrap().is_empty());
    }
}

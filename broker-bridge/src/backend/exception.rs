//! An exception as Celery stores it for the JSON result serializer (`prepare_exception`).

use serde_json::{Map, Value};

/// Module of Celery's own exceptions (`TaskRevokedError`, `NotRegistered`, `ChordError`, …).
pub const CELERY_EXCEPTIONS: &str = "celery.exceptions";
/// Module of Python's built-in exceptions (`ValueError`, `RuntimeError`, …).
pub const BUILTINS: &str = "builtins";

/// `{"exc_type", "exc_message", "exc_module"}`: what Python's `exception_to_python` rebuilds.
///
/// Python looks `exc_module` up in modules it has *already imported* and walks `exc_type` by dots;
/// when that fails it makes a new `Exception` subclass named `exc_type`. It then calls
/// `cls(*exc_message)`. So `builtins`/`ValueError`/`["boom"]` is re-raised by `AsyncResult.get()`
/// as `ValueError("boom")`, and an unknown module still gives an exception of that name.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionInfo {
    /// Class `__qualname__` (`Outer.Inner` for nested classes).
    pub exc_type: String,
    /// The exception's `args`.
    pub exc_message: Vec<Value>,
    /// The defining module (`builtins`, `celery.exceptions`, `myapp.errors`, …).
    pub exc_module: String,
}

impl ExceptionInfo {
    /// Any exception class, by module and qualified name, with its args.
    pub fn new(
        exc_module: impl Into<String>,
        exc_type: impl Into<String>,
        exc_message: Vec<Value>,
    ) -> Self {
        ExceptionInfo {
            exc_type: exc_type.into(),
            exc_message,
            exc_module: exc_module.into(),
        }
    }

    /// A Python built-in exception (`ValueError`, `TypeError`, `KeyError`, `RuntimeError`, …)
    /// with one message argument.
    pub fn builtin(exc_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(BUILTINS, exc_type, vec![Value::String(message.into())])
    }

    /// A `celery.exceptions` class with one message argument.
    pub fn celery(exc_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            CELERY_EXCEPTIONS,
            exc_type,
            vec![Value::String(message.into())],
        )
    }

    /// `celery.exceptions.TaskRevokedError(reason)`, what Celery stores for REVOKED
    /// (`reason` is `revoked`, `expired` or `terminated` in Celery's worker).
    pub fn task_revoked(reason: impl Into<String>) -> Self {
        Self::celery("TaskRevokedError", reason)
    }

    /// The JSON object, keys in Celery's order.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("exc_type".into(), Value::String(self.exc_type.clone()));
        map.insert("exc_message".into(), Value::Array(self.exc_message.clone()));
        map.insert("exc_module".into(), Value::String(self.exc_module.clone()));
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_serializes_like_prepare_exception() {
        let e = ExceptionInfo::builtin("ValueError", "boom");
        assert_eq!(
            serde_json::to_string(&e.to_json()).unwrap(),
            r#"{"exc_type":"ValueError","exc_message":["boom"],"exc_module":"builtins"}"#
        );
    }

    #[test]
    fn revoked_is_celery_task_revoked_error() {
        let e = ExceptionInfo::task_revoked("terminated");
        assert_eq!(e.exc_module, "celery.exceptions");
        assert_eq!(e.exc_type, "TaskRevokedError");
        assert_eq!(e.exc_message, vec![Value::String("terminated".into())]);
    }
}

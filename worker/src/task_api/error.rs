//! What a task returns when it does not succeed: a failure that Python re-raises with the right
//! exception type, or a request to be retried.

use std::fmt;
use std::time::Duration;

use celeriac_broker_bridge::codec::Signature;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// A Python exception as Celery stores it: the class name, its module and its arguments.
///
/// Python's `AsyncResult.get()` re-raises `module.Type(*args)`, so a Rust task that fails with
/// `PyException::new("ValueError", "bad id")` is seen by a Django caller as `ValueError("bad id")`.
#[derive(Debug, Clone, PartialEq)]
pub struct PyException {
    /// Class name, e.g. `ValueError`.
    pub exc_type: String,
    /// Module of the class, e.g. `builtins` or `myapp.errors`.
    pub exc_module: String,
    /// The exception's arguments (usually one message string).
    pub args: Vec<Value>,
}

impl PyException {
    /// A builtin exception (`ValueError`, `KeyError`, `TypeError`, ...) with one message.
    pub fn new(exc_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self::in_module("builtins", exc_type, message)
    }

    /// An exception class of another module (it must exist on the Python side to be re-raised as such).
    pub fn in_module(
        module: impl Into<String>,
        exc_type: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        PyException {
            exc_type: exc_type.into(),
            exc_module: module.into(),
            args: vec![Value::String(message.into())],
        }
    }

    /// The first argument as text (the usual message), or the arguments joined.
    pub fn message(&self) -> String {
        match self.args.as_slice() {
            [Value::String(s)] => s.clone(),
            args => args
                .iter()
                .map(|a| match a {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

impl fmt::Display for PyException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.exc_type, self.message())
    }
}

/// When a retried task should run again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryRequest {
    /// Delay from now; `None` with no `eta` means the task's default retry delay.
    pub countdown: Option<Duration>,
    /// Absolute time; wins over `countdown`.
    pub eta: Option<DateTime<Utc>>,
    /// Override of the task's `max_retries` (`None` keeps the task's; Celery's default is 3).
    pub max_retries: Option<u32>,
    /// The exception that caused the retry, stored in the RETRY result and raised when retries run out.
    pub exc: Option<PyException>,
    /// New positional arguments for the next attempt (`None` keeps the message's). Given alone,
    /// keyword arguments naming a parameter these now fill are dropped, as Celery does.
    pub args: Option<Vec<Value>>,
    /// New keyword arguments for the next attempt (`None` keeps the message's). Given alone,
    /// one naming a parameter that a kept positional argument fills replaces that argument.
    pub kwargs: Option<Map<String, Value>>,
    /// New expiry time of the next attempt (`None` keeps the message's `expires`).
    pub expires: Option<DateTime<Utc>>,
    /// The queue the next attempt is sent to (Celery's `retry(queue=...)`); `None` sends it back
    /// where the message came from.
    pub queue: Option<String>,
    /// The next attempt's priority (Celery's `retry(priority=...)`); `None` keeps the message's.
    pub priority: Option<u8>,
}

impl RetryRequest {
    /// A retry with the task's default delay and nothing else changed.
    fn empty() -> Self {
        RetryRequest {
            countdown: None,
            eta: None,
            max_retries: None,
            exc: None,
            args: None,
            kwargs: None,
            expires: None,
            queue: None,
            priority: None,
        }
    }
}

/// A task's failure.
///
/// ```
/// use std::time::Duration;
///
/// use celeriac_worker::{PyException, RetryRequest, TaskError};
///
/// // def charge(amount, gateway_busy):
/// //     if amount < 0: raise ValueError(f"negative amount {amount}")
/// //     if gateway_busy: raise self.retry(countdown=30, max_retries=5, exc=GatewayBusy("later"))
/// #[celeriac_worker::task(name = "billing.charge")]
/// async fn charge(amount: i64, gateway_busy: bool) -> Result<i64, TaskError> {
///     check(amount, gateway_busy)
/// }
///
/// fn check(amount: i64, gateway_busy: bool) -> Result<i64, TaskError> {
///     if amount < 0 {
///         // Python's `AsyncResult.get()` raises `ValueError("negative amount -1")`.
///         return Err(TaskError::fail("ValueError", format!("negative amount {amount}")));
///     }
///     if gateway_busy {
///         // Republished to run in 30 s; after 5 retries FAILURE with the `exc`.
///         return Err(TaskError::retry_in(Duration::from_secs(30))
///             .max_retries(5)
///             .because(PyException::in_module("billing.errors", "GatewayBusy", "later")));
///     }
///     Ok(amount)
/// }
///
/// assert_eq!(
///     check(-1, false),
///     Err(TaskError::Fail(PyException::new("ValueError", "negative amount -1")))
/// );
/// let Err(TaskError::Retry(retry)) = check(10, true) else { panic!("not a retry") };
/// let RetryRequest { countdown, max_retries, exc, .. } = *retry;
/// assert_eq!((countdown, max_retries), (Some(Duration::from_secs(30)), Some(5)));
/// assert_eq!(exc.map(|e| e.exc_module), Some("billing.errors".to_string()));
/// # let _ = celeriac_worker::Worker::builder().register(charge);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum TaskError {
    /// The task failed; stored as FAILURE with this exception.
    Fail(PyException),
    /// The task asks to be run again later (Celery's `self.retry()`).
    Retry(Box<RetryRequest>),
    /// The task is replaced by this signature or canvas (Celery's `self.replace(sig)`): it is
    /// published with this task's id for its result, and this run stores no result.
    Replace(Box<Signature>),
    /// The task rejects its message (Celery's `raise Reject(reason, requeue=...)`). With
    /// `requeue` nothing is stored and, with late acks, the message goes back to its queue.
    /// Without, as Celery 5.7: FAILURE `celery.exceptions.Reject(reason, False)` is stored and
    /// `task-failed` sent; with late acks the message goes to the dead-letter list instead of
    /// being dropped. An early-acked message is already gone.
    Reject {
        /// Why, logged and kept as the dead-letter reason.
        reason: String,
        /// Put the message back on its queue instead of dead-lettering it.
        requeue: bool,
    },
}

impl TaskError {
    /// Fail with a builtin Python exception type, e.g. `TaskError::fail("ValueError", "bad id")`.
    pub fn fail(exc_type: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError::Fail(PyException::new(exc_type, message))
    }

    /// Retry after `countdown` (kept as the delay of the republished message).
    pub fn retry_in(countdown: Duration) -> Self {
        TaskError::Retry(Box::new(RetryRequest {
            countdown: Some(countdown),
            ..RetryRequest::empty()
        }))
    }

    /// Replace the task by `sig`, as Celery's `self.replace(sig)`: a task, or a canvas built
    /// with [`crate::client`] (`TaskError::replace(chain([...]))`, a `group`, a `chord`).
    pub fn replace(sig: impl Into<Signature>) -> Self {
        TaskError::Replace(Box::new(sig.into()))
    }

    /// Reject the message (Celery's `Reject(reason, requeue=requeue)`).
    pub fn reject(reason: impl Into<String>, requeue: bool) -> Self {
        TaskError::Reject {
            reason: reason.into(),
            requeue,
        }
    }

    /// Retry with the task's default delay.
    pub fn retry() -> Self {
        TaskError::Retry(Box::new(RetryRequest::empty()))
    }

    /// Set the exception stored with the retry (and raised once retries are exhausted).
    pub fn because(mut self, exc: PyException) -> Self {
        if let TaskError::Retry(r) = &mut self {
            r.exc = Some(exc);
        }
        self
    }

    /// Override `max_retries` for this retry.
    pub fn max_retries(mut self, n: u32) -> Self {
        if let TaskError::Retry(r) = &mut self {
            r.max_retries = Some(n);
        }
        self
    }

    /// Run the next attempt at `eta` (Celery's `retry(eta=...)`), instead of after a countdown.
    pub fn at(mut self, eta: DateTime<Utc>) -> Self {
        if let TaskError::Retry(r) = &mut self {
            r.eta = Some(eta);
        }
        self
    }

    /// Run the next attempt with these positional arguments (Celery's `retry(args=...)`).
    pub fn with_args(mut self, args: Vec<Value>) -> Self {
        if let TaskError::Retry(r) = &mut self {
            r.args = Some(args);
        }
        self
    }

    /// Run the next attempt with these keyword arguments (Celery's `retry(kwargs=...)`).
    pub fn with_kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        if let TaskError::Retry(r) = &mut self {
            r.kwargs = Some(kwargs);
        }
        self
    }

    /// The next attempt expires `after` from now (Celery's `retry(expires=seconds)`); a worker
    /// that gets it later stores REVOKED instead of running it.
    pub fn expires_in(self, after: Duration) -> Self {
        let at = chrono::Duration::from_std(after)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.expires_at(at)
    }

    /// The next attempt expires at `at` (Celery's `retry(expires=datetime)`).
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        if let TaskError::Retry(r) = &mut self {
            r.expires = Some(at);
        }
        self
    }

    /// Send the next attempt to `queue` (Celery's `retry(queue=...)`), instead of back to the
    /// queue the message came from.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        if let TaskError::Retry(r) = &mut self {
            r.queue = Some(queue.into());
        }
        self
    }

    /// Give the next attempt this priority (Celery's `retry(priority=...)`; 0–9, 0 is served
    /// first on Redis).
    pub fn priority(mut self, priority: u8) -> Self {
        if let TaskError::Retry(r) = &mut self {
            r.priority = Some(priority);
        }
        self
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Fail(e) => e.fmt(f),
            TaskError::Retry(r) => match &r.exc {
                Some(e) => write!(f, "retry requested: {e}"),
                None => f.write_str("retry requested"),
            },
            TaskError::Replace(sig) => write!(f, "replaced by {}", sig.task),
            TaskError::Reject { reason, requeue } => {
                write!(f, "rejected (requeue={requeue}): {reason}")
            }
        }
    }
}

impl std::error::Error for TaskError {}

impl From<PyException> for TaskError {
    fn from(e: PyException) -> Self {
        TaskError::Fail(e)
    }
}

/// Any Rust error becomes a Python `Exception` carrying the error chain as its message.
impl From<anyhow::Error> for TaskError {
    fn from(e: anyhow::Error) -> Self {
        TaskError::fail("Exception", format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders() {
        let e = TaskError::fail("ValueError", "boom");
        assert_eq!(e.to_string(), "ValueError: boom");
        let r = TaskError::retry_in(Duration::from_secs(5))
            .because(PyException::new("IOError", "later"))
            .max_retries(7);
        match r {
            TaskError::Retry(r) => {
                assert_eq!(r.countdown, Some(Duration::from_secs(5)));
                assert_eq!(r.max_retries, Some(7));
                assert_eq!(r.exc.unwrap().exc_type, "IOError");
            }
            other => panic!("expected retry, got {other:?}"),
        }
        let eta = Utc::now() + chrono::Duration::seconds(30);
        let before = Utc::now();
        let r = TaskError::retry()
            .at(eta)
            .with_args(vec![Value::from(2)])
            .with_kwargs(Map::from_iter([("label".into(), Value::from("x"))]))
            .expires_in(Duration::from_secs(60));
        match r {
            TaskError::Retry(r) => {
                assert_eq!(r.eta, Some(eta));
                assert_eq!(r.countdown, None);
                assert_eq!(r.args, Some(vec![Value::from(2)]));
                assert_eq!(r.kwargs.unwrap()["label"], "x");
                let expires = r.expires.unwrap();
                assert!(expires >= before + chrono::Duration::seconds(60));
                assert!(expires <= Utc::now() + chrono::Duration::seconds(60));
            }
            other => panic!("expected retry, got {other:?}"),
        }
        // Retry options leave other errors alone.
        let fail = TaskError::fail("ValueError", "x").with_args(vec![]);
        assert_eq!(fail, TaskError::fail("ValueError", "x"));
        let any: TaskError = anyhow::anyhow!("outer").context("ctx").into();
        assert_eq!(any.to_string(), "Exception: ctx: outer");
    }
}

//! Retries as Celery does them: a new message with the same task id, `retries + 1` and an ETA,
//! published where the original came from; RETRY stored; FAILURE once `max_retries` is reached.

use std::time::Duration;

use celeriac_broker_bridge::codec::{EncodeOptions, TaskMessage, WireTime};
use celeriac_broker_bridge::transport::Delivery;
use chrono::Utc;
use serde_json::{Map, Value};

use crate::message::results;
use crate::runtime::Runtime;
use crate::task_api::params::{ParamKind, Params};
use crate::task_api::registry::RegisteredTask;
use crate::task_api::{PyException, RetryRequest};

/// Handle a task's retry request (the message itself is settled by the caller as usual).
/// `Err(exc)`: no retry happens — retries are exhausted, or the retry could not be published —
/// and the run failed with `exc` (as in Celery, where `self.retry()` then raises); the caller
/// stores and reports that failure.
pub(crate) async fn retry(
    rt: &Runtime,
    delivery: &Delivery,
    msg: &TaskMessage,
    task: &RegisteredTask,
    request: RetryRequest,
    ignore_result: bool,
) -> Result<(), PyException> {
    let store_errors = !ignore_result || rt.settings().task_store_errors_even_if_ignored;
    let max_retries = request.max_retries.or(task.options.max_retries);
    let (args, kwargs) = retry_arguments(
        task.handler.params().as_ref(),
        msg,
        request.args,
        request.kwargs,
    );
    if max_retries.is_some_and(|max| msg.retries >= i64::from(max)) {
        let exc = request.exc.unwrap_or_else(|| {
            PyException::in_module(
                "celery.exceptions",
                "MaxRetriesExceededError",
                format!(
                    "Can't retry {}[{}] args:{} kwargs:{}",
                    msg.task,
                    msg.id,
                    Value::Array(args),
                    Value::Object(kwargs)
                ),
            )
        });
        tracing::warn!(retries = msg.retries, exception = %exc, "retries exhausted");
        return Err(exc);
    }
    let delay = request
        .countdown
        .unwrap_or(task.options.default_retry_delay);
    let eta = match request.eta {
        Some(eta) => eta,
        // As Python's `now + timedelta(seconds=countdown)`, a countdown past the calendar fails.
        None => chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .ok_or_else(|| PyException::new("OverflowError", "date value out of range"))?,
    };
    let mut next = next_attempt(msg, eta);
    next.args = args;
    next.kwargs = kwargs;
    if let Some(expires) = request.expires {
        next.expires = Some(WireTime::from_utc(expires));
    }
    if request.priority.is_some() {
        next.priority = request.priority;
    }
    // Back where it came from, or (Celery's `retry(queue=...)`) to that queue on the default
    // exchange, as Celery routes a queue it creates on Redis.
    let (exchange, routing_key) = match request.queue {
        Some(queue) => (String::new(), queue),
        None => (delivery.exchange.clone(), delivery.routing_key.clone()),
    };
    let opts = EncodeOptions {
        exchange: exchange.clone(),
        routing_key: routing_key.clone(),
        now: Utc::now(),
    };
    let envelope = next
        .to_envelope_as(&opts, &rt.signing().tasks)
        .map_err(|e| PyException::new("RuntimeError", format!("could not sign the retry: {e}")))?;
    let publish = || async {
        match rt.sqs() {
            Some(sqs) => crate::sqs::publish(sqs, &envelope, &exchange, &routing_key).await,
            None => rt
                .broker()
                .publish_once(&envelope, &exchange, &routing_key)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    };
    if let Err(e) = crate::message::retrying::retrying(
        rt.metrics(),
        crate::message::retrying::Write::Retry,
        publish,
    )
    .await
    {
        tracing::error!(error = %e, "could not publish the retry");
        return Err(PyException::new(
            "RuntimeError",
            format!("could not publish the retry: {e}"),
        ));
    }
    rt.count_retried();
    let exc = request.exc.unwrap_or_else(|| {
        PyException::in_module(
            "celery.exceptions",
            "Retry",
            format!("Retry in {}s", humanize(eta - Utc::now())),
        )
    });
    tracing::info!(retries = next.retries, eta = %eta.to_rfc3339(), "task retry published");
    if store_errors {
        results::store_retry(rt, msg, &exc).await;
    }
    Ok(())
}

/// The message of the next attempt: same id, args and options; `retries + 1`; the new ETA;
/// `parent_id` kept, or this task's own id when it had none (as Celery).
pub(crate) fn next_attempt(msg: &TaskMessage, eta: chrono::DateTime<Utc>) -> TaskMessage {
    let mut next = msg.clone();
    next.retries = msg.retries.saturating_add(1);
    next.eta = Some(WireTime::from_utc(eta));
    if next.parent_id.is_none() {
        next.parent_id = Some(msg.id.clone());
    }
    next
}

/// The arguments of the next attempt, as Celery's `Task.retry` makes them: `None` keeps the
/// message's. New positional arguments alone drop the kept keyword arguments that name a
/// parameter they now fill; new keyword arguments alone replace the kept positional arguments
/// of the parameters they name. Without declared parameters (or when the kept positional
/// arguments do not fit them) the new ones are taken as given.
pub(crate) fn retry_arguments(
    params: Option<&Params>,
    msg: &TaskMessage,
    args: Option<Vec<Value>>,
    kwargs: Option<Map<String, Value>>,
) -> (Vec<Value>, Map<String, Value>) {
    let positional: Vec<&str> = params
        .map(|p| {
            p.params
                .iter()
                .filter(|p| p.kind == ParamKind::PositionalOrKeyword)
                .map(|p| p.name)
                .collect()
        })
        .unwrap_or_default();
    let var_args = params.is_some_and(|p| p.params.iter().any(|p| p.kind == ParamKind::VarArgs));
    match (args, kwargs) {
        (Some(args), None) if params.is_some() && !msg.kwargs.is_empty() => {
            let mut kwargs = msg.kwargs.clone();
            for name in positional.iter().take(args.len()) {
                kwargs.remove(*name);
            }
            (args, kwargs)
        }
        (None, Some(mut kwargs))
            if params.is_some()
                && !msg.args.is_empty()
                && (var_args || msg.args.len() <= positional.len()) =>
        {
            let mut args = msg.args.clone();
            for (slot, name) in args.iter_mut().zip(&positional) {
                if let Some(value) = kwargs.remove(*name) {
                    *slot = value;
                }
            }
            (args, kwargs)
        }
        (args, kwargs) => (
            args.unwrap_or_else(|| msg.args.clone()),
            kwargs.unwrap_or_else(|| msg.kwargs.clone()),
        ),
    }
}

fn humanize(d: chrono::Duration) -> u64 {
    Duration::from_millis(d.num_milliseconds().max(0) as u64)
        .as_secs_f64()
        .round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::task_api::params::Param;
    use serde_json::json;

    const fn param(name: &'static str, kind: ParamKind, has_default: bool) -> Param {
        Param {
            name,
            kind,
            has_default,
        }
    }

    /// `def f(foo, bar, label=None)`
    const FOO_BAR_LABEL: Params = Params {
        function: "f",
        params: &[
            param("foo", ParamKind::PositionalOrKeyword, false),
            param("bar", ParamKind::PositionalOrKeyword, false),
            param("label", ParamKind::PositionalOrKeyword, true),
        ],
    };

    /// `def g(a, *rest, k=None)`
    const VAR_ARGS: Params = Params {
        function: "g",
        params: &[
            param("a", ParamKind::PositionalOrKeyword, false),
            param("rest", ParamKind::VarArgs, false),
            param("k", ParamKind::KeywordOnly, true),
        ],
    };

    fn message(args: Value, kwargs: Value) -> TaskMessage {
        TaskMessage::new(
            "id",
            "t",
            args.as_array().unwrap().clone(),
            kwargs.as_object().unwrap().clone(),
        )
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn retry_arguments_bind_as_celery() {
        let p = Some(&FOO_BAR_LABEL);
        // New args alone: kept kwargs that name a parameter the args now fill are dropped.
        let msg = message(json!([]), json!({"foo": 1, "bar": 2, "label": "kept"}));
        let (args, kwargs) = retry_arguments(p, &msg, Some(vec![json!(2), json!(3)]), None);
        assert_eq!(args, vec![json!(2), json!(3)]);
        assert_eq!(kwargs, obj(json!({"label": "kept"})));
        // New kwargs alone: a kept positional argument they name is replaced in place.
        let msg = message(json!([1, 2]), json!({}));
        let (args, kwargs) = retry_arguments(p, &msg, None, Some(obj(json!({"foo": 2}))));
        assert_eq!(args, vec![json!(2), json!(2)]);
        assert!(kwargs.is_empty());
        // ... and one naming a parameter no kept argument fills stays a keyword.
        let (args, kwargs) = retry_arguments(p, &msg, None, Some(obj(json!({"label": "x"}))));
        assert_eq!(args, vec![json!(1), json!(2)]);
        assert_eq!(kwargs, obj(json!({"label": "x"})));
        // Both given, or neither: as given, or as the message had them.
        let msg = message(json!([1]), json!({"bar": 5}));
        let (args, kwargs) =
            retry_arguments(p, &msg, Some(vec![json!(7)]), Some(obj(json!({"bar": 8}))));
        assert_eq!((args, kwargs), (vec![json!(7)], obj(json!({"bar": 8}))));
        let (args, kwargs) = retry_arguments(p, &msg, None, None);
        assert_eq!((args, kwargs), (vec![json!(1)], obj(json!({"bar": 5}))));
        // Without declared parameters nothing is rebound.
        let (args, kwargs) = retry_arguments(None, &msg, Some(vec![json!(9)]), None);
        assert_eq!((args, kwargs), (vec![json!(9)], obj(json!({"bar": 5}))));
        // Kept positional arguments that do not fit the parameters (Python's bind_partial
        // raising TypeError): the kwargs are taken as given.
        let msg = message(json!([1, 2, 3, 4]), json!({}));
        let (args, kwargs) = retry_arguments(p, &msg, None, Some(obj(json!({"foo": 0}))));
        assert_eq!(args, vec![json!(1), json!(2), json!(3), json!(4)]);
        assert_eq!(kwargs, obj(json!({"foo": 0})));
        // With *args, the extra positional arguments are kept behind the rebound ones.
        let msg = message(json!([1, 2, 3]), json!({}));
        let (args, kwargs) = retry_arguments(
            Some(&VAR_ARGS),
            &msg,
            None,
            Some(obj(json!({"a": 0, "k": 1}))),
        );
        assert_eq!(args, vec![json!(0), json!(2), json!(3)]);
        assert_eq!(kwargs, obj(json!({"k": 1})));
    }

    #[test]
    fn next_attempt_saturates_the_retry_count() {
        let mut msg = TaskMessage::new("id", "t", vec![], serde_json::Map::new());
        msg.retries = i64::MAX;
        let next = next_attempt(&msg, Utc::now());
        assert_eq!(next.retries, i64::MAX);
        assert_eq!(next.parent_id.as_deref(), Some("id"));
    }
}

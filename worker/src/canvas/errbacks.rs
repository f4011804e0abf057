//! Errbacks called as Celery's `Backend._call_task_errbacks` calls them: an errback whose task
//! is registered here and takes more than one positional argument (after the signature's own
//! partial arguments, as Python's `arity_greater` counts them) is a "new-style" errback, called
//! in this worker, within the failing run, with `(request, exc, traceback)`; the others are
//! published with the failed task's id (see [`crate::canvas::call_errbacks`]).
//!
//! A Rust errback declares itself new-style by its parameters: a
//! [`#[celeriac_worker::task]`](macro@crate::task) function such as
//! `async fn on_error(request: Value, exc: Value, traceback: Value)`. `request` is the failed
//! task's request as a JSON object (`id`, `task`, `args`, `kwargs`, `root_id`, `parent_id`,
//! `group`, …), `exc` its exception as Celery stores it (`exc_type`, `exc_message`,
//! `exc_module`) and `traceback` is `null` (a Python traceback has no JSON form).

use celeriac_broker_bridge::backend::ExceptionInfo;
use celeriac_broker_bridge::codec::{Signature, TaskMessage};
use serde_json::{json, Map, Value};

use crate::runtime::Runtime;
use crate::task_api::params::{ParamKind, Params};
use crate::task_api::TaskContext;

/// Call the new-style errbacks among `errbacks` for the failed `request` (each error logged, as
/// Celery logs it); returns the others, to be published old-style, in their order.
pub(crate) async fn call_new_style(
    rt: &Runtime,
    errbacks: &[Signature],
    request: &Value,
    exc: &ExceptionInfo,
) -> Vec<Signature> {
    let mut old_style = Vec::new();
    for errback in errbacks {
        let handler = rt.registry().get(&errback.task).and_then(|t| {
            let params = t.handler.params()?;
            takes_request(&params, errback).then(|| t.handler.clone())
        });
        let Some(handler) = handler else {
            old_style.push(errback.clone());
            continue;
        };
        let args = if errback.immutable {
            errback.args.clone()
        } else {
            let mut args = vec![request.clone(), exc.to_json(), Value::Null];
            args.extend(errback.args.iter().cloned());
            args
        };
        let ctx = TaskContext {
            name: errback.task.clone(),
            hostname: rt.hostname().to_string(),
            args,
            kwargs: errback.kwargs.clone(),
            data: rt.registry().data().cloned(),
            client: rt.client().cloned(),
            ..TaskContext::default()
        };
        if let Err(e) = handler.call(ctx).await {
            tracing::error!(errback = %errback.task, error = ?e, "Errback raised an exception");
        }
    }
    old_style
}

/// Celery's test: the task takes `*args`, or more than one positional argument is left once
/// the signature's own arguments are bound as `functools.partial` binds them (a call that
/// cannot bind them counts the function's own parameters).
fn takes_request(params: &Params, errback: &Signature) -> bool {
    if params.params.iter().any(|p| p.kind == ParamKind::VarArgs) {
        return true;
    }
    let positional: Vec<&str> = params
        .params
        .iter()
        .filter(|p| p.kind == ParamKind::PositionalOrKeyword)
        .map(|p| p.name)
        .collect();
    if errback.immutable || (errback.args.is_empty() && errback.kwargs.is_empty()) {
        return positional.len() > 1;
    }
    let bound = errback.args.len();
    let kwargs_rebind = positional
        .iter()
        .take(bound)
        .any(|n| errback.kwargs.contains_key(*n));
    if bound > positional.len() || kwargs_rebind {
        return positional.len() > 1;
    }
    // A parameter given by keyword, and every one after it, becomes keyword-only.
    let left = positional[bound..]
        .iter()
        .take_while(|n| !errback.kwargs.contains_key(**n))
        .count();
    left > 1
}

/// The failed task's request as an errback receives it.
pub(crate) fn request_of(msg: &TaskMessage) -> Value {
    json!({
        "id": msg.id,
        "task": msg.task,
        "args": msg.args,
        "kwargs": msg.kwargs,
        "root_id": msg.root_id,
        "parent_id": msg.parent_id,
        "group": msg.group,
        "group_index": msg.group_index,
        "retries": msg.retries,
        "eta": msg.eta.as_ref().map(|t| t.raw.clone()),
        "expires": msg.expires.as_ref().map(|t| t.raw.clone()),
        "timelimit": [msg.timelimit.0, msg.timelimit.1],
        "errbacks": msg.errbacks.iter().map(Signature::to_value).collect::<Vec<_>>(),
        "callbacks": msg.callbacks.iter().map(Signature::to_value).collect::<Vec<_>>(),
        "chord": msg.chord.as_ref().map(Signature::to_value),
        "ignore_result": msg.ignore_result.unwrap_or(false),
        "stamped_headers": msg.stamped_headers,
        "stamps": msg.stamps,
    })
}

/// A chord body's request as Celery's `chord_error_from_stack` makes it: the body signature's
/// fields with the body's id.
pub(crate) fn request_of_signature(id: &str, sig: &Signature) -> Value {
    let mut request = match sig.to_value() {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    request.insert("id".into(), id.into());
    Value::Object(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task_api::params::Param;

    const fn p(name: &'static str, kind: ParamKind) -> Param {
        Param {
            name,
            kind,
            has_default: false,
        }
    }

    fn sig(args: Value, kwargs: Value, immutable: bool) -> Signature {
        let mut s = Signature::new(
            "t.eb",
            args.as_array().cloned().unwrap_or_default(),
            kwargs.as_object().cloned().unwrap_or_default(),
        );
        s.immutable = immutable;
        s
    }

    #[test]
    fn classified_by_arity_as_celery_does() {
        use ParamKind::{PositionalOrKeyword as P, VarArgs, VarKwargs};
        static NEW: [Param; 3] = [p("request", P), p("exc", P), p("tb", P)];
        static NEW_ARGS: [Param; 4] = [p("request", P), p("exc", P), p("tb", P), p("label", P)];
        static OLD: [Param; 1] = [p("request_id", P)];
        static OLD_ARGS: [Param; 2] = [p("request_id", P), p("label", P)];
        static STAR: [Param; 1] = [p("args", VarArgs)];
        static KW: [Param; 2] = [p("request_id", P), p("kwargs", VarKwargs)];
        let params = |params: &'static [Param]| Params {
            function: "eb",
            params,
        };
        let none = sig(json!([]), json!({}), false);
        assert!(takes_request(&params(&NEW), &none));
        assert!(!takes_request(&params(&OLD), &none));
        assert!(takes_request(&params(&STAR), &none));
        assert!(!takes_request(&params(&KW), &none));
        // `.s('label')`: the label is bound from the left, as functools.partial does.
        let label = sig(json!(["label"]), json!({}), false);
        assert!(takes_request(&params(&NEW_ARGS), &label));
        assert!(!takes_request(&params(&OLD_ARGS), &label));
        // By keyword: that parameter and the ones after it become keyword-only.
        let kw = sig(json!([]), json!({"label": "x"}), false);
        assert!(takes_request(&params(&NEW_ARGS), &kw));
        assert!(!takes_request(&params(&OLD_ARGS), &kw));
        assert!(!takes_request(
            &params(&NEW_ARGS),
            &sig(json!([]), json!({"exc": 1}), false)
        ));
        // Too many arguments to bind: the function's own parameters count.
        assert!(takes_request(
            &params(&NEW),
            &sig(json!([1, 2, 3, 4]), json!({}), false)
        ));
        // Immutable: the function's parameters, whatever the signature holds.
        assert!(takes_request(
            &params(&OLD_ARGS),
            &sig(json!(["a"]), json!({}), true)
        ));
    }

    #[test]
    fn a_chord_body_request_carries_its_id() {
        let body = Signature::new("t.body", vec![json!(1)], Map::new());
        let r = request_of_signature("b-1", &body);
        assert_eq!(r["id"], "b-1");
        assert_eq!(r["task"], "t.body");
        assert_eq!(r["args"], json!([1]));
    }
}

//! Canvas (callbacks, errbacks, chains, groups, chords, replacement): the messages a worker
//! publishes around a task, as Celery's `app/trace.py` and `backends/base.py` do.
//!
//! * [`expand`] — applying a signature → a [`Plan`] of messages (pure).
//! * [`chord`] — chord-part-return and firing or failing the body (Redis native join).
//! * [`on_success`] — callbacks and the next chain step, before the result is stored.
//! * [`on_failure`] — after FAILURE is stored: chord part, the rest of the chain failed, errbacks.
//! * [`replace()`] — a task replaced by a signature or a canvas (`Task.replace`).

pub(crate) mod chord;
pub(crate) mod errbacks;
pub(crate) mod expand;
pub(crate) mod replace;

use celeriac_broker_bridge::backend::{ExceptionInfo, TaskMeta, TaskState};
use celeriac_broker_bridge::codec::{EncodeOptions, Signature, TaskMessage};
use serde_json::{Map, Value};

pub(crate) use expand::{parent_of, CanvasError, Parent, Plan};
pub(crate) use replace::replacement;

use crate::message::retrying::{retrying, Write};
use crate::runtime::Runtime;
use crate::task_api::PyException;

/// The plan of a successful task: its callbacks (several plain ones as one group, group
/// callbacks each on their own, as Celery) and then the next chain step, with `retval` prepended.
pub(crate) fn success_plan(msg: &TaskMessage, retval: &Value) -> Result<Plan, CanvasError> {
    let mut plan = Plan::default();
    let parent = parent_of(msg);
    let prefix = std::slice::from_ref(retval);
    let none = Map::new();
    match msg.callbacks.as_slice() {
        [] => {}
        [one] => plan.apply(one, prefix, &none, &parent)?,
        many => {
            let (groups, plain): (Vec<&Signature>, Vec<&Signature>) = many
                .iter()
                .partition(|s| s.subtask_type.as_deref() == Some("group"));
            for g in groups {
                plan.apply(g, prefix, &none, &parent)?;
            }
            if !plain.is_empty() {
                let plain: Vec<Signature> = plain.into_iter().cloned().collect();
                plan.apply(&expand::group_of(&plain), prefix, &none, &parent)?;
            }
        }
    }
    if let Some((next, rest)) = msg.chain.split_last() {
        let mut call = Map::new();
        call.insert(
            "chain".into(),
            Value::Array(rest.iter().map(Signature::to_value).collect()),
        );
        plan.apply(next, prefix, &call, &parent)?;
    }
    Ok(plan)
}

/// Old-style errbacks are published as one group called with `[failed_task_id] + args` (the
/// new-style ones are called in the worker first: see [`crate::canvas::errbacks`]).
pub(crate) fn errback_plan(
    errbacks: &[Signature],
    task_id: &str,
    parent: &Parent,
) -> Result<Plan, CanvasError> {
    let mut plan = Plan::default();
    if !errbacks.is_empty() {
        let prefix = [Value::from(task_id)];
        plan.apply(&expand::group_of(errbacks), &prefix, &Map::new(), parent)?;
    }
    Ok(plan)
}

/// Store the chord sizes, then publish the messages (to `options.queue` or
/// `task_default_queue`, through the default exchange), each at most once per id and retries
/// within `run` (see [`Broker::publish_once_in`]), so a publish repeated after a lost reply
/// queues no copy. The run is the delivery tag of the message whose processing publishes (a
/// redelivery keeps it): the same ids published by another message (a frozen canvas applied
/// again, as Celery allows) are published again.
///
/// [`Broker::publish_once_in`]: celeriac_broker_bridge::transport::Broker::publish_once_in
pub(crate) async fn publish(rt: &Runtime, plan: Plan, run: Option<&str>) -> Result<(), String> {
    publish_run(rt, plan, true, run).await
}

async fn publish_run(
    rt: &Runtime,
    plan: Plan,
    once: bool,
    run: Option<&str>,
) -> Result<(), String> {
    for (gid, size) in &plan.chord_sizes {
        let backend = rt
            .backend()
            .ok_or("chords need a result backend (result_backend is not set)")?;
        retrying(rt.metrics(), Write::ChordSize, || {
            backend.set_chord_size(gid, *size)
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    for mut msg in plan.messages {
        let queue = msg
            .routing_key
            .clone()
            .unwrap_or_else(|| rt.settings().task_default_queue.clone());
        msg.routing_key = Some(queue.clone());
        let envelope = msg
            .to_envelope_as(&EncodeOptions::queue(queue.clone()), &rt.signing().tasks)
            .map_err(|e| format!("could not sign {}[{}]: {e}", msg.task, msg.id))?;
        retrying(rt.metrics(), Write::CanvasMessage, || async {
            if let Some(sqs) = rt.sqs() {
                return crate::sqs::publish(sqs, &envelope, "", &queue).await;
            }
            let published = if once {
                rt.broker()
                    .publish_once_in(&envelope, "", &queue, run)
                    .await
                    .map(|_| ())
            } else {
                rt.broker().publish(&envelope, "", &queue).await.map(|_| ())
            };
            published.map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("could not publish {}[{}]: {e}", msg.task, msg.id))?;
        tracing::info!(task_id = %msg.id, task_name = %msg.task, queue = %queue, "canvas message published");
    }
    Ok(())
}

/// After a task succeeded and before its result is stored: publish callbacks and the next chain
/// step. Returns the `children` of the result, or the exception the task fails with instead.
pub(crate) async fn on_success(
    rt: &Runtime,
    msg: &TaskMessage,
    retval: &Value,
) -> Result<Vec<Value>, PyException> {
    if msg.callbacks.is_empty() && msg.chain.is_empty() {
        return Ok(Vec::new());
    }
    let plan =
        success_plan(msg, retval).map_err(|e| PyException::new("ValueError", e.to_string()))?;
    let children = plan.children.clone();
    // Boxed, as every canvas step: only messages with a canvas pay for its large future.
    Box::pin(publish(rt, plan, msg.delivery_tag.as_deref()))
        .await
        .map_err(|e| PyException::in_module("kombu.exceptions", "OperationalError", e))?;
    Ok(children)
}

/// After a result is stored: a chord header member returns its part.
pub(crate) async fn after_success(rt: &Runtime, msg: &TaskMessage, retval: &Value) {
    chord::part_return(rt, msg, TaskState::Success, retval.clone()).await;
}

/// After FAILURE was stored (Celery's `mark_as_failure` order): the chord part, the rest of the
/// chain marked FAILURE with the same exception, then the errbacks.
pub(crate) async fn on_failure(rt: &Runtime, msg: &TaskMessage, exc: &PyException) {
    let info = ExceptionInfo::from(exc);
    chord::part_return(rt, msg, TaskState::Failure, info.to_json()).await;
    if !msg.chain.is_empty() {
        Box::pin(fail_chain(rt, &msg.chain, &info)).await;
    }
    if !msg.errbacks.is_empty() {
        let request = crate::canvas::errbacks::request_of(msg);
        let run = msg.delivery_tag.as_deref();
        let parent = parent_of(msg);
        Box::pin(call_errbacks_for(
            rt,
            &msg.errbacks,
            &request,
            &info,
            &parent,
            run,
        ))
        .await;
    }
}

/// After REVOKED was stored: a chord header member still returns its part.
pub(crate) async fn on_revoked(rt: &Runtime, msg: &TaskMessage, reason: &str) {
    let info = ExceptionInfo::task_revoked(reason);
    chord::part_return(rt, msg, TaskState::Revoked, info.to_json()).await;
}

/// Celery's `_call_task_errbacks` for the failed `request` (its `id` the failed task's): the
/// new-style errbacks called here with `(request, exc, traceback)`, then the others published
/// within `run` (see [`publish`]).
pub(crate) async fn call_errbacks_for(
    rt: &Runtime,
    errbacks: &[Signature],
    request: &Value,
    exc: &ExceptionInfo,
    parent: &Parent,
    run: Option<&str>,
) -> Vec<Value> {
    if errbacks.is_empty() {
        return Vec::new();
    }
    let old_style = crate::canvas::errbacks::call_new_style(rt, errbacks, request, exc).await;
    let task_id = request
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    call_errbacks(rt, &old_style, task_id, parent, run).await
}

/// Publish `errbacks` for the failed task `task_id` within `run` (see [`publish`]); returns the
/// result tuple of what was published (the group of errbacks), which Celery adds to the current
/// task's `children`.
pub(crate) async fn call_errbacks(
    rt: &Runtime,
    errbacks: &[Signature],
    task_id: &str,
    parent: &Parent,
    run: Option<&str>,
) -> Vec<Value> {
    let result = match errback_plan(errbacks, task_id, parent) {
        Ok(plan) => {
            let children = plan.children.clone();
            publish(rt, plan, run).await.map(|()| children)
        }
        Err(e) => Err(e.to_string()),
    };
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not publish the errbacks");
        Vec::new()
    })
}

/// Celery's `_fail_chain`: every remaining chain step with a frozen id gets FAILURE with the
/// same exception; chord members among them return their part; a chord step's body is failed too.
pub(crate) async fn fail_chain(rt: &Runtime, chain: &[Signature], exc: &ExceptionInfo) {
    let mut queue: std::collections::VecDeque<Signature> = chain.iter().cloned().collect();
    while let Some(step) = queue.pop_front() {
        let id = step.task_id().map(str::to_string);
        let group = step
            .options
            .get("group_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let (Some(id), Some(backend)) = (&id, rt.backend()) {
            let meta = TaskMeta::failure(id.clone(), exc, None).with_request_ids(
                group.clone(),
                step.options
                    .get("parent_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            );
            if let Err(e) = retrying(rt.metrics(), Write::Result, || backend.store(&meta)).await {
                tracing::error!(task_id = %id, error = %e, "could not store FAILURE for a chain step");
            }
        }
        if let (Some(id), Some(gid), Some(body)) = (&id, &group, step.options.get("chord")) {
            if let Ok(body) = Signature::from_value(body, "options.chord") {
                let index = step.options.get("group_index").and_then(Value::as_i64);
                chord::return_part(
                    rt,
                    chord::Member {
                        task_id: id,
                        group_id: gid,
                        group_index: index,
                        body: &body,
                        parent: Parent {
                            root_id: None,
                            parent_id: Some(id.clone()),
                        },
                        run: None,
                    },
                    TaskState::Failure,
                    exc.to_json(),
                )
                .await;
            }
        }
        if step.subtask_type.as_deref() == Some("chord") {
            if let Some(Ok(body)) = step
                .kwargs
                .get("body")
                .map(|b| Signature::from_value(b, "kwargs.body"))
            {
                queue.push_back(body);
            }
        }
    }
}

/// Publish the replacement of `msg` by `sig` (see [`replace::replacement`]); `Err` is the
/// exception the task fails with instead (`ImproperlyConfigured` for a signature that cannot
/// replace it).
pub(crate) async fn replace(
    rt: &Runtime,
    msg: &TaskMessage,
    sig: &Signature,
) -> Result<(), PyException> {
    let plan = replacement(msg, sig).map_err(|e| {
        PyException::in_module("celery.exceptions", "ImproperlyConfigured", e.reason)
    })?;
    // A replacement keeps the task's id, and a task may replace itself again and again: not
    // deduplicated by id.
    publish_run(rt, plan, false, None)
        .await
        .map_err(|e| PyException::in_module("kombu.exceptions", "OperationalError", e))
}

#[cfg(test)]
mod tests;

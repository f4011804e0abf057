//! Writing task states to the result backend, as a Python worker writes them.

use celeriac_broker_bridge::backend::{ExceptionInfo, ExtendedMeta, TaskMeta};
use celeriac_broker_bridge::codec::TaskMessage;
use serde_json::Value;

use crate::message::retrying::{retrying, Write};
use crate::runtime::Runtime;
use crate::task_api::PyException;

impl From<&PyException> for ExceptionInfo {
    fn from(e: &PyException) -> Self {
        ExceptionInfo::new(e.exc_module.clone(), e.exc_type.clone(), e.args.clone())
    }
}

/// Content types for Celery's `accept_content` entries (serializer names or content types).
pub(crate) fn accepted_content_types(accept: &[String]) -> Vec<String> {
    accept
        .iter()
        .map(|a| match a.as_str() {
            "json" => "application/json".to_string(),
            "msgpack" => "application/x-msgpack".to_string(),
            "yaml" => "application/x-yaml".to_string(),
            "pickle" => "application/x-python-serialize".to_string(),
            "auth" => "application/data".to_string(),
            other => other.to_string(),
        })
        .collect()
}

/// A traceback text for a failure raised by Rust code (Python shows it as `AsyncResult.traceback`).
pub(crate) fn traceback(msg: &TaskMessage, hostname: &str, exc: &PyException) -> String {
    format!(
        "Traceback (most recent call last):\n  celeriac task {}[{}] on {}\n{}: {}\n",
        msg.task,
        msg.id,
        hostname,
        exc.exc_type,
        exc.message()
    )
}

fn with_request(rt: &Runtime, meta: TaskMeta, msg: Option<&TaskMessage>) -> TaskMeta {
    let Some(msg) = msg else { return meta };
    let meta = meta.with_request_ids(msg.group.clone(), msg.parent_id.clone());
    if !rt.settings().result_extended {
        return meta;
    }
    meta.with_extended(ExtendedMeta {
        name: Some(msg.task.clone()),
        args: Value::Array(msg.args.clone()),
        kwargs: Value::Object(msg.kwargs.clone()),
        worker: Some(rt.hostname().to_string()),
        retries: u64::try_from(msg.retries).ok(),
        queue: msg.routing_key.clone(),
        stamped_headers: msg.stamped_headers.clone().unwrap_or_default(),
        stamps: msg.stamps.clone(),
    })
}

async fn store(rt: &Runtime, meta: TaskMeta) {
    let (Some(writer), Some(backend)) = (rt.writer(), rt.backend()) else {
        return;
    };
    // Encoded (and signed) here, by each task in parallel, not in the one batch writer.
    let encoded = match backend.encode_meta(&meta) {
        Ok(encoded) => encoded,
        Err(e) => {
            tracing::error!(task_id = %meta.task_id, state = meta.status.as_str(), error = %e, "could not store the task state");
            return;
        }
    };
    let write = || async {
        writer
            .submit(encoded.clone())
            .await
            .unwrap_or_else(|| Err("the result writer stopped".into()))
    };
    if let Err(e) = retrying(rt.metrics(), Write::Result, write).await {
        tracing::error!(task_id = %meta.task_id, state = meta.status.as_str(), error = %e, "could not store the task state");
    }
}

/// SUCCESS with the return value and the result tuples of what the task published (`children`).
pub(crate) async fn store_success_with_children(
    rt: &Runtime,
    msg: &TaskMessage,
    value: Value,
    children: Vec<Value>,
) {
    let mut meta = TaskMeta::success(&msg.id, value);
    meta.children = Some(children);
    store(rt, with_request(rt, meta, Some(msg))).await;
}

/// FAILURE with the exception; `hostname` adds a traceback text naming this worker.
pub(crate) async fn store_failure(
    rt: &Runtime,
    task_id: &str,
    msg: Option<&TaskMessage>,
    exc: &PyException,
    hostname: Option<&str>,
) {
    let tb = match (msg, hostname) {
        (Some(m), Some(h)) => Some(traceback(m, h, exc)),
        _ => None,
    };
    let meta = TaskMeta::failure(task_id, &ExceptionInfo::from(exc), tb);
    store(rt, with_request(rt, meta, msg)).await;
}

/// STARTED with this worker's pid and hostname.
pub(crate) async fn store_started(rt: &Runtime, msg: &TaskMessage) {
    let meta = TaskMeta::started(&msg.id, rt.hostname(), std::process::id());
    store(rt, with_request(rt, meta, Some(msg))).await;
}

/// RETRY with the exception that caused it.
pub(crate) async fn store_retry(rt: &Runtime, msg: &TaskMessage, exc: &PyException) {
    let tb = traceback(msg, rt.hostname(), exc);
    let meta = TaskMeta::retry(&msg.id, Some(&ExceptionInfo::from(exc)), Some(tb));
    store(rt, with_request(rt, meta, Some(msg))).await;
}

/// REVOKED with `TaskRevokedError(reason)`.
pub(crate) async fn store_revoked(rt: &Runtime, msg: &TaskMessage, reason: &str) {
    store(
        rt,
        with_request(rt, TaskMeta::revoked(&msg.id, reason), Some(msg)),
    )
    .await;
}

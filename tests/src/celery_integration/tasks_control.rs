//! The tasks of Celery's `t/integration/tasks.py` that a worker calls as new-style errbacks,
//! with `(request, exc, traceback)` (see `celeriac_worker::canvas::errbacks`), under the same names and
//! with the same behaviour. The Python source is quoted in each doc comment.

use celeriac_worker::{PyException, TaskError, WorkerBuilder};
use serde_json::Value;

use super::tasks::{incr, rpush};

/// Python's `request.id` on the request an errback receives.
fn request_id(request: &Value) -> Result<String, TaskError> {
    match request.get("id") {
        Some(Value::String(id)) => Ok(id.clone()),
        _ => Err(PyException::new("AttributeError", "request has no attribute 'id'").into()),
    }
}

/// `def errback_new_style(request, exc, tb): redis_count(request.id); return request.id`
#[celeriac_worker::task(name = "t.integration.tasks.errback_new_style")]
async fn errback_new_style(request: Value, exc: Value, tb: Value) -> Result<Value, TaskError> {
    let _ = (exc, tb);
    let id = request_id(&request)?;
    incr(&id).await?;
    Ok(Value::String(id))
}

/// `def errback_new_style_with_args(request, exc, tb, label): redis_echo(label, redis_key=request.id)`
#[celeriac_worker::task(name = "t.integration.tasks.errback_new_style_with_args")]
async fn errback_new_style_with_args(
    request: Value,
    exc: Value,
    tb: Value,
    label: Value,
) -> Result<Value, TaskError> {
    let _ = (exc, tb);
    rpush(&request_id(&request)?, &label).await?;
    Ok(Value::Null)
}

/// Registers the tasks of this file.
pub fn register(builder: WorkerBuilder) -> WorkerBuilder {
    builder
        .register(errback_new_style)
        .register(errback_new_style_with_args)
}

//! The tasks of Celery's `t/integration/tasks.py` that read their request (`self.request`'s
//! delivery info, ETA, properties, time limits, replacement nesting) or retry with new
//! arguments, under the same names and with the same behaviour. The Python source is quoted in
//! each doc comment.

use std::time::Duration;

use celeriac_broker_bridge::backend::TaskMeta;
use celeriac_broker_bridge::codec::Signature;
use celeriac_worker::{TaskContext, TaskError, WorkerBuilder};
use serde_json::{json, Map, Value};

use super::py;

/// A number of seconds as Python shows it: an `int` when whole, else a `float`; `None` as null.
fn seconds(limit: Option<Duration>) -> Value {
    match limit {
        Some(d) if d.subsec_nanos() == 0 => json!(d.as_secs()),
        Some(d) => json!(d.as_secs_f64()),
        None => Value::Null,
    }
}

/// `def return_priority(self, *_args): return "Priority: %s" % self.request.delivery_info['priority']`
#[celeriac_worker::task(name = "t.integration.tasks.return_priority")]
async fn return_priority(ctx: TaskContext, #[args] _args: Vec<Value>) -> Result<Value, TaskError> {
    let priority = match ctx.delivery_info.priority {
        Some(p) => p.to_string(),
        None => "None".into(),
    };
    Ok(json!(format!("Priority: {priority}")))
}

/// `@shared_task(bind=True, max_retries=1)
/// def retry_once_priority(self, *args, expires=60.0, max_retries=1, countdown=0.1)`: retried
/// once (`self.retry(countdown=countdown, max_retries=max_retries)`), then returns
/// `self.request.delivery_info['priority']`.
#[celeriac_worker::task(name = "t.integration.tasks.retry_once_priority", max_retries = 1)]
async fn retry_once_priority(
    ctx: TaskContext,
    #[args] args: Vec<Value>,
    #[default(json!(60.0))] expires: Value,
    #[default(1)] max_retries: u32,
    #[default(0.1)] countdown: f64,
) -> Result<Value, TaskError> {
    let _ = (args, expires);
    if ctx.retries > 0 {
        return Ok(json!(ctx.delivery_info.priority));
    }
    Err(TaskError::retry_in(Duration::from_secs_f64(countdown)).max_retries(max_retries))
}

/// `def return_request_eta(self): return self.request.eta` (the ETA as the message carries it).
#[celeriac_worker::task(name = "t.integration.tasks.return_request_eta")]
async fn return_request_eta(ctx: TaskContext) -> Result<Value, TaskError> {
    Ok(json!(ctx.eta.map(|eta| eta.raw)))
}

/// `def return_properties(self): return self.request.properties`
#[celeriac_worker::task(name = "t.integration.tasks.return_properties")]
async fn return_properties(ctx: TaskContext) -> Result<Value, TaskError> {
    Ok(Value::Object(ctx.properties.into_map()))
}

/// `def return_request_time_limits(self)`: `{'time_limit': self.request.time_limit,
/// 'soft_time_limit': self.request.soft_time_limit}`
#[celeriac_worker::task(name = "t.integration.tasks.return_request_time_limits")]
async fn return_request_time_limits(ctx: TaskContext) -> Result<Value, TaskError> {
    Ok(json!({
        "time_limit": seconds(ctx.time_limit),
        "soft_time_limit": seconds(ctx.soft_time_limit),
    }))
}

/// `@shared_task(bind=True, time_limit=60, soft_time_limit=45)
/// def task_with_declared_time_limits(self)`: the same dict as `return_request_time_limits`.
#[celeriac_worker::task(
    name = "t.integration.tasks.task_with_declared_time_limits",
    time_limit = 60,
    soft_time_limit = 45
)]
async fn task_with_declared_time_limits(ctx: TaskContext) -> Result<Value, TaskError> {
    Ok(json!({
        "time_limit": seconds(ctx.time_limit),
        "soft_time_limit": seconds(ctx.soft_time_limit),
    }))
}

/// `@shared_task(bind=True, acks_late=True) def store_success_then_reject(self)`: on the first
/// delivery, `self.backend.store_result(self.request.id, 'first-pass', states.SUCCESS)` then
/// `raise Reject(requeue=True)`; redelivered, returns `'dedup-pass'`.
#[celeriac_worker::task(name = "t.integration.tasks.store_success_then_reject", acks_late)]
async fn store_success_then_reject(ctx: TaskContext) -> Result<Value, TaskError> {
    if !ctx.delivery_info.redelivered {
        let backend = ctx.client()?.backend()?;
        backend
            .store(&TaskMeta::success(&ctx.id, json!("first-pass")))
            .await
            .map_err(anyhow::Error::from)?;
        return Err(TaskError::reject("", true));
    }
    Ok(json!("dedup-pass"))
}

/// `@shared_task(bind=True, acks_late=True) def reject_then_succeed(self)`: `Reject(requeue=True)`
/// on the first delivery, `'second-pass'` when redelivered.
#[celeriac_worker::task(name = "t.integration.tasks.reject_then_succeed", acks_late)]
async fn reject_then_succeed(ctx: TaskContext) -> Result<Value, TaskError> {
    if !ctx.delivery_info.redelivered {
        return Err(TaskError::reject("", true));
    }
    Ok(json!("second-pass"))
}

/// `@shared_task(bind=True, max_retries=1) def retry_with_args_after_kwargs(self, foo, bar, label=None)`:
/// first `self.retry(args=(foo + 1, bar + 1), countdown=0)`, then returns
/// `{'foo', 'bar', 'label', 'retries', 'is_eager'}`.
#[celeriac_worker::task(
    name = "t.integration.tasks.retry_with_args_after_kwargs",
    max_retries = 1
)]
#[allow(clippy::disallowed_names)] // the Python parameters are `foo` and `bar`
async fn retry_with_args_after_kwargs(
    ctx: TaskContext,
    foo: Value,
    bar: Value,
    #[default(Value::Null)] label: Value,
) -> Result<Value, TaskError> {
    if ctx.retries == 0 {
        let args = vec![py::add(&foo, &json!(1))?, py::add(&bar, &json!(1))?];
        return Err(TaskError::retry_in(Duration::ZERO).with_args(args));
    }
    Ok(json!({
        "foo": foo, "bar": bar, "label": label, "retries": ctx.retries, "is_eager": false,
    }))
}

/// `@shared_task(bind=True, max_retries=1) def retry_with_kwargs_after_args(self, foo, bar)`:
/// first `self.retry(kwargs={'foo': foo + 1}, countdown=0)`, then returns
/// `{'foo', 'bar', 'retries', 'is_eager'}`.
#[celeriac_worker::task(
    name = "t.integration.tasks.retry_with_kwargs_after_args",
    max_retries = 1
)]
#[allow(clippy::disallowed_names)] // the Python parameters are `foo` and `bar`
async fn retry_with_kwargs_after_args(
    ctx: TaskContext,
    foo: Value,
    bar: Value,
) -> Result<Value, TaskError> {
    if ctx.retries == 0 {
        let kwargs = Map::from_iter([("foo".to_string(), py::add(&foo, &json!(1))?)]);
        return Err(TaskError::retry_in(Duration::ZERO).with_kwargs(kwargs));
    }
    Ok(json!({"foo": foo, "bar": bar, "retries": ctx.retries, "is_eager": false}))
}

/// `def record_replaced_task_nesting(self, replacements, nesting=None)`: appends
/// `self.request.replaced_task_nesting` to `nesting`; while `replacements` is truthy, replaces
/// itself by `record_replaced_task_nesting.s(replacements - 1, nesting)` set to the request's
/// `reply_to`; returns `nesting`.
#[celeriac_worker::task(name = "t.integration.tasks.record_replaced_task_nesting")]
async fn record_replaced_task_nesting(
    ctx: TaskContext,
    replacements: Value,
    #[default(Value::Null)] nesting: Value,
) -> Result<Value, TaskError> {
    let mut nesting = match nesting {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        other => {
            return Err(TaskError::fail(
                "AttributeError",
                format!(
                    "'{}' object has no attribute 'append'",
                    py::type_name(&other)
                ),
            ))
        }
    };
    nesting.push(json!(ctx.replaced_task_nesting));
    if py::truthy(&replacements) {
        let remaining = py::add(&replacements, &json!(-1))?;
        let mut sig = Signature::new(
            "t.integration.tasks.record_replaced_task_nesting",
            vec![remaining, Value::Array(nesting)],
            Map::new(),
        );
        sig.options.insert("reply_to".into(), json!(ctx.reply_to));
        return Err(TaskError::replace(sig));
    }
    Ok(Value::Array(nesting))
}

/// Registers the tasks of this file.
pub fn register(builder: WorkerBuilder) -> WorkerBuilder {
    builder
        .register(return_priority)
        .register(retry_once_priority)
        .register(return_request_eta)
        .register(return_properties)
        .register(return_request_time_limits)
        .register(task_with_declared_time_limits)
        .register(store_success_then_reject)
        .register(reject_then_succeed)
        .register(retry_with_args_after_kwargs)
        .register(retry_with_kwargs_after_args)
        .register(record_replaced_task_nesting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_as_python_numbers() {
        assert_eq!(seconds(Some(Duration::from_secs(30))), json!(30));
        assert_eq!(seconds(Some(Duration::from_millis(2500))), json!(2.5));
        assert_eq!(seconds(None), Value::Null);
    }
}

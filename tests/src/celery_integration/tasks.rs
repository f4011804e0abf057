//! The tasks of Celery's `t/integration/tasks.py`, under the same names, with the same
//! behaviour and exception types. Each is written as its Python definition; the Python source
//! is quoted in its doc comment. Tasks that need what celeriac lacks are not here (see
//! `tests/celery-integration/README.md`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use celeriac_broker_bridge::codec::Signature;
use celeriac_worker::{PyException, TaskContext, TaskError, WorkerBuilder};
use serde_json::{json, Map, Value};

use super::py;
use super::redis_conn;

const MODULE: &str = "t.integration.tasks";

/// An exception of `t/integration/tasks.py` (the test process imports that module, so
/// `AsyncResult.get()` re-raises the very class).
fn tasks_exception(name: &str, args: Vec<Value>) -> PyException {
    PyException {
        exc_type: name.into(),
        exc_module: MODULE.into(),
        args,
    }
}

fn builtin(name: &str, args: Vec<Value>) -> PyException {
    PyException {
        exc_type: name.into(),
        exc_module: "builtins".into(),
        args,
    }
}

/// A feature this port cannot express with celeriac yet: the task fails saying so.
fn unsupported(what: &str) -> TaskError {
    TaskError::fail(
        "NotImplementedError",
        format!("celeriac cannot do this yet: {what}"),
    )
}

/// `time.sleep(seconds)`.
async fn sleep(seconds: &Value) -> Result<(), PyException> {
    let secs = match seconds {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::Bool(b) => f64::from(u8::from(*b)),
        other => {
            return Err(PyException::new(
                "TypeError",
                format!(
                    "'{}' object cannot be interpreted as an integer",
                    py::type_name(other)
                ),
            ))
        }
    };
    if secs < 0.0 {
        return Err(PyException::new(
            "ValueError",
            "sleep length must be non-negative",
        ));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    Ok(())
}

/// What redis-py writes for a value: a `str` as is, `bytes` (kombu's JSON tags them
/// `{"__type__": "bytes", "__value__": <utf-8 text>}`) as their text, other values as text.
pub fn redis_item(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Object(o) if o.get("__type__") == Some(&json!("bytes")) => o
            .get("__value__")
            .and_then(Value::as_str)
            .map(str::to_string),
        other => Some(other.to_string()),
    }
}

pub(super) async fn rpush(key: &str, value: &Value) -> Result<(), TaskError> {
    let Some(item) = redis_item(value) else {
        return Err(PyException::in_module(
            "redis.exceptions",
            "DataError",
            "Invalid input of type: 'NoneType'. Convert to a bytes, string, int or float first.",
        )
        .into());
    };
    let mut conn = redis_conn().await?;
    redis::cmd("RPUSH")
        .arg(key)
        .arg(item)
        .query_async::<i64>(&mut conn)
        .await
        .map_err(anyhow::Error::from)?;
    Ok(())
}

pub(super) async fn incr(key: &str) -> Result<(), TaskError> {
    let mut conn = redis_conn().await?;
    redis::cmd("INCR")
        .arg(key)
        .query_async::<i64>(&mut conn)
        .await
        .map_err(anyhow::Error::from)?;
    Ok(())
}

/// `def identity(x): return x`
#[celeriac_worker::task(name = "t.integration.tasks.identity")]
async fn identity(x: Value) -> Result<Value, TaskError> {
    Ok(x)
}

/// `def add(x, y, z=None): return x + y + z if z else x + y`
#[celeriac_worker::task(name = "t.integration.tasks.add")]
async fn add(x: Value, y: Value, #[default(Value::Null)] z: Value) -> Result<Value, PyException> {
    let xy = py::add(&x, &y)?;
    if py::truthy(&z) {
        py::add(&xy, &z)
    } else {
        Ok(xy)
    }
}

/// `def mul(x: int, y: int) -> int: return x * y`
#[celeriac_worker::task(name = "t.integration.tasks.mul")]
async fn mul(x: Value, y: Value) -> Result<Value, PyException> {
    py::mul(&x, &y)
}

/// `def write_to_file_and_return_int(file_name, i)`: appends `i` and a newline to the file.
#[celeriac_worker::task(name = "t.integration.tasks.write_to_file_and_return_int")]
async fn write_to_file_and_return_int(file_name: String, i: Value) -> Result<Value, TaskError> {
    use std::io::Write;
    let line = match &i {
        Value::String(s) => format!("{s}\n"),
        other => format!("{other}\n"),
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file_name)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| builtin("OSError", vec![json!(e.to_string())]))?;
    Ok(i)
}

/// `@shared_task(typing=False) def add_not_typed(x, y): return x + y`
#[celeriac_worker::task(name = "t.integration.tasks.add_not_typed")]
async fn add_not_typed(x: Value, y: Value) -> Result<Value, PyException> {
    py::add(&x, &y)
}

/// `@shared_task(ignore_result=True) def add_ignore_result(x, y): return x + y`
#[celeriac_worker::task(name = "t.integration.tasks.add_ignore_result", ignore_result)]
async fn add_ignore_result(x: Value, y: Value) -> Result<Value, PyException> {
    py::add(&x, &y)
}

/// `@shared_task(ignore_result=False) def add_with_result(x, y): return x + y`
#[celeriac_worker::task(name = "t.integration.tasks.add_with_result", ignore_result = false)]
async fn add_with_result(x: Value, y: Value) -> Result<Value, PyException> {
    py::add(&x, &y)
}

/// `def raise_error(*args): raise ValueError("deliberate error")`
#[celeriac_worker::task(name = "t.integration.tasks.raise_error")]
async fn raise_error(#[args] args: Vec<Value>) -> Result<Value, PyException> {
    let _ = args;
    Err(PyException::new("ValueError", "deliberate error"))
}

/// `def delayed_sum(numbers, pause_time=1): sleep(pause_time); return sum(numbers)`
#[celeriac_worker::task(name = "t.integration.tasks.delayed_sum")]
async fn delayed_sum(
    numbers: Value,
    #[default(json!(1))] pause_time: Value,
) -> Result<Value, PyException> {
    sleep(&pause_time).await?;
    py::sum(&numbers)
}

/// `def delayed_sum_with_soft_guard(numbers, pause_time=1)`: as `delayed_sum`, returning 0 when
/// the soft time limit interrupts the sleep.
#[celeriac_worker::task(name = "t.integration.tasks.delayed_sum_with_soft_guard")]
async fn delayed_sum_with_soft_guard(
    ctx: TaskContext,
    numbers: Value,
    #[default(json!(1))] pause_time: Value,
) -> Result<Value, PyException> {
    match ctx.catch_soft_time_limit(sleep(&pause_time)).await {
        Ok(slept) => {
            slept?;
            py::sum(&numbers)
        }
        Err(_) => Ok(json!(0)),
    }
}

/// `def tsum(nums): return sum(nums)`
#[celeriac_worker::task(name = "t.integration.tasks.tsum")]
async fn tsum(nums: Value) -> Result<Value, PyException> {
    py::sum(&nums)
}

/// `def xsum(nums): return sum(sum(num) if isinstance(num, Iterable) else num for num in nums)`
#[celeriac_worker::task(name = "t.integration.tasks.xsum")]
async fn xsum(nums: Value) -> Result<Value, PyException> {
    let Value::Array(items) = &nums else {
        return py::sum(&nums);
    };
    let mut total = json!(0);
    for item in items {
        let term = match item {
            Value::Array(_) => py::sum(item)?,
            Value::String(s) => py::sum(&Value::Array(
                s.chars().map(|c| Value::String(c.into())).collect(),
            ))?,
            Value::Object(o) => py::sum(&Value::Array(
                o.keys().map(|k| Value::String(k.clone())).collect(),
            ))?,
            other => other.clone(),
        };
        total = py::add(&total, &term)?;
    }
    Ok(total)
}

/// `def sum_and_record(self, values, redis_key)`: sums and appends its own id to `redis_key`.
#[celeriac_worker::task(name = "t.integration.tasks.sum_and_record")]
async fn sum_and_record(
    ctx: TaskContext,
    values: Value,
    redis_key: String,
) -> Result<Value, TaskError> {
    let result = py::sum(&values)?;
    rpush(&redis_key, &Value::String(ctx.id.clone())).await?;
    Ok(result)
}

/// `def add_replaced(self, x, y): raise self.replace(add.s(x, y))`
#[celeriac_worker::task(name = "t.integration.tasks.add_replaced")]
async fn add_replaced(x: Value, y: Value) -> Result<Value, TaskError> {
    Err(TaskError::replace(Signature::new(
        "t.integration.tasks.add",
        vec![x, y],
        Map::new(),
    )))
}

/// `def print_unicode(log_message='håå®ƒ valmuefrø', print_message='hiöäüß')`: logs one and
/// prints the other (a Python worker logs what a task prints, as a warning).
#[celeriac_worker::task(name = "t.integration.tasks.print_unicode")]
async fn print_unicode(
    #[default("håå®ƒ valmuefrø".to_string())] log_message: String,
    #[default("hiöäüß".to_string())] print_message: String,
) -> Result<Value, TaskError> {
    tracing::warn!(target: "t.integration.tasks", "{log_message}");
    tracing::warn!(target: "celery.redirected", "{print_message}");
    Ok(Value::Null)
}

/// `def return_exception(e): return e, True`
#[celeriac_worker::task(name = "t.integration.tasks.return_exception")]
async fn return_exception(e: Value) -> Result<Value, TaskError> {
    Ok(json!([e, true]))
}

/// `def sleeping(i, **_): sleep(i)`
#[celeriac_worker::task(name = "t.integration.tasks.sleeping")]
async fn sleeping(i: Value, #[kwargs] rest: Map<String, Value>) -> Result<Value, PyException> {
    let _ = rest;
    sleep(&i).await?;
    Ok(Value::Null)
}

/// `def ids(self, i): return self.request.root_id, self.request.parent_id, i`
#[celeriac_worker::task(name = "t.integration.tasks.ids")]
async fn ids(ctx: TaskContext, i: Value) -> Result<Value, TaskError> {
    Ok(json!([ctx.root_id, ctx.parent_id, i]))
}

/// `def collect_ids(self, res, i): return res, (self.request.root_id, self.request.parent_id, i)`
#[celeriac_worker::task(name = "t.integration.tasks.collect_ids")]
async fn collect_ids(ctx: TaskContext, res: Value, i: Value) -> Result<Value, TaskError> {
    Ok(json!([res, [ctx.root_id, ctx.parent_id, i]]))
}

/// The worker-process attribute `retry.attempt` of the Python task object.
static RETRY_ATTEMPT: AtomicU32 = AtomicU32::new(0);

/// `@shared_task(bind=True, default_retry_delay=1) def retry(self, return_value=None)`: retried
/// with `ExpectedException()` every 5 s; with a `return_value`, returns it at the fourth attempt
/// (counted per worker process, as the task object's `attempt` attribute).
#[celeriac_worker::task(name = "t.integration.tasks.retry", default_retry_delay = 1)]
async fn retry(#[default(Value::Null)] return_value: Value) -> Result<Value, TaskError> {
    if py::truthy(&return_value) {
        let attempt = RETRY_ATTEMPT.load(Ordering::SeqCst);
        tracing::warn!(target: "celery.redirected", "attempt {attempt}");
        if attempt >= 3 {
            RETRY_ATTEMPT.store(0, Ordering::SeqCst);
            return Ok(return_value);
        }
        RETRY_ATTEMPT.store(attempt + 1, Ordering::SeqCst);
    }
    Err(TaskError::retry_in(Duration::from_secs(5))
        .because(tasks_exception("ExpectedException", vec![])))
}

/// `def retry_unpickleable(self, foo, bar, *, retry_kwargs)`:
/// `raise self.retry(exc=UnpickleableException(foo, bar), **retry_kwargs)` (the exception's
/// args are `(foo,)`).
#[celeriac_worker::task(
    name = "t.integration.tasks.retry_unpickleable",
    default_retry_delay = 1
)]
#[allow(clippy::disallowed_names)] // the Python parameters are `foo` and `bar`
async fn retry_unpickleable(
    foo: Value,
    bar: Value,
    #[kw_only] retry_kwargs: Map<String, Value>,
) -> Result<Value, TaskError> {
    let _ = bar;
    let mut request = TaskError::retry();
    for (key, value) in &retry_kwargs {
        request = match (key.as_str(), value) {
            ("countdown", Value::Number(n)) => match request {
                TaskError::Retry(mut r) => {
                    r.countdown = Some(Duration::from_secs_f64(n.as_f64().unwrap_or(0.0)));
                    TaskError::Retry(r)
                }
                other => other,
            },
            ("max_retries", Value::Number(n)) => {
                request.max_retries(u32::try_from(n.as_u64().unwrap_or(0)).unwrap_or(u32::MAX))
            }
            ("args", Value::Array(args)) => request.with_args(args.clone()),
            ("kwargs", Value::Object(kwargs)) => request.with_kwargs(kwargs.clone()),
            ("expires", Value::Number(n)) => request.expires_in(
                Duration::try_from_secs_f64(n.as_f64().unwrap_or(0.0)).unwrap_or(Duration::ZERO),
            ),
            _ => return Err(unsupported(&format!("retry({key}=...)"))),
        };
    }
    Err(request.because(tasks_exception("UnpickleableException", vec![foo])))
}

/// `@shared_task(bind=True, expires=120.0, max_retries=1)
/// def retry_once(self, *args, expires=None, max_retries=1, countdown=0.1)`: retried once,
/// returns the number of retries.
#[celeriac_worker::task(name = "t.integration.tasks.retry_once", max_retries = 1)]
async fn retry_once(
    ctx: TaskContext,
    #[args] args: Vec<Value>,
    #[default(Value::Null)] expires: Value,
    #[default(1)] max_retries: u32,
    #[default(0.1)] countdown: f64,
) -> Result<Value, TaskError> {
    let _ = args;
    if ctx.retries > 0 {
        return Ok(json!(ctx.retries));
    }
    let request = TaskError::retry_in(Duration::from_secs_f64(countdown)).max_retries(max_retries);
    Err(match expires {
        Value::Null => request,
        // `now + timedelta(seconds=expires)`, as `apply_async` computes it (a time already
        // past expires the retry as now does).
        Value::Number(n) => {
            let secs = n.as_f64().unwrap_or(0.0);
            request.expires_in(Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO))
        }
        other => {
            return Err(TaskError::fail(
                "TypeError",
                format!(
                    "unsupported type for timedelta seconds component: {}",
                    py::type_name(&other)
                ),
            ))
        }
    })
}

/// `@shared_task(bind=True, ignore_result=True) def retry_once_ignore_result(self)`
#[celeriac_worker::task(name = "t.integration.tasks.retry_once_ignore_result", ignore_result)]
async fn retry_once_ignore_result(ctx: TaskContext) -> Result<Value, TaskError> {
    if ctx.retries == 0 {
        return Err(TaskError::retry_in(Duration::ZERO));
    }
    Ok(json!(ctx.retries))
}

/// `@shared_task(bind=True, ignore_result=False) def retry_once_with_result(self)`
#[celeriac_worker::task(
    name = "t.integration.tasks.retry_once_with_result",
    ignore_result = false
)]
async fn retry_once_with_result(ctx: TaskContext) -> Result<Value, TaskError> {
    if ctx.retries == 0 {
        return Err(TaskError::retry_in(Duration::ZERO));
    }
    Ok(json!(ctx.retries))
}

/// `def retry_once_headers(self, *args, max_retries=1, countdown=0.1)`: retried once, then
/// returns the request's headers.
#[celeriac_worker::task(name = "t.integration.tasks.retry_once_headers", max_retries = 1)]
async fn retry_once_headers(
    ctx: TaskContext,
    #[args] args: Vec<Value>,
    #[default(1)] max_retries: u32,
    #[default(0.1)] countdown: f64,
) -> Result<Value, TaskError> {
    let _ = args;
    if ctx.retries > 0 {
        return Ok(Value::Object(ctx.headers.clone()));
    }
    Err(TaskError::retry_in(Duration::from_secs_f64(countdown)).max_retries(max_retries))
}

/// `def redis_echo(message, redis_key="redis-echo")`: appends the message to a Redis list.
#[celeriac_worker::task(name = "t.integration.tasks.redis_echo")]
async fn redis_echo(
    message: Value,
    #[default("redis-echo".to_string())] redis_key: String,
) -> Result<Value, TaskError> {
    rpush(&redis_key, &message).await?;
    Ok(Value::Null)
}

/// `def redis_echo_group_id(self, _, redis_key="redis-group-ids")`: appends the group id (the
/// ignored parameter `_` is named `ignored` here, a Rust parameter cannot be called `_`).
#[celeriac_worker::task(name = "t.integration.tasks.redis_echo_group_id")]
async fn redis_echo_group_id(
    ctx: TaskContext,
    ignored: Value,
    #[default("redis-group-ids".to_string())] redis_key: String,
) -> Result<Value, TaskError> {
    let _ = ignored;
    rpush(&redis_key, &json!(ctx.group)).await?;
    Ok(Value::Null)
}

/// `def redis_count(redis_key="redis-count")`: increments a Redis key.
#[celeriac_worker::task(name = "t.integration.tasks.redis_count")]
async fn redis_count(
    #[default("redis-count".to_string())] redis_key: String,
) -> Result<Value, TaskError> {
    incr(&redis_key).await?;
    Ok(Value::Null)
}

/// `def fail(*args): raise ExpectedException("Task expected to fail", *args)`
#[celeriac_worker::task(name = "t.integration.tasks.fail")]
async fn fail(#[args] args: Vec<Value>) -> Result<Value, PyException> {
    let mut all = vec![json!("Task expected to fail")];
    all.extend(args);
    Err(tasks_exception("ExpectedException", all))
}

/// `def fail_unpickleable(foo, bar): raise UnpickleableException(foo, bar)` (args `(foo,)`).
#[celeriac_worker::task(name = "t.integration.tasks.fail_unpickleable")]
#[allow(clippy::disallowed_names)] // the Python parameters are `foo` and `bar`
async fn fail_unpickleable(foo: Value, bar: Value) -> Result<Value, PyException> {
    let _ = bar;
    Err(tasks_exception("UnpickleableException", vec![foo]))
}

/// `def fail_replaced(self, *args): raise self.replace(fail.si(*args))`
#[celeriac_worker::task(name = "t.integration.tasks.fail_replaced")]
async fn fail_replaced(#[args] args: Vec<Value>) -> Result<Value, TaskError> {
    let mut sig = Signature::new("t.integration.tasks.fail", args, Map::new());
    sig.immutable = true;
    Err(TaskError::replace(sig))
}

/// `class ClassBasedAutoRetryTask(Task)`: `name = 'auto_retry_class_task'`,
/// `autoretry_for = (ValueError,)`, `retry_kwargs = {'max_retries': 1}`, `retry_backoff = True`
/// (the first retry after at most 1 s).
#[celeriac_worker::task(name = "auto_retry_class_task", max_retries = 1)]
async fn auto_retry_class_task(ctx: TaskContext) -> Result<Value, TaskError> {
    if ctx.retries > 0 {
        return Ok(json!(ctx.retries));
    }
    Err(TaskError::retry_in(Duration::from_secs(1))
        .max_retries(1)
        .because(builtin("ValueError", vec![])))
}

/// `def errback_old_style(request_id): redis_count(request_id); return request_id`
#[celeriac_worker::task(name = "t.integration.tasks.errback_old_style")]
async fn errback_old_style(request_id: String) -> Result<Value, TaskError> {
    incr(&request_id).await?;
    Ok(Value::String(request_id))
}

/// `def errback_old_style_with_args(request_id, label): redis_echo(label, redis_key=request_id)`
#[celeriac_worker::task(name = "t.integration.tasks.errback_old_style_with_args")]
async fn errback_old_style_with_args(request_id: String, label: Value) -> Result<Value, TaskError> {
    rpush(&request_id, &label).await?;
    Ok(Value::Null)
}

/// `def replaced_with_me(): return True`
#[celeriac_worker::task(name = "t.integration.tasks.replaced_with_me")]
async fn replaced_with_me() -> Result<Value, TaskError> {
    Ok(json!(true))
}

/// `@shared_task(pydantic=True) def add_pydantic(data: AddParameterModel) -> AddResultModel`:
/// `{"x": int, "y": int}` in, `{"result": x + y}` out.
#[celeriac_worker::task(name = "t.integration.tasks.add_pydantic")]
async fn add_pydantic(data: Value) -> Result<Value, PyException> {
    add_model(&data)
}

/// As `add_pydantic`, with the models' annotations written as strings.
#[celeriac_worker::task(name = "t.integration.tasks.add_pydantic_string_annotations")]
async fn add_pydantic_string_annotations(data: Value) -> Result<Value, PyException> {
    add_model(&data)
}

/// pydantic's validation of `AddParameterModel` (`x: int`, `y: int`), then `AddResultModel`.
fn add_model(data: &Value) -> Result<Value, PyException> {
    let field = |name: &str| -> Result<i64, PyException> {
        match data.get(name) {
            Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or(0)),
            Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => {
                Ok(s.trim().parse().unwrap_or(0))
            }
            _ => Err(PyException::in_module(
                "pydantic_core._pydantic_core",
                "ValidationError",
                format!("1 validation error for AddParameterModel\n{name}"),
            )),
        }
    };
    Ok(json!({"result": field("x")? + field("y")?}))
}

/// `def reject_without_requeue(): raise Reject('rejected', requeue=False)`
#[celeriac_worker::task(name = "t.integration.tasks.reject_without_requeue")]
async fn reject_without_requeue() -> Result<Value, TaskError> {
    Err(TaskError::reject("rejected", false))
}

/// `@shared_task(soft_time_limit=2, time_limit=1) def soft_time_limit_must_exceed_time_limit()`
#[celeriac_worker::task(
    name = "t.integration.tasks.soft_time_limit_must_exceed_time_limit",
    soft_time_limit = 2,
    time_limit = 1
)]
async fn soft_time_limit_must_exceed_time_limit() -> Result<Value, TaskError> {
    Ok(Value::Null)
}

/// Registers every ported task.
pub fn register(builder: WorkerBuilder) -> WorkerBuilder {
    builder
        .register(identity)
        .register(add)
        .register(mul)
        .register(write_to_file_and_return_int)
        .register(add_not_typed)
        .register(add_ignore_result)
        .register(add_with_result)
        .register(raise_error)
        .register(delayed_sum)
        .register(delayed_sum_with_soft_guard)
        .register(tsum)
        .register(xsum)
        .register(sum_and_record)
        .register(add_replaced)
        .register(print_unicode)
        .register(return_exception)
        .register(sleeping)
        .register(ids)
        .register(collect_ids)
        .register(retry)
        .register(retry_unpickleable)
        .register(retry_once)
        .register(retry_once_ignore_result)
        .register(retry_once_with_result)
        .register(retry_once_headers)
        .register(redis_echo)
        .register(redis_echo_group_id)
        .register(redis_count)
        .register(fail)
        .register(fail_unpickleable)
        .register(fail_replaced)
        .register(auto_retry_class_task)
        .register(errback_old_style)
        .register(errback_old_style_with_args)
        .register(replaced_with_me)
        .register(add_pydantic)
        .register(add_pydantic_string_annotations)
        .register(reject_without_requeue)
        .register(soft_time_limit_must_exceed_time_limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_items_as_redis_py_writes_them() {
        assert_eq!(redis_item(&json!("a")).as_deref(), Some("a"));
        let bytes = json!({"__type__": "bytes", "__value__": "0f2c"});
        assert_eq!(redis_item(&bytes).as_deref(), Some("0f2c"));
        assert_eq!(redis_item(&json!(3)).as_deref(), Some("3"));
        assert_eq!(redis_item(&Value::Null), None);
    }
}

//! The demo's tasks, each written as its Python definition (also registered by the end-to-end
//! test worker, so the tests call exactly these).

use std::time::Duration;

use celeriac_worker::{PyException, PyNumber, TaskError, WorkerBuilder};
use serde_json::Value;

/// `def add(a, b): return a + b` — ints of any size and floats, by position or by name.
#[celeriac_worker::task(name = "demo.add")]
pub async fn add(a: PyNumber, b: PyNumber) -> Result<PyNumber, PyException> {
    a + b
}

/// `def echo(value): return value`
#[celeriac_worker::task(name = "demo.echo")]
pub async fn echo(value: Value) -> Result<Value, TaskError> {
    Ok(value)
}

/// `def fail(*args): raise ValueError(*args)`
#[celeriac_worker::task(name = "demo.fail")]
pub async fn fail(#[args] args: Vec<Value>) -> Result<(), PyException> {
    Err(PyException {
        exc_type: "ValueError".into(),
        exc_module: "builtins".into(),
        args,
    })
}

/// `def sleep(ms): time.sleep(ms / 1000); return ms`
#[celeriac_worker::task(name = "demo.sleep")]
pub async fn sleep(ms: u64) -> Result<u64, TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

/// Registers the async demo tasks.
pub(crate) fn register(builder: WorkerBuilder) -> WorkerBuilder {
    builder
        .register(add)
        .register(echo)
        .register(fail)
        .register(sleep)
}

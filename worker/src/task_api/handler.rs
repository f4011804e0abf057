//! The type-erased task function the runtime calls, and its adapter from plain async functions.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::args::bind;
use super::context::TaskContext;
use super::error::{PyException, TaskError};
use super::options::TaskOptions;
use super::params::Params;

/// The future a task returns: its JSON result or its error.
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;

/// A task as the runtime sees it.
pub trait Handler: Send + Sync + 'static {
    /// Start the task for one call.
    fn call(&self, ctx: TaskContext) -> TaskFuture;

    /// Whether a run occupies a thread or a task process (a `-c` slot) rather than an async slot.
    fn on_threads(&self) -> bool {
        false
    }

    /// The function's parameters as Python sees them, when it declares them (tasks of
    /// [`#[celeriac_worker::task]`](macro@crate::task)); a retry with new arguments binds them
    /// to the names as Celery does.
    fn params(&self) -> Option<Params> {
        None
    }
}

/// A task declared with [`#[celeriac_worker::task]`](macro@crate::task): its own handler, with
/// its Celery name (registered by [`crate::WorkerBuilder::register`]).
pub trait TaskDefinition: Handler {
    /// The name producers send it by (`"demo.add"`).
    fn name(&self) -> &'static str;

    /// Whether it is a plain `fn`, run on its own thread (see [`crate::BlockingHandler`]); its code sees
    /// the soft time limit where it checks it.
    fn blocking(&self) -> bool {
        false
    }

    /// Its options (given in the attribute, as `@app.task(...)` takes them).
    fn options(&self) -> TaskOptions {
        TaskOptions::default()
    }
}

/// Adapts `async fn(TaskContext, A) -> Result<R, TaskError>` into a [`Handler`]: `A` is bound from
/// the call's args/kwargs (see [`crate::CallArgs`]), `R` is serialized to JSON as the result.
pub struct FnHandler<F, A, R, Fut> {
    f: F,
    _types: PhantomData<fn(A) -> (R, Fut)>,
}

impl<F, A, R, Fut> FnHandler<F, A, R, Fut> {
    /// Wrap a function.
    pub fn new(f: F) -> Self {
        FnHandler {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, A, R, Fut> Handler for FnHandler<F, A, R, Fut>
where
    F: Fn(TaskContext, A) -> Fut + Send + Sync + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
    Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
{
    fn call(&self, ctx: TaskContext) -> TaskFuture {
        let input = match bind::<A>(&ctx.args, &ctx.kwargs) {
            Ok(a) => a,
            Err(e) => return Box::pin(std::future::ready(Err(TaskError::Fail(e)))),
        };
        let fut = (self.f)(ctx, input);
        Box::pin(async move {
            let value = fut.await?;
            serde_json::to_value(value).map_err(|e| {
                TaskError::Fail(PyException::new(
                    "TypeError",
                    format!("task result is not JSON serializable: {e}"),
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn adapts_typed_functions() {
        let add = FnHandler::new(|_ctx: TaskContext, (a, b): (i64, i64)| async move {
            Ok::<_, TaskError>(a + b)
        });
        let ctx = TaskContext {
            args: vec![json!(2), json!(3)],
            ..Default::default()
        };
        assert_eq!(add.call(ctx).await.unwrap(), json!(5));
        let bad = TaskContext {
            args: vec![json!("x")],
            ..Default::default()
        };
        match add.call(bad).await {
            Err(TaskError::Fail(e)) => assert_eq!(e.exc_type, "TypeError"),
            other => panic!("expected TypeError, got {other:?}"),
        }
    }
}

//! Process tasks as the runtime sees them: [`ProcessHandler`] sends a run to a task process and
//! waits for its reply; [`ProcessFn`] is the function a child runs.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::pool::Pool;
use super::protocol::{parse_reply, RunRequest, ToChild};
use crate::task_api::args::bind;
use crate::task_api::{Handler, PyException, TaskContext, TaskError, TaskFuture};

/// A process task's function, type-erased: run in a child with the call's arguments.
pub(crate) trait ProcessFn: Send + Sync + 'static {
    /// Run once (in the child).
    fn run(&self, args: &[Value], kwargs: &Map<String, Value>) -> Result<Value, TaskError>;
}

/// Adapts `fn(A) -> Result<R, TaskError>` into a [`ProcessFn`] (`A` bound as for every task).
pub(crate) struct FnProcess<F, A, R> {
    f: F,
    _types: PhantomData<fn(A) -> R>,
}

impl<F, A, R> FnProcess<F, A, R> {
    /// Wrap a function.
    pub(crate) fn new(f: F) -> Self {
        FnProcess {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, A, R> ProcessFn for FnProcess<F, A, R>
where
    F: Fn(A) -> Result<R, TaskError> + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    fn run(&self, args: &[Value], kwargs: &Map<String, Value>) -> Result<Value, TaskError> {
        let input = bind::<A>(args, kwargs).map_err(TaskError::Fail)?;
        let value = (self.f)(input)?;
        serde_json::to_value(value).map_err(|e| {
            TaskError::Fail(PyException::new(
                "TypeError",
                format!("task result is not JSON serializable: {e}"),
            ))
        })
    }
}

/// Runs a task in a task process of `pool`; at the soft limit the child is told, and when the
/// run is dropped (hard limit, terminate, shutdown) its child is killed.
pub(crate) struct ProcessHandler {
    pool: Arc<Pool>,
}

impl ProcessHandler {
    /// Runs in `pool`'s processes.
    pub(crate) fn new(pool: Arc<Pool>) -> Self {
        ProcessHandler { pool }
    }
}

impl Handler for ProcessHandler {
    fn on_threads(&self) -> bool {
        true
    }

    fn call(&self, ctx: TaskContext) -> TaskFuture {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut lease = pool.checkout(&ctx.id).map_err(|e| {
                TaskError::fail("RuntimeError", format!("cannot start a task process: {e}"))
            })?;
            let request = ToChild::Run(RunRequest {
                id: ctx.id.clone(),
                task: ctx.name.clone(),
                args: ctx.args.clone(),
                kwargs: ctx.kwargs.clone(),
            });
            if lease.process().send(&request).await.is_err() {
                return Err(TaskError::Fail(lease.lost().await));
            }
            let mut soft_sent = false;
            loop {
                // `next_line` is cancel safe: a line half read when the soft limit fires is kept.
                let line = tokio::select! {
                    line = lease.process().next_line() => line,
                    () = ctx.time_limits.soft(), if !soft_sent => {
                        soft_sent = true;
                        // A child that is gone shows up as a closed stdout just after.
                        let _ = lease.process().send(&ToChild::SoftLimit(ctx.id.clone())).await;
                        continue;
                    }
                };
                match line {
                    Ok(Some(line)) => match parse_reply(&line) {
                        Some((id, outcome)) if id == ctx.id => {
                            lease.give_back();
                            return outcome;
                        }
                        _ => {
                            let pid = lease.process().pid();
                            tracing::info!(pid, output = %line, "task process output");
                        }
                    },
                    Ok(None) | Err(_) => return Err(TaskError::Fail(lease.lost().await)),
                }
            }
        })
    }
}

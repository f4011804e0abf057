//! Blocking (CPU-bound or synchronous-I/O) tasks: each run gets a dedicated OS thread so it never
//! stalls the async runtime.
//!
//! A thread cannot be killed safely. At the hard time limit the run fails with
//! `TimeLimitExceeded` and frees its slot at once; the thread is *abandoned* (counted by
//! [`crate::message::time_limits::abandoned_threads`], logged) and its eventual result is dropped. Loops
//! that call [`TaskContext::check_time_limits`] stop by themselves at the soft (or hard) limit.
//! Code that must be stopped for sure belongs in a process task ([`crate::process`]).

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

use super::args::bind;
use super::context::TaskContext;
use super::error::{PyException, TaskError};
use super::handler::{Handler, TaskFuture};
use crate::message::time_limits;

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

/// Adapts `fn(TaskContext, A) -> Result<R, TaskError>` (run on its own thread) into a [`Handler`].
pub struct BlockingHandler<F, A, R> {
    f: Arc<F>,
    _types: PhantomData<fn(A) -> R>,
}

impl<F, A, R> BlockingHandler<F, A, R> {
    /// Wrap a function.
    pub fn new(f: F) -> Self {
        BlockingHandler {
            f: Arc::new(f),
            _types: PhantomData,
        }
    }
}

impl<F, A, R> Handler for BlockingHandler<F, A, R>
where
    F: Fn(TaskContext, A) -> Result<R, TaskError> + Send + Sync + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
{
    fn on_threads(&self) -> bool {
        true
    }

    fn call(&self, ctx: TaskContext) -> TaskFuture {
        let input = match bind::<A>(&ctx.args, &ctx.kwargs) {
            Ok(a) => a,
            Err(e) => return Box::pin(std::future::ready(Err(TaskError::Fail(e)))),
        };
        let (tx, rx) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(RUNNING));
        let f = self.f.clone();
        let thread_state = state.clone();
        let spawned = std::thread::Builder::new()
            .name(thread_name(&ctx.id))
            .spawn(move || {
                let result = match catch_unwind(AssertUnwindSafe(|| f(ctx, input))) {
                    Ok(r) => r.and_then(to_json),
                    Err(payload) => Err(TaskError::Fail(PyException::new(
                        "RuntimeError",
                        format!("task panicked: {}", panic_text(payload.as_ref())),
                    ))),
                };
                if thread_state.swap(DONE, Ordering::AcqRel) == ABANDONED {
                    time_limits::abandoned_thread_ended();
                }
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            return Box::pin(std::future::ready(Err(TaskError::fail(
                "RuntimeError",
                format!("cannot start a thread for the task: {e}"),
            ))));
        }
        let guard = AbandonOnDrop(state);
        Box::pin(async move {
            let _guard = guard;
            rx.await.unwrap_or_else(|_| {
                Err(TaskError::fail(
                    "RuntimeError",
                    "the task's thread ended without a result",
                ))
            })
        })
    }
}

/// Marks the thread abandoned when the run's future is dropped before the thread finished.
struct AbandonOnDrop(Arc<AtomicU8>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if self
            .0
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            time_limits::thread_abandoned();
        }
    }
}

fn to_json<R: Serialize>(value: R) -> Result<Value, TaskError> {
    serde_json::to_value(value).map_err(|e| {
        TaskError::Fail(PyException::new(
            "TypeError",
            format!("task result is not JSON serializable: {e}"),
        ))
    })
}

/// The thread's name: `celeriac-task-<id>`, without the NUL bytes a thread name cannot hold
/// (a task id is whatever the message says).
fn thread_name(id: &str) -> String {
    format!("celeriac-task-{}", id.replace('\0', ""))
}

/// The text of a panic's payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn runs_on_a_thread_and_counts_abandoned_threads() {
        let add =
            BlockingHandler::new(|_: TaskContext, (a, b): (i64, i64)| Ok::<_, TaskError>(a + b));
        let ctx = TaskContext {
            args: vec![json!(2), json!(3)],
            ..Default::default()
        };
        assert_eq!(add.call(ctx).await.unwrap(), json!(5));
        let nul = TaskContext {
            id: "a\0b".into(),
            args: vec![json!(1), json!(1)],
            ..Default::default()
        };
        assert_eq!(add.call(nul).await.unwrap(), json!(2), "a NUL in the id");

        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = std::sync::Mutex::new(release_rx);
        let stuck = BlockingHandler::new(move |_: TaskContext, (): ()| {
            let _ = release_rx.lock().unwrap().recv();
            Ok::<_, TaskError>(())
        });
        let before = time_limits::abandoned_threads();
        drop(stuck.call(TaskContext::default()));
        assert_eq!(time_limits::abandoned_threads(), before + 1);
        release_tx.send(()).unwrap();
        let ended = (0..3000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            time_limits::abandoned_threads() == before
        });
        assert!(ended, "the abandoned thread is uncounted when it returns");
    }
}

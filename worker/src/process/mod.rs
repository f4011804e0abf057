//! Process tasks: CPU-bound or blocking functions run in child processes, so the hard time
//! limit really stops them (a thread cannot be killed; a process can).
//!
//! Register one with [`WorkerBuilder::process_task`](crate::WorkerBuilder::process_task): a
//! plain `fn(A) -> Result<R, TaskError>`. The worker starts children lazily — its own binary
//! re-executed with the same arguments and [`CHILD_ENV`] set; [`Worker::run`](crate::Worker::run)
//! and `celeriac_worker::cli::worker::run` see the marker at once and serve the child role
//! instead (so whatever `main` does before building the worker also runs in each child: keep it
//! cheap, or skip it when [`is_child`]). A child runs one task at a time and is reused.
//!
//! * Hard limit: the child is SIGKILLed and reaped, the run fails with `TimeLimitExceeded`, the
//!   next run gets a fresh child.
//! * Soft limit: the child is told; the function sees it with [`check_soft_time_limit`]: `?`
//!   stops the run (FAILURE `SoftTimeLimitExceeded`), matching the error is the cleanup path.
//! * A child that dies (crash, abort, OOM kill): FAILURE `WorkerLostError` as Celery's prefork
//!   pool reports it, or, with late acks and `task_reject_on_worker_lost`, the message is requeued.
//! * `revoke(terminate=True)` and the end of a shutdown's grace kill the child too.
//!
//! Anything the function prints on stdout is logged (`task process output`); its stderr is the
//! worker's.

pub(crate) mod child;
pub(crate) mod handler;
pub(crate) mod pool;
pub(crate) mod protocol;

pub(crate) use child::{is_child, serve};
pub(crate) use handler::{FnProcess, ProcessFn, ProcessHandler};
pub(crate) use pool::Pool;

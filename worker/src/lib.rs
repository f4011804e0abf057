//! The celeriac worker runtime: consume Celery task messages from Redis, run Rust tasks, write
//! results as a Python Celery worker does.
//!
//! The public API is small: [`Worker`] / [`WorkerBuilder`] assemble and run a worker, the
//! [`task`](macro@task) attribute and the types at this crate's root are what a task sees,
//! [`client`] sends tasks and reads results, [`config`] holds the settings and [`cli`] the
//! `celeriac` subcommands. The rest is internal, one folder per role (see ARCHITECTURE.md):
//! `message/` is the path of a message (fetch, process, hold for an ETA, retry, settle,
//! dead-letter), `upkeep/` the loops beside it (keepalive, queue registration, remote control),
//! `observe/` what the worker reports (events, metrics, HTTP, telemetry, logs), `task/` the task
//! API and registry, `canvas/` callbacks, chains, groups and chords, `process/` task processes.

// The `#[task]` macro's expansion names this crate `::celeriac_worker`, also inside it.
extern crate self as celeriac_worker;

/// mimalloc as the global allocator of every binary that links the worker (feature `mimalloc`,
/// on by default; turn it off to set your own `#[global_allocator]`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod cli;
pub mod client;
pub mod config;

mod builder;
mod canvas;
mod connection;
#[cfg(test)]
mod import_circles;
mod launcher;
mod message;
mod observe;
mod process;
mod query_tasks;
mod runtime;
mod signing;
mod sqs;
mod task_api;
mod upkeep;
mod warm;

pub use builder::{Worker, WorkerBuilder};
/// Declares a task as a Python-style function: `#[celeriac_worker::task(name = "app.add")]` on
/// `async fn add(a: PyNumber, b: PyNumber) -> Result<PyNumber, PyException>` binds positional,
/// keyword and mixed calls, defaults (`#[default(..)]`), `*args` (`#[args]`), keyword-only
/// parameters (`#[kw_only]`) and `**kwargs` (`#[kwargs]`) as CPython binds them, failing with
/// CPython's `TypeError` messages. Register it with [`WorkerBuilder::register`].
///
/// ```
/// use celeriac_worker::{PyException, PyNumber, TaskContext, TaskError, Worker};
/// use serde_json::{json, Map, Value};
///
/// #[celeriac_worker::task(name = "tickets.add")] // def add(a, b): return a + b
/// async fn add(a: PyNumber, b: PyNumber) -> Result<PyNumber, PyException> {
///     a + b
/// }
///
/// #[celeriac_worker::task(name = "tickets.get")] // def get(ticket_id, fresh=False, **opts)
/// async fn get(
///     ctx: TaskContext,
///     ticket_id: i64,
///     #[default(false)] fresh: bool,
///     #[kwargs] opts: Map<String, Value>,
/// ) -> Result<Value, TaskError> {
///     // Python's `try: ... except SoftTimeLimitExceeded:` around slow work.
///     let slow = ctx.catch_soft_time_limit(async { ticket_id * 2 }).await;
///     Ok(json!({"id": ticket_id, "fresh": fresh, "opts": opts, "in_time": slow.is_ok()}))
/// }
///
/// # async fn run() -> anyhow::Result<()> {
/// Worker::builder().register(add).register(get).build().run().await
/// # }
/// ```
pub use celeriac_macros::task;
pub use observe::lifecycle::{Lifecycle, Revocation, TaskRef};
pub use process::child::{check_soft_time_limit, is_child};
pub use task_api::soft_limit::SoftTimeLimitExceeded;
pub use task_api::{
    BlockingHandler, CallArgs, DeliveryInfo, FnHandler, Handler, Properties, PyException, PyNumber,
    RetryRequest, TaskContext, TaskDefinition, TaskError, TaskFuture, TaskOptions, WireTime,
};

/// What the `#[task]` macro's expansion, the end-to-end tests and the fuzz targets reach into;
/// not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::connection::install_crypto_provider;
    pub use crate::query_tasks::config::{QueryTaskConfig, ResultShape};
    pub use crate::query_tasks::handler::bind_call;
    pub use crate::task_api::params;

    /// The keepalive loop, for the silent-connection test.
    pub mod keepalive {
        pub use crate::upkeep::keepalive::{keep_fresh, refresh_period};
    }
}

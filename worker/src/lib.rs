//! The celeriac worker runtime: consume Celery task messages from Redis, run Rust tasks, write
//! results as a Python Celery worker does.
//!
//! One file per role: [`fetch`] takes messages off the queues, [`processor`] runs one message,
//! [`scheduled`] holds ETA messages, [`retry`] republishes retries, [`settle`] acks or rejects a
//! finished run's message, [`dead_letter`] disposes of what cannot run, [`keepalive`] keeps held
//! messages from being restored by sweeps, [`launcher`] starts and stops it all; [`control`]
//! answers remote control, [`revoked`] keeps revoked ids, [`events`] sends monitoring events,
//! [`tracked`] lists held requests, [`signing`] signs and checks messages (`auth`); [`builder`] is the Rust API and [`mod@task`] what a task sees; [`builtins`] runs Celery's `celery.map`/`celery.starmap`, [`errbacks`] calls new-style errbacks; [`client`] sends tasks and reads results.

// The `#[task]` macro's expansion names this crate `::celeriac_worker`, also inside it.
extern crate self as celeriac_worker;

pub mod batch;
pub mod builder;
pub mod builtins;
pub mod cache_metrics;
pub mod canvas;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod dead_letter;
pub mod errbacks;
pub mod events;
pub mod fetch;
pub mod http;
pub mod http_limits;
pub mod keepalive;
pub mod launcher;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod processor;
pub mod query_tasks;
pub mod rate_limit;
pub mod registration;
pub mod registry;
pub mod reserved_bytes;
pub mod results;
pub mod retry;
pub mod retrying;
pub mod revoked;
pub mod runtime;
pub mod scheduled;
pub mod settle;
pub mod signing;
pub mod sqs;
pub mod task;
pub mod telemetry;
pub mod time_limits;
pub mod tracked;
pub mod warm;

pub use builder::{Worker, WorkerBuilder};
/// Declares a task as a Python-style function: `#[celeriac_worker::task(name = "app.add")]` on
/// `async fn add(a: PyNumber, b: PyNumber) -> Result<PyNumber, PyException>` binds positional,
/// keyword and mixed calls, defaults (`#[default(..)]`), `*args` (`#[args]`), keyword-only
/// parameters (`#[kw_only]`) and `**kwargs` (`#[kwargs]`) as CPython binds them, failing with
/// CPython's `TypeError` messages. Register it with [`WorkerBuilder::register`]. See
/// [`task::params`].
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
pub use client::{AsyncResult, Client, GroupResult};
pub use task::{CallArgs, PyException, PyNumber, TaskContext, TaskError, TaskOptions};

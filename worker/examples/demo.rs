//! The demo worker: a few tasks a Python Celery producer can call.
//!
//! `cargo run --release -p celeriac-worker --example demo -- <celeriac worker flags>`
//! (the same flags and `CELERY_*` environment as `celeriac worker`).

use std::time::Duration;

use celeriac_worker::config::WorkerArgs;
use celeriac_worker::{TaskContext, TaskError, Worker};
use clap::Parser;
use serde_json::Value;

/// The demo worker (takes `celeriac worker`'s flags).
#[derive(Parser)]
#[command(name = "demo")]
struct Args {
    #[command(flatten)]
    worker: WorkerArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let builder = Worker::builder()
        .task(
            "demo.add",
            |_ctx: TaskContext, (a, b): (i64, i64)| async move {
                a.checked_add(b)
                    .ok_or_else(|| TaskError::fail("OverflowError", "integer overflow"))
            },
        )
        .task(
            "demo.echo",
            |_ctx: TaskContext, (value,): (Value,)| async move { Ok::<_, TaskError>(value) },
        )
        .task(
            "demo.fail",
            |_ctx: TaskContext, (message,): (String,)| async move {
                Err::<(), _>(TaskError::fail("ValueError", message))
            },
        )
        .task(
            "demo.sleep",
            |_ctx: TaskContext, (ms,): (u64,)| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, TaskError>(ms)
            },
        );
    celeriac_worker::cli::worker::run(builder, &args.worker)
}

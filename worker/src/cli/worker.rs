//! `celeriac worker`: settings from flags, environment and file; logging; run until signalled.

use super::pidfile::Pidfile;
use crate::builder::WorkerBuilder;
use crate::config::{process_env, Settings, WorkerArgs};
use crate::observe::logging;

/// Load settings for `args` from the process environment, start logging and run the worker
/// built by `builder` (its tasks) until SIGTERM/SIGINT.
/// In a task process (see [`crate::WorkerBuilder::process_task`]) it serves the child role instead, before loading
/// settings or logging anything, and never returns.
pub fn run(builder: WorkerBuilder, args: &WorkerArgs) -> anyhow::Result<()> {
    builder.serve_if_task_process();
    let settings = Settings::load(args, process_env())?;
    let _telemetry = crate::observe::telemetry::init()?;
    logging::init_to(
        settings.loglevel,
        settings.log_format,
        args.logfile.as_deref(),
    )?;
    for warning in args.ignored_flags() {
        tracing::warn!("{warning}");
    }
    let _pidfile = match &args.pidfile {
        Some(path) => Some(Pidfile::create(path)?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(super::RUNTIME_THREAD_STACK)
        .enable_all()
        .build()?;
    runtime.block_on(builder.settings(settings).build().run())
}

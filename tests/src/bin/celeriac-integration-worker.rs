//! The worker Celery's integration suite runs against (`tests/celery-integration/run`): the
//! tasks of Celery's `t/integration/tasks.py`, ported (`celeriac_tests::celery_integration`).
//! Takes `celeriac worker`'s flags and `CELERY_*` environment.

use celeriac_worker::config::WorkerArgs;
use celeriac_worker::Worker;
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    worker: WorkerArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let builder = celeriac_tests::celery_integration::register(Worker::builder());
    celeriac_worker::cli::worker::run(builder, &args.worker)
}

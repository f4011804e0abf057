//! The chaos run's driver (started by `tests/chaos/run`): see `celeriac_tests::chaos`. Prints
//! the summary last; exits 1 when an invariant broke.

use std::path::PathBuf;
use std::time::Duration;

use celeriac_tests::chaos::{self, Options};
use clap::Parser;

#[derive(Parser)]
#[command(about = "celeriac chaos run: kills, cut connections, a Postgres restart; then an audit")]
struct Args {
    /// Tasks to send.
    #[arg(long, env = "CHAOS_TASKS", default_value_t = 100_000)]
    tasks: usize,
    /// Upper bound of the whole run, in seconds.
    #[arg(long, env = "CHAOS_TIME_LIMIT", default_value_t = 600)]
    time_limit: u64,
    /// Milliseconds between two SIGKILLs of a celeriac worker.
    #[arg(long, default_value_t = 2000)]
    kill_every_ms: u64,
    /// celeriac workers.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Concurrency of each celeriac worker.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Producer processes.
    #[arg(long, default_value_t = 2)]
    producers: usize,
    /// Skip the private Postgres and the query task.
    #[arg(long)]
    no_postgres: bool,
    /// Put the Python worker behind the fault proxy too (kombu then loses and duplicates
    /// messages itself).
    #[arg(long)]
    python_through_proxy: bool,
    /// Seed of the task mix and of the fault timings.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Every side signs (Celery's `auth` serializer with the fixtures' key and store).
    #[arg(long)]
    signed: bool,
    /// The celeriac test worker binary.
    #[arg(long)]
    worker_bin: PathBuf,
    /// The test venv's Python (with Celery).
    #[arg(long, env = "CELERIAC_TEST_PYTHON")]
    python: PathBuf,
    /// Folder for logs and manifests (default: a new temporary folder, kept).
    #[arg(long)]
    logs: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let logs = match args.logs {
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("celeriac-chaos-")
            .tempdir()?
            .keep(),
    };
    eprintln!("logs and manifests: {}", logs.display());
    let opts = Options {
        tasks: args.tasks,
        time_limit: Duration::from_secs(args.time_limit),
        kill_every: Duration::from_millis(args.kill_every_ms),
        workers: args.workers.max(1),
        concurrency: args.concurrency.max(1),
        producers: args.producers.max(1),
        postgres: !args.no_postgres,
        python_through_proxy: args.python_through_proxy,
        seed: args.seed,
        signed: args.signed,
        worker_bin: args.worker_bin,
        python: args.python,
        root: celeriac_testkit::workspace_root(),
        logs: logs.clone(),
    };
    let report = chaos::run(&opts)?;
    std::fs::write(logs.join("summary.txt"), format!("{report}\n"))?;
    println!("{report}");
    if !report.audit.ok() {
        std::process::exit(1);
    }
    Ok(())
}

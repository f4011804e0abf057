//! The `celeriac` command.

use clap::{Parser, Subcommand};

use celeriac_worker::config::WorkerArgs;
use celeriac_worker::Worker;

/// A Celery-compatible task worker for Redis, written in Rust.
#[derive(Parser)]
#[command(name = "celeriac", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume tasks from the queues and run them (settings: flags, CELERY_* env, --config TOML).
    Worker(WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Worker(args) => celeriac_worker::cli::worker::run(Worker::builder(), &args),
    }
}

//! The `celeriac` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use celeriac_worker::cli;
use celeriac_worker::config::WorkerArgs;
use celeriac_worker::Worker;

/// A Celery-compatible task worker for Redis, written in Rust.
#[derive(Parser)]
#[command(name = "celeriac", version, about)]
struct Cli {
    /// Ignored, with a warning (Celery's `celery -A proj worker`): the tasks are compiled in.
    #[arg(short = 'A', long = "app", value_name = "APP")]
    app: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume tasks from the queues and run them (settings: flags, CELERY_* env, --config TOML).
    Worker(Box<WorkerArgs>),
    /// Decode one raw task message (a Redis list element) and print it as JSON.
    Decode(cli::decode::DecodeArgs),
    /// Exit 0 when the worker's /healthz (on 127.0.0.1) answers 200, 1 otherwise.
    Healthcheck(cli::healthcheck::HealthcheckArgs),
    /// Fill the cache from the `[[warm]]` entries (exit 0 ok, 1 error, 2 bad config, 3 locked,
    /// 4 time budget ran out).
    Warm(cli::warm::WarmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker(mut args) => {
            args.app = args.app.or(cli.app);
            worker(&args)
        }
        Command::Decode(args) => cli::decode::run(&args),
        Command::Healthcheck(args) => cli::healthcheck::run(&args),
        Command::Warm(args) => cli::warm::main(&args),
    }
}

fn worker(args: &WorkerArgs) -> ExitCode {
    match cli::worker::run(Worker::builder(), args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("celeriac worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `celeriac` command.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A Celery-compatible task worker for Redis, written in Rust.
#[derive(Parser)]
#[command(name = "celeriac", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Decode one raw task message (a Redis list element) and print it as JSON.
    Decode(cli::decode::DecodeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Decode(args)) => cli::decode::run(&args),
        None => ExitCode::SUCCESS,
    }
}

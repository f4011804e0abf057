//! The `celeriac` command.

use clap::Parser;

/// A Celery-compatible task worker for Redis, written in Rust.
#[derive(Parser)]
#[command(name = "celeriac", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}

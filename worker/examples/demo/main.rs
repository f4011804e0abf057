//! The demo worker: a few tasks a Python Celery producer can call.
//!
//! `cargo run --release -p celeriac-worker --example demo -- <celeriac worker flags>`
//! (the same flags and `CELERY_*` environment as `celeriac worker`). With
//! `--config worker/examples/demo.toml` it also serves the declarative query tasks
//! (`demo.get_ticket`, ...) from a SQLite file it creates from `demo-data.sql` on first run.

mod tasks;

use celeriac_cache::source::sqlite::SqliteSource;
use celeriac_cache::source::SourceConfig;
use celeriac_cache::Source;
use celeriac_worker::config::parse_query_tasks as parse_query_config;
use celeriac_worker::config::{process_env, Settings, WorkerArgs};
use celeriac_worker::{TaskError, Worker};
use clap::Parser;

/// The demo worker (takes `celeriac worker`'s flags).
#[derive(Parser)]
#[command(name = "demo")]
struct Args {
    #[command(flatten)]
    worker: WorkerArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    seed_sqlite_demo_data(&args.worker)?;
    let builder = tasks::register(Worker::builder())
        // CPU-bound: runs in a task process, killed for sure at its hard time limit.
        .process_task("demo.primes", |(below,): (u64,)| {
            let count = (2..below)
                .filter(|n| (2..).take_while(|d| d * d <= *n).all(|d| n % d != 0))
                .count();
            Ok::<_, TaskError>(count)
        });
    celeriac_worker::cli::worker::run(builder, &args.worker)
}

/// Create the SQLite file of `[sources.main]` from `demo-data.sql` when it does not exist yet.
fn seed_sqlite_demo_data(args: &WorkerArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args, process_env())?;
    let env = |name: &str| std::env::var(name).ok();
    let config = parse_query_config(&settings.extra, &env).map_err(anyhow::Error::msg)?;
    let Some(main) = config.sources.iter().find(|s| s.name == "main") else {
        return Ok(());
    };
    let Some(rest) = main.url.strip_prefix("sqlite://") else {
        return Ok(());
    };
    let path = rest.split('?').next().unwrap_or(rest);
    if std::path::Path::new(path).exists() {
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let source = SqliteSource::connect_lazy(&SourceConfig::new("main", main.url.clone()))?;
        for statement in include_str!("../demo-data.sql").split(';') {
            let sql: String = statement
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            if !sql.trim().is_empty() {
                source.fetch(&sql, &[]).await?;
            }
        }
        eprintln!("demo: created {path} from demo-data.sql");
        anyhow::Ok(())
    })
}

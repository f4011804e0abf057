//! `celeriac warm --config FILE [--dry-run] [--full]`: fill the cache from the `[[warm]]`
//! entries of the worker TOML, as a Kubernetes CronJob would run it.
//!
//! Exit codes (see [`EXIT_CODES`]): 0 every job completed, 1 error, 2 bad configuration, 3 another
//! run holds a job's lock, 4 the time budget stopped a job (progress saved; the next run
//! resumes). With several jobs the most serious outcome wins: 1, then 3, then 4.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use celeriac_cache::warm::{run, JobKeys, RunOptions, Sink, StateStore, WarmLock, WarmWriter};
use celeriac_cache::L2Conn;
use clap::Parser;

use crate::config::{process_env, Settings, WorkerArgs};
use crate::warm::WarmSpec;

/// Exit code: every job done.
pub const EXIT_OK: u8 = 0;
/// Exit code: a job failed (database, Redis, lost lock).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the configuration is wrong.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code: another run holds a job's lock; nothing was done for that job.
pub const EXIT_LOCKED: u8 = 3;
/// Exit code: a job's time budget ran out before it completed. Its progress is saved and the
/// next run resumes, but the job has not succeeded (no new last-success timestamp).
pub const EXIT_INCOMPLETE: u8 = 4;

/// The exit codes as `--help` shows them.
pub const EXIT_CODES: &str =
    "Exit codes: 0 every job completed; 1 a job failed (database, Redis, lost lock); \
2 bad configuration; 3 another run holds a job's lock (nothing done for it); 4 a job's time budget \
ran out (progress saved, the next run resumes; not a success). With several jobs the most serious \
wins: 1, then 3, then 4.";

/// The more serious of two exit codes (error, then locked, then incomplete, then ok).
fn worse(a: u8, b: u8) -> u8 {
    let rank = |c: u8| match c {
        EXIT_OK => 0,
        EXIT_INCOMPLETE => 1,
        EXIT_LOCKED => 2,
        _ => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// Arguments of `celeriac warm`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct WarmArgs {
    /// The worker TOML with `[sources.*]`, `[[tasks]]` and `[[warm]]`.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Read the source and count, write nothing to Redis (no lock, no watermark).
    #[arg(long)]
    pub dry_run: bool,
    /// Forget the watermark and reload everything.
    #[arg(long)]
    pub full: bool,
    /// Only these jobs (task names; repeatable). Default: every `[[warm]]` entry.
    #[arg(long = "job", value_name = "TASK")]
    pub jobs: Vec<String>,
    /// Write Prometheus metrics to this textfile (node-exporter textfile collector).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

/// Run `celeriac warm`; returns the process exit code.
pub fn main(args: &WarmArgs) -> ExitCode {
    let settings = match load(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("celeriac warm: configuration: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = crate::observe::logging::init(settings.loglevel, settings.log_format) {
        eprintln!("celeriac warm: logging: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(super::RUNTIME_THREAD_STACK)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("celeriac warm: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    ExitCode::from(runtime.block_on(run_all(args, &settings)))
}

fn load(args: &WarmArgs) -> anyhow::Result<Settings> {
    let path = args.config.to_string_lossy().into_owned();
    #[derive(Parser)]
    struct Top {
        #[command(flatten)]
        worker: WorkerArgs,
    }
    let top = Top::try_parse_from(["celeriac", "--config", path.as_str()])?;
    Ok(Settings::load(&top.worker, process_env())?)
}

fn redis_url(settings: &Settings, configured: Option<&String>) -> String {
    match configured {
        Some(url) => url.clone(),
        None => settings
            .result_backend
            .as_ref()
            .unwrap_or(&settings.broker_url)
            .expose()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

async fn run_all(args: &WarmArgs, settings: &Settings) -> u8 {
    let env = |name: &str| std::env::var(name).ok();
    let checked = crate::query_tasks::check(settings, &env).and_then(|(config, sources, _)| {
        let specs =
            crate::warm::parse(&settings.extra, &config, &sources).map_err(anyhow::Error::msg)?;
        Ok((config, specs))
    });
    let (config, specs) = match checked {
        Ok(v) => v,
        Err(e) => {
            eprintln!("celeriac warm: configuration: {e:#}");
            return EXIT_CONFIG;
        }
    };
    let unknown: Vec<&String> = args
        .jobs
        .iter()
        .filter(|j| !specs.iter().any(|s| &s.job.name == *j))
        .collect();
    if !unknown.is_empty() {
        eprintln!("celeriac warm: configuration: no [[warm]] entry for {unknown:?}");
        return EXIT_CONFIG;
    }
    let url = redis_url(settings, config.cache_redis_url.as_ref());
    let conn = match connect(&url, config.cache.cluster).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("celeriac warm: redis: {e:#}");
            return EXIT_ERROR;
        }
    };
    let mut code = EXIT_OK;
    let mut metrics = crate::warm::metrics::WarmMetrics::new();
    for spec in specs
        .iter()
        .filter(|s| args.jobs.is_empty() || args.jobs.contains(&s.job.name))
    {
        let outcome = run_one(args, spec, &config.cache, conn.clone(), &mut metrics).await;
        code = worse(code, outcome);
    }
    if !args.dry_run {
        if let Some(path) = &args.metrics_file {
            if let Err(e) = metrics.write_textfile(path) {
                tracing::error!(error = %e, path = %path.display(), "warm: cannot write the metrics file");
                code = worse(code, EXIT_ERROR);
            }
        }
        match pushgateway_url() {
            Ok(Some(gateway)) => {
                if let Err(e) = push(&metrics, &gateway).await {
                    tracing::error!(error = %e, "warm: Pushgateway push failed");
                    code = worse(code, EXIT_ERROR);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "warm: Pushgateway push failed");
                code = worse(code, EXIT_ERROR);
            }
        }
    }
    code
}

/// `CELERIAC_WARM_PUSHGATEWAY_URL`, or the file `CELERIAC_WARM_PUSHGATEWAY_URL_FILE` names (for a
/// URL carrying basic-auth credentials).
fn pushgateway_url() -> anyhow::Result<Option<String>> {
    let vars = process_env().collect();
    Ok(crate::config::lookup_env(&vars, "CELERIAC_WARM_PUSHGATEWAY_URL")?.map(|found| found.value))
}

/// Push to the Pushgateway with the bearer token of `CELERIAC_WARM_PUSHGATEWAY_BEARER_TOKEN_FILE`
/// (read now, so a rotated token is used) and the CA of `CELERIAC_WARM_PUSHGATEWAY_CA_FILE`.
async fn push(metrics: &crate::warm::metrics::WarmMetrics, url: &str) -> anyhow::Result<()> {
    let token = match std::env::var_os("CELERIAC_WARM_PUSHGATEWAY_BEARER_TOKEN_FILE") {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", PathBuf::from(&path).display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let ca = std::env::var_os("CELERIAC_WARM_PUSHGATEWAY_CA_FILE").map(PathBuf::from);
    metrics.push(url, token.as_deref(), ca.as_deref()).await
}

/// How long one Redis reply may take. redis-rs's default (500 ms) is too short for a page's
/// write script (thousands of keys) on a busy Redis; a timed-out write fails the whole run.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The cache's Redis: the node `url` names, or (`cluster`) the Redis Cluster it belongs to.
async fn connect(url: &str, cluster: bool) -> anyhow::Result<L2Conn> {
    crate::connection::install_crypto_provider();
    let client = celeriac_broker_bridge::redis_url::parse(url)
        .and_then(|u| u.client())
        .context("[cache] redis_url")?;
    let connect_timeout = Duration::from_secs(10);
    let conn = tokio::time::timeout(
        connect_timeout,
        celeriac_cache::warm::connect(&client, cluster, connect_timeout, REDIS_RESPONSE_TIMEOUT),
    )
    .await
    .context("connect timed out")??;
    Ok(conn)
}

async fn run_one(
    args: &WarmArgs,
    spec: &WarmSpec,
    cache: &celeriac_cache::CacheConfig,
    conn: L2Conn,
    metrics: &mut crate::warm::metrics::WarmMetrics,
) -> u8 {
    let name = &spec.job.name;
    let JobKeys {
        lock: lock_key,
        state: state_key,
    } = JobKeys::new(cache, name);
    let mut store = StateStore::new(conn.clone(), state_key, lock_key.clone());
    let lock = if args.dry_run {
        None
    } else {
        match WarmLock::acquire(conn.clone(), &lock_key, spec.lock_ttl).await {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                let holder = WarmLock::holder(&mut conn.clone(), &lock_key).await;
                eprintln!(
                    "celeriac warm: job {name}: another run holds the lock {lock_key} (holder {}); nothing done for this job (exit {EXIT_LOCKED})",
                    holder.as_deref().unwrap_or("unknown")
                );
                let stored = store.load().await.ok().and_then(|s| s.last_success_ms);
                metrics.keep_last_success(name, stored);
                return EXIT_LOCKED;
            }
            Err(e) => {
                eprintln!("celeriac warm: job {name}: redis: {e}");
                return EXIT_ERROR;
            }
        }
    };
    let mut writer = WarmWriter::new(conn, cache.clone(), true);
    let sink = lock.as_ref().map(|lock| Sink {
        writer: &mut writer,
        lock,
    });
    let options = RunOptions {
        dry_run: args.dry_run,
        full: args.full,
    };
    let mut reporter = crate::warm::progress::Reporter::new(name, std::io::stderr().is_terminal());
    let started = Instant::now();
    let result = run::run(&spec.job, &mut store, sink, options, &mut |p| {
        reporter.update(p)
    })
    .await;
    reporter.finish();
    if let Some(lock) = lock {
        lock.release().await;
    }
    match result {
        Ok(summary) => {
            tracing::info!(
                job = %name,
                pass = %summary.pass,
                dry_run = args.dry_run,
                complete = summary.complete,
                rows_read = summary.rows_read,
                keys_written = summary.keys_written,
                keys_skipped_leased = summary.keys_skipped_leased,
                keys_deleted = summary.keys_deleted,
                seconds = summary.elapsed.as_secs_f64(),
                "warm finished"
            );
            println!(
                "{name}: {} pass{}{}: {} rows read, {} keys {}, {} deleted, {} skipped (lease held), {:.1}s",
                summary.pass,
                if summary.complete { "" } else { " (time budget reached; the next run resumes)" },
                if args.dry_run { " [dry run]" } else { "" },
                summary.rows_read,
                summary.keys_written,
                if args.dry_run { "to write" } else { "written" },
                summary.keys_deleted,
                summary.keys_skipped_leased,
                summary.elapsed.as_secs_f64()
            );
            metrics.record(
                name,
                summary.rows_read,
                started.elapsed(),
                summary.complete,
                summary.last_success_ms,
            );
            if summary.complete {
                EXIT_OK
            } else {
                eprintln!(
                    "celeriac warm: job {name}: time budget reached before the pass completed; progress saved, the next run resumes (exit {EXIT_INCOMPLETE})"
                );
                EXIT_INCOMPLETE
            }
        }
        Err(e) => {
            tracing::error!(job = %name, error = %e, "warm failed");
            eprintln!("celeriac warm: job {name}: {e}");
            let stored = store.load().await.ok().and_then(|s| s.last_success_ms);
            metrics.record(name, 0, started.elapsed(), false, stored);
            EXIT_ERROR
        }
    }
}

/// Parse `celeriac warm` arguments from `argv` (for binaries that embed the command).
pub fn parse_from<I, T>(argv: I) -> WarmArgs
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    #[derive(Parser)]
    struct Top {
        #[command(flatten)]
        args: WarmArgs,
    }
    Top::parse_from(argv).args
}

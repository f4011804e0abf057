//! The `celeriac worker` command-line flags, named like Celery's.

use std::path::PathBuf;

use super::fields::{apply, by_key};
use super::settings::Settings;
use super::value::Raw;
use super::ConfigError;

/// Flags of `celeriac worker`. They override the environment, which overrides the config file.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WorkerArgs {
    /// TOML configuration file (else env CELERIAC_CONFIG).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Broker URL (broker_url).
    #[arg(short = 'b', long = "broker", value_name = "URL")]
    pub broker: Option<String>,
    /// Result backend URL (result_backend); `disabled` turns results off.
    #[arg(long, value_name = "URL")]
    pub result_backend: Option<String>,
    /// Queues to consume, comma-separated or repeated (default: task_default_queue).
    #[arg(short = 'Q', long, value_name = "QUEUES", value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Tasks run at once on threads or in task processes, Celery's pool size (worker_concurrency;
    /// default: number of CPUs); alone, it bounds async tasks too.
    #[arg(short = 'c', long, value_name = "N")]
    pub concurrency: Option<String>,
    /// Async tasks run at once (CELERIAC_ASYNC_CONCURRENCY; default 512, or -c when only -c is given).
    #[arg(long, value_name = "N")]
    pub async_concurrency: Option<String>,
    /// Unacked messages held per concurrency slot (worker_prefetch_multiplier).
    #[arg(long, value_name = "N")]
    pub prefetch_multiplier: Option<String>,
    /// Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL, any case (RUST_LOG overrides).
    #[arg(short = 'l', long, value_name = "LEVEL")]
    pub loglevel: Option<String>,
    /// Node name; %h is the host name, %n its first label, %d its domain (default celeriac@%h).
    #[arg(short = 'n', long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Send task events (worker_send_task_events).
    #[arg(short = 'E', long)]
    pub task_events: bool,
    /// Ack messages after the task ran (task_acks_late).
    #[arg(long)]
    pub acks_late: bool,
    /// Serve Prometheus metrics on this port.
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<String>,
    /// Seconds running tasks may still finish on shutdown; 0 = no limit (worker_soft_shutdown_timeout).
    #[arg(long, value_name = "SECS")]
    pub soft_shutdown_timeout: Option<String>,
}

/// Applies the flags that were given to `settings`.
pub(crate) fn apply_args(settings: &mut Settings, args: &WorkerArgs) -> Result<(), ConfigError> {
    let queues = (!args.queues.is_empty()).then(|| args.queues.join(","));
    let flag = |b: bool| b.then(|| "true".to_owned());
    let given: [(&str, &str, Option<String>); 12] = [
        ("--broker", "broker_url", args.broker.clone()),
        (
            "--result-backend",
            "result_backend",
            args.result_backend.clone(),
        ),
        ("--queues", "queues", queues),
        (
            "--concurrency",
            "worker_concurrency",
            args.concurrency.clone(),
        ),
        (
            "--async-concurrency",
            "async_concurrency",
            args.async_concurrency.clone(),
        ),
        (
            "--prefetch-multiplier",
            "worker_prefetch_multiplier",
            args.prefetch_multiplier.clone(),
        ),
        ("--loglevel", "loglevel", args.loglevel.clone()),
        ("--hostname", "worker_hostname", args.hostname.clone()),
        (
            "--task-events",
            "worker_send_task_events",
            flag(args.task_events),
        ),
        ("--acks-late", "task_acks_late", flag(args.acks_late)),
        (
            "--soft-shutdown-timeout",
            "worker_soft_shutdown_timeout",
            args.soft_shutdown_timeout.clone(),
        ),
        ("--metrics-port", "metrics_port", args.metrics_port.clone()),
    ];
    for (flag_name, key, value) in given {
        let Some(value) = value else { continue };
        let field = by_key(key, false)
            .or_else(|| by_key(key, true))
            .ok_or_else(|| ConfigError::InvalidValue {
                origin: flag_name.into(),
                value: String::new(),
                reason: format!("internal: no setting named {key}"),
            })?;
        apply(field, settings, Raw::Text(&value), || {
            format!("flag {flag_name}")
        })?;
    }
    Ok(())
}

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
    /// Hard time limit of a task run, seconds (task_time_limit).
    #[arg(long, value_name = "SECS")]
    pub time_limit: Option<String>,
    /// Soft time limit of a task run, seconds (task_soft_time_limit).
    #[arg(long, value_name = "SECS")]
    pub soft_time_limit: Option<String>,
    /// Replace a task process after this many tasks (worker_max_tasks_per_child).
    #[arg(long, value_name = "N")]
    pub max_tasks_per_child: Option<String>,
    /// Replace a task process whose resident memory exceeds this many KiB after a task
    /// (worker_max_memory_per_child).
    #[arg(long, value_name = "KIB")]
    pub max_memory_per_child: Option<String>,
    /// Queues not to consume, comma-separated or repeated: removed from -Q (or the default queue).
    #[arg(short = 'X', long, value_name = "QUEUES", value_delimiter = ',')]
    pub exclude_queues: Vec<String>,
    /// Skip the start-up exchange with other workers (without_mingle).
    #[arg(long)]
    pub without_mingle: bool,
    /// Send no worker-online/heartbeat/offline events (without_heartbeat).
    #[arg(long)]
    pub without_heartbeat: bool,
    /// Accepted for Celery command lines: celeriac does not gossip with other workers.
    #[arg(long)]
    pub without_gossip: bool,
    /// Accepted for Celery command lines (`fair` or `default`): celeriac only starts a task when
    /// a slot is free, which is what `-O fair` asks of prefork.
    #[arg(short = 'O', value_name = "PROFILE", value_parser = ["fair", "default"])]
    pub optimization: Option<String>,
    /// Write the worker's process id to this file; refuse to start if it names a running process.
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
    /// Append log lines to this file instead of stdout.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub logfile: Option<PathBuf>,
    /// Ignored, with a warning: celeriac's tasks are compiled in, there is no app to import.
    #[arg(short = 'A', long, value_name = "APP")]
    pub app: Option<String>,
    /// Ignored, with a warning: each task runs as it was registered (async, thread or process).
    #[arg(short = 'P', long, value_name = "POOL")]
    pub pool: Option<String>,
    /// Ignored, with a warning: scale replicas instead (KEDA, see deploy/).
    #[arg(long, value_name = "MAX,MIN")]
    pub autoscale: Option<String>,
}

impl WorkerArgs {
    /// Warnings for Celery flags that were given and have no effect here, to log once logging
    /// is set up.
    pub fn ignored_flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(app) = &self.app {
            out.push(format!(
                "-A {app} ignored: celeriac's tasks are compiled into the worker"
            ));
        }
        if let Some(pool) = &self.pool {
            out.push(format!(
                "-P {pool} ignored: each task runs as it was registered (async, on a thread or in a task process)"
            ));
        }
        if let Some(scale) = &self.autoscale {
            out.push(format!(
                "--autoscale {scale} ignored: -c is fixed; scale replicas instead (KEDA, see deploy/)"
            ));
        }
        out
    }
}

/// Applies the flags that were given to `settings`.
pub(crate) fn apply_args(settings: &mut Settings, args: &WorkerArgs) -> Result<(), ConfigError> {
    let queues = (!args.queues.is_empty()).then(|| args.queues.join(","));
    let flag = |b: bool| b.then(|| "true".to_owned());
    let given: [(&str, &str, Option<String>); 18] = [
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
        ("--time-limit", "task_time_limit", args.time_limit.clone()),
        (
            "--soft-time-limit",
            "task_soft_time_limit",
            args.soft_time_limit.clone(),
        ),
        (
            "--max-tasks-per-child",
            "worker_max_tasks_per_child",
            args.max_tasks_per_child.clone(),
        ),
        (
            "--max-memory-per-child",
            "worker_max_memory_per_child",
            args.max_memory_per_child.clone(),
        ),
        (
            "--without-mingle",
            "without_mingle",
            flag(args.without_mingle),
        ),
        (
            "--without-heartbeat",
            "without_heartbeat",
            flag(args.without_heartbeat),
        ),
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
    exclude_queues(settings, &args.exclude_queues)
}

/// `-X`: consume the queues of `-Q` (or the default queue) except these, as Celery's worker.
fn exclude_queues(settings: &mut Settings, excluded: &[String]) -> Result<(), ConfigError> {
    if excluded.is_empty() {
        return Ok(());
    }
    let mut queues = if settings.queues.is_empty() {
        vec![settings.task_default_queue.clone()]
    } else {
        std::mem::take(&mut settings.queues)
    };
    queues.retain(|q| !excluded.iter().any(|x| x.trim() == q));
    if queues.is_empty() {
        return Err(ConfigError::InvalidValue {
            origin: "flag --exclude-queues".into(),
            value: format!("{:?}", excluded.join(",")),
            reason: "excludes every queue the worker would consume".into(),
        });
    }
    settings.queues = queues;
    Ok(())
}

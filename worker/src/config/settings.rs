//! Every setting of `celeriac worker`, each declared once (see [`declare`](super::declare)):
//! the [`Settings`] struct, its defaults, its redacted `Debug`, the `FIELDS` table the sources
//! read and the [`WorkerArgs`] flags are generated from the entries below.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use celeriac_broker_bridge::signing::Digest;

use super::declare::declare_settings;
use super::types::{
    DeadLetterPolicy, LogFormat, LogLevel, Password, RateLimit, RateLimitScope, SecretUrl,
    SerializerName,
};
use super::value::Raw;

declare_settings! {
    /// Everything `celeriac worker` is configured with. Field names are Celery's setting names;
    /// defaults are Celery 5's unless marked celeriac-only.
    pub struct Settings {
        internal {
            /// Whether `worker_concurrency` was given (flag, environment or TOML) rather than
            /// defaulted.
            worker_concurrency_given: bool = false;
            /// Other tables of the TOML file (`[sources]`, `[tasks]`, …), kept raw for the
            /// modules that own them.
            extra: BTreeMap<String, toml::Value> = BTreeMap::new();
        }

        /// Redis broker; schemes `redis`, `rediss`, `redis+socket`, `sentinel`; `;` separates
        /// failover URLs. Or one `sqs://` URL: Amazon SQS (see the README's SQS section; needs a
        /// Redis `result_backend`).
        celery broker_url: SecretUrl = SecretUrl::default_broker(), "`redis://localhost:6379/0`",
            env "CELERY_BROKER_URL",
            flag broker: Option<String> = short 'b', long "broker", value_name "URL";
                "Broker URL (broker_url).",
            parse |r| SecretUrl::parse_broker(&r.non_empty_string()?);

        /// Redis result backend; empty or `disabled` turns results off.
        celery result_backend: Option<SecretUrl> = None, "none (results disabled)",
            env "CELERY_RESULT_BACKEND",
            flag result_backend: Option<String> = long "result-backend", value_name "URL";
                "Result backend URL (result_backend); `disabled` turns results off.",
            parse result_backend;

        /// kombu Redis options: `visibility_timeout`, `priority_steps`, `sep`,
        /// `global_keyprefix`, …
        celery broker_transport_options: serde_json::Map<String, serde_json::Value> =
            serde_json::Map::new(), "`{}`",
            env "CELERY_BROKER_TRANSPORT_OPTIONS",
            parse |r| r.json_object();

        /// Options of the Redis result backend (e.g. `global_keyprefix`).
        celery result_backend_transport_options: serde_json::Map<String, serde_json::Value> =
            serde_json::Map::new(), "`{}`",
            env "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS",
            parse |r| r.json_object();

        /// Result time to live in seconds; `0` = never expire.
        celery result_expires: Option<Duration> = Some(Duration::from_secs(86_400)),
            "`86400` (1 day)",
            env "CELERY_RESULT_EXPIRES",
            parse |r| r.optional_seconds();

        /// Store name, args, kwargs, worker, retries, queue with results.
        celery result_extended: bool = false, "`false`",
            env "CELERY_RESULT_EXTENDED",
            parse |r| r.bool();

        /// Ack after the task ran (at-least-once) instead of before.
        celery task_acks_late: bool = false, "`false`",
            env "CELERY_TASK_ACKS_LATE",
            flag acks_late: bool = long "acks-late";
                "Ack messages after the task ran (task_acks_late).",
            parse |r| r.bool();

        /// With acks_late, requeue a task whose run was lost (a process task's child died:
        /// `WorkerLostError`) instead of storing FAILURE.
        celery task_reject_on_worker_lost: bool = false, "`false`",
            env "CELERY_TASK_REJECT_ON_WORKER_LOST",
            parse |r| r.bool();

        /// With acks_late, still ack failed or timed-out tasks. When false they are rejected
        /// without requeue, as Celery does; kombu's Redis transport drops such a message,
        /// celeriac moves it intact to the dead-letter list with the failure as reason.
        celery task_acks_on_failure_or_timeout: bool = true, "`true`",
            env "CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT",
            parse |r| r.bool();

        /// Store a STARTED state when a task begins.
        celery task_track_started: bool = false, "`false`",
            env "CELERY_TASK_TRACK_STARTED",
            parse |r| r.bool();

        /// Store no results unless a task asks for them.
        celery task_ignore_result: bool = false, "`false`",
            env "CELERY_TASK_IGNORE_RESULT",
            parse |r| r.bool();

        /// Store failures of tasks that ignore results.
        celery task_store_errors_even_if_ignored: bool = false, "`false`",
            env "CELERY_TASK_STORE_ERRORS_EVEN_IF_IGNORED",
            parse |r| r.bool();

        /// Queue of messages sent without one; default for `queues`.
        celery task_default_queue: String = "celery".into(), "`celery`",
            env "CELERY_TASK_DEFAULT_QUEUE",
            parse |r| r.non_empty_string();

        /// Seconds before a retry that names no delay.
        celery task_default_retry_delay: Duration = Duration::from_secs(180), "`180`",
            env "CELERY_TASK_DEFAULT_RETRY_DELAY",
            parse |r| r.seconds();

        /// Hard time limit of a task run, seconds.
        celery task_time_limit: Option<Duration> = None, "none",
            env "CELERY_TASK_TIME_LIMIT",
            flag time_limit: Option<String> = long "time-limit", value_name "SECS";
                "Hard time limit of a task run, seconds (task_time_limit).",
            parse |r| r.optional_seconds();

        /// Soft time limit of a task run, seconds.
        celery task_soft_time_limit: Option<Duration> = None, "none",
            env "CELERY_TASK_SOFT_TIME_LIMIT",
            flag soft_time_limit: Option<String> = long "soft-time-limit", value_name "SECS";
                "Soft time limit of a task run, seconds (task_soft_time_limit).",
            parse |r| r.optional_seconds();

        /// Rate limit for tasks that set none: `100/m`, `2/h`, `0.5/s`, `10` (per second).
        celery task_default_rate_limit: Option<RateLimit> = None, "none",
            env "CELERY_TASK_DEFAULT_RATE_LIMIT",
            parse |r| r.optional_string()?.map(|v| v.parse()).transpose();

        /// Serializers accepted in task messages.
        celery accept_content: Vec<String> = vec!["json".into()], "`[\"json\"]`",
            env "CELERY_ACCEPT_CONTENT",
            parse non_empty_list;

        /// Serializers accepted in results.
        celery result_accept_content: Option<Vec<String>> = None, "none (= `accept_content`)",
            env "CELERY_RESULT_ACCEPT_CONTENT",
            parse |r| {
                let list = r.list()?;
                Ok((!list.is_empty()).then_some(list))
            };

        /// How retries, chain/chord messages and remote-control requests and replies celeriac
        /// sends are written: `json` or `auth` (signed, see [Message
        /// signing](#message-signing)).
        celery task_serializer: SerializerName = SerializerName::Json, "`json`",
            env "CELERY_TASK_SERIALIZER",
            parse |r| r.non_empty_string()?.parse();

        /// How results, chord parts and saved groups are written: `json` or `auth`.
        celery result_serializer: SerializerName = SerializerName::Json, "`json`",
            env "CELERY_RESULT_SERIALIZER",
            parse |r| r.non_empty_string()?.parse();

        /// How events are written: `json` or `auth`.
        celery event_serializer: SerializerName = SerializerName::Json, "`json`",
            env "CELERY_EVENT_SERIALIZER",
            parse |r| r.non_empty_string()?.parse();

        /// PEM file of the RSA key that signs (PKCS#8, encrypted PKCS#8 or PKCS#1; 2048 to 8192
        /// bits).
        celery security_key: Option<PathBuf> = None, "none",
            env "CELERY_SECURITY_KEY",
            parse |r| Ok(r.optional_string()?.map(Into::into));

        /// Password of an encrypted key (secret: use `_FILE`; never shown).
        celery security_key_password: Option<Password> = None, "none",
            env "CELERY_SECURITY_KEY_PASSWORD",
            parse |r| Ok(r.optional_string()?.map(Password::new));

        /// PEM file of the key's certificate (names the signer).
        celery security_certificate: Option<PathBuf> = None, "none",
            env "CELERY_SECURITY_CERTIFICATE",
            parse |r| Ok(r.optional_string()?.map(Into::into));

        /// Certificates of trusted signers: a directory, a file or a glob
        /// (`/etc/celery/certs/*.pem`).
        celery security_cert_store: Option<String> = None, "none",
            env "CELERY_SECURITY_CERT_STORE",
            parse |r| r.optional_string();

        /// Hash of the signatures: `sha256`, `sha384` or `sha512` (Celery's `sha1`/`sha224` are
        /// refused).
        celery security_digest: Digest = Digest::Sha256, "`sha256`",
            env "CELERY_SECURITY_DIGEST",
            parse |r| r.non_empty_string()?.parse();

        /// The app's time zone name (not validated here).
        celery timezone: String = "UTC".into(), "`UTC`",
            env "CELERY_TIMEZONE",
            parse |r| r.non_empty_string();

        /// Celery's pool size: tasks run at once on threads (`.blocking_task`) or in task
        /// processes (`.process_task`) (≥ 1). Given without `async_concurrency`, it bounds every
        /// task, async ones included (one shared pool, as before `async_concurrency` existed).
        celery worker_concurrency: usize =
            std::thread::available_parallelism().map_or(1, |n| n.get()), "number of CPUs",
            env "CELERY_WORKER_CONCURRENCY",
            flag concurrency: Option<String> = short 'c', long "concurrency", value_name "N";
                "Tasks run at once on threads or in task processes, Celery's pool size \
                 (worker_concurrency; default: number of CPUs); alone, it bounds async tasks too.",
            parse at_least_one, marks worker_concurrency_given;

        /// Async tasks (`.task`, `#[task] async fn`, query tasks) run at once (≥ 1), apart from
        /// the thread/process slots. Reservations are sized from the slots of the kinds of task
        /// registered.
        celeriac async_concurrency: Option<usize> = None,
            "`512`, or `worker_concurrency` when only that is given",
            env "CELERIAC_ASYNC_CONCURRENCY",
            flag async_concurrency: Option<String> = long "async-concurrency", value_name "N";
                "Async tasks run at once (CELERIAC_ASYNC_CONCURRENCY; default 512, or -c when \
                 only -c is given).",
            parse |r| at_least_one(r).map(Some);

        /// Unacked messages held per concurrency slot; `0` = no limit (as Celery).
        celery worker_prefetch_multiplier: u32 = 4, "`4`",
            env "CELERY_WORKER_PREFETCH_MULTIPLIER",
            flag prefetch_multiplier: Option<String> = long "prefetch-multiplier", value_name "N";
                "Unacked messages held per concurrency slot (worker_prefetch_multiplier).",
            parse |r| r.integer();

        /// Publish task events.
        celery worker_send_task_events: bool = false, "`false`",
            env "CELERY_WORKER_SEND_TASK_EVENTS",
            flag task_events: bool = short 'E', long "task-events";
                "Send task events (worker_send_task_events).",
            parse |r| r.bool();

        /// Warm-shutdown grace: running tasks get this many seconds to finish, then the rest are
        /// handed back to the broker. `0` (Celery's default) = wait without limit, like Celery's
        /// warm shutdown.
        celery worker_soft_shutdown_timeout: Duration = Duration::ZERO, "`0`",
            env "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT",
            flag soft_shutdown_timeout: Option<String> =
                long "soft-shutdown-timeout", value_name "SECS";
                "Seconds running tasks may still finish on shutdown; 0 = no limit \
                 (worker_soft_shutdown_timeout).",
            parse |r| r.seconds();

        /// A task process (`process_task`) is replaced after this many tasks; `0`/empty = never.
        /// Async and thread tasks run in the worker process and are not affected.
        celery worker_max_tasks_per_child: Option<u64> = None, "none",
            env "CELERY_WORKER_MAX_TASKS_PER_CHILD",
            flag max_tasks_per_child: Option<String> =
                long "max-tasks-per-child", value_name "N";
                "Replace a task process after this many tasks (worker_max_tasks_per_child).",
            parse optional_positive;

        /// A task process whose resident memory exceeds this many KiB after a task is replaced
        /// (the task completes); `0`/empty = never. Process tasks only, as above.
        celery worker_max_memory_per_child: Option<u64> = None, "none",
            env "CELERY_WORKER_MAX_MEMORY_PER_CHILD",
            flag max_memory_per_child: Option<String> =
                long "max-memory-per-child", value_name "KIB";
                "Replace a task process whose resident memory exceeds this many KiB after a task \
                 (worker_max_memory_per_child).",
            parse optional_positive;

        /// Skip the start-up exchange with other workers (the revoked ids they hold), as
        /// Celery's `--without-mingle`.
        celeriac without_mingle: bool = false, "`false`",
            env "CELERIAC_WITHOUT_MINGLE",
            flag without_mingle: bool = long "without-mingle";
                "Skip the start-up exchange with other workers (without_mingle).",
            parse |r| r.bool();

        /// Send no `worker-online`, `worker-heartbeat`, `worker-offline` events (Flower then
        /// shows the worker offline; task events still flow with `-E`), as Celery's
        /// `--without-heartbeat`.
        celeriac without_heartbeat: bool = false, "`false`",
            env "CELERIAC_WITHOUT_HEARTBEAT",
            flag without_heartbeat: bool = long "without-heartbeat";
                "Send no worker-online/heartbeat/offline events (without_heartbeat).",
            parse |r| r.bool();

        /// Node name; `%h` host, `%n` first label, `%d` domain, `%%` a `%`; a name without `@`
        /// gets `celeriac@` prepended.
        celery worker_hostname: String = DEFAULT_HOSTNAME.into(), "`celeriac@%h`",
            env "CELERY_WORKER_HOSTNAME",
            flag hostname: Option<String> = short 'n', long "hostname", value_name "NAME";
                "Node name; %h is the host name, %n its first label, %d its domain (default \
                 celeriac@%h).",
            parse |r| r.non_empty_string();

        /// Queues consumed; `-Q` may be repeated.
        celery queues: Vec<String> = Vec::new(), "`[task_default_queue]`",
            env "CELERY_WORKER_QUEUES",
            flag queues: Vec<String> =
                short 'Q', long "queues", value_name "QUEUES", delimiter ',';
                "Queues to consume, comma-separated or repeated (default: task_default_queue).",
            parse |r| r.list();

        /// `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL` (any case). `RUST_LOG`, if set,
        /// overrides it.
        celery loglevel: LogLevel = LogLevel::Info, "`INFO`",
            env "CELERY_WORKER_LOGLEVEL",
            flag loglevel: Option<String> = short 'l', long "loglevel", value_name "LEVEL";
                "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL, any case (RUST_LOG \
                 overrides).",
            parse |r| r.parsed();

        /// Messages celeriac cannot run: `dead-letter` (store under `dead_letter_key`) or
        /// `requeue:<queue>`.
        celeriac dead_letter_policy: DeadLetterPolicy = DeadLetterPolicy::DeadLetter,
            "`dead-letter`",
            env "CELERIAC_DEAD_LETTER_POLICY",
            parse |r| r.parsed();

        /// Redis list of dead letters.
        celeriac dead_letter_key: String = "celeriac.dead_letter".into(),
            "`celeriac.dead_letter`",
            env "CELERIAC_DEAD_LETTER_KEY",
            parse |r| r.non_empty_string();

        /// Redis sorted set (id → revocation time, `global_keyprefix` applied) that keeps
        /// revoked ids across restarts and replicas, like Celery's `--statedb`. Bounded by
        /// `CELERY_WORKER_REVOKES_MAX` (50 000) and `CELERY_WORKER_REVOKE_EXPIRES` (10 800 s),
        /// read from the environment as Celery does.
        celeriac revoked_key: Option<String> = None, "unset (memory only)",
            env "CELERIAC_REVOKED_KEY",
            parse |r| r.optional_string();

        /// Larger queue elements are dead-lettered intact by the fetch script itself (reason
        /// `too large: …`), never parsed or downloaded; bodies decompressing past it are
        /// dead-lettered too.
        celeriac max_message_bytes: u64 = DEFAULT_MAX_MESSAGE_BYTES, "`16777216` (16 MiB)",
            env "CELERIAC_MAX_MESSAGE_BYTES",
            parse at_least_one;

        /// Most bytes (as on the wire) of ETA/countdown messages held without a reservation;
        /// past it new ETA messages keep their reservation, so the worker fetches less.
        celeriac eta_held_bytes: u64 = DEFAULT_ETA_HELD_BYTES, "`268435456` (256 MiB)",
            env "CELERIAC_ETA_HELD_BYTES",
            parse |r| r.integer();

        /// Most bytes (as on the wire) of reserved messages — fetched and not yet done, ETA
        /// messages waiting without a reservation apart; at it the worker fetches nothing, and a
        /// fetch takes at most the room left (the first element always), so the total passes it
        /// by less than one message.
        celeriac reserved_bytes: u64 = DEFAULT_RESERVED_BYTES, "`268435456` (256 MiB)",
            env "CELERIAC_RESERVED_BYTES",
            parse |r| r.integer();

        /// Serve `/metrics`, `/healthz`, `/readyz`, `/keda` on this port (`0`: any free port);
        /// see the top-level README, *Metrics and autoscaling*.
        celeriac metrics_port: Option<u16> = None, "none",
            env "CELERIAC_METRICS_PORT",
            flag metrics_port: Option<String> = long "metrics-port", value_name "PORT";
                "Serve Prometheus metrics on this port.",
            parse |r| match r {
                Raw::Text(t) if t.trim().is_empty() => Ok(None),
                _ => r.integer().map(Some),
            };

        /// `auto` (JSON lines when stdout is not a terminal), `json`, `human`.
        celeriac log_format: LogFormat = LogFormat::Auto, "`auto`",
            env "CELERIAC_LOG_FORMAT",
            parse |r| r.parsed();

        /// Whom rate limits bind: `worker` (each worker on its own, as Celery) or `fleet` (one
        /// limit shared by all workers through Redis).
        celeriac rate_limit_scope: RateLimitScope = RateLimitScope::Worker,
            "`worker`",
            env "CELERIAC_RATE_LIMIT_SCOPE",
            parse |r| r.parsed();

        /// With task events on, send them batched in Celery's `task.multi` messages (a JSON
        /// list, as a Python prefork worker sends them) of up to this many events: each batch
        /// takes what was queued by the time the sender runs again, so no event waits for a
        /// timer. `0`/`1`: one message per event.
        celeriac events_batch: usize = 0, "`0`",
            env "CELERIAC_EVENTS_BATCH",
            parse |r| r.integer();
    }

    /// Flags of `celeriac worker`. They override the environment, which overrides the config file.
    pub struct WorkerArgs {
        /// TOML configuration file (else env CELERIAC_CONFIG).
        #[arg(long, value_name = "FILE")]
        pub config: Option<PathBuf>,
        flags {
            /// Queues not to consume, comma-separated or repeated: removed from -Q (or the
            /// default queue).
            #[arg(short = 'X', long, value_name = "QUEUES", value_delimiter = ',')]
            pub exclude_queues: Vec<String>,
            /// Accepted for Celery command lines: celeriac does not gossip with other workers.
            #[arg(long)]
            pub without_gossip: bool,
            /// Accepted for Celery command lines (`fair` or `default`): celeriac only starts a
            /// task when a slot is free, which is what `-O fair` asks of prefork.
            #[arg(short = 'O', value_name = "PROFILE", value_parser = ["fair", "default"])]
            pub optimization: Option<String>,
            /// Write the worker's process id to this file; refuse to start if it names a running
            /// process.
            #[arg(long, value_name = "FILE")]
            pub pidfile: Option<PathBuf>,
            /// Append log lines to this file instead of stdout.
            #[arg(short = 'f', long, value_name = "FILE")]
            pub logfile: Option<PathBuf>,
            /// Ignored, with a warning: celeriac's tasks are compiled in, there is no app to
            /// import.
            #[arg(short = 'A', long, value_name = "APP")]
            pub app: Option<String>,
            /// Ignored, with a warning: each task runs as it was registered (async, thread or
            /// process).
            #[arg(short = 'P', long, value_name = "POOL")]
            pub pool: Option<String>,
            /// Ignored, with a warning: scale replicas instead (KEDA, see deploy/).
            #[arg(long, value_name = "MAX,MIN")]
            pub autoscale: Option<String>,
        }
    }
}

/// `result_backend`: a Redis URL, or `None` for an empty value or `disabled`.
fn result_backend(r: Raw) -> Result<Option<SecretUrl>, String> {
    match r.optional_string()? {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("disabled") => Ok(None),
        Some(v) => SecretUrl::parse(&v).map(Some),
    }
}

/// A count that must be at least 1.
fn at_least_one<T>(r: Raw) -> Result<T, String>
where
    T: TryFrom<i128> + std::str::FromStr + Default + PartialEq,
{
    let n: T = r.integer()?;
    if n == T::default() {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// A count or size where empty and `0` mean "no limit", as Celery reads these settings.
fn optional_positive(r: Raw) -> Result<Option<u64>, String> {
    if let Raw::Text(t) = r {
        if t.trim().is_empty() {
            return Ok(None);
        }
    }
    let n: u64 = r.integer()?;
    Ok((n > 0).then_some(n))
}

/// A list of content types that names at least one.
fn non_empty_list(r: Raw) -> Result<Vec<String>, String> {
    let list = r.list()?;
    if list.is_empty() {
        return Err("must name at least one content type".into());
    }
    Ok(list)
}

/// Celeriac's default `reserved_bytes`: 256 MiB.
pub(crate) const DEFAULT_RESERVED_BYTES: u64 = 256 * 1024 * 1024;

/// Celeriac's default `eta_held_bytes`: 256 MiB.
pub(crate) const DEFAULT_ETA_HELD_BYTES: u64 = 256 * 1024 * 1024;

/// Celeriac's default `max_message_bytes`: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;

/// The default node name template: `%h` is the host name.
pub(crate) const DEFAULT_HOSTNAME: &str = "celeriac@%h";

/// Async tasks run at once when neither `async_concurrency` nor `worker_concurrency` is given.
pub const DEFAULT_ASYNC_CONCURRENCY: usize = 512;

/// Execution slots: how many tasks run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    /// Async tasks (`.task`, query tasks).
    pub async_tasks: usize,
    /// Tasks on threads (`.blocking_task`) or in task processes (`.process_task`).
    pub thread_tasks: usize,
    /// One pool of `thread_tasks` slots for every task (`-c` given without `async_concurrency`).
    pub shared: bool,
}

impl Settings {
    /// The execution slots: with `async_concurrency` set, that many async tasks plus
    /// `worker_concurrency` tasks on threads or processes; with only `worker_concurrency` given,
    /// one pool of that size for all tasks (as before `async_concurrency` existed); with neither,
    /// [`DEFAULT_ASYNC_CONCURRENCY`] async slots plus one thread/process slot per CPU.
    pub fn slots(&self) -> Slots {
        let thread_tasks = self.worker_concurrency.max(1);
        match self.async_concurrency {
            Some(n) => Slots {
                async_tasks: n.max(1),
                thread_tasks,
                shared: false,
            },
            None if self.worker_concurrency_given => Slots {
                async_tasks: thread_tasks,
                thread_tasks,
                shared: true,
            },
            None => Slots {
                async_tasks: DEFAULT_ASYNC_CONCURRENCY,
                thread_tasks,
                shared: false,
            },
        }
    }

    /// The warm-shutdown grace period: `None` means wait for running tasks without limit.
    pub fn shutdown_grace(&self) -> Option<Duration> {
        (!self.worker_soft_shutdown_timeout.is_zero()).then_some(self.worker_soft_shutdown_timeout)
    }

    /// Serializers accepted in results (`result_accept_content`, else `accept_content`).
    pub fn effective_result_accept_content(&self) -> &[String] {
        self.result_accept_content
            .as_deref()
            .unwrap_or(&self.accept_content)
    }
}

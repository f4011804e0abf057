//! The resolved worker configuration and the small value types it is made of.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use celeriac_broker_bridge::signing::Digest;

use super::redact::redacted_json;
use celeriac_secrets::redact as redacted;

/// URL schemes celeriac can talk to (kombu's and Celery's Redis transports).
pub const REDIS_SCHEMES: &[&str] = &["redis", "rediss", "redis+socket", "sentinel"];

/// A broker or backend URL that may carry a password: `Debug` and `Display` show it redacted,
/// [`SecretUrl::expose`] gives the real one to the code that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String, Option<PathBuf>);

impl SecretUrl {
    /// A broker URL: one `sqs://` URL (Amazon SQS, see [`crate::sqs`]), or Redis URLs as
    /// [`SecretUrl::parse`] takes them.
    pub fn parse_broker(url: &str) -> Result<Self, String> {
        let trimmed = url.trim();
        if celeriac_broker_bridge::sqs::is_sqs_url(trimmed) {
            if trimmed.contains(';') {
                return Err("an sqs:// broker URL names one endpoint (no `;` failover)".into());
            }
            celeriac_broker_bridge::sqs::SqsUrl::parse(trimmed).map_err(|e| e.to_string())?;
            return Ok(SecretUrl(trimmed.to_string(), None));
        }
        Self::parse(url)
    }

    /// Checks that every `;`-separated URL uses a Redis scheme (see [`REDIS_SCHEMES`]).
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        // A space or a quote ends a URL for the redaction of logs and errors, so a password
        // after one would show: no URL has one.
        if url.contains(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '`')
        }) {
            return Err("a URL cannot contain spaces, quotes or control characters".into());
        }
        for part in url.split(';') {
            let scheme = part.split_once("://").map(|(s, _)| s).unwrap_or("");
            if scheme.is_empty() {
                return Err("expected a URL such as redis://host:6379/0".into());
            }
            if !REDIS_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                if !scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                {
                    return Err(format!(
                        "expected a URL such as redis://host:6379/0 (schemes: {})",
                        REDIS_SCHEMES.join(", ")
                    ));
                }
                return Err(format!(
                    "unsupported scheme `{scheme}`: celeriac speaks Redis only ({})",
                    REDIS_SCHEMES.join(", ")
                ));
            }
        }
        Ok(Self(url.to_owned(), None))
    }

    /// The real URL, password included. Only hand this to a connection, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The file the URL was read from (`<NAME>_FILE`), whose credentials are re-read while the
    /// worker runs; `None` when it came from elsewhere.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.1.as_deref()
    }

    /// Records the file the URL was read from.
    pub(crate) fn set_file(&mut self, path: PathBuf) {
        self.1 = Some(path);
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redacted(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redacted(&self.0))
    }
}

/// Celery's log level names (`WARN` and `FATAL` are accepted as aliases, any case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARNING`.
    Warning,
    /// `ERROR`.
    Error,
    /// `CRITICAL`: logged at tracing's `ERROR` level, the highest it has.
    Critical,
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "DEBUG" => Ok(Self::Debug),
            "INFO" => Ok(Self::Info),
            "WARNING" | "WARN" => Ok(Self::Warning),
            "ERROR" => Ok(Self::Error),
            "CRITICAL" | "FATAL" => Ok(Self::Critical),
            _ => Err("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL".into()),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON lines when stdout is not a terminal, human-readable when it is.
    Auto,
    /// Always JSON lines.
    Json,
    /// Always human-readable.
    Human,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "json" => Ok(Self::Json),
            "human" => Ok(Self::Human),
            _ => Err("expected auto, json or human".into()),
        }
    }
}

/// What happens to a message celeriac cannot run (unknown task, undecodable body, too big).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadLetterPolicy {
    /// Store it under the dead-letter key (`dead_letter_key`) and ack it.
    DeadLetter,
    /// Push it to the back of this queue (e.g. one that Python workers consume) and ack it.
    Requeue(String),
}

impl std::str::FromStr for DeadLetterPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "dead-letter" {
            return Ok(Self::DeadLetter);
        }
        match s.strip_prefix("requeue:") {
            Some(queue) if !queue.is_empty() => Ok(Self::Requeue(queue.to_owned())),
            _ => Err("expected `dead-letter` or `requeue:<queue>`".into()),
        }
    }
}

/// A Celery rate limit such as `"100/m"`, `"2/h"`, `"0.5/s"` or `"10"` (per second).
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    /// The setting as written.
    pub text: String,
    /// Tasks allowed per second.
    pub per_second: f64,
}

impl std::str::FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let (count, unit) = text.split_once('/').unwrap_or((text, "s"));
        let count: f64 = count
            .trim()
            .parse()
            .ok()
            .filter(|c: &f64| c.is_finite() && *c >= 0.0)
            .ok_or("expected a rate such as 100/m, 2/h, 0.5/s or 10")?;
        let per_second = match unit.trim() {
            "s" => count,
            "m" => count / 60.0,
            "h" => count / 3600.0,
            _ => return Err("the unit after `/` must be s, m or h".into()),
        };
        Ok(Self {
            text: text.to_owned(),
            per_second,
        })
    }
}

/// Everything `celeriac worker` is configured with. Field names are Celery's setting names;
/// defaults are Celery 5's unless marked celeriac-only.
#[derive(Clone)]
pub struct Settings {
    /// `broker_url`: the Redis broker (default `redis://localhost:6379/0`; `;` separates failover URLs).
    pub broker_url: SecretUrl,
    /// `result_backend`: where results go; `None` (the default, or `disabled`) stores no results.
    pub result_backend: Option<SecretUrl>,
    /// `broker_transport_options`: kombu's Redis options (`visibility_timeout`, `priority_steps`,
    /// `sep`, `global_keyprefix`, …), as given.
    pub broker_transport_options: serde_json::Map<String, serde_json::Value>,
    /// `result_backend_transport_options`: options of the Redis result backend, as given.
    pub result_backend_transport_options: serde_json::Map<String, serde_json::Value>,
    /// `result_expires`: time to live of stored results (default 1 day); 0 means `None`: never expire.
    pub result_expires: Option<Duration>,
    /// `result_extended`: store name, args, kwargs, worker, retries and queue with each result.
    pub result_extended: bool,
    /// `task_acks_late`: ack after the task ran instead of before (at-least-once).
    pub task_acks_late: bool,
    /// `task_reject_on_worker_lost`: with acks_late, requeue a task whose worker died mid-run.
    pub task_reject_on_worker_lost: bool,
    /// `task_acks_on_failure_or_timeout`: with acks_late, still ack tasks that failed or timed out.
    pub task_acks_on_failure_or_timeout: bool,
    /// `task_track_started`: store a STARTED state when a task begins.
    pub task_track_started: bool,
    /// `task_ignore_result`: store no results unless a task asks for them.
    pub task_ignore_result: bool,
    /// `task_store_errors_even_if_ignored`: store failures of tasks that ignore results.
    pub task_store_errors_even_if_ignored: bool,
    /// `task_default_queue`: the queue of messages sent without one (default `celery`).
    pub task_default_queue: String,
    /// `task_default_retry_delay`: delay before a retry when a task names none (default 180 s).
    pub task_default_retry_delay: Duration,
    /// `task_time_limit`: hard time limit of a task run (default none).
    pub task_time_limit: Option<Duration>,
    /// `task_soft_time_limit`: soft time limit of a task run (default none).
    pub task_soft_time_limit: Option<Duration>,
    /// `task_default_rate_limit`: rate limit of tasks that set none (default none).
    pub task_default_rate_limit: Option<RateLimit>,
    /// `accept_content`: serializers accepted in task messages (default `["json"]`).
    pub accept_content: Vec<String>,
    /// `result_accept_content`: serializers accepted in results; `None` means `accept_content`.
    pub result_accept_content: Option<Vec<String>>,
    /// `task_serializer`: how retries and canvas messages celeriac publishes are written, and
    /// remote-control requests and replies (`json` or `auth`).
    pub task_serializer: SerializerName,
    /// `result_serializer`: how results, chord parts and saved groups are written.
    pub result_serializer: SerializerName,
    /// `event_serializer`: how events are written.
    pub event_serializer: SerializerName,
    /// `security_key`: PEM file of the RSA key that signs (`auth`).
    pub security_key: Option<PathBuf>,
    /// `security_key_password`: the key's password, when it is encrypted. Secret.
    pub security_key_password: Option<Password>,
    /// `security_certificate`: PEM file of the certificate of `security_key`.
    pub security_certificate: Option<PathBuf>,
    /// `security_cert_store`: certificates of trusted signers (a directory, file or glob).
    pub security_cert_store: Option<String>,
    /// `security_digest`: the signature's hash (default `sha256`).
    pub security_digest: Digest,
    /// `timezone`: the app's time zone name (default `UTC`).
    pub timezone: String,
    /// `worker_concurrency` (`-c`): tasks run at once on threads or in task processes — the size
    /// of Celery's pool (default: the number of CPUs). Alone, without `async_concurrency`, it
    /// bounds async tasks too (see [`Settings::slots`]).
    pub worker_concurrency: usize,
    /// Whether `worker_concurrency` was given (flag, environment or TOML) rather than defaulted.
    pub worker_concurrency_given: bool,
    /// celeriac's `async_concurrency`: async tasks run at once (see [`Settings::slots`]).
    pub async_concurrency: Option<usize>,
    /// `worker_prefetch_multiplier`: unacked messages held per concurrency slot (default 4; 0 = no limit).
    pub worker_prefetch_multiplier: u32,
    /// `worker_send_task_events`: publish task events (`-E`).
    pub worker_send_task_events: bool,
    /// `worker_soft_shutdown_timeout`: on a warm shutdown, how long running tasks may still
    /// finish before the rest are handed back to the broker. Celery's default 0 means: wait
    /// for running tasks without limit, as Celery's warm shutdown does.
    pub worker_soft_shutdown_timeout: Duration,
    /// `worker_max_tasks_per_child` (`--max-tasks-per-child`): a task process is replaced after
    /// running this many tasks (default: never). Applies to process tasks only.
    pub worker_max_tasks_per_child: Option<u64>,
    /// `worker_max_memory_per_child` (`--max-memory-per-child`), KiB: a task process whose resident
    /// memory exceeds it after a task is replaced (default: never). Applies to process tasks only.
    pub worker_max_memory_per_child: Option<u64>,
    /// Celeriac-only `without_mingle` (`--without-mingle`): skip the start-up exchange with other
    /// workers (revoked ids).
    pub without_mingle: bool,
    /// Celeriac-only `without_heartbeat` (`--without-heartbeat`): send no `worker-online`,
    /// `worker-heartbeat` or `worker-offline` events.
    pub without_heartbeat: bool,
    /// `worker_hostname` (`-n`): the node name, `%h`/`%n`/`%d` expanded (default `celeriac@<hostname>`).
    pub worker_hostname: String,
    /// `queues` (`-Q`): queues consumed (default: `[task_default_queue]`).
    pub queues: Vec<String>,
    /// `loglevel` (`-l`): the log level (default `INFO`).
    pub loglevel: LogLevel,
    /// Celeriac-only `dead_letter_policy`: what to do with messages celeriac cannot run.
    pub dead_letter_policy: DeadLetterPolicy,
    /// Celeriac-only `dead_letter_key`: the Redis list dead letters go to (default `celeriac.dead_letter`).
    pub dead_letter_key: String,
    /// celeriac only (`revoked_key`): a sorted set in the broker's Redis where revoked task ids
    /// are kept, so restarts and every replica see them (Celery's `--statedb`). Off when unset.
    pub revoked_key: Option<String>,
    /// Celeriac-only `max_message_bytes`: bigger messages are dead-lettered undecoded (default 16 MiB).
    pub max_message_bytes: u64,
    /// Celeriac-only `eta_held_bytes`: the most bytes (as on the wire) of ETA messages held
    /// without a reservation; past it, new ETA messages keep theirs, so the worker fetches less
    /// (default 256 MiB).
    pub eta_held_bytes: u64,
    /// Celeriac-only `reserved_bytes`: the most bytes (as on the wire) of reserved messages —
    /// fetched and not yet done, ETA messages waiting without a reservation apart; at it the
    /// worker fetches nothing, and a fetch takes at most the room left (default 256 MiB).
    pub reserved_bytes: u64,
    /// Celeriac-only `metrics_port`: serve Prometheus metrics on this port (default: no metrics server).
    pub metrics_port: Option<u16>,
    /// Celeriac-only `log_format`: `auto` (default), `json` or `human`.
    pub log_format: LogFormat,
    /// Celeriac-only `rate_limit_scope`: `worker` (default, as Celery) or `fleet` (one limit shared
    /// by all workers through Redis).
    pub rate_limit_scope: crate::rate_limit::Scope,
    /// Celeriac-only `events_batch`: with task events on, send them as Celery's batched
    /// `task.multi` messages of up to this many events (`0`, the default: one message each).
    pub events_batch: usize,
    /// Other tables of the TOML file (`[sources]`, `[tasks]`, …), kept raw for the modules that own them.
    pub extra: BTreeMap<String, toml::Value>,
}

/// How celeriac writes what it sends or stores (`task_serializer`, `result_serializer`,
/// `event_serializer`): JSON, or JSON signed with Celery's `auth` serializer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerializerName {
    /// `json` (Celery's default).
    #[default]
    Json,
    /// `auth`: signed with `security_key` (see [`crate::signing`]).
    Auth,
}

impl std::str::FromStr for SerializerName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" | "application/json" => Ok(Self::Json),
            "auth" | "application/data" => Ok(Self::Auth),
            _ => Err("celeriac writes `json` or `auth` (signed)".into()),
        }
    }
}

/// A password: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wrap a password.
    pub fn new(p: String) -> Self {
        Self(p)
    }

    /// The real password. Only hand this to what needs it, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(celeriac_secrets::MASK)
    }
}

/// Celeriac's default `reserved_bytes`: 256 MiB.
pub const DEFAULT_RESERVED_BYTES: u64 = 256 * 1024 * 1024;

/// Celeriac's default `eta_held_bytes`: 256 MiB.
pub const DEFAULT_ETA_HELD_BYTES: u64 = 256 * 1024 * 1024;

/// Celeriac's default `max_message_bytes`: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;

/// The default node name template: `%h` is the host name.
pub const DEFAULT_HOSTNAME: &str = "celeriac@%h";

impl Default for Settings {
    /// Celery's defaults. `worker_hostname` holds the unexpanded template here;
    /// [`Settings::load`](crate::config::Settings::load) expands it.
    fn default() -> Self {
        Self {
            broker_url: SecretUrl("redis://localhost:6379/0".into(), None),
            result_backend: None,
            broker_transport_options: serde_json::Map::new(),
            result_backend_transport_options: serde_json::Map::new(),
            result_expires: Some(Duration::from_secs(86_400)),
            result_extended: false,
            task_acks_late: false,
            task_reject_on_worker_lost: false,
            task_acks_on_failure_or_timeout: true,
            task_track_started: false,
            task_ignore_result: false,
            task_store_errors_even_if_ignored: false,
            task_default_queue: "celery".into(),
            task_default_retry_delay: Duration::from_secs(180),
            task_time_limit: None,
            task_soft_time_limit: None,
            task_default_rate_limit: None,
            accept_content: vec!["json".into()],
            result_accept_content: None,
            task_serializer: SerializerName::Json,
            result_serializer: SerializerName::Json,
            event_serializer: SerializerName::Json,
            security_key: None,
            security_key_password: None,
            security_certificate: None,
            security_cert_store: None,
            security_digest: Digest::Sha256,
            timezone: "UTC".into(),
            worker_concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            worker_concurrency_given: false,
            async_concurrency: None,
            worker_prefetch_multiplier: 4,
            worker_send_task_events: false,
            worker_soft_shutdown_timeout: Duration::ZERO,
            worker_max_tasks_per_child: None,
            worker_max_memory_per_child: None,
            without_mingle: false,
            without_heartbeat: false,
            worker_hostname: DEFAULT_HOSTNAME.into(),
            queues: Vec::new(),
            loglevel: LogLevel::Info,
            dead_letter_policy: DeadLetterPolicy::DeadLetter,
            dead_letter_key: "celeriac.dead_letter".into(),
            revoked_key: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            eta_held_bytes: DEFAULT_ETA_HELD_BYTES,
            reserved_bytes: DEFAULT_RESERVED_BYTES,
            metrics_port: None,
            log_format: LogFormat::Auto,
            rate_limit_scope: crate::rate_limit::Scope::Worker,
            events_batch: 0,
            extra: BTreeMap::new(),
        }
    }
}

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

/// A plain setting's value for `Debug`: a password pasted into it by mistake (a URL, or
/// `user:password@host` without a scheme) is masked as in config errors; anything else shows as
/// it is (a node name keeps its `@`).
fn shown(value: &str) -> String {
    let credential_like = value.rfind('@').is_some_and(|at| value[..at].contains(':'));
    if credential_like {
        celeriac_secrets::hide_userinfo(value)
    } else {
        redacted(value)
    }
}

fn shown_all(values: &[String]) -> Vec<String> {
    values.iter().map(|v| shown(v)).collect()
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opts = |m: &serde_json::Map<String, serde_json::Value>| {
            redacted_json(&serde_json::Value::Object(m.clone())).to_string()
        };
        f.debug_struct("Settings")
            .field("broker_url", &self.broker_url)
            .field("result_backend", &self.result_backend)
            .field(
                "broker_transport_options",
                &opts(&self.broker_transport_options),
            )
            .field(
                "result_backend_transport_options",
                &opts(&self.result_backend_transport_options),
            )
            .field("result_expires", &self.result_expires)
            .field("result_extended", &self.result_extended)
            .field("task_acks_late", &self.task_acks_late)
            .field(
                "task_reject_on_worker_lost",
                &self.task_reject_on_worker_lost,
            )
            .field(
                "task_acks_on_failure_or_timeout",
                &self.task_acks_on_failure_or_timeout,
            )
            .field("task_track_started", &self.task_track_started)
            .field("task_ignore_result", &self.task_ignore_result)
            .field(
                "task_store_errors_even_if_ignored",
                &self.task_store_errors_even_if_ignored,
            )
            .field("task_default_queue", &shown(&self.task_default_queue))
            .field("task_default_retry_delay", &self.task_default_retry_delay)
            .field("task_time_limit", &self.task_time_limit)
            .field("task_soft_time_limit", &self.task_soft_time_limit)
            .field("task_default_rate_limit", &self.task_default_rate_limit)
            .field("accept_content", &shown_all(&self.accept_content))
            .field(
                "result_accept_content",
                &self.result_accept_content.as_deref().map(shown_all),
            )
            .field("task_serializer", &self.task_serializer)
            .field("result_serializer", &self.result_serializer)
            .field("event_serializer", &self.event_serializer)
            .field(
                "security_key",
                &self
                    .security_key
                    .as_ref()
                    .map(|p| shown(&p.to_string_lossy())),
            )
            .field("security_key_password", &self.security_key_password)
            .field(
                "security_certificate",
                &self
                    .security_certificate
                    .as_ref()
                    .map(|p| shown(&p.to_string_lossy())),
            )
            .field(
                "security_cert_store",
                &self.security_cert_store.as_deref().map(shown),
            )
            .field("security_digest", &self.security_digest)
            .field("timezone", &shown(&self.timezone))
            .field("worker_concurrency", &self.worker_concurrency)
            .field("async_concurrency", &self.async_concurrency)
            .field(
                "worker_prefetch_multiplier",
                &self.worker_prefetch_multiplier,
            )
            .field("worker_send_task_events", &self.worker_send_task_events)
            .field(
                "worker_soft_shutdown_timeout",
                &self.worker_soft_shutdown_timeout,
            )
            .field(
                "worker_max_tasks_per_child",
                &self.worker_max_tasks_per_child,
            )
            .field(
                "worker_max_memory_per_child",
                &self.worker_max_memory_per_child,
            )
            .field("without_mingle", &self.without_mingle)
            .field("without_heartbeat", &self.without_heartbeat)
            .field("worker_hostname", &shown(&self.worker_hostname))
            .field("queues", &shown_all(&self.queues))
            .field("loglevel", &self.loglevel)
            .field("dead_letter_policy", &self.dead_letter_policy)
            .field("dead_letter_key", &shown(&self.dead_letter_key))
            .field("revoked_key", &self.revoked_key.as_deref().map(shown))
            .field("max_message_bytes", &self.max_message_bytes)
            .field("eta_held_bytes", &self.eta_held_bytes)
            .field("reserved_bytes", &self.reserved_bytes)
            .field("metrics_port", &self.metrics_port)
            .field("log_format", &self.log_format)
            .field("rate_limit_scope", &self.rate_limit_scope)
            .field("events_batch", &self.events_batch)
            .field(
                "extra",
                &self.extra.keys().map(|k| shown(k)).collect::<Vec<_>>(),
            )
            .finish()
    }
}

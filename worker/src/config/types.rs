//! The small value types settings are made of: URLs and passwords that hide themselves, and
//! Celery's names for log levels, serializers, rate limits.

use std::fmt;
use std::path::PathBuf;

use celeriac_secrets::redact as redacted;

/// URL schemes celeriac can talk to (kombu's and Celery's Redis transports).
pub const REDIS_SCHEMES: &[&str] = &["redis", "rediss", "redis+socket", "sentinel"];

/// A broker or backend URL that may carry a password: `Debug` and `Display` show it redacted,
/// [`SecretUrl::expose`] gives the real one to the code that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String, Option<PathBuf>);

impl SecretUrl {
    /// A broker URL: one `sqs://` URL (Amazon SQS), or Redis URLs as
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

    /// Celery's default broker, `redis://localhost:6379/0`.
    pub(crate) fn default_broker() -> Self {
        Self("redis://localhost:6379/0".into(), None)
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

/// How celeriac writes what it sends or stores (`task_serializer`, `result_serializer`,
/// `event_serializer`): JSON, or JSON signed with Celery's `auth` serializer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerializerName {
    /// `json` (Celery's default).
    #[default]
    Json,
    /// `auth`: signed with `security_key` (Celery's `auth` serializer).
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

/// Whom a rate limit binds (`rate_limit_scope`; see the worker's rate limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimitScope {
    /// Each worker process on its own (Celery's behaviour).
    #[default]
    Worker,
    /// All workers sharing the broker together (celeriac only).
    Fleet,
}

impl std::str::FromStr for RateLimitScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "worker" => Ok(RateLimitScope::Worker),
            "fleet" => Ok(RateLimitScope::Fleet),
            _ => Err("expected `worker` or `fleet`".into()),
        }
    }
}

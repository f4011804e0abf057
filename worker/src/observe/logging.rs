//! Logging setup: JSON lines for machines, human-readable lines for people.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogLevel};

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoggingError {
    /// `RUST_LOG` is set but is not a valid filter.
    #[error("invalid RUST_LOG filter: {0}")]
    Filter(String),
    /// A global subscriber was already installed.
    #[error("logging is already initialised: {0}")]
    AlreadySet(String),
    /// The log file (`--logfile`) cannot be opened for appending.
    #[error("cannot open log file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Installs the global subscriber writing to stdout. The level comes from `level` unless
/// `RUST_LOG` is set (then it wins, with its full directive syntax). `format` `Auto` means JSON
/// lines when stdout is not a terminal, human-readable when it is.
pub(crate) fn init(level: LogLevel, format: LogFormat) -> Result<(), LoggingError> {
    init_to(level, format, None)
}

/// [`init`], appending to `logfile` instead of stdout when one is given (Celery's `--logfile`;
/// `Auto` then means JSON lines, a file not being a terminal).
pub(crate) fn init_to(
    level: LogLevel,
    format: LogFormat,
    logfile: Option<&Path>,
) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| LoggingError::Filter(e.to_string()))?
        }
        _ => EnvFilter::new(level_directive(level)),
    };
    let (writer, terminal) = match logfile {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| LoggingError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            (BoxMakeWriter::new(Mutex::new(file)), false)
        }
        None => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
    };
    let json = use_json(format, terminal);
    let result = if json {
        tracing::subscriber::set_global_default(
            json_subscriber(filter, writer).with(crate::observe::telemetry::layer()),
        )
    } else {
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(writer)
                .finish()
                .with(crate::observe::telemetry::layer()),
        )
    };
    result.map_err(|e| LoggingError::AlreadySet(e.to_string()))
}

/// Whether `format` means JSON lines, given whether stdout is a terminal.
pub(crate) fn use_json(format: LogFormat, stdout_is_terminal: bool) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !stdout_is_terminal,
    }
}

/// The tracing filter directive for a Celery log level (`CRITICAL` maps to `error`).
pub(crate) fn level_directive(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warning => "warn",
        LogLevel::Error | LogLevel::Critical => "error",
    }
}

/// A subscriber writing one JSON object per event to `writer`; see [`JsonLines`].
pub(crate) fn json_subscriber<W>(
    filter: EnvFilter,
    writer: W,
) -> impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .fmt_fields(JsonFields::new())
        .event_format(JsonLines)
        .finish()
}

/// Formats an event as one flat JSON object: `timestamp` (RFC 3339 UTC), `level`, `target`,
/// `message`, then the fields of the enclosing spans (outermost first, e.g. `task_id`,
/// `task_name`, `root_id`), with OpenTelemetry on the `trace_id` and `span_id` of the innermost
/// span, and the event's own fields, inner values winning.
pub(crate) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("message".into(), serde_json::Value::Null);
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_str::<serde_json::Value>(fields.as_str())
                {
                    // `otel.*` fields are directives to the OpenTelemetry layer, not log data.
                    line.extend(map.into_iter().filter(|(k, _)| !k.starts_with("otel.")));
                }
            }
        }
        let leaf = ctx.event_scope().and_then(|mut s| s.next()).map(|s| s.id());
        if let Some((trace_id, span_id)) =
            leaf.and_then(|id| crate::observe::telemetry::ids_of(&id))
        {
            line.insert("trace_id".into(), trace_id.into());
            line.insert("span_id".into(), span_id.into());
        }
        let mut visitor = JsonVisitor(&mut line);
        event.record(&mut visitor);
        if line.get("message").is_some_and(serde_json::Value::is_null) {
            line.shift_remove("message");
        }
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_span_fields() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = json_subscriber(EnvFilter::new("info"), move || sink.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "task",
                task_id = "abc-123",
                task_name = "app.add",
                root_id = "r-1"
            );
            let _entered = span.enter();
            tracing::info!(retries = 2, "task \"received\"");
            tracing::debug!("filtered out");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], module_path!());
        assert_eq!(v["message"], "task \"received\"");
        assert_eq!(v["task_id"], "abc-123");
        assert_eq!(v["task_name"], "app.add");
        assert_eq!(v["root_id"], "r-1");
        assert_eq!(v["retries"], 2);
        let ts = v["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }

    #[test]
    fn format_choice() {
        assert!(use_json(LogFormat::Auto, false));
        assert!(!use_json(LogFormat::Auto, true));
        assert!(use_json(LogFormat::Json, true));
        assert!(!use_json(LogFormat::Human, false));
        assert_eq!(level_directive(LogLevel::Critical), "error");
        assert_eq!(level_directive(LogLevel::Warning), "warn");
    }
}

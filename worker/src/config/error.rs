//! The error every configuration source reports.

use std::path::PathBuf;

/// A configuration problem. Messages name the variable, key or flag at fault and never contain
/// secrets: URLs are shown with their password replaced by `***`, and the values of
/// secret-bearing settings (URLs, transport options) are described rather than echoed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value could not be understood.
    #[error("invalid value {value} for {origin}: {reason}")]
    InvalidValue {
        /// Where the value came from, e.g. `environment variable CELERY_TASK_ACKS_LATE`.
        origin: String,
        /// The offending value, quoted and already redacted.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// A key in the TOML file that celeriac does not know (probably a typo).
    #[error("unknown setting `{key}` in {path}: {hint}")]
    UnknownKey {
        /// The dotted key, e.g. `task_acks_lat` or `celeriac.metric_port`.
        key: String,
        /// The configuration file.
        path: PathBuf,
        /// A pointer to the documentation or a near miss.
        hint: String,
    },
    /// Both `NAME` and `NAME_FILE` are set.
    #[error("both {name} and {name}_FILE are set; set only one")]
    BothSet {
        /// The variable name without `_FILE`.
        name: String,
    },
    /// A file named by `--config`, `CELERIAC_CONFIG` or a `*_FILE` variable could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file was for, e.g. `config file` or `CELERY_BROKER_URL_FILE`.
        what: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML file is not valid TOML.
    #[error("invalid TOML in {path} at line {line}, column {column}: {message}")]
    Toml {
        /// The configuration file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// The parser's message (without the source line, which may hold a secret).
        message: String,
    },
}

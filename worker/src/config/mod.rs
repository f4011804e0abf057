//! 12-factor configuration of `celeriac worker`, read like a Celery worker in a Django project.
//!
//! Precedence, lowest first: Celery's defaults, the TOML file (`--config` or `CELERIAC_CONFIG`),
//! the environment (`CELERY_<SETTING>`, `CELERIAC_<SETTING>`, each also as `<NAME>_FILE`), then
//! command-line flags. See the worker README's Configuration table for every setting.
//!
//! Each setting is declared once, in `config/settings.rs`: its field, default, redacted `Debug`,
//! environment variable, TOML key, flag and README row are generated from that one entry by the
//! macro in `config/declare.rs`.

mod cli;
mod declare;
mod env;
mod error;
mod file;
mod hostname;
mod redact;
mod settings;
mod types;
mod value;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The query tasks' tables (`[sources.*]`, `[tasks.*]`) read from the settings' extra keys.
pub use crate::query_tasks::config::{parse as parse_query_tasks, QueryConfig};
pub use celeriac_secrets::redact as redacted;
pub(crate) use env::lookup as lookup_env;
pub use env::process_env;
pub use error::ConfigError;
pub use hostname::{expand_hostname, system_hostname};
pub use redact::redacted_json;
pub use settings::{
    Settings, Slots, WorkerArgs, DEFAULT_ASYNC_CONCURRENCY, DEFAULT_MAX_MESSAGE_BYTES,
};
pub use types::{
    DeadLetterPolicy, LogFormat, LogLevel, Password, RateLimit, RateLimitScope, SecretUrl,
    SerializerName, REDIS_SCHEMES,
};

/// The remote control namespace (Celery's `control_exchange`): where workers listen and
/// `revoke` is broadcast.
pub(crate) const CONTROL_NAMESPACE: &str = "celery";

/// The environment variable naming the TOML configuration file.
pub const CONFIG_ENV: &str = "CELERIAC_CONFIG";

impl Settings {
    /// Resolves the settings from defaults, the config file, `env` and `args`, using this
    /// machine's host name for `%h`. Pass [`process_env()`] for the real environment.
    pub fn load(
        args: &WorkerArgs,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        Self::load_with_host(args, env, &system_hostname())
    }

    /// [`Settings::load`] with an explicit host name for `%h`, `%n` and `%d`.
    pub fn load_with_host(
        args: &WorkerArgs,
        env: impl IntoIterator<Item = (String, String)>,
        host: &str,
    ) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = env.into_iter().collect();
        let config_path = match &args.config {
            Some(path) => Some(path.clone()),
            None => env::lookup(&vars, CONFIG_ENV)?.map(|found| PathBuf::from(found.value)),
        };
        let text = match &config_path {
            Some(path) => Some(file::read_text(path)?),
            None => None,
        };
        let file = text.as_deref().zip(config_path.as_deref());
        Self::from_parts(file, vars, args, host)
    }

    /// [`Settings::load_with_host`] with the config file given as its text and path (the path
    /// only names it in errors) instead of being found and read.
    pub fn from_parts(
        file: Option<(&str, &Path)>,
        env: impl IntoIterator<Item = (String, String)>,
        args: &WorkerArgs,
        host: &str,
    ) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = env.into_iter().collect();
        let mut settings = Settings::default();
        if let Some((text, path)) = file {
            let table = file::parse(text, path)?;
            file::apply_table(&mut settings, table, path)?;
        }
        env::apply_env(&mut settings, &vars)?;
        cli::apply_args(&mut settings, args)?;
        if settings.queues.is_empty() {
            settings.queues = vec![settings.task_default_queue.clone()];
        }
        settings.worker_hostname = expand_hostname(&settings.worker_hostname, host);
        Ok(settings)
    }
}

#[cfg(test)]
mod tests;

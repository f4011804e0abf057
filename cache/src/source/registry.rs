//! Named sources, built from configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::config::SourceConfig;
use super::mssql::{MsSqlOptions, MsSqlSource};
use super::mysql::MySqlSource;
use super::postgres::PostgresSource;
use super::sqlite::SqliteSource;
use super::{Source, SourceError};

/// Source name → source.
#[derive(Clone, Default)]
pub struct Sources {
    by_name: BTreeMap<String, Arc<dyn Source>>,
}

impl Sources {
    /// No sources.
    pub fn new() -> Self {
        Self::default()
    }

    /// Build every configured source (pools connect on first use; call inside a Tokio runtime).
    pub fn from_configs(configs: &[SourceConfig]) -> Result<Self, SourceError> {
        let mut sources = Sources::new();
        for config in configs {
            sources.insert(config.name.clone(), connect_lazy(config)?);
        }
        Ok(sources)
    }

    /// Add (or replace) a source.
    pub fn insert(&mut self, name: impl Into<String>, source: Arc<dyn Source>) {
        self.by_name.insert(name.into(), source);
    }

    /// The source called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Source>> {
        self.by_name.get(name)
    }

    /// Configured names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// The source for `config`, chosen by the URL's scheme.
pub fn connect_lazy(config: &SourceConfig) -> Result<Arc<dyn Source>, SourceError> {
    if is_sql_server(&config.url) {
        return Ok(Arc::new(MsSqlSource::new(
            &config.name,
            &mssql_options(config),
        )?));
    }
    match config.scheme().as_str() {
        "postgres" | "postgresql" => Ok(Arc::new(PostgresSource::connect_lazy(config)?)),
        "mysql" | "mariadb" => Ok(Arc::new(MySqlSource::connect_lazy(config)?)),
        "sqlite" => Ok(Arc::new(SqliteSource::connect_lazy(config)?)),
        "" => Err(config.connect_error(
            "the url has no scheme (expected postgres://, mysql://, mariadb://, sqlite:, sqlserver:// or an ADO.NET string)",
        )),
        other => Err(config.connect_error(format!(
            "unsupported url scheme `{other}` (expected postgres://, mysql://, mariadb://, sqlite:, sqlserver:// or an ADO.NET string)"
        ))),
    }
}

/// A SQL Server connection string: `sqlserver://…`, `jdbc:sqlserver://…`, or ADO.NET
/// (`server=…;…`).
fn is_sql_server(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("sqlserver://")
        || lower.starts_with("jdbc:sqlserver://")
        || lower.starts_with("server=")
        || lower.starts_with("data source=")
}

/// The SQL Server source's options from the common source settings.
fn mssql_options(config: &SourceConfig) -> MsSqlOptions {
    let mut options = MsSqlOptions::new(config.url.clone());
    options.max_connections = config.max_connections as usize;
    options.connect_timeout = config.connect_timeout;
    options.query_timeout = config.query_timeout;
    options.ca_file = config.tls_ca_file.clone();
    options.trust_server_certificate = config.tls == super::config::TlsMode::Require;
    options
}

//! Data sources: the databases a cached query reads from, behind one small trait.
//!
//! Every source turns its column types into JSON the same way (see [`convert`]), takes
//! parameters only (never SQL built from values) and speaks its own placeholder syntax
//! ([`SourceKind`]); [`crate::sql::NamedSql`] translates `:name` parameters into it.

pub mod config;
pub mod convert;
pub mod mssql;
pub mod mysql;
pub mod postgres;
pub mod registry;
pub mod sqlite;

pub use config::{SourceConfig, TlsMode};
pub use registry::Sources;

/// One result row: column name → JSON value.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// Why a source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source cannot be reached or its configuration is unusable.
    #[error("cannot connect to {source_name}: {message}")]
    Connect {
        /// The configured source name.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// The database rejected or failed the query.
    #[error("query failed: {0}")]
    Query(String),
    /// The query did not finish within the source's `query_timeout`.
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A parameter cannot be sent to this database.
    #[error("parameter {index}: {reason}")]
    Param {
        /// Zero-based position of the parameter.
        index: usize,
        /// Why it was refused.
        reason: String,
    },
}

/// Which SQL dialect a source speaks (chooses placeholder syntax: `$1` / `?` / `@P1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// PostgreSQL (and Aurora PostgreSQL): `$1`.
    Postgres,
    /// MySQL / MariaDB (and Aurora MySQL): `?`.
    MySql,
    /// SQLite: `?`.
    Sqlite,
    /// SQL Server: `@P1`.
    MsSql,
}

/// A database that runs parameterized queries and returns rows as JSON objects.
#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
    /// The dialect.
    fn kind(&self) -> SourceKind;
    /// Run `sql` (already in this dialect's placeholder syntax) with positional JSON parameters
    /// (null, bool, integer of any size that fits the column, float, string); rows as JSON objects.
    async fn fetch(&self, sql: &str, params: &[serde_json::Value])
        -> Result<Vec<Row>, SourceError>;
}

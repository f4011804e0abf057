//! Where cached rows come from: SQL databases behind one small trait.

pub mod mssql;

/// One result row: column name → JSON value.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// Why a source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No connection could be made.
    #[error("cannot connect to {source_name}: {message}")]
    Connect {
        /// The source's configured name.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// The database rejected or failed the query.
    #[error("query failed: {0}")]
    Query(String),
    /// The query did not finish in time.
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A parameter could not be sent.
    #[error("parameter {index}: {reason}")]
    Param {
        /// Which parameter.
        index: usize,
        /// Why it could not be sent.
        reason: String,
    },
}

/// Which SQL dialect a source speaks (chooses placeholder syntax: `$1` / `?` / `@P1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// PostgreSQL.
    Postgres,
    /// MySQL / MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
    /// Microsoft SQL Server.
    MsSql,
}

/// A database that runs queries for the cache.
#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
    /// The dialect.
    fn kind(&self) -> SourceKind;
    /// Run `sql` (already in this dialect's placeholder syntax) with positional JSON parameters
    /// (null, bool, integer of any size that fits the column, float, string); rows as JSON objects.
    async fn fetch(&self, sql: &str, params: &[serde_json::Value])
        -> Result<Vec<Row>, SourceError>;
}

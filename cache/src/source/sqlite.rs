//! SQLite (embedded files, e.g. the demo's data) through a sqlx pool.
//!
//! SQLite values carry their own storage class: INTEGER → number, REAL → number, TEXT → string,
//! BLOB → base64; columns declared BOOLEAN/BOOL become true/false.

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::{Column, Row as _, Sqlite, TypeInfo, ValueRef};

use super::config::SourceConfig;
use super::convert::{self, decode_error, unsupported_param};
use super::{Row, Source, SourceError, SourceKind};

/// A SQLite source.
pub struct SqliteSource {
    pool: SqlitePool,
    query_timeout: Duration,
}

impl SqliteSource {
    /// A pool for `config` (`sqlite://path` or `sqlite::memory:`) that opens on first use.
    pub fn connect_lazy(config: &SourceConfig) -> Result<Self, SourceError> {
        let options =
            SqliteConnectOptions::from_str(&config.url).map_err(|e| config.connect_error(e))?;
        Ok(Self::with_options(config, options))
    }

    /// A pool with explicit sqlx options (e.g. `create_if_missing(true)`).
    pub fn with_options(config: &SourceConfig, options: SqliteConnectOptions) -> Self {
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.connect_timeout)
            .connect_lazy_with(options);
        SqliteSource {
            pool,
            query_timeout: config.query_timeout,
        }
    }
}

#[async_trait::async_trait]
impl Source for SqliteSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Sqlite
    }

    #[tracing::instrument(name = "db.query", skip_all, fields(db.system = "sqlite", db.query.text = %sql, otel.kind = "client"))]
    async fn fetch(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SourceError> {
        let mut query = sqlx::query(sql);
        for (index, param) in params.iter().enumerate() {
            query = bind(query, index, param)?;
        }
        let rows = tokio::time::timeout(self.query_timeout, query.fetch_all(&self.pool))
            .await
            .map_err(|_| SourceError::Timeout(self.query_timeout))?
            .map_err(|e| SourceError::Query(e.to_string()))?;
        rows.iter().map(to_json).collect()
    }
}

type LiteQuery<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

fn bind<'q>(
    query: LiteQuery<'q>,
    index: usize,
    param: &Value,
) -> Result<LiteQuery<'q>, SourceError> {
    Ok(match param {
        Value::Null => query.bind(None::<String>),
        Value::Bool(b) => query.bind(*b),
        Value::String(s) => query.bind(s.clone()),
        Value::Number(n) => match convert::param_integer(n) {
            Some(i) => query.bind(i64::try_from(i).map_err(|_| SourceError::Param {
                index,
                reason: format!("{i} does not fit SQLite's 64-bit integers"),
            })?),
            None => query.bind(n.as_f64().ok_or_else(|| SourceError::Param {
                index,
                reason: format!("{n} is not a number SQLite can take"),
            })?),
        },
        other => return Err(unsupported_param(index, other)),
    })
}

fn to_json(row: &SqliteRow) -> Result<Row, SourceError> {
    let mut out = Row::new();
    for (i, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let err = |e| decode_error(name, e);
        let raw = row.try_get_raw(i).map_err(err)?;
        let storage = raw.type_info().name().to_owned();
        let declared = column.type_info().name().to_ascii_uppercase();
        let value = if raw.is_null() {
            Value::Null
        } else {
            match storage.as_str() {
                "INTEGER" if declared == "BOOLEAN" || declared == "BOOL" => {
                    Value::Bool(row.try_get_unchecked::<i64, _>(i).map_err(err)? != 0)
                }
                "INTEGER" => convert::int(row.try_get_unchecked::<i64, _>(i).map_err(err)?),
                "REAL" => convert::float(row.try_get_unchecked::<f64, _>(i).map_err(err)?),
                "BLOB" => convert::bytes(&row.try_get_unchecked::<Vec<u8>, _>(i).map_err(err)?),
                _ => Value::String(row.try_get_unchecked(i).map_err(err)?),
            }
        };
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}

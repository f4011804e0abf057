//! PostgreSQL (and Aurora PostgreSQL) through a sqlx pool.

use std::str::FromStr;
use std::time::Duration;

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::query::Query;
use sqlx::{Postgres, Row as _};

use super::config::{SourceConfig, TlsMode};
use super::convert::{self, decode_error, unsupported_column, unsupported_param};
use super::{Row, Source, SourceError, SourceKind};

/// A PostgreSQL source.
pub struct PostgresSource {
    pool: PgPool,
    query_timeout: Duration,
}

impl PostgresSource {
    /// A pool for `config` that connects on first use (the worker starts while the database is down).
    pub fn connect_lazy(config: &SourceConfig) -> Result<Self, SourceError> {
        crate::tls::install_crypto_provider();
        let mut options =
            PgConnectOptions::from_str(&config.url).map_err(|e| config.connect_error(e))?;
        options = match config.tls {
            TlsMode::FromUrl => options,
            TlsMode::Disable => options.ssl_mode(PgSslMode::Disable),
            TlsMode::Prefer => options.ssl_mode(PgSslMode::Prefer),
            TlsMode::Require => options.ssl_mode(PgSslMode::Require),
            TlsMode::VerifyCa => options.ssl_mode(PgSslMode::VerifyCa),
            TlsMode::VerifyFull => options.ssl_mode(PgSslMode::VerifyFull),
        };
        if let Some(ca) = &config.tls_ca_file {
            options = options.ssl_root_cert(ca);
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.connect_timeout)
            .connect_lazy_with(options);
        Ok(PostgresSource {
            pool,
            query_timeout: config.query_timeout,
        })
    }
}

#[async_trait::async_trait]
impl Source for PostgresSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Postgres
    }

    /// Runs the query; when the connection breaks or the server is restarting (a failover),
    /// tries again on a fresh connection with a growing pause, within `query_timeout`.
    #[tracing::instrument(name = "db.query", skip_all, fields(db.system = "postgresql", db.query.text = %sql, otel.kind = "client"))]
    async fn fetch(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SourceError> {
        let deadline = tokio::time::Instant::now() + self.query_timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let mut query = sqlx::query(sql);
            for (index, param) in params.iter().enumerate() {
                query = bind(query, index, param)?;
            }
            let outcome = tokio::time::timeout_at(deadline, query.fetch_all(&self.pool))
                .await
                .map_err(|_| SourceError::Timeout(self.query_timeout))?;
            match outcome {
                Ok(rows) => return rows.iter().map(to_json).collect(),
                Err(e) if is_transient(&e) && tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!(error = %e, "Postgres connection lost; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(SourceError::Query(e.to_string())),
            }
        }
    }
}

/// Errors a retry on another connection can cure: I/O (connection reset or refused), an
/// exhausted pool, and the server shutting down, starting up or dropping the connection
/// (SQLSTATE classes 57P and 08). A refused TLS handshake (rustls reports it as I/O of kind
/// `InvalidData`, e.g. an untrusted certificate) fails the same way every time: not retried.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(io) => io.kind() != std::io::ErrorKind::InvalidData,
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

fn bind<'q>(query: PgQuery<'q>, index: usize, param: &Value) -> Result<PgQuery<'q>, SourceError> {
    Ok(match param {
        Value::Null => query.bind(None::<String>),
        Value::Bool(b) => query.bind(*b),
        Value::String(s) => query.bind(s.clone()),
        Value::Number(n) => match convert::param_integer(n) {
            Some(i) => match i64::try_from(i) {
                Ok(i) => query.bind(i),
                Err(_) => query.bind(BigDecimal::from_str(&i.to_string()).map_err(|e| {
                    SourceError::Param {
                        index,
                        reason: e.to_string(),
                    }
                })?),
            },
            None => query.bind(n.as_f64().ok_or_else(|| SourceError::Param {
                index,
                reason: format!("{n} is not a number PostgreSQL can take"),
            })?),
        },
        other => return Err(unsupported_param(index, other)),
    })
}

fn to_json(row: &PgRow) -> Result<Row, SourceError> {
    convert::row_object(row, column_value)
}

fn column_value(row: &PgRow, i: usize, name: &str, type_name: &str) -> Result<Value, SourceError> {
    let err = |e| decode_error(name, e);
    Ok(match type_name {
        "BOOL" => Value::Bool(row.try_get(i).map_err(err)?),
        "INT2" => convert::int(row.try_get::<i16, _>(i).map_err(err)?),
        "INT4" => convert::int(row.try_get::<i32, _>(i).map_err(err)?),
        "INT8" => convert::int(row.try_get::<i64, _>(i).map_err(err)?),
        "OID" => convert::int(
            row.try_get::<sqlx::postgres::types::Oid, _>(i)
                .map_err(err)?
                .0,
        ),
        "FLOAT4" => convert::float(row.try_get::<f32, _>(i).map_err(err)?.into()),
        "FLOAT8" => convert::float(row.try_get::<f64, _>(i).map_err(err)?),
        "NUMERIC" => convert::decimal(&numeric(row, i).map_err(err)?),
        "MONEY" => {
            let money: sqlx::postgres::types::PgMoney = row.try_get(i).map_err(err)?;
            convert::decimal(&money.to_bigdecimal(2))
        }
        "TEXT" | "VARCHAR" | "BPCHAR" | "CHAR" | "NAME" | "CITEXT" | "UNKNOWN" => {
            Value::String(row.try_get_unchecked(i).map_err(err)?)
        }
        "TIMESTAMPTZ" => {
            let v: DateTime<Utc> = row.try_get(i).map_err(err)?;
            convert::timestamp_tz(&v.fixed_offset())
        }
        "TIMESTAMP" => convert::timestamp(&row.try_get::<NaiveDateTime, _>(i).map_err(err)?),
        "DATE" => convert::date(&row.try_get::<NaiveDate, _>(i).map_err(err)?),
        "TIME" => convert::time(&row.try_get::<NaiveTime, _>(i).map_err(err)?),
        "UUID" => Value::String(row.try_get::<uuid::Uuid, _>(i).map_err(err)?.to_string()),
        "BYTEA" => convert::bytes(&row.try_get::<Vec<u8>, _>(i).map_err(err)?),
        "JSON" | "JSONB" => row.try_get::<Value, _>(i).map_err(err)?,
        other => return Err(unsupported_column(name, other)),
    })
}

/// NUMERIC with its display scale: sqlx's decode drops `dscale` ("12.50" would become "12.5000"),
/// so it is read from the value's binary header (ndigits, weight, sign, dscale: four i16).
fn numeric(row: &PgRow, i: usize) -> Result<BigDecimal, sqlx::Error> {
    let value: BigDecimal = row.try_get(i)?;
    let raw = row.try_get_raw(i)?;
    let bytes = raw.as_bytes().map_err(sqlx::Error::Decode)?;
    match bytes.get(6..8) {
        Some(&[hi, lo]) => Ok(value.with_scale(i64::from(u16::from_be_bytes([hi, lo])))),
        _ => Ok(value),
    }
}

//! MySQL and MariaDB (and Aurora MySQL) through a sqlx pool.

use std::str::FromStr;
use std::time::Duration;

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::Value;
use sqlx::mysql::{
    MySqlArguments, MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow, MySqlSslMode,
};
use sqlx::query::Query;
use sqlx::{MySql, Row as _};

use super::config::{SourceConfig, TlsMode};
use super::convert::{self, decode_error, unsupported_column, unsupported_param};
use super::{Row, Source, SourceError, SourceKind};

/// A MySQL or MariaDB source.
pub struct MySqlSource {
    pool: MySqlPool,
    query_timeout: Duration,
}

impl MySqlSource {
    /// A pool for `config` (`mysql://` or `mariadb://`) that connects on first use.
    pub fn connect_lazy(config: &SourceConfig) -> Result<Self, SourceError> {
        crate::tls::install_crypto_provider();
        let url = match config.url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => config.url.clone(),
        };
        let mut options =
            MySqlConnectOptions::from_str(&url).map_err(|e| config.connect_error(e))?;
        options = match config.tls {
            TlsMode::FromUrl => options,
            TlsMode::Disable => options.ssl_mode(MySqlSslMode::Disabled),
            TlsMode::Prefer => options.ssl_mode(MySqlSslMode::Preferred),
            TlsMode::Require => options.ssl_mode(MySqlSslMode::Required),
            TlsMode::VerifyCa => options.ssl_mode(MySqlSslMode::VerifyCa),
            TlsMode::VerifyFull => options.ssl_mode(MySqlSslMode::VerifyIdentity),
        };
        if let Some(ca) = &config.tls_ca_file {
            options = options.ssl_ca(ca);
        }
        let pool = MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.connect_timeout)
            .connect_lazy_with(options);
        Ok(MySqlSource {
            pool,
            query_timeout: config.query_timeout,
        })
    }
}

#[async_trait::async_trait]
impl Source for MySqlSource {
    fn kind(&self) -> SourceKind {
        SourceKind::MySql
    }

    #[tracing::instrument(name = "db.query", skip_all, fields(db.system = "mysql", db.query.text = %sql, otel.kind = "client"))]
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

type MyQuery<'q> = Query<'q, MySql, MySqlArguments>;

fn bind<'q>(query: MyQuery<'q>, index: usize, param: &Value) -> Result<MyQuery<'q>, SourceError> {
    Ok(match param {
        Value::Null => query.bind(None::<String>),
        Value::Bool(b) => query.bind(*b),
        Value::String(s) => query.bind(s.clone()),
        Value::Number(n) => match convert::param_integer(n) {
            Some(i) => match (i64::try_from(i), u64::try_from(i)) {
                (Ok(i), _) => query.bind(i),
                (_, Ok(u)) => query.bind(u),
                _ => {
                    return Err(SourceError::Param {
                        index,
                        reason: format!("{i} does not fit a MySQL integer"),
                    })
                }
            },
            None => query.bind(n.as_f64().ok_or_else(|| SourceError::Param {
                index,
                reason: format!("{n} is not a number MySQL can take"),
            })?),
        },
        other => return Err(unsupported_param(index, other)),
    })
}

fn to_json(row: &MySqlRow) -> Result<Row, SourceError> {
    convert::row_object(row, column_value)
}

fn column_value(
    row: &MySqlRow,
    i: usize,
    name: &str,
    type_name: &str,
) -> Result<Value, SourceError> {
    let err = |e| decode_error(name, e);
    Ok(match type_name {
        "BOOLEAN" => Value::Bool(row.try_get_unchecked::<i8, _>(i).map_err(err)? != 0),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
            convert::int(row.try_get_unchecked::<i64, _>(i).map_err(err)?)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => convert::int(row.try_get_unchecked::<u64, _>(i).map_err(err)?),
        "BIT" => {
            let bits = row.try_get_unchecked::<u64, _>(i).map_err(err)?;
            if column_is_single_bit(row, i) {
                Value::Bool(bits != 0)
            } else {
                convert::int(bits)
            }
        }
        "FLOAT" => convert::float(row.try_get::<f32, _>(i).map_err(err)?.into()),
        "DOUBLE" => convert::float(row.try_get::<f64, _>(i).map_err(err)?),
        "DECIMAL" => convert::decimal(&row.try_get::<BigDecimal, _>(i).map_err(err)?),
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            Value::String(row.try_get_unchecked(i).map_err(err)?)
        }
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            convert::bytes(&row.try_get_unchecked::<Vec<u8>, _>(i).map_err(err)?)
        }
        "JSON" => row.try_get::<Value, _>(i).map_err(err)?,
        "TIMESTAMP" => {
            let v: DateTime<Utc> = row.try_get(i).map_err(err)?;
            convert::timestamp_tz(&v.fixed_offset())
        }
        "DATETIME" => convert::timestamp(&row.try_get::<NaiveDateTime, _>(i).map_err(err)?),
        "DATE" => convert::date(&row.try_get::<NaiveDate, _>(i).map_err(err)?),
        "TIME" => convert::time(&row.try_get::<NaiveTime, _>(i).map_err(err)?),
        other => return Err(unsupported_column(name, other)),
    })
}

/// `BIT(1)` is a flag (JSON bool); wider `BIT(n)` columns are numbers.
fn column_is_single_bit(row: &MySqlRow, i: usize) -> bool {
    // sqlx does not expose the column width; a BIT(1) value is one byte holding 0 or 1.
    row.try_get_unchecked::<Vec<u8>, _>(i)
        .map(|b| b.len() == 1 && b[0] <= 1)
        .unwrap_or(false)
}

//! Microsoft SQL Server through tiberius (TDS 7.4 over TCP, TLS by rustls), with a small
//! deadpool pool of connections.
//!
//! The connection string is an ADO.NET string
//! (`server=tcp:host,1433;user=…;password=…;database=…;encrypt=true;trustservercertificate=false`)
//! or a JDBC-style URL (`jdbc:sqlserver://host:1433;databaseName=…` or the same without
//! `jdbc:`). Parameters are `@P1`, `@P2`, … in the SQL.

mod config;
mod params;
mod pool;
mod rows;

use std::time::Duration;

use futures_util::TryStreamExt;
use tiberius::QueryItem;

pub use config::MsSqlOptions;

use super::{Row, Source, SourceError, SourceKind};
use pool::{Connection, Pool};

/// A SQL Server source.
pub struct MsSqlSource {
    pool: Pool,
    query_timeout: Duration,
}

impl std::fmt::Debug for MsSqlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsSqlSource")
            .field("query_timeout", &self.query_timeout)
            .finish_non_exhaustive()
    }
}

impl MsSqlSource {
    /// Checks the options and sets up the pool; connections are made when first needed.
    pub fn new(name: &str, options: &MsSqlOptions) -> Result<Self, SourceError> {
        crate::tls::install_crypto_provider();
        let config = options.tiberius_config(name)?;
        let pool = pool::build(name, config, options)?;
        Ok(MsSqlSource {
            pool,
            query_timeout: options.query_timeout,
        })
    }

    async fn run(
        &self,
        sql: &str,
        params: &[params::Param],
    ) -> Result<Vec<Row>, (SourceError, Retry)> {
        let mut conn = pool::get(&self.pool).await.map_err(|e| (e, Retry::No))?;
        match tokio::time::timeout(self.query_timeout, query(&mut conn, sql, params)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => {
                // A server error leaves the connection in a known state; anything else
                // (I/O, protocol, a value that did not convert mid-stream) may not.
                if !matches!(e, tiberius::error::Error::Server(_)) {
                    pool::discard(conn);
                }
                let retry = if matches!(e, tiberius::error::Error::Io { .. }) {
                    Retry::Yes
                } else {
                    Retry::No
                };
                Err((SourceError::Query(e.to_string()), retry))
            }
            Err(_) => {
                pool::discard(conn);
                Err((SourceError::Timeout(self.query_timeout), Retry::No))
            }
        }
    }
}

/// Whether a failed attempt lost its connection (a pooled connection the server closed), so
/// one retry on a fresh connection is worth it.
#[derive(Debug, PartialEq, Eq)]
enum Retry {
    Yes,
    No,
}

/// Runs the query; rows of its first result set (later ones are read and dropped, so the
/// connection is clean for the next query).
async fn query(
    conn: &mut Connection,
    sql: &str,
    params: &[params::Param],
) -> tiberius::Result<Vec<Row>> {
    let mut query = tiberius::Query::new(sql);
    for param in params {
        param.bind(&mut query);
    }
    let mut stream = query.query(conn).await?;
    let mut out = Vec::new();
    while let Some(item) = stream.try_next().await? {
        if let QueryItem::Row(row) = item {
            if row.result_index() == 0 {
                out.push(rows::to_json(&row)?);
            }
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Source for MsSqlSource {
    fn kind(&self) -> SourceKind {
        SourceKind::MsSql
    }

    #[tracing::instrument(name = "db.query", skip_all, fields(db.system = "mssql", db.query.text = %sql, otel.kind = "client"))]
    async fn fetch(
        &self,
        sql: &str,
        params: &[serde_json::Value],
    ) -> Result<Vec<Row>, SourceError> {
        let params = params::from_json(params)?;
        match self.run(sql, &params).await {
            Ok(rows) => Ok(rows),
            Err((_, Retry::Yes)) => {
                tracing::debug!("SQL Server connection broke; retrying once on a new one");
                self.run(sql, &params).await.map_err(|(e, _)| e)
            }
            Err((e, Retry::No)) => Err(e),
        }
    }
}

//! A deadpool pool of tiberius connections.

use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleResult};
use deadpool::Runtime;
use tiberius::Client;
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::MsSqlOptions;
use crate::source::SourceError;

/// One open SQL Server connection.
pub(crate) type Connection = Client<Compat<TcpStream>>;

/// The pool of a source.
pub(crate) type Pool = managed::Pool<Manager>;

/// Makes connections for the pool.
pub(crate) struct Manager {
    name: String,
    config: tiberius::Config,
    connect_timeout: Duration,
}

impl Manager {
    fn error(&self, message: String) -> SourceError {
        SourceError::Connect {
            source_name: self.name.clone(),
            message,
        }
    }

    /// TCP, PRELOGIN/TLS and login to the address `config` names.
    async fn open(&self, config: tiberius::Config) -> tiberius::Result<Connection> {
        let tcp = TcpStream::connect(config.get_addr()).await?;
        tcp.set_nodelay(true)?;
        Client::connect(config, tcp.compat_write()).await
    }
}

impl managed::Manager for Manager {
    type Type = Connection;
    type Error = SourceError;

    /// Connects within the connect timeout, following one Azure SQL gateway redirect.
    async fn create(&self) -> Result<Connection, SourceError> {
        let attempt = async {
            match self.open(self.config.clone()).await {
                Err(tiberius::error::Error::Routing { host, port }) => {
                    let mut routed = self.config.clone();
                    routed.host(&host);
                    routed.port(port);
                    self.open(routed).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.error(format!("{}: {e}", self.config.get_addr()))),
            Err(_) => Err(self.error(format!(
                "{}: timed out after {:?}",
                self.config.get_addr(),
                self.connect_timeout
            ))),
        }
    }

    async fn recycle(&self, _conn: &mut Connection, _: &Metrics) -> RecycleResult<SourceError> {
        Ok(())
    }
}

/// Builds the pool; no connection is made yet.
pub(crate) fn build(
    name: &str,
    config: tiberius::Config,
    options: &MsSqlOptions,
) -> Result<Pool, SourceError> {
    let manager = Manager {
        name: name.to_string(),
        config,
        connect_timeout: options.connect_timeout,
    };
    Pool::builder(manager)
        .max_size(options.max_connections)
        .wait_timeout(Some(options.connect_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| SourceError::Connect {
            source_name: name.to_string(),
            message: format!("cannot build the connection pool: {e}"),
        })
}

/// Takes a connection from the pool, making one when none is free.
pub(crate) async fn get(pool: &Pool) -> Result<Object<Manager>, SourceError> {
    pool.get().await.map_err(|e| match e {
        PoolError::Backend(e) => e,
        PoolError::Timeout(_) => SourceError::Connect {
            source_name: pool.manager().name.clone(),
            message: "no free connection in time (all max_connections busy)".into(),
        },
        other => SourceError::Connect {
            source_name: pool.manager().name.clone(),
            message: other.to_string(),
        },
    })
}

/// Drops a connection whose state is unknown instead of returning it to the pool.
pub(crate) fn discard(conn: Object<Manager>) {
    drop(Object::take(conn));
}

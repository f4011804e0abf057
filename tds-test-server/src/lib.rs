//! A TDS 7.4 server in front of SQLite, for tests only.
//!
//! Speaks enough of MS-TDS for an unmodified tiberius client: PRELOGIN, LOGIN7 (plaintext,
//! login-only TLS and full TLS via the TDS 7.x in-PRELOGIN handshake), SQL batches, RPC
//! `sp_executesql` with typed parameters, result sets with SQL Server column types, row
//! counts and errors. Statements run on SQLite as written (see [`sql`]), after a few T-SQL
//! rewrites ([`tsql`]: `TOP`, `CONVERT`, `CHANGETABLE`); SQL Server Change Tracking and
//! `rowversion` columns are emulated ([`tracking`]); result column types come from the declared
//! SQLite column types (see [`types::ColumnType::from_declared`]).

pub mod cert;
mod channel;
pub mod decimal;
mod login;
pub mod packet;
mod prelogin;
mod rpc;
mod session;
pub mod sql;
pub mod temporal;
mod tokens;
pub mod tracking;
pub mod tsql;
pub mod types;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::Connection;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use cert::{TestCertificates, TlsIdentity};

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// SQLite database file; `None` for a private in-memory database.
    pub database: Option<PathBuf>,
    /// TLS identity; `None` answers ENCRYPT_NOT_SUP (clients must not require encryption).
    pub tls: Option<TlsIdentity>,
    /// Required SQL login (user, password); `None` accepts any.
    pub credentials: Option<(String, String)>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: None,
            tls: None,
            credentials: None,
        }
    }
}

/// What all sessions share.
pub(crate) struct Shared {
    pub(crate) db: Mutex<Connection>,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) credentials: Option<(String, String)>,
}

/// A running server; stops (with its sessions) when dropped.
pub struct TdsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl TdsServer {
    /// Opens the database and starts listening.
    pub async fn start(options: ServerOptions) -> anyhow::Result<TdsServer> {
        let conn = match &options.database {
            Some(path) => Connection::open(path)
                .with_context(|| format!("opening SQLite database {}", path.display()))?,
            None => Connection::open_in_memory()?,
        };
        sql::register_functions(&conn)?;
        let tls = options.tls.as_ref().map(cert::server_config).transpose()?;
        let shared = Arc::new(Shared {
            db: Mutex::new(conn),
            tls,
            credentials: options.credentials,
        });
        let listener = TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("binding {}", options.listen))?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(TdsServer {
            addr,
            shared,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs SQL directly on the SQLite database (to seed test data).
    pub fn execute_batch(&self, sql: &str) -> anyhow::Result<()> {
        let conn = self
            .shared
            .db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        conn.execute_batch(sql)?;
        Ok(())
    }
}

impl Drop for TdsServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    sessions.spawn(async move {
                        if let Err(e) = session::serve(stream, shared).await {
                            tracing::debug!(%peer, error = %e, "TDS session ended with an error");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

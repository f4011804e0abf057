//! Runs the TDS test server from the command line (for trying clients by hand).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tds_test_server::{ServerOptions, TdsServer, TlsIdentity};

/// A TDS 7.4 test server in front of SQLite. Not SQL Server: for tests only.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:11433")]
    listen: SocketAddr,
    /// SQLite database file (default: in memory).
    #[arg(long)]
    database: Option<PathBuf>,
    /// PEM certificate chain; with --tls-key turns TLS on.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Required login as USER:PASSWORD (default: any login is accepted).
    #[arg(long)]
    login: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity {
            cert_chain_pem: std::fs::read_to_string(cert)?,
            key_pem: std::fs::read_to_string(key)?,
        }),
        _ => None,
    };
    let credentials = match args.login {
        Some(login) => {
            let (user, password) = login
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("--login takes USER:PASSWORD"))?;
            Some((user.to_string(), password.to_string()))
        }
        None => None,
    };
    let server = TdsServer::start(ServerOptions {
        listen: args.listen,
        database: args.database,
        tls,
        credentials,
    })
    .await?;
    println!("TDS test server on {}", server.addr());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

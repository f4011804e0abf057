//! Options of a SQL Server source and the tiberius configuration made from them.

use std::path::PathBuf;
use std::time::Duration;

use crate::source::SourceError;

/// How to reach a SQL Server and how to pool connections to it.
#[derive(Clone)]
pub struct MsSqlOptions {
    /// ADO.NET connection string, or `jdbc:sqlserver://…` / `sqlserver://…` URL. Secret: it
    /// holds the password.
    pub url: String,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Limit on making a connection (TCP, TLS, login), and on waiting for a free one.
    pub connect_timeout: Duration,
    /// Limit on one query, from sending it to the last row.
    pub query_timeout: Duration,
    /// Extra CA certificate (PEM or DER file) to trust for the server's certificate, besides
    /// the system's roots. Same as `TrustServerCertificateCA=` in the connection string.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (no validation at all): only on a trusted network.
    /// Same as `TrustServerCertificate=true` in the connection string.
    pub trust_server_certificate: bool,
}

impl std::fmt::Debug for MsSqlOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsSqlOptions")
            .field("url", &"<secret>")
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("ca_file", &self.ca_file)
            .field("trust_server_certificate", &self.trust_server_certificate)
            .finish()
    }
}

impl MsSqlOptions {
    /// Options with defaults: 10 connections, 10 s to connect, 30 s per query, TLS as the
    /// connection string says.
    pub fn new(url: impl Into<String>) -> Self {
        MsSqlOptions {
            url: url.into(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(30),
            ca_file: None,
            trust_server_certificate: false,
        }
    }

    /// The tiberius configuration: the connection string with the TLS options added.
    pub(crate) fn tiberius_config(&self, name: &str) -> Result<tiberius::Config, SourceError> {
        let invalid = |message: String| SourceError::Connect {
            source_name: name.to_string(),
            message,
        };
        if self.max_connections == 0 {
            return Err(invalid("max_connections must be at least 1".into()));
        }
        let url = self.url.trim();
        let jdbc = url
            .strip_prefix("jdbc:sqlserver://")
            .or_else(|| url.strip_prefix("sqlserver://"));
        let mut text = match jdbc {
            Some(rest) => format!("jdbc:sqlserver://{rest}"),
            None => url.to_string(),
        };
        let sets_trust = text.to_ascii_lowercase().contains("trustservercertificate");
        if self.trust_server_certificate || self.ca_file.is_some() {
            if sets_trust {
                return Err(invalid(
                    "set certificate trust either in the connection string or in the source's \
                     TLS options, not both"
                        .into(),
                ));
            }
            if self.trust_server_certificate && self.ca_file.is_some() {
                return Err(invalid(
                    "trust_server_certificate and a CA file exclude each other".into(),
                ));
            }
        }
        if !text.is_empty() && !text.ends_with(';') {
            text.push(';');
        }
        if self.trust_server_certificate {
            text.push_str("TrustServerCertificate=true;");
        }
        if let Some(ca) = &self.ca_file {
            let ca = ca
                .to_str()
                .ok_or_else(|| invalid(format!("CA file path {} is not UTF-8", ca.display())))?;
            if ca.contains([';', '{', '}', '"', '\'']) {
                return Err(invalid(format!("CA file path {ca:?} has a character (;{{}}\"') that a connection string cannot hold")));
            }
            text.push_str(&format!("TrustServerCertificateCA={ca};"));
        }
        let parsed = match jdbc {
            Some(_) => tiberius::Config::from_jdbc_string(&text),
            None => tiberius::Config::from_ado_string(&text),
        };
        parsed.map_err(|e| invalid(format!("invalid SQL Server connection string: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(options: &MsSqlOptions) -> Result<tiberius::Config, SourceError> {
        options.tiberius_config("orders")
    }

    #[test]
    fn reads_ado_and_jdbc_forms() {
        let ado = config(&MsSqlOptions::new(
            "server=tcp:db.example,1444;user=app;password=p;database=shop;encrypt=true",
        ))
        .unwrap();
        assert_eq!(ado.get_addr(), "db.example:1444");
        let jdbc = config(&MsSqlOptions::new(
            "sqlserver://db.example:1455;databaseName=shop;user=app;password=p",
        ))
        .unwrap();
        assert_eq!(jdbc.get_addr(), "db.example:1455");
    }

    #[test]
    fn tls_options_are_added_once() {
        let mut options = MsSqlOptions::new("server=tcp:h,1433;encrypt=true");
        options.ca_file = Some("/etc/ssl/ca.pem".into());
        assert!(config(&options).is_ok());
        options.trust_server_certificate = true;
        assert!(config(&options).is_err(), "CA file and trust-all both set");
        options.ca_file = None;
        assert!(config(&options).is_ok());
        options.url.push_str(";TrustServerCertificate=false");
        let err = config(&options).unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn bad_strings_are_errors_that_do_not_echo_the_password() {
        let err = config(&MsSqlOptions::new("server=tcp:h,notaport;password=hunter2"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot connect to orders:"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let mut options = MsSqlOptions::new("server=tcp:h,1433");
        options.max_connections = 0;
        assert!(config(&options).is_err());
    }
}

//! How a source is configured (`[sources.<name>]` in the worker's TOML) and connected.

use std::path::PathBuf;
use std::time::Duration;

use super::SourceError;

/// TLS towards the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// What the URL says (e.g. `sslmode=` / `ssl-mode=`); plain when it says nothing.
    #[default]
    FromUrl,
    /// No TLS.
    Disable,
    /// TLS when the server offers it.
    Prefer,
    /// TLS required, certificate not verified.
    Require,
    /// TLS required, certificate verified against the CA (`tls_ca_file` or the system roots).
    /// Postgres and MySQL check the host name here too for now (sqlx 0.8.6 with rustls 0.23.24+,
    /// launchbadge/sqlx#3793; `cache/tests/db_tls.rs` notices when that changes).
    VerifyCa,
    /// As `VerifyCa`, and the host name must match the certificate.
    VerifyFull,
}

impl std::str::FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "disable" | "disabled" => Ok(Self::Disable),
            "prefer" | "preferred" => Ok(Self::Prefer),
            "require" | "required" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" | "verify-identity" => Ok(Self::VerifyFull),
            _ => Err("expected disable, prefer, require, verify-ca or verify-full".into()),
        }
    }
}

/// One source's settings.
#[derive(Clone)]
pub struct SourceConfig {
    /// The configured name (`[sources.<name>]`).
    pub name: String,
    /// Connection URL as sqlx takes it (`postgres://`, `mysql://`/`mariadb://`, `sqlite:`).
    /// Secret: never logged.
    pub url: String,
    /// Pool size (default 10).
    pub max_connections: u32,
    /// Time allowed to get a connection (default 5 s).
    pub connect_timeout: Duration,
    /// Time allowed for one query (default 30 s).
    pub query_timeout: Duration,
    /// TLS mode (default: as the URL says).
    pub tls: TlsMode,
    /// PEM file of the CA to verify the server against.
    pub tls_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("name", &self.name)
            .field("url", &celeriac_secrets::redact(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

impl SourceConfig {
    /// A source with default pool settings.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        SourceConfig {
            name: name.into(),
            url: url.into(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(30),
            tls: TlsMode::FromUrl,
            tls_ca_file: None,
        }
    }

    /// The URL's scheme, lowercased (`postgres`, `mysql`, `sqlite`, ...).
    pub fn scheme(&self) -> String {
        self.url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// The error for a bad URL or option of this source.
    pub fn connect_error(&self, message: impl std::fmt::Display) -> SourceError {
        SourceError::Connect {
            source_name: self.name.clone(),
            message: message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert!(!format!("{:?}", SourceConfig::new("a", "mysql://r:pw@h/db")).contains("pw"));
    }

    #[test]
    fn tls_modes() {
        assert_eq!("verify_full".parse::<TlsMode>(), Ok(TlsMode::VerifyFull));
        assert!("sometimes".parse::<TlsMode>().is_err());
    }
}

//! Redis URLs in the forms Celery accepts, for the broker and the result backend alike.
//!
//! * `redis://[[user]:password@]host[:port][/db]` (and `valkey://`)
//! * `rediss://…` (and `valkeys://`) for TLS, with Celery's query arguments:
//!   `ssl_cert_reqs=required|optional|none` (or `CERT_REQUIRED`…; only `none` skips certificate
//!   verification — a Python client verifies under `optional` too), `ssl_ca_certs=<PEM>` (a CA
//!   bundle instead of the system roots), `ssl_certfile=<PEM>&ssl_keyfile=<PEM>` (mutual TLS)
//! * unix sockets: `redis+socket:///path/to/redis.sock`, `socket://`, `unix://`, `redis+unix://`
//!
//! User name and password are percent-decoded. The database is the path's number for TCP URLs;
//! a `virtual_host=N` or `db=N` query argument overrides it (`virtual_host` first), and is the
//! only way to choose it for a unix socket.
//!
//! A URL read from a file can keep its credentials current: see
//! [`RedisUrl::with_credentials_file`].

use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use redis::aio::ConnectionManagerConfig;
use redis::{
    AsyncConnectionConfig, ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    RedisConnectionInfo,
};

/// Why a Redis URL cannot be used. The message never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

impl From<UrlError> for redis::RedisError {
    fn from(e: UrlError) -> Self {
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad Redis URL", e.0))
    }
}

mod credentials;
pub use credentials::{CredentialsFile, POLL_INTERVAL};

/// Where and how to connect, from a Redis URL.
#[derive(Debug, Clone)]
pub struct RedisUrl {
    /// The redis connection settings.
    pub info: ConnectionInfo,
    /// PEM files named in a `rediss://` URL, if any (read by [`RedisUrl::client`]).
    pub tls: Option<TlsFiles>,
    /// Where the current user name and password are re-read from, if anywhere.
    credentials: Option<CredentialsFile>,
}

/// PEM files named in a `rediss://` URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle used instead of the system roots (`ssl_ca_certs`).
    pub ca_certs: Option<PathBuf>,
    /// Client certificate and key for mutual TLS (`ssl_certfile`, `ssl_keyfile`).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    /// Read the files into the redis crate's form.
    pub fn load(&self) -> Result<redis::TlsCertificates, UrlError> {
        let read = |p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| UrlError(format!("cannot read TLS file {}: {e}", p.display())))
        };
        Ok(redis::TlsCertificates {
            root_cert: self.ca_certs.as_ref().map(read).transpose()?,
            client_tls: match &self.client {
                Some((cert, key)) => Some(ClientTlsConfig {
                    client_cert: read(cert)?,
                    client_key: read(key)?,
                }),
                None => None,
            },
        })
    }
}

impl RedisUrl {
    /// A redis client for this URL, with the TLS files loaded if the URL names any, and the
    /// credentials file's current user name and password if there is one (make a new client
    /// for each connection that takes no credentials provider, such as PUB/SUB ones).
    pub fn client(&self) -> Result<redis::Client, UrlError> {
        let mut info = self.info.clone();
        if let Some(file) = &self.credentials {
            let auth = file.current();
            let settings = info
                .redis_settings()
                .clone()
                .set_username(auth.username())
                .set_password(auth.password());
            info = info.set_redis_settings(settings);
        }
        let client = match &self.tls {
            Some(files) => redis::Client::build_with_tls(info, files.load()?),
            None => redis::Client::open(info),
        };
        client.map_err(|e| UrlError(format!("cannot use these connection settings: {e}")))
    }

    /// This URL with its user name and password re-read from `path`, the file it was read
    /// from, every `interval` (see [`CredentialsFile`]): new connections use the file's
    /// current credentials and connections made with [`RedisUrl::manager_config`] or
    /// [`RedisUrl::connection_config`] re-authenticate when they change. A URL without a
    /// password is returned as is: there is nothing to rotate.
    pub fn with_credentials_file(mut self, path: impl Into<PathBuf>, interval: Duration) -> Self {
        if self.info.redis_settings().password().is_some() {
            self.credentials = Some(CredentialsFile::new(path, &self, interval));
        }
        self
    }

    /// The credentials file, if the URL has one.
    pub fn credentials_file(&self) -> Option<&CredentialsFile> {
        self.credentials.as_ref()
    }

    /// `config` with the credentials file as its credentials provider, if there is one.
    pub fn manager_config(&self, config: ConnectionManagerConfig) -> ConnectionManagerConfig {
        match &self.credentials {
            Some(file) => config.set_credentials_provider(file.clone()),
            None => config,
        }
    }

    /// `config` with the credentials file as its credentials provider, if there is one.
    pub fn connection_config(&self, config: AsyncConnectionConfig) -> AsyncConnectionConfig {
        match &self.credentials {
            Some(file) => config.set_credentials_provider(file.clone()),
            None => config,
        }
    }
}

/// Parse a Celery broker or result backend URL.
pub fn parse(url: &str) -> Result<RedisUrl, UrlError> {
    let err = |msg: &str| UrlError(format!("{msg} in {}", celeriac_secrets::redact(url)));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| err("no scheme (expected redis://, rediss:// or redis+socket://)"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let query =
        parse_query(query.map(|q| q.split('#').next().unwrap_or_default())).map_err(|m| err(&m))?;
    let arg = |key: &str| {
        query
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let query_db = arg("virtual_host").or_else(|| arg("db"));
    let scheme = scheme.to_ascii_lowercase();
    let tls_args = [
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
    ];
    let mut tls = None;
    let (addr, userinfo, db_text) = match scheme.as_str() {
        "redis+socket" | "socket" | "unix" | "redis+unix" => {
            let (userinfo, path) = split_userinfo(rest);
            if path.is_empty() || !path.starts_with('/') || path == "/" {
                return Err(err("a unix socket URL needs an absolute socket path"));
            }
            (ConnectionAddr::Unix(path.into()), userinfo, query_db)
        }
        "redis" | "rediss" | "valkey" | "valkeys" => {
            let (userinfo, hostpart) = split_userinfo(rest);
            let (hostport, path) = match hostpart.split_once('/') {
                Some((h, p)) => (h, p),
                None => (hostpart, ""),
            };
            let (host, port) = split_host_port(hostport).map_err(|m| err(&m))?;
            let addr = if matches!(scheme.as_str(), "rediss" | "valkeys") {
                let insecure = match arg("ssl_cert_reqs").map(str::to_ascii_lowercase) {
                    None => false,
                    Some(r) => match r.as_str() {
                        "required" | "cert_required" | "optional" | "cert_optional" => false,
                        "none" | "cert_none" => true,
                        _ => return Err(err("ssl_cert_reqs must be required, optional or none")),
                    },
                };
                let files = TlsFiles {
                    ca_certs: arg("ssl_ca_certs").map(PathBuf::from),
                    client: match (arg("ssl_certfile"), arg("ssl_keyfile")) {
                        (Some(c), Some(k)) => Some((c.into(), k.into())),
                        (None, None) => None,
                        _ => return Err(err("ssl_certfile and ssl_keyfile go together")),
                    },
                };
                if files != TlsFiles::default() {
                    tls = Some(files);
                }
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure,
                    tls_params: None,
                }
            } else {
                if tls_args.iter().any(|k| arg(k).is_some()) {
                    return Err(err(
                        "ssl_* arguments need a TLS URL (rediss://), not a plain redis:// one",
                    ));
                }
                ConnectionAddr::Tcp(host, port)
            };
            (addr, userinfo, query_db.or(Some(path)))
        }
        other => return Err(err(&format!("unsupported scheme `{other}`"))),
    };
    let db_text = db_text.unwrap_or_default().trim_matches('/');
    let db = if db_text.is_empty() {
        0
    } else {
        db_text.parse::<i64>().map_err(|_| {
            err("invalid database number (expected e.g. redis://host:6379/0 or ?virtual_host=0)")
        })?
    };
    if db < 0 {
        return Err(err("invalid database number: it cannot be negative"));
    }
    let mut settings = RedisConnectionInfo::default().set_db(db);
    if let Some(info) = userinfo {
        let (user, password) = match info.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (info, None),
        };
        let user = decode(user).map_err(|m| err(&m))?;
        if !user.is_empty() {
            settings = settings.set_username(user);
        }
        if let Some(p) = password {
            let p = decode(p).map_err(|m| err(&m))?;
            if !p.is_empty() {
                settings = settings.set_password(p);
            }
        }
    }
    let info = addr
        .into_connection_info()
        .map_err(|e| err(&e.to_string()))?
        .set_redis_settings(settings);
    Ok(RedisUrl {
        info,
        tls,
        credentials: None,
    })
}

fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    // The host part never contains '@'; a password may, so split at the last one.
    match rest.rsplit_once('@') {
        Some((info, host)) => (Some(info), host),
        None => (None, rest),
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| "unterminated IPv6 address".to_string())?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let port = match port {
        None | Some("") => 6379,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("port `{p}` is not a number from 0 to 65535"))?,
    };
    Ok((decode(host)?, port))
}

fn decode(s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "percent-encoded text is not UTF-8".to_string())
}

fn parse_query(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(q) = query else {
        return Ok(Vec::new());
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests;

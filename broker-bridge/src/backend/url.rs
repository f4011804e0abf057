//! Result backend URLs as Celery accepts them, turned into redis connection settings.
//!
//! * `redis://[user:password@]host[:port][/db]`
//! * `rediss://…?ssl_cert_reqs=required|optional|none&ssl_ca_certs=…&ssl_certfile=…&ssl_keyfile=…`
//!   (`CERT_REQUIRED`-style spellings too; `optional` and `none` skip certificate verification)
//! * `socket:///path/to/redis.sock?virtual_host=<db>` (Celery's unix form), and also
//!   `redis+socket://`, `unix://` and `redis+unix://` with `?virtual_host=` or `?db=`
//!
//! `virtual_host=<db>` in the query overrides the path's db, as in Celery.

use std::collections::HashMap;
use std::path::PathBuf;

use redis::{ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::store::BackendError;

/// Where and how to connect, from a backend URL.
#[derive(Debug, Clone)]
pub struct BackendUrl {
    /// The redis connection settings.
    pub info: redis::ConnectionInfo,
    /// Custom TLS material (`ssl_ca_certs`, `ssl_certfile`/`ssl_keyfile`), if any.
    pub tls: Option<TlsFiles>,
}

/// PEM files named in a `rediss://` URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle used instead of the system roots.
    pub ca_certs: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    /// Read the files into the redis crate's form.
    pub fn load(&self) -> Result<redis::TlsCertificates, BackendError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| BackendError::Url(format!("{}: {e}", p.display())))
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

/// Parse a Celery result backend URL.
pub fn parse(url: &str) -> Result<BackendUrl, BackendError> {
    let bad = |why: &str| BackendError::Url(format!("{why} in result backend URL {}", redact(url)));
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let query: HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    let decode = |s: &str| {
        percent_decode(s).ok_or_else(|| bad("invalid percent-encoding in the credentials"))
    };
    let username = match parsed.username() {
        "" => None,
        u => Some(decode(u)?),
    };
    let password = parsed.password().map(decode).transpose()?;
    let path_db = parsed.path().trim_matches('/');
    let mut tls = None;

    let (addr, db_text) = match parsed.scheme() {
        "redis" | "rediss" => {
            let host = match parsed.host() {
                Some(url::Host::Domain(d)) => d.to_owned(),
                Some(url::Host::Ipv4(ip)) => ip.to_string(),
                Some(url::Host::Ipv6(ip)) => ip.to_string(),
                None => return Err(bad("no host")),
            };
            let port = parsed.port().unwrap_or(6379);
            let addr = if parsed.scheme() == "rediss" {
                let insecure = match query.get("ssl_cert_reqs").map(|s| s.to_ascii_lowercase()) {
                    None => false,
                    Some(r) if r == "required" || r == "cert_required" => false,
                    Some(r)
                        if ["optional", "cert_optional", "none", "cert_none"]
                            .contains(&r.as_str()) =>
                    {
                        true
                    }
                    Some(_) => return Err(bad("ssl_cert_reqs must be required, optional or none")),
                };
                let files = TlsFiles {
                    ca_certs: query.get("ssl_ca_certs").map(PathBuf::from),
                    client: match (query.get("ssl_certfile"), query.get("ssl_keyfile")) {
                        (Some(c), Some(k)) => Some((c.into(), k.into())),
                        (None, None) => None,
                        _ => return Err(bad("ssl_certfile and ssl_keyfile go together")),
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
                ConnectionAddr::Tcp(host, port)
            };
            (addr, path_db.to_owned())
        }
        "socket" | "redis+socket" | "unix" | "redis+unix" => {
            if parsed.path().is_empty() || parsed.path() == "/" {
                return Err(bad("no socket path"));
            }
            let db = query.get("db").cloned().unwrap_or_default();
            (ConnectionAddr::Unix(PathBuf::from(parsed.path())), db)
        }
        other => {
            return Err(bad(&format!(
                "unsupported scheme {other:?} (use redis, rediss or socket)"
            )))
        }
    };
    let db_text = query.get("virtual_host").cloned().unwrap_or(db_text);
    let db_text = db_text.trim_matches('/');
    let db = if db_text.is_empty() {
        0
    } else {
        db_text
            .parse::<i64>()
            .map_err(|_| bad("invalid database number"))?
    };
    let mut redis_info = RedisConnectionInfo::default().set_db(db);
    if let Some(u) = username {
        redis_info = redis_info.set_username(u);
    }
    if let Some(p) = password {
        redis_info = redis_info.set_password(p);
    }
    let info = addr
        .into_connection_info()
        .map_err(|e| bad(&e.to_string()))?
        .set_redis_settings(redis_info);
    Ok(BackendUrl { info, tls })
}

/// The URL with any password replaced by `***`, for error messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_of(u: &BackendUrl) -> i64 {
        u.info.redis_settings().db()
    }

    #[test]
    fn plain_redis_with_credentials_and_db() {
        let u = parse("redis://us%40er:p%3Ass@example.com:6380/3").unwrap();
        assert_eq!(
            u.info.addr(),
            &ConnectionAddr::Tcp("example.com".into(), 6380)
        );
        assert_eq!(db_of(&u), 3);
        assert_eq!(u.info.redis_settings().username(), Some("us@er"));
        assert_eq!(u.info.redis_settings().password(), Some("p:ss"));
        assert!(u.tls.is_none());
    }

    #[test]
    fn defaults_and_virtual_host() {
        let u = parse("redis://localhost").unwrap();
        assert_eq!(
            u.info.addr(),
            &ConnectionAddr::Tcp("localhost".into(), 6379)
        );
        assert_eq!(db_of(&u), 0);
        assert_eq!(db_of(&parse("redis://h/1?virtual_host=5").unwrap()), 5);
    }

    #[test]
    fn rediss_cert_reqs() {
        let secure = parse("rediss://h:6390/0?ssl_cert_reqs=required").unwrap();
        assert!(matches!(
            secure.info.addr(),
            ConnectionAddr::TcpTls {
                insecure: false,
                port: 6390,
                ..
            }
        ));
        let none = parse("rediss://h/0?ssl_cert_reqs=CERT_NONE").unwrap();
        assert!(matches!(
            none.info.addr(),
            ConnectionAddr::TcpTls { insecure: true, .. }
        ));
        let files = parse("rediss://h/0?ssl_ca_certs=/ca.pem").unwrap();
        assert_eq!(files.tls.unwrap().ca_certs, Some(PathBuf::from("/ca.pem")));
        assert!(parse("rediss://h/0?ssl_cert_reqs=maybe").is_err());
        assert!(parse("rediss://h/0?ssl_certfile=/c.pem").is_err());
    }

    #[test]
    fn unix_socket_forms() {
        for url in [
            "socket:///run/redis.sock?virtual_host=2",
            "redis+socket:///run/redis.sock?virtual_host=2",
            "unix:///run/redis.sock?db=2",
        ] {
            let u = parse(url).unwrap();
            assert_eq!(
                u.info.addr(),
                &ConnectionAddr::Unix(PathBuf::from("/run/redis.sock")),
                "{url}"
            );
            assert_eq!(db_of(&u), 2, "{url}");
        }
    }

    #[test]
    fn bad_urls_are_clear_errors_without_the_password() {
        let e = parse("memcached://h/0").unwrap_err().to_string();
        assert!(e.contains("unsupported scheme"), "{e}");
        let e = parse("redis://u:secret@h/notadb").unwrap_err().to_string();
        assert!(
            e.contains("invalid database number") && !e.contains("secret"),
            "{e}"
        );
        assert!(parse("not a url").is_err());
        assert!(parse("socket://").is_err());
    }
}

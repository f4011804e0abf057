//! Broker URLs in the forms Celery accepts, turned into a [`redis::ConnectionInfo`].
//!
//! * `redis://[[user]:password@]host[:port][/db]` (and `valkey://`)
//! * `rediss://…` for TLS; `ssl_cert_reqs=none|CERT_NONE` disables certificate checks, the other
//!   `ssl_*` query arguments are tolerated (the system roots are used)
//! * `redis+socket:///path/to/redis.sock[?db=N]`, `unix:///path[?db=N]`, `socket:///path`
//!
//! User name and password are percent-decoded; `?db=N` overrides the path's database number.

use percent_encoding::percent_decode_str;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use super::error::{Result, TransportError};

/// Parse a Celery broker URL.
pub fn parse_redis_url(url: &str) -> Result<ConnectionInfo> {
    let err = |msg: &str| TransportError::Url(format!("{msg} in {}", redact(url)));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| err("no scheme (expected redis://, rediss:// or redis+socket://)"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let query = parse_query(query.map(|q| q.split('#').next().unwrap_or_default()))?;
    let mut db: Option<i64> = None;
    let mut insecure = false;
    for (k, v) in &query {
        match k.as_str() {
            "db" | "virtual_host" => {
                db = Some(v.parse().map_err(|_| err("`db` is not an integer"))?);
            }
            "ssl_cert_reqs" => {
                insecure = matches!(v.to_ascii_lowercase().as_str(), "none" | "cert_none")
            }
            _ => {}
        }
    }
    let scheme = scheme.to_ascii_lowercase();
    let (addr, userinfo) = match scheme.as_str() {
        "redis+socket" | "unix" | "socket" => {
            let (userinfo, path) = split_userinfo(rest);
            if path.is_empty() || !path.starts_with('/') {
                return Err(err("a unix socket URL needs an absolute path"));
            }
            (ConnectionAddr::Unix(path.into()), userinfo)
        }
        "redis" | "rediss" | "valkey" | "valkeys" => {
            let (userinfo, hostpart) = split_userinfo(rest);
            let (hostport, path) = match hostpart.split_once('/') {
                Some((h, p)) => (h, p),
                None => (hostpart, ""),
            };
            let (host, port) = split_host_port(hostport).map_err(|m| err(&m))?;
            if !path.is_empty() && db.is_none() {
                db = Some(path.parse().map_err(|_| {
                    err("the path must be the database number, e.g. redis://host:6379/0")
                })?);
            }
            let addr = if matches!(scheme.as_str(), "rediss" | "valkeys") {
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host, port)
            };
            (addr, userinfo)
        }
        other => return Err(err(&format!("unsupported scheme `{other}`"))),
    };
    let db = db.unwrap_or(0);
    if db < 0 {
        return Err(err("the database number cannot be negative"));
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
    Ok(addr.into_connection_info()?.set_redis_settings(settings))
}

/// The URL with its password replaced by `***`, for error messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((info, host)) => match info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    // The host part never contains '@'; a password may, so split at the last one.
    match rest.rsplit_once('@') {
        Some((info, host)) => (Some(info), host),
        None => (None, rest),
    }
}

fn split_host_port(hostport: &str) -> std::result::Result<(String, u16), String> {
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

fn decode(s: &str) -> std::result::Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "percent-encoded text is not UTF-8".to_string())
}

fn parse_query(query: Option<&str>) -> Result<Vec<(String, String)>> {
    let Some(q) = query else {
        return Ok(Vec::new());
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((
                decode(k).map_err(TransportError::Url)?,
                decode(v).map_err(TransportError::Url)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(info: &ConnectionInfo) -> (String, u16) {
        match info.addr() {
            ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
            other => panic!("not tcp: {other:?}"),
        }
    }

    #[test]
    fn plain_host_port_db() {
        let i = parse_redis_url("redis://cache.internal:6380/3").unwrap();
        assert_eq!(tcp(&i), ("cache.internal".into(), 6380));
        assert_eq!(i.redis_settings().db(), 3);
        assert_eq!(i.redis_settings().password(), None);
    }

    #[test]
    fn defaults_and_trailing_slash() {
        let i = parse_redis_url("redis://").unwrap();
        assert_eq!(tcp(&i), ("localhost".into(), 6379));
        assert_eq!(i.redis_settings().db(), 0);
        let i = parse_redis_url("redis://h/").unwrap();
        assert_eq!(i.redis_settings().db(), 0);
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let i = parse_redis_url("redis://:p%40ss%3Aw0rd@h:1/2").unwrap();
        assert_eq!(i.redis_settings().password(), Some("p@ss:w0rd"));
        assert_eq!(i.redis_settings().username(), None);
        let i = parse_redis_url("redis://alice:s3cr%2Ft@h").unwrap();
        assert_eq!(i.redis_settings().username(), Some("alice"));
        assert_eq!(i.redis_settings().password(), Some("s3cr/t"));
        let i = parse_redis_url("redis://user:a@b@h:7").unwrap();
        assert_eq!(i.redis_settings().password(), Some("a@b"));
        assert_eq!(tcp(&i), ("h".into(), 7));
    }

    #[test]
    fn tls_and_query_arguments() {
        let i = parse_redis_url("rediss://:pw@h:6380/1?ssl_cert_reqs=CERT_NONE&ssl_ca_certs=/x")
            .unwrap();
        match i.addr() {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                assert_eq!((host.as_str(), *port, *insecure), ("h", 6380, true));
            }
            other => panic!("not tls: {other:?}"),
        }
        let i = parse_redis_url("rediss://h?ssl_cert_reqs=required").unwrap();
        assert!(matches!(
            i.addr(),
            ConnectionAddr::TcpTls {
                insecure: false,
                ..
            }
        ));
    }

    #[test]
    fn unix_sockets() {
        for url in [
            "redis+socket:///run/redis.sock?db=4",
            "unix:///run/redis.sock?db=4",
            "socket:///run/redis.sock?db=4",
        ] {
            let i = parse_redis_url(url).unwrap();
            assert_eq!(
                i.addr(),
                &ConnectionAddr::Unix("/run/redis.sock".into()),
                "{url}"
            );
            assert_eq!(i.redis_settings().db(), 4, "{url}");
        }
        let i = parse_redis_url("unix://:pw@/run/r.sock").unwrap();
        assert_eq!(i.redis_settings().password(), Some("pw"));
    }

    #[test]
    fn ipv6_hosts() {
        let i = parse_redis_url("redis://[::1]:7000/0").unwrap();
        assert_eq!(tcp(&i), ("::1".into(), 7000));
    }

    #[test]
    fn bad_urls_are_clear_errors() {
        for url in [
            "localhost:6379",
            "amqp://guest@h//",
            "redis://h:notaport/0",
            "redis://h/notadb",
            "redis://h:99999",
            "redis+socket://relative.sock",
            "redis://h/-1",
        ] {
            assert!(
                matches!(parse_redis_url(url), Err(TransportError::Url(_))),
                "{url}"
            );
        }
        let e = parse_redis_url("redis://:hunter2@h:x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}

//! `sqs://` broker URLs in the forms kombu accepts.

use percent_encoding::percent_decode_str;

use super::SqsError;

/// What an `sqs://` URL names: static credentials and a custom endpoint, each optional.
///
/// * `sqs://` — credentials as the AWS SDK finds them (environment, web identity / IRSA,
///   profile, instance metadata) and the regional AWS endpoint;
/// * `sqs://KEY:SECRET@` — static credentials (percent-decoded, as kombu does), AWS endpoint;
/// * `sqs://KEY:SECRET@host:port` or `sqs://host:port` — a custom endpoint (an emulator, a
///   VPC endpoint): `https` when the transport option `is_secure` is true, else `http`, as
///   kombu builds `endpoint_url`.
#[derive(Clone, PartialEq, Eq)]
pub struct SqsUrl {
    /// The access key id (URL user), percent-decoded.
    pub access_key_id: Option<String>,
    /// The secret access key (URL password), percent-decoded.
    pub secret_access_key: Option<String>,
    /// The endpoint host, when the URL names one.
    pub host: Option<String>,
    /// The endpoint port, when the URL names one.
    pub port: Option<u16>,
}

impl std::fmt::Debug for SqsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsUrl")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

impl SqsUrl {
    /// Parse `sqs://[KEY[:SECRET]@][host[:port]][/]`.
    pub fn parse(url: &str) -> Result<Self, SqsError> {
        let rest = url
            .strip_prefix("sqs://")
            .ok_or_else(|| SqsError::Url(format!("not an sqs:// URL: {}", redact(url))))?;
        // Query and path carry nothing for SQS in kombu; a trailing `/` is common.
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let rest = rest.split('/').next().unwrap_or_default();
        let (userinfo, hostport) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let decode = |s: &str| -> Result<Option<String>, SqsError> {
            if s.is_empty() {
                return Ok(None);
            }
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| Some(c.into_owned()))
                .map_err(|_| SqsError::Url("credentials are not UTF-8 once decoded".into()))
        };
        let (access_key_id, secret_access_key) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((k, s)) => (decode(k)?, decode(s)?),
                None => (decode(u)?, None),
            },
        };
        let (host, port) = if hostport.is_empty() {
            (None, None)
        } else if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| SqsError::Url("unclosed `[` in the host".into()))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(parse_port(p)?),
                None if after.is_empty() => None,
                None => return Err(SqsError::Url("junk after the IPv6 host".into())),
            };
            (Some(format!("[{h}]")), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (Some(h.to_string()), Some(parse_port(p)?)),
                None => (Some(hostport.to_string()), None),
            }
        };
        let host = host.filter(|h| !h.is_empty());
        if host.is_none() && port.is_some() {
            return Err(SqsError::Url("a port without a host".into()));
        }
        Ok(SqsUrl {
            access_key_id,
            secret_access_key,
            host,
            port,
        })
    }

    /// The endpoint URL kombu would give boto3: `http(s)://host[:port]` when the URL has a host.
    pub fn endpoint_url(&self, is_secure: bool) -> Option<String> {
        let host = self.host.as_ref()?;
        let scheme = if is_secure { "https" } else { "http" };
        Some(match self.port {
            Some(p) => format!("{scheme}://{host}:{p}"),
            None => format!("{scheme}://{host}"),
        })
    }
}

/// Whether `url` is an SQS broker URL (`sqs://`).
pub fn is_sqs_url(url: &str) -> bool {
    url.starts_with("sqs://")
}

fn parse_port(p: &str) -> Result<u16, SqsError> {
    p.parse()
        .map_err(|_| SqsError::Url(format!("invalid port `{p}`")))
}

/// The URL with its credentials hidden, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}***{}", &url[..s + 3], &url[a..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_kombu_accepts() {
        let u = SqsUrl::parse("sqs://").unwrap();
        assert_eq!(
            (u.access_key_id, u.secret_access_key, u.host, u.port),
            (None, None, None, None)
        );
        let u = SqsUrl::parse("sqs://AKIA:se%2Fcr%2Bet@").unwrap();
        assert_eq!(u.access_key_id.as_deref(), Some("AKIA"));
        assert_eq!(u.secret_access_key.as_deref(), Some("se/cr+et"));
        assert_eq!(u.host, None);
        assert_eq!(u.endpoint_url(true), None);
        let u = SqsUrl::parse("sqs://k:s@localhost:4566").unwrap();
        assert_eq!(u.host.as_deref(), Some("localhost"));
        assert_eq!(u.port, Some(4566));
        assert_eq!(
            u.endpoint_url(false).as_deref(),
            Some("http://localhost:4566")
        );
        assert_eq!(
            u.endpoint_url(true).as_deref(),
            Some("https://localhost:4566")
        );
        let u = SqsUrl::parse("sqs://sqs.internal/").unwrap();
        assert_eq!(u.access_key_id, None);
        assert_eq!(
            u.endpoint_url(true).as_deref(),
            Some("https://sqs.internal")
        );
        let u = SqsUrl::parse("sqs://k:s@[::1]:9324").unwrap();
        assert_eq!(u.endpoint_url(false).as_deref(), Some("http://[::1]:9324"));
    }

    #[test]
    fn bad_urls_are_refused_without_leaking_the_secret() {
        let e = SqsUrl::parse("redis://k:topsecret@h")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("topsecret"), "{e}");
        assert!(SqsUrl::parse("sqs://k:s@h:notaport").is_err());
        assert!(SqsUrl::parse("sqs://:99").is_err());
        assert!(
            !format!("{:?}", SqsUrl::parse("sqs://k:topsecret@").unwrap()).contains("topsecret")
        );
    }
}

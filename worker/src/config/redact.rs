//! Hiding passwords in broker and backend URLs before they are shown anywhere.

/// What a redacted password is replaced with.
const MASK: &str = "***";

/// Returns `url` with the password of every URL in it replaced by `***`.
///
/// Handles Celery's failover lists (`redis://a;redis://b`). Errs on the safe side: everything
/// between `://` and the last `@` of a part that contains a `:` is treated as user info, so a
/// password with unencoded `/`, `?` or `@` is hidden too.
pub fn redacted(url: &str) -> String {
    url.split(';').map(redact_one).collect::<Vec<_>>().join(";")
}

fn redact_one(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host_and_rest) = rest.split_at(at);
    match userinfo.find(':') {
        Some(colon) => format!("{head}{}:{MASK}{host_and_rest}", &userinfo[..colon]),
        None => url.to_owned(),
    }
}

/// Returns a copy of a JSON options object with the values of secret-looking keys
/// (`password`, `passwd`, `secret`, `token`, any case, at any depth) replaced by `"***"`.
pub fn redacted_json(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) {
                        serde_json::Value::String(MASK.to_owned())
                    } else {
                        redacted_json(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(redacted_json).collect())
        }
        serde_json::Value::String(s) => serde_json::Value::String(redacted(s)),
        other => other.clone(),
    }
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"]
        .iter()
        .any(|s| key.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_password_keeps_the_rest() {
        assert_eq!(
            redacted("redis://:s3cret@cache:6380/1"),
            "redis://:***@cache:6380/1"
        );
        assert_eq!(
            redacted("rediss://user:p%40ss@h/0?ssl_cert_reqs=required"),
            "rediss://user:***@h/0?ssl_cert_reqs=required"
        );
    }

    #[test]
    fn hides_unencoded_special_characters_and_failover_lists() {
        let out = redacted("redis://u:pa/s@s?x@h1/0;redis://:two@h2/0");
        assert!(!out.contains("pa/s") && !out.contains("two"), "{out}");
        assert_eq!(out, "redis://u:***@h1/0;redis://:***@h2/0");
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        for url in ["redis://localhost:6379/0", "redis://user@h/0", "not a url"] {
            assert_eq!(redacted(url), url);
        }
    }

    #[test]
    fn json_secrets_hidden() {
        let v = serde_json::json!({"visibility_timeout": 30,
            "sentinel_kwargs": {"password": "hunter2"}, "url": "redis://:pw@h/0"});
        let out = redacted_json(&v).to_string();
        assert!(!out.contains("hunter2") && !out.contains(":pw@"), "{out}");
        assert!(out.contains("\"visibility_timeout\":30"), "{out}");
    }
}

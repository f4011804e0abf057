//! Hiding secrets in JSON options before they are shown; URLs and connection strings are
//! redacted by the shared [`celeriac_secrets::redact`].

use celeriac_secrets::{is_secret_key, redact, MASK};

/// Returns a copy of a JSON options object with the values of secret-looking keys
/// (`password`, `passwd`, `pwd`, `secret`, `token`, any case, at any depth) replaced by `"***"`
/// and the passwords of URLs in string values hidden.
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
        serde_json::Value::String(s) => serde_json::Value::String(redact(s)),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_secrets_hidden() {
        let v = serde_json::json!({"visibility_timeout": 30,
            "sentinel_kwargs": {"password": "hunter2"}, "url": "redis://:pw@h/0"});
        let out = redacted_json(&v).to_string();
        assert!(!out.contains("hunter2") && !out.contains(":pw@"), "{out}");
        assert!(out.contains("\"visibility_timeout\":30"), "{out}");
    }
}

//! Serializers: turn a decoded body into JSON according to the envelope's `content-type`.
//!
//! Every body becomes a [`serde_json::Value`] shaped like kombu's JSON would write the same Python
//! value: integers of any size stay exact, bytes become `{"__type__": "bytes"|"base64", …}` tags,
//! map keys become strings as Python's `json.dumps` writes them.

use base64::Engine;
use serde_json::{Map, Number, Value};

use super::error::DecodeErrorKind;
use super::yaml;

/// `application/json` (kombu JSON; tagged values are left as they are).
pub const JSON: &str = "application/json";
/// `application/x-msgpack`.
pub const MSGPACK: &str = "application/x-msgpack";
/// `application/x-yaml` (read with a YAML 1.1 safe loader).
pub const YAML: &str = "application/x-yaml";
/// `application/x-python-serialize`: pickle, never deserialized.
pub const PICKLE: &str = "application/x-python-serialize";

/// Deepest nesting accepted in a body (serde_json's own limit is the same).
pub const MAX_DEPTH: usize = 128;

/// Deserialize `body` by content type. Pickle is refused here too, whatever the caller accepts.
pub fn deserialize(content_type: &str, body: &[u8]) -> Result<Value, DecodeErrorKind> {
    let err = |reason: String| DecodeErrorKind::Deserialize {
        content_type: content_type.to_string(),
        reason,
    };
    match content_type {
        JSON => serde_json::from_slice(body).map_err(|e| err(e.to_string())),
        MSGPACK => from_msgpack(body),
        YAML => {
            let text = std::str::from_utf8(body).map_err(|e| err(e.to_string()))?;
            yaml::from_yaml(text)
        }
        PICKLE => Err(DecodeErrorKind::Refused {
            content_type: content_type.to_string(),
            reason: "never deserialized",
        }),
        other => Err(DecodeErrorKind::UnknownContentType(other.to_string())),
    }
}

/// The kombu JSON tag for Python `bytes`: `bytes` with the text when it is UTF-8, else `base64`.
pub fn bytes_tag(bytes: &[u8]) -> Value {
    let (kind, value) = match std::str::from_utf8(bytes) {
        Ok(text) => ("bytes", text.to_string()),
        Err(_) => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ),
    };
    let mut tag = Map::new();
    tag.insert("__type__".into(), Value::String(kind.into()));
    tag.insert("__value__".into(), Value::String(value));
    Value::Object(tag)
}

/// A finite float as a JSON number; NaN and infinities have no JSON form.
pub fn float(f: f64, content_type: &str) -> Result<Value, DecodeErrorKind> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| DecodeErrorKind::Deserialize {
            content_type: content_type.to_string(),
            reason: format!("float {f} has no JSON form"),
        })
}

fn from_msgpack(body: &[u8]) -> Result<Value, DecodeErrorKind> {
    let err = |reason: String| DecodeErrorKind::Deserialize {
        content_type: MSGPACK.to_string(),
        reason,
    };
    let mut rd = body;
    let value = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH).map_err(|e| {
        if matches!(e, rmpv::decode::Error::DepthLimitExceeded) {
            DecodeErrorKind::TooDeep(MAX_DEPTH)
        } else {
            err(e.to_string())
        }
    })?;
    if !rd.is_empty() {
        return Err(err(format!("{} bytes after the value", rd.len())));
    }
    msgpack_to_json(value)
}

fn msgpack_to_json(value: rmpv::Value) -> Result<Value, DecodeErrorKind> {
    use rmpv::Value as M;
    let err = |reason: String| DecodeErrorKind::Deserialize {
        content_type: MSGPACK.to_string(),
        reason,
    };
    Ok(match value {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => {
            if let Some(n) = i.as_i64() {
                Value::from(n)
            } else if let Some(n) = i.as_u64() {
                Value::from(n)
            } else {
                return Err(err("integer out of range".into()));
            }
        }
        M::F32(f) => float(f64::from(f), MSGPACK)?,
        M::F64(f) => float(f, MSGPACK)?,
        M::String(s) => match s.into_str() {
            Some(s) => Value::String(s),
            None => return Err(err("str is not valid UTF-8".into())),
        },
        M::Binary(b) => bytes_tag(&b),
        M::Array(items) => Value::Array(
            items
                .into_iter()
                .map(msgpack_to_json)
                .collect::<Result<_, _>>()?,
        ),
        M::Map(pairs) => {
            let mut map = Map::new();
            for (k, v) in pairs {
                map.insert(msgpack_key(k)?, msgpack_to_json(v)?);
            }
            Value::Object(map)
        }
        M::Ext(code, _) => return Err(err(format!("extension type {code} is not supported"))),
    })
}

/// A msgpack map key as Python's `json.dumps` writes a dict key.
fn msgpack_key(key: rmpv::Value) -> Result<String, DecodeErrorKind> {
    use rmpv::Value as M;
    match key {
        M::String(_) | M::Nil | M::Boolean(_) | M::Integer(_) | M::F32(_) | M::F64(_) => {
            Ok(json_key(&msgpack_to_json(key)?))
        }
        _ => Err(DecodeErrorKind::Deserialize {
            content_type: MSGPACK.to_string(),
            reason: "map key is not a string, number, boolean or nil".into(),
        }),
    }
}

/// A scalar JSON value as Python's `json.dumps` writes it when used as a dict key.
pub fn json_key(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_big_ints_and_tags() {
        let v = deserialize(
            JSON,
            br#"[[1267650600228229401496703205376], {"d": {"__type__": "decimal", "__value__": "1.10"}}, {}]"#,
        )
        .unwrap();
        assert_eq!(v[0][0].to_string(), "1267650600228229401496703205376");
        assert_eq!(v[1]["d"]["__type__"], "decimal");
    }

    #[test]
    fn msgpack_bytes_become_kombu_tags() {
        // [b"hi", b"\xff", {1: nil}] with bin types.
        let body = [0x93, 0xc4, 2, b'h', b'i', 0xc4, 1, 0xff, 0x81, 0x01, 0xc0];
        let v = deserialize(MSGPACK, &body).unwrap();
        assert_eq!(
            v[0],
            serde_json::json!({"__type__": "bytes", "__value__": "hi"})
        );
        assert_eq!(
            v[1],
            serde_json::json!({"__type__": "base64", "__value__": "/w=="})
        );
        assert_eq!(v[2], serde_json::json!({"1": null}));
    }

    #[test]
    fn msgpack_rejects_trailing_and_bad_utf8() {
        assert!(matches!(
            deserialize(MSGPACK, &[0x90, 0x90]),
            Err(DecodeErrorKind::Deserialize { .. })
        ));
        assert!(matches!(
            deserialize(MSGPACK, &[0xa1, 0xff]),
            Err(DecodeErrorKind::Deserialize { .. })
        ));
        assert!(matches!(
            deserialize(MSGPACK, &[0xdc, 0xff]),
            Err(DecodeErrorKind::Deserialize { .. })
        ));
    }

    #[test]
    fn msgpack_depth_is_limited() {
        let body = vec![0x91; 10_000];
        assert_eq!(
            deserialize(MSGPACK, &body),
            Err(DecodeErrorKind::TooDeep(MAX_DEPTH))
        );
    }

    #[test]
    fn json_depth_is_limited_without_panic() {
        let body = "[".repeat(100_000);
        assert!(deserialize(JSON, body.as_bytes()).is_err());
    }

    #[test]
    fn pickle_is_refused_and_unknown_types_named() {
        assert!(matches!(
            deserialize(PICKLE, b"\x80\x04."),
            Err(DecodeErrorKind::Refused { .. })
        ));
        assert_eq!(
            deserialize("text/plain", b"x"),
            Err(DecodeErrorKind::UnknownContentType("text/plain".into()))
        );
    }
}

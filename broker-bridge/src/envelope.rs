//! The kombu envelope: the JSON object stored as one element of a Redis queue list.
//!
//! It is kept as a JSON map (keys in producer order, integers of any size) so that a message can be
//! re-published or restored without losing anything the producer put in it. Typed accessors read
//! the fields the transport and codec need.

use serde_json::{Map, Value};

/// Why bytes are not a kombu envelope.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Not valid JSON (or not UTF-8).
    #[error("envelope is not valid JSON: {0}")]
    NotJson(String),
    /// Valid JSON, but not an object.
    #[error("envelope is not a JSON object")]
    NotObject,
    /// A required field is absent.
    #[error("envelope has no `{0}`")]
    Missing(&'static str),
    /// A field has the wrong JSON type.
    #[error("envelope field `{field}` should be {expected}")]
    WrongType {
        /// Dotted path of the field.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
    },
}

/// A parsed kombu envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    map: Map<String, Value>,
}

impl Envelope {
    /// Parse one Redis list element. Checks the shape of the fields kombu always writes:
    /// `body` (string), `properties` (object), `headers` (object when present).
    pub fn parse(raw: &[u8]) -> Result<Self, EnvelopeError> {
        let value: Value =
            serde_json::from_slice(raw).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        Self::from_value(value)
    }

    /// Build from an already parsed JSON value, with the same checks as [`Envelope::parse`].
    pub fn from_value(value: Value) -> Result<Self, EnvelopeError> {
        let Value::Object(map) = value else {
            return Err(EnvelopeError::NotObject);
        };
        match map.get("body") {
            Some(Value::String(_)) => {}
            Some(_) => {
                return Err(EnvelopeError::WrongType {
                    field: "body",
                    expected: "a string",
                })
            }
            None => return Err(EnvelopeError::Missing("body")),
        }
        match map.get("properties") {
            Some(Value::Object(_)) => {}
            Some(_) => {
                return Err(EnvelopeError::WrongType {
                    field: "properties",
                    expected: "an object",
                })
            }
            None => return Err(EnvelopeError::Missing("properties")),
        }
        match map.get("headers") {
            None | Some(Value::Object(_)) | Some(Value::Null) => {}
            Some(_) => {
                return Err(EnvelopeError::WrongType {
                    field: "headers",
                    expected: "an object",
                })
            }
        }
        Ok(Envelope { map })
    }

    /// The whole envelope as a JSON map.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// Consume into the JSON value.
    pub fn into_value(self) -> Value {
        Value::Object(self.map)
    }

    /// Serialize as kombu does (compact separators are fine for kombu's `loads`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.map).expect("a JSON map always serializes")
    }

    /// The body as stored (base64 text when `properties.body_encoding == "base64"`).
    pub fn body(&self) -> &str {
        self.map
            .get("body")
            .and_then(Value::as_str)
            .expect("checked by parse")
    }

    /// `content-type`, e.g. `application/json`.
    pub fn content_type(&self) -> Option<&str> {
        self.map.get("content-type").and_then(Value::as_str)
    }

    /// `content-encoding`, e.g. `utf-8` or `binary`.
    pub fn content_encoding(&self) -> Option<&str> {
        self.map.get("content-encoding").and_then(Value::as_str)
    }

    /// The headers object (empty for protocol 1).
    pub fn headers(&self) -> Option<&Map<String, Value>> {
        self.map.get("headers").and_then(Value::as_object)
    }

    /// The properties object.
    pub fn properties(&self) -> &Map<String, Value> {
        self.map
            .get("properties")
            .and_then(Value::as_object)
            .expect("checked by parse")
    }

    fn property_str(&self, key: &str) -> Option<&str> {
        self.properties().get(key).and_then(Value::as_str)
    }

    /// `properties.delivery_tag`: the ack-emulation id (a UUID made by the producer).
    pub fn delivery_tag(&self) -> Option<&str> {
        self.property_str("delivery_tag")
    }

    /// `properties.body_encoding` (`base64` for every Celery message).
    pub fn body_encoding(&self) -> Option<&str> {
        self.property_str("body_encoding")
    }

    /// `properties.priority` (0–255 as stored; Celery uses 0–9). `None` when absent or not a small integer.
    pub fn priority(&self) -> Option<u8> {
        self.properties()
            .get("priority")
            .and_then(Value::as_u64)
            .and_then(|p| u8::try_from(p).ok())
    }

    fn delivery_info(&self) -> Option<&Map<String, Value>> {
        self.properties()
            .get("delivery_info")
            .and_then(Value::as_object)
    }

    /// `properties.delivery_info.exchange` (`""` for the default exchange).
    pub fn exchange(&self) -> Option<&str> {
        self.delivery_info()
            .and_then(|d| d.get("exchange"))
            .and_then(Value::as_str)
    }

    /// `properties.delivery_info.routing_key` (the queue name for the default exchange).
    pub fn routing_key(&self) -> Option<&str> {
        self.delivery_info()
            .and_then(|d| d.get("routing_key"))
            .and_then(Value::as_str)
    }

    /// Whether kombu marked the message as redelivered (restored from `unacked`).
    pub fn redelivered(&self) -> bool {
        let flag = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(false);
        flag(self.headers().and_then(|h| h.get("redelivered")))
            || flag(self.delivery_info().and_then(|d| d.get("redelivered")))
    }

    /// Mark as redelivered the way kombu does on restore: `headers.redelivered` and
    /// `properties.delivery_info.redelivered` both set to `true`.
    pub fn mark_redelivered(&mut self) {
        let headers = self
            .map
            .entry("headers")
            .or_insert_with(|| Value::Object(Map::new()));
        if !headers.is_object() {
            *headers = Value::Object(Map::new());
        }
        headers
            .as_object_mut()
            .expect("made an object above")
            .insert("redelivered".into(), Value::Bool(true));
        let props = self
            .map
            .get_mut("properties")
            .and_then(Value::as_object_mut)
            .expect("checked by parse");
        let info = props
            .entry("delivery_info")
            .or_insert_with(|| Value::Object(Map::new()));
        if !info.is_object() {
            *info = Value::Object(Map::new());
        }
        info.as_object_mut()
            .expect("made an object above")
            .insert("redelivered".into(), Value::Bool(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"body": "W1tdLCB7fSwge31d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"task": "t", "big": 1267650600228229401496703205376}, "properties": {"priority": 3, "delivery_tag": "tag-1", "body_encoding": "base64", "delivery_info": {"exchange": "", "routing_key": "celery"}}, "extra": [1.0e+300, -0.0]}"#;

    #[test]
    fn reads_fields_and_keeps_everything() {
        let env = Envelope::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(env.delivery_tag(), Some("tag-1"));
        assert_eq!(env.priority(), Some(3));
        assert_eq!(env.routing_key(), Some("celery"));
        assert_eq!(env.exchange(), Some(""));
        assert!(!env.redelivered());
        let out = env.to_json();
        assert!(out.contains("1267650600228229401496703205376"));
        assert!(out.contains("1.0e+300") && out.contains("-0.0"));
        assert!(out.find("\"body\"").unwrap() < out.find("\"extra\"").unwrap());
    }

    #[test]
    fn mark_redelivered_sets_both_flags() {
        let mut env = Envelope::parse(SAMPLE.as_bytes()).unwrap();
        env.mark_redelivered();
        assert!(env.redelivered());
        let v = env.into_value();
        assert_eq!(v["headers"]["redelivered"], Value::Bool(true));
        assert_eq!(
            v["properties"]["delivery_info"]["redelivered"],
            Value::Bool(true)
        );
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(matches!(
            Envelope::parse(b"not json"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert_eq!(Envelope::parse(b"[1]"), Err(EnvelopeError::NotObject));
        assert_eq!(
            Envelope::parse(br#"{"properties": {}}"#),
            Err(EnvelopeError::Missing("body"))
        );
        assert_eq!(
            Envelope::parse(br#"{"body": 1, "properties": {}}"#),
            Err(EnvelopeError::WrongType {
                field: "body",
                expected: "a string"
            })
        );
        assert_eq!(
            Envelope::parse(br#"{"body": ""}"#),
            Err(EnvelopeError::Missing("properties"))
        );
    }
}

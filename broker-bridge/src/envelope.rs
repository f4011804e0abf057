//! The kombu envelope: the JSON object stored as one element of a Redis queue list.
//!
//! It is kept as a JSON map (keys in producer order, integers of any size) so that a message can be
//! re-published or restored without losing anything the producer put in it. Typed accessors read
//! the fields the transport and codec need.

use std::borrow::Cow;

use serde::Deserialize;
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

/// The fields of an envelope that decoding reads, borrowed from the raw element where possible.
///
/// [`EnvelopeView::parse`] reads them straight from the bytes into typed fields (the body is not
/// copied, and `headers` is read into `H`, a JSON map unless the reader asks for its own shape)
/// and falls back to [`Envelope::parse`] for any element it does not read exactly as that would,
/// so both give the same fields and the same errors.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvelopeView<'a, H = Map<String, Value>> {
    /// The body as stored (see [`Envelope::body`]).
    pub body: Cow<'a, str>,
    /// `content-type`.
    pub content_type: Option<Cow<'a, str>>,
    /// The headers object (`None` when absent or null).
    pub headers: Option<HeadersRef<'a, H>>,
    /// `properties.body_encoding`.
    pub body_encoding: Option<Cow<'a, str>>,
    /// `properties.delivery_tag`.
    pub delivery_tag: Option<Cow<'a, str>>,
    /// `properties.priority` (see [`Envelope::priority`]).
    pub priority: Option<u8>,
    /// `properties.delivery_info.exchange`.
    pub exchange: Option<Cow<'a, str>>,
    /// `properties.delivery_info.routing_key`.
    pub routing_key: Option<Cow<'a, str>>,
    /// `properties.reply_to`.
    pub reply_to: Option<Cow<'a, str>>,
    /// `properties.correlation_id`.
    pub correlation_id: Option<Cow<'a, str>>,
    /// See [`Envelope::redelivered`].
    pub redelivered: bool,
}

/// An envelope's headers object as an [`EnvelopeView`] holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadersRef<'a, H> {
    /// Read by the typed reader.
    Read(H),
    /// The parsed envelope's map (when [`Envelope::parse`] read the element).
    Map(&'a Map<String, Value>),
}

/// What the typed reader of [`EnvelopeView::parse`] reads a `headers` object into: a type that
/// deserializes from a JSON object (and fails on anything else) and tells the `redelivered`
/// header as the map would (the last one when it is repeated).
pub trait HeadersObject<'de>: Deserialize<'de> {
    /// The `redelivered` header when it is a boolean.
    fn redelivered(&self) -> Option<bool>;
}

impl HeadersObject<'_> for Map<String, Value> {
    fn redelivered(&self) -> Option<bool> {
        self.get("redelivered").and_then(Value::as_bool)
    }
}

/// Where [`EnvelopeView::parse`] got its fields from.
pub enum Parsed<'a, H = Map<String, Value>> {
    /// Read straight from the raw element.
    View(EnvelopeView<'a, H>),
    /// Read by [`Envelope::parse`]; view it with [`EnvelopeView::of`].
    Envelope(Envelope),
}

/// Deepest nesting [`Envelope::parse`] accepts (serde_json's limit); the typed reader skips
/// fields it does not need without counting depth, so deeper elements take the slow path.
const MAX_BRACKETS: usize = 127;

impl<'a, H: HeadersObject<'a>> EnvelopeView<'a, H> {
    /// Read the fields from one raw element, with the result and errors of [`Envelope::parse`].
    pub fn parse(raw: &'a [u8]) -> Result<Parsed<'a, H>, EnvelopeError> {
        match Self::parse_typed(raw) {
            Some(view) => Ok(Parsed::View(view)),
            None => Envelope::parse(raw).map(Parsed::Envelope),
        }
    }

    /// The typed reader alone: `None` whenever it might not read `raw` exactly as
    /// [`Envelope::parse`] does (that one then decides, and words any error).
    fn parse_typed(raw: &'a [u8]) -> Option<Self> {
        // Skipped fields are checked for syntax but not for lone surrogates in `\u` escapes
        // nor for depth, both of which make `Envelope::parse` fail.
        let text = std::str::from_utf8(raw).ok()?;
        if memchr::memmem::find(raw, b"\\u").is_some()
            || memchr::memchr2_iter(b'[', b'{', raw)
                .take(MAX_BRACKETS + 1)
                .count()
                > MAX_BRACKETS
        {
            return None;
        }
        let wire: WireEnvelope<'a, H> = serde_json::from_str(text).ok()?;
        let flag = wire
            .headers
            .as_ref()
            .and_then(H::redelivered)
            .unwrap_or(false);
        let headers = wire.headers.map(HeadersRef::Read);
        let props = wire.properties;
        let info = props.delivery_info.unwrap_or_default();
        Some(EnvelopeView {
            body: wire.body.0,
            content_type: wire.content_type.map(|s| s.0),
            headers,
            body_encoding: props.body_encoding.map(|s| s.0),
            delivery_tag: props.delivery_tag.map(|s| s.0),
            priority: props.priority,
            exchange: info.exchange.map(|s| s.0),
            routing_key: info.routing_key.map(|s| s.0),
            reply_to: props.reply_to.map(|s| s.0),
            correlation_id: props.correlation_id.map(|s| s.0),
            redelivered: flag || info.redelivered.unwrap_or(false),
        })
    }

    /// View the fields of a parsed [`Envelope`].
    pub fn of(env: &'a Envelope) -> Self {
        let prop = |k: &str| {
            env.properties()
                .get(k)
                .and_then(Value::as_str)
                .map(Cow::Borrowed)
        };
        EnvelopeView {
            body: Cow::Borrowed(env.body()),
            content_type: env.content_type().map(Cow::Borrowed),
            headers: env.headers().map(HeadersRef::Map),
            body_encoding: env.body_encoding().map(Cow::Borrowed),
            delivery_tag: env.delivery_tag().map(Cow::Borrowed),
            priority: env.priority(),
            exchange: env.exchange().map(Cow::Borrowed),
            routing_key: env.routing_key().map(Cow::Borrowed),
            reply_to: prop("reply_to"),
            correlation_id: prop("correlation_id"),
            redelivered: env.redelivered(),
        }
    }
}

/// A string field, borrowed unless it has escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The top level as the typed reader sees it: a missing, duplicated or mistyped field is an error
/// (and sends the element to [`Envelope::parse`]); other fields are skipped.
#[derive(Deserialize)]
struct WireEnvelope<'a, H> {
    #[serde(borrow)]
    body: Text<'a>,
    #[serde(rename = "content-type", borrow, default)]
    content_type: Option<Text<'a>>,
    #[serde(default = "no_headers")]
    headers: Option<H>,
    #[serde(borrow)]
    properties: WireProperties<'a>,
}

/// An absent `headers` (a `default` that asks nothing of the headers type).
fn no_headers<H>() -> Option<H> {
    None
}

#[derive(Deserialize)]
struct WireProperties<'a> {
    #[serde(borrow, default)]
    body_encoding: Option<Text<'a>>,
    #[serde(borrow, default)]
    delivery_tag: Option<Text<'a>>,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(borrow, default)]
    delivery_info: Option<WireDeliveryInfo<'a>>,
    #[serde(borrow, default)]
    reply_to: Option<Text<'a>>,
    #[serde(borrow, default)]
    correlation_id: Option<Text<'a>>,
}

#[derive(Deserialize, Default)]
struct WireDeliveryInfo<'a> {
    #[serde(borrow, default)]
    exchange: Option<Text<'a>>,
    #[serde(borrow, default)]
    routing_key: Option<Text<'a>>,
    #[serde(default)]
    redelivered: Option<bool>,
}

/// The text of an envelope's `properties` object when it is the envelope's last member, as kombu
/// writes it: from the last `"properties":` to just before the closing `}`. Reading that text
/// instead of the whole envelope skips the body and headers. A key of that name inside a string
/// is escaped, one nested deeper leaves unbalanced brackets, and a later member leaves trailing
/// text, so when the returned text parses as exactly one JSON value it is the top-level
/// `properties` (the last one when it is duplicated, an element [`Envelope::parse`] refuses);
/// otherwise the caller reads the whole envelope. `None` when the element does not have that
/// shape.
pub fn trailing_properties(raw: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"properties\":";
    if raw.first() != Some(&b'{') || raw.last() != Some(&b'}') {
        return None;
    }
    // Quote by quote from the end: the first that starts the key is its last occurrence.
    let mut end = raw.len();
    while let Some(at) = raw[..end].iter().rposition(|&b| b == b'"') {
        if raw[at..].starts_with(KEY) {
            return Some(&raw[at + KEY.len()..raw.len() - 1]);
        }
        end = at;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The view with the headers read into a JSON map.
    type View<'a> = EnvelopeView<'a>;

    #[test]
    fn trailing_properties_is_the_top_level_member_or_nothing_parseable() {
        let object = |raw: &str| {
            trailing_properties(raw.as_bytes())
                .and_then(|t| serde_json::from_slice::<Map<String, Value>>(t).ok())
        };
        let kombu = r#"{"body": "e30=", "headers": {"properties": {"priority": 1}}, "properties": {"priority": 3, "delivery_info": {"routing_key": "q"}}}"#;
        assert_eq!(object(kombu).unwrap()["priority"], 3);
        assert_eq!(object(SAMPLE), None, "not the last member");
        let nested = r#"{"properties": {"priority": 3}, "headers": {"x": {"properties": {}}}}"#;
        assert_eq!(object(nested), None);
        let listed = r#"{"properties": {"priority": 3}, "headers": [{"properties": {}}]}"#;
        assert_eq!(object(listed), None);
        let quoted = r#"{"properties": {"priority": 3, "x": "\"properties\": {}"}}"#;
        assert_eq!(object(quoted).unwrap()["priority"], 3);
        let twice = r#"{"properties": {"priority": 1}, "properties": {"priority": 2}}"#;
        assert_eq!(object(twice).unwrap()["priority"], 2);
        assert!(Envelope::parse(twice.as_bytes()).is_err(), "never decoded");
        assert_eq!(trailing_properties(b" {\"properties\": {}}"), None);
    }

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

    /// Both readers must give the same fields, or the typed one must step aside.
    fn same_as_slow(raw: &[u8]) {
        let slow = Envelope::parse(raw);
        match View::parse_typed(raw) {
            Some(fast) => {
                let env = slow.unwrap_or_else(|e| panic!("typed read {raw:?}, slow failed: {e}"));
                let text = String::from_utf8_lossy(raw);
                let map = |v: &EnvelopeView<'_>| match &v.headers {
                    Some(HeadersRef::Read(map)) => Some(map.clone()),
                    Some(HeadersRef::Map(map)) => Some((*map).clone()),
                    None => None,
                };
                let (mut fast, mut slow) = (fast, View::of(&env));
                assert_eq!(map(&fast), map(&slow), "{text}");
                (fast.headers, slow.headers) = (None, None);
                assert_eq!(fast, slow, "{text}");
            }
            None => match (View::parse(raw), slow) {
                (Ok(Parsed::Envelope(a)), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a, b),
                _ => panic!("parse and Envelope::parse disagree"),
            },
        }
    }

    #[test]
    fn typed_reader_matches_the_json_map() {
        let kombu = r#"{"body": "W1sxLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "demo.add", "id": "1", "stamps": {"a": [1, {"b": null}]}}, "properties": {"correlation_id": "1", "reply_to": "r", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "t"}}"#;
        assert!(View::parse_typed(kombu.as_bytes()).is_some());
        let restored = kombu.replace(r#""id": "1""#, r#""id": "1", "redelivered": true"#);
        assert!(View::parse_typed(restored.as_bytes()).unwrap().redelivered);
        assert!(View::parse_typed(SAMPLE.as_bytes()).is_some());
        let deep = format!(
            r#"{{"body": "", "properties": {{}}, "x": {}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let cases: Vec<&[u8]> = vec![
            kombu.as_bytes(),
            restored.as_bytes(),
            br#"{"body": "", "properties": {}, "headers": {"x": {"redelivered": true}, "y": "\"redelivered\""}}"#,
            br#"{"body": "", "properties": {}, "headers": {"redelivered": false, "redelivered": true}}"#,
            br#"{"body": "", "properties": {}, "headers": {"task": "a", "task": "b", "n": 1e400}}"#,
            br#"{"body": "", "properties": {}, "headers": "x"}"#,
            SAMPLE.as_bytes(),
            deep.as_bytes(),
            br#"{"body": "a\"b", "properties": {"delivery_tag": "t\/1"}}"#,
            br#"{"body": "", "properties": {"priority": 300}}"#,
            br#"{"body": "", "properties": {"priority": -1, "delivery_info": "x"}}"#,
            br#"{"body": "", "properties": {"priority": 3.0, "delivery_info": null}}"#,
            br#"{"body": "", "properties": {"delivery_info": {"redelivered": 1}}}"#,
            br#"{"body": "", "properties": {"delivery_info": {"redelivered": true}}}"#,
            br#"{"body": "a", "body": "b", "properties": {}}"#,
            br#"{"body": "", "properties": {}, "headers": null}"#,
            br#"{"body": "", "properties": {}, "headers": [1]}"#,
            br#"{"body": "", "properties": {}, "headers": {"redelivered": "yes"}}"#,
            br#"{"body": "", "properties": {}, "content-type": 5}"#,
            br#"{"body": "", "properties": {}, "x": "\ud800"}"#,
            br#"{"body": "", "properties": {}, "x": NaN}"#,
            br#"{"body": "", "properties": {}, "x": 1e999999}"#,
            br#"{"b\u006fdy": "", "properties": {}}"#,
            b"{\"body\": \"\", \"properties\": {}, \"x\": \"\xff\"}",
            b"{\"body\": \"\", \"properties\": {}, \"x\": \"\x01\"}",
            br#"{"body": "", "properties": {}} x"#,
            br#"{"body": ""}"#,
            br#"[1]"#,
            br#"7"#,
            b"not json",
        ];
        for raw in cases {
            same_as_slow(raw);
        }
    }
}

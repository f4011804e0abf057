//! Remote control ("pidbox") as kombu's `Mailbox` speaks it on Redis.
//!
//! Requests are broadcast on the fanout exchange `<namespace>.pidbox` (channel `/0.celery.pidbox`);
//! a reply `{"<hostname>": <value>}` goes to the direct exchange named in the request's
//! `reply_to` (`reply.celery.pidbox`) with its routing key (the caller's oid), i.e. `LPUSH` to the
//! caller's reply queue `<oid>.reply.celery.pidbox`, with the request's `ticket` in the headers.

use base64::Engine;
use serde_json::{Map, Value};

use crate::codec::content::{deserialize, JSON};
use crate::envelope::Envelope;
use crate::signing::{BodySerializer, Signatures, SigningError, Verifier, AUTH};
use crate::transport::{Broker, Result as TransportResult, TransportError};

/// What a mailbox takes: its content types (`None`: any) and the longest message.
#[derive(Debug, Clone)]
pub struct Accept {
    /// Accepted MIME types (e.g. `application/json`); `None` accepts any.
    pub content_types: Option<Vec<String>>,
    /// The longest raw message, in bytes.
    pub max_bytes: usize,
}

impl Default for Accept {
    /// Any content type, any length.
    fn default() -> Self {
        Accept {
            content_types: None,
            max_bytes: usize::MAX,
        }
    }
}

/// Why a pidbox message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PidboxError {
    /// Not a kombu envelope.
    #[error("not a kombu envelope: {0}")]
    Envelope(#[from] crate::envelope::EnvelopeError),
    /// The body is not valid base64 or not valid for its content type.
    #[error("bad body: {0}")]
    Body(String),
    /// The body is not a request object.
    #[error("not a control request: {0}")]
    Shape(&'static str),
    /// Unsigned while signatures are required, or signed and failing the check.
    #[error("refused: {0}")]
    Refused(String),
}

/// Why a control message or an event could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Redis failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The body could not be signed.
    #[error(transparent)]
    Signing(#[from] SigningError),
}

/// The fanout exchange of requests for a control namespace (`celery` → `celery.pidbox`).
pub fn exchange(namespace: &str) -> String {
    format!("{namespace}.pidbox")
}

/// Where a reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The reply exchange (`reply.celery.pidbox`).
    pub exchange: String,
    /// The caller's oid.
    pub routing_key: String,
}

/// One control request.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlRequest {
    /// The command (`ping`, `revoke`, …).
    pub method: String,
    /// Keyword arguments.
    pub arguments: Map<String, Value>,
    /// Node names addressed; `None` = every node.
    pub destination: Option<Vec<String>>,
    /// Node-name pattern, used when there is no destination.
    pub pattern: Option<String>,
    /// `glob` or `pcre`.
    pub matcher: Option<String>,
    /// Present when the caller waits for replies.
    pub ticket: Option<String>,
    /// Present when the caller waits for replies.
    pub reply_to: Option<ReplyTo>,
    /// The sender's Lamport clock (envelope header `clock`).
    pub clock: u64,
}

/// Decode an envelope body (base64 when `body_encoding` says so) by its content type.
pub fn decode_body(envelope: &Envelope) -> Result<Value, PidboxError> {
    let content_type = envelope.content_type().unwrap_or("application/json");
    deserialize(content_type, &body_bytes(envelope)?).map_err(|e| PidboxError::Body(e.to_string()))
}

/// The body's bytes: base64-decoded when `body_encoding` says so.
fn body_bytes(envelope: &Envelope) -> Result<Vec<u8>, PidboxError> {
    let body = envelope.body();
    if envelope.body_encoding() == Some("base64") {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| PidboxError::Body(e.to_string()))
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

/// Decode an envelope body, checking signatures as kombu's `Mailbox` with an `accept` list
/// does: a signed (`auth`) body must pass `verifier` (refused without one); an unsigned one is
/// decoded by [`decode_body`] only when `allow_unsigned` (the accept list has a plain type).
pub fn decode_body_checked(
    envelope: &Envelope,
    verifier: Option<&Verifier>,
    allow_unsigned: bool,
) -> Result<Value, PidboxError> {
    if envelope.content_type() != Some(AUTH) {
        if allow_unsigned {
            return decode_body(envelope);
        }
        return Err(PidboxError::Refused(format!(
            "unsigned ({}) while only signed messages are accepted",
            envelope.content_type().unwrap_or("no content type")
        )));
    }
    let verifier = verifier.ok_or_else(|| {
        PidboxError::Refused("signed, but no certificate store is configured".into())
    })?;
    let opened = verifier
        .open(&body_bytes(envelope)?)
        .map_err(|e| PidboxError::Refused(e.to_string()))?;
    opened.value().map_err(|e| match e {
        e @ crate::codec::DecodeErrorKind::Refused { .. } => PidboxError::Refused(e.to_string()),
        e => PidboxError::Body(e.to_string()),
    })
}

fn opt_string(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_string)
}

impl ControlRequest {
    /// Parse a message received on the pidbox channel (unsigned only).
    pub fn parse(raw: &[u8]) -> Result<Self, PidboxError> {
        Self::parse_checked(raw, None, true)
    }

    /// Parse a message received on the pidbox channel, signed or not as
    /// [`decode_body_checked`] allows.
    pub fn parse_checked(
        raw: &[u8],
        verifier: Option<&Verifier>,
        allow_unsigned: bool,
    ) -> Result<Self, PidboxError> {
        Self::parse_accepted(raw, verifier, allow_unsigned, &Accept::default())
    }

    /// [`ControlRequest::parse_checked`] for a worker's mailbox: a message longer than
    /// `accept.max_bytes`, or of a content type not in `accept.content_types`, is refused before
    /// its body is decoded (kombu's `Mailbox(accept=accept_content)`).
    pub fn parse_accepted(
        raw: &[u8],
        verifier: Option<&Verifier>,
        allow_unsigned: bool,
        accept: &Accept,
    ) -> Result<Self, PidboxError> {
        if raw.len() > accept.max_bytes {
            return Err(PidboxError::Refused(format!(
                "message is {} bytes, over the limit of {}",
                raw.len(),
                accept.max_bytes
            )));
        }
        let envelope = Envelope::parse(raw)?;
        if let Some(types) = &accept.content_types {
            let content_type = envelope.content_type().unwrap_or(JSON);
            if !types.iter().any(|t| t == content_type) {
                return Err(PidboxError::Refused(format!(
                    "content type {content_type} is not in the accept list"
                )));
            }
        }
        let clock = envelope
            .headers()
            .and_then(|h| h.get("clock"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let body = decode_body_checked(&envelope, verifier, allow_unsigned)?;
        let Value::Object(body) = body else {
            return Err(PidboxError::Shape("the body is not an object"));
        };
        let method = opt_string(body.get("method")).ok_or(PidboxError::Shape("no `method`"))?;
        let arguments = match body.get("arguments") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(PidboxError::Shape("`arguments` is not an object")),
        };
        let destination = match body.get("destination") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.iter().filter_map(|v| opt_string(Some(v))).collect()),
            Some(Value::String(s)) => Some(vec![s.clone()]),
            Some(_) => return Err(PidboxError::Shape("`destination` is not a list")),
        };
        let reply_to = body
            .get("reply_to")
            .and_then(Value::as_object)
            .and_then(|r| {
                Some(ReplyTo {
                    exchange: opt_string(r.get("exchange"))?,
                    routing_key: opt_string(r.get("routing_key"))?,
                })
            });
        Ok(ControlRequest {
            method,
            arguments,
            destination,
            pattern: opt_string(body.get("pattern")),
            matcher: opt_string(body.get("matcher")),
            ticket: opt_string(body.get("ticket")),
            reply_to,
            clock,
        })
    }

    /// Whether the node `hostname` must handle this request (kombu's `Node.handle_message`):
    /// listed in `destination`, else matching `pattern` (glob; `pcre` is unsupported and never
    /// matches), else everyone.
    pub fn is_for(&self, hostname: &str) -> bool {
        if let Some(dest) = self.destination.as_ref().filter(|d| !d.is_empty()) {
            return dest.iter().any(|d| d == hostname);
        }
        match (&self.pattern, self.matcher.as_deref()) {
            (Some(p), Some("glob")) => glob_match(p, hostname),
            (Some(_), Some(_)) => false,
            _ => true,
        }
    }

    /// A string argument.
    pub fn arg_str(&self, key: &str) -> Option<&str> {
        self.arguments.get(key).and_then(Value::as_str)
    }

    /// A boolean argument (`false` when absent or null).
    pub fn arg_bool(&self, key: &str) -> bool {
        self.arguments
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// Shell-style glob (`*`, `?`) as Python's `fnmatch` reads node names.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A JSON envelope as kombu's producer writes it: base64 body, `utf-8`, priority 0.
pub fn json_envelope(body: &Value, headers: Map<String, Value>, delivery_mode: u8) -> Envelope {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    envelope_around(JSON, &bytes, headers, delivery_mode)
}

/// As [`json_envelope`], the body written by `serializer` (JSON, or signed).
pub fn body_envelope(
    body: &Value,
    headers: Map<String, Value>,
    delivery_mode: u8,
    serializer: &BodySerializer,
) -> Result<Envelope, SigningError> {
    let body = serializer.serialize(serde_json::to_vec(body).unwrap_or_default())?;
    Ok(envelope_around(
        body.content_type,
        &body.body,
        headers,
        delivery_mode,
    ))
}

fn envelope_around(
    content_type: &str,
    bytes: &[u8],
    headers: Map<String, Value>,
    delivery_mode: u8,
) -> Envelope {
    let mut props = Map::new();
    props.insert("delivery_mode".into(), delivery_mode.into());
    props.insert("delivery_info".into(), Value::Object(Map::new()));
    props.insert("priority".into(), 0.into());
    props.insert("body_encoding".into(), "base64".into());
    props.insert(
        "delivery_tag".into(),
        uuid::Uuid::new_v4().to_string().into(),
    );
    let mut env = Map::new();
    env.insert(
        "body".into(),
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into(),
    );
    env.insert("content-encoding".into(), "utf-8".into());
    env.insert("content-type".into(), content_type.into());
    env.insert("headers".into(), Value::Object(headers));
    env.insert("properties".into(), Value::Object(props));
    Envelope::from_value(Value::Object(env)).expect("built with a string body and properties")
}

/// The reply envelope: body `{hostname: reply}`, headers `{ticket, clock}`, transient.
pub fn reply_envelope(
    hostname: &str,
    reply: Value,
    ticket: &str,
    clock: u64,
    serializer: &BodySerializer,
) -> Result<Envelope, SigningError> {
    let mut body = Map::new();
    body.insert(hostname.into(), reply);
    let mut headers = Map::new();
    headers.insert("ticket".into(), ticket.into());
    headers.insert("clock".into(), clock.into());
    body_envelope(&Value::Object(body), headers, 1, serializer)
}

/// Send `reply` to the caller of `request` (nothing when it asked for no reply). A caller that
/// has gone (its reply binding removed) gets nothing, as with kombu.
pub async fn send_reply(
    broker: &Broker,
    request: &ControlRequest,
    hostname: &str,
    reply: Value,
    clock: u64,
    serializer: &BodySerializer,
) -> Result<(), SendError> {
    let (Some(reply_to), Some(ticket)) = (&request.reply_to, &request.ticket) else {
        return Ok(());
    };
    let envelope = reply_envelope(hostname, reply, ticket, clock, serializer)?;
    broker
        .publish(&envelope, &reply_to.exchange, &reply_to.routing_key)
        .await?;
    Ok(())
}

/// The reply exchange of a control namespace (`celery` → `reply.celery.pidbox`).
pub fn reply_exchange(namespace: &str) -> String {
    format!("reply.{namespace}.pidbox")
}

/// Broadcast `method` to every node without asking for replies, as Celery's
/// `app.control.broadcast(..., reply=False)` does (`celery control revoke`, `AsyncResult.revoke`):
/// body `{method, arguments, destination: null, pattern: null, matcher: null}`, headers `clock`
/// and `expires` (now + Celery's default timeout of 1 s, in epoch seconds). Returns how many
/// subscribers received it.
pub async fn broadcast(
    broker: &Broker,
    namespace: &str,
    method: &str,
    arguments: Map<String, Value>,
    clock: u64,
    serializer: &BodySerializer,
) -> Result<u64, SendError> {
    let body = serde_json::json!({
        "method": method, "arguments": arguments, "destination": null, "pattern": null,
        "matcher": null,
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut headers = Map::new();
    headers.insert("clock".into(), clock.into());
    headers.insert("expires".into(), (now + 1.0).into());
    let request = body_envelope(&body, headers, 2, serializer)?;
    Ok(broker
        .publish_fanout(&request, &exchange(namespace), "")
        .await?)
}

/// Broadcast `method` to every node as kombu's `Mailbox._broadcast` with `reply=True` does, and
/// collect the replies that arrive within `timeout`: a temporary reply queue
/// `<oid>.reply.<namespace>.pidbox` is bound, the request published on the pidbox channel, the
/// queue drained until the deadline, then the queue and its binding removed. Each reply is the
/// `{hostname: value}` object a node sent. The request is written by `signatures.serializer`;
/// replies are read as [`decode_body_checked`] allows, the others ignored.
pub async fn broadcast_and_collect(
    broker: &Broker,
    namespace: &str,
    method: &str,
    arguments: Map<String, Value>,
    clock: u64,
    timeout: std::time::Duration,
    signatures: Signatures<'_>,
) -> Result<Vec<Map<String, Value>>, SendError> {
    let oid = uuid::Uuid::new_v4().to_string();
    let ticket = uuid::Uuid::new_v4().to_string();
    let reply_exchange = reply_exchange(namespace);
    let queue = format!("{oid}.{reply_exchange}");
    let binding = crate::transport::Binding {
        exchange: reply_exchange.clone(),
        routing_key: oid.clone(),
        queue: queue.clone(),
    };
    broker.bind_temporary(&binding).await?;
    let body = serde_json::json!({
        "method": method, "arguments": arguments, "destination": null, "pattern": null,
        "matcher": null, "ticket": ticket,
        "reply_to": {"exchange": reply_exchange, "routing_key": oid},
    });
    let mut headers = Map::new();
    headers.insert("clock".into(), clock.into());
    headers.insert("expires".into(), 0.into());
    let request = body_envelope(&body, headers, 2, signatures.serializer)?;
    let collected: TransportResult<Vec<Map<String, Value>>> = async {
        let mut waiter = broker.list_waiter().await?;
        broker
            .publish_fanout(&request, &exchange(namespace), "")
            .await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut replies = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            // `None`: this wait ended (it may be shorter than `left`); the loop checks the deadline.
            let Some(raw) = waiter.pop(&queue, left).await? else {
                continue;
            };
            let Ok(envelope) = Envelope::parse(&raw) else {
                continue;
            };
            let ours = envelope
                .headers()
                .and_then(|h| h.get("ticket"))
                .and_then(Value::as_str)
                == Some(ticket.as_str());
            if let (true, Ok(Value::Object(reply))) = (
                ours,
                decode_body_checked(&envelope, signatures.verifier, signatures.allow_unsigned),
            ) {
                replies.push(reply);
            }
        }
        Ok(replies)
    }
    .await;
    let cleanup = broker.unbind_temporary(&binding).await;
    let replies = collected?;
    cleanup?;
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::content::YAML;

    fn request(body: Value) -> Vec<u8> {
        let mut headers = Map::new();
        headers.insert("clock".into(), 7.into());
        json_envelope(&body, headers, 2).to_json().into_bytes()
    }

    #[test]
    fn signatures_are_required_when_a_store_is_set() {
        use crate::signing::test_keys::{signer, verifier};
        let body = serde_json::json!({"method": "ping", "arguments": {}});
        let auth = BodySerializer::Auth(std::sync::Arc::new(signer()));
        let signed = body_envelope(&body, Map::new(), 2, &auth)
            .unwrap()
            .to_json()
            .into_bytes();
        let ping = ControlRequest::parse_checked(&signed, Some(&verifier()), false).unwrap();
        assert_eq!(ping.method, "ping");
        assert!(matches!(
            ControlRequest::parse(&signed),
            Err(PidboxError::Refused(_))
        ));
        let unsigned = request(body);
        let refused =
            ControlRequest::parse_checked(&unsigned, Some(&verifier()), false).unwrap_err();
        assert!(refused.to_string().contains("unsigned"), "{refused}");
        assert!(ControlRequest::parse_checked(&unsigned, Some(&verifier()), true).is_ok());
    }

    #[test]
    fn the_accept_list_and_size_cap_are_honoured() {
        let body = serde_json::json!({"method": "ping", "arguments": {}});
        let json = request(body.clone());
        let mut yaml: Value = serde_json::from_slice(&json).unwrap();
        yaml["content-type"] = YAML.into();
        yaml["body"] = base64::engine::general_purpose::STANDARD
            .encode("method: ping\narguments: {}\n")
            .into();
        let yaml = serde_json::to_vec(&yaml).unwrap();
        let accept = Accept {
            content_types: Some(vec![JSON.to_string()]),
            max_bytes: 1024,
        };
        assert!(ControlRequest::parse_accepted(&json, None, true, &accept).is_ok());
        let e = ControlRequest::parse_accepted(&yaml, None, true, &accept).unwrap_err();
        assert!(e.to_string().contains("accept list"), "{e}");
        assert!(ControlRequest::parse_checked(&yaml, None, true).is_ok());
        let small = Accept {
            max_bytes: json.len() - 1,
            ..accept
        };
        let e = ControlRequest::parse_accepted(&json, None, true, &small).unwrap_err();
        assert!(e.to_string().contains("over the limit"), "{e}");
    }

    #[test]
    fn parses_a_ping_with_reply_to() {
        let raw = request(serde_json::json!({
            "method": "ping", "arguments": {}, "destination": null, "pattern": null,
            "matcher": null, "ticket": "t-1",
            "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "oid-1"}
        }));
        let r = ControlRequest::parse(&raw).expect("parses");
        assert_eq!(r.method, "ping");
        assert_eq!(r.ticket.as_deref(), Some("t-1"));
        assert_eq!(
            r.reply_to.as_ref().map(|r| r.routing_key.as_str()),
            Some("oid-1")
        );
        assert_eq!(r.clock, 7);
        assert!(r.is_for("a@h"));
    }

    #[test]
    fn destination_and_glob_select_nodes() {
        let raw = request(serde_json::json!({"method": "ping", "destination": ["a@h"]}));
        let r = ControlRequest::parse(&raw).expect("parses");
        assert!(r.is_for("a@h"));
        assert!(!r.is_for("b@h"));
        let raw =
            request(serde_json::json!({"method": "ping", "pattern": "cel*@h?", "matcher": "glob"}));
        let r = ControlRequest::parse(&raw).expect("parses");
        assert!(r.is_for("celeriac@h1"));
        assert!(!r.is_for("worker@h1"));
    }

    #[test]
    fn bad_requests_are_errors() {
        assert!(ControlRequest::parse(b"nope").is_err());
        assert!(ControlRequest::parse(&request(serde_json::json!([1]))).is_err());
        assert!(ControlRequest::parse(&request(serde_json::json!({"arguments": {}}))).is_err());
    }

    #[test]
    fn reply_envelope_carries_ticket_and_body() {
        let env = reply_envelope(
            "a@h",
            serde_json::json!({"ok": "pong"}),
            "t-1",
            3,
            &BodySerializer::Json,
        )
        .unwrap();
        assert_eq!(
            env.headers().and_then(|h| h.get("ticket")),
            Some(&"t-1".into())
        );
        let body = decode_body(&env).expect("decodes");
        assert_eq!(body, serde_json::json!({"a@h": {"ok": "pong"}}));
    }
}

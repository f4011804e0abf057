//! [`decode`]: one raw Redis list element → [`TaskMessage`].
//!
//! Order, as kombu and the Celery worker do it: envelope → content-type check (pickle and
//! non-accepted types refused before anything is parsed) → base64 → decompress → deserialize →
//! protocol detection (`headers.task` ⇒ 2, hybrid when the body is nevertheless an object with
//! `args`; else a body object with `task` ⇒ 1).

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value};

use super::compression;
use super::content::{self, JSON, MSGPACK, PICKLE, YAML};
use super::error::{DecodeError, DecodeErrorKind};
use super::fields::{as_seconds, bad, bool_field, int_field, str_value};
use super::headers::{Known, SplitHeaders};
use super::message::TaskMessage;
use super::signature::{self, Signature};
use super::timestamp::WireTime;
use crate::envelope::{Envelope, EnvelopeView, HeadersRef, Parsed};
use crate::signing::{Verifier, AUTH};

/// Limits, the accept list and the signature check for [`decode`].
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Accepted content types (`application/json`, …) or serializer names (`json`, `msgpack`,
    /// `yaml`, `auth`). Empty means json, msgpack and yaml. Pickle is refused whatever this says.
    pub accept: Vec<String>,
    /// Largest raw element, and largest decompressed body, in bytes.
    pub max_bytes: usize,
    /// Checks signed (`auth`) bodies; without it they are refused.
    pub verifier: Option<Arc<Verifier>>,
}

impl Default for DecodeOptions {
    /// Accept json/msgpack/yaml, up to 64 MiB.
    fn default() -> Self {
        DecodeOptions {
            accept: Vec::new(),
            max_bytes: 64 << 20,
            verifier: None,
        }
    }
}

impl DecodeOptions {
    fn accepts(&self, content_type: &str) -> bool {
        if self.accept.is_empty() {
            return matches!(content_type, JSON | MSGPACK | YAML);
        }
        self.accept
            .iter()
            .any(|a| a == content_type || serializer_content_type(a) == Some(content_type))
    }
}

/// kombu's serializer name for a content type alias (`json` → `application/json`).
fn serializer_content_type(name: &str) -> Option<&'static str> {
    match name {
        "json" => Some(JSON),
        "msgpack" => Some(MSGPACK),
        "yaml" => Some(YAML),
        "pickle" => Some(PICKLE),
        "auth" => Some(AUTH),
        _ => None,
    }
}

/// Decode one raw Redis list element into a [`TaskMessage`].
///
/// Every failure is a [`DecodeError`] holding the raw bytes untouched (and the task name and id
/// when the headers were readable), so the caller can dead-letter the element intact.
pub fn decode(raw: &[u8], opts: &DecodeOptions) -> Result<TaskMessage, DecodeError> {
    if raw.len() > opts.max_bytes {
        return Err(DecodeError::new(
            DecodeErrorKind::TooLarge {
                what: "message",
                size: raw.len(),
                limit: opts.max_bytes,
            },
            raw,
        ));
    }
    let parsed =
        EnvelopeView::<SplitHeaders>::parse(raw).map_err(|e| DecodeError::new(e.into(), raw))?;
    let decoded = match parsed {
        Parsed::View(view) => decode_view(view, opts),
        Parsed::Envelope(envelope) => decode_view(EnvelopeView::of(&envelope), opts),
    };
    decoded.map_err(|kind| {
        let (task, id) = header_ids(raw);
        DecodeError::new(kind, raw).with_ids(task, id)
    })
}

/// `headers.task` and `headers.id` of an element that did not decode, when they are strings.
fn header_ids(raw: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(envelope) = Envelope::parse(raw) else {
        return (None, None);
    };
    let header = |k| {
        envelope
            .headers()
            .and_then(|h| h.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    (header("task"), header("id"))
}

/// Decode an already parsed envelope (errors without the raw bytes).
pub fn decode_envelope(
    envelope: &Envelope,
    opts: &DecodeOptions,
) -> Result<TaskMessage, DecodeErrorKind> {
    decode_view(EnvelopeView::of(envelope), opts)
}

fn decode_view(
    mut envelope: EnvelopeView<'_, SplitHeaders>,
    opts: &DecodeOptions,
) -> Result<TaskMessage, DecodeErrorKind> {
    let content_type = envelope
        .content_type
        .as_deref()
        .ok_or_else(|| bad("content-type", "is missing"))?
        .to_string();
    if content_type == PICKLE {
        return Err(DecodeErrorKind::Refused {
            content_type,
            reason: "never deserialized",
        });
    }
    if !opts.accepts(&content_type) {
        return Err(DecodeErrorKind::Refused {
            content_type,
            reason: "not in accept list",
        });
    }
    let headers = match envelope.headers.take() {
        None => SplitHeaders::default(),
        Some(HeadersRef::Read(headers)) => headers,
        Some(HeadersRef::Map(map)) => SplitHeaders::from_map(map),
    };
    let mut body = body_bytes(&envelope)?;
    match headers.get(Known::Compression) {
        None | Some(Value::Null) => {}
        Some(Value::String(method)) => {
            body = compression::decompress(method, &body, opts.max_bytes)?;
        }
        Some(_) => return Err(bad("headers.compression", "should be a string")),
    }
    let body = if content_type == AUTH {
        open_signed(&body, opts)?
    } else {
        content::deserialize(&content_type, &body)?
    };
    let mut msg = to_task_message(headers, body)?;
    msg.content_type = content_type;
    msg.priority = envelope.priority;
    let owned = |s: &Option<Cow<'_, str>>| s.as_deref().map(str::to_string);
    msg.delivery_tag = owned(&envelope.delivery_tag);
    msg.exchange = owned(&envelope.exchange);
    msg.routing_key = owned(&envelope.routing_key);
    msg.reply_to = owned(&envelope.reply_to);
    msg.correlation_id = owned(&envelope.correlation_id);
    msg.redelivered = envelope.redelivered;
    Ok(msg)
}

/// Check a signed body and deserialize what it wraps (any type but pickle, as Celery's
/// `SecureSerializer` does).
fn open_signed(body: &[u8], opts: &DecodeOptions) -> Result<Value, DecodeErrorKind> {
    let verifier = opts.verifier.as_ref().ok_or(DecodeErrorKind::Refused {
        content_type: AUTH.to_string(),
        reason: "signed, but no certificate store is configured",
    })?;
    verifier
        .open(body)
        .map_err(DecodeErrorKind::Signature)?
        .value()
}

fn body_bytes<H>(envelope: &EnvelopeView<'_, H>) -> Result<Vec<u8>, DecodeErrorKind> {
    let text = envelope.body.as_bytes();
    match envelope.body_encoding.as_deref() {
        Some("base64") => {
            let cleaned: Cow<'_, [u8]> = if text.iter().any(u8::is_ascii_whitespace) {
                Cow::Owned(
                    text.iter()
                        .copied()
                        .filter(|b| !b.is_ascii_whitespace())
                        .collect(),
                )
            } else {
                Cow::Borrowed(text)
            };
            base64::engine::general_purpose::STANDARD
                .decode(cleaned)
                .map_err(|e| DecodeErrorKind::Base64(e.to_string()))
        }
        None | Some("utf-8") | Some("utf8") => Ok(text.to_vec()),
        Some(other) => Err(DecodeErrorKind::BodyEncoding(other.to_string())),
    }
}

fn to_task_message(headers: SplitHeaders, body: Value) -> Result<TaskMessage, DecodeErrorKind> {
    let has_task_header = headers.get(Known::Task).is_some_and(|t| !t.is_null());
    match body {
        Value::Object(obj) if has_task_header && obj.contains_key("args") => hybrid(headers, obj),
        body if has_task_header => protocol2(headers, body),
        Value::Object(obj) if obj.contains_key("task") => protocol1(headers, obj),
        Value::Object(_) => Err(DecodeErrorKind::UnknownMessage(
            "no `task` in headers and the body object has no `task`".into(),
        )),
        other => Err(DecodeErrorKind::UnknownMessage(format!(
            "no `task` in headers and the body is {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn protocol2(mut headers: SplitHeaders, body: Value) -> Result<TaskMessage, DecodeErrorKind> {
    let Value::Array(mut parts) = body else {
        return Err(DecodeErrorKind::UnknownMessage(format!(
            "protocol 2 body should be [args, kwargs, embed], got {}",
            kind_of(&body)
        )));
    };
    if parts.len() != 3 {
        return Err(DecodeErrorKind::UnknownMessage(format!(
            "protocol 2 body should be [args, kwargs, embed], got a list of {}",
            parts.len()
        )));
    }
    let embed = parts.pop().unwrap_or(Value::Null);
    let kwargs = parts.pop().unwrap_or(Value::Null);
    let args = parts.pop().unwrap_or(Value::Null);
    let embed = match embed {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => return Err(bad("body[2] (embed)", "should be an object")),
    };
    let mut msg = from_fields(
        &mut |k| headers.take(k),
        "headers",
        args,
        kwargs,
        "body[0]",
        "body[1]",
    )?;
    msg.callbacks = signature::list(embed.get("callbacks"), "embed.callbacks")?;
    msg.errbacks = signature::list(embed.get("errbacks"), "embed.errbacks")?;
    msg.chain = signature::list(embed.get("chain"), "embed.chain")?;
    msg.chord = chord(embed.get("chord"), "embed.chord")?;
    msg.extra_headers = headers.extra;
    Ok(msg)
}

/// The fields a hybrid message may carry in its body (`hybrid_to_proto2`); a header of the same
/// name, even `null`, wins.
const HYBRID_BODY_FIELDS: [Known; 14] = [
    Known::Lang,
    Known::Task,
    Known::Id,
    Known::RootId,
    Known::ParentId,
    Known::Group,
    Known::Shadow,
    Known::Eta,
    Known::Expires,
    Known::Retries,
    Known::Timelimit,
    Known::Argsrepr,
    Known::Kwargsrepr,
    Known::Origin,
];

/// Protocol 1 fields carried in the body, then the headers on top (`hybrid_to_proto2`).
fn hybrid(
    mut headers: SplitHeaders,
    body: Map<String, Value>,
) -> Result<TaskMessage, DecodeErrorKind> {
    let mut fields = |k: Known| {
        headers.take(k).or_else(|| {
            HYBRID_BODY_FIELDS
                .contains(&k)
                .then(|| body.get(k.name()).cloned())
                .flatten()
        })
    };
    let args = body.get("args").cloned().unwrap_or(Value::Null);
    let kwargs = body.get("kwargs").cloned().unwrap_or(Value::Null);
    let mut msg = from_fields(
        &mut fields,
        "headers",
        args,
        kwargs,
        "body.args",
        "body.kwargs",
    )?;
    msg.callbacks = signature::list(body.get("callbacks"), "body.callbacks")?;
    msg.errbacks = signature::list(body.get("errbacks"), "body.errbacks")?;
    msg.chord = chord(body.get("chord"), "body.chord")?;
    msg.extra_headers = headers.extra;
    Ok(msg)
}

/// Protocol 1: everything in the body; `taskset` is the old name of `group` (`proto1_to_proto2`).
fn protocol1(
    headers: SplitHeaders,
    mut body: Map<String, Value>,
) -> Result<TaskMessage, DecodeErrorKind> {
    if let Some(taskset) = body.get("taskset").cloned() {
        body.insert("group".into(), taskset);
    }
    let args = body.get("args").cloned().unwrap_or(Value::Null);
    let kwargs = body.get("kwargs").cloned().unwrap_or(Value::Null);
    let mut fields = |k: Known| body.get(k.name()).cloned();
    let mut msg = from_fields(
        &mut fields,
        "body",
        args,
        kwargs,
        "body.args",
        "body.kwargs",
    )?;
    msg.protocol = 1;
    msg.callbacks = signature::list(body.get("callbacks"), "body.callbacks")?;
    msg.errbacks = signature::list(body.get("errbacks"), "body.errbacks")?;
    msg.chord = chord(body.get("chord"), "body.chord")?;
    msg.extra_headers = headers.extra;
    Ok(msg)
}

fn chord(value: Option<&Value>, path: &str) -> Result<Option<Signature>, DecodeErrorKind> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Signature::from_value(v, path).map(Some),
    }
}

/// Read the header-like fields (`field` takes one, each is taken once; `where_` names them in
/// errors) plus args and kwargs.
fn from_fields(
    field: &mut dyn FnMut(Known) -> Option<Value>,
    where_: &str,
    args: Value,
    kwargs: Value,
    args_path: &str,
    kwargs_path: &str,
) -> Result<TaskMessage, DecodeErrorKind> {
    let path = |k: Known| FieldPath(where_, k.name());
    let args = match args {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        _ => return Err(bad(args_path, "(args) should be a list")),
    };
    let kwargs = match kwargs {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => return Err(bad(kwargs_path, "(kwargs) should be an object")),
    };
    // Read in a fixed order: of two bad fields, the earlier one here is named in the error.
    let string = |field: &mut dyn FnMut(Known) -> Option<Value>, k| str_value(field(k), path(k));
    let int =
        |field: &mut dyn FnMut(Known) -> Option<Value>, k| int_field(field(k).as_ref(), path(k));
    let task = string(field, Known::Task)?
        .ok_or_else(|| bad(&path(Known::Task).to_string(), "is missing"))?;
    let id =
        string(field, Known::Id)?.ok_or_else(|| bad(&path(Known::Id).to_string(), "is missing"))?;
    let mut msg = TaskMessage::new(id, task, args, kwargs);
    msg.root_id = string(field, Known::RootId)?;
    msg.parent_id = string(field, Known::ParentId)?;
    msg.group = string(field, Known::Group)?;
    msg.group_index = int(field, Known::GroupIndex)?;
    msg.retries = int(field, Known::Retries)?.unwrap_or(0);
    msg.eta = time(field(Known::Eta).as_ref(), Known::Eta, path(Known::Eta))?;
    msg.expires = time(
        field(Known::Expires).as_ref(),
        Known::Expires,
        path(Known::Expires),
    )?;
    msg.timelimit = timelimit(field(Known::Timelimit).as_ref(), path(Known::Timelimit))?;
    msg.shadow = string(field, Known::Shadow)?;
    msg.ignore_result = bool_field(
        field(Known::IgnoreResult).as_ref(),
        path(Known::IgnoreResult),
    )?;
    msg.origin = string(field, Known::Origin)?;
    msg.argsrepr = string(field, Known::Argsrepr)?;
    msg.kwargsrepr = string(field, Known::Kwargsrepr)?;
    msg.replaced_task_nesting = int(field, Known::ReplacedTaskNesting)?.unwrap_or(0);
    msg.stamps = match field(Known::Stamps) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(bad(
                &path(Known::Stamps).to_string(),
                "should be an object or null",
            ))
        }
    };
    msg.stamped_headers = match field(Known::StampedHeaders) {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    bad(
                        &path(Known::StampedHeaders).to_string(),
                        "should be a list of strings",
                    )
                })?,
        ),
        Some(_) => {
            return Err(bad(
                &path(Known::StampedHeaders).to_string(),
                "should be a list or null",
            ))
        }
    };
    Ok(msg)
}

/// `<where>.<key>`, formatted only when an error names it.
struct FieldPath<'a>(&'a str, &'static str);

impl std::fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

fn time(
    value: Option<&Value>,
    key: Known,
    path: impl std::fmt::Display,
) -> Result<Option<WireTime>, DecodeErrorKind> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            WireTime::parse(s)
                .map(Some)
                .ok_or_else(|| DecodeErrorKind::BadTimestamp {
                    field: key.name(),
                    value: s.clone(),
                })
        }
        Some(_) => Err(bad(
            &path.to_string(),
            "should be an ISO-8601 string or null",
        )),
    }
}

/// One time limit: a number, null, or a Python bool, which Celery's worker reads by truthiness
/// (`apply_async(time_limit=False)` sends `false`: no limit from the message; `True` is 1 s).
fn limit_seconds(
    value: &Value,
    path: impl std::fmt::Display,
) -> Result<Option<f64>, DecodeErrorKind> {
    match value {
        Value::Bool(false) => Ok(None),
        Value::Bool(true) => Ok(Some(1.0)),
        other => as_seconds(other, path),
    }
}

fn timelimit(
    value: Option<&Value>,
    path: impl std::fmt::Display,
) -> Result<(Option<f64>, Option<f64>), DecodeErrorKind> {
    match value {
        None | Some(Value::Null) => Ok((None, None)),
        Some(Value::Array(items)) if items.len() == 2 => Ok((
            limit_seconds(&items[0], format_args!("{path}[0]"))?,
            limit_seconds(&items[1], format_args!("{path}[1]"))?,
        )),
        Some(_) => Err(bad(&path.to_string(), "should be [hard, soft]")),
    }
}

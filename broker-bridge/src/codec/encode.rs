//! [`TaskMessage::to_envelope`]: write a message as Celery 5.x writes protocol 2 (JSON body,
//! base64), for retries, chain steps and callbacks published by the worker.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::content::JSON;
use super::error::DecodeErrorKind;
use super::fields::{as_seconds, bad, get_bool, get_int, get_str};
use super::message::TaskMessage;
use super::signature::{self, Signature};
use super::timestamp::WireTime;
use crate::backend::python_json;
use crate::envelope::Envelope;
use crate::signing::{BodySerializer, SigningError};

/// Where and how to publish an encoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeOptions {
    /// `delivery_info.exchange` (`""`: the default exchange, routing key = queue name).
    pub exchange: String,
    /// `delivery_info.routing_key`.
    pub routing_key: String,
    /// "Now", used to turn `expires` into `properties.expiration` (milliseconds from now).
    pub now: DateTime<Utc>,
}

impl EncodeOptions {
    /// Publish to queue `queue` through the default exchange, as Celery routes tasks.
    pub fn queue(queue: impl Into<String>) -> Self {
        EncodeOptions {
            exchange: String::new(),
            routing_key: queue.into(),
            now: Utc::now(),
        }
    }

    /// Publish back where `msg` came from (a retry): its exchange and routing key, else `celery`.
    pub fn same_destination(msg: &TaskMessage) -> Self {
        EncodeOptions {
            exchange: msg.exchange.clone().unwrap_or_default(),
            routing_key: msg.routing_key.clone().unwrap_or_else(|| "celery".into()),
            now: Utc::now(),
        }
    }
}

fn opt_str(s: &Option<String>) -> Value {
    s.clone().map_or(Value::Null, Value::String)
}

fn opt_time(t: &Option<WireTime>) -> Value {
    t.as_ref()
        .map_or(Value::Null, |t| Value::String(t.raw.clone()))
}

/// A time limit as Python writes the number it was given: `30` for a whole number, else `20.5`.
fn opt_f64(f: Option<f64>) -> Value {
    match f {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
        f => f
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
    }
}

impl TaskMessage {
    /// The protocol-2 headers, in Celery's order, then [`extra_headers`](Self::extra_headers).
    pub fn headers(&self) -> Map<String, Value> {
        let mut h = Map::new();
        h.insert("lang".into(), "py".into());
        h.insert("task".into(), self.task.clone().into());
        h.insert("id".into(), self.id.clone().into());
        h.insert("shadow".into(), opt_str(&self.shadow));
        h.insert("eta".into(), opt_time(&self.eta));
        h.insert("expires".into(), opt_time(&self.expires));
        h.insert("group".into(), opt_str(&self.group));
        h.insert(
            "group_index".into(),
            self.group_index.map_or(Value::Null, Value::from),
        );
        h.insert("retries".into(), self.retries.into());
        h.insert(
            "timelimit".into(),
            Value::Array(vec![opt_f64(self.timelimit.0), opt_f64(self.timelimit.1)]),
        );
        h.insert("root_id".into(), opt_str(&self.root_id));
        h.insert("parent_id".into(), opt_str(&self.parent_id));
        let argsrepr = self
            .argsrepr
            .clone()
            .unwrap_or_else(|| super::saferepr::args_saferepr(&self.args));
        let kwargsrepr = self
            .kwargsrepr
            .clone()
            .unwrap_or_else(|| super::saferepr::kwargs_saferepr(&self.kwargs));
        h.insert("argsrepr".into(), argsrepr.into());
        h.insert("kwargsrepr".into(), kwargsrepr.into());
        h.insert("origin".into(), opt_str(&self.origin));
        h.insert(
            "ignore_result".into(),
            self.ignore_result.map_or(Value::Null, Value::Bool),
        );
        h.insert(
            "replaced_task_nesting".into(),
            self.replaced_task_nesting.into(),
        );
        h.insert(
            "stamped_headers".into(),
            self.stamped_headers.as_ref().map_or(Value::Null, |s| {
                Value::Array(s.iter().cloned().map(Value::String).collect())
            }),
        );
        h.insert("stamps".into(), Value::Object(self.stamps.clone()));
        for (k, v) in &self.extra_headers {
            if !h.contains_key(k) {
                h.insert(k.clone(), v.clone());
            }
        }
        h
    }

    /// The protocol-2 body `[args, kwargs, embed]` (empty lists written as `null`).
    pub fn body(&self) -> Value {
        let mut embed = Map::new();
        embed.insert(
            "callbacks".into(),
            signature::list_to_value(&self.callbacks),
        );
        embed.insert("errbacks".into(), signature::list_to_value(&self.errbacks));
        embed.insert("chain".into(), signature::list_to_value(&self.chain));
        embed.insert(
            "chord".into(),
            self.chord.as_ref().map_or(Value::Null, Signature::to_value),
        );
        Value::Array(vec![
            Value::Array(self.args.clone()),
            Value::Object(self.kwargs.clone()),
            Value::Object(embed),
        ])
    }

    /// Encode as a protocol-2 `application/json` envelope with a base64 body and a fresh
    /// `delivery_tag`, the way a Celery producer writes it (§1.1–1.4 of the protocol notes).
    /// `properties.expiration` is set when `expires` is (milliseconds from `opts.now`, ≥ 0).
    pub fn to_envelope(&self, opts: &EncodeOptions) -> Envelope {
        let body_json = python_json::to_vec(&self.body());
        self.envelope_around(opts, JSON, &body_json)
    }

    /// As [`to_envelope`](Self::to_envelope), with the body written by `serializer`: plain
    /// JSON, or signed (`task_serializer = "auth"`, content type `application/data`).
    pub fn to_envelope_as(
        &self,
        opts: &EncodeOptions,
        serializer: &BodySerializer,
    ) -> Result<Envelope, SigningError> {
        let body_json = python_json::to_vec(&self.body());
        let body = serializer.serialize(body_json)?;
        Ok(self.envelope_around(opts, body.content_type, &body.body))
    }

    fn envelope_around(&self, opts: &EncodeOptions, content_type: &str, body: &[u8]) -> Envelope {
        let mut info = Map::new();
        info.insert("exchange".into(), opts.exchange.clone().into());
        info.insert("routing_key".into(), opts.routing_key.clone().into());
        let mut props = Map::new();
        props.insert("correlation_id".into(), self.id.clone().into());
        props.insert(
            "reply_to".into(),
            self.reply_to.clone().unwrap_or_default().into(),
        );
        props.insert("delivery_mode".into(), 2.into());
        if let Some(expires) = &self.expires {
            let ms = (expires.utc - opts.now).num_milliseconds().max(0);
            props.insert("expiration".into(), ms.to_string().into());
        }
        props.insert("delivery_info".into(), Value::Object(info));
        props.insert("priority".into(), self.priority.unwrap_or(0).into());
        props.insert("body_encoding".into(), "base64".into());
        props.insert(
            "delivery_tag".into(),
            uuid::Uuid::new_v4().to_string().into(),
        );
        let mut env = Map::new();
        env.insert(
            "body".into(),
            base64::engine::general_purpose::STANDARD
                .encode(body)
                .into(),
        );
        env.insert("content-encoding".into(), "utf-8".into());
        env.insert("content-type".into(), content_type.into());
        env.insert("headers".into(), Value::Object(self.headers()));
        env.insert("properties".into(), Value::Object(props));
        Envelope::from_value(Value::Object(env))
            .expect("the envelope built here has a string body and object properties")
    }

    /// A new message applying `sig` (no parent result prepended; do that to `sig.args` first).
    ///
    /// The id is `options.task_id` or a fresh UUID4; `root_id` defaults to the new id. Options
    /// honoured: `group_id`, `group_index`, `priority`, `shadow`, `link`, `link_error`, `chain`,
    /// `chord`, `queue` (as `routing_key`), `eta` (ISO string), `expires` (ISO string or
    /// seconds from now), `countdown` (seconds from now), `reply_to`,
    /// `retries`, `replaced_task_nesting`, `time_limit`, `soft_time_limit`, `ignore_result`,
    /// `headers` (merged into the message headers) and `stamped_headers` (each named option becomes a stamp), as Celery's
    /// `send_task` takes them. Canvas signatures (`subtask_type` set) are refused: they must be expanded first.
    pub fn from_signature(
        sig: &Signature,
        root_id: Option<&str>,
        parent_id: Option<&str>,
    ) -> Result<TaskMessage, DecodeErrorKind> {
        if let Some(kind) = &sig.subtask_type {
            return Err(bad(
                "signature.subtask_type",
                &format!("is {kind:?}: canvas signatures must be expanded, not sent as a task"),
            ));
        }
        let o = &sig.options;
        let id = get_str(o, "task_id", "options.task_id")?
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut msg = TaskMessage::new(
            id.clone(),
            sig.task.clone(),
            sig.args.clone(),
            sig.kwargs.clone(),
        );
        msg.root_id = Some(root_id.map_or(id, str::to_string));
        msg.parent_id = parent_id.map(str::to_string);
        msg.group = get_str(o, "group_id", "options.group_id")?;
        msg.group_index = get_int(o, "group_index", "options.group_index")?;
        msg.priority = get_int(o, "priority", "options.priority")?
            .map(|p| u8::try_from(p.clamp(0, 255)).unwrap_or(0));
        msg.shadow = get_str(o, "shadow", "options.shadow")?;
        msg.reply_to = get_str(o, "reply_to", "options.reply_to")?;
        msg.routing_key = get_str(o, "queue", "options.queue")?;
        let now = Utc::now();
        for (key, slot) in [("eta", &mut msg.eta), ("expires", &mut msg.expires)] {
            match o.get(key) {
                // `expires` in seconds counts from now, as Celery's `as_task_v2`.
                Some(v @ Value::Number(_)) if key == "expires" => {
                    *slot = seconds_from(now, v, "options.expires")?;
                }
                _ => {
                    if let Some(s) = get_str(o, key, format_args!("options.{key}"))? {
                        *slot = Some(WireTime::parse(&s).ok_or(DecodeErrorKind::BadTimestamp {
                            field: if key == "eta" { "eta" } else { "expires" },
                            value: s,
                        })?);
                    }
                }
            }
        }
        // A countdown (not 0) wins over an eta, as in Celery.
        if let Some(v) = o.get("countdown").filter(|v| v.as_f64() != Some(0.0)) {
            if let Some(eta) = seconds_from(now, v, "options.countdown")? {
                msg.eta = Some(eta);
            }
        }
        for (key, slot) in [
            ("time_limit", &mut msg.timelimit.0),
            ("soft_time_limit", &mut msg.timelimit.1),
        ] {
            if let Some(v) = o.get(key) {
                *slot = as_seconds(v, format_args!("options.{key}"))?;
            }
        }
        msg.ignore_result = get_bool(o, "ignore_result", "options.ignore_result")?;
        msg.retries = get_int(o, "retries", "options.retries")?.unwrap_or(0);
        msg.replaced_task_nesting =
            get_int(o, "replaced_task_nesting", "options.replaced_task_nesting")?.unwrap_or(0);
        if let Some(names) = o.get("stamped_headers").filter(|v| !v.is_null()) {
            let names: Vec<String> = names
                .as_array()
                .and_then(|a| a.iter().map(|n| n.as_str().map(str::to_string)).collect())
                .ok_or_else(|| bad("options.stamped_headers", "should be a list of names"))?;
            for name in &names {
                msg.stamps.insert(
                    name.clone(),
                    o.get(name.as_str()).cloned().unwrap_or(Value::Null),
                );
            }
            msg.stamped_headers = Some(names);
        }
        match o.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(h)) => msg.extra_headers.extend(h.clone()),
            Some(_) => return Err(bad("options.headers", "should be an object")),
        }
        msg.callbacks = one_or_many(o.get("link"), "options.link")?;
        msg.errbacks = one_or_many(o.get("link_error"), "options.link_error")?;
        msg.chain = signature::list(o.get("chain"), "options.chain")?;
        msg.chord = match o.get("chord") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Signature::from_value(v, "options.chord")?),
        };
        Ok(msg)
    }
}

/// `now` + a number of seconds (`null`: none).
fn seconds_from(
    now: DateTime<Utc>,
    v: &Value,
    path: &str,
) -> Result<Option<WireTime>, DecodeErrorKind> {
    Ok(as_seconds(v, path)?.map(|s| {
        WireTime::from_utc(now + chrono::Duration::microseconds((s * 1e6).round() as i64))
    }))
}

/// `link`/`link_error` options: one signature dict or a list of them.
fn one_or_many(value: Option<&Value>, path: &str) -> Result<Vec<Signature>, DecodeErrorKind> {
    match value {
        Some(v @ Value::Object(_)) => Ok(vec![Signature::from_value(v, path)?]),
        other => signature::list(other, path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_in_seconds_count_from_now() {
        let mut sig = Signature::new("t.add", vec![json!(1)], Map::new());
        sig.options.insert("countdown".into(), json!(60));
        sig.options.insert("expires".into(), json!(120.5));
        sig.options
            .insert("eta".into(), json!("2000-01-01T00:00:00+00:00"));
        let before = Utc::now();
        let msg = TaskMessage::from_signature(&sig, None, None).unwrap();
        let after = Utc::now();
        let eta = msg.eta.unwrap().utc;
        assert!(
            eta >= before + chrono::Duration::seconds(60)
                && eta <= after + chrono::Duration::seconds(60)
        );
        let expires = msg.expires.unwrap().utc;
        let span = chrono::Duration::milliseconds(120_500);
        assert!(expires >= before + span && expires <= after + span);
        sig.options.insert("countdown".into(), json!(0));
        let msg = TaskMessage::from_signature(&sig, None, None).unwrap();
        assert_eq!(msg.eta.unwrap().raw, "2000-01-01T00:00:00+00:00");
        sig.options.insert("expires".into(), json!("soon"));
        assert!(TaskMessage::from_signature(&sig, None, None).is_err());
    }
}

//! `broker_transport_options` of kombu's SQS transport.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use super::SqsError;

/// The options celeriac reads, with kombu's defaults. Options kombu has and celeriac does not
/// read (`sts_role_arn`, `backoff_policy`, `client-config`, `predefined_exchanges`, ...) are
/// ignored, as unknown options are.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsOptions {
    /// `queue_name_prefix` (default `""`): put before every queue name.
    pub queue_name_prefix: String,
    /// `predefined_queues`: SQS queue name → its URL and optional credentials. When set, only
    /// these queues are used and none is created (kombu's rule).
    pub predefined_queues: BTreeMap<String, PredefinedQueue>,
    /// `region` (default: the SDK's region chain, then `us-east-1`).
    pub region: Option<String>,
    /// `visibility_timeout` in seconds (default 1800): given to queues celeriac creates.
    pub visibility_timeout: u32,
    /// `wait_time_seconds` (default 10, at most 20): long polling of `ReceiveMessage`.
    pub wait_time_seconds: u32,
    /// `polling_interval` (default 1 s): the pause after a poll that found nothing.
    pub polling_interval: Duration,
    /// `is_secure`: `https` to an endpoint named in the URL (default `http`, as kombu).
    pub is_secure: bool,
    /// `sqs_base64_encoding` (default true): bodies are the base64 of the JSON envelope.
    pub sqs_base64_encoding: bool,
    /// `sqs-creation-attributes`: extra attributes of queues celeriac creates.
    pub creation_attributes: BTreeMap<String, String>,
}

/// One entry of `predefined_queues`.
#[derive(Clone, PartialEq, Eq)]
pub struct PredefinedQueue {
    /// The queue URL.
    pub url: String,
    /// `access_key_id` for this queue (else the broker URL's / the SDK's).
    pub access_key_id: Option<String>,
    /// `secret_access_key` for this queue.
    pub secret_access_key: Option<String>,
    /// `region` for this queue.
    pub region: Option<String>,
}

impl std::fmt::Debug for PredefinedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PredefinedQueue")
            .field("url", &self.url)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("region", &self.region)
            .finish()
    }
}

impl Default for SqsOptions {
    fn default() -> Self {
        SqsOptions {
            queue_name_prefix: String::new(),
            predefined_queues: BTreeMap::new(),
            region: None,
            visibility_timeout: 1800,
            wait_time_seconds: 10,
            polling_interval: Duration::from_secs(1),
            is_secure: false,
            sqs_base64_encoding: true,
            creation_attributes: BTreeMap::new(),
        }
    }
}

fn bad(key: &str, reason: impl Into<String>) -> SqsError {
    SqsError::Option {
        key: key.into(),
        reason: reason.into(),
    }
}

fn number(key: &str, v: &Value) -> Result<f64, SqsError> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| bad(key, "not a number")),
        Value::String(s) => s.trim().parse().map_err(|_| bad(key, "not a number")),
        _ => Err(bad(key, "not a number")),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn opt_string(key: &str, v: Option<&Value>) -> Result<Option<String>, SqsError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(key, "not a string")),
    }
}

impl SqsOptions {
    /// Read the options from `broker_transport_options` (a JSON object, as configured).
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, SqsError> {
        let mut o = SqsOptions::default();
        if let Some(v) = opt_string("queue_name_prefix", map.get("queue_name_prefix"))? {
            o.queue_name_prefix = v;
        }
        o.region = opt_string("region", map.get("region"))?;
        match map.get("visibility_timeout") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(v) => {
                let t = number("visibility_timeout", v)?;
                if !(0.0..=43200.0).contains(&t) {
                    return Err(bad("visibility_timeout", "must be 0..=43200 seconds"));
                }
                o.visibility_timeout = t as u32;
            }
        }
        if let Some(v) = map.get("wait_time_seconds").filter(|v| !v.is_null()) {
            let t = number("wait_time_seconds", v)?;
            if !(0.0..=20.0).contains(&t) {
                return Err(bad("wait_time_seconds", "must be 0..=20 seconds"));
            }
            o.wait_time_seconds = t as u32;
        }
        if let Some(v) = map.get("polling_interval").filter(|v| !v.is_null()) {
            let t = number("polling_interval", v)?;
            o.polling_interval = Duration::try_from_secs_f64(t).map_err(|_| {
                bad(
                    "polling_interval",
                    "must be a non-negative number of seconds",
                )
            })?;
        }
        o.is_secure = map.get("is_secure").is_some_and(truthy);
        if let Some(v) = map.get("sqs_base64_encoding") {
            o.sqs_base64_encoding = truthy(v);
        }
        match map.get("sqs-creation-attributes") {
            None | Some(Value::Null) => {}
            Some(Value::Object(attrs)) => {
                for (k, v) in attrs {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    o.creation_attributes.insert(k.clone(), v);
                }
            }
            Some(_) => return Err(bad("sqs-creation-attributes", "not an object")),
        }
        match map.get("predefined_queues") {
            None | Some(Value::Null) => {}
            Some(Value::Object(queues)) => {
                for (name, q) in queues {
                    let key = "predefined_queues";
                    let q = q
                        .as_object()
                        .ok_or_else(|| bad(key, format!("`{name}` is not an object")))?;
                    let url = opt_string(key, q.get("url"))?
                        .ok_or_else(|| bad(key, format!("`{name}` has no url")))?;
                    // kombu's check: FIFO queues are named `.fifo` on both sides.
                    if url.ends_with(".fifo") != name.ends_with(".fifo") {
                        return Err(bad(
                            key,
                            format!("`{name}`: a FIFO queue's name and URL both end with .fifo"),
                        ));
                    }
                    o.predefined_queues.insert(
                        name.clone(),
                        PredefinedQueue {
                            url,
                            access_key_id: opt_string(key, q.get("access_key_id"))?,
                            secret_access_key: opt_string(key, q.get("secret_access_key"))?,
                            region: opt_string(key, q.get("region"))?,
                        },
                    );
                }
            }
            Some(_) => return Err(bad("predefined_queues", "not an object")),
        }
        Ok(o)
    }

    /// The SQS name of Celery queue `queue`: kombu's `canonical_queue_name` (prefix, then ASCII
    /// punctuation other than `-` and `_` replaced: `.` by `-`, the rest by `_`; a `.fifo`
    /// suffix is kept).
    pub fn sqs_queue_name(&self, queue: &str) -> String {
        entity_name(&format!("{}{}", self.queue_name_prefix, queue))
    }
}

/// kombu's `entity_name`: an AMQP queue name made a legal SQS queue name.
pub fn entity_name(name: &str) -> String {
    let translate = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                '.' => '-',
                '-' | '_' => c,
                c if c.is_ascii_punctuation() => '_',
                c => c,
            })
            .collect()
    };
    match name.strip_suffix(".fifo") {
        Some(base) => format!("{}.fifo", translate(base)),
        None => translate(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(v: Value) -> Result<SqsOptions, SqsError> {
        SqsOptions::from_map(v.as_object().unwrap())
    }

    #[test]
    fn defaults_are_kombus() {
        let o = opts(json!({})).unwrap();
        assert_eq!(o, SqsOptions::default());
        assert_eq!(o.visibility_timeout, 1800);
        assert_eq!(o.wait_time_seconds, 10);
        assert_eq!(o.polling_interval, Duration::from_secs(1));
        assert!(o.sqs_base64_encoding);
        assert!(!o.is_secure);
    }

    #[test]
    fn options_are_read() {
        let o = opts(json!({
            "queue_name_prefix": "app-", "region": "eu-west-1", "visibility_timeout": 60.7,
            "wait_time_seconds": 20, "polling_interval": 0.25, "is_secure": true,
            "sqs_base64_encoding": false,
            "sqs-creation-attributes": {"KmsMasterKeyId": "alias/aws/sqs", "DelaySeconds": 0},
            "predefined_queues": {"celery": {"url": "https://sqs.eu-west-1.amazonaws.com/1/celery",
                                             "access_key_id": "a", "secret_access_key": "b"}}
        }))
        .unwrap();
        assert_eq!(o.queue_name_prefix, "app-");
        assert_eq!(o.region.as_deref(), Some("eu-west-1"));
        assert_eq!(o.visibility_timeout, 60);
        assert_eq!(o.wait_time_seconds, 20);
        assert_eq!(o.polling_interval, Duration::from_millis(250));
        assert!(o.is_secure && !o.sqs_base64_encoding);
        assert_eq!(o.creation_attributes["DelaySeconds"], "0");
        assert_eq!(
            o.predefined_queues["celery"].access_key_id.as_deref(),
            Some("a")
        );
        assert!(!format!("{o:?}").contains("\"b\""));
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(opts(json!({"wait_time_seconds": 21})).is_err());
        assert!(opts(json!({"visibility_timeout": "soon"})).is_err());
        assert!(opts(json!({"polling_interval": -1})).is_err());
        assert!(opts(json!({"predefined_queues": {"q.fifo": {"url": "https://x/1/q"}}})).is_err());
        assert!(opts(json!({"predefined_queues": {"q": {}}})).is_err());
    }

    #[test]
    fn queue_names_as_kombu_makes_them() {
        let mut o = SqsOptions::default();
        assert_eq!(o.sqs_queue_name("celery"), "celery");
        assert_eq!(o.sqs_queue_name("jobs.high"), "jobs-high");
        assert_eq!(o.sqs_queue_name("a:b@c-d_e"), "a_b_c-d_e");
        assert_eq!(o.sqs_queue_name("x.y.fifo"), "x-y.fifo");
        o.queue_name_prefix = "myapp-".into();
        assert_eq!(o.sqs_queue_name("celery"), "myapp-celery");
    }
}

//! Celery events (Flower, `celery events`) on the wire: JSON objects published on the fanout
//! exchange `celeryev` with routing key = event type with `-` → `.` (`worker.heartbeat`), or a
//! JSON list of task events under `task.multi` (how a Python worker batches them).

use serde_json::{Map, Value};

use crate::envelope::Envelope;
use crate::pidbox::{body_envelope, decode_body_checked, PidboxError, SendError};
use crate::signing::{BodySerializer, SigningError, Verifier};
use crate::transport::Broker;

/// The events exchange (`event_exchange`).
pub const EXCHANGE: &str = "celeryev";

/// The routing key of a batch of task events.
pub const MULTI_ROUTING_KEY: &str = "task.multi";

/// The routing key of an event type: `worker-heartbeat` → `worker.heartbeat`.
pub fn routing_key(event_type: &str) -> String {
    event_type.replace('-', ".")
}

/// The envelope of one event (an object) or a batch (a list), written by `serializer`
/// (`event_serializer`: JSON or signed), `delivery_mode` 1, headers `{"hostname"}`.
pub fn event_envelope(
    body: &Value,
    hostname: &str,
    serializer: &BodySerializer,
) -> Result<Envelope, SigningError> {
    let mut headers = Map::new();
    headers.insert("hostname".into(), hostname.into());
    body_envelope(body, headers, 1, serializer)
}

/// Publish one event under its own routing key. Returns how many subscribers got it.
pub async fn publish_event(
    broker: &Broker,
    event: &Map<String, Value>,
    hostname: &str,
    serializer: &BodySerializer,
) -> Result<u64, SendError> {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    let envelope = event_envelope(&Value::Object(event.clone()), hostname, serializer)?;
    Ok(broker
        .publish_fanout(&envelope, EXCHANGE, &routing_key(kind))
        .await?)
}

/// Publish several task events as one `task.multi` message.
pub async fn publish_batch(
    broker: &Broker,
    events: &[Map<String, Value>],
    hostname: &str,
    serializer: &BodySerializer,
) -> Result<u64, SendError> {
    let body = Value::Array(events.iter().cloned().map(Value::Object).collect());
    let envelope = event_envelope(&body, hostname, serializer)?;
    Ok(broker
        .publish_fanout(&envelope, EXCHANGE, MULTI_ROUTING_KEY)
        .await?)
}

/// The events in a received message: one object, or a list (`task.multi`). Signed events are
/// read when a `verifier` is given (receivers always take JSON too, as Celery's do).
pub fn decode_events(
    raw: &[u8],
    verifier: Option<&Verifier>,
) -> Result<Vec<Map<String, Value>>, PidboxError> {
    let envelope = Envelope::parse(raw)?;
    match decode_body_checked(&envelope, verifier, true)? {
        Value::Object(m) => Ok(vec![m]),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                _ => Err(PidboxError::Shape("an event in the batch is not an object")),
            })
            .collect(),
        _ => Err(PidboxError::Shape(
            "an event is an object or a list of them",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routing_keys_replace_dashes() {
        assert_eq!(routing_key("worker-heartbeat"), "worker.heartbeat");
        assert_eq!(routing_key("task-succeeded"), "task.succeeded");
    }

    #[test]
    fn single_and_batched_events_decode() {
        let json = BodySerializer::Json;
        let one =
            event_envelope(&json!({"type": "task-started", "uuid": "x"}), "a@h", &json).unwrap();
        let got = decode_events(one.to_json().as_bytes(), None).expect("decodes");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["uuid"], "x");
        let many = event_envelope(&json!([{"type": "a"}, {"type": "b"}]), "a@h", &json).unwrap();
        let got = decode_events(many.to_json().as_bytes(), None).expect("decodes");
        assert_eq!(got.len(), 2);
        assert_eq!(many.properties()["delivery_mode"], 1);
        assert_eq!(many.headers().map(|h| &h["hostname"]), Some(&json!("a@h")));
        let three = event_envelope(&json!(3), "a@h", &json).unwrap();
        assert!(decode_events(three.to_json().as_bytes(), None).is_err());
    }

    #[test]
    fn signed_events_need_the_store() {
        use crate::signing::test_keys::{signer, verifier};
        let auth = BodySerializer::Auth(std::sync::Arc::new(signer()));
        let env =
            event_envelope(&json!({"type": "task-started", "uuid": "x"}), "a@h", &auth).unwrap();
        assert_eq!(env.content_type(), Some(crate::signing::AUTH));
        let raw = env.to_json();
        assert_eq!(
            decode_events(raw.as_bytes(), Some(&verifier())).unwrap()[0]["uuid"],
            "x"
        );
        assert!(decode_events(raw.as_bytes(), None).is_err());
    }
}

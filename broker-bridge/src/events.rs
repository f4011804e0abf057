//! Celery events (Flower, `celery events`) on the wire: JSON objects published on the fanout
//! exchange `celeryev` with routing key = event type with `-` → `.` (`worker.heartbeat`), or a
//! JSON list of task events under `task.multi` (how a Python worker batches them).

use serde_json::{Map, Value};

use crate::envelope::Envelope;
use crate::pidbox::{decode_body, json_envelope, PidboxError};
use crate::transport::{Broker, Result as TransportResult};

/// The events exchange (`event_exchange`).
pub const EXCHANGE: &str = "celeryev";

/// The routing key of a batch of task events.
pub const MULTI_ROUTING_KEY: &str = "task.multi";

/// The routing key of an event type: `worker-heartbeat` → `worker.heartbeat`.
pub fn routing_key(event_type: &str) -> String {
    event_type.replace('-', ".")
}

/// The envelope of one event (an object) or a batch (a list): `application/json`,
/// `delivery_mode` 1, headers `{"hostname"}`.
pub fn event_envelope(body: &Value, hostname: &str) -> Envelope {
    let mut headers = Map::new();
    headers.insert("hostname".into(), hostname.into());
    json_envelope(body, headers, 1)
}

/// Publish one event under its own routing key. Returns how many subscribers got it.
pub async fn publish_event(
    broker: &Broker,
    event: &Map<String, Value>,
    hostname: &str,
) -> TransportResult<u64> {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    let envelope = event_envelope(&Value::Object(event.clone()), hostname);
    broker
        .publish_fanout(&envelope, EXCHANGE, &routing_key(kind))
        .await
}

/// Publish several task events as one `task.multi` message.
pub async fn publish_batch(
    broker: &Broker,
    events: &[Map<String, Value>],
    hostname: &str,
) -> TransportResult<u64> {
    let body = Value::Array(events.iter().cloned().map(Value::Object).collect());
    let envelope = event_envelope(&body, hostname);
    broker
        .publish_fanout(&envelope, EXCHANGE, MULTI_ROUTING_KEY)
        .await
}

/// The events in a received message: one object, or a list (`task.multi`).
pub fn decode_events(raw: &[u8]) -> Result<Vec<Map<String, Value>>, PidboxError> {
    let envelope = Envelope::parse(raw)?;
    match decode_body(&envelope)? {
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
        let one = event_envelope(&json!({"type": "task-started", "uuid": "x"}), "a@h");
        let got = decode_events(one.to_json().as_bytes()).expect("decodes");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["uuid"], "x");
        let many = event_envelope(&json!([{"type": "a"}, {"type": "b"}]), "a@h");
        let got = decode_events(many.to_json().as_bytes()).expect("decodes");
        assert_eq!(got.len(), 2);
        assert_eq!(many.properties()["delivery_mode"], 1);
        assert_eq!(many.headers().map(|h| &h["hostname"]), Some(&json!("a@h")));
        assert!(decode_events(event_envelope(&json!(3), "a@h").to_json().as_bytes()).is_err());
    }
}

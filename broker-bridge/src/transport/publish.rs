//! Publishing as kombu's producer does, and queue lengths.

use serde_json::{Map, Value};

use super::error::{Result, TransportError};
use super::keys::envelope_priority;
use super::Broker;
use crate::backend::python_json;
use crate::envelope::Envelope;

/// How long [`Broker::publish_once`] remembers a publication.
pub(crate) const PUBLISH_MARKER_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// What [`Broker::publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The `properties.delivery_tag` given to the message (fresh, or kept by
    /// [`Broker::publish_restored`]).
    pub delivery_tag: String,
    /// The queues it was pushed to (empty: a named exchange with no matching binding, which
    /// kombu also drops silently).
    pub queues: Vec<String>,
}

impl Broker {
    /// Publish like kombu's `basic_publish`: set a fresh `properties.delivery_tag` and
    /// `properties.delivery_info.{exchange, routing_key}`, find the queues (anonymous exchange
    /// `""` → the routing key; named exchange → its binding table), and `LPUSH` the envelope to
    /// each queue's list for its priority, in one `MULTI`. The element is written as kombu
    /// writes it (Python's `json.dumps`).
    pub async fn publish(
        &self,
        envelope: &Envelope,
        exchange: &str,
        routing_key: &str,
    ) -> Result<Published> {
        self.publish_with(envelope, exchange, routing_key, None, false)
            .await
    }

    /// [`Broker::publish`] of a message put back on its queue, keeping its
    /// `properties.delivery_tag` (a fresh one only when it has none), as kombu's restore does: the
    /// message is the same delivery, so what its run published once (see
    /// [`Broker::publish_once_in`]) is not published again when it runs again.
    pub async fn publish_restored(
        &self,
        envelope: &Envelope,
        exchange: &str,
        routing_key: &str,
    ) -> Result<Published> {
        self.publish_with(envelope, exchange, routing_key, None, true)
            .await
    }

    async fn publish_with(
        &self,
        envelope: &Envelope,
        exchange: &str,
        routing_key: &str,
        once: Option<String>,
        keep_tag: bool,
    ) -> Result<Published> {
        if exchange.is_empty()
            && routing_key.is_empty()
            && self.options().deadletter_queue.is_none()
        {
            return Err(TransportError::Message(
                "publishing to the anonymous exchange needs a routing key (the queue name)".into(),
            ));
        }
        let delivery_tag = envelope
            .delivery_tag()
            .filter(|_| keep_tag)
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        let mut value = envelope.clone().into_value();
        let props = value
            .get_mut("properties")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| TransportError::Message("envelope has no properties".into()))?;
        props.insert("delivery_tag".into(), Value::String(delivery_tag.clone()));
        let info = props
            .entry("delivery_info")
            .or_insert_with(|| Value::Object(Map::new()));
        if !info.is_object() {
            *info = Value::Object(Map::new());
        }
        if let Some(info) = info.as_object_mut() {
            info.insert("exchange".into(), Value::String(exchange.into()));
            info.insert("routing_key".into(), Value::String(routing_key.into()));
        }
        let priority = envelope_priority(&value);
        // Byte for byte as kombu writes it (`json.dumps`: Python's separators, `ensure_ascii`).
        let payload = python_json::to_vec(&value);
        let queues = self.lookup(exchange, routing_key).await?;
        if queues.is_empty() {
            tracing::warn!(
                exchange,
                routing_key,
                "no queue bound for this routing key: message dropped, as kombu does"
            );
        } else if let Some(marker) = once {
            let mut script = self.inner.scripts.publish_once.prepare_invoke();
            script
                .key(self.inner.keys.publish_marker(&marker))
                .arg(PUBLISH_MARKER_TTL.as_secs())
                .arg(&payload);
            for q in &queues {
                script.key(self.inner.keys.queue_list_for_priority(q, priority));
            }
            script.invoke_async::<i64>(&mut self.conn()).await?;
        } else {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for q in &queues {
                pipe.lpush(
                    self.inner.keys.queue_list_for_priority(q, priority),
                    &payload,
                )
                .ignore();
            }
            pipe.query_async::<()>(&mut self.conn()).await?;
        }
        Ok(Published {
            delivery_tag,
            queues,
        })
    }

    /// [`Broker::publish`] at most once per task id, `retries` and `replaced_task_nesting`: the
    /// push happens together with setting a marker key (`celeriac.published.<id>.<retries>`,
    /// `.<nesting>` appended when not 0; kept an hour), and not at all when the marker exists. A worker repeating a
    /// publish whose reply was lost (connection cut after Redis ran it) therefore does not
    /// queue a second copy, nor does a redelivered task publish its retry twice. A message
    /// without `headers.id` is published normally.
    pub async fn publish_once(
        &self,
        envelope: &Envelope,
        exchange: &str,
        routing_key: &str,
    ) -> Result<Published> {
        self.publish_once_in(envelope, exchange, routing_key, None)
            .await
    }

    /// [`Broker::publish_once`] within one run: `run` (say, the delivery tag of the message
    /// whose processing publishes) is appended to the marker (`.<run>`), so the same task id
    /// published by another run — a frozen canvas applied again, as Celery allows — is queued
    /// again, while a repeat within the run still is not.
    pub async fn publish_once_in(
        &self,
        envelope: &Envelope,
        exchange: &str,
        routing_key: &str,
        run: Option<&str>,
    ) -> Result<Published> {
        let marker = envelope.headers().and_then(|h| {
            let id = h.get("id")?.as_str()?;
            let retries = h.get("retries").and_then(Value::as_i64).unwrap_or(0);
            // A replaced task's id is published again by its replacement, one nesting deeper.
            let mut marker = match h.get("replaced_task_nesting").and_then(Value::as_i64) {
                Some(nesting) if nesting > 0 => format!("{id}.{retries}.{nesting}"),
                _ => format!("{id}.{retries}"),
            };
            if let Some(run) = run {
                marker.push('.');
                marker.push_str(run);
            }
            Some(marker)
        });
        self.publish_with(envelope, exchange, routing_key, marker, false)
            .await
    }

    /// Messages waiting in each queue (all priority lists summed), in one round trip.
    pub async fn queue_lengths(&self, queues: &[String]) -> Result<Vec<(String, u64)>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &self.inner.keys;
        let mut pipe = redis::pipe();
        for q in queues {
            for list in keys.queue_lists(q) {
                pipe.llen(list);
            }
        }
        let lens: Vec<u64> = pipe.query_async(&mut self.conn()).await?;
        let per = keys.steps().len();
        Ok(queues
            .iter()
            .zip(lens.chunks(per))
            .map(|(q, l)| (q.clone(), l.iter().sum()))
            .collect())
    }
}

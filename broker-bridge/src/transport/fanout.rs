//! Fanout exchanges as kombu runs them on Redis: PUB/SUB channels, no storage, no acks.
//!
//! Channel = `global_keyprefix` + `fanout_prefix` (`/<db>.`) + exchange, plus `/<routing key>`
//! when the routing key is not empty and `fanout_patterns` is on: `/0.celery.pidbox`,
//! `/0.celeryev/worker.heartbeat`. Subscribers `PSUBSCRIBE` the binding key with `#` → `*`.
//! A subscriber that is not connected misses what is published meanwhile (as in kombu).

use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::error::{Result, TransportError};
use super::Broker;
use crate::envelope::Envelope;

/// One message received on a fanout subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutMessage {
    /// The channel it was published to (with every prefix).
    pub channel: String,
    /// The payload: a kombu envelope, JSON.
    pub payload: Vec<u8>,
}

/// A dedicated PUB/SUB connection subscribed to fanout channels.
pub struct FanoutSubscription {
    stream: redis::aio::PubSubStream,
}

impl FanoutSubscription {
    /// The next message, or `None` when the connection is lost (subscribe again to resume).
    pub async fn next(&mut self) -> Option<FanoutMessage> {
        let msg = self.stream.next().await?;
        Some(FanoutMessage {
            channel: msg.get_channel_name().to_string(),
            payload: msg.get_payload_bytes().to_vec(),
        })
    }
}

impl Broker {
    /// The PUB/SUB channel kombu publishes `exchange`/`routing_key` to.
    pub fn fanout_channel(&self, exchange: &str, routing_key: &str) -> String {
        let o = self.options();
        let prefix = o
            .fanout_prefix
            .as_deref()
            .map(|p| p.replace("{db}", &self.inner.db.to_string()))
            .unwrap_or_default();
        let mut channel = format!("{}{prefix}{exchange}", o.global_keyprefix);
        if !routing_key.is_empty() && o.fanout_patterns {
            channel.push('/');
            channel.push_str(routing_key);
        }
        channel
    }

    /// The `PSUBSCRIBE` pattern for a queue bound to `exchange` with `binding_key` (`#` → `*`).
    pub fn fanout_pattern(&self, exchange: &str, binding_key: &str) -> String {
        self.fanout_channel(exchange, &binding_key.replace('#', "*"))
    }

    /// Publish `envelope` to a fanout exchange (kombu's `_put_fanout`): a fresh
    /// `properties.delivery_tag` and `delivery_info` are set, then one `PUBLISH`.
    /// Returns how many subscribers received it.
    pub async fn publish_fanout(
        &self,
        envelope: &Envelope,
        exchange: &str,
        routing_key: &str,
    ) -> Result<u64> {
        let mut value = envelope.clone().into_value();
        let props = value
            .get_mut("properties")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| TransportError::Message("envelope has no properties".into()))?;
        props.insert(
            "delivery_tag".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        let mut info = Map::new();
        info.insert("exchange".into(), Value::String(exchange.into()));
        info.insert("routing_key".into(), Value::String(routing_key.into()));
        props.insert("delivery_info".into(), Value::Object(info));
        let payload = crate::backend::python_json::to_vec(&value);
        let channel = self.fanout_channel(exchange, routing_key);
        let receivers: u64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async(&mut self.conn())
            .await?;
        Ok(receivers)
    }

    /// Open a dedicated PUB/SUB connection and `PSUBSCRIBE` to `patterns` (full channel
    /// patterns, e.g. from [`Broker::fanout_pattern`]).
    pub async fn subscribe_fanout(&self, patterns: &[String]) -> Result<FanoutSubscription> {
        let mut pubsub = self.inner.url.client()?.get_async_pubsub().await?;
        for p in patterns {
            pubsub.psubscribe(p).await?;
        }
        Ok(FanoutSubscription {
            stream: pubsub.into_on_message(),
        })
    }
}

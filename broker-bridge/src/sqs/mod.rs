//! Amazon SQS as the broker, as kombu's SQS transport uses it (Celery with `sqs://`).
//!
//! * [`SqsUrl`] — `sqs://` URLs (static credentials, custom endpoint);
//! * [`SqsOptions`] — the `broker_transport_options` kombu's SQS channel reads;
//! * [`body`] — bodies: base64 of the kombu envelope JSON, decoded as kombu does;
//! * [`SqsBroker`] — receive (long polling), ack (`DeleteMessage`), requeue
//!   (`ChangeMessageVisibility` 0), visibility extension, send, queue depth, redrive policy,
//!   through the official AWS SDK (credentials and region as the SDK finds them, HTTPS with
//!   rustls).
//!
//! A received body is decoded to the same kombu envelope a Redis queue element holds, so the
//! task codec is shared. kombu's SQS transport has no fanout exchange unless SNS is configured,
//! so there is no remote control and no events over SQS.

pub mod body;
mod options;
mod url;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_config::meta::region::RegionProviderChain;
use aws_config::BehaviorVersion;
use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use serde_json::{Map, Value};

pub use options::{entity_name, PredefinedQueue, SqsOptions};
pub use url::{is_sqs_url, SqsUrl};

use crate::envelope::Envelope;
use crate::transport::Delivery;

/// kombu asks SQS for at most 10 messages per `ReceiveMessage` (the API's limit).
pub const SQS_MAX_MESSAGES: u32 = 10;

/// SQS accepts at most 900 seconds of per-message delay.
pub const MAX_DELAY_SECONDS: i64 = 900;

/// Why an SQS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    /// The broker URL is not an `sqs://` URL kombu accepts.
    #[error("invalid SQS broker URL: {0}")]
    Url(String),
    /// A transport option has a value of the wrong type or out of range.
    #[error("invalid transport option `{key}`: {reason}")]
    Option {
        /// The option's name in `broker_transport_options`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `predefined_queues` is set and does not name this SQS queue.
    #[error("queue `{0}` must be defined in predefined_queues")]
    UndefinedQueue(String),
    /// The SQS API refused the call or could not be reached.
    #[error("sqs {op}: {message}")]
    Aws {
        /// The API operation.
        op: &'static str,
        /// The SDK's error with its sources.
        message: String,
    },
    /// A message cannot be sent as asked.
    #[error("invalid message: {0}")]
    Message(String),
}

/// Result alias for SQS operations.
pub type Result<T, E = SqsError> = std::result::Result<T, E>;

fn aws<E: std::error::Error>(op: &'static str) -> impl FnOnce(E) -> SqsError {
    move |e| SqsError::Aws {
        op,
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// One message received and decoded to a kombu envelope; invisible to other consumers until
/// acked, requeued, or its visibility timeout ends.
#[derive(Debug, Clone)]
pub struct SqsDelivery {
    /// The kombu envelope JSON exactly as decoded from the body (what a Redis element holds).
    pub envelope_json: String,
    /// The parsed envelope.
    pub envelope: Envelope,
    /// The Celery queue name it was received from (as given to [`SqsBroker::receive`]).
    pub queue: String,
    /// The receipt handle: kombu's `delivery_tag` for this delivery.
    pub receipt_handle: String,
    /// The SQS message id.
    pub message_id: String,
    /// `ApproximateReceiveCount` (1 on the first delivery).
    pub receive_count: Option<u32>,
}

impl SqsDelivery {
    /// The same shape the Redis transport hands out: raw envelope, queue, the receipt handle
    /// as delivery tag, exchange and routing key from `properties.delivery_info`.
    pub fn to_delivery(&self) -> Delivery {
        Delivery {
            raw: self.envelope_json.clone().into_bytes(),
            queue: self.queue.clone(),
            delivery_tag: self.receipt_handle.clone(),
            exchange: self.envelope.exchange().unwrap_or_default().to_string(),
            routing_key: self.envelope.routing_key().unwrap_or_default().to_string(),
        }
    }
}

/// A received message whose body is not a kombu envelope: kept intact for dead-lettering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// The Celery queue name it was received from.
    pub queue: String,
    /// The body exactly as SQS returned it.
    pub body: String,
    /// Its receipt handle.
    pub receipt_handle: String,
    /// The SQS message id.
    pub message_id: String,
    /// Why it is not an envelope.
    pub reason: String,
}

/// What one [`SqsBroker::receive`] got.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Decoded messages, in the order SQS returned them.
    pub deliveries: Vec<SqsDelivery>,
    /// Messages that are not kombu envelopes (still in flight: the caller settles them).
    pub undecodable: Vec<Undecodable>,
}

/// `ApproximateNumberOfMessages` and `ApproximateNumberOfMessagesNotVisible` of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages available for retrieval.
    pub visible: u64,
    /// Messages received and not yet deleted or made visible again.
    pub not_visible: u64,
}

/// A handle on SQS: cheap to clone, shared by every task of a worker.
#[derive(Clone)]
pub struct SqsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// Clients of predefined queues that have their own credentials or region.
    queue_clients: HashMap<String, Client>,
    opts: SqsOptions,
    /// SQS queue name → queue URL.
    urls: Mutex<BTreeMap<String, String>>,
}

impl SqsBroker {
    /// Set up a client for `url` (see [`SqsUrl`]) with `opts`. Credentials come from the URL
    /// when it has them, else from the SDK's default chain (environment, web identity / IRSA,
    /// profile, container and instance metadata); the region from `opts.region`, else the
    /// SDK's chain, else `us-east-1` (kombu's default). No request is made here.
    pub async fn connect(url: &str, opts: SqsOptions) -> Result<SqsBroker> {
        let parsed = SqsUrl::parse(url)?;
        let region = RegionProviderChain::first_try(opts.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new("us-east-1"));
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
        if let Some(key) = &parsed.access_key_id {
            loader = loader.credentials_provider(Credentials::new(
                key,
                parsed.secret_access_key.clone().unwrap_or_default(),
                None,
                None,
                "celery-broker-url",
            ));
        }
        if let Some(endpoint) = parsed.endpoint_url(opts.is_secure) {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk = loader.load().await;
        let client = Client::new(&sdk);
        let mut queue_clients = HashMap::new();
        let mut urls = BTreeMap::new();
        for (name, q) in &opts.predefined_queues {
            urls.insert(name.clone(), q.url.clone());
            if q.access_key_id.is_none() && q.region.is_none() {
                continue;
            }
            let mut conf = aws_sdk_sqs::config::Builder::from(&sdk);
            if let Some(key) = &q.access_key_id {
                conf = conf.credentials_provider(Credentials::new(
                    key,
                    q.secret_access_key.clone().unwrap_or_default(),
                    None,
                    None,
                    "celery-predefined-queue",
                ));
            }
            if let Some(region) = &q.region {
                conf = conf.region(Region::new(region.clone()));
            }
            queue_clients.insert(name.clone(), Client::from_conf(conf.build()));
        }
        Ok(SqsBroker {
            inner: Arc::new(Inner {
                client,
                queue_clients,
                opts,
                urls: Mutex::new(urls),
            }),
        })
    }

    /// The options this broker was made with.
    pub fn options(&self) -> &SqsOptions {
        &self.inner.opts
    }

    fn client(&self, sqs_name: &str) -> &Client {
        self.inner
            .queue_clients
            .get(sqs_name)
            .unwrap_or(&self.inner.client)
    }

    /// The URL of Celery queue `queue`, creating the SQS queue when it does not exist (with
    /// kombu's attributes: `VisibilityTimeout`, `FifoQueue` for `.fifo`, then
    /// `sqs-creation-attributes`). With `predefined_queues`, only those are used.
    pub async fn queue_url(&self, queue: &str) -> Result<String> {
        let name = self.inner.opts.sqs_queue_name(queue);
        if let Some(url) = self.cached_url(&name) {
            return Ok(url);
        }
        if !self.inner.opts.predefined_queues.is_empty() {
            return Err(SqsError::UndefinedQueue(name));
        }
        let client = self.client(&name);
        let url = match client.get_queue_url().queue_name(&name).send().await {
            Ok(out) => out.queue_url().unwrap_or_default().to_string(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist()) =>
            {
                let mut req = client.create_queue().queue_name(&name).attributes(
                    QueueAttributeName::VisibilityTimeout,
                    self.inner.opts.visibility_timeout.to_string(),
                );
                if name.ends_with(".fifo") {
                    req = req.attributes(QueueAttributeName::FifoQueue, "true");
                }
                for (k, v) in &self.inner.opts.creation_attributes {
                    req = req.attributes(QueueAttributeName::from(k.as_str()), v);
                }
                let out = req.send().await.map_err(aws("CreateQueue"))?;
                out.queue_url().unwrap_or_default().to_string()
            }
            Err(e) => return Err(aws("GetQueueUrl")(e)),
        };
        if url.is_empty() {
            return Err(SqsError::Aws {
                op: "GetQueueUrl",
                message: format!("no URL returned for queue {name}"),
            });
        }
        self.inner
            .urls
            .lock()
            .expect("url cache lock")
            .insert(name, url.clone());
        Ok(url)
    }

    fn cached_url(&self, sqs_name: &str) -> Option<String> {
        self.inner
            .urls
            .lock()
            .expect("url cache lock")
            .get(sqs_name)
            .cloned()
    }

    /// One `ReceiveMessage` on Celery queue `queue`: up to `max` messages (1–10), waiting up
    /// to `wait_time_seconds` (the option's when `None`) for the first. Bodies are decoded as
    /// kombu does; the ones that are not kombu envelopes come back in
    /// [`Received::undecodable`], still in flight.
    pub async fn receive(&self, queue: &str, max: u32, wait: Option<u32>) -> Result<Received> {
        let url = self.queue_url(queue).await?;
        let name = self.inner.opts.sqs_queue_name(queue);
        let out = self
            .client(&name)
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(max.clamp(1, SQS_MAX_MESSAGES) as i32)
            .wait_time_seconds(wait.unwrap_or(self.inner.opts.wait_time_seconds).min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(aws("ReceiveMessage"))?;
        let mut received = Received::default();
        for m in out.messages.unwrap_or_default() {
            let raw = m.body().unwrap_or_default();
            let receipt_handle = m.receipt_handle().unwrap_or_default().to_string();
            let message_id = m.message_id().unwrap_or_default().to_string();
            let text = body::decode_body(raw);
            match Envelope::parse(text.as_bytes()) {
                Ok(envelope) => received.deliveries.push(SqsDelivery {
                    envelope_json: text.into_owned(),
                    envelope,
                    queue: queue.to_string(),
                    receipt_handle,
                    message_id,
                    receive_count: m
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                        .and_then(|c| c.parse().ok()),
                }),
                Err(e) => received.undecodable.push(Undecodable {
                    queue: queue.to_string(),
                    body: raw.to_string(),
                    receipt_handle,
                    message_id,
                    reason: e.to_string(),
                }),
            }
        }
        Ok(received)
    }

    /// Ack: `DeleteMessage`.
    pub async fn ack(&self, queue: &str, receipt_handle: &str) -> Result<()> {
        let url = self.queue_url(queue).await?;
        let name = self.inner.opts.sqs_queue_name(queue);
        self.client(&name)
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(aws("DeleteMessage"))?;
        Ok(())
    }

    /// Set the visibility timeout of a message in flight: 0 requeues it now; a longer one keeps
    /// a held message (an ETA) from being redelivered.
    pub async fn change_visibility(
        &self,
        queue: &str,
        receipt_handle: &str,
        seconds: u32,
    ) -> Result<()> {
        let url = self.queue_url(queue).await?;
        let name = self.inner.opts.sqs_queue_name(queue);
        self.client(&name)
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds.min(43200) as i32)
            .send()
            .await
            .map_err(aws("ChangeMessageVisibility"))?;
        Ok(())
    }

    /// Requeue: visibility 0, so the message is delivered again right away.
    pub async fn requeue(&self, queue: &str, receipt_handle: &str) -> Result<()> {
        self.change_visibility(queue, receipt_handle, 0).await
    }

    /// Publish like kombu's `basic_publish` on SQS: a fresh `properties.delivery_tag`,
    /// `properties.delivery_info.{exchange, routing_key}`, the envelope JSON (base64 unless
    /// `sqs_base64_encoding` is off) sent to the queue named by the routing key. FIFO queues get
    /// `MessageGroupId` (`properties.MessageGroupId` or `default`) and
    /// `MessageDeduplicationId` (`properties.MessageDeduplicationId` or a fresh UUID); other
    /// queues get `properties.MessageGroupId` when set and `DelaySeconds` from
    /// `properties.delay_seconds`/`DelaySeconds` (clamped to 0–900). Returns the SQS message id.
    pub async fn send(
        &self,
        envelope: &Envelope,
        exchange: &str,
        routing_key: &str,
    ) -> Result<String> {
        if routing_key.is_empty() {
            return Err(SqsError::Message(
                "publishing on SQS needs a routing key (the queue name)".into(),
            ));
        }
        let mut value = envelope.clone().into_value();
        let props = value
            .get_mut("properties")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| SqsError::Message("envelope has no properties".into()))?;
        props.insert(
            "delivery_tag".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
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
        let group = props
            .get("MessageGroupId")
            .and_then(Value::as_str)
            .map(str::to_string);
        let dedup = props
            .get("MessageDeduplicationId")
            .and_then(Value::as_str)
            .map(str::to_string);
        let delay = ["delay_seconds", "DelaySeconds"]
            .iter()
            .find_map(|k| props.get(*k).filter(|v| !v.is_null()))
            .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
            .filter(|d| *d >= 0.0)
            .map(|d| (d as i64).min(MAX_DELAY_SECONDS) as i32);
        let json = serde_json::to_string(&value)
            .map_err(|e| SqsError::Message(format!("cannot serialize envelope: {e}")))?;
        let url = self.queue_url(routing_key).await?;
        let name = self.inner.opts.sqs_queue_name(routing_key);
        let mut req = self
            .client(&name)
            .send_message()
            .queue_url(url)
            .message_body(body::encode_body(
                &json,
                self.inner.opts.sqs_base64_encoding,
            ));
        if routing_key.ends_with(".fifo") {
            req = req
                .message_group_id(group.unwrap_or_else(|| "default".into()))
                .message_deduplication_id(
                    dedup.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                );
        } else {
            if let Some(group) = group {
                req = req.message_group_id(group);
            }
            if let Some(delay) = delay {
                req = req.delay_seconds(delay);
            }
        }
        let out = req.send().await.map_err(aws("SendMessage"))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }

    /// Queue depth for autoscaling: `ApproximateNumberOfMessages` (+ `NotVisible`).
    pub async fn depth(&self, queue: &str) -> Result<QueueDepth> {
        let attrs = self
            .attributes(
                queue,
                &[
                    QueueAttributeName::ApproximateNumberOfMessages,
                    QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                ],
            )
            .await?;
        let get = |k: &QueueAttributeName| -> u64 {
            attrs.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: get(&QueueAttributeName::ApproximateNumberOfMessages),
            not_visible: get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }

    /// The queue's `RedrivePolicy` (JSON text), when it has a dead-letter queue.
    pub async fn redrive_policy(&self, queue: &str) -> Result<Option<String>> {
        let mut attrs = self
            .attributes(queue, &[QueueAttributeName::RedrivePolicy])
            .await?;
        Ok(attrs
            .remove(&QueueAttributeName::RedrivePolicy)
            .filter(|p| !p.is_empty()))
    }

    async fn attributes(
        &self,
        queue: &str,
        names: &[QueueAttributeName],
    ) -> Result<HashMap<QueueAttributeName, String>> {
        let url = self.queue_url(queue).await?;
        let name = self.inner.opts.sqs_queue_name(queue);
        let mut req = self.client(&name).get_queue_attributes().queue_url(url);
        for n in names {
            req = req.attribute_names(n.clone());
        }
        let out = req.send().await.map_err(aws("GetQueueAttributes"))?;
        Ok(out.attributes.unwrap_or_default())
    }
}

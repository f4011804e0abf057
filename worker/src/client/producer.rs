//! [`Producer`]: a signature turned into the messages Python Celery would send for it — no I/O,
//! so the bytes can be compared with captured ones.

use celeriac_broker_bridge::codec::{EncodeOptions, WireTime};
use celeriac_broker_bridge::envelope::Envelope;
use celeriac_broker_bridge::signing::BodySerializer;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::freeze::{freeze, Frozen};
use super::{ClientError, Signature};
use crate::canvas::expand::{Parent, Plan};

/// What the messages a client sends carry besides the call itself.
///
/// [`Producer::prepare`] is what [`Client::send`](super::Client::send) publishes, without the
/// I/O:
///
/// ```
/// use celeriac_worker::client::{chain, chord, group, Producer, Signature};
///
/// let producer = Producer::default(); // queue `celery`, JSON bodies, not inside a task
/// let now = chrono::Utc::now();
///
/// // `add.apply_async((2, 3), queue="high", countdown=10)`: one message on its queue.
/// let add = Signature::new("tasks.add").arg(2).arg(3).queue("high").countdown(10.0);
/// let sent = producer.prepare(&add, now)?;
/// assert_eq!(sent.messages.len(), 1);
/// assert_eq!(sent.messages[0].queue, "high");
/// assert_eq!(sent.result.id(), sent.messages[0].task_id);
///
/// // A chain publishes its first step (the rest travels in its message); its result is the
/// // last step's, whose parent is the first.
/// let flow = chain([
///     Signature::new("tasks.add").arg(2).arg(3),
///     Signature::new("tasks.mul").arg(4),
/// ]);
/// let sent = producer.prepare(&flow, now)?;
/// assert_eq!(sent.messages.len(), 1);
/// assert_eq!(sent.result.parent().map(|p| p.id()), Some(sent.messages[0].task_id.as_str()));
///
/// // A group: one message per task.
/// let sums = group((0..3).map(|i| Signature::new("tasks.add").arg(i).arg(i)));
/// assert_eq!(producer.prepare(&sums, now)?.messages.len(), 3);
///
/// // A chord: its header's messages, after its size is stored in the result backend.
/// let header = (0..3).map(|i| Signature::new("tasks.add").arg(i).arg(i));
/// let sent = producer.prepare(&chord(header, Signature::new("tasks.tsum")), now)?;
/// assert_eq!(sent.messages.len(), 3);
/// assert_eq!(sent.chord_sizes.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [3]);
/// # Ok::<(), celeriac_worker::client::ClientError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    /// The queue of a task sent without `queue` (Celery's `task_default_queue`).
    pub default_queue: String,
    /// `headers.origin`: `gen<pid>@<host>`, as Celery's `anon_nodename()`.
    pub origin: String,
    /// `properties.reply_to` (Celery's `app.thread_oid`: one id per producer).
    pub reply_to: String,
    /// The task sending (its id as `parent_id`, its root as `root_id`); empty outside a task.
    pub parent: Parent,
    /// How task bodies are written: JSON, or signed (`task_serializer = "auth"`).
    pub serializer: BodySerializer,
    /// The chord the sending task is a header member of (for `add_to_chord`).
    pub chord: Option<ChordMember>,
}

/// A chord header member's place in its chord, as its message tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordMember {
    /// The chord's group id.
    pub group_id: String,
    /// The member's index in the header.
    pub group_index: Option<i64>,
    /// The chord body (signature dict).
    pub body: Value,
}

impl Default for Producer {
    fn default() -> Self {
        Producer {
            default_queue: "celery".into(),
            origin: format!(
                "gen{}@{}",
                std::process::id(),
                gethostname::gethostname().to_string_lossy()
            ),
            reply_to: uuid::Uuid::new_v4().to_string(),
            parent: Parent::default(),
            serializer: BodySerializer::Json,
            chord: None,
        }
    }
}

/// One message ready to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The task id.
    pub task_id: String,
    /// The queue (routing key of the default exchange).
    pub queue: String,
    /// The kombu envelope.
    pub envelope: Envelope,
}

/// What sending a signature publishes, in order.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Chord sizes to store in the result backend first: `(group id, size)`.
    pub chord_sizes: Vec<(String, usize)>,
    /// The messages.
    pub messages: Vec<Outgoing>,
    /// The result ids.
    pub result: Frozen,
}

impl Producer {
    /// The messages for sending `sig` at `now`, as Python's `sig.apply_async()` writes them:
    /// the canvas frozen (ids chosen now), `countdown` and `expires` in seconds turned into
    /// times from `now`, then expanded as the worker expands canvases.
    pub fn prepare(&self, sig: &Signature, now: DateTime<Utc>) -> Result<Prepared, ClientError> {
        let mut wire = sig.clone().into_wire();
        absolute_times(&mut wire.options, now)?;
        let result = freeze(&mut wire, &self.reply_to).map_err(ClientError::Canvas)?;
        let mut plan = Plan::default();
        plan.apply(&wire, &[], &Map::new(), &self.parent)
            .map_err(|e| ClientError::Canvas(e.to_string()))?;
        let opts = EncodeOptions {
            now,
            ..EncodeOptions::queue(self.default_queue.clone())
        };
        let messages = plan
            .messages
            .into_iter()
            .map(|mut msg| {
                let queue = msg
                    .routing_key
                    .clone()
                    .unwrap_or_else(|| self.default_queue.clone());
                msg.origin = Some(self.origin.clone());
                msg.reply_to.get_or_insert_with(|| self.reply_to.clone());
                let envelope = msg
                    .to_envelope_as(
                        &EncodeOptions {
                            routing_key: queue.clone(),
                            ..opts.clone()
                        },
                        &self.serializer,
                    )
                    .map_err(|e| ClientError::Publish(format!("cannot sign {}: {e}", msg.id)))?;
                Ok(Outgoing {
                    task_id: msg.id,
                    queue,
                    envelope,
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Prepared {
            chord_sizes: plan.chord_sizes,
            messages,
            result,
        })
    }
}

/// `countdown` → `eta` and `expires` in seconds → a time, both from `now` (Celery's
/// `as_task_v2`), for the signature being sent (its members inherit them).
fn absolute_times(options: &mut Map<String, Value>, now: DateTime<Utc>) -> Result<(), ClientError> {
    let after = |key: &str, v: &Value| -> Result<Option<String>, ClientError> {
        match v {
            Value::Null => Ok(None),
            Value::Number(n) => {
                let s = n
                    .as_f64()
                    .filter(|s| s.is_finite())
                    .ok_or_else(|| ClientError::Canvas(format!("{key} should be finite")))?;
                let delta = chrono::Duration::microseconds((s * 1e6).round() as i64);
                Ok(Some(WireTime::from_utc(now + delta).raw))
            }
            _ => Err(ClientError::Canvas(format!(
                "{key} should be a number of seconds"
            ))),
        }
    };
    // As Celery: a countdown (when not 0) wins over an eta.
    if let Some(countdown) = options.remove("countdown") {
        if countdown.as_f64() != Some(0.0) {
            if let Some(eta) = after("countdown", &countdown)? {
                options.insert("eta".into(), Value::String(eta));
            }
        }
    }
    if let Some(expires @ Value::Number(_)) = options.get("expires") {
        let at = after("expires", expires)?;
        options.insert("expires".into(), at.map_or(Value::Null, Value::String));
    }
    Ok(())
}

//! [`TaskMessage`]: a decoded task message, protocol-neutral and shaped like protocol 2.

use serde_json::{Map, Value};

use super::signature::Signature;
use super::timestamp::WireTime;

/// A decoded Celery task message (protocol 1, hybrid and 2 all end up in this protocol-2 shape).
///
/// `args`/`kwargs` are JSON exactly as the producer serialized them (kombu type tags untouched,
/// integers of any size exact; msgpack/yaml bodies converted to the same JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// Wire protocol the producer used: 1 or 2 (a hybrid counts as 2: it has `headers.task`).
    pub protocol: u8,
    /// Task id (`headers.id`).
    pub id: String,
    /// Registered task name (`headers.task`).
    pub task: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Earliest execution time.
    pub eta: Option<WireTime>,
    /// Deadline after which the task must not run (revoked as expired).
    pub expires: Option<WireTime>,
    /// Previous attempts (0 on first delivery).
    pub retries: i64,
    /// `properties.priority` (0–9 for Celery; 0 is served first on Redis).
    pub priority: Option<u8>,
    /// First task of the workflow.
    pub root_id: Option<String>,
    /// Task that published this one.
    pub parent_id: Option<String>,
    /// Group id when this task is a group/chord member.
    pub group: Option<String>,
    /// Position in the group.
    pub group_index: Option<i64>,
    /// `(hard, soft)` limits in seconds.
    pub timelimit: (Option<f64>, Option<f64>),
    /// Signatures to apply with the result on success (`link`).
    pub callbacks: Vec<Signature>,
    /// Signatures to apply on failure (`link_error`).
    pub errbacks: Vec<Signature>,
    /// Remaining chain, in reverse order: the last element runs next.
    pub chain: Vec<Signature>,
    /// Chord callback when this task is a chord header member.
    pub chord: Option<Signature>,
    /// Display name to use instead of `task`.
    pub shadow: Option<String>,
    /// Per-call `ignore_result` (`None`: use the task's own setting).
    pub ignore_result: Option<bool>,
    /// `gen<pid>@<host>` of the producer.
    pub origin: Option<String>,
    /// `repr` of args, for logs and events only.
    pub argsrepr: Option<String>,
    /// `repr` of kwargs, for logs and events only.
    pub kwargsrepr: Option<String>,
    /// Stamps `{name: value}` (empty when unstamped).
    pub stamps: Map<String, Value>,
    /// Names of the stamped headers, when stamped.
    pub stamped_headers: Option<Vec<String>>,
    /// How many times the task was replaced (`Task.replace`).
    pub replaced_task_nesting: i64,
    /// Every header this codec does not interpret (custom `apply_async(headers=…)`, `traceparent`,
    /// protocol-1 leftovers), in order. Transport keys `compression` and `redelivered` are not kept.
    pub extra_headers: Map<String, Value>,
    /// The envelope's `content-type` the body was decoded with.
    pub content_type: String,
    /// `properties.delivery_tag`: the ack-emulation id.
    pub delivery_tag: Option<String>,
    /// `properties.delivery_info.exchange` (`""`: the default exchange).
    pub exchange: Option<String>,
    /// `properties.delivery_info.routing_key` (the queue for the default exchange).
    pub routing_key: Option<String>,
    /// `properties.reply_to`.
    pub reply_to: Option<String>,
    /// `properties.correlation_id`.
    pub correlation_id: Option<String>,
    /// Whether kombu marked the message as restored from `unacked`.
    pub redelivered: bool,
}

impl TaskMessage {
    /// A new protocol-2 message with the given id, name and arguments; every other field empty.
    pub fn new(
        id: impl Into<String>,
        task: impl Into<String>,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Self {
        let id = id.into();
        TaskMessage {
            protocol: 2,
            correlation_id: Some(id.clone()),
            root_id: Some(id.clone()),
            id,
            task: task.into(),
            args,
            kwargs,
            eta: None,
            expires: None,
            retries: 0,
            priority: None,
            parent_id: None,
            group: None,
            group_index: None,
            timelimit: (None, None),
            callbacks: Vec::new(),
            errbacks: Vec::new(),
            chain: Vec::new(),
            chord: None,
            shadow: None,
            ignore_result: None,
            origin: None,
            argsrepr: None,
            kwargsrepr: None,
            stamps: Map::new(),
            stamped_headers: None,
            replaced_task_nesting: 0,
            extra_headers: Map::new(),
            content_type: super::content::JSON.to_string(),
            delivery_tag: None,
            exchange: None,
            routing_key: None,
            reply_to: None,
            redelivered: false,
        }
    }

    /// The name to show in logs and events: `shadow` when set and non-empty, else `task`.
    pub fn display_name(&self) -> &str {
        match self.shadow.as_deref() {
            Some(s) if !s.is_empty() => s,
            _ => &self.task,
        }
    }
}

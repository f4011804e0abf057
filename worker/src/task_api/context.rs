//! What a running task knows about its call.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use celeriac_broker_bridge::codec::{Signature, WireTime};
use serde_json::{Map, Value};

use crate::client::{Client, ClientError};
use crate::task_api::data::DataAccess;
use crate::task_api::properties::Properties;
use crate::task_api::soft_limit::{Signals, SoftTimeLimitExceeded};

/// The request a task is running for (Celery's `self.request`).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TaskContext {
    /// Task id (the result key).
    pub id: String,
    /// Registered task name.
    pub name: String,
    /// How many times this task was retried before this run.
    pub retries: u32,
    /// Id of the first task of the workflow.
    pub root_id: Option<String>,
    /// Id of the task that published this one.
    pub parent_id: Option<String>,
    /// Group id when the task is a member of a group or chord header.
    pub group: Option<String>,
    /// The queue the message was taken from.
    pub queue: String,
    /// This worker's node name (`celeriac@host`).
    pub hostname: String,
    /// Headers the producer added (`apply_async(headers=...)`, `traceparent`, ...).
    pub headers: Map<String, Value>,
    /// Positional arguments as sent.
    pub args: Vec<Value>,
    /// Keyword arguments as sent.
    pub kwargs: Map<String, Value>,
    /// Where and how the message was delivered (Celery's `request.delivery_info`).
    pub delivery_info: DeliveryInfo,
    /// The message's ETA as the producer wrote it (`countdown`/`eta`), `None` when it had none.
    pub eta: Option<WireTime>,
    /// The message's expiry time as the producer wrote it, `None` when it has none.
    pub expires: Option<WireTime>,
    /// The message's transport properties exactly as kombu stores them on Redis
    /// (`correlation_id`, `reply_to`, `delivery_mode`, `delivery_info`, `priority`,
    /// `body_encoding`, `delivery_tag`, and any other property the producer set, e.g. `app_id`),
    /// as Celery's `request.properties` (read from the message the first time they are looked
    /// at).
    pub properties: Properties,
    /// The hard time limit in force for this run: the message's `timelimit` header, else the
    /// task's `time_limit`, else the worker's `task_time_limit` (Celery's `request.time_limit`).
    pub time_limit: Option<Duration>,
    /// The soft time limit in force for this run, resolved as [`TaskContext::time_limit`]
    /// (Celery's `request.soft_time_limit`).
    pub soft_time_limit: Option<Duration>,
    /// How many times the task was replaced before this run (`Task.replace` adds one).
    pub replaced_task_nesting: u32,
    /// The `reply_to` property: the queue the producer's RPC result backend reads.
    pub reply_to: Option<String>,
    /// The `correlation_id` property (the task id, for Celery producers).
    pub correlation_id: Option<String>,
    /// The chord callback when this task is a member of a chord's header.
    pub chord: Option<Signature>,
    /// This task's position in its group, when it is a group member.
    pub group_index: Option<i64>,
    /// The worker's read-through cache and SQL sources (when `[sources]`/`[[tasks]]` are configured).
    pub data: Option<Arc<DataAccess>>,
    /// Time-limit state of this run (see [`TaskContext::catch_soft_time_limit`]).
    pub time_limits: Signals,
    /// The producer bound to this run (see [`TaskContext::client`]).
    pub(crate) client: Option<Client>,
}

/// Where and how a message was delivered, as Celery's `request.delivery_info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryInfo {
    /// The exchange it was published to (`""`: the default exchange, Celery's usual one).
    pub exchange: Option<String>,
    /// Its routing key (the queue name on the default exchange).
    pub routing_key: Option<String>,
    /// The message priority (`apply_async(priority=...)`), `None` when the producer gave none.
    pub priority: Option<u8>,
    /// Whether the message was delivered before and put back (a `Reject(requeue=True)`, a lost
    /// worker, a visibility timeout).
    pub redelivered: bool,
}

impl TaskContext {
    /// A [`Client`] on the worker's broker and result backend that sends as this task: the
    /// messages get `parent_id` = this task's id and `root_id` = its root, as a Python task
    /// calling `apply_async` does. Not available on an SQS broker, nor in task processes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use celeriac_worker::client::Signature;
    /// use celeriac_worker::{TaskContext, TaskError};
    /// use serde_json::Value;
    ///
    /// #[celeriac_worker::task(name = "tasks.double_sum")]
    /// async fn double_sum(ctx: TaskContext, a: i64, b: i64) -> Result<Value, TaskError> {
    ///     let client = ctx.client()?;
    ///     let sum = client.send(&Signature::new("tasks.add").arg(a).arg(b)).await?;
    ///     // Celery's `get(disable_sync_subtasks=False)`: a plain `get` is refused in a task.
    ///     let sum = sum.get_with(Duration::from_secs(30), false).await?;
    ///     Ok(Value::from(sum.as_i64().unwrap_or(0) * 2))
    /// }
    /// ```
    pub fn client(&self) -> Result<&Client, ClientError> {
        self.client.as_ref().ok_or_else(|| {
            ClientError::Unavailable(
                "no producer here: the worker's broker is SQS, or the task runs in a task process"
                    .into(),
            )
        })
    }

    /// Python's `try: ... except SoftTimeLimitExceeded:` around `fut`: when the run's soft time
    /// limit passes during `fut`, `fut` is dropped and the result is `Err(SoftTimeLimitExceeded)`;
    /// the task goes on (its cleanup) and may still succeed. Outside a catch, the soft limit stops
    /// an async task, which fails with `SoftTimeLimitExceeded` as in Celery. It is raised once
    /// per run (in the innermost catch running then); the hard limit still applies.
    pub async fn catch_soft_time_limit<F: Future>(
        &self,
        fut: F,
    ) -> Result<F::Output, SoftTimeLimitExceeded> {
        self.time_limits.catch(fut).await
    }

    /// For loops in blocking tasks (code that cannot be interrupted): `Err(SoftTimeLimitExceeded)`
    /// once the soft limit (or the hard one) has passed, so `ctx.check_time_limits()?` stops the
    /// loop and fails the run with it, and matching the error is the cleanup path.
    pub fn check_time_limits(&self) -> Result<(), SoftTimeLimitExceeded> {
        if self.time_limits.soft_passed() || self.time_limits.hard_passed() {
            return Err(SoftTimeLimitExceeded);
        }
        Ok(())
    }
}

//! What a running task knows about its call.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::query_tasks::DataAccess;

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
    /// The worker's read-through cache and SQL sources (when `[sources]`/`[[tasks]]` are configured).
    pub data: Option<Arc<DataAccess>>,
}

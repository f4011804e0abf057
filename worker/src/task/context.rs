//! What a running task knows about its call.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::query_tasks::DataAccess;
use crate::task::TaskError;
use crate::time_limits::{soft_time_limit_exceeded, Signals};

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
    /// Time-limit signals of this run (see [`TaskContext::soft_time_limit`]).
    pub time_limits: Signals,
}

impl TaskContext {
    /// Resolves when the run's soft time limit passes (never if it has none). A task that stops
    /// because of it returns [`soft_time_limit_exceeded`]
    /// (stored as Celery's `SoftTimeLimitExceeded`) or any value of its own.
    pub async fn soft_time_limit(&self) {
        self.time_limits.soft().await
    }

    /// Whether the soft time limit has passed.
    pub fn soft_time_limit_exceeded(&self) -> bool {
        self.time_limits.soft_passed()
    }

    /// For loops in blocking tasks: `Err(SoftTimeLimitExceeded)` once the soft limit (or the hard
    /// one) has passed, so `ctx.check_time_limits()?` stops the loop.
    pub fn check_time_limits(&self) -> Result<(), TaskError> {
        if self.time_limits.soft_passed() || self.time_limits.hard_passed() {
            return Err(soft_time_limit_exceeded());
        }
        Ok(())
    }
}

//! Per-task options (Celery's task attributes); `None` falls back to the worker's settings.

use std::time::Duration;

/// Options of one registered task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// How many retries before the failure is final (Celery's default: 3; `None` = unlimited).
    pub max_retries: Option<u32>,
    /// Delay of a retry that gives no countdown (Celery's default: 180 s).
    pub default_retry_delay: Duration,
    /// Ack after the task ran instead of before (`None` = `task_acks_late`).
    pub acks_late: Option<bool>,
    /// Store no result (`None` = `task_ignore_result`).
    pub ignore_result: Option<bool>,
    /// Write a STARTED state when the task begins (`None` = `task_track_started`).
    pub track_started: Option<bool>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            max_retries: Some(3),
            default_retry_delay: Duration::from_secs(180),
            acks_late: None,
            ignore_result: None,
            track_started: None,
        }
    }
}

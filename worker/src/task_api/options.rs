//! Per-task options (Celery's task attributes); `None` falls back to the worker's settings.

use std::time::Duration;

use crate::config::{RateLimit, RateLimitScope};

/// Options of one registered task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// How many retries before the failure is final (Celery's default: 3; `None` = unlimited).
    pub max_retries: Option<u32>,
    /// Delay of a retry that gives no countdown (Celery's default: 180 s).
    pub default_retry_delay: Duration,
    /// Ack after the task ran instead of before (`None` = `task_acks_late`).
    pub acks_late: Option<bool>,
    /// With late acks, still ack a failed or timed-out run (`None` =
    /// `task_acks_on_failure_or_timeout`); when false the message is rejected: dead-lettered.
    pub acks_on_failure_or_timeout: Option<bool>,
    /// With late acks, requeue a run whose process was lost (`None` = `task_reject_on_worker_lost`).
    pub reject_on_worker_lost: Option<bool>,
    /// Store no result (`None` = `task_ignore_result`).
    pub ignore_result: Option<bool>,
    /// Write a STARTED state when the task begins (`None` = `task_track_started`).
    pub track_started: Option<bool>,
    /// Hard time limit (`None` = `task_time_limit`); the message's `timelimit` header wins.
    pub time_limit: Option<Duration>,
    /// Soft time limit (`None` = `task_soft_time_limit`); the message's `timelimit` header wins.
    pub soft_time_limit: Option<Duration>,
    /// Rate limit (`None` = `task_default_rate_limit`); remote control's `rate_limit` wins.
    pub rate_limit: Option<RateLimit>,
    /// Whom the rate limit binds (`None` = the `rate_limit_scope` setting).
    pub rate_limit_scope: Option<RateLimitScope>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            max_retries: Some(3),
            default_retry_delay: Duration::from_secs(180),
            acks_late: None,
            acks_on_failure_or_timeout: None,
            reject_on_worker_lost: None,
            ignore_result: None,
            track_started: None,
            time_limit: None,
            soft_time_limit: None,
            rate_limit: None,
            rate_limit_scope: None,
        }
    }
}

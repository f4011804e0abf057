//! Soft and hard time limits of a task run (Celery's `soft_time_limit` / `time_limit`).
//!
//! Each limit comes from the message's `timelimit` header, else the task's option, else the
//! worker setting (`0` counts as unset, as in Celery). At the soft limit the task's
//! [`TaskContext::soft_time_limit`](crate::TaskContext::soft_time_limit) signal fires; the task
//! may stop and fail with [`soft_time_limit_exceeded`] (FAILURE `SoftTimeLimitExceeded`), return a
//! value, or ignore it. At the hard limit the task is stopped for sure: its future is aborted and
//! the run fails with `TimeLimitExceeded`. Blocking tasks (see [`crate::task::blocking`]) run on
//! their own thread, which cannot be killed: the run still fails and frees its slot at the hard
//! limit, and the thread is abandoned and counted ([`abandoned_threads`]) until it returns.
//! Process tasks (see [`crate::process`]) run in a child process, which is killed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use celeriac_broker_bridge::codec::TaskMessage;
use serde_json::{Number, Value};
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::task::{PyException, TaskError, TaskOptions};

/// The limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// Hard limit: the run is stopped and fails with `TimeLimitExceeded`.
    pub hard: Option<Duration>,
    /// Soft limit: the task's soft signal fires.
    pub soft: Option<Duration>,
}

impl Limits {
    /// Header `timelimit` (`[hard, soft]`) first, then the task's options, then the settings.
    pub fn resolve(msg: &TaskMessage, options: &TaskOptions, settings: &Settings) -> Limits {
        let header = |v: Option<f64>| {
            v.filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
        };
        let set = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        Limits {
            hard: header(msg.timelimit.0)
                .or(set(options.time_limit))
                .or(set(settings.task_time_limit)),
            soft: header(msg.timelimit.1)
                .or(set(options.soft_time_limit))
                .or(set(settings.task_soft_time_limit)),
        }
    }
}

/// The signals a running task can observe (kept in its [`TaskContext`](crate::TaskContext)).
#[derive(Debug, Clone, Default)]
pub struct Signals {
    soft: CancellationToken,
    hard: CancellationToken,
}

impl Signals {
    /// Resolves when the soft limit passes (never when there is none).
    pub async fn soft(&self) {
        self.soft.cancelled().await
    }

    /// Whether the soft limit has passed.
    pub fn soft_passed(&self) -> bool {
        self.soft.is_cancelled()
    }

    /// Whether the hard limit has passed.
    pub fn hard_passed(&self) -> bool {
        self.hard.is_cancelled()
    }
}

/// How a supervised run ended.
pub enum Supervised<T> {
    /// The task's future finished (or was aborted by someone else, e.g. a revoke).
    Finished(Result<T, JoinError>),
    /// The hard limit passed; the task was aborted.
    TimedOut(Duration),
}

/// Wait for `join`, firing the soft signal at the soft limit and aborting at the hard limit.
pub async fn supervise<T>(
    mut join: JoinHandle<T>,
    limits: Limits,
    signals: &Signals,
) -> Supervised<T> {
    let soft = async {
        match limits.soft {
            Some(d) if limits.hard.is_none_or(|h| d < h) => {
                tokio::time::sleep(d).await;
                tracing::warn!(
                    soft_time_limit_s = d.as_secs_f64(),
                    "soft time limit exceeded"
                );
                signals.soft.cancel();
            }
            _ => {}
        }
        std::future::pending::<()>().await
    };
    let hard = async {
        match limits.hard {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        outcome = &mut join => Supervised::Finished(outcome),
        () = hard => {
            let d = limits.hard.unwrap_or_default();
            signals.hard.cancel();
            join.abort();
            tracing::error!(time_limit_s = d.as_secs_f64(), "hard time limit exceeded; task stopped");
            Supervised::TimedOut(d)
        }
        () = soft => unreachable!("the soft timer never completes"),
    }
}

/// Celery's `billiard.exceptions.TimeLimitExceeded(<seconds>)`.
pub fn time_limit_exceeded(limit: Duration) -> PyException {
    let secs = limit.as_secs_f64();
    let number = if secs.fract() == 0.0 && secs < 9.0e15 {
        Number::from(secs as u64)
    } else {
        Number::from_f64(secs).unwrap_or_else(|| Number::from(0))
    };
    PyException {
        exc_type: "TimeLimitExceeded".into(),
        exc_module: "billiard.exceptions".into(),
        args: vec![Value::Number(number)],
    }
}

/// The error a task returns when it stops because of its soft limit: Celery's
/// `billiard.exceptions.SoftTimeLimitExceeded()`.
pub fn soft_time_limit_exceeded() -> TaskError {
    TaskError::Fail(PyException {
        exc_type: "SoftTimeLimitExceeded".into(),
        exc_module: "billiard.exceptions".into(),
        args: vec![],
    })
}

static ABANDONED: AtomicUsize = AtomicUsize::new(0);

/// Blocking-task threads still running after their run was stopped by its hard limit.
pub fn abandoned_threads() -> usize {
    ABANDONED.load(Ordering::Relaxed)
}

pub(crate) fn thread_abandoned() {
    let n = ABANDONED.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::warn!(
        abandoned_threads = n,
        "blocking task thread abandoned (a thread cannot be killed; it runs until the task returns)"
    );
}

pub(crate) fn abandoned_thread_ended() {
    let n = ABANDONED.fetch_sub(1, Ordering::Relaxed) - 1;
    tracing::info!(
        abandoned_threads = n,
        "abandoned blocking task thread ended"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_then_option_then_setting() {
        let mut msg = TaskMessage::new("id", "t", vec![], serde_json::Map::new());
        let mut opts = TaskOptions::default();
        let settings = Settings {
            task_time_limit: Some(Duration::from_secs(30)),
            task_soft_time_limit: Some(Duration::from_secs(20)),
            ..Settings::default()
        };
        let l = Limits::resolve(&msg, &opts, &settings);
        assert_eq!(l.hard, Some(Duration::from_secs(30)));
        assert_eq!(l.soft, Some(Duration::from_secs(20)));
        opts.time_limit = Some(Duration::from_secs(10));
        assert_eq!(
            Limits::resolve(&msg, &opts, &settings).hard,
            Some(Duration::from_secs(10))
        );
        msg.timelimit = (Some(1.5), Some(0.0));
        let l = Limits::resolve(&msg, &opts, &settings);
        assert_eq!(l.hard, Some(Duration::from_millis(1500)));
        assert_eq!(
            l.soft,
            Some(Duration::from_secs(20)),
            "0 in the header is unset"
        );
    }

    #[test]
    fn exceptions_as_celery() {
        assert_eq!(
            time_limit_exceeded(Duration::from_secs(2)).args,
            vec![Value::from(2)]
        );
        assert_eq!(
            serde_json::to_string(&time_limit_exceeded(Duration::from_millis(1500)).args).unwrap(),
            "[1.5]"
        );
        match soft_time_limit_exceeded() {
            TaskError::Fail(e) => {
                assert_eq!(
                    (e.exc_module.as_str(), e.exc_type.as_str()),
                    ("billiard.exceptions", "SoftTimeLimitExceeded")
                );
                assert!(e.args.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn hard_limit_aborts_and_soft_fires_first() {
        let signals = Signals::default();
        let s = signals.clone();
        let join = tokio::spawn(async move {
            s.soft().await;
            std::future::pending::<()>().await
        });
        let limits = Limits {
            hard: Some(Duration::from_millis(200)),
            soft: Some(Duration::from_millis(50)),
        };
        match supervise(join, limits, &signals).await {
            Supervised::TimedOut(d) => assert_eq!(d, Duration::from_millis(200)),
            Supervised::Finished(_) => panic!("should time out"),
        }
        assert!(signals.soft_passed() && signals.hard_passed());
        let quick = tokio::spawn(async { 7 });
        match supervise(quick, limits, &Signals::default()).await {
            Supervised::Finished(Ok(7)) => {}
            _ => panic!("should finish"),
        }
    }
}

//! Soft and hard time limits of a task run (Celery's `soft_time_limit` / `time_limit`).
//!
//! Each limit comes from the message's `timelimit` header, else the task's option, else the
//! worker setting (`0` counts as unset, as in Celery).
//!
//! At the soft limit [`SoftTimeLimitExceeded`] is raised in the task, as Celery raises it: an
//! async task is stopped at its next `.await` and fails with it (FAILURE
//! `SoftTimeLimitExceeded`), unless it is inside
//! [`TaskContext::catch_soft_time_limit`](crate::TaskContext::catch_soft_time_limit) (Python's
//! `try: ... except SoftTimeLimitExceeded:`), which gets the error and lets the task clean up and
//! finish. It is raised once per run. Synchronous code cannot be interrupted: blocking and
//! process tasks see the soft limit when they check it
//! ([`TaskContext::check_time_limits`](crate::TaskContext::check_time_limits),
//! [`crate::process::check_soft_time_limit`]), which returns the same error.
//!
//! At the hard limit the task is stopped for sure: its future is aborted and
//! the run fails with `TimeLimitExceeded`. Blocking tasks (see [`crate::task_api::blocking`]) run on
//! their own thread, which cannot be killed: the run still fails and frees its slot at the hard
//! limit, and the thread is abandoned and counted ([`abandoned_threads`]) until it returns.
//! Process tasks (see [`crate::process`]) run in a child process, which is killed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use celeriac_broker_bridge::codec::TaskMessage;
use serde_json::{Number, Value};
use tokio::task::{JoinError, JoinHandle};

use crate::config::Settings;
pub(crate) use crate::task_api::soft_limit::{Signals, SoftTimeLimitExceeded};
use crate::task_api::{Handler, PyException, TaskContext, TaskFuture, TaskOptions};

/// The longest limit kept: Celery takes any positive float (`time_limit=1e20` is accepted and
/// never reached); a longer one is clamped to this, which no run reaches either.
pub(crate) const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Limits {
    /// Hard limit: the run is stopped and fails with `TimeLimitExceeded`.
    pub hard: Option<Duration>,
    /// Soft limit: the task's soft signal fires.
    pub soft: Option<Duration>,
}

impl Limits {
    /// Header `timelimit` (`[hard, soft]`) first, then the task's options, then the settings.
    /// A header value that is not a positive finite number counts as unset; one longer than
    /// [`LONGEST`] is clamped to it (never a panic, whatever the message says).
    pub(crate) fn resolve(msg: &TaskMessage, options: &TaskOptions, settings: &Settings) -> Limits {
        let header = |v: Option<f64>| {
            v.filter(|s| s.is_finite() && *s > 0.0)
                .map(|s| Duration::try_from_secs_f64(s).map_or(LONGEST, |d| d.min(LONGEST)))
        };
        let set = |d: Option<Duration>| d.filter(|d| !d.is_zero()).map(|d| d.min(LONGEST));
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

/// A task whose code sees the soft limit by checking it (blocking and process tasks): the worker
/// never stops it at the soft limit.
pub(crate) struct Polled<H>(pub(crate) H);

impl<H: Handler> Handler for Polled<H> {
    fn on_threads(&self) -> bool {
        true
    }

    fn params(&self) -> Option<crate::task_api::params::Params> {
        self.0.params()
    }

    fn call(&self, ctx: TaskContext) -> TaskFuture {
        ctx.time_limits.raised.store(true, Ordering::SeqCst);
        self.0.call(ctx)
    }
}

/// How a supervised run ended.
pub(crate) enum Supervised<T> {
    /// The task's future finished (or was aborted by someone else, e.g. a revoke).
    Finished(Result<T, JoinError>),
    /// The hard limit passed; the task was aborted.
    TimedOut(Duration),
    /// The soft limit passed and the task did not catch it; the task was aborted.
    SoftTimedOut,
}

/// Wait for `join`, raising [`SoftTimeLimitExceeded`] at the soft limit (aborting the task unless
/// it catches it) and aborting at the hard limit.
pub(crate) async fn supervise<T>(
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
                signals.uncaught().await;
            }
            _ => std::future::pending().await,
        }
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
        () = soft => {
            join.abort();
            tracing::warn!("soft time limit not handled by the task; task stopped");
            Supervised::SoftTimedOut
        }
    }
}

/// Celery's `billiard.exceptions.TimeLimitExceeded(<seconds>)`.
pub(crate) fn time_limit_exceeded(limit: Duration) -> PyException {
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

static ABANDONED: AtomicUsize = AtomicUsize::new(0);

/// Blocking-task threads still running after their run was stopped by its hard limit.
pub(crate) fn abandoned_threads() -> usize {
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
    use crate::task_api::TaskError;

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
    fn hostile_header_values_are_clamped_or_unset() {
        let mut msg = TaskMessage::new("id", "t", vec![], serde_json::Map::new());
        let (opts, settings) = (TaskOptions::default(), Settings::default());
        for (hard, soft) in [
            (1e20, 1e300),
            (f64::MAX, 1e19),
            (LONGEST.as_secs_f64() * 2.0, 1e20),
        ] {
            msg.timelimit = (Some(hard), Some(soft));
            let l = Limits::resolve(&msg, &opts, &settings);
            assert_eq!((l.hard, l.soft), (Some(LONGEST), Some(LONGEST)));
        }
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            -1e300,
            0.0,
        ] {
            msg.timelimit = (Some(bad), Some(bad));
            assert_eq!(Limits::resolve(&msg, &opts, &settings), Limits::default());
        }
        msg.timelimit = (Some(1e-300), None);
        assert_eq!(
            Limits::resolve(&msg, &opts, &settings).hard,
            Some(Duration::ZERO)
        );
        assert_eq!(
            time_limit_exceeded(LONGEST).args,
            vec![Value::from(LONGEST.as_secs())]
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
        match TaskError::from(SoftTimeLimitExceeded) {
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

    const LIMITS: Limits = Limits {
        hard: Some(Duration::from_millis(200)),
        soft: Some(Duration::from_millis(50)),
    };

    async fn run<T: Send + 'static>(
        task: impl FnOnce(Signals) -> tokio::task::JoinHandle<T>,
    ) -> (Supervised<T>, Signals) {
        let signals = Signals::default();
        let join = task(signals.clone());
        (supervise(join, LIMITS, &signals).await, signals)
    }

    #[tokio::test(start_paused = true)]
    async fn an_uncaught_soft_limit_stops_the_task() {
        let (out, signals) = run(|_| tokio::spawn(std::future::pending::<()>())).await;
        assert!(matches!(out, Supervised::SoftTimedOut));
        assert!(signals.soft_passed() && !signals.hard_passed());
        let quick = tokio::spawn(async { 7 });
        assert!(matches!(
            supervise(quick, LIMITS, &Signals::default()).await,
            Supervised::Finished(Ok(7))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_caught_soft_limit_lets_the_task_clean_up_and_finish() {
        let (out, _) = run(|s| {
            tokio::spawn(async move {
                let caught = s.catch(std::future::pending::<()>()).await;
                // Cleanup after the raise, with awaits: not stopped, and not raised again.
                s.catch(tokio::time::sleep(Duration::from_millis(20)))
                    .await
                    .map(|()| caught)
            })
        })
        .await;
        match out {
            Supervised::Finished(Ok(Ok(Err(SoftTimeLimitExceeded)))) => {}
            _ => panic!("should finish after catching"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_innermost_catch_takes_the_raise_once() {
        let (out, _) = run(|s| {
            tokio::spawn(async move {
                let inner = s.clone();
                s.catch(async move {
                    let caught = inner.catch(std::future::pending::<()>()).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    caught
                })
                .await
            })
        })
        .await;
        match out {
            Supervised::Finished(Ok(Ok(Err(SoftTimeLimitExceeded)))) => {}
            _ => panic!("the inner catch should get it and the outer one finish"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_hard_limit_still_stops_a_task_that_caught_the_soft_one() {
        let (out, signals) = run(|s| {
            tokio::spawn(async move {
                let _ = s.catch(std::future::pending::<()>()).await;
                std::future::pending::<()>().await
            })
        })
        .await;
        match out {
            Supervised::TimedOut(d) => assert_eq!(d, Duration::from_millis(200)),
            _ => panic!("should time out"),
        }
        assert!(signals.soft_passed() && signals.hard_passed());
    }

    #[tokio::test(start_paused = true)]
    async fn polled_tasks_are_not_stopped_at_the_soft_limit() {
        let (out, _) = run(|s| {
            s.raised.store(true, Ordering::SeqCst);
            tokio::spawn(async move {
                s.soft().await;
                "saw it"
            })
        })
        .await;
        assert!(matches!(out, Supervised::Finished(Ok("saw it"))));
    }
}

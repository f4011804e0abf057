//! Rate limits: Celery's `rate_limit` (`10/s`, `100/m`, `1000/h`, a number = per second) per task
//! type, enforced by delaying a run's start.
//!
//! The limit of a task is remote control's (`rate_limit` command) if one was set, else the
//! task's option, else `task_default_rate_limit`. It is read at each start, so a change applies
//! to the next run. A waiting message stays reserved (unacked) and holds no execution slot, so
//! other task types keep running. Scope [`Scope::Worker`] (Celery's behaviour) limits each worker
//! on its own; [`Scope::Fleet`] shares one schedule among all workers through Redis (see
//! `Broker::reserve_rate_slot`). Both are token buckets of capacity 1: starts are spaced one
//! interval apart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;
use crate::runtime::Runtime;
use crate::task_api::TaskOptions;

/// Whom a rate limit binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Each worker process on its own (Celery's behaviour).
    #[default]
    Worker,
    /// All workers sharing the broker together (celeriac only).
    Fleet,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "worker" => Ok(Scope::Worker),
            "fleet" => Ok(Scope::Fleet),
            _ => Err("expected `worker` or `fleet`".into()),
        }
    }
}

/// The per-worker schedules: the earliest next start of each task type.
#[derive(Default)]
pub(crate) struct Buckets(Mutex<HashMap<String, Instant>>);

impl Buckets {
    /// Reserve the next start of `task` at one start per `interval`; returns when it is.
    pub(crate) fn reserve(&self, task: &str, interval: Duration) -> Instant {
        let now = Instant::now();
        let mut next = self.0.lock().expect("rate buckets lock");
        let slot = next.get(task).copied().filter(|t| *t > now).unwrap_or(now);
        next.insert(task.to_owned(), slot + interval);
        slot
    }
}

/// The limit that applies to `task` now (`None`: unlimited).
pub(crate) fn effective(rt: &Runtime, task: &str, options: &TaskOptions) -> Option<RateLimit> {
    match rt.rate_limits.get(task) {
        Some(set_remotely) => set_remotely,
        None => options
            .rate_limit
            .clone()
            .or_else(|| rt.settings.task_default_rate_limit.clone()),
    }
    .filter(|l| l.per_second > 0.0)
}

/// Wait until `task` may start under its rate limit. Returns `false` if the worker began
/// draining meanwhile (the message is then left held, to be restored).
pub(crate) async fn wait_turn(rt: &Runtime, task: &str, options: &TaskOptions) -> bool {
    let Some(limit) = effective(rt, task, options) else {
        return true;
    };
    let interval = Duration::from_secs_f64((1.0 / limit.per_second).min(86_400.0 * 365.0));
    let scope = options
        .rate_limit_scope
        .unwrap_or(rt.settings.rate_limit_scope);
    let start = match scope {
        Scope::Worker => rt.rate_buckets.reserve(task, interval),
        Scope::Fleet => match rt.broker.reserve_rate_slot(task, interval).await {
            Ok(wait) => Instant::now() + wait,
            Err(e) => {
                // Redis is unreachable: fall back to this worker's own schedule rather than
                // running unlimited or stalling.
                tracing::warn!(error = %e, "fleet rate limit unavailable; limiting per worker");
                rt.rate_buckets.reserve(task, interval)
            }
        },
    };
    if start > Instant::now() {
        tracing::debug!(rate_limit = %limit.text, "rate limited; waiting");
    }
    tokio::select! {
        biased;
        _ = rt.draining.cancelled() => false,
        _ = tokio::time::sleep_until(start) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_parses() {
        assert_eq!("Fleet".parse::<Scope>(), Ok(Scope::Fleet));
        assert_eq!("worker".parse::<Scope>(), Ok(Scope::Worker));
        assert!("all".parse::<Scope>().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn starts_are_spaced_one_interval_apart_per_task() {
        let b = Buckets::default();
        let i = Duration::from_millis(100);
        let t0 = b.reserve("a", i);
        assert_eq!(b.reserve("a", i) - t0, i);
        assert_eq!(b.reserve("a", i) - t0, 2 * i);
        assert!(
            b.reserve("b", i) <= t0 + Duration::from_millis(1),
            "other types are not held up"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            b.reserve("a", i),
            Instant::now(),
            "an idle bucket starts at once"
        );
    }
}

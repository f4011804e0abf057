//! Rate limits: Celery's `rate_limit` (`10/s`, `100/m`, `1000/h`, a number = per second) per task
//! type, enforced by delaying a run's start.
//!
//! The limit of a task is remote control's (`rate_limit` command) if one was set, else the
//! task's option, else `task_default_rate_limit`. It is read at each start, so a change applies
//! to the next run. A waiting message stays reserved (unacked) and holds no execution slot, so
//! other task types keep running. Scope [`RateLimitScope::Worker`] (Celery's behaviour) limits
//! each worker on its own; [`RateLimitScope::Fleet`] shares one schedule among all workers
//! through Redis (see `Broker::reserve_rate_slot`). Both are token buckets of capacity 1: starts
//! are spaced one interval apart.
//!
//! State held by the runtime: it knows the settings, the task options and the broker handle it
//! is given, nothing of the runtime.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use celeriac_broker_bridge::transport::Broker;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{RateLimit, RateLimitScope, Settings};
use crate::task_api::TaskOptions;

/// A worker's rate limits: those set by remote control, the defaults of the settings and the
/// per-worker schedules.
#[derive(Default)]
pub(crate) struct RateLimits {
    /// Set by remote control, by task name (`None`: disabled). A task absent from it keeps its
    /// configured limit.
    remote: Mutex<HashMap<String, Option<RateLimit>>>,
    /// `task_default_rate_limit`.
    default: Option<RateLimit>,
    /// `rate_limit_scope`.
    scope: RateLimitScope,
    /// The per-worker schedules.
    buckets: Buckets,
}

impl RateLimits {
    /// The limits of a worker with these settings (none set remotely yet).
    pub(crate) fn new(settings: &Settings) -> RateLimits {
        RateLimits {
            default: settings.task_default_rate_limit.clone(),
            scope: settings.rate_limit_scope,
            ..RateLimits::default()
        }
    }

    /// The limit set remotely for `task`: `None` = not set remotely, `Some(None)` = disabled.
    pub(crate) fn get(&self, task: &str) -> Option<Option<RateLimit>> {
        self.remote
            .lock()
            .expect("rate limits lock")
            .get(task)
            .cloned()
    }

    /// Set (or disable, with `None`) the limit of `task`.
    pub(crate) fn set(&self, task: &str, limit: Option<RateLimit>) {
        self.remote
            .lock()
            .expect("rate limits lock")
            .insert(task.to_string(), limit);
    }

    /// The limit that applies to `task` now (`None`: unlimited).
    pub(crate) fn effective(&self, task: &str, options: &TaskOptions) -> Option<RateLimit> {
        match self.get(task) {
            Some(set_remotely) => set_remotely,
            None => options.rate_limit.clone().or_else(|| self.default.clone()),
        }
        .filter(|l| l.per_second > 0.0)
    }

    /// Wait until `task` may start under its rate limit (a fleet limit's schedule is on
    /// `broker`). Returns `false` if `draining` was cancelled meanwhile (the message is then
    /// left held, to be restored).
    pub(crate) async fn wait_turn(
        &self,
        broker: &Broker,
        draining: &CancellationToken,
        task: &str,
        options: &TaskOptions,
    ) -> bool {
        let Some(limit) = self.effective(task, options) else {
            return true;
        };
        let interval = Duration::from_secs_f64((1.0 / limit.per_second).min(86_400.0 * 365.0));
        let start = match options.rate_limit_scope.unwrap_or(self.scope) {
            RateLimitScope::Worker => self.buckets.reserve(task, interval),
            RateLimitScope::Fleet => match broker.reserve_rate_slot(task, interval).await {
                Ok(wait) => Instant::now() + wait,
                Err(e) => {
                    // Redis is unreachable: fall back to this worker's own schedule rather than
                    // running unlimited or stalling.
                    tracing::warn!(error = %e, "fleet rate limit unavailable; limiting per worker");
                    self.buckets.reserve(task, interval)
                }
            },
        };
        if start > Instant::now() {
            tracing::debug!(rate_limit = %limit.text, "rate limited; waiting");
        }
        tokio::select! {
            biased;
            _ = draining.cancelled() => false,
            _ = tokio::time::sleep_until(start) => true,
        }
    }
}

/// The per-worker schedules: the earliest next start of each task type.
#[derive(Default)]
struct Buckets(Mutex<HashMap<String, Instant>>);

impl Buckets {
    /// Reserve the next start of `task` at one start per `interval`; returns when it is.
    fn reserve(&self, task: &str, interval: Duration) -> Instant {
        let now = Instant::now();
        let mut next = self.0.lock().expect("rate buckets lock");
        let slot = next.get(task).copied().filter(|t| *t > now).unwrap_or(now);
        next.insert(task.to_owned(), slot + interval);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_limits_win_over_options_and_defaults() {
        let per_minute: RateLimit = "10/m".parse().expect("a rate limit");
        let limits = RateLimits {
            default: Some("1/s".parse().expect("a rate limit")),
            ..RateLimits::default()
        };
        let options = TaskOptions {
            rate_limit: Some(per_minute.clone()),
            ..TaskOptions::default()
        };
        assert_eq!(
            limits
                .effective("t", &TaskOptions::default())
                .map(|l| l.text),
            Some("1/s".into())
        );
        assert_eq!(
            limits.effective("t", &options).map(|l| l.text),
            Some("10/m".into())
        );
        limits.set("t", None);
        assert_eq!(limits.effective("t", &options), None, "disabled remotely");
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

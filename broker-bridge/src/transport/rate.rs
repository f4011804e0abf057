//! A fleet-wide rate limit: one start schedule shared by every worker through Redis.
//!
//! The key holds the earliest time (Redis clock, µs) the next run may start. Each reservation
//! takes that time (or now, if it has passed) and moves it one interval on, atomically in one
//! script, so N workers together start at most one run per interval (a token bucket of
//! capacity 1, as Celery's per-worker limit).

use std::time::Duration;

use super::error::Result;
use super::Broker;

const RESERVE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local nxt = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.floor((nxt - now) / 1000) + 60000)
return tat - now
"#;

impl Broker {
    /// Reserve the next start of `name` under a fleet-wide limit of one start per `interval`;
    /// returns how long the caller waits before starting. The key is
    /// `<global_keyprefix>celeriac.ratelimit.<name>`.
    pub async fn reserve_rate_slot(&self, name: &str, interval: Duration) -> Result<Duration> {
        let key = format!("{}celeriac.ratelimit.{name}", self.inner.keys.prefix());
        let interval_us = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX / 2)
            .max(1);
        let wait_us: i64 = redis::Script::new(RESERVE_SCRIPT)
            .key(key)
            .arg(interval_us)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)))
    }
}

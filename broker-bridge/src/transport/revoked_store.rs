//! A shared, persistent set of revoked task ids (celeriac's equivalent of Celery's `--statedb`):
//! a sorted set, member = task id, score = unix time of the revocation. Every replica and every
//! restart reads it; entries older than the expiry and beyond the size bound are trimmed.

use super::error::Result;
use super::Broker;

impl Broker {
    /// Record `ids` as revoked at unix time `now` in the sorted set `key` (`global_keyprefix`
    /// applied), dropping entries older than `expires_s` and all but the newest `max`.
    pub async fn revoked_add(
        &self,
        key: &str,
        ids: &[String],
        now: f64,
        expires_s: f64,
        max: usize,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = format!("{}{key}", self.options().global_keyprefix);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in ids {
            pipe.zadd(&key, id, now).ignore();
        }
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(format!("({}", now - expires_s))
            .ignore();
        let keep = i64::try_from(max).unwrap_or(i64::MAX).max(1);
        pipe.cmd("ZREMRANGEBYRANK")
            .arg(&key)
            .arg(0)
            .arg(-keep - 1)
            .ignore();
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    /// The ids in `key` revoked at or after unix time `since`, oldest first, with their times.
    pub async fn revoked_load(&self, key: &str, since: f64) -> Result<Vec<(String, f64)>> {
        let key = format!("{}{key}", self.options().global_keyprefix);
        let items: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(since)
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await?;
        Ok(items)
    }
}

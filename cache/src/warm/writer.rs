//! L2 writes of the warmer, in the read path's format and under its lease rule.
//!
//! A value is written as the read path writes it ([`Entry::to_l2`], TTL jittered by
//! [`Draws::jittered`]), one Lua script per batch. A key whose lease is held is skipped: a reader is
//! loading it now and its value is at least as new. Every written or deleted key is announced on
//! the invalidation channel so other processes drop their L1 copy.

use redis::aio::ConnectionManager;
use serde_json::Value;

use crate::config::{CacheConfig, Draws, Policy};
use crate::entry::{now_ms, Entry};
use crate::invalidation::Invalidation;

/// KEYS: (redis key, lease key) pairs; ARGV[1]: channel, ARGV[2]: publish (1/0), then value,
/// ttl_ms per key.
const WRITE_UNLEASED: &str = r"
local written = 0
for i = 1, #KEYS / 2 do
  local key = KEYS[2 * i - 1]
  if redis.call('EXISTS', KEYS[2 * i]) == 0 then
    redis.call('SET', key, ARGV[1 + 2 * i], 'PX', ARGV[2 + 2 * i])
    written = written + 1
    if ARGV[2] == '1' then redis.call('PUBLISH', ARGV[1], 'key:' .. key) end
  end
end
return written";

/// KEYS: (redis key, lease key) pairs; ARGV[1]: channel. Deletes values and leases, announces
/// each key.
const DELETE_KEYS: &str = r"
local deleted = 0
for i = 1, #KEYS / 2 do
  local key = KEYS[2 * i - 1]
  deleted = deleted + redis.call('DEL', key)
  redis.call('DEL', KEYS[2 * i])
  redis.call('PUBLISH', ARGV[1], 'key:' .. key)
end
return deleted";

/// What one batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Keys written.
    pub written: u64,
    /// Keys skipped because a reader held their lease.
    pub skipped_leased: u64,
}

/// Writes warmed values to L2 exactly as the read path would.
#[derive(Clone)]
pub struct WarmWriter {
    conn: ConnectionManager,
    config: CacheConfig,
    publish: bool,
}

impl WarmWriter {
    /// A writer on `conn` for the cache laid out by `config`; `publish` announces written keys
    /// (so L1 copies elsewhere are dropped).
    pub fn new(conn: ConnectionManager, config: CacheConfig, publish: bool) -> Self {
        WarmWriter {
            conn,
            config,
            publish,
        }
    }

    /// The L2 text the read path would store for `value`, loaded in `delta_ms`, under `policy`
    /// (TTL jittered by `draws`), and its TTL in milliseconds.
    pub fn l2_text(value: Value, delta_ms: u64, policy: &Policy, draws: &Draws) -> (String, u64) {
        let ttl_ms = (draws.jittered(policy.ttl).as_millis() as u64).max(1);
        let entry = Entry {
            value: Some(value),
            delta_ms,
            expires_at_ms: now_ms() + ttl_ms,
            size: 0,
            l1_ttl: std::time::Duration::ZERO,
        };
        (entry.to_l2(), ttl_ms)
    }

    /// Write `(rendered key, value)` pairs in one round trip; keys with a live lease are skipped.
    pub async fn write(
        &mut self,
        entries: Vec<(String, Value)>,
        delta_ms: u64,
        policy: &Policy,
    ) -> redis::RedisResult<WriteCounts> {
        if entries.is_empty() {
            return Ok(WriteCounts::default());
        }
        let total = entries.len() as u64;
        let script = redis::Script::new(WRITE_UNLEASED);
        let mut inv = script.prepare_invoke();
        inv.arg(self.config.channel())
            .arg(if self.publish { "1" } else { "0" });
        for (key, value) in entries {
            let (text, ttl_ms) = Self::l2_text(value, delta_ms, policy, &self.config.draws);
            let redis_key = self.config.redis_key(&key);
            let lease_key = self.config.lease_key(&redis_key);
            inv.key(redis_key).key(lease_key).arg(text).arg(ttl_ms);
        }
        let written: u64 = inv.invoke_async(&mut self.conn).await?;
        Ok(WriteCounts {
            written,
            skipped_leased: total - written.min(total),
        })
    }

    /// Delete the values and leases of rendered `keys` and announce them; returns how many
    /// values existed.
    pub async fn delete(&mut self, keys: &[String]) -> redis::RedisResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let script = redis::Script::new(DELETE_KEYS);
        let mut inv = script.prepare_invoke();
        inv.arg(self.config.channel());
        for key in keys {
            let redis_key = self.config.redis_key(key);
            let lease_key = self.config.lease_key(&redis_key);
            inv.key(redis_key).key(lease_key);
        }
        inv.invoke_async(&mut self.conn).await
    }
}

/// The invalidation message the scripts publish for a redis key (as the read path's subscriber
/// expects it).
pub fn eviction_message(redis_key: &str) -> String {
    Invalidation::Key(redis_key.to_owned()).encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_the_read_path_envelope() {
        let policy = Policy::new(
            std::time::Duration::from_secs(100),
            std::time::Duration::from_secs(1),
        );
        let (text, ttl) = WarmWriter::l2_text(
            serde_json::json!({"id": 1}),
            3,
            &policy,
            &Draws::fixed(0.75),
        );
        assert_eq!(ttl, 105_000);
        let entry = Entry::from_l2(&text).expect("our envelope");
        assert_eq!(entry.value, Some(serde_json::json!({"id": 1})));
        assert_eq!(entry.delta_ms, 3);
        assert_eq!(eviction_message("p:v1:k"), "key:p:v1:k");
    }
}

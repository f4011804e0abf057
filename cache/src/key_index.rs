//! The key index of a cluster-mode cache: prefix invalidation without scanning every shard.
//!
//! Every value key written to L2 on a Redis Cluster is first recorded in the sorted set of its
//! first segment, `<prefix><version>:k2:idx:{<segment>}` (the segment is the rendered key up to
//! and including its first `:`, i.e. the namespace of a template's key), scored by the time
//! the value expires at the latest. A prefix that holds a `:` names one such set: prefix
//! invalidation reads that set (`ZSCAN MATCH`, one shard) instead of every shard's keyspace.
//! Keys without a `:` are not indexed (no prefix with a `:` can match them).
//!
//! The read path records a key when it wins the key's lease, before it queries the source, so an
//! invalidation that runs afterwards finds the key and deletes the lease (the stale write is
//! refused); the warm writer records its keys before writing them. Both call [`record`].

use redis::aio::ConnectionLike;

use crate::config::CacheConfig;
use crate::entry::now_ms;

/// ARGV[1]: now (ms), then (expiry ms, redis key) pairs. Adds the members, drops the ones
/// expired, and keeps the set alive until its last member expires.
const RECORD: &str = r"
local latest = 0
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
  if tonumber(ARGV[i]) > latest then latest = tonumber(ARGV[i]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local left = latest - tonumber(ARGV[1])
if left > 0 and redis.call('PTTL', KEYS[1]) < left then
  redis.call('PEXPIRE', KEYS[1], left)
end
return 1";

/// The index set a value key (made by [`CacheConfig::redis_key`]) is recorded in, `None` for a
/// key without a `:` after its hash tag opens. A prefix made by [`CacheConfig::redis_prefix`]
/// gets the set that holds every key starting with it, if it reaches past the first `:`.
pub fn index_key(config: &CacheConfig, redis_key: &str) -> Option<String> {
    let base = config.base();
    let rest = redis_key.strip_prefix(&base)?.strip_prefix('{')?;
    let end = rest.find(':')? + 1;
    Some(format!("{base}idx:{{{}}}", &rest[..end]))
}

/// Record `keys` (value keys with the time in ms their value expires at the latest) in their
/// index sets, one script per set. Does nothing unless `config.cluster`: on a single node prefix
/// invalidation scans the one keyspace.
pub async fn record<C: ConnectionLike>(
    conn: &mut C,
    config: &CacheConfig,
    keys: &[(String, u64)],
) -> redis::RedisResult<()> {
    if !config.cluster {
        return Ok(());
    }
    let mut by_set: Vec<(String, Vec<&(String, u64)>)> = Vec::new();
    for entry in keys {
        let Some(set) = index_key(config, &entry.0) else {
            continue;
        };
        match by_set.iter_mut().find(|(s, _)| *s == set) {
            Some((_, members)) => members.push(entry),
            None => by_set.push((set, vec![entry])),
        }
    }
    let script = redis::Script::new(RECORD);
    for (set, members) in by_set {
        let mut invocation = script.prepare_invoke();
        invocation.key(&set).arg(now_ms());
        for (key, expires_at_ms) in members {
            invocation.arg(*expires_at_ms).arg(key);
        }
        let _: i64 = invocation.invoke_async(conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_and_its_prefixes_share_the_set_of_their_first_segment() {
        let c = CacheConfig::default();
        let key = c.redis_key("t.get:ticket:(7)");
        let set = index_key(&c, &key).unwrap();
        assert_eq!(set, "celeriac:cache:v1:k2:idx:{t.get:}");
        assert_eq!(index_key(&c, &c.redis_prefix("t.get:")), Some(set.clone()));
        assert_eq!(index_key(&c, &c.redis_prefix("t.get:ticket:")), Some(set));
        assert_eq!(index_key(&c, &c.redis_prefix("t.g")), None);
        assert_eq!(index_key(&c, &c.redis_key("hot")), None);
        assert_eq!(index_key(&c, "other:{a:b}"), None);
    }
}

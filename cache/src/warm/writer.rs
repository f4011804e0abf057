//! L2 writes of the warmer, in the read path's format and under its lease rule.
//!
//! A value is written as the read path writes it ([`Entry::to_l2`], TTL jittered by
//! [`Draws::jittered`]), one Lua script per batch. A key whose lease is held is skipped: a reader is
//! loading it now and its value is at least as new. Every written or deleted key is announced on
//! the invalidation channel so other processes drop their L1 copy.
//!
//! On a Redis Cluster the page's keys first enter the prefix index ([`key_index::record`], one
//! script per index set: a job's keys share one), so prefix invalidation finds them. A script
//! may only touch keys of one slot (a value and its lease always share one), so a batch is
//! split by slot: one script per slot, all of them sent at once (the cluster client routes each
//! to its node, follows MOVED/ASK and pipelines them on each node's connection). The redis
//! crate's own cluster pipelines refuse commands of several slots.

use std::collections::HashMap;

use futures_util::{StreamExt, TryStreamExt};
use redis::cluster_routing::Slot;
use redis::Script;
use serde_json::Value;

use crate::config::{CacheConfig, Draws, Policy};
use crate::entry::{now_ms, Entry};
use crate::invalidation::Invalidation;
use crate::{key_index, L2Conn};

/// Slot scripts in flight at once on a cluster.
const CLUSTER_IN_FLIGHT: usize = 256;

/// Added to a key's TTL for its expiry in the prefix index: its value is written after the
/// index (within the Redis response timeout), so it expires a little later than `now + ttl`.
const INDEX_SLACK_MS: u64 = 60_000;

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
    conn: L2Conn,
    config: CacheConfig,
    publish: bool,
    /// On a cluster: the scripts are loaded on every node (so the slot scripts sent at once do
    /// not each miss and load them).
    loaded: bool,
}

/// One key of a batch: its Redis key, its lease key and the script arguments that follow them.
type Item = (String, String, Vec<String>);

impl WarmWriter {
    /// A writer on `conn` for the cache laid out by `config`; `publish` announces written keys
    /// (so L1 copies elsewhere are dropped).
    pub fn new(conn: L2Conn, config: CacheConfig, publish: bool) -> Self {
        WarmWriter {
            conn,
            config,
            publish,
            loaded: false,
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

    /// Write `(rendered key, value)` pairs in one round trip (on a cluster: one per slot, after
    /// recording the keys in the prefix index, [`key_index::record`]); keys with a live lease
    /// are skipped.
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
        let mut items = Vec::with_capacity(entries.len());
        let mut indexed = Vec::with_capacity(entries.len());
        let latest = now_ms() + INDEX_SLACK_MS;
        for (key, value) in entries {
            let (text, ttl_ms) = Self::l2_text(value, delta_ms, policy, &self.config.draws);
            let redis_key = self.config.redis_key(&key);
            let lease_key = self.config.lease_key(&redis_key);
            indexed.push((redis_key.clone(), latest + ttl_ms));
            items.push((redis_key, lease_key, vec![text, ttl_ms.to_string()]));
        }
        key_index::record(&mut self.conn, &self.config, &indexed).await?;
        let publish = if self.publish { "1" } else { "0" };
        let head = [self.config.channel(), publish.to_owned()];
        let written = self.invoke(WRITE_UNLEASED, &head, items).await?;
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
        let items = keys
            .iter()
            .map(|key| {
                let redis_key = self.config.redis_key(key);
                let lease_key = self.config.lease_key(&redis_key);
                (redis_key, lease_key, Vec::new())
            })
            .collect();
        let head = [self.config.channel()];
        self.invoke(DELETE_KEYS, &head, items).await
    }

    /// Run `code` over `items` (`head` then each item's arguments as ARGV) and sum its
    /// results: one call on a single node, one call per slot on a cluster.
    async fn invoke(
        &mut self,
        code: &str,
        head: &[String],
        items: Vec<Item>,
    ) -> redis::RedisResult<u64> {
        let script = Script::new(code);
        let conn = match &mut self.conn {
            L2Conn::Single(_) => return invoke_one(&script, &mut self.conn, head, items).await,
            L2Conn::Cluster(conn) => conn.clone(),
        };
        if !self.loaded {
            for code in [WRITE_UNLEASED, DELETE_KEYS] {
                Script::new(code)
                    .load_async(&mut L2Conn::Cluster(conn.clone()))
                    .await?;
            }
            self.loaded = true;
        }
        let calls = by_slot(items).into_iter().map(|group| {
            let (script, mut conn) = (&script, L2Conn::Cluster(conn.clone()));
            async move { invoke_one(script, &mut conn, head, group).await }
        });
        futures_util::stream::iter(calls)
            .buffer_unordered(CLUSTER_IN_FLIGHT)
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await
    }
}

/// One script call over `items`, all of which must hash to one slot on a cluster.
async fn invoke_one(
    script: &Script,
    conn: &mut L2Conn,
    head: &[String],
    items: Vec<Item>,
) -> redis::RedisResult<u64> {
    let mut inv = script.prepare_invoke();
    for arg in head {
        inv.arg(arg);
    }
    for (key, lease, args) in items {
        inv.key(key).key(lease);
        for arg in args {
            inv.arg(arg);
        }
    }
    inv.invoke_async(conn).await
}

/// `items` grouped by the cluster slot of their key (a key and its lease share it), groups in
/// the order of their first item.
fn by_slot(items: Vec<Item>) -> Vec<Vec<Item>> {
    let mut index: HashMap<Slot, usize> = HashMap::new();
    let mut groups: Vec<Vec<Item>> = Vec::new();
    for item in items {
        let at = *index.entry(Slot::for_key(&item.0)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(item);
    }
    groups
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

    #[test]
    fn batches_split_by_slot_keep_each_key_with_its_lease() {
        let config = CacheConfig::default();
        let items: Vec<Item> = (0..300)
            .map(|i| {
                let key = config.redis_key(&format!("ticket:({})", i % 100));
                let lease = config.lease_key(&key);
                (key, lease, vec![i.to_string()])
            })
            .collect();
        let groups = by_slot(items);
        let slots: std::collections::HashSet<Slot> =
            groups.iter().map(|g| Slot::for_key(&g[0].0)).collect();
        assert_eq!(slots.len(), groups.len(), "one group per slot");
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 300);
        for group in &groups {
            for (key, lease, _) in group {
                assert_eq!(Slot::for_key(key), Slot::for_key(&group[0].0));
                assert_eq!(Slot::for_key(lease), Slot::for_key(key));
            }
        }
        assert_eq!(
            groups[0][0].2,
            vec!["0".to_owned()],
            "first item's group first"
        );
        assert_eq!(groups[0][1].2, vec!["100".to_owned()]);
    }
}

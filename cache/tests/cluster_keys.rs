//! The k2 key layout on a real Redis Cluster (3 primaries + 3 replicas from `redis-server`):
//! a value and its lease always share a slot, so a script touching both runs on a cluster,
//! and keys spread over every primary. (The cache's own client does not speak cluster yet.)

use celeriac_cache::{CacheConfig, KeyTemplate};
use celeriac_testkit::RedisCluster;
use redis::cluster::ClusterClient;
use serde_json::json;

/// The read path's conditional write: sets KEYS[1] only while KEYS[2] holds ARGV[1].
const WRITE_IF_LEASED: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', 60000)
  redis.call('DEL', KEYS[2])
  return 1
end
return 0";

#[tokio::test]
async fn values_and_leases_share_a_slot_and_spread_over_every_primary() {
    let cluster = RedisCluster::start().unwrap();
    assert_eq!(cluster.primaries().len(), 3);
    let client = ClusterClient::new(vec![cluster.url()]).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    let config = CacheConfig::default();
    let template = KeyTemplate::parse("ticket:{id}:{lang}")
        .unwrap()
        .in_namespace("tickets.get");
    let mut slots = std::collections::BTreeSet::new();
    for i in 0..200 {
        // Braces and separators inside values are escaped: the hash tag stays whole.
        let values = json!({"id": i, "lang": format!("x}}{{:{i}")});
        let key = template.render(values.as_object().unwrap()).unwrap();
        let value_key = config.redis_key(&key);
        let lease_key = config.lease_key(&value_key);
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&value_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let lease_slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&lease_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(slot, lease_slot, "{value_key} / {lease_key}");
        slots.insert(slot);

        // The lease-then-write sequence runs as one script on the node owning the slot.
        let token = format!("token-{i}");
        let _: () = redis::cmd("SET")
            .arg(&lease_key)
            .arg(&token)
            .arg("PX")
            .arg(5000)
            .query_async(&mut conn)
            .await
            .unwrap();
        let written: i64 = redis::Script::new(WRITE_IF_LEASED)
            .key(&value_key)
            .key(&lease_key)
            .arg(&token)
            .arg(format!("value {i}"))
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(written, 1, "{value_key}");
        let stored: Option<String> = redis::cmd("GET")
            .arg(&value_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(stored.as_deref(), Some(format!("value {i}").as_str()));
    }
    // 16384 slots over three primaries (about 5461 each): 200 keys land on all three.
    let shards = slots
        .iter()
        .map(|s| (*s as usize) * 3 / 16384)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(shards.len(), 3, "slots {slots:?}");

    // The layout before k2 (`lease:<key>`) puts a value and its lease in different slots: the
    // same script is refused by the cluster.
    let old_value = "celeriac:cache:v1:ticket:1";
    let old_lease = format!("lease:{old_value}");
    let refused: redis::RedisResult<i64> = redis::Script::new(WRITE_IF_LEASED)
        .key(old_value)
        .key(&old_lease)
        .arg("t")
        .arg("v")
        .invoke_async(&mut conn)
        .await;
    let err = refused.unwrap_err();
    assert_eq!(
        err.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot),
        "{err}"
    );
}

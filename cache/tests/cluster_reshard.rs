//! Slots holding cached keys moved to another primary of a real Redis Cluster (3 primaries + 3
//! replicas) while four caches read, as `redis-cli --cluster reshard` moves them: no read
//! returns a wrong value, a read while a slot migrates follows `ASK`, a read after it moved
//! follows `MOVED`, and every moved key is still an L2 hit on its new primary.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use celeriac_cache::Cache;
use celeriac_testkit::RedisCluster;
use support::{all_l2_hits, eventually, no_l1, Readers};

/// `errorstat_<kind>` count of the node on `port` since its last `CONFIG RESETSTAT`.
fn redirects(cluster: &RedisCluster, port: u16, kind: &str) -> u64 {
    let needle = format!("errorstat_{kind}:count=");
    cluster
        .cli(port, &["INFO", "errorstats"])
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stay_right_and_hit_while_slots_move_between_primaries() {
    let cluster = RedisCluster::start().unwrap();
    let config = no_l1("r:cache:");
    let cache = || {
        Cache::new(
            config.clone(),
            Some(redis::Client::open(cluster.url()).unwrap()),
        )
    };
    let keys: Vec<String> = (0..60).map(|i| format!("item:{i}")).collect();

    // The slots of the keys one primary holds move to another primary.
    let mut by_owner: BTreeMap<u16, BTreeMap<u16, Vec<String>>> = BTreeMap::new();
    for key in &keys {
        let slot = cluster.keyslot(&config.redis_key(key)).unwrap();
        let owner = cluster.owner_of(slot).unwrap().port;
        by_owner
            .entry(owner)
            .or_default()
            .entry(slot)
            .or_default()
            .push(key.clone());
    }
    assert_eq!(by_owner.len(), 3, "keys on every primary");
    let mut owners = by_owner.keys().copied();
    let (from, to) = (owners.next().unwrap(), owners.next().unwrap());
    let moving = by_owner.remove(&from).unwrap();

    let probe = cache();
    eventually(Duration::from_secs(30), "every key an L2 hit", async || {
        all_l2_hits(&probe, &keys).await
    })
    .await;
    let readers = Readers::start((0..4).map(|_| cache()).collect(), &keys);
    readers.progress(200, "readers running").await;

    for (slot, slot_keys) in &moving {
        let mv = tokio::task::block_in_place(|| {
            assert!(cluster
                .cli(from, &["CONFIG", "RESETSTAT"])
                .unwrap()
                .starts_with("OK"));
            let mv = cluster.start_slot_move(*slot, to).unwrap();
            cluster.migrate_keys(&mv).unwrap();
            mv
        });
        // Migrating: the old owner no longer has the keys and answers ASK for them.
        eventually(
            Duration::from_secs(30),
            "hits while migrating",
            async || all_l2_hits(&probe, slot_keys).await,
        )
        .await;
        let asked = tokio::task::block_in_place(|| redirects(&cluster, from, "ASK"));
        assert!(asked > 0, "slot {slot}: no ASK");
        readers.progress(100, "reads while migrating").await;
        tokio::task::block_in_place(|| cluster.finish_slot_move(&mv)).unwrap();
        // Moved: the old owner answers MOVED to clients whose slot map is older.
        eventually(Duration::from_secs(30), "hits after the move", async || {
            all_l2_hits(&probe, slot_keys).await
        })
        .await;
        readers.progress(100, "reads after the move").await;
    }
    let moved = tokio::task::block_in_place(|| redirects(&cluster, from, "MOVED"));
    assert!(moved > 0, "no MOVED after the last slot moved");

    let now_on: BTreeSet<u16> = moving
        .keys()
        .map(|s| cluster.owner_of(*s).unwrap().port)
        .collect();
    assert_eq!(now_on, BTreeSet::from([to]));
    let (wrong, _) = readers.stop().await;
    assert_eq!(wrong, 0, "a read returned a wrong value");
    assert!(all_l2_hits(&probe, &keys).await, "every key is an L2 hit");
}

//! A primary of a real Redis Cluster (3 primaries + 3 replicas) SIGKILLed while four caches
//! read: no read ever returns a wrong value, reads keep being served (by the source until the
//! replica is promoted), and once it is, the dead shard's keys are L2 hits again.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use celeriac_cache::Cache;
use celeriac_testkit::RedisCluster;
use support::{all_l2_hits, eventually, no_l1, Readers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stay_right_and_l2_comes_back_after_a_primary_is_killed() {
    let mut cluster = RedisCluster::start().unwrap();
    let config = no_l1("f:cache:");
    let cache = || {
        Cache::new(
            config.clone(),
            Some(redis::Client::open(cluster.url()).unwrap()),
        )
    };
    let keys: Vec<String> = (0..60).map(|i| format!("item:{i}")).collect();

    // Which primary holds which keys; the victim is a primary other than the URL's node.
    let mut by_owner: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for key in &keys {
        let slot = cluster.keyslot(&config.redis_key(key)).unwrap();
        let owner = cluster.owner_of(slot).unwrap();
        by_owner.entry(owner.port).or_default().push(key.clone());
    }
    assert_eq!(by_owner.len(), 3, "keys on every primary: {by_owner:?}");
    let victim = *by_owner.keys().find(|p| **p != cluster.url_port()).unwrap();
    let victim_keys = by_owner[&victim].clone();

    let probe = cache();
    eventually(Duration::from_secs(30), "every key an L2 hit", async || {
        all_l2_hits(&probe, &keys).await
    })
    .await;
    cluster
        .wait_replicas_synced(Duration::from_secs(30))
        .unwrap();

    // Four readers with their own caches read every key in turn until told to stop.
    let readers = Readers::start((0..4).map(|_| cache()).collect(), &keys);
    readers.progress(200, "readers running").await;

    tokio::task::block_in_place(|| cluster.kill(victim));
    // Reads go on while the shard has no primary (served by the source).
    readers.progress(500, "reads served after the kill").await;
    tokio::task::block_in_place(|| cluster.wait_failed_over(Duration::from_secs(60))).unwrap();

    // After the promotion the dead shard's keys are L2 hits again (written again if the replica
    // had not received them).
    eventually(
        Duration::from_secs(60),
        "the failed shard's keys hit L2",
        async || all_l2_hits(&probe, &victim_keys).await,
    )
    .await;
    readers.progress(500, "readers still reading").await;
    let (wrong, stats) = readers.stop().await;
    assert_eq!(wrong, 0, "a read returned a wrong value");
    assert!(
        stats.redis_fallbacks > 0,
        "the readers never saw the dead primary"
    );
    assert!(
        all_l2_hits(&probe, &keys).await,
        "every key is an L2 hit again"
    );
}

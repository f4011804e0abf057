//! A primary of a real Redis Cluster (3 primaries + 3 replicas) SIGKILLed while four caches
//! read: no read ever returns a wrong value, reads keep being served (by the source until the
//! replica is promoted), and once it is, the dead shard's keys are L2 hits again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_cache::{Cache, CacheConfig, Policy, SourceError};
use celeriac_testkit::RedisCluster;
use serde_json::{json, Value};

fn config() -> CacheConfig {
    CacheConfig {
        prefix: "f:cache:".into(),
        cluster: true,
        // Every read goes to L2: the failover is seen by each read, not hidden by L1.
        l1_ttl: Duration::ZERO,
        ..CacheConfig::default()
    }
}

fn policy() -> Policy {
    Policy::new(Duration::from_secs(300), Duration::from_secs(300))
}

fn value_of(key: &str) -> Value {
    json!({ "key": key })
}

async fn load(key: String) -> Result<Option<Value>, SourceError> {
    Ok(Some(value_of(&key)))
}

/// Read `keys` once with `cache`; true when every read was an L2 hit.
async fn all_l2_hits(cache: &Cache, keys: &[String]) -> bool {
    let before = cache.stats();
    for key in keys {
        let got = cache
            .get_or_load(key, &policy(), || load(key.clone()))
            .await
            .unwrap();
        assert_eq!(got, Some(value_of(key)), "{key}");
    }
    let after = cache.stats();
    after.l2_hits - before.l2_hits == keys.len() as u64 && after.loads == before.loads
}

/// Poll `ok` every 100 ms for up to `within`.
async fn eventually(within: Duration, what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok().await {
        assert!(
            Instant::now() < deadline,
            "not reached in {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stay_right_and_l2_comes_back_after_a_primary_is_killed() {
    let mut cluster = RedisCluster::start().unwrap();
    let client = || Some(redis::Client::open(cluster.url()).unwrap());
    let keys: Vec<String> = (0..60).map(|i| format!("item:{i}")).collect();

    // Which primary holds which keys; the victim is a primary other than the URL's node.
    let mut by_owner: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for key in &keys {
        let slot = cluster.keyslot(&config().redis_key(key)).unwrap();
        let owner = cluster.owner_of(slot).unwrap();
        by_owner.entry(owner.port).or_default().push(key.clone());
    }
    assert_eq!(by_owner.len(), 3, "keys on every primary: {by_owner:?}");
    let victim = *by_owner.keys().find(|p| **p != cluster.url_port()).unwrap();
    let victim_keys = by_owner[&victim].clone();

    let probe = Cache::new(config(), client());
    eventually(Duration::from_secs(30), "every key an L2 hit", async || {
        all_l2_hits(&probe, &keys).await
    })
    .await;
    cluster
        .wait_replicas_synced(Duration::from_secs(30))
        .unwrap();

    // Four readers with their own caches read every key in turn until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let cache = Cache::new(config(), client());
        let (stop, reads, wrong, keys) = (stop.clone(), reads.clone(), wrong.clone(), keys.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                for key in &keys {
                    let got = cache
                        .get_or_load(key, &policy(), || load(key.clone()))
                        .await;
                    if got.ok().flatten() != Some(value_of(key)) {
                        wrong.fetch_add(1, Ordering::SeqCst);
                    }
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            }
            cache.stats()
        }));
    }
    eventually(Duration::from_secs(30), "readers running", async || {
        reads.load(Ordering::SeqCst) > 200
    })
    .await;

    tokio::task::block_in_place(|| cluster.kill(victim));
    let at_kill = reads.load(Ordering::SeqCst);
    // Reads go on while the shard has no primary (served by the source).
    eventually(
        Duration::from_secs(60),
        "reads served after the kill",
        async || reads.load(Ordering::SeqCst) > at_kill + 500,
    )
    .await;
    tokio::task::block_in_place(|| cluster.wait_failed_over(Duration::from_secs(60))).unwrap();

    // After the promotion the dead shard's keys are L2 hits again (written again if the replica
    // had not received them).
    eventually(
        Duration::from_secs(60),
        "the failed shard's keys hit L2",
        async || all_l2_hits(&probe, &victim_keys).await,
    )
    .await;
    let at_hits = reads.load(Ordering::SeqCst);
    eventually(
        Duration::from_secs(30),
        "readers still reading",
        async || reads.load(Ordering::SeqCst) > at_hits + 500,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut fallbacks = 0;
    for r in readers {
        fallbacks += r.await.unwrap().redis_fallbacks;
    }
    assert_eq!(
        wrong.load(Ordering::SeqCst),
        0,
        "a read returned a wrong value"
    );
    assert!(fallbacks > 0, "the readers never saw the dead primary");
    assert!(
        all_l2_hits(&probe, &keys).await,
        "every key is an L2 hit again"
    );
}

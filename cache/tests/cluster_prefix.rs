//! Prefix invalidation on a real Redis Cluster (3 primaries + 3 replicas) reads the key index
//! of the prefix's namespace on one shard instead of scanning every shard: keys on all three
//! primaries are deleted with their leases (a load in flight cannot write afterwards), other
//! namespaces stay, no node runs SCAN; a prefix shorter than a namespace falls back to SCAN.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use celeriac_cache::key_index::index_key;
use celeriac_cache::{Cache, CacheConfig, Policy, SourceError};
use celeriac_testkit::RedisCluster;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use serde_json::{json, Value};
use tokio::sync::Notify;

fn config() -> CacheConfig {
    CacheConfig {
        prefix: "p:cache:".into(),
        cluster: true,
        ..CacheConfig::default()
    }
}

fn policy() -> Policy {
    Policy::new(Duration::from_secs(300), Duration::from_secs(300))
}

async fn conn(cluster: &RedisCluster) -> ClusterConnection {
    let client = ClusterClient::new(vec![cluster.url()]).unwrap();
    client.get_async_connection().await.unwrap()
}

async fn l2(conn: &mut ClusterConnection, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(config().redis_key(key))
        .query_async(conn)
        .await
        .unwrap()
}

/// Calls of `command` each live node ran since its last `CONFIG RESETSTAT`.
fn calls(cluster: &RedisCluster, command: &str) -> Vec<u64> {
    let needle = format!("cmdstat_{command}:calls=");
    cluster
        .live_ports()
        .into_iter()
        .map(|p| {
            let stats = cluster.cli(p, &["INFO", "commandstats"]).unwrap();
            stats
                .lines()
                .find_map(|l| l.strip_prefix(&needle))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |n| n.parse().unwrap())
        })
        .collect()
}

fn reset_stats(cluster: &RedisCluster) {
    for p in cluster.live_ports() {
        assert!(cluster
            .cli(p, &["CONFIG", "RESETSTAT"])
            .unwrap()
            .starts_with("OK"));
    }
}

#[derive(Clone)]
struct Counted(Arc<AtomicUsize>);

impl Counted {
    async fn load(&self, value: Value) -> Result<Option<Value>, SourceError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Some(value))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_invalidation_reads_one_index_instead_of_every_shard() {
    let cluster = RedisCluster::start().unwrap();
    let mut redis = conn(&cluster).await;
    let client = || Some(redis::Client::open(cluster.url()).unwrap());
    let (a, b) = (
        Cache::new(config(), client()),
        Cache::new(config(), client()),
    );
    assert!(a.wait_subscribed(Duration::from_secs(30)).await);
    assert!(b.wait_subscribed(Duration::from_secs(30)).await);
    let src = Counted(Arc::new(AtomicUsize::new(0)));

    let users: Vec<String> = (0..30).map(|i| format!("users.get:user:({i})")).collect();
    let teams: Vec<String> = (0..5).map(|i| format!("teams.get:team:({i})")).collect();
    let mut owners = BTreeSet::new();
    for key in users.iter().chain(&teams) {
        a.get_or_load(key, &policy(), || src.load(json!("old")))
            .await
            .unwrap();
        assert!(l2(&mut redis, key).await.is_some(), "{key}");
        let slot = cluster.keyslot(&config().redis_key(key)).unwrap();
        if key.starts_with("users.") {
            owners.insert(cluster.owner_of(slot).unwrap().port);
        }
    }
    assert_eq!(owners.len(), 3, "user keys on every primary");
    let set = index_key(&config(), &config().redis_key(&users[0])).unwrap();
    let indexed: u64 = redis::cmd("ZCARD")
        .arg(&set)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(indexed, 30);

    // A load of a user key is in flight (its lease taken) when the prefix is invalidated.
    let gate = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let slow = {
        let (b, gate, entered) = (b.clone(), gate.clone(), entered.clone());
        tokio::spawn(async move {
            b.get_or_load("users.get:user:(99)", &policy(), || async move {
                entered.notify_one();
                gate.notified().await;
                Ok(Some(json!("loaded before the invalidation")))
            })
            .await
        })
    };
    entered.notified().await;

    tokio::task::block_in_place(|| reset_stats(&cluster));
    let seen = a.stats().invalidations_received;
    b.invalidate_prefix("users.get:").await;
    let (scans, zscans) =
        tokio::task::block_in_place(|| (calls(&cluster, "scan"), calls(&cluster, "zscan")));
    assert_eq!(scans.iter().sum::<u64>(), 0, "SCAN ran: {scans:?}");
    assert_eq!(
        zscans.iter().filter(|n| **n > 0).count(),
        1,
        "ZSCAN on one node: {zscans:?}"
    );

    gate.notify_one();
    slow.await.unwrap().unwrap();
    assert_eq!(
        b.stats().stale_writes_prevented,
        1,
        "the load in flight did not write"
    );
    assert_eq!(l2(&mut redis, "users.get:user:(99)").await, None);
    tokio::time::timeout(Duration::from_secs(30), async {
        while a.stats().invalidations_received == seen {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a received the invalidation");
    for key in &users {
        assert_eq!(l2(&mut redis, key).await, None, "{key}");
        let got = a
            .get_or_load(key, &policy(), || src.load(json!("new")))
            .await;
        assert_eq!(got.unwrap(), Some(json!("new")), "{key}: a's L1 dropped it");
    }
    for key in &teams {
        assert!(l2(&mut redis, key).await.is_some(), "{key} kept");
    }
    assert_eq!(src.0.load(Ordering::SeqCst), 35 + 30);

    // A prefix that ends inside a namespace has no index: every primary is scanned.
    tokio::task::block_in_place(|| reset_stats(&cluster));
    b.invalidate_prefix("users.g").await;
    let scans = tokio::task::block_in_place(|| calls(&cluster, "scan"));
    assert_eq!(scans.iter().filter(|n| **n > 0).count(), 3, "{scans:?}");
    for key in &users {
        assert_eq!(l2(&mut redis, key).await, None, "{key}");
    }
}

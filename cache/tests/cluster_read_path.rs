//! The read path with `cluster = true` against a real Redis Cluster (3 primaries + 3 replicas):
//! layers, one source query for a cold key read by four caches, invalidation of a key and of a
//! prefix (keys on every shard) reaching another cache's L1, reads served by the source while
//! the cluster is down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use celeriac_cache::{Cache, CacheConfig, Policy, SourceError};
use celeriac_testkit::RedisCluster;
use redis::cluster::ClusterClient;
use serde_json::{json, Value};

fn config() -> CacheConfig {
    CacheConfig {
        prefix: "c:cache:".into(),
        cluster: true,
        ..CacheConfig::default()
    }
}

fn policy() -> Policy {
    Policy::new(Duration::from_secs(60), Duration::from_secs(5))
}

async fn cache(cluster: &RedisCluster) -> Cache {
    let cache = Cache::new(config(), Some(redis::Client::open(cluster.url()).unwrap()));
    assert!(cache.wait_subscribed(Duration::from_secs(30)).await);
    cache
}

async fn l2(cluster: &RedisCluster, key: &str) -> Option<String> {
    let client = ClusterClient::new(vec![cluster.url()]).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(config().redis_key(key))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[derive(Clone)]
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new() -> Self {
        Counted(Arc::new(AtomicUsize::new(0)))
    }
    fn calls(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    async fn load(&self, value: Value) -> Result<Option<Value>, SourceError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Some(value))
    }
}

/// Wait until `cache` has received `n` invalidations (false after 30 s: it never will).
async fn received(cache: &Cache, n: u64) -> bool {
    tokio::time::timeout(Duration::from_secs(30), async {
        while cache.stats().invalidations_received < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn layers_stampede_invalidation_and_fallback_on_a_cluster() {
    let mut cluster = RedisCluster::start().unwrap();
    let (a, b) = (cache(&cluster).await, cache(&cluster).await);
    let src = Counted::new();

    // Layers: a loads and writes L2; b (its own L1) reads L2.
    let v = json!({"id": 7});
    let got = a
        .get_or_load("ticket:7", &policy(), || src.load(v.clone()))
        .await;
    assert_eq!(got.unwrap(), Some(v.clone()));
    let got = b
        .get_or_load("ticket:7", &policy(), || src.load(json!(0)))
        .await;
    assert_eq!(got.unwrap(), Some(v.clone()));
    assert_eq!((src.calls(), b.stats().l2_hits), (1, 1));
    let stored: Value = serde_json::from_str(&l2(&cluster, "ticket:7").await.unwrap()).unwrap();
    assert_eq!(stored["value"], v);

    // Stampede: 400 cold reads over four caches, one source query; the load returns only once
    // the three other caches wait on its lease.
    let mut caches = vec![a.clone(), b.clone()];
    caches.push(cache(&cluster).await);
    caches.push(cache(&cluster).await);
    let hot = Counted::new();
    let mut tasks = Vec::new();
    for i in 0..400 {
        let c = caches[i % 4].clone();
        let (hot, all) = (hot.clone(), caches.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_load("hot", &policy(), || async move {
                let got = hot.load(json!("hot")).await;
                while all.iter().map(|c| c.stats().lease_waits).sum::<u64>() < 3 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                got
            })
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Some(json!("hot")));
    }
    assert_eq!(hot.calls(), 1, "one source query for the cold key");

    // A key invalidation from b reaches a's L1 and L2.
    a.invalidate("ticket:7").await;
    let before = b.stats().invalidations_received;
    b.invalidate("ticket:7").await;
    assert!(received(&a, 2).await && received(&b, before + 1).await);
    assert_eq!(l2(&cluster, "ticket:7").await, None);
    let got = a
        .get_or_load("ticket:7", &policy(), || src.load(json!("new")))
        .await;
    assert_eq!(got.unwrap(), Some(json!("new")));

    // A prefix over keys on every shard: gone from L2 and from a's L1.
    let users = Counted::new();
    for i in 0..30 {
        let key = format!("user:{i}");
        a.get_or_load(&key, &policy(), || users.load(json!("old")))
            .await
            .unwrap();
        assert!(l2(&cluster, &key).await.is_some());
    }
    let seen = a.stats().invalidations_received;
    b.invalidate_prefix("user:").await;
    assert!(received(&a, seen + 1).await);
    for i in 0..30 {
        let key = format!("user:{i}");
        assert_eq!(l2(&cluster, &key).await, None, "{key}");
        let got = a
            .get_or_load(&key, &policy(), || users.load(json!("new")))
            .await;
        assert_eq!(got.unwrap(), Some(json!("new")));
    }
    assert_eq!(users.calls(), 60);

    // The whole cluster down: reads are served by the source.
    cluster.kill_all();
    let down = Counted::new();
    for i in 0..3 {
        let key = format!("down:{i}");
        let got = a.get_or_load(&key, &policy(), || down.load(json!(i))).await;
        assert_eq!(got.unwrap(), Some(json!(i)));
    }
    assert_eq!(down.calls(), 3);
    assert!(a.stats().redis_errors >= 1);
}

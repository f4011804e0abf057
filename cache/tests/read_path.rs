//! The read path against a real (private) Redis: layers, TTLs, jitter, negative caching,
//! invalidation between caches with separate L1s, Redis down, stampedes, stale writes.
//! Random draws (TTL jitter, XFetch) are injected ([`Draws`]) so no test depends on luck.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_cache::{Cache, CacheConfig, Draws, Policy, SourceError};
use celeriac_testkit::RedisServer;
use redis::AsyncCommands;
use serde_json::{json, Value};

/// The defaults, with a Redis timeout no loaded test machine reaches: a slow reply must not
/// count as "Redis down" and change the figures a test expects.
fn config() -> CacheConfig {
    CacheConfig {
        prefix: "t:cache:".into(),
        redis_timeout: Duration::from_secs(30),
        ..CacheConfig::default()
    }
}

/// The Redis key of `key` in layout k2: `<prefix><version>:k2:{<key>}`.
fn l2(key: &str) -> String {
    format!("t:cache:v1:k2:{{{key}}}")
}

fn policy() -> Policy {
    Policy::new(Duration::from_secs(60), Duration::from_secs(5))
}

/// A cache on `redis`, subscribed to invalidations when Redis is up (as the worker starts it).
async fn cache(redis: &RedisServer) -> Cache {
    cache_with(redis, config()).await
}

async fn cache_with(redis: &RedisServer, config: CacheConfig) -> Cache {
    let client = redis::Client::open(redis.url(0)).unwrap();
    let cache = Cache::new(config, Some(client));
    cache.wait_subscribed(Duration::from_secs(2)).await;
    cache
}

/// A source that counts its queries and answers `value` after `delay`.
#[derive(Clone)]
struct Counted {
    calls: Arc<AtomicUsize>,
}

impl Counted {
    fn new() -> Self {
        Counted {
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    async fn load(
        &self,
        value: Option<Value>,
        delay: Duration,
    ) -> Result<Option<Value>, SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        Ok(value)
    }
}

async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url(0))
        .unwrap()
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(std::time::Duration::from_secs(30))),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn each_layer_answers_in_turn() {
    let redis = RedisServer::start().unwrap();
    let src = Counted::new();
    let a = cache(&redis).await;
    let v = json!({"id": 7, "title": "printer on fire"});
    let got = a
        .get_or_load("ticket:7", &policy(), || {
            src.load(Some(v.clone()), Duration::ZERO)
        })
        .await
        .unwrap();
    assert_eq!(got, Some(v.clone()));
    let s = a.stats();
    assert_eq!(
        (s.l1_misses, s.l2_misses, s.loads, s.l2_writes),
        (1, 1, 1, 1)
    );

    let again = a
        .get_or_load("ticket:7", &policy(), || src.load(None, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(again, Some(v.clone()));
    assert_eq!(a.stats().l1_hits, 1);

    // Another cache (its own L1) finds the value in L2.
    let b = cache(&redis).await;
    let from_l2 = b
        .get_or_load("ticket:7", &policy(), || src.load(None, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(from_l2, Some(v.clone()));
    let s = b.stats();
    assert_eq!((s.l1_misses, s.l2_hits, s.loads), (1, 1, 0));
    assert_eq!(src.calls(), 1);

    // L2 holds readable JSON under prefix + version + layout + {key}.
    let raw: String = redis_conn(&redis).await.get(l2("ticket:7")).await.unwrap();
    let stored: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(stored["found"], json!(true));
    assert_eq!(stored["value"], v);
}

#[tokio::test]
async fn not_found_is_cached_with_its_own_ttl() {
    let redis = RedisServer::start().unwrap();
    let src = Counted::new();
    let a = cache(&redis).await;
    for _ in 0..3 {
        let got = a
            .get_or_load("ticket:404", &policy(), || src.load(None, Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(got, None);
    }
    assert_eq!(src.calls(), 1);
    assert_eq!(a.stats().negative_hits, 2);
    let pttl: i64 = redis_conn(&redis)
        .await
        .pttl(l2("ticket:404"))
        .await
        .unwrap();
    assert!(
        pttl > 0 && pttl <= 5_500,
        "negative ttl 5 s ±10%, got {pttl} ms"
    );
    let b = cache(&redis).await;
    let got = b
        .get_or_load("ticket:404", &policy(), || {
            src.load(Some(json!(1)), Duration::ZERO)
        })
        .await
        .unwrap();
    assert_eq!(got, None);
    assert_eq!(b.stats().negative_hits, 1);
}

#[tokio::test]
async fn ttls_are_jittered_within_ten_percent() {
    let redis = RedisServer::start().unwrap();
    let seed = 20_261_205;
    let a = cache_with(
        &redis,
        CacheConfig {
            draws: Draws::seeded(seed),
            ..config()
        },
    )
    .await;
    // The same seeded sequence, drawn here: the TTL each key must have been given.
    let expected = Draws::seeded(seed);
    let src = Counted::new();
    let policy = Policy::new(Duration::from_secs(100), Duration::from_secs(10));
    let mut conn = redis_conn(&redis).await;
    let mut ttls = Vec::new();
    for i in 0..40 {
        let key = format!("k:{i}");
        let started = Instant::now();
        a.get_or_load(&key, &policy, || src.load(Some(json!(i)), Duration::ZERO))
            .await
            .unwrap();
        let want = expected.jittered(policy.ttl).as_millis() as i64;
        assert!((90_000..=110_000).contains(&want));
        let pttl: i64 = conn.pttl(l2(&key)).await.unwrap();
        // PX is the jittered TTL less the time since the write, which is at most the time
        // since the read began (however slow the machine), plus a millisecond of rounding.
        let since = started.elapsed().as_millis() as i64 + 1;
        assert!(
            pttl <= want && pttl >= want - since,
            "key {i}: ttl {pttl} ms, jittered {want} ms, {since} ms since the read began"
        );
        ttls.push(want);
    }
    let (min, max) = (ttls.iter().min().unwrap(), ttls.iter().max().unwrap());
    assert!(
        max - min > 1_000,
        "40 keys should not share one expiry: {min}..{max}"
    );
}

#[tokio::test]
async fn values_expire_and_reload() {
    let redis = RedisServer::start().unwrap();
    let a = cache(&redis).await;
    let src = Counted::new();
    let short = Policy::new(Duration::from_millis(200), Duration::from_millis(200));
    a.get_or_load("exp", &short, || src.load(Some(json!(1)), Duration::ZERO))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = a
        .get_or_load("exp", &short, || src.load(Some(json!(2)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(got, Some(json!(2)));
    assert_eq!(src.calls(), 2);
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
async fn invalidation_reaches_other_l1s() {
    let redis = RedisServer::start().unwrap();
    let (a, b) = (cache(&redis).await, cache(&redis).await);
    assert!(a.wait_subscribed(Duration::from_secs(30)).await);
    assert!(b.wait_subscribed(Duration::from_secs(30)).await);
    let src = Counted::new();
    for c in [&a, &b] {
        c.get_or_load("user:1", &policy(), || {
            src.load(Some(json!("old")), Duration::ZERO)
        })
        .await
        .unwrap();
        c.get_or_load("user:2", &policy(), || {
            src.load(Some(json!("old")), Duration::ZERO)
        })
        .await
        .unwrap();
    }
    a.invalidate("user:1").await;
    assert!(received(&b, 1).await, "b never received the invalidation");
    let got = b
        .get_or_load("user:1", &policy(), || {
            src.load(Some(json!("new")), Duration::ZERO)
        })
        .await
        .unwrap();
    assert_eq!(got, Some(json!("new")));
    let untouched = b
        .get_or_load("user:2", &policy(), || {
            src.load(Some(json!("new")), Duration::ZERO)
        })
        .await
        .unwrap();
    assert_eq!(untouched, Some(json!("old")));

    b.invalidate_prefix("user:").await;
    // Other L1s are evicted by pub/sub, so `a` sees the prefix once its message arrives
    // (it also receives its own earlier invalidation: two in all).
    assert!(
        received(&a, 2).await,
        "a never received the prefix invalidation"
    );
    let got = a
        .get_or_load("user:2", &policy(), || {
            src.load(Some(json!("newer")), Duration::ZERO)
        })
        .await
        .unwrap();
    assert_eq!(got, Some(json!("newer")));
}

#[tokio::test]
async fn redis_down_reads_through_to_the_source() {
    let mut redis = RedisServer::start().unwrap();
    let a = cache(&redis).await;
    let src = Counted::new();
    a.get_or_load("x", &policy(), || src.load(Some(json!(1)), Duration::ZERO))
        .await
        .unwrap();
    redis.kill();
    for i in 0..3 {
        let key = format!("y:{i}");
        let got = a
            .get_or_load(&key, &policy(), || src.load(Some(json!(i)), Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(got, Some(json!(i)));
    }
    assert_eq!(src.calls(), 4);
    assert!(a.stats().redis_errors >= 1);
    // A cache created while Redis is down works too.
    let b = cache(&redis).await;
    let got = b
        .get_or_load("z", &policy(), || {
            src.load(Some(json!("z")), Duration::ZERO)
        })
        .await
        .unwrap();
    assert_eq!(got, Some(json!("z")));
}

#[tokio::test]
async fn a_thousand_concurrent_cold_reads_on_four_caches_query_once() {
    let redis = RedisServer::start().unwrap();
    let mut caches = Vec::new();
    // Lease times no loaded machine reaches: a waiter that gives up, or a lease that expires
    // under the slow load, would query the source again for reasons other than the lease logic.
    let generous = CacheConfig {
        lease_ttl: Duration::from_secs(120),
        lease_wait: Duration::from_secs(60),
        ..config()
    };
    for _ in 0..4 {
        caches.push(cache_with(&redis, generous.clone()).await);
    }
    let src = Counted::new();
    // The one load finishes only once the three other caches are waiting on its lease, so
    // the counts below do not depend on how the 1000 reads happen to be scheduled.
    let waiting = {
        let caches = caches.clone();
        move || {
            let caches = caches.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                while caches.iter().map(|c| c.stats().lease_waits).sum::<u64>() < 3 {
                    assert!(
                        Instant::now() < deadline,
                        "the other caches never waited on the lease"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    };
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let c = caches[i % 4].clone();
        let src = src.clone();
        let waiting = waiting.clone();
        tasks.push(tokio::spawn(async move {
            c.get_or_load("hot", &policy(), || async move {
                let got = src.load(Some(json!({"id": 1})), Duration::ZERO).await;
                waiting().await;
                got
            })
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Some(json!({"id": 1})));
    }
    assert_eq!(src.calls(), 1, "exactly one source query");
    let loads: u64 = caches.iter().map(|c| c.stats().loads).sum();
    let waits: u64 = caches.iter().map(|c| c.stats().lease_waits).sum();
    assert_eq!(loads, 1);
    assert_eq!(waits, 3, "the three other caches waited on the lease");
}

#[tokio::test]
async fn a_slow_loader_cannot_write_after_an_invalidation() {
    let redis = RedisServer::start().unwrap();
    let (a, b) = (cache(&redis).await, cache(&redis).await);
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let slow = {
        let a = a.clone();
        tokio::spawn(async move {
            a.get_or_load("doc:1", &policy(), || async move {
                let _ = started_tx.send(());
                let _ = release_rx.await;
                Ok(Some(json!("stale")))
            })
            .await
        })
    };
    started_rx.await.unwrap();
    b.invalidate("doc:1").await;
    release_tx.send(()).unwrap();
    assert_eq!(slow.await.unwrap().unwrap(), Some(json!("stale")));
    assert_eq!(a.stats().stale_writes_prevented, 1);
    let mut conn = redis_conn(&redis).await;
    let stored: Option<String> = conn.get(l2("doc:1")).await.unwrap();
    assert_eq!(stored, None, "the stale value must not reach L2");
    let src = Counted::new();
    let fresh = a
        .get_or_load("doc:1", &policy(), || {
            src.load(Some(json!("fresh")), Duration::ZERO)
        })
        .await
        .unwrap();
    assert_eq!(fresh, Some(json!("fresh")), "nor stay in A's L1");
}

#[tokio::test]
async fn source_errors_are_not_cached() {
    let redis = RedisServer::start().unwrap();
    let a = cache(&redis).await;
    let err = a
        .get_or_load("e", &policy(), || async {
            Err(SourceError::Query("boom".into()))
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "query failed: boom");
    let src = Counted::new();
    let got = a
        .get_or_load("e", &policy(), || src.load(Some(json!(1)), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(got, Some(json!(1)));
    assert_eq!(a.stats().source_errors, 1);
}

/// Two caches reading a hot key that is due for XFetch's early refresh with draw `u`; the
/// value the second one reads and how many early refreshes it made.
async fn hot_key_read_with_draw(u: f64) -> (Option<Value>, u64, usize) {
    let redis = RedisServer::start().unwrap();
    let b = cache_with(
        &redis,
        CacheConfig {
            draws: Draws::fixed(u),
            ..config()
        },
    )
    .await;
    let src = Counted::new();
    let policy = Policy {
        xfetch_beta: Some(1.0),
        ..Policy::new(Duration::from_millis(300), Duration::from_secs(1))
    };
    // A load that took 10 s, 60 s before expiry: -ln(u) · 10 s ≥ 60 s ⇔ u ≤ e^-6 ≈ 0.0025.
    let mut conn = redis_conn(&redis).await;
    let entry = json!({"found": true, "value": "old", "delta_ms": 10_000, "expires_at_ms": celeriac_cache::entry::now_ms() + 60_000});
    let _: () = conn
        .set_ex(l2("hot"), entry.to_string(), 120)
        .await
        .unwrap();
    let got = b
        .get_or_load("hot", &policy, || {
            src.load(Some(json!("new")), Duration::ZERO)
        })
        .await
        .unwrap();
    (got, b.stats().early_refreshes, src.calls())
}

#[tokio::test]
async fn early_refresh_reloads_before_expiry() {
    let (got, early, calls) = hot_key_read_with_draw(0.001).await;
    assert_eq!(got, Some(json!("new")));
    assert_eq!((early, calls), (1, 1));
}

#[tokio::test]
async fn no_early_refresh_when_the_draw_says_not_yet() {
    let (got, early, calls) = hot_key_read_with_draw(0.01).await;
    assert_eq!(got, Some(json!("old")));
    assert_eq!((early, calls), (0, 0));
}

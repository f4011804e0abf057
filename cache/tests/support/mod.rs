//! Helpers of the cluster tests: a source whose value is a function of the key, readers that
//! read every key in turn and count wrong values, polling with a deadline.

#![allow(dead_code, unreachable_pub)] // shared by test binaries that each use a part

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_cache::{Cache, CacheConfig, CacheStats, Policy, SourceError};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// A cluster-mode configuration under `prefix` with L1 off: every read goes to L2.
pub fn no_l1(prefix: &str) -> CacheConfig {
    CacheConfig {
        prefix: prefix.into(),
        cluster: true,
        l1_ttl: Duration::ZERO,
        ..CacheConfig::default()
    }
}

pub fn policy() -> Policy {
    Policy::new(Duration::from_secs(300), Duration::from_secs(300))
}

/// The source's one right value for `key`.
pub fn value_of(key: &str) -> Value {
    json!({ "key": key })
}

pub async fn load(key: String) -> Result<Option<Value>, SourceError> {
    Ok(Some(value_of(&key)))
}

/// Read `keys` once with `cache` (each must be right); true when every read was an L2 hit.
pub async fn all_l2_hits(cache: &Cache, keys: &[String]) -> bool {
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

/// Poll `ok` every 100 ms for up to `within`; fails the test with `what` after it.
pub async fn eventually(within: Duration, what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok().await {
        assert!(
            Instant::now() < deadline,
            "not reached in {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Caches reading every key in turn until stopped, counting reads and wrong values.
pub struct Readers {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    wrong: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<CacheStats>>,
}

impl Readers {
    /// Start one reader per cache.
    pub fn start(caches: Vec<Cache>, keys: &[String]) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let wrong = Arc::new(AtomicU64::new(0));
        let tasks = caches
            .into_iter()
            .map(|cache| {
                let (stop, reads, wrong) = (stop.clone(), reads.clone(), wrong.clone());
                let keys = keys.to_vec();
                tokio::spawn(async move {
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
                })
            })
            .collect();
        Readers {
            stop,
            reads,
            wrong,
            tasks,
        }
    }

    /// Reads done so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// Wait (up to 60 s) until `n` more reads are done.
    pub async fn progress(&self, n: u64, what: &str) {
        let from = self.reads();
        eventually(Duration::from_secs(60), what, async || {
            self.reads() >= from + n
        })
        .await;
    }

    /// Stop; the number of wrong values read and the readers' summed counters.
    pub async fn stop(self) -> (u64, CacheStats) {
        self.stop.store(true, Ordering::SeqCst);
        let mut sum = CacheStats::default();
        for t in self.tasks {
            sum = sum.plus(t.await.unwrap());
        }
        (self.wrong.load(Ordering::SeqCst), sum)
    }
}

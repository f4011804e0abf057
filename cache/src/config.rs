//! Settings of a [`crate::Cache`] and of one cached query ([`Policy`]).

use std::time::Duration;

/// How a cache is laid out and bounded. Defaults suit a worker process.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Start of every Redis key this cache writes (default `celeriac:cache:`).
    pub prefix: String,
    /// Data version inside the key (default `v1`): bump it to abandon all old values at once.
    pub version: String,
    /// L1 entry bound (default 100 000).
    pub l1_max_entries: u64,
    /// L1 size bound in bytes of JSON (default 64 MiB).
    pub l1_max_bytes: u64,
    /// Longest time a value stays in L1 (default 30 s): bounds staleness when an invalidation is missed.
    pub l1_ttl: Duration,
    /// Lifetime of a loader's lease (default 5 s): if the loader dies, another may load after it.
    pub lease_ttl: Duration,
    /// How long a reader that lost the lease waits for the winner's value before loading itself
    /// (default 3 s).
    pub lease_wait: Duration,
    /// How often a waiting reader polls L2 (default 10 ms).
    pub lease_poll: Duration,
    /// Connect and response timeout of Redis commands (default 1 s); slower means "Redis down".
    pub redis_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            prefix: "celeriac:cache:".into(),
            version: "v1".into(),
            l1_max_entries: 100_000,
            l1_max_bytes: 64 * 1024 * 1024,
            l1_ttl: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(5),
            lease_wait: Duration::from_secs(3),
            lease_poll: Duration::from_millis(10),
            redis_timeout: Duration::from_secs(1),
        }
    }
}

impl CacheConfig {
    /// The Redis key of a rendered template: `<prefix><version>:<key>`.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}{}:{}", self.prefix, self.version, key)
    }

    /// The lease key of a Redis key: `lease:<key>`.
    pub fn lease_key(redis_key: &str) -> String {
        format!("lease:{redis_key}")
    }

    /// The pub/sub channel invalidations travel on: `<prefix>invalidate`.
    pub fn channel(&self) -> String {
        format!("{}invalidate", self.prefix)
    }
}

/// How one query's results are cached.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// L2 time to live of found values (jittered ±10%).
    pub ttl: Duration,
    /// L2 time to live of "not found" (jittered ±10%).
    pub negative_ttl: Duration,
    /// XFetch early refresh: `Some(beta)` (≈ 1.0) refreshes hot keys shortly before they expire.
    pub xfetch_beta: Option<f64>,
    /// The source label its reads are counted under (metrics per source); default `unnamed`.
    pub source: String,
}

impl Policy {
    /// Found values live `ttl`, "not found" lives `negative_ttl`; no early refresh.
    pub fn new(ttl: Duration, negative_ttl: Duration) -> Self {
        Policy {
            ttl,
            negative_ttl,
            xfetch_beta: None,
            source: UNNAMED_SOURCE.into(),
        }
    }

    /// The same policy, counted under the source label `source`.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }
}

/// The source label of a [`Policy`] that names none.
pub const UNNAMED_SOURCE: &str = "unnamed";

/// `ttl` scaled by a random factor in [0.9, 1.1], so keys loaded together do not expire together.
pub fn jittered(ttl: Duration) -> Duration {
    ttl.mul_f64(rand::random_range(0.9..=1.1))
        .max(Duration::from_millis(1))
}

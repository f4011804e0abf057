//! Settings of a [`crate::Cache`] and of one cached query ([`Policy`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

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
    /// Where TTL jitter and XFetch draw their random numbers (default: the thread RNG).
    pub draws: Draws,
    /// L2 is a Redis Cluster reached through the one node the client names (default false).
    pub cluster: bool,
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
            draws: Draws::default(),
            cluster: false,
        }
    }
}

/// The layout of Redis key names, a segment of every key: changed whenever the way keys are
/// built changes, so that keys of an older layout are never read (they expire by their TTL).
/// `k2`: values at `<prefix><version>:k2:{<key>}`, leases at `<prefix><version>:k2:lease:{<key>}`,
/// keys rendered by [`crate::KeyTemplate`]'s typed encoding.
pub const KEY_LAYOUT: &str = "k2";

impl CacheConfig {
    /// `<prefix><version>:<layout>:`, the start of every value, lease and index key.
    pub(crate) fn base(&self) -> String {
        format!("{}{}:{KEY_LAYOUT}:", self.prefix, self.version)
    }

    /// The Redis key of a rendered key: `<prefix><version>:k2:{<key>}`. The braces are a Redis
    /// Cluster hash tag: the value and its lease hash to one slot.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}{{{key}}}", self.base())
    }

    /// The start of the Redis keys of every rendered key starting with `prefix`.
    pub fn redis_prefix(&self, prefix: &str) -> String {
        format!("{}{{{prefix}", self.base())
    }

    /// The lease key of a Redis key (or prefix) made by [`Self::redis_key`]:
    /// `<prefix><version>:k2:lease:{<key>}`.
    pub fn lease_key(&self, redis_key: &str) -> String {
        let base = self.base();
        let rest = redis_key.strip_prefix(&base).unwrap_or(redis_key);
        format!("{base}lease:{rest}")
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

/// The source of the cache's random draws (TTL jitter, XFetch's early refresh): the thread
/// RNG by default, or a seeded generator / one fixed value so that tests and reproductions
/// see the same numbers every run. Clones share one seeded generator.
#[derive(Clone, Default)]
pub struct Draws(DrawKind);

#[derive(Clone, Default)]
enum DrawKind {
    #[default]
    Thread,
    Seeded(Arc<Mutex<StdRng>>),
    Fixed(f64),
}

impl Draws {
    /// Fresh draws from the thread RNG (the default).
    pub fn thread() -> Self {
        Draws(DrawKind::Thread)
    }

    /// A reproducible sequence from `seed`.
    pub fn seeded(seed: u64) -> Self {
        Draws(DrawKind::Seeded(Arc::new(Mutex::new(
            StdRng::seed_from_u64(seed),
        ))))
    }

    /// Always `u` (clamped to [0, 1]).
    pub fn fixed(u: f64) -> Self {
        Draws(DrawKind::Fixed(if u.is_nan() {
            0.5
        } else {
            u.clamp(0.0, 1.0)
        }))
    }

    /// One draw, uniform in [0, 1].
    pub fn unit(&self) -> f64 {
        match &self.0 {
            DrawKind::Thread => rand::random_range(0.0..=1.0),
            DrawKind::Seeded(rng) => rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .random_range(0.0..=1.0),
            DrawKind::Fixed(u) => *u,
        }
    }

    /// `ttl` scaled by a factor in [0.9, 1.1] (0.9 + 0.2 × a draw), so keys loaded together do
    /// not expire together; at least 1 ms.
    pub fn jittered(&self, ttl: Duration) -> Duration {
        ttl.mul_f64(0.9 + 0.2 * self.unit())
            .max(Duration::from_millis(1))
    }
}

impl std::fmt::Debug for Draws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            DrawKind::Thread => f.write_str("Draws::thread()"),
            DrawKind::Seeded(_) => f.write_str("Draws::seeded(..)"),
            DrawKind::Fixed(u) => write!(f, "Draws::fixed({u})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag_with_their_lease() {
        let c = CacheConfig::default();
        let key = c.redis_key("t.get:ticket:(7)");
        assert_eq!(key, "celeriac:cache:v1:k2:{t.get:ticket:(7)}");
        assert_eq!(
            c.lease_key(&key),
            "celeriac:cache:v1:k2:lease:{t.get:ticket:(7)}"
        );
        let prefix = c.redis_prefix("t.get:");
        assert!(key.starts_with(&prefix));
        assert!(c.lease_key(&key).starts_with(&c.lease_key(&prefix)));
    }

    #[test]
    fn seeded_draws_repeat_and_stay_in_range() {
        let (a, b) = (Draws::seeded(7), Draws::seeded(7));
        let xs: Vec<f64> = (0..100).map(|_| a.unit()).collect();
        let ys: Vec<f64> = (0..100).map(|_| b.unit()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|u| (0.0..=1.0).contains(u)));
        assert_ne!(xs[0], xs[1]);
    }

    #[test]
    fn jitter_maps_draws_onto_ten_percent() {
        let ttl = Duration::from_secs(100);
        assert_eq!(Draws::fixed(0.0).jittered(ttl), Duration::from_secs(90));
        assert_eq!(Draws::fixed(0.5).jittered(ttl), Duration::from_secs(100));
        assert_eq!(Draws::fixed(1.0).jittered(ttl), Duration::from_secs(110));
        assert_eq!(Draws::fixed(9.0).jittered(ttl), Duration::from_secs(110));
        assert_eq!(
            Draws::fixed(0.0).jittered(Duration::ZERO),
            Duration::from_millis(1)
        );
    }
}

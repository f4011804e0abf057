//! Counters of a cache, per source and cache-wide, read as plain structs for metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the source query latency histogram buckets.
pub const LOAD_SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A snapshot of a cache's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered from L1.
    pub l1_hits: u64,
    /// Reads L1 could not answer.
    pub l1_misses: u64,
    /// L1 misses answered from Redis.
    pub l2_hits: u64,
    /// L1 misses Redis could not answer.
    pub l2_misses: u64,
    /// Hits (L1 or L2) on a cached "not found".
    pub negative_hits: u64,
    /// Queries sent to the source.
    pub loads: u64,
    /// Loads that took the lease and wrote their value to L2.
    pub l2_writes: u64,
    /// Times a reader found another replica's lease and waited for its value.
    pub lease_waits: u64,
    /// Waits that ran out: the reader loaded by itself without writing.
    pub lease_timeouts: u64,
    /// Early refreshes (XFetch) started.
    pub early_refreshes: u64,
    /// Loads whose L2 write was refused because an invalidation took their lease.
    pub stale_writes_prevented: u64,
    /// Redis commands that failed (the read went on to the source).
    pub redis_errors: u64,
    /// Reads that went to the source because Redis could not be used.
    pub redis_fallbacks: u64,
    /// Source queries that failed.
    pub source_errors: u64,
    /// Invalidation messages received from the channel (cache-wide, never per source).
    pub invalidations_received: u64,
    /// Invalidations this process sent (cache-wide, never per source).
    pub invalidations_sent: u64,
}

impl CacheStats {
    /// The field-by-field sum of two snapshots.
    pub fn plus(self, o: CacheStats) -> CacheStats {
        CacheStats {
            l1_hits: self.l1_hits + o.l1_hits,
            l1_misses: self.l1_misses + o.l1_misses,
            l2_hits: self.l2_hits + o.l2_hits,
            l2_misses: self.l2_misses + o.l2_misses,
            negative_hits: self.negative_hits + o.negative_hits,
            loads: self.loads + o.loads,
            l2_writes: self.l2_writes + o.l2_writes,
            lease_waits: self.lease_waits + o.lease_waits,
            lease_timeouts: self.lease_timeouts + o.lease_timeouts,
            early_refreshes: self.early_refreshes + o.early_refreshes,
            stale_writes_prevented: self.stale_writes_prevented + o.stale_writes_prevented,
            redis_errors: self.redis_errors + o.redis_errors,
            redis_fallbacks: self.redis_fallbacks + o.redis_fallbacks,
            source_errors: self.source_errors + o.source_errors,
            invalidations_received: self.invalidations_received + o.invalidations_received,
            invalidations_sent: self.invalidations_sent + o.invalidations_sent,
        }
    }
}

/// Source query latencies: counts per bucket of [`LOAD_SECONDS_BUCKETS`] (not cumulative; the
/// last count is above the largest bound), their number and their sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Observations per bucket; `counts[i]` fell in `(bounds[i-1], bounds[i]]`, the last one
    /// above every bound.
    pub counts: Vec<u64>,
    /// Number of observations.
    pub count: u64,
    /// Sum of the observations, seconds.
    pub sum_seconds: f64,
}

/// The counters and query latencies of the reads of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStats {
    /// The source's name (the label given in [`crate::Policy::source`]).
    pub source: String,
    /// Its read-path counters (the invalidation counters are cache-wide and zero here).
    pub stats: CacheStats,
    /// Latency of its source queries, failed ones included.
    pub load_seconds: LatencyHistogram,
}

/// The live counters behind [`CacheStats`] and a [`LatencyHistogram`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub l1_hits: AtomicU64,
    pub l1_misses: AtomicU64,
    pub l2_hits: AtomicU64,
    pub l2_misses: AtomicU64,
    pub negative_hits: AtomicU64,
    pub loads: AtomicU64,
    pub l2_writes: AtomicU64,
    pub lease_waits: AtomicU64,
    pub lease_timeouts: AtomicU64,
    pub early_refreshes: AtomicU64,
    pub stale_writes_prevented: AtomicU64,
    pub redis_errors: AtomicU64,
    pub redis_fallbacks: AtomicU64,
    pub source_errors: AtomicU64,
    pub invalidations_received: AtomicU64,
    pub invalidations_sent: AtomicU64,
    load_buckets: [AtomicU64; LOAD_SECONDS_BUCKETS.len() + 1],
    load_count: AtomicU64,
    load_nanos: AtomicU64,
}

/// Add one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Record one source query that took `elapsed`.
    pub(crate) fn observe_load(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LOAD_SECONDS_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LOAD_SECONDS_BUCKETS.len());
        bump(&self.load_buckets[bucket]);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.load_nanos.fetch_add(nanos, Ordering::Relaxed);
        bump(&self.load_count);
    }

    pub(crate) fn latency(&self) -> LatencyHistogram {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LatencyHistogram {
            counts: self.load_buckets.iter().map(get).collect(),
            count: get(&self.load_count),
            sum_seconds: get(&self.load_nanos) as f64 / 1e9,
        }
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            l1_hits: get(&self.l1_hits),
            l1_misses: get(&self.l1_misses),
            l2_hits: get(&self.l2_hits),
            l2_misses: get(&self.l2_misses),
            negative_hits: get(&self.negative_hits),
            loads: get(&self.loads),
            l2_writes: get(&self.l2_writes),
            lease_waits: get(&self.lease_waits),
            lease_timeouts: get(&self.lease_timeouts),
            early_refreshes: get(&self.early_refreshes),
            stale_writes_prevented: get(&self.stale_writes_prevented),
            redis_errors: get(&self.redis_errors),
            redis_fallbacks: get(&self.redis_fallbacks),
            source_errors: get(&self.source_errors),
            invalidations_received: get(&self.invalidations_received),
            invalidations_sent: get(&self.invalidations_sent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_buckets() {
        let c = Counters::default();
        c.observe_load(Duration::from_micros(400));
        c.observe_load(Duration::from_millis(1));
        c.observe_load(Duration::from_millis(30));
        c.observe_load(Duration::from_secs(60));
        let h = c.latency();
        assert_eq!(h.count, 4);
        assert_eq!(h.counts.len(), LOAD_SECONDS_BUCKETS.len() + 1);
        assert_eq!(h.counts[0], 1, "0.4 ms ≤ 0.5 ms");
        assert_eq!(h.counts[1], 1, "1 ms ≤ 1 ms");
        assert_eq!(h.counts[6], 1, "30 ms in (25 ms, 50 ms]");
        assert_eq!(h.counts[LOAD_SECONDS_BUCKETS.len()], 1, "60 s above 10 s");
        assert!((h.sum_seconds - 60.0314).abs() < 1e-9, "{}", h.sum_seconds);
    }
}

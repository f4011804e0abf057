//! Per-layer counters of a cache, read as a plain struct for metrics.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Source queries that failed.
    pub source_errors: u64,
    /// Invalidation messages received from the channel.
    pub invalidations_received: u64,
}

/// The live counters behind [`CacheStats`].
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
    pub source_errors: AtomicU64,
    pub invalidations_received: AtomicU64,
}

/// Add one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
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
            source_errors: get(&self.source_errors),
            invalidations_received: get(&self.invalidations_received),
        }
    }
}

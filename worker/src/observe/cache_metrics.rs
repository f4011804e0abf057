//! The read-through cache's counters as Prometheus series, read from the cache at each scrape:
//! hits and misses per layer (`l1`, `l2`) and source, loads, lease waits, negative hits,
//! load errors, Redis fallbacks, invalidations, L1 size, and the source query latency histogram
//! per source.

use std::collections::HashMap;

use celeriac_cache::stats::LOAD_SECONDS_BUCKETS;
use celeriac_cache::{Cache, CacheStats, SourceStats};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

/// A per-source counter: its name, help and how to read it from a snapshot.
type SourceCounter = (&'static str, &'static str, fn(&CacheStats) -> u64);

const SOURCE_COUNTERS: &[SourceCounter] = &[
    (
        "celeriac_cache_negative_hits_total",
        "Cache hits (L1 or L2) on a cached \"not found\".",
        |s| s.negative_hits,
    ),
    (
        "celeriac_cache_loads_total",
        "Queries sent to the source on a cache miss.",
        |s| s.loads,
    ),
    (
        "celeriac_cache_load_errors_total",
        "Source queries that failed (never cached).",
        |s| s.source_errors,
    ),
    (
        "celeriac_cache_l2_writes_total",
        "Loaded values written to Redis under the loader's lease.",
        |s| s.l2_writes,
    ),
    (
        "celeriac_cache_lease_waits_total",
        "Reads that found another loader's lease and waited for its value.",
        |s| s.lease_waits,
    ),
    (
        "celeriac_cache_lease_timeouts_total",
        "Lease waits that ran out: the reader queried the source itself.",
        |s| s.lease_timeouts,
    ),
    (
        "celeriac_cache_early_refreshes_total",
        "Early refreshes (XFetch) of values about to expire.",
        |s| s.early_refreshes,
    ),
    (
        "celeriac_cache_stale_writes_prevented_total",
        "Loads whose Redis write was refused because an invalidation took their lease.",
        |s| s.stale_writes_prevented,
    ),
    (
        "celeriac_cache_redis_errors_total",
        "Redis commands of the read path that failed.",
        |s| s.redis_errors,
    ),
    (
        "celeriac_cache_redis_fallbacks_total",
        "Reads that went to the source because Redis could not be used.",
        |s| s.redis_fallbacks,
    ),
];

/// A cache-wide counter (no `source` label).
const CACHE_COUNTERS: &[SourceCounter] = &[
    (
        "celeriac_cache_invalidations_received_total",
        "Invalidations received from other processes (pub/sub).",
        |s| s.invalidations_received,
    ),
    (
        "celeriac_cache_invalidations_sent_total",
        "Invalidations this process sent.",
        |s| s.invalidations_sent,
    ),
];

const HITS: &str = "celeriac_cache_hits_total";
const MISSES: &str = "celeriac_cache_misses_total";
const LATENCY: &str = "celeriac_cache_source_query_duration_seconds";
const L1_ENTRIES: &str = "celeriac_cache_l1_entries";
const L1_BYTES: &str = "celeriac_cache_l1_bytes";

/// A Prometheus collector reading a [`Cache`]'s counters when scraped.
pub(crate) struct CacheCollector {
    cache: Cache,
    descs: Vec<Desc>,
}

impl CacheCollector {
    /// The collector of `cache`.
    pub(crate) fn new(cache: Cache) -> CacheCollector {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                name.into(),
                help.into(),
                labels.iter().map(|l| l.to_string()).collect(),
                HashMap::new(),
            )
            .expect("valid metric description")
        };
        let mut descs = vec![
            desc(
                HITS,
                "Cache reads answered per layer (l1: in process, l2: Redis).",
                &["layer", "source"],
            ),
            desc(
                MISSES,
                "Cache reads a layer could not answer.",
                &["layer", "source"],
            ),
            desc(
                LATENCY,
                "Latency of source queries on a cache miss, failed ones included.",
                &["source"],
            ),
            desc(L1_ENTRIES, "Entries in this process's L1 cache.", &[]),
            desc(
                L1_BYTES,
                "Weighted size of this process's L1 cache, bytes.",
                &[],
            ),
        ];
        descs.extend(
            SOURCE_COUNTERS
                .iter()
                .map(|(name, help, _)| desc(name, help, &["source"])),
        );
        descs.extend(
            CACHE_COUNTERS
                .iter()
                .map(|(name, help, _)| desc(name, help, &[])),
        );
        CacheCollector { cache, descs }
    }

    fn help(&self, name: &str) -> String {
        self.descs
            .iter()
            .find(|d| d.fq_name == name)
            .map(|d| d.help.clone())
            .unwrap_or_default()
    }

    fn family(&self, name: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(name.into());
        family.set_help(self.help(name));
        family.set_field_type(kind);
        family.set_metric(metrics);
        family
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<proto::LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name((*name).into());
            pair.set_value((*value).into());
            pair
        })
        .collect()
}

fn counter(pairs: &[(&str, &str)], value: u64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    let mut m = proto::Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(value: u64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value as f64);
    proto::Metric::from_gauge(g)
}

fn histogram(s: &SourceStats) -> proto::Metric {
    let mut h = proto::Histogram::default();
    h.set_sample_count(s.load_seconds.count);
    h.set_sample_sum(s.load_seconds.sum_seconds);
    let mut cumulative = 0;
    let buckets = LOAD_SECONDS_BUCKETS
        .iter()
        .zip(&s.load_seconds.counts)
        .map(|(bound, n)| {
            cumulative += n;
            let mut b = proto::Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    h.set_bucket(buckets);
    let mut m = proto::Metric::from_label(labels(&[("source", &s.source)]));
    m.set_histogram(h);
    m
}

impl Collector for CacheCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sources = self.cache.source_stats();
        let per_layer = |l1: fn(&CacheStats) -> u64, l2: fn(&CacheStats) -> u64| {
            sources
                .iter()
                .flat_map(|s| {
                    [
                        counter(&[("layer", "l1"), ("source", &s.source)], l1(&s.stats)),
                        counter(&[("layer", "l2"), ("source", &s.source)], l2(&s.stats)),
                    ]
                })
                .collect()
        };
        let mut families = vec![
            self.family(
                HITS,
                MetricType::COUNTER,
                per_layer(|s| s.l1_hits, |s| s.l2_hits),
            ),
            self.family(
                MISSES,
                MetricType::COUNTER,
                per_layer(|s| s.l1_misses, |s| s.l2_misses),
            ),
            self.family(
                LATENCY,
                MetricType::HISTOGRAM,
                sources.iter().map(histogram).collect(),
            ),
        ];
        for (name, _, read) in SOURCE_COUNTERS {
            let metrics = sources
                .iter()
                .map(|s| counter(&[("source", &s.source)], read(&s.stats)))
                .collect();
            families.push(self.family(name, MetricType::COUNTER, metrics));
        }
        let total = self.cache.stats();
        for (name, _, read) in CACHE_COUNTERS {
            families.push(self.family(name, MetricType::COUNTER, vec![counter(&[], read(&total))]));
        }
        let (entries, bytes) = self.cache.l1_size();
        families.push(self.family(L1_ENTRIES, MetricType::GAUGE, vec![gauge(entries)]));
        families.push(self.family(L1_BYTES, MetricType::GAUGE, vec![gauge(bytes)]));
        families
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use celeriac_cache::{CacheConfig, Policy};
    use prometheus::{Encoder, Registry, TextEncoder};
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn counters_and_latency_are_rendered_per_layer_and_source() {
        let cache = Cache::new(CacheConfig::default(), None);
        cache.declare_source("idle");
        let policy =
            Policy::new(Duration::from_secs(60), Duration::from_secs(5)).with_source("main");
        for _ in 0..2 {
            let got = cache
                .get_or_load("k", &policy, || async { Ok(Some(json!(1))) })
                .await
                .unwrap();
            assert_eq!(got, Some(json!(1)));
        }
        let registry = Registry::new();
        registry
            .register(Box::new(CacheCollector::new(cache)))
            .unwrap();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in [
            r#"celeriac_cache_hits_total{layer="l1",source="main"} 1"#,
            r#"celeriac_cache_misses_total{layer="l1",source="main"} 1"#,
            r#"celeriac_cache_loads_total{source="main"} 1"#,
            r#"celeriac_cache_loads_total{source="idle"} 0"#,
            r#"celeriac_cache_source_query_duration_seconds_count{source="main"} 1"#,
            r#"celeriac_cache_source_query_duration_seconds_bucket{source="main",le="+Inf"} 1"#,
            r#"celeriac_cache_source_query_duration_seconds_count{source="idle"} 0"#,
            "celeriac_cache_invalidations_sent_total 0",
            "# TYPE celeriac_cache_source_query_duration_seconds histogram",
            "# TYPE celeriac_cache_hits_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}

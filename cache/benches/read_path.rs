//! Read-path latency figures (a benchmark, not a test): L1 hit, L2 hit and miss (→ SQLite in
//! memory), one caller at a time, against a private redis-server started here on a free port —
//! or, with `CACHE_BENCH_CLUSTER=1`, a private Redis Cluster (3 primaries + 3 replicas) and the
//! cache in cluster mode.
//!
//! `cargo bench -p celeriac-cache --bench read_path` prints a Markdown table. `CACHE_BENCH_N`
//! sets the reads per path (default 10 000).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use celeriac_cache::source::sqlite::SqliteSource;
use celeriac_cache::{Cache, CacheConfig, CacheStats, Policy, Source, SourceConfig};
use celeriac_testkit::{RedisCluster, RedisServer};
use serde_json::{json, Value};

fn main() -> Result<()> {
    let n: usize = match std::env::var("CACHE_BENCH_N") {
        Ok(v) => v.parse().context("CACHE_BENCH_N must be a number")?,
        Err(_) => 10_000,
    };
    let cluster = std::env::var("CACHE_BENCH_CLUSTER").is_ok_and(|v| v == "1");
    // Kept alive (and killed on drop) for the whole run.
    let (_single, _cluster, url) = if cluster {
        let c = RedisCluster::start()?;
        let url = c.url();
        (None, Some(c), url)
    } else {
        let r = RedisServer::start()?;
        let url = r.url(0);
        (Some(r), None, url)
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(&url, cluster, n))
}

async fn run(url: &str, cluster: bool, n: usize) -> Result<()> {
    let source = sqlite_with_rows(n).await?;
    let client = redis::Client::open(url)?;
    let policy = Policy::new(Duration::from_secs(600), Duration::from_secs(60));
    let loader = |id: usize| {
        let source = source.clone();
        move || async move {
            let rows = source
                .fetch(
                    "SELECT id, title, price FROM tickets WHERE id = ?",
                    &[json!(id)],
                )
                .await?;
            Ok(rows.into_iter().next().map(Value::Object))
        }
    };

    let mut source_alone = Vec::with_capacity(n);
    for id in 0..n {
        let started = Instant::now();
        let rows = source
            .fetch(
                "SELECT id, title, price FROM tickets WHERE id = ?",
                &[json!(id)],
            )
            .await?;
        source_alone.push(started.elapsed());
        if rows.len() != 1 {
            bail!("SQLite returned {} rows for id {id}", rows.len());
        }
    }

    // Miss: every key cold in L1 and L2 → lease, source, conditional write.
    let writer = new_cache(&client, cluster).await;
    let mut miss = Vec::with_capacity(n);
    for id in 0..n {
        let started = Instant::now();
        writer
            .get_or_load(&format!("ticket:{id}"), &policy, loader(id))
            .await?;
        miss.push(started.elapsed());
    }
    let miss_stats = writer.stats();

    // L2 hit: a second cache (its own, empty L1) reads the keys the first one wrote.
    let reader = new_cache(&client, cluster).await;
    let mut l2 = Vec::with_capacity(n);
    for id in 0..n {
        let started = Instant::now();
        reader
            .get_or_load(&format!("ticket:{id}"), &policy, loader(id))
            .await?;
        l2.push(started.elapsed());
    }
    let l2_stats = reader.stats();

    // L1 hit: the same key again and again in the cache that holds it.
    let before = reader.stats();
    let mut l1 = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        reader.get_or_load("ticket:0", &policy, loader(0)).await?;
        l1.push(started.elapsed());
    }
    let after = reader.stats();
    let l1_stats = CacheStats {
        l1_hits: after.l1_hits - before.l1_hits,
        l2_hits: after.l2_hits - before.l2_hits,
        loads: after.loads - before.loads,
        ..CacheStats::default()
    };

    println!("| path | reads | p50 | p99 | mean | l1_hits | l2_hits | source loads |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    row("L1 hit", &mut l1, &l1_stats);
    row("L2 hit (empty L1)", &mut l2, &l2_stats);
    row("miss → SQLite (lease + write)", &mut miss, &miss_stats);
    row(
        "SQLite query alone (reference)",
        &mut source_alone,
        &CacheStats {
            loads: n as u64,
            ..CacheStats::default()
        },
    );
    Ok(())
}

/// A cache as the worker makes one: default settings (`cluster` mode as asked), subscribed to
/// invalidations.
async fn new_cache(client: &redis::Client, cluster: bool) -> Cache {
    let config = CacheConfig {
        cluster,
        ..CacheConfig::default()
    };
    let cache = Cache::new(config, Some(client.clone()));
    cache.wait_subscribed(Duration::from_secs(2)).await;
    cache
}

/// An in-memory SQLite database (one connection, so it lives as long as the pool) with `n` rows.
async fn sqlite_with_rows(n: usize) -> Result<std::sync::Arc<SqliteSource>> {
    let mut config = SourceConfig::new("bench", "sqlite::memory:");
    config.max_connections = 1;
    let source = SqliteSource::connect_lazy(&config)?;
    source
        .fetch(
            "CREATE TABLE tickets (id INTEGER PRIMARY KEY, title TEXT NOT NULL, price TEXT)",
            &[],
        )
        .await?;
    source
        .fetch(
            "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?) \
             INSERT INTO tickets (id, title, price) SELECT i, 'ticket ' || i, '12.50' FROM seq",
            &[json!(n)],
        )
        .await?;
    Ok(std::sync::Arc::new(source))
}

/// One Markdown row: latency percentiles and the counters that show which layer answered.
fn row(name: &str, samples: &mut [Duration], stats: &CacheStats) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    println!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} |",
        samples.len(),
        micros(percentile(samples, 0.50)),
        micros(percentile(samples, 0.99)),
        micros(mean),
        stats.l1_hits,
        stats.l2_hits,
        stats.loads,
    );
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

//! Stampede figures (a benchmark, not a test): 1000 concurrent reads of one cold key spread over
//! 4 worker processes sharing one private Redis and one PostgreSQL database created for the run
//! (and dropped after). The source query bumps a counter row, so the database itself says how
//! many times it was queried; the target is exactly 1 per round.
//!
//! `cargo run --release -p celeriac-cache --example stampede [-- ROUNDS]` prints Markdown.
//! `CACHE_BENCH_PG` is the admin URL (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! `CACHE_BENCH_CLUSTER=1`: a private Redis Cluster (3 primaries + 3 replicas) instead of one
//! redis-server, the caches in cluster mode. The same binary is the worker process when started
//! as `stampede child REDIS PG READERS CLUSTER` (CLUSTER: `cluster` or `single`).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use celeriac_cache::source::postgres::PostgresSource;
use celeriac_cache::{Cache, CacheConfig, Policy, Source, SourceConfig};
use celeriac_testkit::{RedisCluster, RedisServer};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

const PROCESSES: usize = 4;
const READERS_PER_PROCESS: usize = 250;

/// The cached query: it counts itself in `bench_counter` and returns one row.
const QUERY: &str = "WITH bump AS (UPDATE bench_counter SET n = n + 1 RETURNING n) \
     SELECT i.id, i.title, (SELECT n FROM bump) AS query_no FROM bench_items i WHERE i.id = $1";

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        let [_, redis_url, pg_url, readers, mode] = args.as_slice() else {
            bail!("usage: stampede child REDIS_URL PG_URL READERS cluster|single");
        };
        return child(redis_url, pg_url, readers.parse()?, mode == "cluster").await;
    }
    let rounds: usize = match args.first() {
        Some(r) => r.parse().context("ROUNDS must be a number")?,
        None => 5,
    };
    let admin_url = std::env::var("CACHE_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = PostgresSource::connect_lazy(&SourceConfig::new("admin", admin_url.clone()))?;
    let db = format!("celeriac_bench_stampede_{}", std::process::id());
    admin
        .fetch(&format!("CREATE DATABASE {db}"), &[])
        .await
        .context("create the bench database")?;
    let db_url = match admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{db}"),
        None => bail!("CACHE_BENCH_PG must end in /<database>"),
    };
    let outcome = orchestrate(&db_url, rounds).await;
    admin
        .fetch(&format!("DROP DATABASE {db} WITH (FORCE)"), &[])
        .await
        .context("drop the bench database")?;
    outcome
}

/// Start Redis and the worker processes, run the rounds, print the table.
async fn orchestrate(db_url: &str, rounds: usize) -> Result<()> {
    let db = PostgresSource::connect_lazy(&SourceConfig::new("bench", db_url))?;
    db.fetch("CREATE TABLE bench_counter (n BIGINT NOT NULL)", &[])
        .await?;
    db.fetch("INSERT INTO bench_counter VALUES (0)", &[])
        .await?;
    db.fetch(
        "CREATE TABLE bench_items (id BIGINT PRIMARY KEY, title TEXT NOT NULL)",
        &[],
    )
    .await?;
    db.fetch(
        "INSERT INTO bench_items SELECT g, 'item ' || g FROM generate_series(1, 100) g",
        &[],
    )
    .await?;
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
    let exe = std::env::current_exe()?;
    let mut workers = Vec::with_capacity(PROCESSES);
    for _ in 0..PROCESSES {
        workers.push(Worker::spawn(&exe, &url, db_url, cluster)?);
    }
    for worker in &mut workers {
        let line = worker.read_line().await?;
        if line != "ready" {
            bail!("worker did not start: {line}");
        }
    }

    println!(
        "| round | readers (processes × tasks) | source queries (Postgres counter) | loads (sum of caches) | lease waits | L2 hits | wall time |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for round in 1..=rounds {
        let before = counter(&db).await?;
        let started = Instant::now();
        for worker in &mut workers {
            worker.send(&format!("go item:{round} {round}")).await?;
        }
        let (mut loads, mut waits, mut l2_hits) = (0, 0, 0);
        for worker in &mut workers {
            let report: Value = serde_json::from_str(&worker.read_line().await?)?;
            if let Some(error) = report.get("error") {
                bail!("worker failed: {error}");
            }
            let field = |name: &str| report.get(name).and_then(Value::as_u64).unwrap_or(0);
            loads += field("loads");
            waits += field("lease_waits");
            l2_hits += field("l2_hits");
        }
        let wall = started.elapsed();
        let queries = counter(&db).await? - before;
        println!(
            "| {round} | {PROCESSES} × {READERS_PER_PROCESS} | {queries} | {loads} | {waits} | {l2_hits} | {:.1} ms |",
            wall.as_secs_f64() * 1e3
        );
    }
    for worker in workers {
        worker.finish().await?;
    }
    Ok(())
}

async fn counter(db: &PostgresSource) -> Result<i64> {
    let rows = db.fetch("SELECT n FROM bench_counter", &[]).await?;
    rows.first()
        .and_then(|r| r.get("n"))
        .and_then(Value::as_i64)
        .context("bench_counter has no row")
}

/// One worker process, driven line by line over its stdin/stdout.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn spawn(
        exe: &std::path::Path,
        redis_url: &str,
        db_url: &str,
        cluster: bool,
    ) -> Result<Worker> {
        let mode = if cluster { "cluster" } else { "single" };
        let mut child = tokio::process::Command::new(exe)
            .args([
                "child",
                redis_url,
                db_url,
                &READERS_PER_PROCESS.to_string(),
                mode,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        Ok(Worker {
            child,
            stdin,
            stdout,
        })
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    async fn read_line(&mut self) -> Result<String> {
        tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .context("worker silent for 60 s")??
            .context("worker exited")
    }

    /// Close stdin (the worker exits) and wait for it.
    async fn finish(mut self) -> Result<()> {
        drop(self.stdin);
        let status = self.child.wait().await?;
        if !status.success() {
            bail!("worker exited with {status}");
        }
        Ok(())
    }
}

/// A worker process: one `Cache` and one Postgres pool, as a celeriac worker has. On each
/// `go KEY ID` line it starts `readers` concurrent reads of KEY and reports its counters.
async fn child(redis_url: &str, pg_url: &str, readers: usize, cluster: bool) -> Result<()> {
    let cache = Cache::new(
        CacheConfig {
            prefix: "bench:cache:".into(),
            cluster,
            ..CacheConfig::default()
        },
        Some(redis::Client::open(redis_url)?),
    );
    if !cache.wait_subscribed(Duration::from_secs(5)).await {
        bail!("invalidation subscriber did not subscribe");
    }
    let source = Arc::new(PostgresSource::connect_lazy(&SourceConfig::new(
        "bench", pg_url,
    ))?);
    source.fetch("SELECT 1 AS warm", &[]).await?;
    let policy = Policy::new(Duration::from_secs(600), Duration::from_secs(60));
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    println!("ready");
    while let Some(line) = stdin.next_line().await? {
        let mut words = line.split_whitespace();
        let (Some("go"), Some(key), Some(id)) = (words.next(), words.next(), words.next()) else {
            bail!("unexpected command: {line}");
        };
        let id: i64 = id.parse()?;
        let before = cache.stats();
        let reads = (0..readers).map(|_| {
            let (cache, source, policy, key) = (
                cache.clone(),
                source.clone(),
                policy.clone(),
                key.to_string(),
            );
            tokio::spawn(async move {
                cache
                    .get_or_load(&key, &policy, || async move {
                        let rows = source.fetch(QUERY, &[json!(id)]).await?;
                        Ok(rows.into_iter().next().map(Value::Object))
                    })
                    .await
            })
        });
        let results = futures_util::future::join_all(reads).await;
        let mut error = None;
        for result in results {
            match result {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => error = Some(format!("{key}: not found")),
                Ok(Err(e)) => error = Some(e.to_string()),
                Err(e) => error = Some(e.to_string()),
            }
        }
        let after = cache.stats();
        let report = match error {
            Some(error) => json!({ "error": error }),
            None => json!({
                "loads": after.loads - before.loads,
                "lease_waits": after.lease_waits - before.lease_waits,
                "l2_hits": after.l2_hits - before.l2_hits,
            }),
        };
        println!("{report}");
    }
    Ok(())
}

//! `celeriac warm` against real Postgres and MariaDB (own databases, dropped after) and a private
//! Redis: the full load writes what the read path reads (a real Python Celery call is then served
//! from the cache, not the database), incremental runs follow inserts, updates and soft deletes,
//! a held lock exits 3, --dry-run writes nothing; a run stopped by its time budget exits 4 without
//! claiming success and the next run resumes; a run SIGKILLed mid-pass is finished by the next
//! one (after its lock expired) with exactly the source's rows; of two runs started at once one
//! works and the other exits 3. SQL Server through the TDS test server (tiberius unmodified,
//! SQLite behind, Change Tracking and rowversion emulated): Change Tracking and rowversion runs
//! follow inserts, updates and (hard, resp. soft) deletes, and reload in full when the history
//! was cleaned up past the last synced version, resp. the database is behind the watermark.
//! On a real Redis Cluster (`[cache] cluster = true`): full and incremental passes spread keys
//! over every primary, a `Cache` in cluster mode reads them as L2 hits and drops its L1 copies
//! of rewritten and deleted keys on their announcements, a held lock exits 3, and a prefix
//! invalidation finds the warmed keys in the key index.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use celeriac_cache::source::{registry::connect_lazy, SourceConfig};
use celeriac_cache::{Cache, CacheConfig, KeyTemplate, Policy, Source};
use celeriac_testkit::RedisCluster;
use redis::Commands;
use serde_json::{json, Value};
use support::{eventually, Proc, World};
use tds_test_server::{ServerOptions, TdsServer};

struct TempDb {
    admin: Arc<dyn Source>,
    name: String,
    url: String,
    rt: tokio::runtime::Runtime,
}

impl TempDb {
    fn create(kind: &str) -> TempDb {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _in = rt.enter();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("celeriac_w_{}_{nanos:x}", std::process::id());
        let (admin, url) = match kind {
            "postgres" => (
                "postgres://postgres@127.0.0.1:5432/postgres",
                format!("postgres://postgres@127.0.0.1:5432/{name}"),
            ),
            _ => (
                "mysql://root@127.0.0.1:3306/mysql",
                format!("mysql://root@127.0.0.1:3306/{name}"),
            ),
        };
        let admin = connect_lazy(&SourceConfig::new("admin", admin)).unwrap();
        rt.block_on(admin.fetch(&format!("CREATE DATABASE {name}"), &[]))
            .unwrap_or_else(|e| panic!("create {kind} database: {e}"));
        let db = TempDb {
            admin,
            name,
            url,
            rt,
        };
        let ts = if kind == "postgres" {
            "TIMESTAMPTZ NOT NULL DEFAULT now()"
        } else {
            "DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
        };
        db.exec(&format!("CREATE TABLE tickets (id BIGINT PRIMARY KEY, title VARCHAR(200) NOT NULL, price DECIMAL(10,2), updated_at {ts}, deleted_at {})", ts.replace(" NOT NULL DEFAULT now()", "").replace(" NOT NULL DEFAULT CURRENT_TIMESTAMP(6)", "")));
        let values: Vec<String> = (1..=250)
            .map(|i| format!("({i}, 'ticket {i}', {i}.50)"))
            .collect();
        db.exec(&format!(
            "INSERT INTO tickets (id, title, price) VALUES {}",
            values.join(", ")
        ));
        db
    }

    /// Postgres only: add rows 251..=`last` shaped like the first 250 (updated an hour earlier).
    fn grow_to(&self, last: u32) {
        self.exec(&format!(
            "INSERT INTO tickets (id, title, price, updated_at) \
             SELECT g, 'ticket ' || g, g + 0.5, now() - interval '1 hour' \
             FROM generate_series(251, {last}) g"
        ));
    }

    /// Every row as the read path turns it into JSON (the task's select list, same source code).
    fn rows(&self) -> Vec<Value> {
        let _in = self.rt.enter();
        let source = connect_lazy(&SourceConfig::new("t", self.url.clone())).unwrap();
        self.rt
            .block_on(source.fetch("SELECT id, title, price FROM tickets ORDER BY id", &[]))
            .unwrap()
            .into_iter()
            .map(Value::Object)
            .collect()
    }

    fn exec(&self, sql: &str) {
        let _in = self.rt.enter();
        let source = connect_lazy(&SourceConfig::new("t", self.url.clone())).unwrap();
        self.rt.block_on(source.fetch(sql, &[])).unwrap();
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _in = self.rt.enter();
        let _ = self.rt.block_on(
            self.admin
                .fetch(&format!("DROP DATABASE {}", self.name), &[]),
        );
    }
}

fn config(dir: &std::path::Path, url: &str, mode: &str) -> std::path::PathBuf {
    config_with(dir, url, mode, 40, "")
}

/// The test configuration with `batch_size` and more `[[warm]]` settings (`extra`; the
/// watermark column is `updated_at` unless `extra` names one).
fn config_with(
    dir: &std::path::Path,
    url: &str,
    mode: &str,
    batch_size: u32,
    extra: &str,
) -> std::path::PathBuf {
    let watermark = if extra.contains("watermark_column") {
        String::new()
    } else {
        "watermark_column = \"updated_at\"".to_owned()
    };
    let path = dir.join("warm.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[cache]
prefix = "w:cache:"

[sources.main]
url = "{url}"

[[tasks]]
name = "q.get_ticket"
source = "main"
sql = "SELECT id, title, price FROM tickets WHERE id = :ticket_id"
params = ["ticket_id"]
key = "ticket:{{ticket_id}}"
ttl = 300
result = "one"

[[warm]]
task = "q.get_ticket"
table = "tickets"
key_column = "id"
columns = ["id", "title", "price"]
mode = "{mode}"
{watermark}
deleted_column = "deleted_at"
batch_size = {batch_size}
{extra}
"#
        ),
    )
    .unwrap();
    path
}

fn warm(world: &World, config: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac-test-warm"))
        .arg("--config")
        .arg(config)
        .args(extra)
        .envs(world.env.iter().map(|(k, v)| (k, v)))
        .env("CELERIAC_LOG_FORMAT", "json")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// One run of `celeriac warm` with no extra flags that must exit 0 and print `expected`; its
/// output.
fn warm_ok(world: &World, config: &std::path::Path, expected: &str) -> String {
    let (code, out) = warm(world, config, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(expected), "{out}");
    out
}

/// `celeriac warm` in the background, its output in `dir/<name>.log`.
fn spawn_warm(world: &World, config: &std::path::Path, dir: &std::path::Path, name: &str) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac-test-warm"));
    cmd.arg("--config")
        .arg(config)
        .envs(world.env.iter().map(|(k, v)| (k, v)))
        .env("CELERIAC_LOG_FORMAT", "json");
    Proc::spawn(name, cmd, dir.join(format!("{name}.log")))
}

const STATE: &str = "w:cache:warm:q.get_ticket:state";
const LOCK: &str = "w:cache:warm:q.get_ticket:lock";

/// The job's saved state (`null` when none).
fn state(r: &mut redis::Connection) -> Value {
    let text: Option<String> = r.get(STATE).unwrap();
    text.map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null)
}

/// The cursor of the pass in progress.
fn cursor(r: &mut redis::Connection) -> Option<u64> {
    state(r)["pass"]["cursor"].as_u64()
}

/// The number in a summary line's `N rows read`.
fn rows_read(out: &str) -> u64 {
    let at = out
        .find(" rows read")
        .unwrap_or_else(|| panic!("no summary line: {out}"));
    out[..at]
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row count: {out}"))
}

/// A series of the job in a Prometheus textfile.
fn metric(prom: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{warm_job=\"q.get_ticket\"}} ");
    prom.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

/// Every row is cached exactly as the read path caches it, and nothing else is.
fn assert_cache_matches(r: &mut redis::Connection, rows: &[Value]) {
    assert_eq!(keys(r), rows.len(), "cached keys vs source rows");
    for chunk in rows.chunks(1000) {
        let names: Vec<String> = chunk
            .iter()
            .map(|row| format!("w:cache:v1:k2:{{q.get_ticket:ticket:({})}}", row["id"]))
            .collect();
        let texts: Vec<Option<String>> = redis::cmd("MGET").arg(&names).query(r).unwrap();
        for (row, text) in chunk.iter().zip(texts) {
            let text = text.unwrap_or_else(|| panic!("no key for row {}", row["id"]));
            let entry: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(entry["found"], json!(true), "{text}");
            assert_eq!(&entry["value"], row, "cached value of row {}", row["id"]);
        }
    }
}

fn cached(r: &mut redis::Connection, id: u32) -> Option<Value> {
    let text: Option<String> = r
        .get(format!("w:cache:v1:k2:{{q.get_ticket:ticket:({id})}}"))
        .unwrap();
    text.map(|t| serde_json::from_str::<Value>(&t).unwrap())
}

fn keys(r: &mut redis::Connection) -> usize {
    let keys: Vec<String> = r.keys("w:cache:v1:k2:{q.get_ticket:ticket:*").unwrap();
    keys.len()
}

fn full_then_incremental(kind: &str) {
    let db = TempDb::create(kind);
    let world = World::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &db.url, "updated_at");
    let mut r = world.redis();

    let (code, out) = warm(&world, &cfg, &["--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("250 rows read"), "{out}");
    assert_eq!(keys(&mut r), 0, "dry run wrote keys");

    let (code, out) = warm(
        &world,
        &cfg,
        &[
            "--metrics-file",
            dir.path().join("m.prom").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("full pass: 250 rows read, 250 keys written"),
        "{out}"
    );
    assert_eq!(keys(&mut r), 250);
    let entry = cached(&mut r, 7).unwrap();
    assert_eq!(entry["found"], json!(true));
    assert_eq!(
        entry["value"],
        json!({"id": 7, "title": "ticket 7", "price": "7.50"})
    );
    let prom = std::fs::read_to_string(dir.path().join("m.prom")).unwrap();
    assert!(
        prom.contains("celeriac_warm_rows_total{warm_job=\"q.get_ticket\"} 250"),
        "{prom}"
    );
    assert!(
        prom.contains("celeriac_warm_last_success_timestamp_seconds{warm_job=\"q.get_ticket\"}")
    );

    // The read path is served from the warmed L2: change the row behind the cache's back and a
    // real Celery call still returns the warmed value (no source query was made).
    db.exec("UPDATE tickets SET title = 'changed' WHERE id = 7");
    let worker = world.celeriac("w", &["--config", cfg.to_str().unwrap()]);
    let got = world.py("from celery_app import app\nimport json\nprint(json.dumps(app.send_task('q.get_ticket', args=(7,)).get(timeout=20)))");
    assert_eq!(
        serde_json::from_str::<Value>(got.trim()).unwrap(),
        entry["value"]
    );
    drop(worker);

    // Incremental: an update (id 7 above), an insert and a soft delete.
    db.exec("INSERT INTO tickets (id, title, price) VALUES (1000, 'new one', 3.00)");
    let later = if kind == "postgres" {
        "now() + interval '1 second'"
    } else {
        "CURRENT_TIMESTAMP(6) + INTERVAL 1 SECOND"
    };
    db.exec(&format!(
        "UPDATE tickets SET deleted_at = {later}, updated_at = {later} WHERE id = 9"
    ));
    db.exec(&format!(
        "UPDATE tickets SET updated_at = {later} WHERE id = 7"
    ));
    let out = warm_ok(&world, &cfg, "incremental pass");
    assert_eq!(
        cached(&mut r, 7).unwrap()["value"]["title"],
        json!("changed")
    );
    assert_eq!(
        cached(&mut r, 1000).unwrap()["value"]["title"],
        json!("new one")
    );
    assert_eq!(cached(&mut r, 9), None, "soft-deleted row's key stays");
    assert!(
        !out.contains("250 rows read"),
        "incremental reread everything: {out}"
    );

    // Another run holds the lock: exit 3, nothing done.
    let _: () = r
        .set("w:cache:warm:q.get_ticket:lock", "other-host:1")
        .unwrap();
    let (code, out) = warm(&world, &cfg, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("another run holds the lock"), "{out}");
    let _: () = r.del("w:cache:warm:q.get_ticket:lock").unwrap();

    // --full reloads everything.
    let (code, out) = warm(&world, &cfg, &["--full"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("full pass: 251 rows read, 250 keys written"),
        "{out}"
    );
}

#[test]
fn postgres_full_incremental_lock_dry_run() {
    full_then_incremental("postgres");
}

#[test]
fn mariadb_full_incremental_lock_dry_run() {
    full_then_incremental("mariadb");
}

#[test]
fn bad_config_exits_2() {
    let world = World::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "postgres://postgres@127.0.0.1:5432/postgres",
        "sideways",
    );
    let (code, out) = warm(&world, &cfg, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown mode `sideways`"), "{out}");
}

/// The keys matching `pattern` that the cluster node on `port` holds itself.
fn node_keys(port: u16, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    client.get_connection().unwrap().keys(pattern).unwrap()
}

#[test]
fn cluster_full_and_incremental_passes_feed_the_read_path() {
    let db = TempDb::create("postgres");
    let world = World::new(&[]);
    let cluster = RedisCluster::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &db.url, "updated_at");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let cache_section = format!(
        "[cache]\ncluster = true\nredis_url = \"{}\"\n",
        cluster.url()
    );
    std::fs::write(&cfg, text.replacen("[cache]\n", &cache_section, 1)).unwrap();

    // Batches of 40 rows, each split by slot over the three primaries.
    warm_ok(&world, &cfg, "full pass: 250 rows read, 250 keys written");
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let per_node: Vec<usize> = primaries
        .iter()
        .map(|p| node_keys(*p, "w:cache:v1:k2:{q.get_ticket:ticket:*").len())
        .collect();
    assert_eq!(per_node.iter().sum::<usize>(), 250, "{per_node:?}");
    assert!(per_node.iter().all(|n| *n > 0), "{per_node:?}");
    let state_keys: usize = primaries
        .iter()
        .map(|p| node_keys(*p, "w:cache:warm:{q.get_ticket}:*").len())
        .sum();
    assert_eq!(state_keys, 1, "the state key, and no lock left behind");
    assert_eq!(
        world.redis().keys::<_, Vec<String>>("*").unwrap(),
        Vec::<String>::new()
    );

    // A cache on the cluster (the worker's settings) reads every warmed key from L2.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cache = rt.block_on(async {
        let config = CacheConfig {
            prefix: "w:cache:".into(),
            cluster: true,
            ..CacheConfig::default()
        };
        let cache = Cache::new(config, Some(redis::Client::open(cluster.url()).unwrap()));
        assert!(cache.wait_subscribed(Duration::from_secs(30)).await);
        cache
    });
    let template = KeyTemplate::parse("ticket:{ticket_id}")
        .unwrap()
        .in_namespace("q.get_ticket");
    let policy = Policy::new(Duration::from_secs(300), Duration::from_secs(30));
    // Every row's value as the cache gives it, and the cache's counters for these reads.
    let read_all = |rows: &[Value]| {
        rt.block_on(async {
            let before = cache.stats();
            let mut got = Vec::new();
            for row in rows {
                let key = template
                    .render(json!({"ticket_id": row["id"]}).as_object().unwrap())
                    .unwrap();
                let value = cache
                    .get_or_load(&key, &policy, || async {
                        Ok(Some(json!("from the source")))
                    })
                    .await
                    .unwrap();
                got.push(value.unwrap_or(Value::Null));
            }
            let after = cache.stats();
            (
                got,
                after.l2_hits - before.l2_hits,
                after.loads - before.loads,
            )
        })
    };
    let rows = db.rows();
    let (got, l2_hits, loads) = read_all(&rows);
    assert_eq!(got, rows);
    assert_eq!((l2_hits, loads), (250, 0));
    assert_eq!(read_all(&rows).0, rows, "now from L1");

    // Incremental: an update and a soft delete reach the cluster (write and delete scripts per
    // slot, the state saved under the lock in the job's slot), and their announcements reach
    // the cache's L1.
    db.exec("UPDATE tickets SET deleted_at = now() + interval '1 second', updated_at = now() + interval '1 second' WHERE id = 9");
    db.exec("UPDATE tickets SET title = 'changed', updated_at = now() + interval '1 second' WHERE id = 7");
    // (The first incremental pass starts at the full pass's MAX(updated_at), inclusive, which
    // the 248 untouched rows share.)
    warm_ok(
        &world,
        &cfg,
        "incremental pass: 250 rows read, 249 keys written, 1 deleted",
    );
    let announced = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            while cache.stats().invalidations_received < 250 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    });
    assert!(announced.is_ok(), "{:?}", cache.stats());
    // The subscriber counts a message before it evicts its key: read until the last eviction
    // is done too (without the announcements L1 keeps the old values for l1_ttl, 30 s).
    let rows = db.rows();
    let expected: Vec<Value> = rows
        .iter()
        .map(|r| match r["id"] == json!(9) {
            true => json!("from the source"),
            false => r.clone(),
        })
        .collect();
    let loads_before = cache.stats().loads;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut got = read_all(&rows).0;
    while got != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        got = read_all(&rows).0;
    }
    assert_eq!(got, expected, "row 7 changed, row 9's key deleted");
    assert_eq!(
        cache.stats().loads - loads_before,
        1,
        "only row 9 from the source"
    );

    // Another run holds the job's lock on the cluster: exit 3, nothing done.
    let mut conn = redis::cluster::ClusterClient::new(vec![cluster.url()])
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = conn
        .set("w:cache:warm:{q.get_ticket}:lock", "other-host:1")
        .unwrap();
    let (code, out) = warm(&world, &cfg, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(
            "another run holds the lock w:cache:warm:{q.get_ticket}:lock (holder other-host:1)"
        ),
        "{out}"
    );

    // The warmed keys are in the cluster's prefix index: a prefix invalidation (which reads the
    // index, not the shards) deletes every one of them, on every primary.
    rt.block_on(cache.invalidate_prefix("q.get_ticket:ticket:"));
    for p in &primaries {
        let left = node_keys(*p, "w:cache:v1:k2:{q.get_ticket:ticket:*");
        assert_eq!(left, Vec::<String>::new(), "node {p}");
    }
}

#[test]
fn time_budget_exits_4_keeps_progress_and_claims_no_success() {
    let db = TempDb::create("postgres");
    let world = World::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    // 250 rows at 100 rows/s need 2.5 s: a 1 s budget cannot read them in one run.
    let cfg = config_with(
        dir.path(),
        &db.url,
        "updated_at",
        40,
        "rows_per_second = 100\ntime_budget = \"1s\"",
    );
    let prom_path = dir.path().join("m.prom");
    let prom_arg = ["--metrics-file", prom_path.to_str().unwrap()];
    let prom = || std::fs::read_to_string(&prom_path).unwrap();
    let mut r = world.redis();

    let (code, out) = warm(&world, &cfg, &prom_arg);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("time budget reached"), "{out}");
    let first = rows_read(&out);
    assert!(first > 0 && first < 250, "{out}");
    let text = prom();
    assert_eq!(
        metric(&text, "celeriac_warm_last_success_timestamp_seconds"),
        None,
        "a budget-stopped run claimed success:\n{text}"
    );
    assert_eq!(metric(&text, "celeriac_warm_last_run_complete"), Some(0.0));
    let st = state(&mut r);
    assert_eq!(st["last_success_ms"], Value::Null, "{st}");
    assert_eq!(st["pass"]["kind"], json!("full"), "{st}");
    assert_eq!(st["pass"]["cursor"], json!(first), "{st}");
    assert_eq!(keys(&mut r), first as usize);

    // Each rerun resumes where the last one stopped: together they read every row once.
    let finish = |world: &World| {
        let mut total = 0;
        for _ in 0..10 {
            let (code, out) = warm(world, &cfg, &prom_arg);
            total += rows_read(&out);
            match code {
                0 => return (total, out),
                4 => assert!(out.contains("the next run resumes"), "{out}"),
                _ => panic!("exit {code}: {out}"),
            }
        }
        panic!("ten budget-limited runs did not finish the pass");
    };
    let (rest, out) = finish(&world);
    assert!(out.contains("full pass:"), "{out}");
    assert_eq!(
        first + rest,
        250,
        "rows read again or skipped across resumes"
    );
    assert_cache_matches(&mut r, &db.rows());
    let text = prom();
    let success = metric(&text, "celeriac_warm_last_success_timestamp_seconds")
        .unwrap_or_else(|| panic!("no last success after a complete run:\n{text}"));
    assert_eq!(metric(&text, "celeriac_warm_last_run_complete"), Some(1.0));
    let st = state(&mut r);
    assert_eq!(st["pass"], Value::Null, "{st}");
    let success_ms = st["last_success_ms"].as_u64().unwrap();
    assert_eq!((success * 1000.0).round() as u64, success_ms);

    // An incremental pass stopped by the budget keeps its advanced watermark and re-exposes
    // the previous success, not a new one.
    db.exec(
        "UPDATE tickets SET title = title || ' v2', updated_at = now() + interval '1 second' \
         WHERE id <= 150",
    );
    let (code, out) = warm(&world, &cfg, &prom_arg);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("incremental pass"), "{out}");
    let first = rows_read(&out);
    let st = state(&mut r);
    assert_eq!(st["pass"]["kind"], json!("incremental"), "{st}");
    assert!(
        !st["watermark"][1].is_null(),
        "watermark not advanced: {st}"
    );
    assert_eq!(st["last_success_ms"], json!(success_ms), "{st}");
    assert_eq!(
        metric(&prom(), "celeriac_warm_last_success_timestamp_seconds"),
        Some(success)
    );
    let (rest, out) = finish(&world);
    assert!(out.contains("incremental pass:"), "{out}");
    // The first incremental pass starts at the full pass's watermark inclusive: the 100 rows
    // still at it and the 150 updated ones, each read once across the resumed runs.
    assert_eq!(
        first + rest,
        250,
        "rows read again or skipped across resumes"
    );
    assert_eq!(
        cached(&mut r, 150).unwrap()["value"]["title"],
        json!("ticket 150 v2")
    );
    assert_cache_matches(&mut r, &db.rows());
    assert!(state(&mut r)["last_success_ms"].as_u64().unwrap() > success_ms);
}

#[test]
fn sigkill_mid_run_then_rerun_finishes_with_the_right_data() {
    let db = TempDb::create("postgres");
    db.grow_to(200_000);
    let world = World::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    // 200k rows at 40k rows/s take at least 5 s: the kill lands mid-pass.
    let cfg = config_with(
        dir.path(),
        &db.url,
        "updated_at",
        1000,
        "rows_per_second = 40000\nlock_ttl = \"4s\"",
    );
    let mut r = world.redis();
    let mut first = spawn_warm(&world, &cfg, dir.path(), "warm-killed");
    eventually(Duration::from_secs(120), || {
        cursor(&mut r).filter(|c| *c >= 5000)
    })
    .unwrap_or_else(|| panic!("the first run wrote nothing:\n{}", first.log()));
    first.kill9();
    let saved = cursor(&mut r).expect("a pass in progress");
    assert!(saved < 200_000, "the run finished before the kill");
    assert!(keys(&mut r) as u64 >= saved);
    let pttl: i64 = r.pttl(LOCK).unwrap();
    assert!(
        pttl > 0 && pttl <= 4000,
        "the dead run's lock should be left with its expiry: pttl {pttl}"
    );

    // A row the dead run already wrote changes before the rerun.
    db.exec("UPDATE tickets SET title = 'after kill', updated_at = now() + interval '1 second' WHERE id = 5");

    // Reruns exit 3 while the dead run's lock lives, then one takes over and resumes.
    let (code, out) = eventually(Duration::from_secs(60), || {
        let (code, out) = warm(&world, &cfg, &[]);
        if code == 3 {
            assert!(out.contains("another run holds the lock"), "{out}");
            std::thread::sleep(Duration::from_millis(300));
            None
        } else {
            Some((code, out))
        }
    })
    .expect("the dead run's lock never expired");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("full pass:"), "{out}");
    assert_eq!(
        rows_read(&out),
        200_000 - saved,
        "the rerun did not resume after the saved cursor {saved}: {out}"
    );
    let st = state(&mut r);
    assert_eq!(st["pass"], Value::Null, "{st}");
    assert!(st["last_success_ms"].as_u64().is_some(), "{st}");
    assert!(!r.exists::<_, bool>(LOCK).unwrap(), "lock not released");
    // The pass had passed row 5 when it changed; its watermark was taken when the pass began,
    // so the next (incremental) run brings the change.
    assert_eq!(
        cached(&mut r, 5).unwrap()["value"]["title"],
        json!("ticket 5")
    );
    warm_ok(&world, &cfg, "incremental pass:");
    assert_eq!(
        cached(&mut r, 5).unwrap()["value"]["title"],
        json!("after kill")
    );
    assert_cache_matches(&mut r, &db.rows());
}

#[test]
fn two_runs_at_once_one_works_the_other_exits_3() {
    let db = TempDb::create("postgres");
    db.grow_to(20_000);
    let world = World::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    // 20k rows at 2,500 rows/s: the working run lasts at least 8 s.
    let cfg = config_with(dir.path(), &db.url, "full", 500, "rows_per_second = 2500");
    let mut r = world.redis();
    let mut a = spawn_warm(&world, &cfg, dir.path(), "warm-a");
    let mut b = spawn_warm(&world, &cfg, dir.path(), "warm-b");
    let ca = a.wait_exit(Duration::from_secs(180)).unwrap().code();
    let cb = b.wait_exit(Duration::from_secs(180)).unwrap().code();
    let (winner, loser) = match (ca, cb) {
        (Some(0), Some(3)) => (a, b),
        (Some(3), Some(0)) => (b, a),
        other => panic!(
            "exit codes {other:?}, expected one 0 and one 3:\n{}\n{}",
            a.log(),
            b.log()
        ),
    };
    let lost = loser.log();
    assert!(
        lost.contains("another run holds the lock w:cache:warm:q.get_ticket:lock"),
        "{lost}"
    );
    assert!(!lost.contains(" rows read"), "the loser worked: {lost}");
    assert_eq!(rows_read(&winner.log()), 20_000, "{}", winner.log());
    assert_cache_matches(&mut r, &db.rows());
    assert!(!r.exists::<_, bool>(LOCK).unwrap(), "lock not released");
}

#[test]
fn a_paused_run_that_lost_its_lock_stops_without_saving() {
    let db = TempDb::create("postgres");
    db.grow_to(20_000);
    let world = World::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(
        dir.path(),
        &db.url,
        "full",
        500,
        "rows_per_second = 2500\nlock_ttl = \"2s\"",
    );
    let mut r = world.redis();
    let mut paused = spawn_warm(&world, &cfg, dir.path(), "warm-paused");
    eventually(Duration::from_secs(120), || {
        cursor(&mut r).filter(|c| *c >= 1000)
    })
    .unwrap_or_else(|| panic!("the first run wrote nothing:\n{}", paused.log()));
    paused.signal("STOP");
    eventually(Duration::from_secs(30), || {
        (!r.exists::<_, bool>(LOCK).unwrap()).then_some(())
    })
    .expect("the paused run's lock did not expire");
    // A second run takes the expired lock and completes the pass.
    let (code, out) = warm(&world, &cfg, &[]);
    assert_eq!(code, 0, "{out}");
    let after = state(&mut r);
    assert_eq!(after["pass"], Value::Null, "{after}");
    paused.signal("CONT");
    let status = paused.wait_exit(Duration::from_secs(60)).unwrap();
    let log = paused.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("was lost"), "{log}");
    assert_eq!(
        state(&mut r),
        after,
        "the run that lost its lock saved its state"
    );
    assert_cache_matches(&mut r, &db.rows());
}

/// The TDS test server with a `tickets` table (250 rows, a `rowversion` column) and the SQL
/// Server source the warm job uses, to change rows and read them back.
struct TdsDb {
    url: String,
    source: Arc<dyn Source>,
    _server: TdsServer,
    rt: tokio::runtime::Runtime,
}

impl TdsDb {
    fn start() -> TdsDb {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt
            .block_on(TdsServer::start(ServerOptions::default()))
            .unwrap();
        let url = format!(
            "server=tcp:127.0.0.1,{};user=app;password=secret;database=shop;encrypt=DANGER_PLAINTEXT",
            server.addr().port()
        );
        let source = {
            let _in = rt.enter();
            connect_lazy(&SourceConfig::new("t", url.clone())).unwrap()
        };
        let db = TdsDb {
            url,
            source,
            _server: server,
            rt,
        };
        db.exec(
            "CREATE TABLE tickets (id BIGINT PRIMARY KEY, title NVARCHAR(200) NOT NULL, \
             price DECIMAL(10,2), deleted_at DATETIME2, rv ROWVERSION)",
        );
        let values: Vec<String> = (1..=250)
            .map(|i| format!("({i}, N'ticket {i}', {i}.50)"))
            .collect();
        db.exec(&format!(
            "INSERT INTO tickets (id, title, price) VALUES {}",
            values.join(", ")
        ));
        db
    }

    fn exec(&self, sql: &str) {
        let _in = self.rt.enter();
        self.rt
            .block_on(self.source.fetch(sql, &[]))
            .unwrap_or_else(|e| panic!("{}: {e}", &sql[..sql.len().min(120)]));
    }

    /// The rows not soft-deleted, as the read path turns them into JSON.
    fn rows(&self) -> Vec<Value> {
        let _in = self.rt.enter();
        self.rt
            .block_on(self.source.fetch(
                "SELECT id, title, price FROM tickets WHERE deleted_at IS NULL ORDER BY id",
                &[],
            ))
            .unwrap()
            .into_iter()
            .map(Value::Object)
            .collect()
    }
}

#[test]
fn sql_server_change_tracking_follows_changes_and_reloads_when_behind() {
    let db = TdsDb::start();
    db.exec("ALTER DATABASE shop SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)");
    db.exec("ALTER TABLE tickets ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = OFF)");
    let world = World::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &db.url, "change_tracking");
    let mut r = world.redis();

    warm_ok(&world, &cfg, "full pass: 250 rows read, 250 keys written");
    assert_cache_matches(&mut r, &db.rows());
    warm_ok(&world, &cfg, "incremental pass: 0 rows read");

    db.exec("INSERT INTO tickets (id, title, price) VALUES (1000, N'new one', 3.00)");
    db.exec("UPDATE tickets SET title = N'changed' WHERE id = 7");
    db.exec("DELETE FROM tickets WHERE id = 9");
    warm_ok(
        &world,
        &cfg,
        "incremental pass: 3 rows read, 2 keys written, 1 deleted",
    );
    assert_eq!(cached(&mut r, 9), None);
    assert_eq!(
        cached(&mut r, 7).unwrap()["value"]["title"],
        json!("changed")
    );
    assert_cache_matches(&mut r, &db.rows());

    // The change history is cleaned up past the last synced version: a full reload.
    db.exec("UPDATE tickets SET title = N'while away' WHERE id = 8");
    db.exec("EXEC sys.sp_flush_CT_internal_table_on_demand @TableToClean = N'tickets'");
    let out = warm_ok(&world, &cfg, "change tracking history is gone; full reload");
    assert!(
        out.contains("full pass: 250 rows read, 250 keys written"),
        "{out}"
    );
    assert_eq!(
        cached(&mut r, 8).unwrap()["value"]["title"],
        json!("while away")
    );
    assert_cache_matches(&mut r, &db.rows());
    warm_ok(&world, &cfg, "incremental pass: 0 rows read");
}

#[test]
fn sql_server_rowversion_follows_changes_and_reloads_a_restored_database() {
    let db = TdsDb::start();
    let world = World::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(
        dir.path(),
        &db.url,
        "rowversion",
        40,
        "watermark_column = \"rv\"",
    );
    let mut r = world.redis();

    warm_ok(&world, &cfg, "full pass: 250 rows read, 250 keys written");
    assert_cache_matches(&mut r, &db.rows());
    warm_ok(&world, &cfg, "incremental pass: 0 rows read");

    db.exec("INSERT INTO tickets (id, title, price) VALUES (1000, N'new one', 3.00)");
    db.exec("UPDATE tickets SET title = N'changed' WHERE id = 7");
    db.exec("UPDATE tickets SET deleted_at = '2026-01-02 03:04:05' WHERE id = 9");
    warm_ok(
        &world,
        &cfg,
        "incremental pass: 3 rows read, 2 keys written, 1 deleted",
    );
    assert_eq!(cached(&mut r, 9), None);
    assert_cache_matches(&mut r, &db.rows());

    // The database is replaced by one whose rowversions are behind the watermark (restored
    // from an older backup): a full reload, not an incremental pass that would see nothing.
    let restored = TdsDb::start();
    restored.exec("UPDATE tickets SET title = N'restored' WHERE id = 3");
    let cfg = config_with(
        dir.path(),
        &restored.url,
        "rowversion",
        40,
        "watermark_column = \"rv\"",
    );
    let out = warm_ok(&world, &cfg, "the watermark is ahead of the database");
    assert!(
        out.contains("full pass: 250 rows read, 250 keys written"),
        "{out}"
    );
    assert_eq!(
        cached(&mut r, 3).unwrap()["value"]["title"],
        json!("restored")
    );
    assert_eq!(
        cached(&mut r, 9).unwrap()["value"]["title"],
        json!("ticket 9")
    );
    warm_ok(&world, &cfg, "incremental pass: 0 rows read");
}

//! The chaos run (`tests/chaos/run`): celeriac workers and a Python Celery worker serve a task
//! mix sent by real Celery producers while workers are SIGKILLed and restarted, their Redis
//! connections are cut and delayed by a [`FaultProxy`], and Postgres restarts once; then every
//! task sent is audited (see [`ledger`]).

pub mod fleet;
pub mod ledger;
pub mod postgres;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use celeriac_testkit::RedisServer;
use redis::Commands;

use crate::fault_proxy::FaultProxy;
use fleet::{Launcher, Proc};
use ledger::{Audit, Results};
use postgres::PrivatePostgres;

/// The queues the run uses (`rust` only celeriac consumes: the query task).
pub const QUEUES: &[&str] = &["celery", "rust"];

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Tasks to send in all.
    pub tasks: usize,
    /// The whole run is bounded by this (setup, sending, chaos, drain).
    pub time_limit: Duration,
    /// A celeriac worker is SIGKILLed (and restarted) this often.
    pub kill_every: Duration,
    /// celeriac workers.
    pub workers: usize,
    /// Concurrency of each celeriac worker.
    pub concurrency: usize,
    /// Producer processes.
    pub producers: usize,
    /// Whether to run the private Postgres and the query task.
    pub postgres: bool,
    /// Whether the Python worker also goes through the fault proxy (by default it connects to
    /// Redis directly: under cut connections kombu itself loses and duplicates messages, which
    /// would hide what celeriac does).
    pub python_through_proxy: bool,
    /// Seed of the task mix and of the fault timings.
    pub seed: u64,
    /// Whether every side signs its messages (Celery's `auth` serializer for tasks, results
    /// and events, with the fixtures' key, certificate and store).
    pub signed: bool,
    /// The celeriac test worker binary.
    pub worker_bin: PathBuf,
    /// The test venv's Python.
    pub python: PathBuf,
    /// The workspace root.
    pub root: PathBuf,
    /// Where logs and manifests go.
    pub logs: PathBuf,
}

/// What happened during the run, and the audit.
#[derive(Debug, Default)]
pub struct Report {
    /// Settings summary line.
    pub setup: String,
    /// SIGKILLs of celeriac workers.
    pub kills: u64,
    /// Ids that were in flight on a worker at one of its kills (counted per kill).
    pub in_flight_at_kills: u64,
    /// Times the proxy cut every connection.
    pub proxy_cuts: u64,
    /// Connections the proxy accepted (reconnects included).
    pub proxy_connections: u64,
    /// Postgres restarts, or why there were none.
    pub postgres: String,
    /// Whether the Python worker was still running at the end.
    pub python_worker_alive: bool,
    /// Seconds the producers took.
    pub send_secs: f64,
    /// Seconds of chaos (kills, cuts).
    pub chaos_secs: f64,
    /// Seconds from start to the end of the drain.
    pub total_secs: f64,
    /// `/proc/loadavg` at start and end.
    pub load: (String, String),
    /// The audit.
    pub audit: Audit,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.audit;
        writeln!(f, "==== celeriac chaos run ====")?;
        writeln!(f, "setup: {}", self.setup)?;
        writeln!(
            f,
            "load average: start {} / end {}",
            self.load.0, self.load.1
        )?;
        writeln!(
            f,
            "time: sending {:.0} s, chaos {:.0} s, total {:.0} s",
            self.send_secs, self.chaos_secs, self.total_secs
        )?;
        writeln!(
            f,
            "faults: {} SIGKILLs of celeriac workers ({} ids in flight at a kill), {} proxy cuts of every connection ({} connections accepted), Postgres: {}",
            self.kills, self.in_flight_at_kills, self.proxy_cuts, self.proxy_connections, self.postgres
        )?;
        writeln!(
            f,
            "python worker alive at the end: {}",
            self.python_worker_alive
        )?;
        let kinds: Vec<String> = a
            .sent_by_kind
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        writeln!(f, "sent: {} ({})", a.sent, kinds.join(", "))?;
        let failed: Vec<String> = a.failed.iter().map(|(e, n)| format!("{e} {n}")).collect();
        writeln!(
            f,
            "final results: SUCCESS as expected {}, wrong result {}, FAILURE {} [{}]",
            a.succeeded,
            a.wrong_result,
            a.failed.iter().map(|(_, n)| n).sum::<usize>(),
            failed.join(", ")
        )?;
        writeln!(
            f,
            "lost: {}   unfinished at the deadline (still queued/unacked): {}   dead-lettered: {}",
            a.lost, a.unfinished, a.dead_lettered
        )?;
        writeln!(
            f,
            "stale RETRY written by the Python worker over a finished retry (Celery's race, nothing lost): {}",
            a.stale_retry_by_python
        )?;
        writeln!(
            f,
            "duplicate executions: {} explained by a kill while in flight, {} chord bodies fired again by a re-run part, {} unexplained (ETA: {}; the Python worker ran {} of them); results with missing executions: {}",
            a.duplicates_at_kills,
            a.duplicates_after_part_reruns,
            a.duplicates_unexplained,
            a.eta_duplicates_unexplained,
            a.duplicates_unexplained_with_python,
            a.missing_executions
        )?;
        for e in &a.examples {
            writeln!(f, "  e.g. {e}")?;
        }
        write!(
            f,
            "RESULT: {}",
            if a.ok() {
                "PASS (every invariant held)"
            } else {
                "FAIL"
            }
        )
    }
}

/// A small deterministic generator for fault timings (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn connect(url: &str) -> Result<redis::Connection> {
    Ok(redis::Client::open(url)?.get_connection()?)
}

/// The query task of the run, reading the private Postgres through the cache.
fn query_config(pg_url: &str) -> String {
    format!(
        r#"[cache]
prefix = "chaos:cache:"
l1_ttl = "1s"

[sources.pg]
url = "{pg_url}"
max_connections = 4
connect_timeout = "5s"
query_timeout = "10s"

[[tasks]]
name = "chaos.get_item"
source = "pg"
sql = "SELECT id, name FROM items WHERE id = :item_id"
params = ["item_id"]
key = "item:{{item_id}}"
ttl = "2s"
result = "one"
"#
    )
}

/// Cut every proxied connection at random intervals (0.5–4 s) and change the added delay, until
/// `stop`.
fn cut_connections(proxy: Arc<FaultProxy>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = Rng(seed);
    while !stop.load(Ordering::Relaxed) {
        let pause = rng.millis(500, 4000);
        let until = Instant::now() + pause;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        proxy.cut_all();
        proxy.set_delay(if rng.next().is_multiple_of(2) {
            rng.millis(0, 20)
        } else {
            Duration::ZERO
        });
    }
    proxy.set_delay(Duration::ZERO);
}

/// The fixtures' signing key, certificate and store (`proto-fixtures/fixtures/signed`).
fn keys_dir(opts: &Options) -> PathBuf {
    opts.root.join("proto-fixtures/fixtures/signed")
}

/// The settings that make every process sign with the fixtures' encrypted key (its password
/// given through a `_FILE`) and trust the fixtures' store, as `tests/tests/security_signing.rs`.
fn signing_env(opts: &Options) -> Result<Vec<(String, String)>> {
    let keys = keys_dir(opts);
    let password_file = opts.logs.join("key-password");
    std::fs::write(&password_file, "test-password\n")?;
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    Ok([
        ("CELERY_TASK_SERIALIZER", "auth".to_string()),
        ("CELERY_RESULT_SERIALIZER", "auth".to_string()),
        ("CELERY_EVENT_SERIALIZER", "auth".to_string()),
        ("CELERY_ACCEPT_CONTENT", "auth".to_string()),
        ("CELERY_SECURITY_KEY", path(keys.join("key-encrypted.pem"))),
        ("CELERY_SECURITY_CERTIFICATE", path(keys.join("cert.pem"))),
        ("CELERY_SECURITY_CERT_STORE", path(keys.join("store/*.pem"))),
        ("CELERY_SECURITY_KEY_PASSWORD_FILE", path(password_file)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect())
}

/// Run the whole chaos scenario and audit it.
pub fn run(opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let deadline = started + opts.time_limit;
    let mut report = Report {
        load: (loadavg(), String::new()),
        ..Report::default()
    };
    std::fs::create_dir_all(&opts.logs)?;
    let redis_log = opts.logs.join("redis.log");
    let broker = RedisServer::start_with_args(&[
        "--appendonly",
        "yes",
        "--logfile",
        redis_log.to_str().context("utf-8 log path")?,
    ])?;
    let tally = RedisServer::start()?;
    let proxy = Arc::new(FaultProxy::start(SocketAddr::from((
        [127, 0, 0, 1],
        broker.port(),
    )))?);
    let pg = if opts.postgres {
        match PrivatePostgres::start() {
            Ok(pg) => Some(pg),
            Err(e) => {
                report.postgres = format!("not run ({e:#})");
                None
            }
        }
    } else {
        report.postgres = "not run (--no-postgres)".into();
        None
    };
    let config = match &pg {
        Some(pg) => {
            let path = opts.logs.join("chaos.toml");
            std::fs::write(&path, query_config(&pg.url()))?;
            Some(path)
        }
        None => None,
    };
    let transport = r#"{"visibility_timeout": 20, "unacked_restore_interval": 2, "unacked_restore_throttle": 1}"#;
    let signing = if opts.signed {
        signing_env(opts)?
    } else {
        Vec::new()
    };
    let results = if opts.signed {
        Results::signed(&keys_dir(opts).join("store/*.pem").to_string_lossy())?
    } else {
        Results::default()
    };
    let common = |url: &str| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("CELERY_BROKER_URL".into(), url.into()),
            ("CELERY_RESULT_BACKEND".into(), url.into()),
            ("CELERY_BROKER_TRANSPORT_OPTIONS".into(), transport.into()),
            ("CELERY_TASK_ACKS_LATE".into(), "true".into()),
            ("CELERY_RESULT_EXTENDED".into(), "true".into()),
            ("CELERIAC_TEST_TALLY_URL".into(), tally.url(0)),
        ];
        env.extend(signing.iter().cloned());
        env
    };
    let launcher = Launcher {
        worker_bin: opts.worker_bin.clone(),
        python: opts.python.clone(),
        python_dir: opts.root.join("tests/python"),
        logs: opts.logs.clone(),
        worker_env: common(&proxy.url(0)),
        python_worker_env: common(&if opts.python_through_proxy {
            proxy.url(0)
        } else {
            broker.url(0)
        }),
        producer_env: common(&broker.url(0)),
        concurrency: opts.concurrency,
        config,
    };
    report.setup = format!(
        "{} tasks, {} celeriac workers ({}, -c {}) + 1 Python Celery worker (threads, -c 4, {}), {} producers, {}a SIGKILL every {:?}, acks_late, visibility_timeout 20 s, Redis with AOF (port {}) behind the fault proxy (port {}), seed {}, limit {:?}",
        opts.tasks,
        opts.workers,
        opts.worker_bin.display(),
        opts.concurrency,
        if opts.python_through_proxy {
            "through the fault proxy"
        } else {
            "connected to Redis directly"
        },
        opts.producers,
        if opts.signed {
            "every message signed (auth serializer: tasks, results, events), "
        } else {
            ""
        },
        opts.kill_every,
        broker.port(),
        proxy.port(),
        opts.seed,
        opts.time_limit
    );

    let mut workers: Vec<Proc> = Vec::new();
    let mut generations = vec![0u64; opts.workers];
    for slot in 0..opts.workers {
        let mut w = launcher.celeriac(slot, 0)?;
        w.wait_for("celeriac worker ready", Duration::from_secs(60))?;
        workers.push(w);
    }
    let mut python_worker = launcher.python_worker()?;
    python_worker.wait_for("ready.", Duration::from_secs(120))?;

    let script = opts.root.join("tests/chaos/produce.py");
    let manifests: Vec<PathBuf> = (0..opts.producers)
        .map(|n| opts.logs.join(format!("manifest-{n}.txt")))
        .collect();
    let share = opts.tasks.div_ceil(opts.producers);
    let mut producers = Vec::new();
    for (n, manifest) in manifests.iter().enumerate() {
        let tasks = share.min(opts.tasks - (share * n).min(opts.tasks));
        let items = if pg.is_some() { postgres::ITEMS } else { 0 };
        producers.push(launcher.producer(
            n,
            &script,
            tasks,
            opts.seed + n as u64,
            manifest,
            items,
        )?);
    }

    let stop_cuts = Arc::new(AtomicBool::new(false));
    let cutter = {
        let (proxy, stop, seed) = (proxy.clone(), stop_cuts.clone(), opts.seed);
        std::thread::spawn(move || cut_connections(proxy, stop, seed))
    };
    let mut broker_conn = connect(&broker.url(0))?;
    let mut tally_conn = connect(&tally.url(0))?;
    let mut killed_in_flight: HashMap<String, u64> = HashMap::new();
    let chaos_started = Instant::now();
    let chaos_until = started + opts.time_limit.mul_f64(0.7);
    let mut sending = true;
    let mut tallied = opts.tasks;
    let mut pg_restarted = false;
    let mut next_slot = 0;
    loop {
        std::thread::sleep(opts.kill_every);
        if sending && producers.iter_mut().all(|p| p.exited().is_some()) {
            sending = false;
            report.send_secs = chaos_started.elapsed().as_secs_f64();
            // Query tasks are not tallied: the 95 % is of the ids that are.
            tallied = ledger::read_manifests(&manifests)
                .context("read the manifests")?
                .values()
                .filter(|s| s.kind != ledger::Kind::Query)
                .count();
        }
        let executed: usize = tally_conn.hlen("execs").unwrap_or(0);
        if !pg_restarted && executed * 10 >= opts.tasks * 3 {
            pg_restarted = true;
            if let Some(pg) = &pg {
                report.postgres = match pg.restart() {
                    Ok(()) => format!(
                        "restarted once, {:.0} s into the chaos",
                        chaos_started.elapsed().as_secs_f64()
                    ),
                    Err(e) => format!("restart failed: {e:#}"),
                };
            }
        }
        if !sending && (executed * 100 >= tallied * 95 || Instant::now() >= chaos_until) {
            break;
        }
        if Instant::now() >= chaos_until {
            break;
        }
        let slot = next_slot % opts.workers;
        next_slot += 1;
        let node = format!("c{slot}-{}@chaos", generations[slot]);
        workers[slot].kill9();
        report.kills += 1;
        for id in ledger::in_flight_at_kill(&mut tally_conn, &mut broker_conn, &node)? {
            report.in_flight_at_kills += 1;
            *killed_in_flight.entry(id).or_default() += 1;
        }
        generations[slot] += 1;
        workers[slot] = launcher.celeriac(slot, generations[slot])?;
    }
    stop_cuts.store(true, Ordering::Relaxed);
    let _ = cutter.join();
    report.chaos_secs = chaos_started.elapsed().as_secs_f64();
    if sending {
        report.send_secs = report.chaos_secs;
    }
    for p in &mut producers {
        if p.exited().is_none() {
            p.stop(Duration::from_secs(5));
        }
    }

    let sent = ledger::read_manifests(&manifests).context("read the manifests")?;
    drain(&sent, &mut broker_conn, deadline, &results);
    report.total_secs = started.elapsed().as_secs_f64();
    report.python_worker_alive = python_worker.exited().is_none();
    for w in &mut workers {
        w.stop(Duration::from_secs(20));
    }
    python_worker.stop(Duration::from_secs(20));
    report.proxy_cuts = proxy.cuts();
    report.proxy_connections = proxy.accepted();
    report.audit = ledger::audit(
        &sent,
        &mut broker_conn,
        &mut tally_conn,
        &killed_in_flight,
        QUEUES,
        &results,
    )?;
    report.load.1 = loadavg();
    drop(pg);
    Ok(report)
}

/// Wait until every task sent has a final state, or the deadline.
fn drain(
    sent: &HashMap<String, ledger::Sent>,
    broker: &mut redis::Connection,
    deadline: Instant,
    results: &Results,
) {
    let keys: Vec<String> = sent
        .keys()
        .map(|id| format!("celery-task-meta-{id}"))
        .collect();
    while Instant::now() < deadline {
        let mut done = 0;
        for chunk in keys.chunks(1000) {
            let metas: Vec<Option<String>> = broker.mget(chunk).unwrap_or_default();
            done += metas
                .iter()
                .flatten()
                .filter(|m| results.is_final(m))
                .count();
        }
        eprintln!("drain: {done}/{} final", keys.len());
        if done == keys.len() {
            return;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

//! Scaling simulation: what KEDA does with `deploy/base/scaledobject.yaml`, played with real
//! processes. Real Celery producers send `t.mark` at a changing rate (with priorities, so most
//! messages land in priority sub-lists) into a private Redis; celeriac replicas run as
//! processes. Every 2 s the controller reads `queue_depth` from a replica's `/keda` (waiting in
//! every priority list + unacked), computes KEDA's desired = ceil(depth / target) clamped to
//! [min, max], applies an HPA-like scale-down (stabilization window, one pod per step), starts
//! replicas or sends SIGTERM to one (warm shutdown). Checks: the fleet scales out and back in,
//! the backlog drains, every task ran exactly once and has a SUCCESS result, every scaled-in
//! replica exited cleanly, and the base list alone (KEDA's `redis` list trigger) under-counts.
//! The curve goes to `$CARGO_TARGET_TMPDIR/scaling.csv` (or `CELERIAC_SCALING_CSV`).

mod support;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use celeriac_testkit::python;
use redis::Commands;
use serde_json::Value;
use support::scrape::{http_get, metrics_port};
use support::{python_dir, Proc, World};

/// Tasks one replica takes at once: the ScaledObject's threshold (= worker_concurrency).
const TARGET: u64 = 4;
const MIN_REPLICAS: usize = 1;
const MAX_REPLICAS: usize = 4;
/// The controller's poll (KEDA's pollingInterval, scaled down).
const TICK: Duration = Duration::from_secs(2);
/// Scale-down stabilization: the highest desired count of the last this many ticks wins.
const STABILIZATION_TICKS: usize = 3;
/// A safety net against a hang, not a speed bound: the loop ends on its own condition (all
/// produced, nothing waiting or unacked, back to the minimum), which takes about 40 s on a
/// loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(900);

/// The producer: (seconds, tasks per second) phases; each task sleeps 250 ms; priorities cycle
/// over 0, 3, 6, 9. Prints every task id, then `DONE`.
const PRODUCER: &str = r#"
import sys, time
from celery_app import mark
phases = [(4, 10), (15, 80), (8, 10)]
n = 0
for seconds, rate in phases:
    begin = time.monotonic()
    for i in range(seconds * rate):
        delay = begin + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        r = mark.apply_async((250,), priority=(0, 3, 6, 9)[n % 4])
        print(r.id, flush=True)
        n += 1
print("DONE", flush=True)
"#;

/// A running replica and its metrics port.
struct Replica {
    proc: Proc,
    port: u16,
}

/// The simulated Deployment: replicas started on demand, SIGTERM'd ones kept until they exit.
struct Fleet<'w> {
    world: &'w World,
    active: Vec<Replica>,
    draining: Vec<Proc>,
    started: usize,
}

impl Fleet<'_> {
    fn scale_to(&mut self, n: usize, tick: usize) {
        while self.active.len() < n {
            self.started += 1;
            let proc = self.world.celeriac(
                &format!("r{}", self.started),
                &[
                    "-c",
                    "4",
                    "--prefetch-multiplier",
                    "1",
                    "--acks-late",
                    "--metrics-port",
                    "0",
                    "--soft-shutdown-timeout",
                    "30",
                ],
            );
            let port = metrics_port(&proc);
            self.active.push(Replica { proc, port });
        }
        while self.active.len() > n {
            // The ReplicaSet's choice is not ours to make: take a different one each time.
            let victim = self.active.remove(tick % self.active.len());
            victim.proc.signal("TERM");
            self.draining.push(victim.proc);
        }
    }

    /// KEDA's metric from the first replica that answers `/keda` with 200: (depth, waiting,
    /// unacked). `None` when none answers (KEDA would apply its fallback).
    fn metric(&self) -> Option<(u64, u64, u64)> {
        self.active.iter().find_map(|r| {
            let (status, body) = http_get(r.port, "/keda")?;
            if status != 200 {
                return None;
            }
            let v: Value = serde_json::from_str(&body).ok()?;
            Some((
                v["queue_depth"].as_u64()?,
                v["waiting"].as_u64()?,
                v["unacked"].as_u64()?,
            ))
        })
    }
}

/// KEDA/HPA: ceil(metric / target) clamped to [min, max].
fn keda_desired(metric: u64) -> usize {
    (metric.div_ceil(TARGET) as usize).clamp(MIN_REPLICAS, MAX_REPLICAS)
}

/// Start the producer; its task ids arrive on the channel, `None` after `DONE`.
fn start_producer(world: &World) -> (Child, mpsc::Receiver<Option<String>>) {
    let mut child = Command::new(python().expect("test venv"))
        .arg("-c")
        .arg(PRODUCER)
        .current_dir(python_dir())
        .env("PYTHONPATH", python_dir())
        .envs(world.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the producer");
    let out = child.stdout.take().expect("producer stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let msg = if line == "DONE" { None } else { Some(line) };
            if tx.send(msg).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn csv_path() -> PathBuf {
    std::env::var_os("CELERIAC_SCALING_CSV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scaling.csv"))
}

#[test]
fn keda_rule_scales_out_drains_the_backlog_and_scales_in_without_losing_tasks() {
    let world = World::new(&[
        (
            "CELERY_BROKER_TRANSPORT_OPTIONS",
            r#"{"priority_steps": [0, 3, 6, 9]}"#,
        ),
        ("CELERY_TASK_ACKS_LATE", "true"),
    ]);
    let mut redis = world.redis();
    let mut fleet = Fleet {
        world: &world,
        active: Vec::new(),
        draining: Vec::new(),
        started: 0,
    };
    fleet.scale_to(MIN_REPLICAS, 0);
    let (mut producer, ids_rx) = start_producer(&world);

    let mut ids: Vec<String> = Vec::new();
    let mut produced_all = false;
    let mut recent: VecDeque<usize> = VecDeque::new();
    let mut csv = String::from("t_s,depth,waiting,unacked,base_list_only,desired,replicas\n");
    let mut peak_replicas = 0;
    let mut undercounted = false;
    let start = Instant::now();
    let mut tick = 0;
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "no end after {DEADLINE:?} (a hang): the backlog did not drain and scale in:\n{csv}"
        );
        std::thread::sleep(TICK);
        tick += 1;
        while let Ok(msg) = ids_rx.try_recv() {
            match msg {
                Some(id) => ids.push(id),
                None => produced_all = true,
            }
        }
        let base_list: u64 = redis.llen("celery").expect("LLEN celery");
        let Some((depth, waiting, unacked)) = fleet.metric() else {
            csv.push_str(&format!(
                "{:.1},,,,{base_list},,{}\n",
                start.elapsed().as_secs_f64(),
                fleet.active.len()
            ));
            continue;
        };
        undercounted |= depth > base_list && waiting > base_list;
        let desired = keda_desired(depth);
        recent.push_back(desired);
        if recent.len() > STABILIZATION_TICKS {
            recent.pop_front();
        }
        let current = fleet.active.len();
        let target = if desired >= current {
            desired
        } else {
            // Scale-down: the stabilized recommendation, at most one pod per tick.
            let stabilized = *recent.iter().max().expect("one sample at least");
            stabilized.max(current - 1)
        };
        fleet.scale_to(target, tick);
        peak_replicas = peak_replicas.max(fleet.active.len());
        csv.push_str(&format!(
            "{:.1},{depth},{waiting},{unacked},{base_list},{desired},{}\n",
            start.elapsed().as_secs_f64(),
            fleet.active.len()
        ));
        if produced_all && depth == 0 && fleet.active.len() == MIN_REPLICAS {
            break;
        }
    }
    std::fs::write(csv_path(), &csv).expect("write the scaling CSV");
    eprintln!("scaling curve: {}\n{csv}", csv_path().display());

    let status = producer.wait().expect("producer exit");
    assert!(status.success(), "producer failed: {status}");
    assert!(ids.len() > 1000, "the producer sent {} tasks", ids.len());
    assert_eq!(
        peak_replicas, MAX_REPLICAS,
        "the burst scales out to the maximum"
    );
    assert!(
        undercounted,
        "with priorities, the base list alone under-counts the backlog"
    );
    for mut p in fleet.draining.drain(..) {
        let status = p
            .wait_exit(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(status.success(), "{} exited {status}:\n{}", p.name, p.log());
    }

    // No task lost or run twice across the scale-ins.
    let marks: HashMap<String, i64> = redis.hgetall("marks").expect("HGETALL marks");
    let mut missing = Vec::new();
    for id in &ids {
        let meta: Option<String> = redis
            .get(format!("celery-task-meta-{id}"))
            .expect("GET result");
        let ok = meta
            .as_deref()
            .and_then(|m| serde_json::from_str::<Value>(m).ok())
            .is_some_and(|m| m["status"] == "SUCCESS");
        if !ok {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} tasks have no SUCCESS result: {:?}",
        missing.len(),
        ids.len(),
        &missing[..missing.len().min(10)]
    );
    let runs: Vec<(&String, i64)> = ids
        .iter()
        .map(|id| (id, marks.get(id).copied().unwrap_or(0)))
        .filter(|(_, n)| *n != 1)
        .collect();
    assert!(runs.is_empty(), "tasks not run exactly once: {runs:?}");
    let left: u64 = redis.hlen("unacked").expect("HLEN unacked");
    assert_eq!(left, 0, "nothing left unacked");
}

/// `/keda` of the replica on `port` as JSON, once it answers 200.
fn keda_json(port: u16) -> Value {
    support::eventually(Duration::from_secs(30), || {
        let (status, body) = http_get(port, "/keda")?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    })
    .expect("/keda answers")
}

#[test]
fn depth_counts_only_the_consumed_queues_and_reports_eta_held_messages_apart() {
    let world = World::new(&[]);
    // A Python fleet on `celery` holds 500 countdown tasks in `unacked` for an hour.
    let _python = world.python_worker("py1", "celery");
    world.py(
        "from celery_app import app\nfor i in range(500):\n    app.send_task('t.add', args=(i, 1), countdown=3600)\n",
    );
    let mut redis = world.redis();
    let held = support::eventually(Duration::from_secs(60), || {
        let unacked: u64 = redis.hlen("unacked").ok()?;
        let waiting: u64 = redis.llen("celery").ok()?;
        (unacked == 500 && waiting == 0).then_some(())
    });
    assert!(held.is_some(), "the Python worker reserves all 500");

    // celeriac consumes `celeriac`: 3 countdown tasks it holds until due, then 10 long tasks
    // (one running at -c 1, the rest waiting).
    let w = world.celeriac(
        "w1",
        &[
            "-Q",
            "celeriac",
            "-c",
            "1",
            "--prefetch-multiplier",
            "1",
            "--acks-late",
            "--metrics-port",
            "0",
        ],
    );
    let port = metrics_port(&w);
    world.py(
        "from celery_app import app\nfor i in range(3):\n    app.send_task('t.add', args=(i, 1), queue='celeriac', countdown=3600)\n",
    );
    let eta_held = support::eventually(Duration::from_secs(30), || {
        (keda_json(port)["eta_held"] == 3).then_some(())
    });
    assert!(eta_held.is_some(), "/keda: {}", keda_json(port));
    world.py(
        "from celery_app import app\nfor i in range(10):\n    app.send_task('t.sleep', args=(60000,), queue='celeriac')\n",
    );
    let settled = support::eventually(Duration::from_secs(30), || {
        let v = keda_json(port);
        (v["eta_held"] == 3 && v["queue_depth"] == 10).then_some(v)
    });
    let v = settled.unwrap_or_else(|| panic!("/keda: {}", keda_json(port)));
    assert_eq!(
        v["waiting"].as_u64().unwrap() + v["unacked"].as_u64().unwrap(),
        10
    );
    assert_eq!(v["desired_replicas"], 10, "10 tasks at -c 1");
    let total: u64 = redis.hlen("unacked").unwrap();
    assert!(total >= 504, "the hash holds everyone's: {total}");
    let (_, metrics) = http_get(port, "/metrics").expect("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("celeriac_unacked_eta_held_messages{") && l.ends_with(" 3")),
        "{metrics}"
    );
}

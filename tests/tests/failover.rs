//! Redis going away under running workers: restarted with AOF on, restarted empty, and replaced
//! by a promoted replica behind a fault proxy. Every task sent still gets its result, every
//! worker consumes again after the reconnect (Celery's workers are known to stop consuming
//! after some reconnects), answers remote control again and declares its queues again.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use celeriac_testkit::RedisServer;
use celeriac_tests::fault_proxy::FaultProxy;
use redis::Commands;
use support::{eventually, World};

const ENV: &[(&str, &str)] = &[
    (
        "CELERY_BROKER_TRANSPORT_OPTIONS",
        r#"{"visibility_timeout": 3, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}"#,
    ),
    ("CELERY_TASK_ACKS_LATE", "true"),
    ("CELERY_RESULT_EXTENDED", "true"),
];

/// Generous bounds: the machine running the tests may be loaded.
const DRAIN: Duration = Duration::from_secs(240);

fn connect(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).expect("redis url");
    eventually(Duration::from_secs(30), || client.get_connection().ok())
        .unwrap_or_else(|| panic!("cannot connect to {url}"))
}

/// Send `n` `t.sleep(ms)` tasks with real Celery; their ids. (`t.sleep` does not use Redis
/// itself, so a result is the worker's doing alone.)
fn send_sleeps(world: &World, n: usize, ms: u64) -> Vec<String> {
    let out = world.py(&format!(
        r#"
from celery_app import app
with app.producer_or_acquire() as producer:
    ids = [app.send_task("t.sleep", args=({ms},), producer=producer).id for _ in range({n})]
print("\n".join(ids))
"#
    ));
    let ids: Vec<String> = out.lines().map(String::from).collect();
    assert_eq!(ids.len(), n);
    ids
}

/// The stored metas of `ids` (`None` where there is none yet).
fn metas(conn: &mut redis::Connection, ids: &[String]) -> Vec<Option<serde_json::Value>> {
    let keys: Vec<String> = ids
        .iter()
        .map(|i| format!("celery-task-meta-{i}"))
        .collect();
    let mut out = Vec::with_capacity(ids.len());
    for chunk in keys.chunks(500) {
        let found: Vec<Option<String>> = match conn.mget(chunk) {
            Ok(found) => found,
            Err(_) => vec![None; chunk.len()],
        };
        out.extend(
            found
                .into_iter()
                .map(|v| v.and_then(|s| serde_json::from_str(&s).ok())),
        );
    }
    out
}

fn succeeded(conn: &mut redis::Connection, ids: &[String]) -> usize {
    metas(conn, ids)
        .iter()
        .filter(|m| m.as_ref().is_some_and(|m| m["status"] == "SUCCESS"))
        .count()
}

/// Wait until every id succeeded (fails the test with the count otherwise).
fn wait_all(url: &str, ids: &[String], what: &str) {
    let mut conn = connect(url);
    let all = eventually(DRAIN, || {
        let n = succeeded(&mut conn, ids);
        (n == ids.len()).then_some(())
    });
    if all.is_none() {
        let mut conn = connect(url);
        let missing: Vec<String> = ids
            .iter()
            .zip(metas(&mut conn, ids))
            .filter(|(_, m)| m.as_ref().is_none_or(|m| m["status"] != "SUCCESS"))
            .map(|(id, m)| format!("{id}: meta {m:?}"))
            .collect();
        let state: (u64, u64, u64) = redis::pipe()
            .llen("celery")
            .hlen("unacked")
            .llen("celeriac.dead_letter")
            .query(&mut conn)
            .unwrap_or_default();
        panic!(
            "{what}: {} of {} tasks succeeded; queue, unacked, dead-lettered: {state:?}; not succeeded:\n{}",
            succeeded(&mut conn, ids),
            ids.len(),
            missing.join("\n")
        );
    }
}

/// The worker names that ran `ids` (from `result_extended`).
fn workers_of(url: &str, ids: &[String]) -> BTreeSet<String> {
    let mut conn = connect(url);
    metas(&mut conn, ids)
        .into_iter()
        .flatten()
        .filter_map(|m| m["worker"].as_str().map(String::from))
        .collect()
}

/// Wait until `celery inspect ping` is answered by every worker of `names`.
fn wait_ping(world: &World, names: &[&str]) {
    let want: BTreeSet<String> = names.iter().map(|n| format!("{n}@test")).collect();
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(90), || {
        last = world
            .try_py(
                "from celery_app import app\nprint(' '.join(sorted(k for r in app.control.ping(timeout=3) for k in r)))",
            )
            .unwrap_or_default();
        let got: BTreeSet<String> = last.split_whitespace().map(String::from).collect();
        want.is_subset(&got).then_some(())
    });
    assert!(ok.is_some(), "ping answered by {last:?}, want {want:?}");
}

/// Wait until the first of `ids` not succeeded at the start succeeds; how long it took.
fn time_to_next_success(url: &str, ids: &[String], before: usize) -> Duration {
    let started = Instant::now();
    let mut conn = connect(url);
    eventually(DRAIN, || (succeeded(&mut conn, ids) > before).then_some(()))
        .expect("consumption resumed");
    started.elapsed()
}

/// After the outage, a new batch is shared by every worker: none stopped consuming.
fn every_worker_consumes(world: &World, url: &str, names: &[&str]) {
    let ids = send_sleeps(world, 120, 100);
    wait_all(url, &ids, "batch after the outage");
    let ran = workers_of(url, &ids);
    for name in names {
        assert!(
            ran.contains(&format!("{name}@test")),
            "{name} took no task after the outage (ran by {ran:?})"
        );
    }
}

#[test]
fn redis_restarted_with_aof_mid_run_loses_nothing_and_every_worker_resumes() {
    let redis = RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"])
        .expect("redis with AOF");
    let url = redis.url(0);
    let mut world = World::over(redis, &url, ENV);
    // Sent before the workers start, so a slow producer on a loaded machine cannot let them
    // finish everything before the restart.
    let ids = send_sleeps(&world, 1500, 50);
    let _w1 = world.celeriac("w1", &["-c", "4"]);
    let _w2 = world.celeriac("w2", &["-c", "4"]);
    let mut conn = connect(&url);
    eventually(DRAIN, || (succeeded(&mut conn, &ids) >= 40).then_some(()))
        .expect("some tasks done before the restart");
    drop(conn);
    world
        .redis
        .restart()
        .expect("restart redis on the same AOF");
    let before = succeeded(&mut connect(&url), &ids);
    assert!(before < ids.len(), "the restart happened mid-run");
    let resumed = time_to_next_success(&url, &ids, before);
    eprintln!(
        "restarted with {before}/{} done; the next result came {resumed:?} later",
        ids.len()
    );
    wait_all(&url, &ids, "tasks sent before the restart");
    wait_ping(&world, &["w1", "w2"]);
    every_worker_consumes(&world, &url, &["w1", "w2"]);
}

#[test]
fn redis_restarted_empty_gets_the_queue_declarations_back() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url(0);
    let mut world = World::over(redis, &url, ENV);
    let _w1 = world.celeriac("w1", &["-c", "2", "-Q", "celery,reports"]);
    let mut conn = connect(&url);
    let bound = |conn: &mut redis::Connection| -> bool {
        conn.sismember("_kombu.binding.reports", "reports\x06\x16\x06\x16reports")
            .unwrap_or(false)
    };
    assert!(bound(&mut conn), "declared at start");
    drop(conn);
    world.redis.restart().expect("restart redis, empty");
    let mut conn = connect(&url);
    eventually(Duration::from_secs(60), || bound(&mut conn).then_some(()))
        .expect("the binding is declared again after the restart");
    wait_ping(&world, &["w1"]);
    let ids = send_sleeps(&world, 20, 10);
    wait_all(&url, &ids, "tasks sent after the restart");
}

#[test]
fn a_promoted_replica_takes_over_and_every_worker_resumes() {
    let primary = RedisServer::start().expect("primary");
    let replica =
        RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &primary.port().to_string()])
            .expect("replica");
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = FaultProxy::start(addr(primary.port())).expect("fault proxy");
    let proxied = proxy.url(0);
    let replica_url = replica.url(0);
    let mut replica_conn = connect(&replica_url);
    eventually(Duration::from_secs(60), || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica_conn)
            .ok()?;
        info.contains("master_link_status:up").then_some(())
    })
    .expect("the replica is in sync");
    let mut world = World::over(primary, &proxied, ENV);
    let ids = send_sleeps(&world, 1500, 50);
    let _w1 = world.celeriac("w1", &["-c", "4"]);
    let _w2 = world.celeriac("w2", &["-c", "4"]);
    let mut conn = connect(&proxied);
    eventually(DRAIN, || (succeeded(&mut conn, &ids) >= 40).then_some(()))
        .expect("some tasks done before the failover");
    drop(conn);

    // A managed failover: clients are cut off, the replica catches up and is promoted, the
    // primary dies, and the address clients use now leads to the new primary.
    proxy.set_refusing(true);
    proxy.cut_all();
    let mut primary_conn = world.redis();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query(&mut primary_conn)
        .expect("WAIT");
    assert_eq!(acked, 1, "the replica acknowledged every write");
    world.redis.kill();
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut replica_conn)
        .expect("promote the replica");
    proxy.set_upstream(addr(replica.port()));
    proxy.set_refusing(false);

    let before = succeeded(&mut connect(&replica_url), &ids);
    assert!(before < ids.len(), "the failover happened mid-run");
    let resumed = time_to_next_success(&replica_url, &ids, before);
    eprintln!(
        "failed over with {before}/{} done; the next result came {resumed:?} later",
        ids.len()
    );
    wait_all(&replica_url, &ids, "tasks sent before the failover");
    wait_ping(&world, &["w1", "w2"]);
    every_worker_consumes(&world, &replica_url, &["w1", "w2"]);
    assert!(proxy.cuts() >= 1);
}

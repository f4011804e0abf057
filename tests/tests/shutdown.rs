//! Warm and cold shutdown lose nothing; a Redis restart mid-run does not stop consumption.

mod support;

use std::time::Duration;

use celeriac_testkit::RedisServer;
use celeriac_tests::fault_proxy::FaultProxy;
use redis::Commands;
use support::{eventually, World};

fn send_many(world: &World, n: usize, ms: u64) -> Vec<String> {
    let out = world.py(&format!(
        r#"
from celery_app import app
with app.producer_or_acquire() as producer:
    print("\n".join(app.send_task("t.mark", args=({ms},), producer=producer).id for _ in range({n})))
"#
    ));
    out.lines().map(String::from).collect()
}

fn all_succeeded(world: &World, ids: &[String], timeout: Duration) -> bool {
    let mut redis = world.redis();
    eventually(timeout, || {
        let keys: Vec<String> = ids
            .iter()
            .map(|i| format!("celery-task-meta-{i}"))
            .collect();
        let vals: Vec<Option<String>> = redis.mget(&keys).unwrap();
        vals.iter()
            .all(|v| v.as_deref().is_some_and(|s| s.contains("SUCCESS")))
            .then_some(())
    })
    .is_some()
}

/// The `properties.delivery_tag` of every message in `queue`'s list, sorted.
fn delivery_tags(redis: &mut redis::Connection, queue: &str) -> Vec<String> {
    let raw: Vec<String> = redis.lrange(queue, 0, -1).unwrap();
    let mut tags: Vec<String> = raw
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).unwrap();
            v["properties"]["delivery_tag"]
                .as_str()
                .expect("a delivery tag")
                .to_string()
        })
        .collect();
    tags.sort();
    tags
}

#[test]
fn warm_shutdown_under_load_loses_nothing() {
    let world = World::new(&[]);
    let ids = send_many(&world, 300, 100);
    let mut w = world.celeriac("w1", &["-c", "4", "--prefetch-multiplier", "4"]);
    std::thread::sleep(Duration::from_millis(800));
    w.signal("TERM");
    let status = w.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}");
    let log = w.log();
    assert!(log.contains("warm shutdown"), "{log}");
    let mut redis = world.redis();
    let unacked: u64 = redis.hlen("unacked").unwrap();
    assert_eq!(unacked, 0, "everything held was given back");
    let _w2 = world.celeriac("w2", &["-c", "8"]);
    assert!(all_succeeded(&world, &ids, Duration::from_secs(60)));
    for id in &ids {
        let n: i64 = redis.hget("marks", id).unwrap_or(0);
        assert_eq!(n, 1, "early-acked tasks that finished are not run again");
    }
}

#[test]
fn grace_expiry_and_cold_shutdown_give_everything_back() {
    let world = World::new(&[("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", "0.5")]);
    let early = send_many(&world, 3, 20_000);
    let mut redis = world.redis();
    let sent_tags = delivery_tags(&mut redis, "celery");
    assert_eq!(sent_tags.len(), 3);
    let mut w = world.celeriac("w1", &["-c", "2"]);
    eventually(Duration::from_secs(60), || {
        let started: u64 = redis.hlen("marks").unwrap();
        (started == 2).then_some(())
    })
    .expect("two long tasks started");
    w.signal("TERM");
    let status = w.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}");
    // Two were running (early ack: republished), one waiting (held: restored).
    let waiting: u64 = redis.llen("celery").unwrap();
    assert_eq!(waiting, 3, "{}", w.log());
    let unacked: u64 = redis.hlen("unacked").unwrap();
    assert_eq!(unacked, 0);
    // Put back as kombu restores: the same deliveries, so what their runs published once is
    // not published again when they run again.
    assert_eq!(delivery_tags(&mut redis, "celery"), sent_tags);

    // Cold: a second signal ends the grace at once.
    let world2 = World::new(&[("CELERY_TASK_ACKS_LATE", "true")]);
    let late = send_many(&world2, 3, 20_000);
    let mut w = world2.celeriac("w2", &["-c", "2"]);
    let mut redis2 = world2.redis();
    eventually(Duration::from_secs(60), || {
        let started: u64 = redis2.hlen("marks").unwrap();
        (started == 2).then_some(())
    })
    .expect("two long tasks started");
    w.signal("TERM");
    // The second signal once the first was taken (two TERMs before the worker reads one are
    // delivered as one).
    w.wait_for_log("warm shutdown", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    w.signal("TERM");
    let status = w.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
    assert!(w.log().contains("cold shutdown"));
    let waiting: u64 = redis2.llen("celery").unwrap();
    assert_eq!(waiting, 3);
    let _ = (early, late);
}

/// A warm shutdown while an acks-late run is over but its result cannot be written yet (Redis out
/// of reach): the worker waits for the write and the ack, past the grace, instead of giving the
/// message back to run a second time.
#[test]
fn warm_shutdown_waits_for_an_outcome_being_written() {
    let redis = RedisServer::start().expect("redis");
    let proxy = FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], redis.port())))
        .expect("fault proxy");
    let world = World::over(
        redis,
        &proxy.url(0),
        &[
            ("CELERY_TASK_ACKS_LATE", "true"),
            ("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", "4"),
        ],
    );
    let mut w = world.celeriac("w1", &["-c", "1"]);
    let id = world.py("from celery_app import app\nprint(app.send_task('t.sleep', (800,)).id)");
    let id = id.trim();
    w.wait_for_log("task received", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    proxy.set_refusing(true);
    proxy.cut_all();
    w.signal("TERM");
    // The run ends well within the grace; its result write is retried while Redis is out of
    // reach, past the grace and the wait for stopped tasks.
    std::thread::sleep(Duration::from_secs(11));
    proxy.set_refusing(false);
    let status = w.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{status}");
    let mut redis = world.redis();
    let meta: Option<String> = redis.get(format!("celery-task-meta-{id}")).unwrap();
    assert!(
        meta.as_deref().is_some_and(|m| m.contains("SUCCESS")),
        "{meta:?}\n{}",
        w.log()
    );
    let waiting: u64 = redis.llen("celery").unwrap();
    let unacked: u64 = redis.hlen("unacked").unwrap();
    assert_eq!(
        (waiting, unacked),
        (0, 0),
        "acked, not given back:\n{}",
        w.log()
    );
}

#[test]
fn consumption_resumes_after_a_redis_restart() {
    let mut world = World::new(&[]);
    let _w = world.celeriac("w1", &["-c", "2"]);
    let first = world.py(
        "from celery_app import app\nprint(app.send_task('t.add', args=(1, 1)).get(timeout=20))",
    );
    assert_eq!(first.trim(), "2");
    world.redis.restart().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let after = world.py(
        "from celery_app import app\nprint(app.send_task('t.add', args=(2, 2)).get(timeout=30))",
    );
    assert_eq!(after.trim(), "4");
}

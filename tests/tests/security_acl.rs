//! Redis ACL users: the worker runs end to end as a user holding only the commands, keys and
//! channels RELIABILITY.md lists (default user disabled), while Python Celery produces and reads
//! results as another user; the worker's user cannot read or write anything else.

mod support;

use celeriac_testkit::RedisServer;
use redis::Commands;
use support::{query_task_config, World};

/// The minimal rule for a worker consuming the queue `celery` with default key names, as
/// documented in RELIABILITY.md ("Redis ACL user").
const WORKER_ACL: &[&str] = &[
    "on",
    ">worker-pw",
    "resetkeys",
    "resetchannels",
    // Queue lists (and priority sub-lists), results, groups and chord counters.
    "~celery",
    "~celery\x06\x16*",
    "~celery-task-meta-*",
    "~celery-taskset-meta-*",
    // kombu's bindings and ack emulation.
    "~_kombu.binding.*",
    "~_kombu.binding_permanent.*",
    "~unacked",
    "~unacked_index",
    "~unacked_mutex",
    // Remote-control replies (the caller's reply queue) and mingle's own reply queue.
    "~*.reply.celery.pidbox*",
    // celeriac: dead letters and their reasons, fleet rate limits, markers of retries and
    // canvas messages published once, the cache (values, leases and warm state).
    "~celeriac.dead_letter*",
    "~celeriac.ratelimit.*",
    "~celeriac.published.*",
    "~celeriac:cache:*",
    // Channels: results, remote control, events, cache invalidation.
    "&celery-task-meta-*",
    "&/0.celery.pidbox",
    "&/0.celeryev/*",
    "&celeriac:cache:invalidate",
    "-@all",
    "+ping",
    "+hello",
    "+auth",
    "+select",
    "+client|setname",
    "+time",
    "+multi",
    "+exec",
    "+discard",
    "+eval",
    "+evalsha",
    "+script|load",
    "+get",
    "+set",
    "+del",
    "+exists",
    "+expire",
    "+pexpire",
    "+lpush",
    "+rpush",
    "+rpop",
    "+brpop",
    "+blmove",
    "+llen",
    "+hset",
    "+hget",
    "+hdel",
    "+hlen",
    "+sadd",
    "+srem",
    "+smembers",
    "+sismember",
    "+zadd",
    "+zrem",
    "+zscore",
    "+zcount",
    "+zrange",
    "+zrangebyscore",
    "+zremrangebyscore",
    "+zremrangebyrank",
    "+publish",
    "+subscribe",
    "+psubscribe",
    "+unsubscribe",
    "+punsubscribe",
];

#[test]
fn a_worker_with_a_minimal_acl_user_runs_and_touches_nothing_else() {
    let redis = RedisServer::start().unwrap();
    let port = redis.port();
    let mut admin = redis::Client::open(redis.url(0))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("producer")
        .arg(&["on", ">producer-pw", "~*", "&*", "+@all"])
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("celeriac")
        .arg(WORKER_ACL)
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("secret")
        .arg("the crown jewels")
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("off")
        .query(&mut admin)
        .unwrap();
    drop(admin);
    let producer_url = format!("redis://producer:producer-pw@127.0.0.1:{port}/0");
    let worker_url = format!("redis://celeriac:worker-pw@127.0.0.1:{port}/0");
    let world = World::around(redis, producer_url, &[]);
    let config = query_task_config(&world, "");
    let _w = world.celeriac(
        "w1",
        &[
            "-b",
            &worker_url,
            "--result-backend",
            &worker_url,
            "-c",
            "2",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let out = world.py(r#"
from celery_app import app
from celery import group
print(app.send_task("t.add", args=(20, 22)).get(timeout=30))
print(app.send_task("q.get_ticket", args=(1,)).get(timeout=30)["title"])
try:
    app.send_task("nobody.knows", args=(1,)).get(timeout=30)
except Exception as e:
    print(type(e).__name__)
print(group(app.signature("t.add", args=(i, i)) for i in range(3)).apply_async().get(timeout=30))
print(sorted(r for reply in app.control.ping(timeout=3) for r in reply))
"#);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "42",
            "printer on fire",
            "NotRegistered",
            "[0, 2, 4]",
            "['w1@test']"
        ],
        "{out}"
    );
    let mut redis = world.redis();
    let dead: u64 = redis.llen("celeriac.dead_letter").unwrap();
    assert_eq!(dead, 1);
    let cached: Vec<String> = redis.keys("celeriac:cache:v1:k2:{*:ticket:(1)}").unwrap();
    assert_eq!(cached.len(), 1, "{cached:?}");
    // Nothing the worker did was refused: the rule is sufficient.
    let denied: Vec<redis::Value> = redis::cmd("ACL").arg("LOG").query(&mut redis).unwrap();
    assert!(denied.is_empty(), "the worker was refused: {denied:?}");

    // The worker's user cannot touch other keys or run other commands.
    let mut worker = redis::Client::open(worker_url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let refused = |r: redis::RedisResult<redis::Value>| match r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("allowed: {v:?}"),
    };
    for (name, result) in [
        (
            "GET secret",
            redis::cmd("GET").arg("secret").query(&mut worker),
        ),
        (
            "SET secret",
            redis::cmd("SET").arg("secret").arg("x").query(&mut worker),
        ),
        (
            "DEL secret",
            redis::cmd("DEL").arg("secret").query(&mut worker),
        ),
        ("KEYS *", redis::cmd("KEYS").arg("*").query(&mut worker)),
        ("FLUSHALL", redis::cmd("FLUSHALL").query(&mut worker)),
        (
            "CONFIG GET",
            redis::cmd("CONFIG").arg("GET").arg("*").query(&mut worker),
        ),
        (
            "EVAL reading secret",
            redis::cmd("EVAL")
                .arg("return redis.call('GET', 'secret')")
                .arg(0)
                .query(&mut worker),
        ),
        (
            "PUBLISH elsewhere",
            redis::cmd("PUBLISH")
                .arg("other")
                .arg("x")
                .query(&mut worker),
        ),
    ] {
        let e = refused(result);
        assert!(
            ["NOPERM", "no permissions", "can't access"]
                .iter()
                .any(|m| e.contains(m)),
            "{name}: {e}"
        );
    }
    let secret: String = redis.get("secret").unwrap();
    assert_eq!(secret, "the crown jewels");
}

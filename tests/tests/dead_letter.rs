//! What celeriac cannot run is moved intact to the dead-letter list with a reason, and the
//! worker keeps going.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use redis::Commands;
use support::{eventually, World};

#[test]
fn pickle_unknown_and_garbage_are_dead_lettered_intact() {
    let world = World::new(&[]);
    let _w = world.celeriac("w1", &["-c", "2"]);
    let ids = world.py(r#"
from celery_app import app
p = app.send_task("t.add", args=(1, 2), serializer="pickle")
u = app.send_task("nobody.knows", args=(1,))
print(p.id, u.id)
"#);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    let mut redis = world.redis();
    let garbage: [&[u8]; 3] = [
        b"this is not json \xff\x00",
        br#"{"body": "e30=", "properties": {"body_encoding": "base64"}, "headers": {}}"#,
        br#"{"body": "!!!not base64!!!", "content-type": "application/json", "content-encoding": "utf-8", "headers": {"task": "t.add", "id": "bad-b64"}, "properties": {"delivery_tag": "tag-bad-b64", "body_encoding": "base64", "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0}}"#,
    ];
    for g in garbage {
        let _: () = redis.lpush("celery", g).unwrap();
    }
    let dead: Vec<Vec<u8>> = eventually(Duration::from_secs(20), || {
        let d: Vec<Vec<u8>> = redis.lrange("celeriac.dead_letter", 0, -1).unwrap();
        (d.len() == 5).then_some(d)
    })
    .unwrap_or_else(|| panic!("dead-letter list incomplete"));
    for g in garbage {
        assert!(dead.iter().any(|d| d == g), "garbage kept intact");
    }
    let reasons: HashMap<String, String> = redis.hgetall("celeriac.dead_letter.reasons").unwrap();
    assert_eq!(reasons.len(), 5);
    let all = reasons
        .values()
        .map(|r| {
            let record: serde_json::Value = serde_json::from_str(r).unwrap();
            format!("{} {}", record["queue"], record["reason"])
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all.contains("application/x-python-serialize"), "{all}");
    assert!(all.contains("nobody.knows"), "{all}");
    assert!(all.contains("base64"), "{all}");
    // The pickle message is kept byte for byte: Python can still decode it from the list.
    let check = world.py(&format!(
        r#"
import json, base64, pickle, redis, os
r = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
for raw in r.lrange("celeriac.dead_letter", 0, -1):
    try:
        env = json.loads(raw)
    except Exception:
        continue
    if env.get("content-type") == "application/x-python-serialize":
        args, kwargs, embed = pickle.loads(base64.b64decode(env["body"]))
        print(env["headers"]["id"] == "{}", args)
"#,
        ids[0]
    ));
    assert_eq!(check.trim(), "True (1, 2)");
    // Callers waiting on refused or unknown tasks fail fast with Celery's exception types.
    let waited = world.py(&format!(
        r#"
from celery_app import app
from celery.result import AsyncResult
for i in "{} {}".split():
    try:
        AsyncResult(i, app=app).get(timeout=10)
    except Exception as e:
        print(type(e).__name__)
"#,
        ids[0], ids[1]
    ));
    assert_eq!(waited.trim(), "ContentDisallowed\nNotRegistered");
    // Nothing is left unacked and the worker keeps running.
    let unacked: u64 = redis.hlen("unacked").unwrap();
    assert_eq!(unacked, 0);
    let out = world.py(
        "from celery_app import app\nprint(app.send_task('t.add', args=(20, 22)).get(timeout=20))",
    );
    assert_eq!(out.trim(), "42");
}

#[test]
fn unknown_tasks_can_be_handed_to_a_python_queue() {
    let world = World::new(&[("CELERIAC_DEAD_LETTER_POLICY", "requeue:python")]);
    let _w = world.celeriac("w1", &["-c", "2"]);
    let id =
        world.py("from celery_app import app\nprint(app.send_task('t.python_only', args=(1,)).id)");
    let mut redis = world.redis();
    let moved: Vec<String> = eventually(Duration::from_secs(20), || {
        let m: Vec<String> = redis.lrange("python", 0, -1).unwrap();
        (!m.is_empty()).then_some(m)
    })
    .expect("message moved to the python queue");
    assert!(moved[0].contains(id.trim()));
    let dead: u64 = redis.llen("celeriac.dead_letter").unwrap();
    assert_eq!(dead, 0);
}

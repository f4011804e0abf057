//! Python `apply_async` → celeriac runs → Python reads the outcome (`AsyncResult`), for every
//! state a Python caller can see.

mod support;

use support::World;

fn world_with_worker() -> (World, support::Proc) {
    let world = World::new(&[]);
    let worker = world.celeriac("w1", &["-c", "4"]);
    (world, worker)
}

#[test]
fn success_values_come_back_to_python_exactly() {
    let (world, _w) = world_with_worker();
    let out = world.py(
        r#"
import datetime, decimal, uuid
from celery_app import app
print(app.send_task("t.add", args=(2, 3)).get(timeout=20))
big = 2**100
payload = {"big": big, "neg": -2**70, "u": "héllo 🎉", "when": datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
           "d": decimal.Decimal("1.10"), "id": uuid.UUID(int=1), "nested": [[1, [2, None, True]], {"x": -0.0}]}
back = app.send_task("t.echo", args=(payload,)).get(timeout=20)
print(back == payload, type(back["when"]).__name__, type(back["d"]).__name__, type(back["id"]).__name__)
"#,
    );
    assert_eq!(out.trim(), "5\nTrue datetime Decimal UUID");
}

#[test]
fn failures_reraise_the_python_exception() {
    let (world, _w) = world_with_worker();
    let out = world.py(
        r#"
from celery_app import app
def outcome(name, args):
    r = app.send_task(name, args=args)
    try:
        r.get(timeout=20)
        return "no exception"
    except Exception as e:
        return f"{type(e).__module__}.{type(e).__name__}: {e} | {r.state} | {'celeriac task' in (r.traceback or '')}"
print(outcome("t.fail", ("boom",)))
print(outcome("t.add", ("x",)))
print(outcome("t.panic", ()))
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "builtins.ValueError: boom | FAILURE | True");
    assert!(
        lines[1].starts_with("builtins.TypeError: ") && lines[1].ends_with("| FAILURE | True"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("builtins.RuntimeError: task panicked: deliberate panic"),
        "{}",
        lines[2]
    );
}

#[test]
fn started_state_is_visible_then_success() {
    let (world, _w) = world_with_worker();
    let out = world.py(r#"
import time
from celery_app import app
r = app.send_task("t.tracked", args=(1500,))
seen = set()
deadline = time.time() + 20
while time.time() < deadline:
    # One read per turn: state and info from the same stored meta.
    meta = app.backend.get_task_meta(r.id, cache=False)
    state, info = meta["status"], meta["result"]
    if state == "SUCCESS":
        break
    if state == "STARTED":
        seen.add("STARTED")
        seen.add("pid" if isinstance(info.get("pid"), int) else "nopid")
        seen.add(info.get("hostname"))
    time.sleep(0.05)
print(sorted(s for s in seen if s), r.get(timeout=5))
"#);
    assert_eq!(out.trim(), "['STARTED', 'pid', 'w1@test'] done");
}

#[test]
fn retries_show_retry_state_then_succeed_or_exhaust() {
    let (world, _w) = world_with_worker();
    let out = world.py(r#"
import time
from celery_app import app
r = app.send_task("t.flaky", args=(2,))
states = []
deadline = time.time() + 20
while time.time() < deadline and not r.ready():
    if r.state not in states:
        states.append(r.state)
    time.sleep(0.01)
print(r.get(timeout=5), "RETRY" in states)
e = app.send_task("t.always_retry")
try:
    e.get(timeout=20)
except Exception as exc:
    print(type(exc).__name__, exc)
"#);
    assert_eq!(out.trim(), "2 True\nKeyError 'gone'");
}

#[test]
fn a_retry_can_go_to_another_queue_with_another_priority() {
    let world = World::new(&[]);
    let _w = world.celeriac("w1", &["-c", "4", "-Q", "celery,elsewhere"]);
    let out = world.py(r#"
from celery_app import app
print(app.send_task("t.retry_elsewhere", args=("elsewhere",)).get(timeout=20))
"#);
    assert_eq!(out.trim(), "['elsewhere', 7, 1]");
}

#[test]
fn expired_tasks_are_revoked() {
    let (world, _w) = world_with_worker();
    let out = world.py(r#"
import datetime
from celery_app import app
past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=30)
r = app.send_task("t.add", args=(1, 1), expires=past)
try:
    r.get(timeout=20)
except Exception as e:
    print(type(e).__name__, r.state, str(e))
"#);
    assert_eq!(out.trim(), "TaskRevokedError REVOKED expired");
}

#[test]
fn countdown_and_eta_run_at_their_time() {
    let (world, _w) = world_with_worker();
    let out = world.py(r#"
import datetime, time
from celery_app import app
sent = datetime.datetime.now(datetime.timezone.utc)
a = app.send_task("t.add", args=(1, 2), countdown=2)
b = app.send_task("t.add", args=(3, 4), eta=sent + datetime.timedelta(seconds=3))
c = app.send_task("t.add", args=(5, 6))
print(c.get(timeout=20), c.date_done < sent + datetime.timedelta(seconds=2))
print(a.get(timeout=20), b.get(timeout=20))
print((a.date_done - sent).total_seconds() >= 2, (b.date_done - sent).total_seconds() >= 3)
print((a.date_done - sent).total_seconds() < 15, (b.date_done - sent).total_seconds() < 15)
"#);
    assert_eq!(out.trim(), "11 True\n3 7\nTrue True\nTrue True");
}

#[test]
fn priorities_are_served_in_celerys_order_across_queues() {
    let world = World::new(&[]);
    let out = world.py(r#"
from celery_app import app
ids = []
for p in [9, 0, 5, 3, 7, 1, 8, 2]:
    for q in ["celery", "other"]:
        r = app.send_task("t.echo", args=(f"{q}:{p}",), queue=q, priority=p)
        ids.append(r.id)
print(" ".join(ids))
"#);
    let ids: Vec<String> = out.split_whitespace().map(String::from).collect();
    let _w = world.celeriac(
        "w1",
        &[
            "-c",
            "1",
            "--prefetch-multiplier",
            "1",
            "-Q",
            "celery,other",
        ],
    );
    let order = world.py(&format!(
        r#"
from celery_app import app
from celery.result import AsyncResult
rs = [AsyncResult(i, app=app) for i in "{}".split()]
vals = [r.get(timeout=30) for r in rs]
done = sorted(zip([r.date_done for r in rs], vals))
print(" ".join(v for _, v in done))
"#,
        ids.join(" ")
    ));
    let served: Vec<u32> = order
        .split_whitespace()
        .map(|v| v.split(':').nth(1).unwrap().parse().unwrap())
        .collect();
    // kombu's default steps put 0-2, 3-5, 6-8 and 9 into four sub-queues served in that order.
    let buckets: Vec<u32> = served
        .iter()
        .map(|p| [0, 0, 0, 3, 3, 3, 6, 6, 6, 9][*p as usize])
        .collect();
    let mut sorted = buckets.clone();
    sorted.sort();
    assert_eq!(buckets, sorted, "served order: {order}");
    let queues: Vec<&str> = order
        .split_whitespace()
        .map(|v| v.split(':').next().unwrap())
        .collect();
    assert!(queues.contains(&"other") && queues.contains(&"celery"));
}

//! Remote control against real Celery: the `celery` CLI and `app.control` see and steer celeriac.

mod support;

use std::process::Command;
use std::time::Duration;

use redis::Commands;
use serde_json::Value;
use support::{eventually, python_dir, World};

/// Run `python -m celery -A celery_app <args>` and return stdout (fails the test on error).
fn celery_cli(world: &World, args: &[&str]) -> String {
    let out = Command::new(celeriac_testkit::python().expect("test venv"))
        .args(["-m", "celery", "-A", "celery_app"])
        .args(args)
        .current_dir(python_dir())
        .env("PYTHONPATH", python_dir())
        .envs(world.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run celery");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "celery {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `app.control.inspect().<method>()` as JSON: `{hostname: reply}`.
fn inspect(world: &World, method: &str) -> Value {
    let out = world.py(&format!(
        r#"
import json
from celery_app import app
print(json.dumps(app.control.inspect(timeout=2.0).{method}()))
"#
    ));
    serde_json::from_str(out.trim()).expect("inspect output is JSON")
}

fn state_of(world: &World, id: &str) -> String {
    world
        .py(&format!(
            "from celery_app import app\nprint(app.AsyncResult('{id}').state)"
        ))
        .trim()
        .to_string()
}

#[test]
fn celery_cli_inspects_celeriac() {
    let world = World::new(&[]);
    let _w = world.celeriac("ctl", &["-c", "2"]);
    let host = "ctl@test";

    let ping = celery_cli(&world, &["inspect", "ping", "--timeout", "3"]);
    assert!(ping.contains(host) && ping.contains("pong"), "{ping}");

    let registered = celery_cli(&world, &["inspect", "registered", "--timeout", "3"]);
    assert!(
        registered.contains("t.add") && registered.contains("t.sleep"),
        "{registered}"
    );

    let stats = inspect(&world, "stats");
    let s = &stats[host];
    assert!(s["pid"].as_u64().is_some(), "{stats}");
    assert_eq!(s["pool"]["max-concurrency"], 2, "{stats}");
    // Celery's prefetch count: concurrency × worker_prefetch_multiplier (4), as a Python
    // `-c 2` worker reports it.
    assert_eq!(s["prefetch_count"], 8, "{stats}");
    assert!(s["total"].is_object(), "{stats}");
    let cli_stats = celery_cli(&world, &["inspect", "stats", "--timeout", "3"]);
    assert!(cli_stats.contains("max-concurrency"), "{cli_stats}");

    // A running task shows in `active`; one waiting for its ETA in `scheduled`. The task sleeps
    // a minute: each `inspect` starts Python, seconds on a loaded machine, and a 3 s task had
    // ended before one came (the worker is killed at the end, not waited for).
    let ids = world.py(r#"
from celery_app import app
r1 = app.send_task("t.sleep", args=(60000,))
r2 = app.send_task("t.add", args=(1, 2), countdown=60, priority=7)
print(r1.id, r2.id)
"#);
    let (running, eta) = ids.trim().split_once(' ').expect("two ids");
    let active = eventually(Duration::from_secs(50), || {
        let a = inspect(&world, "active");
        (a[host].as_array().is_some_and(|l| !l.is_empty())).then_some(a)
    })
    .expect("the running task shows in active");
    let req = &active[host][0];
    assert_eq!(req["id"], running, "{active}");
    assert_eq!(req["name"], "t.sleep");
    assert_eq!(req["args"], serde_json::json!([60000]));
    assert!(req["time_start"].as_f64().is_some(), "{active}");
    assert_eq!(req["delivery_info"]["routing_key"], "celery");

    let scheduled = inspect(&world, "scheduled");
    let entry = &scheduled[host][0];
    assert_eq!(entry["request"]["id"], eta, "{scheduled}");
    assert!(entry["eta"].as_str().is_some(), "{scheduled}");
    assert_eq!(
        entry["request"]["delivery_info"],
        serde_json::json!({"exchange": "", "routing_key": "celery", "priority": 7, "redelivered": false}),
        "{scheduled}"
    );
    let cli_scheduled = celery_cli(&world, &["inspect", "scheduled", "--timeout", "3"]);
    assert!(cli_scheduled.contains(eta), "{cli_scheduled}");

    let queues = inspect(&world, "active_queues");
    assert_eq!(queues[host][0]["name"], "celery", "{queues}");
    let conf = inspect(&world, "conf");
    assert!(conf[host]["broker_url"].is_string(), "{conf}");
    assert_eq!(
        conf[host]["task_acks_on_failure_or_timeout"], true,
        "{conf}"
    );
    assert_eq!(conf[host]["task_reject_on_worker_lost"], false, "{conf}");
    assert_eq!(conf[host]["include"], serde_json::json!([]), "{conf}");
    assert!(
        conf[host]["broker_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("redis://")),
        "{conf}"
    );

    // `registered` with task attributes, formatted by Celery's rules.
    let named = world.py(r#"
import json
from celery_app import app
print(json.dumps(app.control.inspect(timeout=2.0).registered("name", "max_retries")))
"#);
    let named: Value = serde_json::from_str(named.trim()).expect("JSON");
    assert!(
        named[host]
            .as_array()
            .is_some_and(|l| l.iter().any(|t| t == "t.add [name=t.add max_retries=3]")),
        "{named}"
    );
    let report = inspect(&world, "report");
    let text = report[host]["ok"].as_str().unwrap_or_default();
    assert!(
        text.contains("software -> celery:5.7.0 (celeriac "),
        "{report}"
    );
    assert!(text.contains("result_extended: "), "{report}");
    let cli_report = celery_cli(&world, &["inspect", "report", "--timeout", "3"]);
    assert!(cli_report.contains("software -> celery:"), "{cli_report}");

    // Unknown commands get an error reply, not silence.
    let out = world.py(r#"
import json
from celery_app import app
print(json.dumps(app.control.broadcast("no_such_command", reply=True, timeout=2)))
"#);
    assert!(out.contains("KeyError('no_such_command')"), "{out}");
}

#[test]
fn revoke_an_eta_task_never_runs_it() {
    let world = World::new(&[]);
    let mut w = world.celeriac("rev", &[]);
    // 30 s: the inspect and revoke calls below start Python processes, several seconds each on a
    // loaded machine; with 8 s the ETA sometimes came before the revoke.
    let id = world
        .py(r#"
from celery_app import app
print(app.send_task("t.mark", args=(0,), countdown=30).id)
"#)
        .trim()
        .to_string();
    eventually(Duration::from_secs(10), || {
        let s = inspect(&world, "scheduled");
        s["rev@test"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
            .then_some(())
    })
    .expect("the task is held for its ETA");
    let out = celery_cli(&world, &["control", "revoke", &id, "--timeout", "3"]);
    assert!(out.contains("flagged as revoked"), "{out}");
    // Celery 5.7: REVOKED is written at broadcast time for a pending task.
    assert_eq!(state_of(&world, &id), "REVOKED");
    let revoked = inspect(&world, "revoked");
    assert_eq!(revoked["rev@test"], serde_json::json!([id]), "{revoked}");
    // When the ETA comes, the worker sees the id is revoked and does not run it.
    w.wait_for_log("task revoked; not run", Duration::from_secs(60))
        .expect("the ETA fires and the task is dropped as revoked");
    assert_eq!(state_of(&world, &id), "REVOKED");
    let mut redis = world.redis();
    let runs: Option<i64> = redis.hget("marks", &id).unwrap();
    assert_eq!(runs, None, "a revoked task never runs");
    let unacked: u64 = redis.hlen("unacked").unwrap();
    assert_eq!(unacked, 0, "the revoked message was acked");
}

#[test]
fn revoke_terminate_stops_a_running_task_and_the_worker_goes_on() {
    let world = World::new(&[]);
    let _w = world.celeriac("term", &[]);
    let id = world
        .py("from celery_app import app\nprint(app.send_task('t.sleep', args=(30000,)).id)")
        .trim()
        .to_string();
    eventually(Duration::from_secs(10), || {
        let a = inspect(&world, "active");
        a["term@test"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
            .then_some(())
    })
    .expect("the task runs");
    let out = world.py(&format!(
        r#"
from celery_app import app
from celery.exceptions import TaskRevokedError
r = app.AsyncResult('{id}')
r.revoke(terminate=True)
try:
    r.get(timeout=10)
except TaskRevokedError as e:
    print("revoked:", e)
print(r.state)
print(app.send_task("t.add", args=(2, 3)).get(timeout=10))
"#
    ));
    assert!(out.contains("revoked: terminated"), "{out}");
    assert!(
        out.contains("REVOKED\n5"),
        "the worker keeps working: {out}"
    );
}

#[test]
fn control_shutdown_stops_the_worker_warm() {
    let world = World::new(&[]);
    let mut w = world.celeriac("down", &[]);
    // As with a Python worker, `shutdown` gets no reply (the worker just stops).
    world.py("from celery_app import app\napp.control.shutdown(destination=['down@test'])");
    let status = w
        .wait_exit(Duration::from_secs(20))
        .expect("the worker exits");
    assert!(status.success(), "{status}");
    let log = w.log();
    assert!(log.contains("warm shutdown"), "{log}");
}

#[test]
fn persisted_revocation_survives_a_restart() {
    let world = World::new(&[("CELERIAC_REVOKED_KEY", "celeriac.revoked")]);
    let mut w = world.celeriac("p1", &[]);
    let id = "11111111-2222-3333-4444-555555555555";
    let out = celery_cli(&world, &["control", "revoke", id, "--timeout", "3"]);
    assert!(out.contains("flagged as revoked"), "{out}");
    w.signal("TERM");
    w.wait_exit(Duration::from_secs(20)).expect("stops");

    let _w2 = world.celeriac("p2", &[]);
    let revoked = inspect(&world, "revoked");
    assert_eq!(revoked["p2@test"], serde_json::json!([id]), "{revoked}");
    world.py(&format!(
        "from celery_app import app\napp.send_task('t.mark', args=(0,), task_id='{id}')"
    ));
    let mut redis = world.redis();
    eventually(Duration::from_secs(10), || {
        let n: u64 = redis.llen("celery").unwrap();
        let u: u64 = redis.hlen("unacked").unwrap();
        (n == 0 && u == 0).then_some(())
    })
    .expect("the message is consumed and acked");
    let runs: Option<i64> = redis.hget("marks", id).unwrap();
    assert_eq!(runs, None, "the revoked id was not run after the restart");
    assert_eq!(state_of(&world, id), "REVOKED");
}

#[test]
fn hello_merges_revoked_ids_in_both_forms() {
    let world = World::new(&[]);
    let _w = world.celeriac("mingle", &[]);
    let out = world.py(
        r#"
import json
from celery_app import app
r1 = app.control.broadcast("hello", arguments={"from_node": "py@x", "revoked": ["id-list"]}, reply=True, timeout=2)
r2 = app.control.broadcast("hello", arguments={"from_node": "py@x", "revoked": {"id-dict": [12.5, "id-dict"]}}, reply=True, timeout=2)
print(json.dumps(r2))
"#,
    );
    let replies: Value = serde_json::from_str(out.trim()).expect("json");
    let reply = &replies[0]["mingle@test"];
    assert_eq!(
        reply["revoked"],
        serde_json::json!(["id-list", "id-dict"]),
        "{out}"
    );
    assert!(reply["clock"].as_u64().is_some(), "{out}");
}

#[test]
fn consumers_and_rate_limits_change_at_runtime() {
    let world = World::new(&[]);
    let _w = world.celeriac("dyn", &[]);
    let out = celery_cli(
        &world,
        &["control", "add_consumer", "extra", "--timeout", "3"],
    );
    assert!(out.contains("add consumer extra"), "{out}");
    let got = world.py(
        "from celery_app import app\nprint(app.send_task('t.add', args=(4, 5), queue='extra').get(timeout=10))",
    );
    assert_eq!(got.trim(), "9");
    let out = celery_cli(
        &world,
        &["control", "cancel_consumer", "extra", "--timeout", "3"],
    );
    assert!(out.contains("no longer consuming from extra"), "{out}");
    let queues = inspect(&world, "active_queues");
    assert_eq!(
        queues["dyn@test"].as_array().map(Vec::len),
        Some(1),
        "{queues}"
    );

    let out = celery_cli(
        &world,
        &["control", "rate_limit", "t.add", "10/m", "--timeout", "3"],
    );
    assert!(out.contains("new rate limit set successfully"), "{out}");
    let reg = inspect(&world, "registered");
    assert!(
        reg["dyn@test"]
            .as_array()
            .is_some_and(|l| l.iter().any(|t| t == "t.add [rate_limit=10/m]")),
        "{reg}"
    );
    let out = celery_cli(
        &world,
        &["control", "rate_limit", "t.nope", "1/s", "--timeout", "3"],
    );
    assert!(out.contains("unknown task"), "{out}");
}

#[test]
fn remote_control_and_events_honour_db_and_global_keyprefix() {
    let mut world = World::new(&[(
        "CELERY_BROKER_TRANSPORT_OPTIONS",
        r#"{"global_keyprefix": "pfx:"}"#,
    )]);
    let url = world.redis.url(3);
    for (k, v) in world.env.iter_mut() {
        if k == "CELERY_BROKER_URL" || k == "CELERY_RESULT_BACKEND" {
            *v = url.clone();
        }
    }
    let mut receiver = world.python_process("receiver", &["event_receiver.py"]);
    receiver
        .wait_for_log("LISTENING", Duration::from_secs(30))
        .expect("the receiver subscribes");
    let _w = world.celeriac("pfx", &["-E"]);
    let ping = celery_cli(&world, &["inspect", "ping", "--timeout", "3"]);
    assert!(ping.contains("pfx@test") && ping.contains("pong"), "{ping}");
    let got = world.py(
        "from celery_app import app\nprint(app.send_task('t.add', args=(1, 2)).get(timeout=10))",
    );
    assert_eq!(got.trim(), "3");
    receiver
        .wait_for_log("task-succeeded", Duration::from_secs(10))
        .expect("events reach a prefixed receiver on db 3");
    receiver.kill9();
}

#[test]
fn mingle_learns_revoked_ids_from_a_python_worker() {
    let world = World::new(&[]);
    let _py = world.python_worker("py", "other");
    let id = "99999999-8888-7777-6666-555555555555";
    world.py(&format!(
        "from celery_app import app\napp.control.revoke('{id}', destination=['py@test'])"
    ));
    let mut w = world.celeriac("late", &[]);
    w.wait_for_log("mingle: sync with nodes", Duration::from_secs(10))
        .expect("celeriac mingles with the Python worker");
    let revoked = inspect(&world, "revoked");
    assert_eq!(revoked["late@test"], serde_json::json!([id]), "{revoked}");
}

#[test]
fn revoke_by_stamped_headers_refuses_and_terminates_stamped_tasks() {
    let world = World::new(&[]);
    let mut w = world.celeriac("stamp", &[]);
    let host = "stamp@test";
    let out = world.py(r#"
import json, time
from celery import signature
from celery.canvas import StampingVisitor
from celery_app import app

class Mon(StampingVisitor):
    def __init__(self, value):
        self.value = value
    def on_signature(self, sig, **headers):
        return {"mon": self.value, "stamped_headers": ["mon"]}

def stamped(task, args, value):
    sig = signature(task, args=args, app=app)
    sig.stamp(visitor=Mon(value))
    return sig

running = stamped("t.sleep", (30000,), "x").apply_async()
for _ in range(200):
    active = app.control.inspect(timeout=1.0).active() or {}
    if any(r["id"] == running.id for rs in active.values() for r in rs):
        break
    time.sleep(0.1)
reply = app.control.revoke_by_stamped_headers({"mon": ["x"]}, terminate=True, reply=True)
print(json.dumps(reply))
later = stamped("t.mark", (0,), "x").apply_async()
other = stamped("t.mark", (0,), "y").apply_async()
print(other.get(timeout=30))
for r in (running, later):
    try:
        r.get(timeout=30)
    except Exception as e:
        print(type(e).__name__)
print(running.state, later.state)
reply = app.control.revoke_by_stamped_headers({"mon": ["nothing"]}, reply=True)
print(json.dumps(reply))
print(later.id)
"#);
    let lines: Vec<&str> = out.trim().lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    let reply: Value = serde_json::from_str(lines[0]).expect("JSON");
    assert_eq!(
        reply[0][host]["ok"], "headers defaultdict(<class 'set'>, {'mon': {'x'}}) revoked",
        "{out}"
    );
    assert_eq!(lines[1], "0", "a task with another stamp runs: {out}");
    assert_eq!(
        lines[2..5],
        ["TaskRevokedError", "TaskRevokedError", "REVOKED REVOKED"],
        "{out}"
    );
    let reply: Value = serde_json::from_str(lines[5]).expect("JSON");
    assert_eq!(
        reply[0][host]["ok"], "headers {'mon': ['nothing']} flagged as revoked, but not terminated",
        "{out}"
    );
    w.wait_for_log("revoked_by_header", Duration::from_secs(10))
        .expect("the refusal names the stamp");
    let runs: Option<i64> = world.redis().hget("marks", lines[6]).unwrap();
    assert_eq!(runs, None, "a task revoked by its stamp never runs");
}

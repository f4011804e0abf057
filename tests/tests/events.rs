//! Monitoring events as Celery's own `EventReceiver` and `events.State` (Flower's base) read
//! them, and Flower itself listing a celeriac worker and its tasks.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{events_of, eventually, World};

fn find<'a>(events: &'a [Value], kind: &str, uuid: Option<&str>) -> Option<&'a Value> {
    support::find_event(events, kind, uuid)
}

#[test]
fn celery_event_receiver_sees_task_and_worker_events() {
    let world = World::new(&[]);
    let mut receiver = world.python_process("receiver", &["event_receiver.py"]);
    receiver
        .wait_for_log("LISTENING", Duration::from_secs(30))
        .expect("the receiver subscribes");
    let mut w = world.celeriac("ev", &["-E"]);
    let ids = world.py(r#"
from celery_app import app
ok = app.send_task("t.add", args=(2, 3))
bad = app.send_task("t.fail", args=("boom",))
ok.get(timeout=10)
try:
    bad.get(timeout=10)
except Exception:
    pass
unknown = app.send_task("t.not_registered")
try:
    unknown.get(timeout=10)
except Exception:
    pass
print(ok.id, bad.id, unknown.id)
"#);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    let [ok_id, bad_id, unknown_id] = ids[..] else {
        panic!("three ids: {ids:?}")
    };
    receiver
        .wait_for_log("worker-heartbeat", Duration::from_secs(10))
        .expect("a heartbeat arrives");
    w.signal("TERM");
    w.wait_exit(Duration::from_secs(20)).expect("stops");
    receiver
        .wait_for_log("worker-offline", Duration::from_secs(10))
        .expect("worker-offline arrives");
    let log = receiver.log();
    receiver.kill9();
    let events = events_of(&log);

    let online = find(&events, "worker-online", None).expect("worker-online");
    let e = &online["event"];
    assert_eq!(e["hostname"], "ev@test", "{e}");
    assert_eq!(e["freq"], 2.0);
    assert!(e["loadavg"].as_array().is_some_and(|l| l.len() == 3), "{e}");
    assert!(e["sw_ident"].is_string() && e["sw_ver"].is_string() && e["sw_sys"] == "Linux");
    assert!(
        e["utcoffset"].is_f64(),
        "utcoffset is a float as in 5.7: {e}"
    );
    assert!(
        e["clock"].as_u64().is_some() && e["pid"].as_u64().is_some(),
        "{e}"
    );
    assert!(e["timestamp"].as_f64().is_some(), "{e}");
    let hb = find(&events, "worker-heartbeat", None).expect("heartbeat");
    assert_eq!(
        hb["worker_alive"], true,
        "Celery's State sees the worker alive: {hb}"
    );
    assert!(
        hb["event"]["processed"].as_u64().is_some() && hb["event"]["active"].as_u64().is_some()
    );

    let received = find(&events, "task-received", Some(ok_id)).expect("task-received");
    assert_eq!(received["event"]["name"], "t.add");
    assert_eq!(received["event"]["args"], "(2, 3)");
    assert_eq!(received["event"]["kwargs"], "{}");
    assert!(
        find(&events, "task-started", Some(ok_id)).is_some(),
        "task-started"
    );
    let succeeded = find(&events, "task-succeeded", Some(ok_id)).expect("task-succeeded");
    assert_eq!(succeeded["event"]["result"], "5");
    assert!(succeeded["event"]["runtime"].as_f64().is_some());
    let ts = &succeeded["task_state"];
    assert_eq!(ts["state"], "SUCCESS", "{succeeded}");
    assert_eq!(ts["name"], "t.add");
    assert_eq!(ts["worker"], "ev@test");

    let failed = find(&events, "task-failed", Some(bad_id)).expect("task-failed");
    assert_eq!(failed["event"]["exception"], "ValueError('boom')");
    assert!(failed["event"]["traceback"]
        .as_str()
        .is_some_and(|t| t.contains("ValueError")));
    assert_eq!(failed["task_state"]["state"], "FAILURE");

    let unknown = find(&events, "task-failed", Some(unknown_id)).expect("unknown task");
    assert_eq!(
        unknown["event"]["exception"],
        "NotRegistered('t.not_registered')"
    );

    let offline = find(&events, "worker-offline", None).expect("worker-offline");
    assert_eq!(offline["worker_alive"], false, "{offline}");
}

#[test]
fn batched_task_events_go_out_as_task_multi_and_celery_reads_them() {
    let world = World::new(&[("CELERIAC_EVENTS_BATCH", "24")]);
    let mut receiver = world.event_receiver();
    let _w = world.celeriac("batch", &["-E", "-c", "8"]);
    let ids = world.py(r#"
from celery_app import app
rs = [app.send_task("t.add", args=(i, i)) for i in range(60)]
print(sorted(r.get(timeout=30) for r in rs) == [2 * i for i in range(60)])
print(" ".join(r.id for r in rs))
"#);
    let (ok, ids) = ids.split_once('\n').expect("two lines");
    assert_eq!(ok, "True");
    let ids: Vec<&str> = ids.split_whitespace().collect();
    let events = eventually(Duration::from_secs(30), || {
        let events = events_of(&receiver.log());
        ids.iter()
            .all(|id| {
                find(&events, "task-succeeded", Some(id))
                    .is_some_and(|e| e["task_state"]["state"] == "SUCCESS")
            })
            .then_some(events)
    })
    .unwrap_or_else(|| {
        panic!(
            "Celery's State did not see every task succeed:\n{}",
            receiver.log()
        )
    });
    receiver.kill9();
    let batches: Vec<usize> = events
        .iter()
        .filter_map(|e| e.get("batch").and_then(Value::as_array))
        .map(Vec::len)
        .collect();
    let task_events = events
        .iter()
        .filter(|e| {
            e["event"]["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("task-"))
        })
        .count();
    assert_eq!(task_events, 3 * ids.len(), "received, started, succeeded");
    assert_eq!(
        batches.iter().sum::<usize>(),
        task_events,
        "every task event came in a task.multi batch: {batches:?}"
    );
    assert!(batches.iter().all(|n| *n <= 24), "{batches:?}");
    assert!(
        batches.iter().any(|n| *n > 1),
        "events sent together share a message: {batches:?}"
    );
    assert!(find(&events, "worker-online", None).is_some());
}

#[test]
fn task_events_are_off_without_dash_e_but_worker_events_are_sent() {
    let world = World::new(&[]);
    let mut receiver = world.python_process("receiver", &["event_receiver.py"]);
    receiver
        .wait_for_log("LISTENING", Duration::from_secs(30))
        .expect("the receiver subscribes");
    let _w = world.celeriac("quiet", &[]);
    world.py(
        "from celery_app import app\nprint(app.send_task('t.add', args=(1, 1)).get(timeout=10))",
    );
    receiver
        .wait_for_log("worker-heartbeat", Duration::from_secs(10))
        .expect("a heartbeat arrives");
    let log = receiver.log();
    receiver.kill9();
    let events = events_of(&log);
    assert!(find(&events, "worker-online", None).is_some());
    assert!(
        events.iter().all(|e| !e["event"]["type"]
            .as_str()
            .unwrap_or_default()
            .starts_with("task-")),
        "{log}"
    );
}

#[test]
fn flower_lists_the_worker_and_its_tasks() {
    let world = World::new(&[("FLOWER_UNAUTHENTICATED_API", "true")]);
    let port = celeriac_testkit::free_port().to_string();
    let mut flower = world.python_process(
        "flower",
        &[
            "-m",
            "celery",
            "-A",
            "celery_app",
            "flower",
            "--address=127.0.0.1",
            &format!("--port={port}"),
        ],
    );
    let _w = world.celeriac("fl", &["-E"]);
    let get = |path: &str| -> Option<Value> {
        let out = world
            .try_py(&format!(
                "import urllib.request\nprint(urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=10).read().decode())"
            ))
            .ok()?;
        serde_json::from_str(out.trim()).ok()
    };
    // Flower's worker list comes from remote control (stats, registered, active_queues, ...).
    let workers = eventually(Duration::from_secs(40), || {
        let w = get("/api/workers?refresh=1")?;
        w.get("fl@test").is_some().then_some(w)
    })
    .unwrap_or_else(|| panic!("flower lists the worker\n{}", flower.log()));
    let w = &workers["fl@test"];
    assert!(
        w["registered"]
            .as_array()
            .is_some_and(|l| l.iter().any(|t| t == "t.add")),
        "{w}"
    );
    assert!(
        w["stats"]["pool"]["max-concurrency"].as_u64().is_some(),
        "{w}"
    );
    assert_eq!(w["active_queues"][0]["name"], "celery", "{w}");
    // Its task list comes from events.
    let id = world
        .py("from celery_app import app\nr = app.send_task('t.add', args=(20, 22))\nr.get(timeout=10)\nprint(r.id)")
        .trim()
        .to_string();
    let tasks = eventually(Duration::from_secs(30), || {
        let t = get("/api/tasks")?;
        (t[&id]["state"] == "SUCCESS").then_some(t)
    })
    .unwrap_or_else(|| panic!("flower lists the task\n{}", flower.log()));
    assert_eq!(tasks[&id]["name"], "t.add");
    assert_eq!(tasks[&id]["result"], "42");
    assert_eq!(tasks[&id]["worker"], "fl@test");
    flower.kill9();
}

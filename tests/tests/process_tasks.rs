//! Process tasks: CPU-bound Rust functions run in child processes of the worker, killed at the
//! hard time limit; soft limits, crashed children (`WorkerLostError`) and
//! `task_reject_on_worker_lost`, seen from real Python Celery.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{events_of, eventually, find_event, World};

/// Prints one outcome line per call: `SUCCESS <repr>` or `<state> <type> <args>`.
const OUTCOME: &str = r#"
from celery_app import app
def outcome(r):
    try:
        return f"SUCCESS {r.get(timeout=60)!r}"
    except Exception as e:
        return f"{r.state} {type(e).__module__}.{type(e).__name__} {e.args!r}"
"#;

/// The pids the worker logged as "task process killed".
fn killed_pids(log: &str) -> Vec<u32> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "task process killed")
        .filter_map(|l| l["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
        .collect()
}

/// Whether `pid` is a live process (a zombie, dead but not yet reaped by whoever adopted it,
/// counts as gone).
fn process_exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Whether `pid` is gone from /proc entirely: dead and reaped (the worker reaps its children).
fn reaped(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pids the worker logged as "task process started".
fn started_pids(log: &str) -> Vec<u32> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "task process started")
        .filter_map(|l| l["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
        .collect()
}

#[test]
fn a_cpu_bound_process_task_is_killed_at_the_hard_limit() {
    let world = World::new(&[]);
    let w = world.celeriac("w1", &["-c", "2"]);
    let out = world.py(&format!(
        r#"{OUTCOME}
print(app.send_task("t.pid").get(timeout=60))
print(app.send_task("t.pid").get(timeout=60))
print(outcome(app.send_task("t.burn", args=(600000,), time_limit=1)))
print(app.send_task("t.pid").get(timeout=60))
print(outcome(app.send_task("t.add", args=(2, 2))))
print(outcome(app.send_task("t.burn", args=(10,), time_limit=5)))
"#
    ));
    let lines: Vec<&str> = out.lines().collect();
    let [first, reused, limited, fresh, add, quick] = lines[..] else {
        panic!("six lines: {out}")
    };
    let first: u32 = first.parse().expect("a pid");
    assert_ne!(first, w.pid(), "the task ran in a child process");
    assert_eq!(reused, first.to_string(), "the idle child is reused");
    assert_eq!(
        limited,
        "FAILURE billiard.exceptions.TimeLimitExceeded (1,)"
    );
    assert_eq!(add, "SUCCESS 4");
    assert_eq!(quick, "SUCCESS True");
    // The busy loop ran in that same child, which was SIGKILLed and reaped: its pid is gone
    // (a zombie would still be listed in /proc), and the next run got a new child.
    assert_eq!(killed_pids(&w.log()), vec![first], "{}", w.log());
    let gone = eventually(Duration::from_secs(20), || reaped(first).then_some(()));
    assert!(gone.is_some(), "process {first} still exists");
    assert_ne!(fresh, first.to_string());
    assert!(process_exists(w.pid()), "the worker keeps running");
}

#[test]
fn process_tasks_see_their_soft_time_limit() {
    let world = World::new(&[]);
    let _w = world.celeriac("w1", &["-c", "2"]);
    let out = world.py(&format!(
        r#"{OUTCOME}
print(outcome(app.send_task("t.burn_soft", args=(False,), soft_time_limit=0.5, time_limit=30)))
print(outcome(app.send_task("t.burn_soft", args=(True,), soft_time_limit=0.5, time_limit=30)))
print(outcome(app.send_task("t.burn_soft", args=(False,), soft_time_limit=0.3, time_limit=30)))
"#
    ));
    assert_eq!(
        out,
        "SUCCESS 'soft'\nFAILURE billiard.exceptions.SoftTimeLimitExceeded ()\nSUCCESS 'soft'\n"
    );
}

#[test]
fn a_crashed_task_process_fails_the_run_with_worker_lost_error() {
    let world = World::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed");
    let _w = world.celeriac("w1", &["-c", "2"]);
    let out = world.py(&format!(
        r#"{OUTCOME}
print(outcome(app.send_task("t.crash_once", args=({marker:?},))))
print(outcome(app.send_task("t.crash_once", args=({marker:?},))))
"#,
        marker = marker.to_str().unwrap()
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(
            "FAILURE billiard.exceptions.WorkerLostError ('Worker exited prematurely: signal 6 (SIGABRT) Job: "
        ),
        "{out}"
    );
    assert_eq!(lines[1], "SUCCESS 'survived'", "{out}");
}

#[test]
fn reject_on_worker_lost_requeues_the_run_of_a_crashed_process() {
    let world = World::new(&[
        ("CELERY_TASK_ACKS_LATE", "true"),
        ("CELERY_TASK_REJECT_ON_WORKER_LOST", "true"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed");
    let mut receiver = world.event_receiver();
    let _w = world.celeriac("w1", &["-c", "2", "-E"]);
    let out = world.py(&format!(
        r#"{OUTCOME}
r = app.send_task("t.crash_once", args=({marker:?},))
print(outcome(r))
print(r.id)
"#,
        marker = marker.to_str().unwrap()
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "SUCCESS 'survived'", "{out}");
    let id = lines[1];
    let events = eventually(Duration::from_secs(20), || {
        let events = events_of(&receiver.log());
        find_event(&events, "task-succeeded", Some(id)).map(|_| events.clone())
    })
    .unwrap_or_else(|| panic!("no task-succeeded:\n{}", receiver.log()));
    receiver.kill9();
    let rejected = find_event(&events, "task-rejected", Some(id)).expect("task-rejected");
    assert_eq!(rejected["event"]["requeue"], true, "{rejected}");
    assert!(
        find_event(&events, "task-failed", Some(id)).is_none(),
        "a requeued run is not failed"
    );
}

#[test]
fn revoke_terminate_kills_the_task_process() {
    let world = World::new(&[]);
    let mut w = world.celeriac("w1", &["-c", "2"]);
    let id = world
        .py("from celery_app import app\nprint(app.send_task('t.burn', args=(600000,)).id)")
        .trim()
        .to_string();
    w.wait_for_log("task process started", Duration::from_secs(20))
        .expect("the run starts a task process");
    let out = world.py(&format!(
        r#"
from celery_app import app
from celery.exceptions import TaskRevokedError
r = app.AsyncResult('{id}')
r.revoke(terminate=True)
try:
    r.get(timeout=20)
except TaskRevokedError as e:
    print("revoked:", e)
print(r.state)
print(app.send_task("t.add", args=(2, 3)).get(timeout=20))
"#
    ));
    assert_eq!(out, "revoked: terminated\nREVOKED\n5\n");
    let killed = killed_pids(&w.log());
    assert_eq!(killed.len(), 1, "{}", w.log());
    let gone = eventually(Duration::from_secs(20), || reaped(killed[0]).then_some(()));
    assert!(gone.is_some(), "process {} still exists", killed[0]);
}

#[test]
fn a_killed_worker_leaves_no_task_process_behind() {
    let world = World::new(&[]);
    let mut w = world.celeriac("w1", &["-c", "2"]);
    world.py("from celery_app import app\napp.send_task('t.burn', args=(600000,))");
    w.wait_for_log("task process started", Duration::from_secs(20))
        .expect("the run starts a task process");
    let children = started_pids(&w.log());
    assert_eq!(children.len(), 1, "{}", w.log());
    assert!(process_exists(children[0]));
    // SIGKILL: the worker cannot stop its child; the child sees its stdin close and exits.
    w.kill9();
    let gone = eventually(Duration::from_secs(20), || {
        (!process_exists(children[0])).then_some(())
    });
    assert!(
        gone.is_some(),
        "task process {} outlived its worker",
        children[0]
    );
}

#[test]
fn an_idle_task_process_that_died_is_replaced_without_failing_a_run() {
    let world = World::new(&[]);
    let w = world.celeriac("w1", &["-c", "1"]);
    let pid = |world: &World| -> u32 {
        world
            .py("from celery_app import app\nprint(app.send_task('t.pid').get(timeout=60))")
            .trim()
            .parse()
            .expect("a pid")
    };
    let first = pid(&world);
    // The idle child dies (as if OOM-killed) while no run uses it.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let dead = eventually(Duration::from_secs(20), || {
        (!process_exists(first)).then_some(())
    });
    assert!(dead.is_some());
    let second = pid(&world);
    assert_ne!(second, first);
    assert!(
        w.log().contains("idle task process had exited"),
        "{}",
        w.log()
    );
}

/// The pids of `n` `t.pid` runs sent one after the other.
fn pids_of_sequential_runs(world: &World, n: usize) -> Vec<u32> {
    let out = world.py(&format!(
        "from celery_app import app\nfor _ in range({n}):\n    print(app.send_task('t.pid').get(timeout=60))\n"
    ));
    out.lines().map(|l| l.parse().expect("a pid")).collect()
}

#[test]
fn max_tasks_per_child_replaces_a_task_process_after_that_many_runs() {
    let world = World::new(&[]);
    let w = world.celeriac("w1", &["-c", "1", "--max-tasks-per-child", "2"]);
    let pids = pids_of_sequential_runs(&world, 5);
    let [a, a2, b, b2, c] = pids[..] else {
        panic!("five pids: {pids:?}")
    };
    assert_eq!((a, b), (a2, b2), "each child runs two tasks: {pids:?}");
    assert!(a != b && b != c && a != c, "then it is replaced: {pids:?}");
    let replaced = eventually(Duration::from_secs(20), || {
        (reaped(a) && reaped(b)).then_some(())
    });
    assert!(replaced.is_some(), "retired children are reaped");
    assert!(w.log().contains("task process replaced"), "{}", w.log());
}

#[test]
fn max_memory_per_child_replaces_a_task_process_past_the_limit() {
    // 1 KiB: every child is over it after its first task, which still completes.
    let world = World::new(&[("CELERY_WORKER_MAX_MEMORY_PER_CHILD", "1")]);
    let w = world.celeriac("w1", &["-c", "1"]);
    let pids = pids_of_sequential_runs(&world, 3);
    let [a, b, c] = pids[..] else {
        panic!("three pids: {pids:?}")
    };
    assert!(a != b && b != c && a != c, "a new child per run: {pids:?}");
    assert!(
        w.log()
            .contains("exceeds worker_max_memory_per_child (1 KiB)"),
        "{}",
        w.log()
    );
}

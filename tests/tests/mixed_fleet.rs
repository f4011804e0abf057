//! celeriac and Python Celery workers on the same queue, sharing kombu's ack emulation: whoever
//! dies, its messages come back after the visibility timeout; while celeriac lives, a task longer
//! than the visibility timeout is not run twice.

mod support;

use std::time::Duration;

use redis::Commands;
use support::{eventually, World};

const SHORT_VT: &[(&str, &str)] = &[
    // kombu 5.7 and celeriac both sweep every `unacked_restore_interval` × `_throttle` seconds.
    (
        "CELERY_BROKER_TRANSPORT_OPTIONS",
        r#"{"visibility_timeout": 2, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}"#,
    ),
    ("CELERY_TASK_ACKS_LATE", "true"),
];

fn marks(world: &World, id: &str) -> i64 {
    world.redis().hget("marks", id).unwrap_or(0)
}

#[test]
fn sigkill_celeriac_mid_task_the_message_runs_again() {
    let world = World::new(SHORT_VT);
    let mut rust = world.celeriac("rust", &["-c", "1"]);
    let id =
        world.py("from celery_app import app\nprint(app.send_task('t.mark', args=(3000,)).id)");
    let id = id.trim();
    eventually(Duration::from_secs(20), || {
        (marks(&world, id) == 1).then_some(())
    })
    .expect("celeriac started the task");
    rust.kill9();
    // A Python worker on the same queue restores the message after the visibility timeout and runs it.
    let _py = world.python_worker("py", "celery");
    let out = world.py(&format!(
        "from celery_app import app\nfrom celery.result import AsyncResult\nr = AsyncResult('{id}', app=app)\nprint(r.get(timeout=60), r.result)"
    ));
    assert_eq!(out.trim(), "3000 3000");
    assert_eq!(
        marks(&world, id),
        2,
        "run once by celeriac (killed), once by Python"
    );
}

#[test]
fn sigkill_python_worker_mid_task_celeriac_restores_and_runs_it() {
    let world = World::new(SHORT_VT);
    let mut py = world.python_worker("py", "celery");
    let id =
        world.py("from celery_app import app\nprint(app.send_task('t.mark', args=(3000,)).id)");
    let id = id.trim();
    eventually(Duration::from_secs(20), || {
        (marks(&world, id) == 1).then_some(())
    })
    .expect("python started the task");
    py.kill9();
    let _rust = world.celeriac("rust", &["-c", "1"]);
    let out = world.py(&format!(
        "from celery_app import app\nfrom celery.result import AsyncResult\nprint(AsyncResult('{id}', app=app).get(timeout=60))"
    ));
    assert_eq!(out.trim(), "3000");
    assert_eq!(marks(&world, id), 2);
}

#[test]
fn a_task_longer_than_the_visibility_timeout_runs_once_while_celeriac_lives() {
    let world = World::new(SHORT_VT);
    let _rust = world.celeriac("rust", &["-c", "1"]);
    // The Python worker consumes another queue, so celeriac holds both messages; its restore
    // sweep (every second here) covers every unacked message of the database all the same.
    let _py = world.python_worker("py", "python");
    // An ETA further away than the visibility timeout, and a task running longer than it.
    let ids = world.py(r#"
from celery_app import app
a = app.send_task("t.mark", args=(7000,))
b = app.send_task("t.mark", args=(10,), countdown=6)
print(a.id, b.id)
"#);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    let out = world.py(&format!(
        "from celery_app import app\nfrom celery.result import AsyncResult\nprint([AsyncResult(i, app=app).get(timeout=60) for i in '{} {}'.split()])",
        ids[0], ids[1]
    ));
    assert_eq!(out.trim(), "[7000, 10]");
    // Give any wrongly restored copy time to run, then count executions.
    std::thread::sleep(Duration::from_secs(4));
    for id in &ids {
        assert_eq!(marks(&world, id), 1, "task {id} ran more than once");
    }
}

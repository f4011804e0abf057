//! Rust tasks written as their Python definitions (`#[celeriac_worker::task]`), called by real
//! Python Celery the ways Python code calls them, against real Redis.

mod support;

use support::World;

/// Prints one line per call: `SUCCESS <repr>` or `<state> <module>.<type> <args repr>`.
const OUTCOME: &str = r#"
from celery_app import app
def outcome(r):
    try:
        return f"SUCCESS {r.get(timeout=30)!r}"
    except Exception as e:
        return f"{r.state} {type(e).__module__}.{type(e).__name__} {e.args!r}"
"#;

#[test]
fn demo_add_binds_positional_keyword_and_mixed_calls_of_any_number() {
    let world = World::new(&[]);
    let _w = world.celeriac("w1", &["-c", "4"]);
    let out = world.py(&format!(
        r#"{OUTCOME}
add = app.signature("demo.add")
print(outcome(app.send_task("demo.add", args=(2, 40))))
print(outcome(app.send_task("demo.add", kwargs={{"a": 2, "b": 40}})))
print(outcome(add.apply_async(kwargs={{"b": 40, "a": 2}})))
print(outcome(app.signature("demo.add", args=(2,)).apply_async(kwargs={{"b": 40}})))
print(outcome(app.send_task("demo.add", args=(1.5, 2.25))))
print(outcome(app.send_task("demo.add", args=(1, 0.5))))
print(outcome(app.send_task("demo.add", args=(2**100, 1))))
print(outcome(app.send_task("demo.add", args=(-(2**64), 2**63))))
"#
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "SUCCESS 42",
            "SUCCESS 42",
            "SUCCESS 42",
            "SUCCESS 42",
            "SUCCESS 3.75",
            "SUCCESS 1.5",
            "SUCCESS 1267650600228229401496703205377",
            "SUCCESS -9223372036854775808",
        ],
        "{out}"
    );
}

#[test]
fn protocol_1_messages_with_kwargs_bind_too() {
    let world = World::new(&[]);
    let _w = world.celeriac("w1", &["-c", "2"]);
    let out = world.py(&format!(
        r#"{OUTCOME}
app.conf.task_protocol = 1
print(outcome(app.send_task("demo.add", kwargs={{"a": 2, "b": 40}})))
print(outcome(app.send_task("demo.add", args=(2,), kwargs={{"b": 0.5}})))
print(app.amqp.create_task_message.__name__)
"#
    ));
    assert_eq!(out.trim(), "SUCCESS 42\nSUCCESS 2.5\nas_task_v1", "{out}");
}

#[test]
fn bad_calls_fail_with_the_type_error_python_would_raise() {
    let world = World::new(&[]);
    let _w = world.celeriac("w1", &["-c", "4"]);
    // Each call is also made on a plain Python function with the same definition: the two
    // messages must be the same.
    let out = world.py(&format!(
        r#"{OUTCOME}
def add(a, b):
    return a + b
calls = [((1,), {{}}), ((1, 2, 3), {{}}), ((1,), {{"a": 2}}), ((1, 2), {{"c": 3}}), ((), {{}})]
for args, kwargs in calls:
    try:
        add(*args, **kwargs)
    except TypeError as e:
        python = f"FAILURE builtins.TypeError {{e.args!r}}"
    ours = outcome(app.send_task("demo.add", args=args, kwargs=kwargs))
    print(ours)
    print("same" if ours == python else f"differs from Python: {{python}}")
"#
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "FAILURE builtins.TypeError (\"add() missing 1 required positional argument: 'b'\",)",
            "same",
            "FAILURE builtins.TypeError ('add() takes 2 positional arguments but 3 were given',)",
            "same",
            "FAILURE builtins.TypeError (\"add() got multiple values for argument 'a'\",)",
            "same",
            "FAILURE builtins.TypeError (\"add() got an unexpected keyword argument 'c'\",)",
            "same",
            "FAILURE builtins.TypeError (\"add() missing 2 required positional arguments: 'a' and 'b'\",)",
            "same",
        ],
        "{out}"
    );
}

#[test]
fn demo_fail_raises_value_error_with_its_args() {
    let world = World::new(&[]);
    let _w = world.celeriac("w1", &["-c", "2"]);
    let out = world.py(&format!(
        r#"{OUTCOME}
print(outcome(app.send_task("demo.fail", args=("boom", 42))))
print(outcome(app.send_task("demo.fail", args=("bad ticket id",))))
print(outcome(app.send_task("demo.fail")))
r = app.send_task("demo.fail", args=("boom", 42))
try:
    r.get(timeout=30)
except ValueError as e:
    print(repr(e), r.traceback is not None)
print(outcome(app.send_task("demo.echo", kwargs={{"value": [1, 2**70, None]}})))
"#
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "FAILURE builtins.ValueError ('boom', 42)",
            "FAILURE builtins.ValueError ('bad ticket id',)",
            "FAILURE builtins.ValueError ()",
            "ValueError('boom', 42) True",
            "SUCCESS [1, 1180591620717411303424, None]",
        ],
        "{out}"
    );
}

#[test]
fn soft_time_limit_raises_soft_time_limit_exceeded_in_the_task() {
    let world = World::new(&[]);
    let _w = world.celeriac("w1", &["-c", "4"]);
    // `demo.sleep` does not handle its soft limit: it fails with it, as a Python task would;
    // `t.soft_aware` catches it, cleans up (awaiting 200 ms) and succeeds.
    let out = world.py(&format!(
        r#"{OUTCOME}
from celery.exceptions import SoftTimeLimitExceeded
r = app.send_task("demo.sleep", args=(4000,), soft_time_limit=1)
print(outcome(r))
try:
    r.get(timeout=30)
except SoftTimeLimitExceeded as e:
    print("caught celery.exceptions.SoftTimeLimitExceeded", repr(e))
print(outcome(app.send_task("demo.sleep", kwargs={{"ms": 4000}}, soft_time_limit=0.5, time_limit=10)))
print(outcome(app.send_task("t.soft_aware", args=(4000,), kwargs={{"cleanup_ms": 200}}, soft_time_limit=0.5)))
print(outcome(app.send_task("demo.sleep", args=(10,), soft_time_limit=5)))
"#
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "FAILURE billiard.exceptions.SoftTimeLimitExceeded ()",
            "caught celery.exceptions.SoftTimeLimitExceeded SoftTimeLimitExceeded()",
            "FAILURE billiard.exceptions.SoftTimeLimitExceeded ()",
            "SUCCESS 'soft'",
            "SUCCESS 10",
        ],
        "{out}"
    );
}

//! Canvas built in Python (chains, groups, chords, link/link_error) run by celeriac; a chord
//! split between a Python worker and celeriac; task replacement.

mod support;

use std::time::Duration;

use redis::Commands;
use support::World;

const APP: &str = "from celery_app import app, add, mul, tsum, fail, tally, record\nfrom celery import chain, group, chord, signature\nfrom celery.result import AsyncResult, GroupResult\n";

fn py(world: &World, body: &str) -> String {
    world.py(&format!("{APP}{body}")).trim().to_string()
}

#[test]
fn chains_groups_chords_and_links_built_in_python() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "4"]);
    let out = py(
        &world,
        r#"
print(chain(add.s(1, 2), add.s(3), add.s(4)).apply_async().get(timeout=30))
g = group(add.s(i, i) for i in range(4)).apply_async()
print(g.get(timeout=30))
g.save()
print(GroupResult.restore(g.id, app=app).get(timeout=30))
print(chord([add.s(i, i) for i in range(3)], tsum.s()).apply_async().get(timeout=30))
c = chain(add.s(1, 2), group(mul.s(2), mul.s(3)), tsum.s(), chord([add.si(1, 1), add.si(2, 2)], tsum.s()))
print(c.apply_async().get(timeout=30))
print(chain(add.s(1, 1), chord([add.s(1), mul.s(5)], tsum.s()), add.s(100)).apply_async().get(timeout=30))
r = add.apply_async((2, 3), link=mul.s(10))
print(r.get(timeout=30))
import time
for _ in range(300):
    r = AsyncResult(r.id, app=app)
    if r.children:
        break
    time.sleep(0.1)
print(r.children[0].get(timeout=30))
r = add.apply_async((1, 1), link=group(mul.s(2), mul.s(3)))
r.get(timeout=30)
print(sorted(c.get(timeout=30) for c in AsyncResult(r.id, app=app).children[0].results))
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "10",
            "[0, 2, 4, 6]",
            "[0, 2, 4, 6]",
            "6",
            "6",
            "113",
            "5",
            "50",
            "[4, 6]"
        ],
        "{out}"
    );
}

#[test]
fn a_failing_chain_step_fails_the_rest_and_runs_the_errback() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "2"]);
    let out = py(
        &world,
        r#"
c = chain(add.s(1, 1), fail.si("boom").set(link_error=record.s("eb")), add.s(1), add.s(2))
r = c.apply_async()
try:
    r.get(timeout=30)
except ValueError as e:
    print("last:", repr(e))
print("middle:", r.parent.state, repr(r.parent.result))
print("first:", r.parent.parent.parent.state, r.parent.parent.parent.result)
print("failed id:", r.parent.parent.id)
import time, json
for _ in range(300):
    rec = app.backend.client.lrange("records", 0, -1)
    if rec:
        break
    time.sleep(0.1)
print("errback:", [json.loads(x) for x in rec])
"#,
    );
    let failed = out
        .lines()
        .find_map(|l| l.strip_prefix("failed id: "))
        .expect("failed id")
        .to_string();
    assert!(out.contains("last: ValueError('boom')"), "{out}");
    assert!(out.contains("middle: FAILURE ValueError('boom')"), "{out}");
    assert!(out.contains("first: SUCCESS 2"), "{out}");
    assert!(
        out.contains(&format!("errback: [['{failed}', 'eb']]")),
        "{out}"
    );
}

#[test]
fn a_failed_header_member_fails_the_chord_body_with_chord_error() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "2"]);
    let out = py(
        &world,
        r#"
r = chord([add.s(1, 1), fail.si("bad"), add.s(2, 2)], tsum.s().set(link_error=record.s())).apply_async()
try:
    # A fresh AsyncResult has no parent: `r.get()` would re-raise the header's ValueError first.
    AsyncResult(r.id, app=app).get(timeout=30)
except Exception as e:
    print(type(e).__name__, str(e))
import time, json
for _ in range(300):
    rec = app.backend.client.lrange("records", 0, -1)
    if rec:
        break
    time.sleep(0.1)
print([json.loads(x) for x in rec] == [[r.id]])
# As Celery stores it, the failed body's children: the group of its errbacks.
kids = AsyncResult(r.id, app=app).children
print(type(kids[0]).__name__, len(kids[0].children), kids[0].children[0].get(timeout=30))
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ChordError Dependency ")
            && lines[0].ends_with("raised ValueError('bad')"),
        "{out}"
    );
    assert_eq!(lines[1], "True", "{out}");
    assert_eq!(lines[2], "GroupResult 1 None", "{out}");
}

/// Celery 5.7's `_handle_group_chord_error`: when the header fails, each task of a group body
/// calls its errbacks (the chord's `link_error`, linked to each of them) and is stored FAILURE
/// with the header's exception.
#[test]
fn a_failed_header_fails_each_task_of_a_group_body() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "2"]);
    let out = py(
        &world,
        r#"
body = group(tsum.s(), tsum.s())
r = chord([add.si(1, 1), fail.si("bad")], body).apply_async(link_error=record.si("eb"))
for t in r.results:
    try:
        AsyncResult(t.id, app=app).get(timeout=30)
    except Exception as e:
        print(type(e).__name__, str(e))
import time, json
for _ in range(300):
    rec = app.backend.client.lrange("records", 0, -1)
    if len(rec) >= 2:
        break
    time.sleep(0.1)
print([json.loads(x) for x in rec])
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec!["ValueError bad", "ValueError bad", "[['eb'], ['eb']]"],
        "{out}"
    );
}

#[test]
fn a_chord_split_between_python_and_celeriac_fires_its_body_once() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "4", "-Q", "celery"]);
    let _py = world.python_worker("py", "py");
    let out = py(
        &world,
        r#"
results = []
for n in range(6):
    header = [add.s(i, n).set(queue="py" if i % 2 else "celery") for i in range(6)]
    results.append(chord(header, tally.s()).apply_async())
for r in results:
    print(r.id, r.get(timeout=60))
"#,
    );
    let mut conn = world.redis();
    for (n, line) in out.lines().enumerate() {
        let (id, sum) = line.split_once(' ').expect("id and sum");
        assert_eq!(sum, (15 + 6 * n).to_string(), "{out}");
        // Give a duplicate body (if any) time to run before counting.
        std::thread::sleep(Duration::from_millis(200));
        let runs: i64 = conn.hget("marks", id).unwrap_or(0);
        assert_eq!(runs, 1, "the body of chord {n} ran {runs} times");
    }
}

/// A frozen chord keeps its ids; applying it again is a new run (Celery 5.7's `set_chord_size`
/// drops the `.c` claim), whose body celeriac publishes and runs again.
///
/// Celery 5.7 calls `set_chord_size` only when it sends the header's last task, after the
/// others: a worker that returns an earlier header task's part before that still finds the
/// previous run's `.c` = `done` and drops the part (Celery's own worker does the same), so the
/// second run would never complete. The worker stops consuming while the chord is applied again.
#[test]
fn a_frozen_chord_applied_twice_runs_its_body_twice() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "2"]);
    let out = py(
        &world,
        r#"
c = chord([add.s(1, 2), add.s(3, 4)], tally.s())
c.freeze()
first = c.apply_async()
print(first.id, first.get(timeout=30))
assert app.control.cancel_consumer("celery", destination=["rust@test"], reply=True, timeout=10)
second = c.apply_async()
assert app.control.add_consumer("celery", destination=["rust@test"], reply=True, timeout=10)
print(second.id, second.get(timeout=30))
import time
for _ in range(300):
    if int(app.backend.client.hget("marks", first.id) or 0) >= 2:
        break
    time.sleep(0.1)
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let (id, sum) = lines[0].split_once(' ').expect("id and sum");
    assert_eq!(lines[1], format!("{id} 10"), "{out}");
    assert_eq!(sum, "10", "{out}");
    let runs: i64 = world.redis().hget("marks", id).unwrap_or(0);
    assert_eq!(runs, 2, "the body ran {runs} times");
}

/// A frozen signature keeps its id; applied again by another chain (as Celery's
/// `test_mutable_errback_called_by_chord_from_chain*` reuse a frozen `fail.s()`), it is a new run:
/// celeriac publishes the step, and a frozen errback, again, as Celery does.
#[test]
fn a_frozen_chain_step_applied_again_by_another_chain_runs_again() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "2"]);
    let out = py(
        &world,
        r#"
import json, time
from celery_app import echo
step = tally.s()
step.freeze()
eb = record.s("eb")
eb.freeze()
failing = fail.si("boom").set(link_error=eb)
failing.freeze()
for x in (1, 2):
    r = chain(echo.si([x, x]), step).apply_async()
    for _ in range(300):
        if int(app.backend.client.hget("marks", step.id) or 0) >= x:
            break
        time.sleep(0.1)
    try:
        chain(add.s(x, x), failing).apply_async().get(timeout=30)
    except ValueError as e:
        print("failed", repr(e))
    for _ in range(300):
        if app.backend.client.llen("records") >= x:
            break
        time.sleep(0.1)
print("runs", app.backend.client.hget("marks", step.id).decode())
# A SUCCESS is never overwritten (Celery's `_store_result`): the first run's sum stays.
print("sum", json.loads(app.backend.client.get(f"celery-task-meta-{step.id}"))["result"])
print("errbacks", [json.loads(x) for x in app.backend.client.lrange("records", 0, -1)])
print("failed id", failing.id)
"#,
    );
    let failed = out
        .lines()
        .find_map(|l| l.strip_prefix("failed id "))
        .expect("failed id")
        .to_string();
    let expected = [
        "failed ValueError('boom')".to_string(),
        "failed ValueError('boom')".to_string(),
        "runs 2".to_string(),
        "sum 2".to_string(),
        format!("errbacks [['{failed}', 'eb'], ['{failed}', 'eb']]"),
    ];
    let lines: Vec<&str> = out.lines().take(5).collect();
    assert_eq!(lines, expected, "{out}");
}

/// Celery 5.3.6's Redis backend counts chord parts without 5.7's `.d`/`.c` keys and fires the
/// body when its own count reaches the size; celeriac's claim-and-count must still fire each body
/// exactly once, whichever side completes the set and whichever Celery applied the chord. A slow
/// member (`t.sleep`) on one side makes that side the last: `py` chords are completed by the
/// 5.3.6 worker, `rust` chords by celeriac (which leaves its `.c` claim key at `done`).
#[test]
fn a_chord_split_between_celery_5_3_6_and_celeriac_fires_its_body_once() {
    let python536 = celeriac_testkit::python_celery536().expect("the Celery 5.3.6 venv");
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "4", "-Q", "celery"]);
    let _py = world.python_worker_with(&python536, "py536", "py");
    let apply = |offset: usize| {
        format!(
            r#"{APP}
import celery
from celery_app import sleep
print(celery.__version__)
# One chord at a time: the solo 5.3.6 worker sleeping for one chord must not delay the fast
# members of the next, or the side meant to finish last would not.
for n in range({offset}, {offset} + 4):
    last, first = ("py", "celery") if n % 2 else ("celery", "py")
    header = [add.s(i, n).set(queue=first) for i in range(3)] + [sleep.si(1500).set(queue=last)]
    r = chord(header, tally.s()).apply_async()
    print("py" if last == "py" else "rust", r.id, r.parent.id, r.get(timeout=90))
"#
        )
    };
    let by_536 = world.py_with(&python536, &apply(0));
    let by_current = world.py(&apply(4));
    assert!(by_536.starts_with("5.3.6\n"), "{by_536}");
    assert!(!by_current.starts_with("5.3.6\n"), "{by_current}");
    let mut conn = world.redis();
    let lines = by_536.lines().skip(1).chain(by_current.lines().skip(1));
    let mut fired_by = Vec::new();
    for (n, line) in lines.enumerate() {
        let [last, id, group, sum] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("last, id, group and sum: {line}")
        };
        assert_eq!(
            sum,
            (1503 + 3 * n).to_string(),
            "chord {n}: {by_536}{by_current}"
        );
        // Give a duplicate body (if any) time to run before counting.
        std::thread::sleep(Duration::from_millis(200));
        let runs: i64 = conn.hget("marks", id).unwrap_or(0);
        assert_eq!(runs, 1, "the body of chord {n} ran {runs} times");
        let claim: Option<String> = conn.get(format!("celery-taskset-meta-{group}.c")).unwrap();
        fired_by.push((last, claim));
    }
    for (last, claim) in &fired_by {
        match *last {
            "rust" => assert_eq!(claim.as_deref(), Some("done"), "{fired_by:?}"),
            _ => assert_eq!(claim.as_deref(), None, "{fired_by:?}"),
        }
    }
}

#[test]
fn a_rust_task_replaces_itself() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "2"]);
    let out = py(
        &world,
        r#"
r = app.send_task("t.replace_me", args=(20, 22))
print(r.get(timeout=30))
c = chain(signature("t.replace_me", args=(1, 2), app=app), add.s(10)).apply_async()
print(c.get(timeout=30))
"#,
    );
    assert_eq!(out, "42\n13");
}

#[test]
fn map_and_starmap_run_in_the_worker() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &[]);
    let out = py(
        &world,
        r#"
print(add.starmap([(1, 1), (2, 3)]).delay().get(timeout=30))
print(tsum.map([[1, 2], [3, 4, 5]]).delay().get(timeout=30))
print(group(add.starmap([(1, 1)]), add.s(3, 3)).delay().get(timeout=30))
r = fail.map(["boom"]).delay()
try:
    r.get(timeout=30)
except Exception as e:
    print(type(e).__name__, e)
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["[2, 5]", "[3, 12]", "[[2], 6]"], "{out}");
    assert!(lines.get(3).is_some_and(|l| l.contains("boom")), "{out}");
}

#[test]
fn a_rust_task_replaces_itself_with_a_chain_or_a_group() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &["-c", "2"]);
    let out = py(
        &world,
        r#"
from celery.exceptions import ImproperlyConfigured
r = app.send_task("t.replace_chain", args=(1, 2))
print("chain:", r.get(timeout=30))
print("state:", AsyncResult(r.id, app=app).state)
c = chain(signature("t.replace_group", args=([1, 2],), app=app), tsum.s()).apply_async()
print("group then tsum:", c.get(timeout=30))
g = group(signature("t.replace_group", args=([i, 10 * i],), app=app) for i in range(3)).apply_async()
print("in a group:", g.get(timeout=30))
h = chord([signature("t.replace_chain", args=(i, i), app=app) for i in range(3)], tsum.s()).apply_async()
print("in a chord:", h.get(timeout=30))
try:
    app.send_task("t.replace_empty").get(timeout=30)
except ImproperlyConfigured as e:
    print("empty:", e)
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "chain: 30",
            "state: SUCCESS",
            "group then tsum: 5",
            "in a group: [[1, 1], [2, 11], [3, 21]]",
            "in a chord: 60",
            "empty: Cannot replace with an empty chain",
        ],
        "{out}"
    );
}

#[test]
fn a_new_style_errback_is_called_in_the_worker_with_request_exc_traceback() {
    let world = World::new(&[]);
    let _rust = world.celeriac("rust", &[]);
    let id = py(
        &world,
        r#"
r = fail.apply_async(("boom",), link_error=signature("t.errback_new", app=app))
try:
    r.get(timeout=30)
except Exception:
    pass
print(r.id)
"#,
    );
    let got = support::eventually(Duration::from_secs(20), || {
        let v: Option<String> = world.redis().hget("errbacks", &id).unwrap();
        v
    })
    .expect("the errback ran");
    // Called with the request and the exception (a task message would carry only the id).
    assert_eq!(got, r#"["ValueError",null]"#);
}

//! Late acks as Celery settles them: `task_acks_on_failure_or_timeout`, a task's `Reject`, and
//! the `task-rejected` events they send, read by Celery's own `EventReceiver`.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use redis::Commands;
use serde_json::Value;
use support::{events_of, eventually, find_event, World};

/// Prints one outcome line per call: `SUCCESS <value>` or `<state> <exception type>`.
const OUTCOME: &str = r#"
from celery_app import app
def outcome(r):
    try:
        return f"SUCCESS {r.get(timeout=30)!r}"
    except Exception as e:
        return f"{r.state} {type(e).__name__}"
"#;

/// The task ids of the messages in the dead-letter list.
fn dead_lettered_ids(world: &World) -> Vec<String> {
    let raw: Vec<Vec<u8>> = world
        .redis()
        .lrange("celeriac.dead_letter", 0, -1)
        .expect("read the dead-letter list");
    raw.iter()
        .map(|m| {
            let envelope: Value = serde_json::from_slice(m).expect("a kombu envelope");
            envelope["headers"]["id"]
                .as_str()
                .expect("a task id")
                .to_string()
        })
        .collect()
}

fn dead_letter_reasons(world: &World) -> String {
    let reasons: HashMap<String, String> = world
        .redis()
        .hgetall("celeriac.dead_letter.reasons")
        .expect("read the reasons");
    reasons.into_values().collect::<Vec<_>>().join("\n")
}

/// Wait until nothing is held unacked (every message settled).
fn wait_settled(world: &World) {
    let settled = eventually(Duration::from_secs(20), || {
        let held: usize = world.redis().hlen("unacked").ok()?;
        (held == 0).then_some(())
    });
    assert!(settled.is_some(), "messages still unacked");
}

/// Wait until the receiver saw a `task-rejected` for each id; returns all events.
fn wait_rejected_events(receiver: &support::Proc, ids: &[&str]) -> Vec<Value> {
    eventually(Duration::from_secs(20), || {
        let events = events_of(&receiver.log());
        ids.iter()
            .all(|id| find_event(&events, "task-rejected", Some(id)).is_some())
            .then_some(events)
    })
    .unwrap_or_else(|| panic!("no task-rejected for {ids:?}:\n{}", receiver.log()))
}

fn split_ids(out: &str) -> Vec<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("ids "))
        .expect("an ids line")
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn failed_and_timed_out_runs_are_rejected_when_acks_on_failure_or_timeout_is_off() {
    let world = World::new(&[
        ("CELERY_TASK_ACKS_LATE", "true"),
        ("CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT", "false"),
    ]);
    let mut receiver = world.event_receiver();
    let _w = world.celeriac("w1", &["-c", "2", "-E"]);
    let out = world.py(&format!(
        r#"{OUTCOME}
bad = app.send_task("t.fail", args=("boom",))
slow = app.send_task("t.sleep", args=(60000,), time_limit=1)
ok = app.send_task("t.add", args=(1, 2))
tired = app.send_task("t.always_retry")
print(outcome(bad))
print(outcome(slow))
print(outcome(ok))
print(outcome(tired))
print("ids", bad.id, slow.id, ok.id, tired.id)
"#
    ));
    assert!(
        out.starts_with(
            "FAILURE ValueError\nFAILURE TimeLimitExceeded\nSUCCESS 3\nFAILURE KeyError\n"
        ),
        "{out}"
    );
    let ids = split_ids(&out);
    let (bad, slow, ok, tired) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    wait_settled(&world);
    // Celery rejects them without requeue (kombu's Redis transport would drop them); celeriac
    // keeps them intact in the dead-letter list with the reason.
    let mut dead = dead_lettered_ids(&world);
    dead.sort();
    // The last attempt of `t.always_retry` failed too (retries exhausted): rejected as well,
    // while its earlier attempts were retried and acked.
    let mut want = vec![bad.clone(), slow.clone(), tired.clone()];
    want.sort();
    assert_eq!(dead, want);
    let reasons = dead_letter_reasons(&world);
    assert!(reasons.contains("ValueError: boom"), "{reasons}");
    assert!(reasons.contains("TimeLimitExceeded"), "{reasons}");
    assert!(reasons.contains("KeyError: gone"), "{reasons}");
    let waiting: usize = world.redis().llen("celery").unwrap();
    assert_eq!(waiting, 0, "nothing was requeued");

    let events = wait_rejected_events(&receiver, &[bad, slow, tired]);
    receiver.kill9();
    for id in [bad, slow, tired] {
        let rejected = find_event(&events, "task-rejected", Some(id)).unwrap();
        assert_eq!(rejected["event"]["requeue"], false, "{rejected}");
        assert!(find_event(&events, "task-failed", Some(id)).is_some());
    }
    let retried = |kind: &str| {
        events
            .iter()
            .filter(|e| e["event"]["type"] == kind && e["event"]["uuid"] == tired.as_str())
            .count()
    };
    assert_eq!(
        (retried("task-retried"), retried("task-failed")),
        (2, 1),
        "two retries, then the failure"
    );
    assert!(find_event(&events, "task-rejected", Some(ok)).is_none());
    assert!(find_event(&events, "task-succeeded", Some(ok)).is_some());
}

#[test]
fn failed_runs_are_acked_with_late_acks_by_default() {
    let world = World::new(&[("CELERY_TASK_ACKS_LATE", "true")]);
    let _w = world.celeriac("w1", &["-c", "2"]);
    let out = world.py(&format!(
        r#"{OUTCOME}
print(outcome(app.send_task("t.fail", args=("boom",))))
print(outcome(app.send_task("t.sleep", args=(60000,), time_limit=1)))
"#
    ));
    assert_eq!(out, "FAILURE ValueError\nFAILURE TimeLimitExceeded\n");
    wait_settled(&world);
    assert!(dead_lettered_ids(&world).is_empty());
    let waiting: usize = world.redis().llen("celery").unwrap();
    assert_eq!(waiting, 0);
}

#[test]
fn a_task_rejecting_its_message_is_requeued_or_dead_lettered() {
    let world = World::new(&[("CELERY_TASK_ACKS_LATE", "true")]);
    let mut receiver = world.event_receiver();
    let _w = world.celeriac("w1", &["-c", "2", "-E"]);
    let out = world.py(&format!(
        r#"{OUTCOME}
import time
again = app.send_task("t.reject_once")
print(outcome(again))
gone = app.send_task("t.reject", args=(False,))
print(outcome(gone).split()[0])
print(repr(gone.result))
print("ids", again.id, gone.id)
"#
    ));
    // Requeued once, then run again; the other is a terminal FAILURE, as Celery 5.7 stores it.
    assert!(
        out.starts_with("SUCCESS 2\nFAILURE\nreject requeue=False: deliberate rejection\n"),
        "{out}"
    );
    let ids = split_ids(&out);
    let (again, gone) = (&ids[0], &ids[1]);
    wait_settled(&world);
    assert_eq!(dead_lettered_ids(&world), vec![gone.clone()]);
    assert!(dead_letter_reasons(&world).contains("deliberate rejection"));

    let events = wait_rejected_events(&receiver, &[again, gone]);
    receiver.kill9();
    let requeued = find_event(&events, "task-rejected", Some(again)).unwrap();
    assert_eq!(requeued["event"]["requeue"], true, "{requeued}");
    let dropped = find_event(&events, "task-rejected", Some(gone)).unwrap();
    assert_eq!(dropped["event"]["requeue"], false, "{dropped}");
    let received = events
        .iter()
        .filter(|e| e["event"]["type"] == "task-received" && e["event"]["uuid"] == again.as_str())
        .count();
    assert_eq!(received, 2, "the requeued message was received again");
    let failed = find_event(&events, "task-failed", Some(gone)).expect("task-failed");
    assert_eq!(
        failed["event"]["exception"], "reject requeue=False: deliberate rejection",
        "{failed}"
    );
    assert!(find_event(&events, "task-failed", Some(again)).is_none());
}

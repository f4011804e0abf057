//! Time limits and rate limits, driven from real Python Celery producers against real Redis.

mod support;

use std::time::Duration;

use support::World;

/// Runs `calls` (Python expressions giving an AsyncResult) and prints one outcome line each.
const OUTCOME: &str = r#"
from celery_app import app
def outcome(r):
    try:
        return f"SUCCESS {r.get(timeout=30)!r}"
    except Exception as e:
        return f"{r.state} {type(e).__module__}.{type(e).__name__} {e.args!r}"
"#;

#[test]
fn hard_and_soft_time_limits_of_async_tasks() {
    let world = World::new(&[]);
    let _w = world.celeriac("w1", &["-c", "4"]);
    let out = world.py(&format!(
        r#"{OUTCOME}
print(outcome(app.send_task("t.sleep", args=(60000,), time_limit=1)))
print(outcome(app.send_task("t.soft_aware", args=(60000,), soft_time_limit=0.3, time_limit=10)))
print(outcome(app.send_task("t.soft_fail", args=(60000,), soft_time_limit=0.3, time_limit=10)))
print(outcome(app.send_task("t.sleep", args=(60000,), soft_time_limit=0.2, time_limit=1.5)))
print(outcome(app.send_task("t.soft_aware", args=(10,), soft_time_limit=5, time_limit=10)))
print(outcome(app.send_task("t.soft_aware", args=(60000,), kwargs={{"cleanup_ms": 60000}}, soft_time_limit=0.2, time_limit=1)))
print(outcome(app.send_task("t.add", args=(1, 2))))
"#
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "FAILURE billiard.exceptions.TimeLimitExceeded (1,)",
            "SUCCESS 'soft'",
            "FAILURE billiard.exceptions.SoftTimeLimitExceeded ()",
            "FAILURE billiard.exceptions.SoftTimeLimitExceeded ()",
            "SUCCESS 'slept'",
            "FAILURE billiard.exceptions.TimeLimitExceeded (1,)",
            "SUCCESS 3",
        ],
        "{out}"
    );
}

#[test]
fn time_limit_setting_applies_when_the_message_has_none() {
    let world = World::new(&[("CELERY_TASK_TIME_LIMIT", "1")]);
    let _w = world.celeriac("w1", &["-c", "2"]);
    let out = world.py(&format!(
        r#"{OUTCOME}
print(outcome(app.send_task("t.sleep", args=(60000,))))
print(outcome(app.send_task("t.sleep", args=(10,))))
"#
    ));
    assert_eq!(
        out.trim(),
        "FAILURE billiard.exceptions.TimeLimitExceeded (1,)\nSUCCESS 10",
        "{out}"
    );
}

#[test]
fn cpu_bound_blocking_tasks_are_stopped_at_the_hard_limit() {
    let world = World::new(&[]);
    let w = world.celeriac("w1", &["-c", "2"]);
    // `t.spin` checks its limits and stops; `t.spin_blind` never checks: its run fails at the
    // limit and frees its slot while the abandoned thread finishes its 4 s loop.
    let out = world.py(&format!(
        r#"{OUTCOME}
print(outcome(app.send_task("t.spin", args=(600000,), time_limit=1)))
print(outcome(app.send_task("t.spin", args=(600000,), soft_time_limit=0.5, time_limit=30)))
blind = app.send_task("t.spin_blind", args=(4000,), time_limit=1)
print(outcome(blind))
print(outcome(app.send_task("t.add", args=(2, 2))))
print(outcome(app.send_task("t.spin", args=(10,), time_limit=5)))
"#
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "FAILURE billiard.exceptions.TimeLimitExceeded (1,)",
            "FAILURE billiard.exceptions.SoftTimeLimitExceeded ()",
            "FAILURE billiard.exceptions.TimeLimitExceeded (1,)",
            "SUCCESS 4",
            "SUCCESS True",
        ],
        "{out}"
    );
    // The blind run's thread was abandoned at the limit and ends after its loop. (The checking
    // run's thread usually returns before its run is dropped, so it is seldom abandoned at all.)
    let ended = support::eventually(Duration::from_secs(30), || {
        let log = w.log();
        let abandoned = log
            .lines()
            .position(|l| l.contains("thread abandoned") && l.contains("t.spin_blind"))?;
        log.lines()
            .skip(abandoned)
            .any(|l| l.contains("abandoned blocking task thread ended"))
            .then_some(())
    });
    assert!(ended.is_some(), "{}", w.log());
}

/// Sends 50 `t.stamp` calls, waits for them, and returns their start rate (starts per second).
fn stamp_rate(world: &World) -> f64 {
    world.py(r#"
from celery_app import app
rs = [app.send_task("t.stamp") for _ in range(50)]
for r in rs:
    r.get(timeout=60)
"#);
    let mut stamps: Vec<f64> = redis::cmd("LRANGE")
        .arg("stamps")
        .arg(0)
        .arg(-1)
        .query(&mut world.redis())
        .expect("read stamps");
    assert_eq!(stamps.len(), 50);
    stamps.sort_by(f64::total_cmp);
    49.0 / ((stamps[49] - stamps[0]) / 1000.0)
}

#[test]
fn rate_limit_per_worker_holds_within_ten_percent() {
    let world = World::new(&[("CELERY_TASK_DEFAULT_RATE_LIMIT", "10/s")]);
    let _w = world.celeriac("w1", &["-c", "8"]);
    let rate = stamp_rate(&world);
    assert!((9.0..=11.0).contains(&rate), "rate {rate}/s, limit 10/s");
}

#[test]
fn fleet_wide_rate_limit_holds_across_three_workers() {
    let world = World::new(&[
        ("CELERY_TASK_DEFAULT_RATE_LIMIT", "10/s"),
        ("CELERIAC_RATE_LIMIT_SCOPE", "fleet"),
    ]);
    let workers: Vec<_> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| world.celeriac(n, &["-c", "4"]))
        .collect();
    let rate = stamp_rate(&world);
    assert!((9.0..=11.0).contains(&rate), "rate {rate}/s, limit 10/s");
    let served = workers
        .iter()
        .filter(|w| w.log().contains("task received"))
        .count();
    assert!(served >= 2, "the work was shared by {served} worker(s)");
}

#[test]
fn rate_limit_changed_by_remote_control_applies() {
    let world = World::new(&[]);
    let _w = world.celeriac("w1", &["-c", "8"]);
    let reply = world.py(r#"
from celery_app import app
print(app.control.rate_limit("t.stamp", "10/s", reply=True, timeout=5))
"#);
    assert!(reply.contains("new rate limit set successfully"), "{reply}");
    let rate = stamp_rate(&world);
    assert!((9.0..=11.0).contains(&rate), "rate {rate}/s, limit 10/s");
}

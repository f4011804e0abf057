//! A `celery worker` command line copied from a Kubernetes manifest starts celeriac: Celery's
//! worker flags mean what they mean in Celery, or are accepted with a warning where they cannot
//! apply (`-A`, `-P`, `--autoscale`).

mod support;

use std::path::Path;
use std::time::Duration;

use redis::Commands;
use support::{eventually, World};

const OUTCOME: &str = r#"
from celery_app import app
def outcome(r):
    try:
        return f"SUCCESS {r.get(timeout=60)!r}"
    except Exception as e:
        return f"{r.state} {type(e).__module__}.{type(e).__name__}"
"#;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn a_copied_celery_command_line_runs_as_celery_would() {
    let world = World::new(&[]);
    let pidfile = world.dir().join("worker.pid");
    let logfile = world.dir().join("worker.log");
    let (pidfile_arg, logfile_arg) = (pidfile.display().to_string(), logfile.display().to_string());
    let mut w = world.celeriac_started(
        "w1",
        &[
            "-A",
            "proj",
            "-P",
            "prefork",
            "-Ofair",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--time-limit",
            "1",
            "--soft-time-limit",
            "0.5",
            "--max-tasks-per-child",
            "100",
            "--max-memory-per-child",
            "200000",
            "-Q",
            "celery,other",
            "-X",
            "other",
            "--pidfile",
            &pidfile_arg,
            "--logfile",
            &logfile_arg,
        ],
    );
    let ready = eventually(Duration::from_secs(30), || {
        read(&logfile)
            .contains("celeriac worker ready")
            .then_some(())
    });
    assert!(ready.is_some(), "log file: {}", read(&logfile));

    assert_eq!(read(&pidfile), format!("{}\n", w.pid()));
    let log = read(&logfile);
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "JSON lines in the log file: {log}"
    );
    assert!(log.contains("-A proj ignored"), "{log}");
    assert!(log.contains("-P prefork ignored"), "{log}");
    let ready: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &serde_json::Value| l["message"] == "celeriac worker ready")
        .expect("the ready line");
    assert_eq!(
        ready["queues"], r#"["celery"]"#,
        "-X other leaves only celery"
    );

    let out = world.py(&format!(
        "{OUTCOME}\nprint(outcome(app.send_task('t.add', args=(2, 3))))\nprint(outcome(app.send_task('t.sleep', args=(3000,))))\napp.send_task('t.add', args=(1, 1), queue='other')\n"
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "SUCCESS 5",
            "FAILURE billiard.exceptions.SoftTimeLimitExceeded"
        ],
        "--soft-time-limit applies to every task"
    );
    // Nothing consumes the excluded queue.
    std::thread::sleep(Duration::from_secs(2));
    let waiting: usize = world.redis().llen("other").unwrap();
    assert_eq!(waiting, 1, "-X other: the message stays in its queue");

    w.signal("TERM");
    let status = w.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{}", read(&logfile));
    assert!(!pidfile.exists(), "the pidfile is removed at exit");
}

#[test]
fn a_pidfile_of_a_running_worker_stops_a_second_start() {
    let world = World::new(&[]);
    let pidfile = world.dir().join("worker.pid");
    let arg = pidfile.display().to_string();
    let w1 = world.celeriac("w1", &["--pidfile", &arg]);
    let mut w2 = world.celeriac_started("w2", &["--pidfile", &arg]);
    let status = w2.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(!status.success());
    assert!(w2.log().contains("already running"), "{}", w2.log());
    assert_eq!(read(&pidfile), format!("{}\n", w1.pid()));
}

#[test]
fn excluding_every_queue_is_an_error_naming_the_flag() {
    let world = World::new(&[]);
    let mut w = world.celeriac_started("w1", &["-X", "celery"]);
    let status = w.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(!status.success());
    assert!(w.log().contains("--exclude-queues"), "{}", w.log());
}

#[test]
fn without_heartbeat_sends_task_events_but_no_worker_events() {
    let world = World::new(&[]);
    let receiver = world.event_receiver();
    let mut w = world.celeriac("w1", &["-E", "--without-heartbeat"]);
    let id = world
        .py("from celery_app import app\nr = app.send_task('t.add', args=(1, 2))\nr.get(timeout=60)\nprint(r.id)")
        .trim()
        .to_string();
    let succeeded = eventually(Duration::from_secs(30), || {
        let events = support::events_of(&receiver.log());
        support::find_event(&events, "task-succeeded", Some(&id)).map(|_| ())
    });
    assert!(succeeded.is_some(), "{}", receiver.log());
    w.signal("TERM");
    assert!(w.wait_exit(Duration::from_secs(30)).unwrap().success());
    let events = support::events_of(&receiver.log());
    for kind in ["worker-online", "worker-heartbeat", "worker-offline"] {
        assert!(
            support::find_event(&events, kind, None).is_none(),
            "{kind} sent: {}",
            receiver.log()
        );
    }
}

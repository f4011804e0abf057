//! An idle worker waits for arrivals instead of polling: a task sent after seconds of quiet is
//! taken because a watcher woke the fetch loop (counted on /metrics), on a priority list and on
//! a queue added by `add_consumer` too; an idle worker sends few Redis commands; and a worker
//! started without `-c` runs more async tasks at once than it has CPUs.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::scrape::metrics_port;
use support::World;

/// `celeriac_fetch_wakeups_total` of the worker whose metrics server is on `port`.
fn wakeups(port: u16) -> f64 {
    metric(port, "celeriac_fetch_wakeups_total")
}

/// The sample of the metric `name` (no labels but `hostname`).
fn metric(port: u16, name: &str) -> f64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.lines()
        .find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            (series.split('{').next()? == name).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("{name} is exported"))
}

fn celery_cli(world: &World, args: &[&str]) -> String {
    let out = std::process::Command::new(celeriac_testkit::python().expect("test venv"))
        .args(["-m", "celery", "-A", "celery_app"])
        .args(args)
        .current_dir(support::python_dir())
        .envs(world.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run celery");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_task_sent_to_an_idle_worker_is_taken_on_a_wake_up() {
    let world = World::new(&[]);
    let w = world.celeriac("idle", &["--metrics-port", "0"]);
    let port = metrics_port(&w);
    // Seconds of quiet: nothing arrived, so nothing woke the loop.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(wakeups(port), 0.0);

    let got = world.py(
        "from celery_app import app\nprint(app.send_task('t.add', args=(2, 3)).get(timeout=30))",
    );
    assert_eq!(got.trim(), "5");
    let first = wakeups(port);
    assert!(first >= 1.0, "the task was not taken on a wake-up");

    // A priority-9 message lands in `celery\x06\x169`: its watcher wakes the loop.
    std::thread::sleep(Duration::from_secs(2));
    let got = world.py(
        "from celery_app import app\nprint(app.send_task('t.add', args=(4, 5), priority=9).get(timeout=30))",
    );
    assert_eq!(got.trim(), "9");
    let second = wakeups(port);
    assert!(second > first, "the priority message did not wake the loop");

    // A queue added by remote control is watched too.
    let out = celery_cli(
        &world,
        &["control", "add_consumer", "extra", "--timeout", "3"],
    );
    assert!(out.contains("add consumer extra"), "{out}");
    std::thread::sleep(Duration::from_secs(2));
    let got = world.py(
        "from celery_app import app\nprint(app.send_task('t.add', args=(6, 7), queue='extra').get(timeout=30))",
    );
    assert_eq!(got.trim(), "13");
    assert!(
        wakeups(port) > second,
        "the added queue's arrival did not wake the loop"
    );
}

#[test]
fn an_idle_worker_sends_at_most_about_one_command_a_second() {
    let world = World::new(&[]);
    let _w = world.celeriac("quiet", &[]);
    let mut redis = world.redis();
    // Start-up traffic (declarations, mingle, the first sweep) is not idle traffic.
    std::thread::sleep(Duration::from_secs(3));
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(&mut redis)
        .unwrap();
    let window = 15;
    std::thread::sleep(Duration::from_secs(window));
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis)
        .unwrap();
    let mut total = 0u64;
    let mut seen = Vec::new();
    for line in stats.lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        if name == "info" || name.starts_with("config") {
            continue;
        }
        let calls: u64 = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        total += calls;
        seen.push(format!("{name}={calls}"));
    }
    assert!(
        total <= window,
        "{total} commands in {window} s from an idle worker: {seen:?}"
    );
}

#[test]
fn without_c_async_tasks_are_not_bound_by_the_cpu_count() {
    let world = World::new(&[]);
    let w = world.celeriac("roomy", &["--metrics-port", "0"]);
    let port = metrics_port(&w);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The test worker has async and blocking tasks: 512 async slots plus one per CPU.
    assert_eq!(
        metric(port, "celeriac_worker_concurrency"),
        (512 + cpus) as f64
    );
    let n = 2 * cpus + 4;
    world.py(&format!(
        "from celery_app import app\nfor _ in range({n}): app.send_task('t.sleep', args=(15000,))"
    ));
    let all_running = support::eventually(Duration::from_secs(60), || {
        (metric(port, "celery_worker_tasks_active") >= n as f64).then_some(())
    });
    assert!(
        all_running.is_some(),
        "{n} async sleeps never ran at once on {cpus} CPUs"
    );
}

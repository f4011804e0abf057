//! celery-exporter (danihodovic/celery-exporter, from PyPI in its own venv) watching a celeriac
//! worker's events (`-E`) on a private Redis: every series both expose has the same type, label
//! sets and values, so dashboards and alerts written for the exporter read celeriac's
//! `/metrics` unchanged.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use celeriac_testkit::{free_port, python_exporter};
use support::scrape::metrics_port;
use support::{eventually, Proc, World};

/// The series families both expose (counters by their `_total` name).
const SHARED: &[&str] = &[
    "celery_task_received_total",
    "celery_task_started_total",
    "celery_task_succeeded_total",
    "celery_task_failed_total",
    "celery_task_retried_total",
    "celery_task_revoked_total",
    "celery_task_rejected_total",
    "celery_task_runtime",
    "celery_worker_up",
    "celery_worker_tasks_active",
];

/// The queue the tasks are sent to. The exporter learns a task's queue only from `task-sent`
/// events, which a producer publishes after the message (a worker's `task-received` can reach it
/// first); without one it labels the task with `celery`, so only that queue compares reliably.
const QUEUE: &str = "celery";

/// GET `/metrics` on the local `port`.
fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_string())
}

/// The samples of the [`SHARED`] families in an exposition: `name{labels sorted}` → value, and
/// each family's `# TYPE`.
#[derive(Debug, PartialEq)]
struct Shared {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
}

/// The same families, types, label sets and values; a histogram's `_sum` is a sum of floats that
/// the exporter and celeriac add up separately, so values agree to 1e-9 relative, not bit for bit
/// (0.00034235 against 0.00034234999999999995 was seen).
fn same(a: &Shared, b: &Shared) -> bool {
    a.types == b.types
        && a.samples.len() == b.samples.len()
        && a.samples.iter().all(|(k, x)| {
            b.samples
                .get(k)
                .is_some_and(|y| x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()))
        })
}

fn shared(text: &str) -> Shared {
    let family_of = |name: &str| {
        SHARED.iter().find(|f| {
            name == **f
                || ["_bucket", "_count", "_sum"]
                    .iter()
                    .any(|s| name.strip_prefix(**f) == Some(s))
        })
    };
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').expect("# TYPE name kind");
            if SHARED.contains(&name) {
                types.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name{labels} value");
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        if family_of(name).is_none() {
            continue;
        }
        let mut labels: Vec<&str> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .collect();
        labels.sort();
        // Bucket bounds: Python writes `1.0`, Rust `1`.
        let labels: Vec<String> = labels
            .iter()
            .map(|l| match l.strip_prefix("le=\"") {
                Some(le) => {
                    let le = le.trim_end_matches('"');
                    let le = le.parse::<f64>().map_or(le.to_string(), |v| v.to_string());
                    format!("le=\"{le}\"")
                }
                None => l.to_string(),
            })
            .collect();
        samples.insert(
            format!("{name}{{{}}}", labels.join(",")),
            value.parse().expect("a number"),
        );
    }
    Shared { types, samples }
}

#[test]
fn celery_exporter_and_celeriac_report_the_same_series() {
    let world = World::new(&[]);
    let exporter_port = free_port();
    let mut cmd = Command::new(python_exporter().unwrap_or_else(|e| panic!("{e:#}")));
    cmd.args(["-c", "from src.cli import cli; cli()"])
        .args(["--broker-url", &world.url])
        .args(["--host", "127.0.0.1", "--port", &exporter_port.to_string()])
        .env("PYTHONUNBUFFERED", "1");
    let exporter = Proc::spawn("exporter", cmd, world.dir().join("exporter.log"));
    eventually(Duration::from_secs(60), || scrape(exporter_port))
        .unwrap_or_else(|| panic!("celery-exporter serves /metrics\n{}", exporter.log()));

    let w = world.celeriac(
        "w1",
        &[
            "-E",
            "-Q",
            QUEUE,
            "-c",
            "4",
            "--acks-late",
            "--metrics-port",
            "0",
        ],
    );
    let port = metrics_port(&w);
    // The exporter has seen the worker (online event or heartbeat): it is consuming events.
    eventually(Duration::from_secs(60), || {
        shared(&scrape(exporter_port)?)
            .samples
            .get(r#"celery_worker_up{hostname="test"}"#)
            .filter(|v| **v == 1.0)
            .map(|_| ())
    })
    .unwrap_or_else(|| panic!("the exporter sees the worker\n{}", exporter.log()));

    let out = world.py(&format!(
        r#"
from datetime import datetime, timedelta, timezone
from celery_app import app
q = {QUEUE:?}
rs = [app.send_task("t.add", args=(i, i), queue=q) for i in range(3)]
rs += [app.send_task("t.fail", args=("bad",), queue=q) for _ in range(2)]
rs.append(app.send_task("t.flaky", args=(2,), queue=q))
rs.append(app.send_task("t.always_retry", queue=q))
rs.append(app.send_task("t.add", args=(0, 0), queue=q,
    expires=datetime.now(timezone.utc) - timedelta(minutes=1)))
print([r.get(timeout=60, propagate=False) is not None for r in rs].count(True))
app.send_task("t.reject", args=(False,), queue=q)
"#
    ));
    assert_eq!(out.trim(), "8", "{}", w.log());

    // celeriac's own counts, as the tasks above make them.
    let celeriac = eventually(Duration::from_secs(60), || {
        let s = shared(&scrape(port)?);
        let rejected =
            r#"celery_task_rejected_total{hostname="test",name="t.reject",queue_name="celery"}"#;
        (s.samples.get(rejected) == Some(&1.0)).then_some(s)
    })
    .unwrap_or_else(|| panic!("celeriac counts the rejection\n{}", w.log()));
    for (series, n) in [
        (
            r#"celery_task_received_total{hostname="test",name="t.add",queue_name="celery"}"#,
            4.0,
        ),
        (
            r#"celery_task_succeeded_total{hostname="test",name="t.add",queue_name="celery"}"#,
            3.0,
        ),
        (
            r#"celery_task_revoked_total{hostname="test",name="t.add",queue_name="celery"}"#,
            1.0,
        ),
        (
            r#"celery_task_runtime_count{hostname="test",name="t.add",queue_name="celery"}"#,
            3.0,
        ),
        (
            r#"celery_task_failed_total{exception="ValueError",hostname="test",name="t.fail",queue_name="celery"}"#,
            2.0,
        ),
        (
            r#"celery_task_failed_total{exception="",hostname="test",name="t.fail",queue_name="celery"}"#,
            0.0,
        ),
        (
            r#"celery_task_received_total{hostname="test",name="t.flaky",queue_name="celery"}"#,
            3.0,
        ),
        (
            r#"celery_task_retried_total{hostname="test",name="t.flaky",queue_name="celery"}"#,
            2.0,
        ),
        (
            r#"celery_task_succeeded_total{hostname="test",name="t.flaky",queue_name="celery"}"#,
            1.0,
        ),
        (
            r#"celery_task_retried_total{hostname="test",name="t.always_retry",queue_name="celery"}"#,
            2.0,
        ),
        (
            r#"celery_task_failed_total{exception="KeyError",hostname="test",name="t.always_retry",queue_name="celery"}"#,
            1.0,
        ),
        (r#"celery_worker_tasks_active{hostname="test"}"#, 0.0),
    ] {
        assert_eq!(
            celeriac.samples.get(series),
            Some(&n),
            "{series}: {celeriac:#?}"
        );
    }

    // The exporter, from the events, ends with exactly the same families, types, label sets and
    // values (histogram buckets included: it observes the runtime celeriac's events carry).
    let seen = eventually(Duration::from_secs(60), || {
        let s = shared(&scrape(exporter_port)?);
        same(&s, &celeriac).then_some(s)
    });
    if seen.is_none() {
        let last = shared(&scrape(exporter_port).unwrap_or_default());
        panic!(
            "the exporter's series differ from celeriac's\nexporter: {last:#?}\nceleriac: {celeriac:#?}\n{}",
            exporter.log()
        );
    }
}

//! Metrics, probes, KEDA endpoint and OpenTelemetry, end to end: real Celery producers, a real
//! Prometheus scraping celeriac (Debian's `prometheus`, run on a private port), `promtool`, and an
//! OTLP/HTTP receiver decoding celeriac's spans with `opentelemetry-proto`.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use support::scrape::{http_get, metrics_port, Prometheus};
use support::{eventually, World};

/// The value of the sample `series` (name and labels exactly as rendered) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn gauge(port: u16, series: &str) -> Option<f64> {
    let (status, text) = http_get(port, "/metrics")?;
    assert_eq!(status, 200, "{text}");
    sample(&text, series)
}

#[test]
fn queue_depth_probes_keda_prometheus_and_drain() {
    let world = World::new(&[]);
    let mut w = world.celeriac(
        "w1",
        &[
            "-Q",
            "backlog",
            "-c",
            "1",
            "--prefetch-multiplier",
            "1",
            "--acks-late",
            "--metrics-port",
            "0",
        ],
    );
    let port = metrics_port(&w);
    let host = r#"hostname="test""#;
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    eventually(Duration::from_secs(10), || {
        (http_get(port, "/readyz")?.0 == 200).then_some(())
    })
    .expect("ready once consuming");

    // One long task occupies the only slot (late ack: it stays in `unacked`), then a backlog
    // with mixed priorities lands in the base list and three priority lists.
    world.py(r#"
from celery_app import app
app.send_task("t.sleep", args=(60000,), queue="backlog")
"#);
    let running = format!("celery_worker_tasks_active{{{host}}}");
    eventually(Duration::from_secs(20), || {
        (gauge(port, &running)? == 1.0).then_some(())
    })
    .expect("the long task runs");
    world.py(r#"
from celery_app import app
for p in (0, 0, 3, 5, 6, 9, 9):
    app.send_task("t.add", args=(1, 2), queue="backlog", priority=p)
"#);
    let mut redis = world.redis();
    let base: u64 = redis::cmd("LLEN").arg("backlog").query(&mut redis).unwrap();
    assert_eq!(
        base, 2,
        "priority 0 in the base list, the rest in sub-lists"
    );

    let length = format!(r#"celery_queue_length{{queue_name="backlog",{host}}}"#);
    let (status, text) = eventually(Duration::from_secs(10), || {
        let (status, text) = http_get(port, "/metrics")?;
        (sample(&text, &length)? == 7.0).then_some((status, text))
    })
    .expect("celery_queue_length counts every priority list");
    assert_eq!(status, 200);
    assert_eq!(
        sample(&text, &format!("celeriac_unacked_messages{{{host}}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("celery_worker_up{{{host}}}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("celeriac_worker_concurrency{{{host}}}")),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("celeriac_worker_prefetch_slots_in_use{{{host}}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"celery_task_started_total{{name="t.sleep",queue_name="backlog",{host}}}"#)
        ),
        Some(1.0),
        "{text}"
    );

    // promtool accepts the exposition.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // KEDA's metrics-api view: waiting (7) + unacked (1), one task per replica.
    let (status, keda) = http_get(port, "/keda").unwrap();
    assert_eq!(status, 200, "{keda}");
    let keda: Value = serde_json::from_str(&keda).unwrap();
    assert_eq!(keda["queue_depth"], 8, "{keda}");
    assert_eq!(keda["waiting"], 7);
    assert_eq!(keda["unacked"], 1);
    assert_eq!(keda["desired_replicas"], 8);
    assert_eq!(keda["queues"]["backlog"], 7);

    // A real Prometheus scrapes it and answers PromQL with the same depth.
    let prom = Prometheus::start(port);
    let query = "sum by (queue_name) (celery_queue_length)";
    let value = eventually(Duration::from_secs(60), || {
        let v = prom.query(query)?;
        let first = v["data"]["result"].as_array()?.first()?.clone();
        (first["metric"]["queue_name"] == "backlog").then_some(first)
    })
    .unwrap_or_else(|| panic!("prometheus never returned the depth\n{}", prom.log()));
    assert_eq!(value["value"][1], "7", "{value}");

    // Warm shutdown with the long task running: not ready, still alive.
    w.signal("TERM");
    let drained = eventually(Duration::from_secs(10), || {
        (http_get(port, "/readyz")?.0 == 503).then_some(())
    });
    assert!(drained.is_some(), "readyz turns 503 while draining");
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(
        gauge(port, &format!("celery_worker_up{{{host}}}")),
        Some(0.0)
    );
    w.signal("TERM");
    let status = w.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}");
}

/// An OTLP/HTTP trace receiver on a free local port; collects every span it is sent.
struct OtlpReceiver {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
    _runtime: tokio::runtime::Runtime,
}

impl OtlpReceiver {
    fn start() -> OtlpReceiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let request =
                        ExportTraceServiceRequest::decode(body.as_ref()).expect("OTLP protobuf");
                    let mut sink = sink.lock().unwrap();
                    for rs in request.resource_spans {
                        for ss in rs.scope_spans {
                            sink.extend(ss.spans);
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpReceiver {
            port,
            spans,
            _runtime: runtime,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A worker config with one declarative query task, `q.echo(n)`, on an in-memory SQLite.
fn query_task_config(dir: &std::path::Path) -> String {
    let path = dir.join("worker.toml");
    std::fs::write(
        &path,
        r#"
[cache]
prefix = "obs:cache:"

[sources.mem]
url = "sqlite::memory:"

[[tasks]]
name = "q.echo"
source = "mem"
sql = "SELECT :n AS n"
params = ["n"]
key = "echo:{n}"
ttl = "5m"
result = "one"
"#,
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn cache_metrics_show_a_miss_and_load_then_a_hit() {
    let world = World::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = query_task_config(dir.path());
    let w = world.celeriac("w1", &["--config", &config, "--metrics-port", "0"]);
    let port = metrics_port(&w);
    let host = r#"hostname="test""#;
    let series = |name: &str, labels: &str| format!("{name}{{{labels}{host}}}");
    let (_, before) = http_get(port, "/metrics").unwrap();
    assert_eq!(
        sample(
            &before,
            &series("celeriac_cache_loads_total", r#"source="mem","#)
        ),
        Some(0.0),
        "the configured source's series exist before any read\n{before}"
    );

    let out = world.py(r#"
from celery_app import app
print([app.send_task("q.echo", args=(7,)).get(timeout=20) for _ in range(2)])
"#);
    assert_eq!(out.trim(), "[{'n': 7}, {'n': 7}]");
    let (status, text) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let value = |name: &str, labels: &str| sample(&text, &series(name, labels));
    let l1 = r#"layer="l1",source="mem","#;
    let l2 = r#"layer="l2",source="mem","#;
    let mem = r#"source="mem","#;
    assert_eq!(
        value("celeriac_cache_misses_total", l1),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("celeriac_cache_misses_total", l2),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("celeriac_cache_loads_total", mem),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("celeriac_cache_l2_writes_total", mem),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value("celeriac_cache_hits_total", l1), Some(1.0), "{text}");
    assert_eq!(value("celeriac_cache_hits_total", l2), Some(0.0), "{text}");
    assert_eq!(value("celeriac_cache_lease_waits_total", mem), Some(0.0));
    assert_eq!(
        value("celeriac_cache_redis_fallbacks_total", mem),
        Some(0.0)
    );
    assert_eq!(value("celeriac_cache_load_errors_total", mem), Some(0.0));
    assert_eq!(
        value("celeriac_cache_source_query_duration_seconds_count", mem),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"celeriac_cache_source_query_duration_seconds_bucket{{source="mem",{host},le="+Inf"}}"#
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert!(value("celeriac_cache_l1_entries", "").is_some(), "{text}");
    assert_eq!(
        value(
            "celery_task_succeeded_total",
            r#"name="q.echo",queue_name="celery","#
        ),
        Some(2.0),
        "{text}"
    );

    // The second read answered from L1; a third process's invalidation is counted as received.
    let mut redis = world.redis();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("obs:cache:invalidate")
        .arg("key:obs:cache:v1:k2:{q.echo:echo:(7)}")
        .query(&mut redis)
        .unwrap();
    eventually(Duration::from_secs(10), || {
        let (_, text) = http_get(port, "/metrics")?;
        (sample(
            &text,
            &series("celeriac_cache_invalidations_received_total", ""),
        )? == 1.0)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("invalidation not counted\n{}", w.log()));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// The outcome counters count what became of each run: a run lost with its process and given back
/// to the queue is not a failure; each published retry is a retry and the exhausted last one a
/// failure.
#[test]
fn outcome_counters_follow_what_became_of_each_run() {
    let world = World::new(&[
        ("CELERY_TASK_ACKS_LATE", "true"),
        ("CELERY_TASK_REJECT_ON_WORKER_LOST", "true"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed");
    let w = world.celeriac("w1", &["-c", "2", "--metrics-port", "0"]);
    let port = metrics_port(&w);
    let out = world.py(&format!(
        r#"
from celery_app import app
print(app.send_task("t.crash_once", args=({marker:?},)).get(timeout=60))
r = app.send_task("t.always_retry")
r.get(timeout=60, propagate=False)
print(r.state)
"#,
        marker = marker.to_str().unwrap()
    ));
    assert_eq!(out.trim(), "survived\nFAILURE", "{}", w.log());
    let (_, text) = http_get(port, "/metrics").unwrap();
    let value = |name: &str, task: &str| {
        let series = format!(r#"{name}{{name="{task}",queue_name="celery",hostname="test"}}"#);
        sample(&text, &series)
    };
    // Failures are counted by exception class: the sum over every `exception` label.
    let failed = |task: &str| -> f64 {
        let label = format!(r#",name="{task}","#);
        text.lines()
            .filter(|l| l.starts_with("celery_task_failed_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        value("celery_task_started_total", "t.crash_once"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value("celery_task_succeeded_total", "t.crash_once"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(failed("t.crash_once"), 0.0, "{text}");
    assert_eq!(
        value("celery_task_started_total", "t.always_retry"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value("celery_task_retried_total", "t.always_retry"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(failed("t.always_retry"), 1.0, "{text}");
}

#[test]
fn task_span_continues_the_producers_trace_over_otlp() {
    let receiver = OtlpReceiver::start();
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let world = World::new(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SERVICE_NAME", "celeriac-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = query_task_config(dir.path());
    let w = world.celeriac("w1", &["--config", &config]);
    // The producer: Celery instrumented by opentelemetry-instrumentation-celery; its spans are
    // kept in memory, and the publish span's ids are printed.
    let out = world.py(r#"
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
CeleryInstrumentor().instrument()
from celery_app import add
with trace.get_tracer("test").start_as_current_span("request"):
    r = add.apply_async((2, 3))
print(r.get(timeout=30))
publish = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.PRODUCER][0]
print(format(publish.context.trace_id, "032x"), format(publish.context.span_id, "016x"), r.id)
"#);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("5"), "{out}");
    let ids: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let (trace_id, parent_id, task_id) = (ids[0], ids[1], ids[2]);

    let span = eventually(Duration::from_secs(20), || {
        receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.name == "run/t.add")
            .cloned()
    })
    .unwrap_or_else(|| panic!("no task span received\n{}", w.log()));
    assert_eq!(hex(&span.trace_id), trace_id);
    assert_eq!(hex(&span.parent_span_id), parent_id);
    assert_eq!(span.kind, 5, "SPAN_KIND_CONSUMER");
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| format!("{:?}", a.value))
    };
    assert!(
        attribute("task_id").is_some_and(|v| v.contains(task_id)),
        "{:?}",
        span.attributes
    );
    assert_eq!(attribute("trace_id"), None, "ids are not span attributes");

    // The task's log lines carry the trace.
    let line = w
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "task succeeded" && v["task_id"] == task_id)
        .expect("a JSON log line for the task");
    assert_eq!(line["trace_id"], trace_id, "{line}");
    assert_eq!(line["span_id"], hex(&span.span_id), "{line}");
    assert!(line.get("otel.name").is_none(), "{line}");

    // A traceparent with trace flags 03 (sampled + random, W3C level 2) from a producer that
    // sets the header itself.
    let out = world.py(
        r#"
from celery_app import add
r = add.apply_async((4, 5), headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03"})
print(r.get(timeout=30))
"#,
    );
    assert_eq!(out.trim(), "9");
    let span = eventually(Duration::from_secs(20), || {
        receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| hex(&s.trace_id) == "0af7651916cd43dd8448eb211c80319c")
            .cloned()
    })
    .unwrap_or_else(|| panic!("no span for the flags-03 trace\n{}", w.log()));
    assert_eq!(hex(&span.parent_span_id), "b7ad6b7169203331");
    assert_eq!(span.name, "run/t.add");

    // A declarative query task: the cache read on a miss, the source load and the SQL query
    // are child spans of the task span, in that order.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let out = world.py(&format!(
        r#"
from celery_app import app
r = app.send_task("q.echo", args=(11,), headers={{"traceparent": "00-{trace}-00f067aa0ba902b7-01"}})
print(r.get(timeout=30))
"#
    ));
    assert_eq!(out.trim(), "{'n': 11}");
    let spans = eventually(Duration::from_secs(20), || {
        let spans: Vec<Span> = receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .cloned()
            .collect();
        (spans.len() >= 4).then_some(spans)
    })
    .unwrap_or_else(|| panic!("no cache and SQL spans for the query task\n{}", w.log()));
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}: {spans:?}"))
    };
    let attr = |span: &Span, key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| format!("{:?}", a.value))
            .unwrap_or_default()
    };
    let (run, read, load, query) = (
        named("run/q.echo"),
        named("cache.read"),
        named("cache.load"),
        named("db.query"),
    );
    assert_eq!(hex(&run.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(read.parent_span_id, run.span_id);
    assert_eq!(load.parent_span_id, read.span_id);
    assert_eq!(query.parent_span_id, load.span_id);
    assert!(
        attr(read, "cache.key").contains("obs:cache:v1:k2:{q.echo:echo:(11)}"),
        "{read:?}"
    );
    assert!(attr(read, "cache.layer").contains("source"), "{read:?}");
    assert!(attr(read, "cache.source").contains("mem"), "{read:?}");
    assert!(attr(query, "db.system").contains("sqlite"), "{query:?}");
    assert!(
        attr(query, "db.query.text").contains("SELECT ? AS n"),
        "{query:?}"
    );
    assert_eq!(query.kind, 3, "SPAN_KIND_CLIENT");
}

/// Readiness follows the broker; a result finished while Redis is away is stored once it is back,
/// and the retried write is counted.
#[test]
fn readiness_follows_the_broker_connection() {
    let mut world = World::new(&[]);
    let mut w = world.celeriac("w1", &["--metrics-port", "0"]);
    let port = metrics_port(&w);
    let host = r#"hostname="test""#;
    let readyz = || http_get(port, "/readyz").map(|r| r.0);
    eventually(Duration::from_secs(10), || (readyz()? == 200).then_some(()))
        .expect("ready once consuming");
    let id = world
        .py("from celery_app import app\nprint(app.send_task('t.sleep', args=(3000,)).id)")
        .trim()
        .to_string();
    w.wait_for_log("task received", Duration::from_secs(20))
        .expect("the task runs");

    world.redis.kill();
    w.wait_for_log("Redis write failed; retrying", Duration::from_secs(20))
        .expect("the result write fails while Redis is down");
    eventually(Duration::from_secs(30), || (readyz()? == 503).then_some(()))
        .unwrap_or_else(|| panic!("not ready while Redis is down\n{}", w.log()));
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    let (status, text) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        !text.contains("celery_queue_length{"),
        "no stale depth while Redis cannot be read\n{text}"
    );
    assert!(
        sample(
            &text,
            &format!("celeriac_queue_depth_errors_total{{{host}}}")
        ) >= Some(1.0),
        "{text}"
    );
    assert_eq!(http_get(port, "/keda").map(|r| r.0), Some(503));

    world.redis.restart().unwrap();
    eventually(Duration::from_secs(30), || (readyz()? == 200).then_some(()))
        .unwrap_or_else(|| panic!("ready again after Redis is back\n{}", w.log()));
    let reconnects = format!("celeriac_broker_reconnects_total{{{host}}}");
    assert!(gauge(port, &reconnects) >= Some(1.0));
    let length = format!(r#"celery_queue_length{{queue_name="celery",{host}}}"#);
    assert_eq!(gauge(port, &length), Some(0.0));

    let mut redis = world.redis();
    let stored = eventually(Duration::from_secs(30), || {
        let meta: Option<String> = redis::cmd("GET")
            .arg(format!("celery-task-meta-{id}"))
            .query(&mut redis)
            .ok()?;
        meta
    })
    .unwrap_or_else(|| panic!("the result was not stored after the outage\n{}", w.log()));
    let meta: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(meta["status"], "SUCCESS", "{meta}");
    let retries = format!(r#"celeriac_redis_write_retries_total{{operation="result",{host}}}"#);
    assert!(gauge(port, &retries) >= Some(1.0));
    let failures = format!(r#"celeriac_redis_write_failures_total{{operation="result",{host}}}"#);
    assert_eq!(gauge(port, &failures), Some(0.0));
}

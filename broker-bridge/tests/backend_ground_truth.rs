//! Ground truth: a real Celery 5.7 worker runs a task against a private Redis; the meta it
//! stores must be what the Rust backend writes for the same outcome — same fields, order and
//! types, and the same bytes once the id-, time- and traceback-dependent values are aligned.

mod backend_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use backend_support::{keys_of, Env};
use celeriac_broker_bridge::backend::python_json;
use celeriac_broker_bridge::backend::{BackendOptions, ExceptionInfo, ExtendedMeta, TaskMeta};
use celeriac_testkit::{python, run_python};
use serde_json::{json, Value};

const TASKS: &str = r#"
import os
from celery import Celery
app = Celery("gt_tasks", broker=os.environ["GT_URL"], backend=os.environ["GT_URL"])
app.conf.result_extended = os.environ.get("GT_EXTENDED") == "1"

@app.task
def add(x, y):
    return x + y

@app.task
def boom():
    raise ValueError("boom")
"#;

const PRODUCER: &str = r#"
from gt_tasks import add, boom
add.apply_async((2, 3), task_id="gt-add").get(timeout=60)
boom.apply_async(task_id="gt-boom").get(timeout=60, propagate=False)
"#;

/// A `celery worker -P solo` subprocess, killed on drop.
struct PythonWorker(Child);

impl PythonWorker {
    fn start(dir: &Path, url: &str, extended: bool) -> Result<Self> {
        let child = Command::new(python()?)
            .args([
                "-m", "celery", "-A", "gt_tasks", "worker", "-P", "solo", "-c", "1",
            ])
            .args([
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ])
            .args(["-n", "gt@rust", "-l", "warning"])
            .current_dir(dir)
            .env("PYTHONPATH", dir)
            .env("GT_URL", url)
            .env("GT_EXTENDED", if extended { "1" } else { "0" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn celery worker")?;
        Ok(PythonWorker(child))
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run the two tasks on a real worker and return the raw metas (success, failure).
async fn python_metas(env: &mut Env, extended: bool) -> Result<(Vec<u8>, Vec<u8>)> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("gt_tasks.py"), TASKS)?;
    let _worker = PythonWorker::start(dir.path(), &env.url, extended)?;
    let pythonpath = dir.path().to_string_lossy().into_owned();
    run_python(
        PRODUCER,
        &[],
        &[("PYTHONPATH", &pythonpath), ("GT_URL", &env.url)],
    )?;
    let ok = env
        .raw("celery-task-meta-gt-add")
        .await?
        .context("no success meta")?;
    let fail = env
        .raw("celery-task-meta-gt-boom")
        .await?
        .context("no failure meta")?;
    Ok((ok, fail))
}

/// Same fields, order and JSON types; then the same bytes once `date_done` and `traceback`
/// are copied from Python's meta into ours.
fn assert_matches(python_raw: &[u8], ours: &TaskMeta, extended: bool) -> Result<()> {
    let py: Value = serde_json::from_slice(python_raw)?;
    assert_eq!(
        python_json::to_vec(&py),
        python_raw,
        "our JSON writer does not reproduce Python's bytes"
    );
    let mine = ours.to_json(extended);
    assert_eq!(
        keys_of(&mine),
        keys_of(&py),
        "field set/order\nours {mine}\npython {py}"
    );
    for k in keys_of(&py) {
        assert_eq!(json_type(&mine[&k]), json_type(&py[&k]), "type of {k}");
    }
    let mut aligned = ours.clone();
    aligned.date_done = py["date_done"]
        .as_str()
        .map(|s| chrono::DateTime::parse_from_rfc3339(s).map(|d| d.to_utc()))
        .transpose()?;
    aligned.traceback = py["traceback"].as_str().map(str::to_owned);
    assert_eq!(
        String::from_utf8(aligned.encode(extended))?,
        String::from_utf8(python_raw.to_vec())?
    );
    Ok(())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[tokio::test]
async fn success_and_failure_match_a_real_worker() -> Result<()> {
    let mut env = Env::start(BackendOptions::default()).await?;
    let (ok, fail) = python_metas(&mut env, false).await?;
    assert_matches(&ok, &TaskMeta::success("gt-add", json!(5)), false)?;
    let boom = ExceptionInfo::builtin("ValueError", "boom");
    let tb = Some("Traceback".to_owned());
    assert_matches(&fail, &TaskMeta::failure("gt-boom", &boom, tb), false)?;
    let py_ttl = env.ttl("celery-task-meta-gt-add").await?;
    env.backend
        .store(&TaskMeta::success("ours", json!(5)))
        .await?;
    let our_ttl = env.ttl("celery-task-meta-ours").await?;
    assert!(py_ttl > 86_000 && our_ttl > 86_000 && py_ttl <= 86_400 && our_ttl <= 86_400);
    Ok(())
}

#[tokio::test]
async fn extended_meta_matches_a_real_worker() -> Result<()> {
    let opts = BackendOptions {
        result_extended: true,
        ..BackendOptions::default()
    };
    let mut env = Env::start(opts).await?;
    let (ok, fail) = python_metas(&mut env, true).await?;
    let ext = |name: &str, args: Value| ExtendedMeta {
        name: Some(name.into()),
        args,
        kwargs: json!({}),
        worker: Some("gt@rust".into()),
        retries: Some(0),
        queue: Some("celery".into()),
        ..ExtendedMeta::default()
    };
    let success =
        TaskMeta::success("gt-add", json!(5)).with_extended(ext("gt_tasks.add", json!([2, 3])));
    assert_matches(&ok, &success, true)?;
    let boom = ExceptionInfo::builtin("ValueError", "boom");
    let failure = TaskMeta::failure("gt-boom", &boom, Some("tb".into()))
        .with_extended(ext("gt_tasks.boom", json!([])));
    assert_matches(&fail, &failure, true)?;
    Ok(())
}

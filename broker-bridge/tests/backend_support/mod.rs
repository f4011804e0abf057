//! Shared helpers of the `backend_*` tests: a private Redis, a Python `AsyncResult.get()` that
//! is provably blocked on pub/sub before we store, and small Redis reads.

#![allow(dead_code, unreachable_pub)] // shared by test binaries that each use a part

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use celeriac_broker_bridge::backend::{BackendOptions, ResultBackend};
use celeriac_testkit::{python, RedisServer};
use serde_json::Value;

/// Python: wait for one task's result with `AsyncResult(id).get()` and print what came back.
///
/// It sets the key `waiting:<id>` when it first enters the pub/sub wait (after `get()`'s initial
/// read found nothing), and reports whether the ready meta arrived as a pub/sub message.
const WAITER: &str = r#"
import json, sys
import redis
from celery import Celery

url, conf, tid = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
app = Celery("waiter", broker=url, backend=url)
app.conf.update(conf)
rc = app.backend.result_consumer
marker = redis.Redis.from_url(url)
via_pubsub = []
orig_state, orig_drain = rc.on_state_change, rc.drain_events

def on_state_change(meta, message):
    if message is not None and meta.get("task_id") == tid:
        via_pubsub.append(meta["status"])
    return orig_state(meta, message)

def drain_events(*a, **kw):
    marker.set("waiting:" + tid, 1)
    return orig_drain(*a, **kw)

rc.on_state_change = on_state_change
rc.drain_events = drain_events
r = app.AsyncResult(tid)
try:
    v = r.get(timeout=60)
    out = {"raised": None, "type": type(v).__name__, "repr": repr(v)}
except Exception as e:
    out = {"raised": type(e).__name__, "module": type(e).__module__, "str": str(e),
           "is_exception": isinstance(e, Exception)}
out.update(state=r.state, traceback=r.traceback, via_pubsub=via_pubsub)
print(json.dumps(out))
"#;

/// A Python process blocked in `AsyncResult(task_id).get()`.
pub struct Waiter {
    child: Option<Child>,
    task_id: String,
}

impl Waiter {
    /// Start Python waiting for `task_id`, with extra Celery settings (`conf` is a JSON object).
    pub fn spawn(redis_url: &str, conf: &Value, task_id: &str) -> Result<Self> {
        let child = Command::new(python()?)
            .args(["-c", WAITER, redis_url, &conf.to_string(), task_id])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn python waiter")?;
        Ok(Waiter {
            child: Some(child),
            task_id: task_id.to_owned(),
        })
    }

    /// Return once Python is blocked on pub/sub (its marker key is set); fails if it died.
    pub async fn until_listening(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let marker = format!("waiting:{}", self.task_id);
        loop {
            let set: bool = redis::cmd("EXISTS").arg(&marker).query_async(conn).await?;
            if set {
                return Ok(());
            }
            let child = self.child.as_mut().context("waiter already finished")?;
            if child.try_wait()?.is_some() {
                let out = self.child.take().context("waiter")?.wait_with_output()?;
                bail!(
                    "python waiter exited before listening:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if Instant::now() > deadline {
                bail!("python waiter for {} never started waiting", self.task_id);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait for Python to finish and return its report.
    pub fn finish(mut self) -> Result<Value> {
        let out = self.child.take().context("waiter")?.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "python waiter failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "waiter output is not JSON: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A private Redis with a connected backend and a plain connection for checks.
pub struct Env {
    pub server: RedisServer,
    pub url: String,
    pub backend: ResultBackend,
    pub conn: redis::aio::MultiplexedConnection,
}

impl Env {
    /// Start Redis and connect a backend with `opts`.
    pub async fn start(opts: BackendOptions) -> Result<Self> {
        let server = RedisServer::start()?;
        let url = server.url(0);
        let backend = ResultBackend::connect(&url, opts).await?;
        let conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(std::time::Duration::from_secs(30))),
            )
            .await?;
        Ok(Env {
            server,
            url,
            backend,
            conn,
        })
    }

    /// Raw bytes at `key`.
    pub async fn raw(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn)
            .await?)
    }

    /// TTL of `key` in seconds (-1 none, -2 missing).
    pub async fn ttl(&mut self, key: &str) -> Result<i64> {
        Ok(redis::cmd("TTL")
            .arg(key)
            .query_async(&mut self.conn)
            .await?)
    }
}

/// Keys of a JSON object, in order.
pub fn keys_of(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

//! Helpers shared by the transport tests: a private Redis, a raw connection for assertions,
//! and real Celery/kombu driven through the test venv.
#![allow(dead_code, unreachable_pub)] // shared by test binaries that each use a part

use anyhow::{Context, Result};
use celeriac_broker_bridge::transport::{Broker, TransportOptions};
use celeriac_testkit::{run_python, RedisServer};
use redis::aio::MultiplexedConnection;
use serde_json::Value;

/// A private Redis, a broker on it and a raw connection.
pub struct Env {
    pub server: RedisServer,
    pub url: String,
    pub broker: Broker,
    pub raw: MultiplexedConnection,
}

impl Env {
    pub async fn start(opts: Value) -> Result<Env> {
        let server = RedisServer::start()?;
        let url = server.url(0);
        let broker = Broker::connect(&url, TransportOptions::from_json(&opts)?).await?;
        let raw = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(std::time::Duration::from_secs(30))),
            )
            .await?;
        Ok(Env {
            server,
            url,
            broker,
            raw,
        })
    }

    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&[u8]]) -> Result<T> {
        let mut c = redis::cmd(std::str::from_utf8(args[0])?);
        for a in &args[1..] {
            c.arg(*a);
        }
        Ok(c.query_async(&mut self.raw.clone()).await?)
    }
}

/// Send tasks with a real Celery producer: each spec is `[task name, queue, priority, arg]`.
/// Prints nothing; returns the task ids in order.
pub fn celery_send(url: &str, opts: &Value, specs: &Value) -> Result<Vec<String>> {
    const SCRIPT: &str = r#"
import json, sys
from celery import Celery
app = Celery("producer", broker=sys.argv[1])
app.conf.broker_transport_options = json.loads(sys.argv[2])
for name, queue, priority, arg in json.loads(sys.argv[3]):
    r = app.send_task(name, args=[arg], queue=queue, priority=priority, ignore_result=True)
    print(r.id)
"#;
    let out = run_python(SCRIPT, &[url, &opts.to_string(), &specs.to_string()], &[])?;
    Ok(out.lines().map(str::to_string).collect())
}

/// Run a Python snippet with `URL` and `OPTS` (transport options, JSON) in its globals and
/// return what it prints.
pub fn py(url: &str, opts: &Value, body: &str) -> Result<String> {
    let script =
        format!("import json, sys\nURL = sys.argv[1]\nOPTS = json.loads(sys.argv[2])\n{body}\n");
    run_python(&script, &[url, &opts.to_string()], &[]).context("python snippet")
}

/// The task id (`headers.id`) of a raw envelope.
pub fn task_id(raw: &[u8]) -> String {
    let v: Value = serde_json::from_slice(raw).expect("envelope JSON");
    v["headers"]["id"].as_str().unwrap_or_default().to_string()
}

/// Whether a raw envelope carries kombu's redelivered flags.
pub fn redelivered(raw: &[u8]) -> bool {
    let v: Value = serde_json::from_slice(raw).expect("envelope JSON");
    v["headers"]["redelivered"] == Value::Bool(true)
        && v["properties"]["delivery_info"]["redelivered"] == Value::Bool(true)
}

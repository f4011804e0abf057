//! Shared helpers of the end-to-end tests: a private Redis, celeriac worker processes, Python
//! Celery (producer, result reader, fellow worker) from the test venv.
#![allow(dead_code, unreachable_pub)] // shared by test binaries that each use a part

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use celeriac_testkit::{python, workspace_root, RedisServer, TestPki};

pub mod scrape;

/// The folder of the Python side of the tests (`celery_app.py`).
pub fn python_dir() -> PathBuf {
    workspace_root().join("tests/python")
}

/// A test's world: a private Redis and the environment both sides read.
pub struct World {
    pub redis: RedisServer,
    pub env: Vec<(String, String)>,
    /// The URL of db 0 that [`World::redis`] connects to (with TLS files when the server is TLS).
    pub url: String,
    logs: tempfile::TempDir,
}

impl World {
    /// A private Redis on db 0 as broker and result backend; `extra_env` adds or overrides.
    pub fn new(extra_env: &[(&str, &str)]) -> World {
        let redis = RedisServer::start().expect("start redis");
        let url = redis.url(0);
        World::around(redis, url, extra_env)
    }

    /// A private TLS-only Redis with `pki`'s certificates, requiring client certificates; the
    /// broker and backend URL is `rediss://…?ssl_cert_reqs=required&ssl_ca_certs=…` with the
    /// client certificate, as Celery takes it.
    pub fn tls(pki: &TestPki, extra_env: &[(&str, &str)]) -> World {
        let redis = RedisServer::start_tls(pki, true).expect("start TLS redis");
        let url = redis.tls_url(0, &pki.ca_cert, Some((&pki.client_cert, &pki.client_key)));
        World::around(redis, url, extra_env)
    }

    /// `redis` as broker and result backend at `url`; `extra_env` adds or overrides.
    pub fn around(redis: RedisServer, url: String, extra_env: &[(&str, &str)]) -> World {
        let mut env = vec![
            ("CELERY_BROKER_URL".to_string(), url.clone()),
            ("CELERY_RESULT_BACKEND".to_string(), url.clone()),
        ];
        for (k, v) in extra_env {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        World {
            redis,
            env,
            url,
            logs: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A world over a Redis the test started itself (AOF on, a replica...), reached at
    /// `broker_url` (directly or through a fault proxy) by workers and producers;
    /// [`World::redis`] still connects to `redis` directly.
    pub fn over(redis: RedisServer, broker_url: &str, extra_env: &[(&str, &str)]) -> World {
        let mut env = vec![
            ("CELERY_BROKER_URL".to_string(), broker_url.to_string()),
            ("CELERY_RESULT_BACKEND".to_string(), broker_url.to_string()),
        ];
        for (k, v) in extra_env {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        World {
            url: redis.url(0),
            redis,
            env,
            logs: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A redis connection to the private server (over TLS when it is a TLS server).
    pub fn redis(&self) -> redis::Connection {
        celeriac_worker::__private::install_crypto_provider();
        celeriac_broker_bridge::redis_url::parse(&self.url)
            .expect("the world's URL parses")
            .client()
            .expect("a redis client for the world's URL")
            .get_connection()
            .expect("connect to the private redis")
    }

    /// A folder for files of this test (removed with the world).
    pub fn dir(&self) -> &Path {
        self.logs.path()
    }

    /// Start a celeriac test worker with extra flags; waits until it is consuming.
    pub fn celeriac(&self, name: &str, args: &[&str]) -> Proc {
        let mut p = self.celeriac_started(name, args);
        p.wait_for_log("celeriac worker ready", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
        p
    }

    /// Start a celeriac test worker (JSON logs, level INFO unless `args` say otherwise) without
    /// waiting for anything.
    pub fn celeriac_started(&self, name: &str, args: &[&str]) -> Proc {
        let log = self.logs.path().join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac-test-worker"));
        cmd.args(["-n", &format!("{name}@test"), "-l", "INFO"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("CELERIAC_LOG_FORMAT", "json");
        Proc::spawn(name, cmd, log)
    }

    /// Start a Python Celery worker (solo pool) on the same Redis; waits until it is ready.
    pub fn python_worker(&self, name: &str, queues: &str) -> Proc {
        self.python_worker_with(&python().expect("test venv"), name, queues)
    }

    /// [`World::python_worker`] with another venv's interpreter (e.g. Celery 5.3.6).
    pub fn python_worker_with(&self, python: &Path, name: &str, queues: &str) -> Proc {
        let log = self.logs.path().join(format!("{name}.log"));
        let mut cmd = Command::new(python);
        cmd.args(["-m", "celery", "-A", "celery_app", "worker", "-P", "solo"])
            .args(["-Q", queues, "-n", &format!("{name}@test"), "-l", "INFO"])
            .args([
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ])
            .current_dir(python_dir())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut p = Proc::spawn(name, cmd, log);
        p.wait_for_log("ready.", Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        p
    }

    /// Start `python <args>` in the background (`celery_app` importable, the world's environment).
    pub fn python_process(&self, name: &str, args: &[&str]) -> Proc {
        let log = self.logs.path().join(format!("{name}.log"));
        let mut cmd = Command::new(python().expect("test venv"));
        cmd.args(args)
            .current_dir(python_dir())
            .env("PYTHONPATH", python_dir())
            .env("PYTHONUNBUFFERED", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        Proc::spawn(name, cmd, log)
    }

    /// Run a Python snippet with `celery_app` importable and the world's environment.
    pub fn py(&self, script: &str) -> String {
        self.try_py(script).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`World::py`] returning errors.
    pub fn try_py(&self, script: &str) -> Result<String> {
        self.try_py_with(&python()?, script)
    }

    /// [`World::py`] with another venv's interpreter (e.g. Celery 5.3.6).
    pub fn py_with(&self, python: &Path, script: &str) -> String {
        self.try_py_with(python, script)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn try_py_with(&self, python: &Path, script: &str) -> Result<String> {
        let out = Command::new(python)
            .arg("-c")
            .arg(script)
            .current_dir(python_dir())
            .env("PYTHONPATH", python_dir())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .context("run python")?;
        if !out.status.success() {
            bail!(
                "python failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

/// A SQLite database with one ticket, and a worker TOML declaring the query task `q.get_ticket`
/// over it; `cache` is the body of its `[cache]` table.
pub fn query_task_config(world: &World, cache: &str) -> std::path::PathBuf {
    let db = world.dir().join("tickets.db");
    world.py(&format!(
        r#"
import sqlite3
c = sqlite3.connect({db:?})
c.execute("CREATE TABLE tickets (id INTEGER PRIMARY KEY, title TEXT NOT NULL)")
c.execute("INSERT INTO tickets VALUES (1, 'printer on fire')")
c.commit()
"#,
        db = db.display().to_string()
    ));
    let path = world.dir().join("worker.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[cache]
{cache}

[sources.main]
url = "sqlite://{db}"

[[tasks]]
name = "q.get_ticket"
source = "main"
sql = "SELECT id, title FROM tickets WHERE id = :ticket_id"
params = ["ticket_id"]
key = "ticket:{{ticket_id}}"
ttl = 300
result = "one"
"#,
            db = db.display()
        ),
    )
    .unwrap();
    path
}

/// A child process whose output goes to a log file.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Start `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before logging {needle:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} did not log {needle:?} in {timeout:?}:\n{}",
            self.name,
            self.log()
        )
    }

    /// Send a signal (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} still running after {timeout:?}:\n{}",
            self.name,
            self.log()
        )
    }

    /// The log file path.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The events a `tests/python/event_receiver.py` log holds (one JSON object a line).
pub fn events_of(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The first event of type `kind` (for task `uuid`, when given).
pub fn find_event<'a>(
    events: &'a [serde_json::Value],
    kind: &str,
    uuid: Option<&str>,
) -> Option<&'a serde_json::Value> {
    events
        .iter()
        .find(|e| e["event"]["type"] == kind && uuid.is_none_or(|u| e["event"]["uuid"] == u))
}

impl World {
    /// Start `tests/python/event_receiver.py` and wait until its subscription is live.
    pub fn event_receiver(&self) -> Proc {
        let mut receiver = self.python_process("receiver", &["event_receiver.py"]);
        receiver
            .wait_for_log("LISTENING", Duration::from_secs(30))
            .expect("the receiver subscribes");
        receiver
    }
}

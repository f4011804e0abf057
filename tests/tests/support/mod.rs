//! Shared helpers of the end-to-end tests: a private Redis, celeriac worker processes, Python
//! Celery (producer, result reader, fellow worker) from the test venv.
#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use celeriac_testkit::{python, workspace_root, RedisServer};

/// The folder of the Python side of the tests (`celery_app.py`).
pub fn python_dir() -> PathBuf {
    workspace_root().join("tests/python")
}

/// A test's world: a private Redis and the environment both sides read.
pub struct World {
    pub redis: RedisServer,
    pub env: Vec<(String, String)>,
    logs: tempfile::TempDir,
}

impl World {
    /// A private Redis on db 0 as broker and result backend; `extra_env` adds or overrides.
    pub fn new(extra_env: &[(&str, &str)]) -> World {
        let redis = RedisServer::start().expect("start redis");
        let mut env = vec![
            ("CELERY_BROKER_URL".to_string(), redis.url(0)),
            ("CELERY_RESULT_BACKEND".to_string(), redis.url(0)),
        ];
        for (k, v) in extra_env {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        World {
            redis,
            env,
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
            redis,
            env,
            logs: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A redis connection to the private server.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(self.redis.url(0))
            .and_then(|c| c.get_connection())
            .expect("connect to the private redis")
    }

    /// Start a celeriac test worker with extra flags; waits until it is consuming.
    pub fn celeriac(&self, name: &str, args: &[&str]) -> Proc {
        let log = self.logs.path().join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac-test-worker"));
        cmd.args(["-n", &format!("{name}@test"), "-l", "INFO"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("CELERIAC_LOG_FORMAT", "json");
        let mut p = Proc::spawn(name, cmd, log);
        p.wait_for_log("celeriac worker ready", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
        p
    }

    /// Start a Python Celery worker (solo pool) on the same Redis; waits until it is ready.
    pub fn python_worker(&self, name: &str, queues: &str) -> Proc {
        let log = self.logs.path().join(format!("{name}.log"));
        let mut cmd = Command::new(python().expect("test venv"));
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
        let out = Command::new(python()?)
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

/// A child process whose output goes to a log file.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
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

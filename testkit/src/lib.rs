//! Test harness shared by every crate's tests.
//!
//! * [`RedisServer`] starts a private `redis-server` on a free loopback port and kills it on drop,
//!   so tests run in parallel and never touch a server they did not start.
//! * [`python`] finds the interpreter of the test venv that `scripts/test` creates with real Celery;
//!   [`python_celery536`] the one of its Celery 5.3.6 venv.
//! * [`workspace_root`] and [`fixtures_dir`] locate committed data.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives one level below the workspace root")
        .to_path_buf()
}

/// The folder of committed wire fixtures captured from real Celery.
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("proto-fixtures").join("fixtures")
}

/// A free TCP port on 127.0.0.1 (the OS picks it; a tiny race is possible, callers retry).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Path of the Python interpreter in the test venv (real Celery installed from PyPI).
///
/// `CELERIAC_TEST_PYTHON` overrides; the default is `<workspace>/.venv-test/bin/python`, which
/// `scripts/test` creates. Fails with a clear message when the venv is missing.
pub fn python() -> Result<PathBuf> {
    let path = std::env::var_os("CELERIAC_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-test/bin/python"));
    if !path.exists() {
        bail!(
            "the test venv's python is missing at {} — run scripts/test (it creates the venv with real Celery)",
            path.display()
        );
    }
    Ok(path)
}

/// Path of the Python interpreter of the Celery 5.3.6 venv (`.venv-celery536`, made by
/// `scripts/test` from `proto-fixtures/requirements-5.3.txt`), for mixed-version tests.
/// `CELERIAC_TEST_PYTHON_CELERY536` overrides.
pub fn python_celery536() -> Result<PathBuf> {
    let path = std::env::var_os("CELERIAC_TEST_PYTHON_CELERY536")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-celery536/bin/python"));
    if !path.exists() {
        bail!(
            "the Celery 5.3.6 venv's python is missing at {} — run scripts/test (it creates the venv)",
            path.display()
        );
    }
    Ok(path)
}

/// A private `redis-server` on a free port, killed when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start a server with no persistence and wait until it answers.
    pub fn start() -> Result<Self> {
        Self::start_with_args(&[])
    }

    /// Start a server with extra `redis-server` arguments (e.g. `["--appendonly", "yes"]`).
    pub fn start_with_args(extra: &[&str]) -> Result<Self> {
        let mut last_err = None;
        for _ in 0..5 {
            match Self::try_start(extra) {
                Ok(s) => return Ok(s),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn try_start(extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = Self::spawn(port, dir.path(), &extra)?;
        let mut server = RedisServer {
            child,
            port,
            extra,
            dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn spawn(port: u16, dir: &Path, extra: &[String]) -> Result<Child> {
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn redis-server (is it installed? scripts/test installs it)")
    }

    /// Kill the server and start a new one on the same port and data folder (what a Redis
    /// restart looks like to clients).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.child = Self::spawn(self.port, self.dir.path(), &self.extra)?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("redis-server on port {} exited early: {status}", self.port);
            }
            let ok = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "PING"])
                .output()
                .map(|o| o.stdout.starts_with(b"PONG"))
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("redis-server on port {} did not answer PING", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{}", self.port, db)
    }

    /// Kill the server abruptly (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run a Python snippet with the test venv's interpreter; returns stdout, fails on non-zero exit
/// with stderr in the error.
pub fn run_python(script: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let out = Command::new(python()?)
        .arg("-c")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_redis_answers_and_dies_on_drop() {
        let server = RedisServer::start().unwrap();
        let port = server.port();
        let pong = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "PING"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&pong.stdout).trim(), "PONG");
        drop(server);
        let after = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "PING"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&after.stdout).contains("PONG"));
    }
}

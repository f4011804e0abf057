//! Test harness shared by every crate's tests.
//!
//! * [`RedisServer`] starts a private `redis-server` on a free loopback port and kills it on drop,
//!   so tests run in parallel and never touch a server they did not start.
//! * [`RedisServer::start_tls`] starts one that speaks only TLS, with certificates from
//!   [`TestPki`] (made at test time), optionally requiring client certificates.
//! * [`PostgresServer`] and [`MariaDbServer`] run private database servers on free ports (as the
//!   `postgres`/`mysql` user when root), optionally TLS-only, stopped on drop.
//! * [`MotoServer`] runs moto's SQS emulator (server mode, from the test venv) on a free port.
//! * [`python`] finds the interpreter of the test venv that `scripts/test` creates with real Celery;
//!   [`python_celery536`] the one of its Celery 5.3.6 venv, [`python_exporter`] celery-exporter's.
//! * [`workspace_root`] and [`fixtures_dir`] locate committed data.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod mariadb;
mod moto;
mod postgres;
mod redis_cluster;
mod server_user;
mod tls;
pub use mariadb::MariaDbServer;
pub use moto::MotoServer;
pub use postgres::PostgresServer;
pub use redis_cluster::{ClusterNode, RedisCluster, SlotMove};
pub use tls::TestPki;

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

/// Path of the Python interpreter of the celery-exporter venv (`.venv-exporter`, made by
/// `scripts/test` from `tests/requirements-exporter.txt`). `CELERIAC_TEST_PYTHON_EXPORTER`
/// overrides.
pub fn python_exporter() -> Result<PathBuf> {
    let path = std::env::var_os("CELERIAC_TEST_PYTHON_EXPORTER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-exporter/bin/python"));
    if !path.exists() {
        bail!(
            "the celery-exporter venv's python is missing at {} — run scripts/test (it creates the venv)",
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
    tls: Option<TlsSetup>,
}

/// The PEM files a TLS server uses and the client files `redis-cli` checks it with.
#[derive(Clone)]
struct TlsSetup {
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    auth_clients: bool,
}

impl TlsSetup {
    fn server_args(&self, port: u16) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path(&self.server_cert),
            "--tls-key-file".into(),
            path(&self.server_key),
            "--tls-ca-cert-file".into(),
            path(&self.ca_cert),
            "--tls-auth-clients".into(),
            if self.auth_clients { "yes" } else { "no" }.into(),
        ]
    }

    fn cli_args(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        vec![
            "--tls".into(),
            "--cacert".into(),
            path(&self.ca_cert),
            "--cert".into(),
            path(&self.client_cert),
            "--key".into(),
            path(&self.client_key),
        ]
    }
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

    /// Start a server that speaks only TLS on its port, with `pki`'s server certificate; with
    /// `require_client_certs` it refuses clients without a certificate signed by `pki`'s CA
    /// (`--tls-auth-clients yes`). Connect with [`RedisServer::tls_url`].
    pub fn start_tls(pki: &TestPki, require_client_certs: bool) -> Result<Self> {
        let tls = TlsSetup {
            ca_cert: pki.ca_cert.clone(),
            server_cert: pki.server_cert.clone(),
            server_key: pki.server_key.clone(),
            client_cert: pki.client_cert.clone(),
            client_key: pki.client_key.clone(),
            auth_clients: require_client_certs,
        };
        let mut last_err = None;
        for _ in 0..5 {
            match Self::try_start_with(&[], Some(tls.clone())) {
                Ok(s) => return Ok(s),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn try_start(extra: &[&str]) -> Result<Self> {
        Self::try_start_with(extra, None)
    }

    fn try_start_with(extra: &[&str], tls: Option<TlsSetup>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = Self::spawn(port, dir.path(), &extra, tls.as_ref())?;
        let mut server = RedisServer {
            child,
            port,
            extra,
            dir,
            tls,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn spawn(port: u16, dir: &Path, extra: &[String], tls: Option<&TlsSetup>) -> Result<Child> {
        let listen = match tls {
            Some(tls) => tls.server_args(port),
            None => vec!["--port".into(), port.to_string()],
        };
        Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", ""])
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
        self.child = Self::spawn(self.port, self.dir.path(), &self.extra, self.tls.as_ref())?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("redis-server on port {} exited early: {status}", self.port);
            }
            // Ready when *this* server answers: the port was free when picked, but a server
            // another test started on it meanwhile would answer a PING too.
            let ours = format!("process_id:{}", self.child.id());
            let ok = Command::new("redis-cli")
                .args(self.tls.iter().flat_map(TlsSetup::cli_args))
                .args(["-p", &self.port.to_string(), "INFO", "server"])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .any(|l| l.trim() == ours)
                })
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

    /// `rediss://127.0.0.1:<port>/<db>` with Celery's TLS query arguments: certificates
    /// verified against `ca` (`ssl_cert_reqs=required&ssl_ca_certs=…`) and, when given, a client
    /// certificate and key (`ssl_certfile`, `ssl_keyfile`).
    pub fn tls_url(&self, db: u8, ca: &Path, client: Option<(&Path, &Path)>) -> String {
        let mut url = format!(
            "rediss://127.0.0.1:{}/{}?ssl_cert_reqs=required&ssl_ca_certs={}",
            self.port,
            db,
            ca.display()
        );
        if let Some((cert, key)) = client {
            url.push_str(&format!(
                "&ssl_certfile={}&ssl_keyfile={}",
                cert.display(),
                key.display()
            ));
        }
        url
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

    #[test]
    fn tls_redis_refuses_plain_text_and_clients_without_a_certificate() {
        let pki = TestPki::generate("testkit").unwrap();
        let server = RedisServer::start_tls(&pki, true).unwrap();
        let port = server.port().to_string();
        let ping = |args: &[&str]| {
            let out = Command::new("redis-cli")
                .args(args)
                .args(["-p", &port, "PING"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("PONG")
        };
        let ca = pki.ca_cert.display().to_string();
        let cert = pki.client_cert.display().to_string();
        let key = pki.client_key.display().to_string();
        assert!(ping(&[
            "--tls", "--cacert", &ca, "--cert", &cert, "--key", &key
        ]));
        assert!(!ping(&[]), "plain text answered");
        assert!(
            !ping(&["--tls", "--cacert", &ca]),
            "no client certificate answered"
        );
    }
}

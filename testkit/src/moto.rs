//! A private SQS emulator: moto in server mode (from the test venv), on a free loopback port.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// moto's server (`python -m moto.server`) on a free port, killed when dropped. It accepts any
/// credentials; its account id is `123456789012`.
pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Start it with the test venv's python and wait until it accepts connections.
    pub fn start() -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start() {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn try_start() -> Result<Self> {
        let port = crate::free_port();
        let mut child = Command::new(crate::python()?)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start moto server (tests/requirements.txt has moto[server])")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                bail!("moto server exited at start ({status})");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(MotoServer { child, port });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("moto server did not listen on {port} within 30 s")
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker URL Celery and celeriac use for it (static test credentials; plain HTTP, as
    /// kombu uses for a custom endpoint without `is_secure`).
    pub fn broker_url(&self) -> String {
        format!("sqs://testing:testing@127.0.0.1:{}", self.port)
    }

    /// Its endpoint URL, for boto3.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

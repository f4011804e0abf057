//! Reading a worker's HTTP endpoints, and a private Prometheus scraping it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use celeriac_testkit::free_port;
use serde_json::Value;

use super::Proc;

/// GET `path` on the local `port`: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The port the worker's metrics server bound (it is started with port 0).
pub fn metrics_port(w: &Proc) -> u16 {
    w.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "metrics server listening")
        .and_then(|v| v["addr"].as_str()?.rsplit(':').next()?.parse().ok())
        .expect("the worker logs its metrics address")
}

/// A Prometheus server (Debian's `prometheus`) on a private port with a temporary config and
/// storage, scraping one target every second as job `celeriac`; killed when dropped.
pub struct Prometheus {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Start one scraping `127.0.0.1:target`.
    pub fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: celeriac\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("prometheus (Debian package prometheus)");
        Prometheus { port, child, dir }
    }

    /// The API's answer to an instant query of `promql` (None until the server answers 200).
    pub fn query(&self, promql: &str) -> Option<Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={encoded}"))?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

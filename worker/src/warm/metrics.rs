//! Metrics of `celeriac warm` for a CronJob: `celeriac_warm_last_success_timestamp_seconds`,
//! `celeriac_warm_last_run_complete`, `celeriac_warm_rows_total`,
//! `celeriac_warm_duration_seconds` (label `job`), written to a Prometheus textfile and/or pushed
//! to a Pushgateway (`PUT <url>/metrics/job/celeriac_warm`).
//!
//! The last-success timestamp is the job's stored one (the state in Redis), so a run that did not
//! complete (time budget, error) re-exposes the previous success instead of claiming one or
//! dropping the series.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The run's metrics.
pub struct WarmMetrics {
    registry: Registry,
    last_success: GaugeVec,
    complete: GaugeVec,
    rows: IntCounterVec,
    duration: GaugeVec,
}

impl Default for WarmMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WarmMetrics {
    /// Empty metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let last_success = GaugeVec::new(
            Opts::new(
                "celeriac_warm_last_success_timestamp_seconds",
                "Unix time of the last complete warm run of the job.",
            ),
            &["job"],
        )
        .expect("valid metric");
        let complete = GaugeVec::new(
            Opts::new(
                "celeriac_warm_last_run_complete",
                "1 when the job's last run completed, 0 when it stopped early (time budget, error).",
            ),
            &["job"],
        )
        .expect("valid metric");
        let rows = IntCounterVec::new(
            Opts::new("celeriac_warm_rows_total", "Rows read by the warm run."),
            &["job"],
        )
        .expect("valid metric");
        let duration = GaugeVec::new(
            Opts::new(
                "celeriac_warm_duration_seconds",
                "Duration of the warm run.",
            ),
            &["job"],
        )
        .expect("valid metric");
        for c in [
            Box::new(last_success.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(complete.clone()),
            Box::new(rows.clone()),
            Box::new(duration.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        WarmMetrics {
            registry,
            last_success,
            complete,
            rows,
            duration,
        }
    }

    /// Record one job's run: whether it completed, and when the job last completed (unix ms;
    /// `None`: never, and the series is left out).
    pub fn record(
        &mut self,
        job: &str,
        rows: u64,
        took: Duration,
        complete: bool,
        last_success_ms: Option<u64>,
    ) {
        self.rows.with_label_values(&[job]).inc_by(rows);
        self.duration
            .with_label_values(&[job])
            .set(took.as_secs_f64());
        self.complete
            .with_label_values(&[job])
            .set(if complete { 1.0 } else { 0.0 });
        if let Some(ms) = last_success_ms {
            self.last_success
                .with_label_values(&[job])
                .set(ms as f64 / 1000.0);
        }
    }

    /// Re-expose the stored last success of a job this run did not work on (another run held
    /// its lock), so a push does not drop the series.
    pub fn keep_last_success(&mut self, job: &str, last_success_ms: Option<u64>) {
        if let Some(ms) = last_success_ms {
            self.last_success
                .with_label_values(&[job])
                .set(ms as f64 / 1000.0);
        }
    }

    /// The Prometheus text exposition.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Write the textfile atomically (temporary file, then rename).
    pub fn write_textfile(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("prom.tmp");
        std::fs::write(&tmp, self.text())?;
        std::fs::rename(&tmp, path)
    }

    /// `PUT` to a Pushgateway at `url` (`http://host:port`; plain HTTP).
    pub async fn push(&self, url: &str) -> anyhow::Result<()> {
        let rest = url
            .strip_prefix("http://")
            .context("CELERIAC_WARM_PUSHGATEWAY_URL must be an http:// URL")?;
        let (authority, base) = rest.split_once('/').unwrap_or((rest, ""));
        let base = base.trim_end_matches('/');
        let path = if base.is_empty() {
            "/metrics/job/celeriac_warm".to_owned()
        } else {
            format!("/{base}/metrics/job/celeriac_warm")
        };
        let addr = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let body = self.text();
        let request = format!(
            "PUT {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(&addr).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        let reply = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .context("Pushgateway timed out")??;
        let status = String::from_utf8_lossy(&reply);
        let line = status.lines().next().unwrap_or_default();
        if line
            .split_whitespace()
            .nth(1)
            .is_some_and(|c| c.starts_with('2'))
        {
            Ok(())
        } else {
            anyhow::bail!("Pushgateway answered `{line}`")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_series() {
        let mut m = WarmMetrics::new();
        m.record(
            "q.get",
            42,
            Duration::from_millis(1500),
            true,
            Some(1_700_000_000_500),
        );
        m.record("q.never", 1, Duration::from_secs(1), false, None);
        let text = m.text();
        assert!(
            text.contains("celeriac_warm_rows_total{job=\"q.get\"} 42"),
            "{text}"
        );
        assert!(text.contains("celeriac_warm_duration_seconds{job=\"q.get\"} 1.5"));
        assert!(
            text.contains(
                "celeriac_warm_last_success_timestamp_seconds{job=\"q.get\"} 1700000000.5"
            ),
            "{text}"
        );
        assert!(text.contains("celeriac_warm_last_run_complete{job=\"q.get\"} 1"));
        assert!(text.contains("celeriac_warm_last_run_complete{job=\"q.never\"} 0"));
        assert!(!text.contains("celeriac_warm_last_success_timestamp_seconds{job=\"q.never\"}"));
    }
}

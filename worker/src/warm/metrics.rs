//! Metrics of `celeriac warm` for a CronJob: `celeriac_warm_last_success_timestamp_seconds`,
//! `celeriac_warm_last_run_complete`, `celeriac_warm_rows_total`,
//! `celeriac_warm_duration_seconds` (label `warm_job`: the `[[warm]]` entry's task name; not `job`,
//! which the Pushgateway's grouping key and the scrape job own), written to a Prometheus textfile
//! and/or pushed to a Pushgateway (`PUT <url>/metrics/job/celeriac_warm`).
//!
//! The last-success timestamp is the job's stored one (the state in Redis), so a run that did not
//! complete (time budget, error) re-exposes the previous success instead of claiming one or
//! dropping the series.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};

/// The label naming the `[[warm]]` entry.
pub(crate) const LABEL: &str = "warm_job";

/// The run's metrics.
pub(crate) struct WarmMetrics {
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
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let last_success = GaugeVec::new(
            Opts::new(
                "celeriac_warm_last_success_timestamp_seconds",
                "Unix time of the last complete warm run of the job.",
            ),
            &[LABEL],
        )
        .expect("valid metric");
        let complete = GaugeVec::new(
            Opts::new(
                "celeriac_warm_last_run_complete",
                "1 when the job's last run completed, 0 when it stopped early (time budget, error).",
            ),
            &[LABEL],
        )
        .expect("valid metric");
        let rows = IntCounterVec::new(
            Opts::new("celeriac_warm_rows_total", "Rows read by the warm run."),
            &[LABEL],
        )
        .expect("valid metric");
        let duration = GaugeVec::new(
            Opts::new(
                "celeriac_warm_duration_seconds",
                "Duration of the warm run.",
            ),
            &[LABEL],
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
    pub(crate) fn record(
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
    pub(crate) fn keep_last_success(&mut self, job: &str, last_success_ms: Option<u64>) {
        if let Some(ms) = last_success_ms {
            self.last_success
                .with_label_values(&[job])
                .set(ms as f64 / 1000.0);
        }
    }

    /// The Prometheus text exposition.
    pub(crate) fn text(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Write the textfile atomically (temporary file, then rename).
    pub(crate) fn write_textfile(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("prom.tmp");
        std::fs::write(&tmp, self.text())?;
        std::fs::rename(&tmp, path)
    }

    /// `PUT` the exposition to the Pushgateway at `url` (`http://` or `https://`, a path prefix
    /// allowed), replacing the group `job="celeriac_warm"` (the grouping key is in the URL path,
    /// `/metrics/job/celeriac_warm`). Credentials in the URL (`https://user:pass@host`) are sent
    /// as basic auth; `bearer_token` as `Authorization: Bearer`; `ca_file` (PEM) is trusted
    /// besides the system's roots.
    pub(crate) async fn push(
        &self,
        url: &str,
        bearer_token: Option<&str>,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<()> {
        let mut target = reqwest::Url::parse(url)
            .with_context(|| "CELERIAC_WARM_PUSHGATEWAY_URL is not a URL".to_owned())?;
        if !matches!(target.scheme(), "http" | "https") {
            anyhow::bail!("CELERIAC_WARM_PUSHGATEWAY_URL must be an http:// or https:// URL");
        }
        let user = target.username().to_owned();
        let password = target.password().map(str::to_owned);
        let _ = target.set_username("");
        let _ = target.set_password(None);
        let base = target.path().trim_end_matches('/').to_owned();
        target.set_path(&format!("{base}/metrics/job/{PUSH_JOB}"));
        crate::connection::install_crypto_provider();
        let mut client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("celeriac/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the Pushgateway CA {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: not PEM certificates", path.display()))?
            {
                client = client.add_root_certificate(cert);
            }
        }
        let mut request = client
            .build()
            .context("Pushgateway client")?
            .put(target.clone())
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(self.text());
        if !user.is_empty() || password.is_some() {
            let decode = |s: &str| {
                percent_decode(s).with_context(|| "bad percent-encoding in the URL's credentials")
            };
            request =
                request.basic_auth(decode(&user)?, password.as_deref().map(decode).transpose()?);
        }
        if let Some(token) = bearer_token {
            request = request.bearer_auth(token);
        }
        let reply = request
            .send()
            .await
            .with_context(|| format!("Pushgateway {}", target.origin().ascii_serialization()))?;
        let status = reply.status();
        if status.is_success() {
            Ok(())
        } else {
            let body = reply.text().await.unwrap_or_default();
            anyhow::bail!("Pushgateway answered {status}: {}", body.trim())
        }
    }
}

/// The Pushgateway group (`job` label) the warm run replaces at each push.
pub(crate) const PUSH_JOB: &str = "celeriac_warm";

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
            text.contains("celeriac_warm_rows_total{warm_job=\"q.get\"} 42"),
            "{text}"
        );
        assert!(text.contains("celeriac_warm_duration_seconds{warm_job=\"q.get\"} 1.5"));
        assert!(
            text.contains(
                "celeriac_warm_last_success_timestamp_seconds{warm_job=\"q.get\"} 1700000000.5"
            ),
            "{text}"
        );
        assert!(text.contains("celeriac_warm_last_run_complete{warm_job=\"q.get\"} 1"));
        assert!(text.contains("celeriac_warm_last_run_complete{warm_job=\"q.never\"} 0"));
        assert!(
            !text.contains("celeriac_warm_last_success_timestamp_seconds{warm_job=\"q.never\"}")
        );
    }
}

//! Progress of a warm run: an indicatif bar on a terminal (rows, rows/s, ETA), structured log
//! lines (at most every 5 s) otherwise.

use std::time::{Duration, Instant};

use celeriac_cache::warm::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// Shows one job's progress.
pub(crate) struct Reporter {
    job: String,
    bar: Option<ProgressBar>,
    last_log: Instant,
    started: Instant,
}

impl Reporter {
    /// A reporter for `job`; a bar when `terminal`.
    pub(crate) fn new(job: &str, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} rows {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(job.to_owned());
            bar
        });
        Reporter {
            job: job.to_owned(),
            bar,
            last_log: Instant::now(),
            started: Instant::now(),
        }
    }

    /// After every page.
    pub(crate) fn update(&mut self, p: &Progress) {
        if let Some(bar) = &self.bar {
            if let Some(total) = p.total {
                bar.set_length(total.max(p.rows));
            } else {
                bar.set_length(p.rows);
            }
            bar.set_position(p.rows);
            return;
        }
        if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            let rate = p.rows as f64 / secs;
            let eta = p
                .total
                .filter(|_| rate > 0.0)
                .map(|t| (t.saturating_sub(p.rows)) as f64 / rate);
            tracing::info!(
                job = %self.job,
                pass = %p.pass,
                rows = p.rows,
                total = p.total,
                written = p.written,
                deleted = p.deleted,
                rows_per_second = rate.round(),
                eta_seconds = eta.map(f64::round),
                "warm progress"
            );
        }
    }

    /// The run ended.
    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

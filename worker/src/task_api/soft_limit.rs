//! The soft time limit as a task sees it: the per-run [`Signals`] kept in its [`TaskContext`] and
//! the [`SoftTimeLimitExceeded`] error (Celery's `billiard.exceptions.SoftTimeLimitExceeded`).
//! The worker's side (resolving limits, supervising a run) is `message::time_limits`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::task_api::{PyException, TaskError};

/// The time-limit state of one run (kept in its [`TaskContext`]).
#[derive(Debug, Clone, Default)]
pub struct Signals {
    pub(crate) soft: CancellationToken,
    pub(crate) hard: CancellationToken,
    /// How many [`TaskContext::catch_soft_time_limit`] are running.
    pub(crate) catching: Arc<AtomicUsize>,
    /// Set once the soft limit was raised (in a catch, by the worker, or left to polling code).
    pub(crate) raised: Arc<AtomicBool>,
    /// Woken when a catch ends.
    pub(crate) released: Arc<Notify>,
}

impl Signals {
    /// Resolves when the soft limit passes (never when there is none).
    pub(crate) async fn soft(&self) {
        self.soft.cancelled().await
    }

    /// Whether the soft limit has passed.
    pub(crate) fn soft_passed(&self) -> bool {
        self.soft.is_cancelled()
    }

    /// Whether the hard limit has passed.
    pub(crate) fn hard_passed(&self) -> bool {
        self.hard.is_cancelled()
    }

    /// Takes the one raise of the soft limit; false when it was already raised.
    pub(crate) fn raise(&self) -> bool {
        !self.raised.swap(true, Ordering::SeqCst)
    }

    /// Runs `fut`; if the soft limit passes first (and was not raised yet), `fut` is dropped and
    /// the result is `Err(SoftTimeLimitExceeded)`.
    pub(crate) async fn catch<F: Future>(
        &self,
        fut: F,
    ) -> Result<F::Output, SoftTimeLimitExceeded> {
        self.catching.fetch_add(1, Ordering::SeqCst);
        let _release = Release(self);
        let raised = async {
            self.soft.cancelled().await;
            if !self.raise() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            biased;
            out = fut => Ok(out),
            () = raised => Err(SoftTimeLimitExceeded),
        }
    }

    /// After the soft limit passed: resolves when the worker must stop the run (no catch took
    /// the raise); never when a catch took it.
    pub(crate) async fn uncaught(&self) {
        loop {
            if self.raised.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let released = self.released.notified();
            if self.catching.load(Ordering::SeqCst) == 0 && self.raise() {
                return;
            }
            released.await;
        }
    }
}

struct Release<'a>(&'a Signals);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.catching.fetch_sub(1, Ordering::SeqCst);
        self.0.released.notify_one();
    }
}

/// Celery's `billiard.exceptions.SoftTimeLimitExceeded()`, raised in a task at its soft time
/// limit. As a [`TaskError`] (with `?`) the run fails with it, as in Celery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftTimeLimitExceeded;

impl std::fmt::Display for SoftTimeLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftTimeLimitExceeded()")
    }
}

impl std::error::Error for SoftTimeLimitExceeded {}

impl From<SoftTimeLimitExceeded> for PyException {
    fn from(_: SoftTimeLimitExceeded) -> Self {
        PyException {
            exc_type: "SoftTimeLimitExceeded".into(),
            exc_module: "billiard.exceptions".into(),
            args: vec![],
        }
    }
}

impl From<SoftTimeLimitExceeded> for TaskError {
    fn from(e: SoftTimeLimitExceeded) -> Self {
        TaskError::Fail(e.into())
    }
}

//! Retrying a Redis write across a reconnect: after a Redis restart the first command on the old
//! connection fails, the connection manager reconnects, and a later attempt succeeds. Attempts go
//! on for [`BUDGET`], long enough for a Redis restart (AOF reload) or a replica promotion, so a
//! task's result or ack is not given up while Redis is briefly away.

use std::future::Future;
use std::time::Duration;

/// How long failing attempts go on before giving up.
pub(crate) const BUDGET: Duration = Duration::from_secs(30);

/// A Redis write that is retried across reconnects. Its label names it in
/// `celeriac_redis_write_retries_total` and `celeriac_redis_write_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// Acking a message (removing it from `unacked`).
    Ack,
    /// Storing a task state (result, failure, chain step or chord body failure).
    Result,
    /// Returning a chord member's result to its chord.
    ChordPart,
    /// Extending the claim on a complete chord before publishing its body.
    ChordClaim,
    /// Cleaning up a chord after its body was published.
    ChordCleanup,
    /// Storing a chord's size before its header is published.
    ChordSize,
    /// Publishing a canvas message (chain step, chord header, callback).
    CanvasMessage,
    /// Publishing a task's retry.
    Retry,
}

impl Write {
    /// Every write, for series that exist before the first retry.
    pub(crate) const ALL: [Write; 8] = [
        Write::Ack,
        Write::Result,
        Write::ChordPart,
        Write::ChordClaim,
        Write::ChordCleanup,
        Write::ChordSize,
        Write::CanvasMessage,
        Write::Retry,
    ];

    /// The `operation` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Write::Ack => "ack",
            Write::Result => "result",
            Write::ChordPart => "chord_part",
            Write::ChordClaim => "chord_claim",
            Write::ChordCleanup => "chord_cleanup",
            Write::ChordSize => "chord_size",
            Write::CanvasMessage => "canvas_message",
            Write::Retry => "retry",
        }
    }
}

/// Where retried and given-up writes are counted (the worker's metrics).
pub(crate) trait WriteCounter {
    /// A write failed and is tried again.
    fn retried(&self, write: Write);
    /// A write was given up after the retry budget.
    fn failed(&self, write: Write);
}

impl<C: WriteCounter + ?Sized> WriteCounter for std::sync::Arc<C> {
    fn retried(&self, write: Write) {
        C::retried(self, write);
    }
    fn failed(&self, write: Write) {
        C::failed(self, write);
    }
}

/// Run `op` until it succeeds or it has failed for [`BUDGET`], waiting 100 ms, 200 ms, ... (at
/// most 2 s) between attempts. Returns the last error. Each failed attempt that is tried again,
/// and a write given up, is counted in `counter`.
pub(crate) async fn retrying<T, E, F, Fut>(
    counter: &impl WriteCounter,
    write: Write,
    mut op: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    let give_up = tokio::time::Instant::now() + BUDGET;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= give_up => {
                counter.failed(write);
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, operation = write.label(), "Redis write failed; retrying");
                counter.retried(write);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Mutex;

    /// Counts as the metrics do: (write, retried) per call.
    #[derive(Default)]
    struct Counted(Mutex<Vec<(Write, bool)>>);

    impl WriteCounter for Counted {
        fn retried(&self, write: Write) {
            self.0.lock().unwrap().push((write, true));
        }
        fn failed(&self, write: Write) {
            self.0.lock().unwrap().push((write, false));
        }
    }

    impl Counted {
        fn count(&self, write: Write, retried: bool) -> usize {
            let calls = self.0.lock().unwrap();
            calls.iter().filter(|c| **c == (write, retried)).count()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_or_gives_up() {
        let calls = Cell::new(0);
        let counted = Counted::default();
        let ok: Result<u32, String> = retrying(&counted, Write::Result, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(format!("fail {n}"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(ok, Ok(3));
        calls.set(0);
        let started = tokio::time::Instant::now();
        let err: Result<u32, String> = retrying(&counted, Write::Ack, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { Err(format!("fail {n}")) }
        })
        .await;
        let elapsed = started.elapsed();
        assert_eq!(err, Err(format!("fail {}", calls.get())));
        assert!(elapsed >= BUDGET, "gave up after {elapsed:?}");
        assert!(elapsed < BUDGET + Duration::from_secs(3), "{elapsed:?}");
        // 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s, then every 2 s until the budget is spent.
        assert_eq!(calls.get(), 20);
        assert_eq!(counted.count(Write::Result, true), 2);
        assert_eq!(counted.count(Write::Result, false), 0);
        assert_eq!(counted.count(Write::Ack, true), 19);
        assert_eq!(counted.count(Write::Ack, false), 1);
    }
}

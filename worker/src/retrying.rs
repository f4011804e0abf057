//! Retrying a Redis write across a reconnect: after a Redis restart the first command on the old
//! connection fails, the connection manager reconnects, and a later attempt succeeds. Attempts go
//! on for [`BUDGET`], long enough for a Redis restart (AOF reload) or a replica promotion, so a
//! task's result or ack is not given up while Redis is briefly away.

use std::future::Future;
use std::time::Duration;

/// How long failing attempts go on before giving up.
pub const BUDGET: Duration = Duration::from_secs(30);

/// Run `op` until it succeeds or it has failed for [`BUDGET`], waiting 100 ms, 200 ms, ... (at
/// most 2 s) between attempts. Returns the last error.
pub async fn retrying<T, E, F, Fut>(what: &str, mut op: F) -> Result<T, E>
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
            Err(e) if tokio::time::Instant::now() >= give_up => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "{what} failed; retrying");
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

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_or_gives_up() {
        let calls = Cell::new(0);
        let ok: Result<u32, String> = retrying("op", || {
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
        let err: Result<u32, String> = retrying("op", || {
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
    }
}

//! Retrying a Redis write across a reconnect: after a Redis restart the first command on the old
//! connection fails, the connection manager reconnects, and the next attempt succeeds.

use std::future::Future;
use std::time::Duration;

/// Attempts before giving up.
pub const ATTEMPTS: u32 = 5;

/// Run `op` until it succeeds or [`ATTEMPTS`] attempts failed, waiting 100 ms, 200 ms, ... (at
/// most 2 s) between attempts. Returns the last error.
pub async fn retrying<T, E, F, Fut>(what: &str, mut op: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt >= ATTEMPTS => return Err(e),
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
        let err: Result<u32, String> = retrying("op", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { Err(format!("fail {n}")) }
        })
        .await;
        assert_eq!(err, Err(format!("fail {ATTEMPTS}")));
    }
}

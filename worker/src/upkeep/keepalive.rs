//! Upkeep of the messages this worker holds unacked in Redis:
//!
//! * every `visibility_timeout / 4` (0.2–60 s) their `unacked_index` scores are refreshed (a
//!   failed refresh is retried within the period), so no
//!   restore sweep — ours or a Python worker's — requeues a message that is still running or
//!   waiting for its ETA (kombu#337); if this worker dies, the scores go stale and the messages are
//!   restored after the visibility timeout as usual;
//! * once at start and then every `restore_interval` the restore sweep runs, giving back messages of dead
//!   workers whose visibility timeout passed.

use std::sync::Arc;
use std::time::Duration;

use celeriac_broker_bridge::transport::Broker;

use crate::runtime::Runtime;

/// The refresh period for a visibility timeout.
pub fn refresh_period(visibility_timeout: Duration) -> Duration {
    (visibility_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(60))
}

/// Refresh held scores until the runtime's tracker closes (end of shutdown).
pub(crate) async fn refresh_loop(
    rt: Arc<Runtime>,
    period: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    keep_fresh(rt.broker(), || rt.held_tags(), period, stop).await;
}

/// Every `period`, refresh the scores of the tags `held` names, until `stop`. A refresh that
/// fails (a cut or silent connection, whose reply times out within a quarter of the visibility
/// timeout and gets the connection replaced) is tried again after 100 ms, 200 ms, ... within the
/// period, not a whole period later: a few failures in a row would otherwise let the scores age
/// past the visibility timeout, and a sweep would requeue messages still running here.
pub async fn keep_fresh(
    broker: &Broker,
    held: impl Fn() -> Vec<String>,
    period: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let mut backoff = RETRY_FIRST;
        loop {
            let tags = held();
            if tags.is_empty() {
                break;
            }
            match broker.refresh(&tags).await {
                Ok(_) => break,
                Err(e) if backoff >= period => {
                    tracing::warn!(error = %e, held = tags.len(), "could not refresh unacked scores");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, held = tags.len(), retry_in_ms = backoff.as_millis() as u64, "could not refresh unacked scores; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff *= 2;
        }
    }
}

/// The first pause before a failed refresh is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// Run the restore sweep now and then every `period` (kombu's `unacked_restore_interval` ×
/// `unacked_restore_throttle`, 100 s by default) until draining.
pub(crate) async fn sweep_loop(rt: Arc<Runtime>, period: Duration) {
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = rt.draining().cancelled() => return,
        }
        match rt.broker().restore_visibility_timeouts().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                restored = n,
                "restored messages whose visibility timeout passed"
            ),
            Err(e) => tracing::warn!(error = %e, "restore sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_period_is_a_quarter_clamped() {
        assert_eq!(
            refresh_period(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_period(Duration::from_secs(20)),
            Duration::from_secs(5)
        );
        assert_eq!(
            refresh_period(Duration::from_millis(400)),
            Duration::from_millis(200)
        );
    }
}

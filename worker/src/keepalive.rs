//! Upkeep of the messages this worker holds unacked in Redis:
//!
//! * every `visibility_timeout / 4` (0.2–60 s) their `unacked_index` scores are refreshed, so no
//!   restore sweep — ours or a Python worker's — requeues a message that is still running or
//!   waiting for its ETA (kombu#337); if this worker dies, the scores go stale and the messages are
//!   restored after the visibility timeout as usual;
//! * once at start and then every `restore_interval` the restore sweep runs, giving back messages of dead
//!   workers whose visibility timeout passed.

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::Runtime;

/// The refresh period for a visibility timeout.
pub fn refresh_period(visibility_timeout: Duration) -> Duration {
    (visibility_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(60))
}

/// Refresh held scores until the runtime's tracker closes (end of shutdown).
pub async fn refresh_loop(
    rt: Arc<Runtime>,
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
        let tags = rt.held_tags();
        if tags.is_empty() {
            continue;
        }
        if let Err(e) = rt.broker.refresh(&tags).await {
            tracing::warn!(error = %e, held = tags.len(), "could not refresh unacked scores");
        }
    }
}

/// Run the restore sweep now and then every `period` (kombu's `unacked_restore_interval` ×
/// `unacked_restore_throttle`, 100 s by default) until draining.
pub async fn sweep_loop(rt: Arc<Runtime>, period: Duration) {
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = rt.draining.cancelled() => return,
        }
        match rt.broker.restore_visibility_timeouts().await {
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

//! Keeping this worker's queue declarations in Redis: the binding tables kombu producers route
//! named exchanges through are written at start, again as soon as the fetch loop gets through
//! after a lost connection (a Redis restarted without persistence, or a promoted replica that
//! never had them), and every [`REDECLARE_PERIOD`] in case another command saw the loss first.
//! Declaring is idempotent (`SADD`), so repeating it costs one round trip.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::runtime::Runtime;

/// How often the declarations are written again without a known reconnect.
pub(crate) const REDECLARE_PERIOD: Duration = Duration::from_secs(60);

/// Declare the consumed queues now, then on every reconnect and periodically, until `stop`.
pub(crate) async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REDECLARE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = rt.reconnected().notified() => {
                tracing::info!("broker reconnected; declaring the queues again");
            }
            _ = stop.cancelled() => return,
        }
        let queues = rt.consumed_queues();
        if let Err(e) = rt.broker().declare_queues(&queues).await {
            tracing::warn!(error = %e, "could not declare the queues again; retrying later");
        }
    }
}

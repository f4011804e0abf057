//! The last step: a warm shutdown (no new tasks; running ones finish within the grace; what is
//! held is given back) that turns cold on a second stop request (running tasks are stopped and
//! given back now).

use std::time::Duration;

use celeriac_broker_bridge::envelope::Envelope;
use celeriac_broker_bridge::transport::Delivery;

use super::run::Loops;
use super::StopRequests;
use crate::runtime::Runtime;

/// Stop taking work, let running tasks finish (within the grace, until a second stop request),
/// give back what is held, then stop the upkeep loops and say the worker is offline.
pub(super) async fn drain(rt: &Runtime, loops: Loops, stop: &mut StopRequests) {
    tracing::info!("warm shutdown: no new tasks; waiting for running ones");
    rt.draining().cancel();
    let _ = loops.fetcher.await;
    let _ = loops.sweeper.await;
    rt.tracker().close();
    let grace = rt.settings().shutdown_grace();
    let mut cold = false;
    let finished = tokio::select! {
        _ = rt.tracker().wait() => true,
        _ = sleep_or_forever(grace) => false,
        _ = stop.recv() => { tracing::warn!("cold shutdown: stopping running tasks"); cold = true; false }
    };
    if !finished {
        stop_running(rt).await;
        if !cold {
            tokio::select! {
                _ = finishing_done(rt) => {}
                _ = stop.recv() => tracing::warn!("cold shutdown: not waiting for outcomes being written"),
            }
        }
    }
    give_back_held(rt).await;
    loops.upkeep_stop.cancel();
    let _ = loops.refresher.await;
    let _ = loops.control.await;
    let _ = loops.registration.await;
    let _ = loops.heartbeat.await;
    let _ = loops.event_batches.await;
    if loops.heartbeats {
        rt.events().worker_event("worker-offline", rt.load()).await;
    }
    tracing::info!(processed = rt.processed(), "celeriac worker stopped");
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Stop the tasks still running and put their messages back: late-acked ones are still held
/// (restored with the rest); early-acked ones are republished so nothing is lost.
async fn stop_running(rt: &Runtime) {
    let stopped = rt.inflight().stop_running();
    let _ = tokio::time::timeout(Duration::from_secs(5), rt.tracker().wait()).await;
    for r in stopped.into_iter().filter(|r| r.acked) {
        republish(rt, &r.delivery).await;
    }
}

/// Put an already-acked message back on its queue, marked redelivered and with its delivery tag
/// (as a restore would), so its run's follow-ups are not published twice.
async fn republish(rt: &Runtime, d: &Delivery) {
    let result = match Envelope::parse(&d.raw) {
        Ok(mut envelope) => {
            envelope.mark_redelivered();
            match rt.sqs() {
                Some(sqs) => crate::sqs::publish(sqs, &envelope, &d.exchange, &d.routing_key).await,
                None => rt
                    .broker()
                    .publish_restored(&envelope, &d.exchange, &d.routing_key)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "a running message is not an envelope any more");
            return;
        }
    };
    match result {
        Ok(()) => {
            tracing::warn!(delivery_tag = %d.delivery_tag, "task stopped by shutdown; put back on its queue")
        }
        Err(e) => {
            tracing::error!(error = %e, delivery_tag = %d.delivery_tag, "could not put a stopped task back")
        }
    }
}

/// The longest a warm shutdown waits for runs that are over to record their outcome: result
/// writes and acks are retried for 30 s.
const FINISHING_WAIT: Duration = Duration::from_secs(40);

/// Wait (up to [`FINISHING_WAIT`]) until no run that is over is still recording its outcome.
async fn finishing_done(rt: &Runtime) {
    let wait = async {
        while rt.inflight().finishing() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(FINISHING_WAIT, wait).await.is_err() {
        tracing::warn!("runs still writing their outcome at the end of the shutdown");
    }
}

/// Give back every held message, except those whose run is over and whose outcome is still being
/// written: given back, they would run twice; left unacked, they come back only if never acked,
/// after the visibility timeout.
async fn give_back_held(rt: &Runtime) {
    let (tags, finishing) = rt.inflight().to_give_back();
    if finishing > 0 {
        tracing::warn!(
            finishing,
            "left unacked: runs over whose outcome is still being written"
        );
    }
    if tags.is_empty() {
        return;
    }
    if let Some(sqs) = rt.sqs() {
        return crate::sqs::give_back(rt.inflight(), sqs, &tags).await;
    }
    match rt.broker().restore(&tags).await {
        Ok(n) => tracing::info!(restored = n, "gave back held messages to their queues"),
        Err(e) => {
            tracing::error!(error = %e, held = tags.len(), "could not restore held messages; they return after the visibility timeout")
        }
    }
    for tag in &tags {
        rt.release(tag);
    }
}

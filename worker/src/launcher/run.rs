//! The second step: the fetch loop and the upkeep loops beside it (keeping held messages,
//! sweeping, remote control, heartbeats, event batches, registration).

use std::future::Future;
use std::pin::Pin;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::connect::Connected;
use crate::upkeep::keepalive;

/// The loops of a running worker.
pub(super) struct Loops {
    /// Cancelled to stop the upkeep loops (the fetch loop stops when the worker drains).
    pub(super) upkeep_stop: CancellationToken,
    pub(super) fetcher: JoinHandle<()>,
    pub(super) sweeper: JoinHandle<()>,
    pub(super) refresher: JoinHandle<()>,
    pub(super) control: JoinHandle<()>,
    pub(super) registration: JoinHandle<()>,
    pub(super) heartbeat: JoinHandle<()>,
    pub(super) event_batches: JoinHandle<()>,
    /// Whether worker-online/heartbeat/offline events are sent (not with
    /// `--without-heartbeat`).
    pub(super) heartbeats: bool,
}
impl Loops {
    /// Start every loop on `connected`'s runtime. On SQS: no unacked set to sweep (SQS's
    /// visibility timeout does it; held messages are extended instead of refreshed), no fanout
    /// for remote control and events.
    pub(super) fn start(connected: &Connected) -> Loops {
        let rt = &connected.runtime;
        let on_sqs = rt.sqs().is_some();
        let upkeep_stop = CancellationToken::new();
        let spawn_unless_sqs = |fut: Pin<Box<dyn Future<Output = ()> + Send>>| {
            if on_sqs {
                tokio::spawn(async {})
            } else {
                tokio::spawn(fut)
            }
        };
        let refresher = match rt.sqs() {
            Some(sqs) => {
                let held = rt.clone();
                tokio::spawn(crate::sqs::extend_loop(
                    sqs.clone(),
                    move || held.held_tags(),
                    upkeep_stop.clone(),
                ))
            }
            None => tokio::spawn(keepalive::refresh_loop(
                rt.clone(),
                keepalive::refresh_period(connected.visibility_timeout),
                upkeep_stop.clone(),
            )),
        };
        let sweeper = spawn_unless_sqs(Box::pin(keepalive::sweep_loop(
            rt.clone(),
            connected.sweep_period,
        )));
        let control = spawn_unless_sqs(Box::pin(crate::upkeep::control::run(
            rt.clone(),
            upkeep_stop.clone(),
        )));
        if !rt.settings().without_mingle {
            spawn_unless_sqs(Box::pin(crate::upkeep::control::mingle(rt.clone())));
        }
        // `--without-heartbeat`: no worker-online/heartbeat/offline events, as Celery's worker
        // without its Heart.
        let heartbeats = !rt.settings().without_heartbeat;
        let heartbeat = if heartbeats {
            let (rt, stop) = (rt.clone(), upkeep_stop.clone());
            spawn_unless_sqs(Box::pin(async move {
                rt.events().heartbeat_loop(|| rt.load(), stop).await;
            }))
        } else {
            tokio::spawn(async {})
        };
        let event_batches = {
            let (events, stop) = (rt.events().clone(), upkeep_stop.clone());
            spawn_unless_sqs(Box::pin(async move { events.batch_loop(stop).await }))
        };
        let registration = spawn_unless_sqs(Box::pin(crate::upkeep::registration::run(
            rt.clone(),
            upkeep_stop.clone(),
        )));
        let fetcher = tokio::spawn(crate::message::fetch::run(rt.clone()));
        Loops {
            upkeep_stop,
            fetcher,
            sweeper,
            refresher,
            control,
            registration,
            heartbeat,
            event_batches,
            heartbeats,
        }
    }
}

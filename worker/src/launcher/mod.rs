//! Starting and stopping a worker, in three steps as Sidekiq's launcher: `connect` assembles the
//! runtime (connections, queues, registry, slots), `run` starts the fetch loop and the upkeep
//! loops, `drain` shuts down warm (finish running tasks within the grace, give back everything
//! else) or cold (on a second signal: stop now, give back everything).

mod connect;
mod drain;
mod run;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::task_api::registry::Registry;

/// A stop request: the first asks for a warm shutdown, the second for a cold one.
pub(crate) type StopRequests = mpsc::UnboundedReceiver<()>;

/// Stop requests from SIGTERM and SIGINT.
pub(crate) fn signal_stop_requests() -> anyhow::Result<StopRequests> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = mpsc::unbounded_channel();
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = term.recv() => {}
                Some(()) = int.recv() => {}
                else => return,
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Stop requests from a future (for embedding and tests): it resolving asks for a warm shutdown.
pub(crate) fn stop_requests_from(fut: impl Future<Output = ()> + Send + 'static) -> StopRequests {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        fut.await;
        let _ = tx.send(());
    });
    rx
}

/// Run a worker until stopped. In a task process (see [`crate::process`]) it serves the child
/// role instead and never returns, so a child can never become a second worker.
pub(crate) async fn run(
    settings: Settings,
    registry: Registry,
    hooks: Vec<Arc<dyn crate::observe::lifecycle::Lifecycle>>,
    mut stop: StopRequests,
) -> anyhow::Result<()> {
    if crate::process::is_child() {
        crate::process::serve(&registry);
    }
    // A stop request while the broker cannot be reached ends the start-up.
    let Some(connected) = connect::connect(settings, registry, hooks, &mut stop).await? else {
        return Ok(());
    };
    let rt = connected.runtime.clone();
    let loops = run::Loops::start(&connected);
    tokio::select! {
        _ = stop.recv() => {}
        _ = rt.remote_stop().cancelled() => {}
    }
    drain::drain(&rt, loops, &mut stop).await;
    // The HTTP endpoints answer until here.
    drop(connected);
    Ok(())
}

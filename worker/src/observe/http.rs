//! The worker's HTTP endpoints on `metrics_port`, for Prometheus, Kubernetes probes and KEDA:
//!
//! * `GET /metrics`: Prometheus text format (see [`crate::observe::metrics`]).
//! * `GET /healthz`: 200 while the tokio runtime is responsive (a watchdog task ticks every
//!   [`WATCHDOG_TICK`]; 503 when its last tick is older than [`WATCHDOG_STALE`]).
//! * `GET /readyz`: 200 while connected to the broker and consuming; 503 while connecting,
//!   while the broker is unreachable, and from the start of a warm shutdown.
//! * `GET /keda`: JSON for KEDA's `metrics-api` scaler: `queue_depth` (waiting in all priority
//!   lists of the worker's queues plus their unacked messages, ETA-held ones excluded),
//!   `desired_replicas` and the parts (`eta_held` reported apart); 503 when the depth cannot be
//!   read, so KEDA applies its fallback.
//!
//! Connections are limited (see [`crate::observe::http_limits`]): 64 at once, each closed after 10 s
//! without progress or 60 s in all.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use celeriac_broker_bridge::transport::Depths;

use crate::observe::metrics::{desired_replicas, Metrics, WorkerState};
use crate::runtime::Runtime;

/// How often the watchdog task ticks.
pub(crate) const WATCHDOG_TICK: Duration = Duration::from_secs(1);
/// A watchdog tick older than this makes `/healthz` fail.
pub(crate) const WATCHDOG_STALE: Duration = Duration::from_secs(10);

/// The running HTTP server (or nothing, when no port is configured). Dropping it stops it.
pub(crate) struct HttpServer {
    state: Option<Arc<Shared>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    metrics: Arc<Metrics>,
    runtime: OnceLock<Arc<Runtime>>,
    started: Instant,
    last_tick_ms: AtomicU64,
}

impl HttpServer {
    /// Serve on `0.0.0.0:port` (port 0: any free port, logged) when `port` is set. Fails when the
    /// port cannot be bound.
    pub(crate) async fn start(
        port: Option<u16>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<HttpServer> {
        let Some(port) = port else {
            return Ok(HttpServer {
                state: None,
                tasks: Vec::new(),
            });
        };
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .await
            .with_context(|| format!("bind the metrics port {port}"))?;
        let addr = listener.local_addr().context("metrics listener address")?;
        let state = Arc::new(Shared {
            metrics,
            runtime: OnceLock::new(),
            started: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/keda", get(keda))
            .with_state(state.clone());
        tracing::info!(%addr, "metrics server listening");
        let server = tokio::spawn(async move {
            if let Err(e) =
                axum::serve(crate::observe::http_limits::Limited::new(listener), app).await
            {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
        let watchdog = tokio::spawn(watchdog(state.clone()));
        Ok(HttpServer {
            state: Some(state),
            tasks: vec![server, watchdog],
        })
    }

    /// From now on, report on `rt` (before this: not ready, counters only).
    pub(crate) fn attach(&self, rt: &Arc<Runtime>) {
        if let Some(state) = &self.state {
            let _ = state.runtime.set(rt.clone());
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn watchdog(state: Arc<Shared>) {
    let mut tick = tokio::time::interval(WATCHDOG_TICK);
    loop {
        tick.tick().await;
        let ms = state.started.elapsed().as_millis() as u64;
        state.last_tick_ms.store(ms, Ordering::Relaxed);
    }
}

async fn metrics_text(State(state): State<Arc<Shared>>) -> Response {
    let text = match state.runtime.get() {
        Some(rt) => {
            let worker = worker_state(rt);
            let depths = state.metrics.depths(read_depths(rt)).await;
            state.metrics.render(Some((&worker, depths)))
        }
        None => state.metrics.render(None),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// What `rt` holds and runs now, for `/metrics`.
fn worker_state(rt: &Runtime) -> WorkerState {
    let counts = rt.inflight().counts();
    WorkerState {
        running: counts.running,
        running_held: counts.running_held,
        held: counts.held,
        eta_held: rt.eta_held(),
        reservations_free: rt.reservations().available_permits(),
        draining: rt.draining().is_cancelled(),
        dead_lettered: rt.dead_lettered(),
        abandoned_threads: crate::message::time_limits::abandoned_threads(),
    }
}

/// Read the depth of `rt`'s queues from its broker (SQS or Redis).
async fn read_depths(rt: &Runtime) -> anyhow::Result<Depths> {
    match rt.sqs() {
        Some(sqs) => crate::sqs::depths(sqs, rt.broker(), &rt.settings().queues).await,
        None => Ok(rt.broker().depths(&rt.settings().queues).await?),
    }
}

async fn healthz(State(state): State<Arc<Shared>>) -> Response {
    let now = state.started.elapsed().as_millis() as u64;
    let last = state.last_tick_ms.load(Ordering::Relaxed);
    let age = Duration::from_millis(now.saturating_sub(last));
    if age > WATCHDOG_STALE {
        let body = format!("runtime unresponsive: last watchdog tick {age:?} ago\n");
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(state): State<Arc<Shared>>) -> Response {
    let not_ready =
        |why: &str| (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
    let Some(rt) = state.runtime.get() else {
        return not_ready("connecting to the broker");
    };
    if rt.draining().is_cancelled() {
        return not_ready("draining: shutting down");
    }
    if !state.metrics.is_broker_reachable() {
        return not_ready("broker unreachable");
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn keda(State(state): State<Arc<Shared>>) -> Response {
    let Some(rt) = state.runtime.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "connecting to the broker\n",
        )
            .into_response();
    };
    let depths = match state.metrics.depths(read_depths(rt)).await {
        Ok(d) => d,
        Err(e) => {
            let body = format!("cannot read the queue depth: {e:#}\n");
            return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
        }
    };
    let concurrency = rt.concurrency();
    let depth = depths.waiting() + depths.unacked;
    let queues: serde_json::Map<String, serde_json::Value> = depths
        .queues
        .iter()
        .map(|(q, n)| (q.clone(), (*n).into()))
        .collect();
    let body = serde_json::json!({
        "queue_depth": depth,
        "waiting": depths.waiting(),
        "unacked": depths.unacked,
        "eta_held": depths.eta_held,
        "concurrency": concurrency,
        "desired_replicas": desired_replicas(depth, concurrency),
        "queues": queues,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(since_start: Duration, last_tick: Duration) -> Arc<Shared> {
        Arc::new(Shared {
            metrics: Arc::new(Metrics::new("w@test")),
            runtime: OnceLock::new(),
            started: Instant::now()
                .checked_sub(since_start)
                .expect("the clock is past the test's offsets"),
            last_tick_ms: AtomicU64::new(last_tick.as_millis() as u64),
        })
    }

    #[tokio::test]
    async fn healthz_fails_when_the_watchdog_stops_ticking() {
        let fresh = state(Duration::from_secs(30), Duration::from_secs(29));
        assert_eq!(healthz(State(fresh)).await.status(), StatusCode::OK);
        let wedged = state(Duration::from_secs(30), Duration::from_secs(5));
        assert_eq!(
            healthz(State(wedged)).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn not_ready_and_no_keda_answer_before_the_broker_is_connected() {
        let s = state(Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(
            readyz(State(s.clone())).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            keda(State(s)).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

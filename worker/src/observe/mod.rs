//! What the worker reports, each step of a message fanned out by [`lifecycle`] (also to hooks a
//! user adds): monitoring [`events`] (Flower), Prometheus [`metrics`] and the cache's
//! counters ([`cache_metrics`]) served over [`http`] with the probes, OpenTelemetry spans
//! ([`telemetry`]) and the logs ([`logging`]).

pub(crate) mod cache_metrics;
pub(crate) mod events;
pub(crate) mod http;
pub(crate) mod http_limits;
pub(crate) mod lifecycle;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod telemetry;

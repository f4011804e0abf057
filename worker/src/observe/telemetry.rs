//! OpenTelemetry tracing: a span per task continuing the producer's trace (the W3C
//! `traceparent`/`tracestate` message headers that `opentelemetry-instrumentation-celery` and
//! other propagators write), exported over OTLP/HTTP (protobuf), configured by the standard
//! `OTEL_*` variables. `tracing` spans become OpenTelemetry spans (tracing-opentelemetry), and
//! JSON log lines inside a span carry its `trace_id` and `span_id`.
//!
//! On when `OTEL_TRACES_EXPORTER=otlp` or an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; off with `OTEL_TRACES_EXPORTER=none` or
//! `OTEL_SDK_DISABLED=true`, or when nothing is set — then no layer is installed and a task span
//! costs what it did before.

use std::collections::HashMap;
use std::sync::OnceLock;

use anyhow::Context as _;
use celeriac_broker_bridge::codec::TaskMessage;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Status, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::field::Empty;
use tracing::{Span, Subscriber};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

/// The service name when `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`)
/// is not set.
pub(crate) const DEFAULT_SERVICE_NAME: &str = "celeriac";

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The installed tracer provider; dropping it flushes and shuts down the exporter.
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("celeriac: OpenTelemetry shutdown: {e}");
        }
    }
}

/// Whether the `OTEL_*` variables (read through `var`) ask for trace export.
pub(crate) fn enabled(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return false;
    }
    match var("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase()) {
        Some(e) if e == "none" => false,
        Some(e) if e.split(',').any(|x| x.trim() == "otlp") => true,
        _ => set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    }
}

/// Install the OTLP exporter when the environment asks for it (see the module docs). Call once,
/// before [`crate::observe::logging::init`] and outside any tokio runtime (the exporter runs a blocking
/// HTTP client on its own thread), and keep the result alive until the worker stops: dropping
/// it flushes the spans not yet sent.
pub(crate) fn init() -> anyhow::Result<Option<Telemetry>> {
    if !enabled(|name| std::env::var(name).ok()) {
        return Ok(None);
    }
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL") {
        if !matches!(protocol.trim(), "" | "http/protobuf") {
            anyhow::bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: celeriac exports OTLP over http/protobuf only"
            );
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("OTLP span exporter (OTEL_EXPORTER_OTLP_*)")?;
    let mut resource = Resource::builder();
    if !service_name_set() {
        resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("celeriac");
    TRACER
        .set(tracer)
        .map_err(|_| anyhow::anyhow!("OpenTelemetry is already initialised"))?;
    Ok(Some(Telemetry { provider }))
}

fn service_name_set() -> bool {
    std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        })
}

/// Whether spans are exported.
pub(crate) fn is_enabled() -> bool {
    TRACER.get().is_some()
}

/// The tracing layer that turns `tracing` spans into OpenTelemetry spans, when enabled.
pub(crate) fn layer<S>() -> Option<OpenTelemetryLayer<S, SdkTracer>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    TRACER
        .get()
        .map(|t| tracing_opentelemetry::layer().with_tracer(t.clone()))
}

/// The span a task message is handled in: fields `task_id`, `task_name`, `root_id`; when
/// tracing is on, also named `run/<task>` (kind consumer, as the Python instrumentation names
/// it) and a child of the producer's span from the message's `traceparent`.
pub(crate) fn task_span(msg: &TaskMessage) -> Span {
    let span = tracing::info_span!(
        "task",
        task_id = %msg.id,
        task_name = %msg.task,
        root_id = msg.root_id.as_deref().unwrap_or(""),
        otel.name = Empty,
        otel.kind = Empty,
    );
    if !is_enabled() {
        return span;
    }
    span.record("otel.name", format!("run/{}", msg.task));
    span.record("otel.kind", "consumer");
    if let Some(parent) = producer_context(&msg.extra_headers) {
        if let Err(e) = span.set_parent(parent) {
            tracing::debug!(error = %e, "cannot continue the producer's trace");
        }
    }
    span
}

/// The OpenTelemetry trace and span ids (hex) of the `tracing` span `id`, when tracing is on.
/// Must not be called while holding the span's extensions.
pub(crate) fn ids_of(id: &tracing::span::Id) -> Option<(String, String)> {
    if !is_enabled() {
        return None;
    }
    let cx = tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(id, d))?;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Mark the current task span as failed with `message`.
pub(crate) fn task_failed(message: &str) {
    if is_enabled() {
        Span::current().set_status(Status::error(message.to_string()));
    }
}

/// The remote parent carried by `traceparent`/`tracestate` headers (any trace flags, e.g. `03`,
/// are accepted; only the sampled bit is kept), if valid.
pub(crate) fn producer_context(
    headers: &serde_json::Map<String, serde_json::Value>,
) -> Option<opentelemetry::Context> {
    let carrier: HashMap<String, String> = headers
        .iter()
        .filter(|(k, _)| {
            k.eq_ignore_ascii_case("traceparent") || k.eq_ignore_ascii_case("tracestate")
        })
        .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_string())))
        .collect();
    if !carrier.contains_key("traceparent") {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn enabled_follows_the_standard_variables() {
        assert!(!enabled(env(&[])));
        assert!(enabled(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://c:4318"
        )])));
        assert!(enabled(env(&[("OTEL_TRACES_EXPORTER", "otlp")])));
        assert!(!enabled(env(&[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
        ])));
        assert!(!enabled(env(&[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "otlp")
        ])));
    }

    #[test]
    fn traceparent_with_flags_03_is_a_sampled_remote_parent() {
        let headers = json!({
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
            "tracestate": "vendor=x",
        });
        let cx = producer_context(headers.as_object().unwrap()).expect("valid");
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().get("vendor"), Some("x"));
    }

    #[test]
    fn missing_or_bad_traceparent_gives_no_parent() {
        assert!(producer_context(json!({}).as_object().unwrap()).is_none());
        let bad = json!({"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"});
        assert!(producer_context(bad.as_object().unwrap()).is_none());
        let junk = json!({"traceparent": 17});
        assert!(producer_context(junk.as_object().unwrap()).is_none());
    }
}

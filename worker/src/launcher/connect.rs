//! The first step of a start: connect to the broker (and SQS) and the result backend, declare
//! the queues, size the slots and assemble the [`Runtime`] every part shares.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use celeriac_broker_bridge::backend::{EncodedMeta, ResultBackend};
use celeriac_broker_bridge::sqs::{is_sqs_url, SqsBroker, SqsOptions};
use celeriac_broker_bridge::transport::{Broker, TransportOptions};
use tokio::sync::Semaphore;

use super::StopRequests;
use crate::config::Settings;
use crate::message::batch::Batcher;
use crate::runtime::{Parts, Runtime};
use crate::task_api::registry::Registry;

/// A connected worker, ready to run.
pub(super) struct Connected {
    /// The runtime every part shares.
    pub(super) runtime: Arc<Runtime>,
    /// The HTTP endpoints (served until this is dropped).
    _http: crate::observe::http::HttpServer,
    /// How often unacked messages of dead workers are swept back to their queues.
    pub(super) sweep_period: Duration,
    /// The Redis transport's visibility timeout (held messages are refreshed within it).
    pub(super) visibility_timeout: Duration,
}

/// Connect and assemble the runtime; `None` when a stop request came while the broker could
/// not be reached.
pub(super) async fn connect(
    settings: Settings,
    mut registry: Registry,
    hooks: Vec<Arc<dyn crate::observe::lifecycle::Lifecycle>>,
    stop: &mut StopRequests,
) -> anyhow::Result<Option<Connected>> {
    crate::connection::install_crypto_provider();
    let on_sqs = is_sqs_url(settings.broker_url.expose());
    let mut transport = if on_sqs {
        TransportOptions::default()
    } else {
        TransportOptions::from_json(&serde_json::Value::Object(
            settings.broker_transport_options.clone(),
        ))
        .context("CELERY_BROKER_TRANSPORT_OPTIONS")?
    };
    transport.dead_letter_key = settings.dead_letter_key.clone();
    transport.max_message_bytes = usize::try_from(settings.max_message_bytes).ok();
    let sweep_period = transport.restore_interval;
    let signing = crate::signing::Signing::from_settings(&settings)?;
    let metrics = Arc::new(crate::observe::metrics::Metrics::new(
        &settings.worker_hostname,
    ));
    if let Some(data) = registry.data() {
        metrics
            .register(Box::new(
                crate::observe::cache_metrics::CacheCollector::new(data.cache.clone()),
            ))
            .context("register the cache metrics")?;
    }
    let http =
        crate::observe::http::HttpServer::start(settings.metrics_port, metrics.clone()).await?;
    let visibility_timeout = transport.visibility_timeout;
    let sqs = if on_sqs {
        let opts = SqsOptions::from_map(&settings.broker_transport_options)
            .context("CELERY_BROKER_TRANSPORT_OPTIONS")?;
        let broker = SqsBroker::connect(settings.broker_url.expose(), opts)
            .await
            .context("set up the SQS client")?;
        tracing::warn!("broker is SQS: events and remote control are off (kombu's SQS transport has no fanout); results, the dead-letter list and the revoked store use the result backend's Redis");
        Some(Arc::new(crate::sqs::SqsSide::new(broker)))
    } else {
        None
    };
    // On SQS, the Redis transport handle is on the result backend's server.
    let redis_url = match (&sqs, &settings.result_backend) {
        (None, _) => &settings.broker_url,
        (Some(_), Some(url)) => url,
        (Some(_), None) => anyhow::bail!(
            "an SQS broker needs a Redis result backend (CELERY_RESULT_BACKEND=redis://...)"
        ),
    };
    let broker = tokio::select! {
        b = connect_broker(redis_url.expose(), TransportOptions {
            credentials_file: redis_url.file().map(Into::into),
            ..transport
        }) => b,
        _ = stop.recv() => return Ok(None),
    };
    let backend = match &settings.result_backend {
        Some(url) => Some(
            ResultBackend::connect(
                url.expose(),
                crate::connection::backend_options(&settings, &signing)?,
            )
            .await
            .context("connect to the result backend")?,
        ),
        None => None,
    };
    match &sqs {
        Some(sqs) => {
            for queue in &settings.queues {
                sqs.broker
                    .queue_url(queue)
                    .await
                    .with_context(|| format!("declare SQS queue {queue}"))?;
            }
        }
        None => broker
            .declare_queues(&settings.queues)
            .await
            .context("declare queues")?,
    }
    if registry.is_empty() {
        tracing::warn!("no task is registered: every message consumed will be dead-lettered");
    }
    let slots = settings.slots();
    let concurrency = capacity(&slots, registry.kinds());
    crate::task_api::builtins::install(&mut registry);
    let thread_slots = Arc::new(Semaphore::new(slots.thread_tasks));
    let async_slots = if slots.shared {
        thread_slots.clone()
    } else {
        Arc::new(Semaphore::new(slots.async_tasks))
    };
    let prefetch = prefetch_limit(concurrency, settings.worker_prefetch_multiplier);
    let hostname = settings.worker_hostname.clone();
    let acker = {
        let broker = broker.clone();
        Batcher::spawn(move |tags: Vec<String>| {
            let broker = broker.clone();
            async move {
                let outcome = match broker.ack_many(&tags).await {
                    Ok(held) => {
                        if held < tags.len() {
                            tracing::warn!(
                                acked = tags.len(),
                                not_held = tags.len() - held,
                                "acked messages no longer held: acked by an earlier attempt whose reply was lost, or requeued by a visibility-timeout sweep (those run again)"
                            );
                        }
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                };
                vec![outcome; tags.len()]
            }
        })
    };
    let writer = backend.clone().map(|backend| {
        Batcher::spawn(move |metas: Vec<EncodedMeta>| {
            let backend = backend.clone();
            async move {
                match backend.store_encoded(&metas).await {
                    Ok(outcomes) => outcomes
                        .into_iter()
                        .map(|o| o.map_err(|e| e.to_string()))
                        .collect(),
                    Err(e) => vec![Err(e.to_string()); metas.len()],
                }
            }
        })
    });
    let client = sqs.is_none().then(|| {
        let producer = crate::client::Producer {
            default_queue: settings.task_default_queue.clone(),
            serializer: signing.tasks.clone(),
            ..crate::client::Producer::default()
        };
        crate::client::Client::from_parts(broker.clone(), backend.clone(), producer)
    });
    let events = Arc::new(crate::observe::events::Events::new(
        broker.clone(),
        hostname,
        signing.events.clone(),
        settings.worker_send_task_events && !on_sqs,
        settings.events_batch,
    ));
    let hooks = crate::observe::lifecycle::Hooks::new(events.clone(), metrics.clone(), hooks);
    let revoked = crate::message::revoked::Revoked::from_env()
        .persisted(broker.clone(), settings.revoked_key.clone());
    let rt = Arc::new(Runtime::new(Parts {
        settings,
        signing,
        registry,
        broker,
        sqs,
        backend,
        client,
        acker,
        writer,
        slots: thread_slots,
        async_slots,
        concurrency,
        reservations: prefetch,
        events,
        hooks,
        revoked,
        metrics,
    }));
    rt.revoked().load().await;
    rt.metrics().set_capacity(concurrency, prefetch);
    http.attach(&rt);
    tracing::info!(
        hostname = %rt.hostname(),
        queues = ?rt.settings().queues,
        concurrency,
        async_slots = if slots.shared { None } else { Some(slots.async_tasks) },
        thread_slots = slots.thread_tasks,
        tasks = ?rt.registry().names().collect::<Vec<_>>(),
        "celeriac worker ready"
    );
    Ok(Some(Connected {
        runtime: rt,
        _http: http,
        sweep_period,
        visibility_timeout,
    }))
}

/// Messages the worker may hold at once, as Celery's prefetch count: `concurrency ×
/// multiplier`; `None` (no limit) for a multiplier of 0.
fn prefetch_limit(concurrency: usize, multiplier: u32) -> Option<usize> {
    (multiplier > 0).then(|| concurrency.max(1).saturating_mul(multiplier as usize))
}

/// Tasks run at once, every kind together: the slots of the kinds of task registered (all of
/// them when one pool is shared), at least 1. Reservations are sized from it, so a worker with
/// only blocking tasks does not hold messages for async slots it cannot use.
fn capacity(slots: &crate::config::Slots, (has_async, has_threads): (bool, bool)) -> usize {
    let n = if slots.shared {
        slots.thread_tasks
    } else {
        usize::from(has_async) * slots.async_tasks + usize::from(has_threads) * slots.thread_tasks
    };
    n.max(1)
}

async fn connect_broker(url: &str, opts: TransportOptions) -> Broker {
    let mut backoff = Duration::from_millis(200);
    loop {
        match Broker::connect(url, opts.clone()).await {
            Ok(b) => return b,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach the broker; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefetch_limit;

    #[test]
    fn the_prefetch_count_is_celerys() {
        assert_eq!(prefetch_limit(2, 4), Some(8));
        assert_eq!(prefetch_limit(1000, 4), Some(4000));
        assert_eq!(prefetch_limit(3, 1), Some(3));
        assert_eq!(prefetch_limit(3, 0), None);
    }
}

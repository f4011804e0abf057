//! Starting and stopping a worker: connect, declare queues, run the fetch loop and the upkeep
//! loops, then shut down warm (finish running tasks within the grace, give back everything else)
//! or cold (on a second signal: stop now, give back everything).

use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use celeriac_broker_bridge::backend::{BackendOptions, EncodedMeta, ResultBackend};
use celeriac_broker_bridge::envelope::Envelope;
use celeriac_broker_bridge::sqs::{is_sqs_url, SqsBroker, SqsOptions};
use celeriac_broker_bridge::transport::{Broker, Delivery, TransportOptions};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::message::batch::Batcher;
use crate::message::fetch;
use crate::runtime::{Counters, Runtime};
use crate::task_api::registry::Registry;
use crate::upkeep::keepalive;

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

/// Choose rustls's crypto provider for the process before the broker's first `rediss://`
/// connection (see [`celeriac_cache::tls::install_crypto_provider`]).
pub fn install_crypto_provider() {
    celeriac_cache::tls::install_crypto_provider();
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
    install_crypto_provider();
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
        _ = stop.recv() => return Ok(()),
    };
    let backend = match &settings.result_backend {
        Some(url) => Some(
            ResultBackend::connect(url.expose(), backend_options(&settings, &signing)?)
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
    let mut registry = registry;
    crate::task_api::builtins::install(&mut registry);
    let thread_slots = Arc::new(Semaphore::new(slots.thread_tasks));
    let async_slots = if slots.shared {
        thread_slots.clone()
    } else {
        Arc::new(Semaphore::new(slots.async_tasks))
    };
    let lookahead = (settings.worker_prefetch_multiplier.max(1) as usize - 1).min(concurrency);
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
        hostname.clone(),
        signing.events.clone(),
        settings.worker_send_task_events && !on_sqs,
        settings.events_batch,
    ));
    let hooks = crate::observe::lifecycle::Hooks::new(events.clone(), metrics.clone(), hooks);
    let revoked = crate::message::revoked::Revoked::from_env()
        .persisted(broker.clone(), settings.revoked_key.clone());
    let rt = Arc::new(Runtime {
        registry,
        broker,
        sqs: sqs.clone(),
        backend,
        client,
        acker,
        writer,
        hostname,
        slots: thread_slots,
        async_slots,
        concurrency,
        reservations: Arc::new(Semaphore::new(concurrency + lookahead)),
        inflight: Arc::default(),
        eta_held: AtomicUsize::new(0),
        eta_held_bytes: AtomicUsize::new(0),
        reserved_bytes: crate::message::reserved_bytes::ReservedBytes::new(
            usize::try_from(settings.reserved_bytes).unwrap_or(usize::MAX),
        ),
        draining: CancellationToken::new(),
        tracker: TaskTracker::new(),
        counters: Counters::default(),
        revoked,
        events,
        hooks,
        rate_limits: crate::upkeep::control::RateLimits::default(),
        rate_buckets: crate::message::rate_limit::Buckets::default(),
        queues: Mutex::new(settings.queues.clone()),
        remote_stop: CancellationToken::new(),
        started: std::time::Instant::now(),
        reservations_capacity: concurrency + lookahead,
        metrics,
        reconnected: tokio::sync::Notify::new(),
        queues_changed: tokio::sync::Notify::new(),
        signing,
        settings,
    });
    rt.revoked.load().await;
    rt.metrics
        .set_capacity(concurrency, concurrency + lookahead);
    http.attach(&rt);
    tracing::info!(
        hostname = %rt.hostname,
        queues = ?rt.settings.queues,
        concurrency,
        async_slots = if slots.shared { None } else { Some(slots.async_tasks) },
        thread_slots = slots.thread_tasks,
        tasks = ?rt.registry.names().collect::<Vec<_>>(),
        "celeriac worker ready"
    );
    let upkeep_stop = CancellationToken::new();
    // On SQS: no unacked set to sweep (SQS's visibility timeout does it; held messages are
    // extended instead of refreshed), no fanout for remote control and events, queues declared
    // above.
    let spawn_unless_sqs = |fut: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>| {
        if on_sqs {
            tokio::spawn(async {})
        } else {
            tokio::spawn(fut)
        }
    };
    let refresher = match &rt.sqs {
        Some(sqs) => tokio::spawn(crate::sqs::extend_loop(
            rt.clone(),
            sqs.clone(),
            upkeep_stop.clone(),
        )),
        None => tokio::spawn(keepalive::refresh_loop(
            rt.clone(),
            keepalive::refresh_period(visibility_timeout),
            upkeep_stop.clone(),
        )),
    };
    let sweeper = spawn_unless_sqs(Box::pin(keepalive::sweep_loop(rt.clone(), sweep_period)));
    let control = spawn_unless_sqs(Box::pin(crate::upkeep::control::run(
        rt.clone(),
        upkeep_stop.clone(),
    )));
    if !rt.settings.without_mingle {
        spawn_unless_sqs(Box::pin(crate::upkeep::control::mingle(rt.clone())));
    }
    // `--without-heartbeat`: no worker-online/heartbeat/offline events, as Celery's worker
    // without its Heart.
    let heartbeats = !rt.settings.without_heartbeat;
    let heartbeat = if heartbeats {
        let (rt, stop) = (rt.clone(), upkeep_stop.clone());
        spawn_unless_sqs(Box::pin(async move {
            rt.events.heartbeat_loop(|| rt.load(), stop).await;
        }))
    } else {
        tokio::spawn(async {})
    };
    let event_batches = {
        let (events, stop) = (rt.events.clone(), upkeep_stop.clone());
        spawn_unless_sqs(Box::pin(async move { events.batch_loop(stop).await }))
    };
    let registration = spawn_unless_sqs(Box::pin(crate::upkeep::registration::run(
        rt.clone(),
        upkeep_stop.clone(),
    )));
    let fetcher = tokio::spawn(fetch::run(rt.clone()));

    tokio::select! {
        _ = stop.recv() => {}
        _ = rt.remote_stop.cancelled() => {}
    }
    tracing::info!("warm shutdown: no new tasks; waiting for running ones");
    rt.draining.cancel();
    let _ = fetcher.await;
    let _ = sweeper.await;
    rt.tracker.close();
    let grace = rt.settings.shutdown_grace();
    let mut cold = false;
    let finished = tokio::select! {
        _ = rt.tracker.wait() => true,
        _ = sleep_or_forever(grace) => false,
        _ = stop.recv() => { tracing::warn!("cold shutdown: stopping running tasks"); cold = true; false }
    };
    if !finished {
        stop_running(&rt).await;
        if !cold {
            tokio::select! {
                _ = finishing_done(&rt) => {}
                _ = stop.recv() => tracing::warn!("cold shutdown: not waiting for outcomes being written"),
            }
        }
    }
    give_back_held(&rt).await;
    upkeep_stop.cancel();
    let _ = refresher.await;
    let _ = control.await;
    let _ = registration.await;
    let _ = heartbeat.await;
    let _ = event_batches.await;
    if heartbeats {
        rt.events.worker_event("worker-offline", rt.load()).await;
    }
    tracing::info!(
        processed = rt
            .counters
            .processed
            .load(std::sync::atomic::Ordering::Relaxed),
        "celeriac worker stopped"
    );
    Ok(())
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

/// The result backend's options from the settings (key prefix, expiry, signing).
pub(crate) fn backend_options(
    settings: &Settings,
    signing: &crate::signing::Signing,
) -> anyhow::Result<BackendOptions> {
    let prefix = settings
        .result_backend_transport_options
        .get("global_keyprefix")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok(BackendOptions {
        result_expires: settings.result_expires,
        global_keyprefix: prefix,
        result_extended: settings.result_extended,
        serializer: signing.results.clone(),
        verifier: signing.verifier.clone(),
        require_signed: !signing.unsigned_results,
        credentials_file: settings
            .result_backend
            .as_ref()
            .and_then(|u| u.file())
            .map(Into::into),
        ..BackendOptions::default()
    })
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
    let stopped = rt.inflight.stop_running();
    let _ = tokio::time::timeout(Duration::from_secs(5), rt.tracker.wait()).await;
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
            match &rt.sqs {
                Some(sqs) => crate::sqs::publish(sqs, &envelope, &d.exchange, &d.routing_key).await,
                None => rt
                    .broker
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
        while rt.inflight.finishing() > 0 {
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
    let (tags, finishing) = rt.inflight.to_give_back();
    if finishing > 0 {
        tracing::warn!(
            finishing,
            "left unacked: runs over whose outcome is still being written"
        );
    }
    if tags.is_empty() {
        return;
    }
    if let Some(sqs) = &rt.sqs {
        return crate::sqs::give_back(rt, sqs, &tags).await;
    }
    match rt.broker.restore(&tags).await {
        Ok(n) => tracing::info!(restored = n, "gave back held messages to their queues"),
        Err(e) => {
            tracing::error!(error = %e, held = tags.len(), "could not restore held messages; they return after the visibility timeout")
        }
    }
    for tag in &tags {
        rt.release(tag);
    }
}

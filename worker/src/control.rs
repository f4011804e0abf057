//! Remote control ("pidbox"): answers `celery inspect` / `celery control` and Flower as a Python
//! worker does. A dedicated PUB/SUB connection subscribes to `/<db>.celery.pidbox` (resubscribing
//! after a lost connection); requests for this node run here and replies go to the caller's
//! reply queue (see broker-bridge's `pidbox`).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_broker_bridge::backend::TaskMeta;
use celeriac_broker_bridge::pidbox::{self, ControlRequest};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::config::RateLimit;
use crate::events;
use crate::revoked;
use crate::runtime::Runtime;
use crate::tracked::Stage;

/// The control namespace (Celery's `control_exchange`).
pub const NAMESPACE: &str = "celery";

/// Rate limits set by remote control, by task name (`None`: disabled). The enforcement reads
/// this map; a task absent from it keeps its configured limit.
#[derive(Default)]
pub struct RateLimits(Mutex<HashMap<String, Option<RateLimit>>>);

impl RateLimits {
    /// The limit set remotely for `task`: `None` = not set remotely, `Some(None)` = disabled.
    pub fn get(&self, task: &str) -> Option<Option<RateLimit>> {
        self.0.lock().expect("rate limits lock").get(task).cloned()
    }

    /// Set (or disable, with `None`) the limit of `task`.
    pub fn set(&self, task: &str, limit: Option<RateLimit>) {
        self.0
            .lock()
            .expect("rate limits lock")
            .insert(task.to_string(), limit);
    }
}

/// Serve remote control until `stop`.
pub async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let channel = rt.broker.fanout_channel(&pidbox::exchange(NAMESPACE), "");
    let mut backoff = Duration::from_millis(100);
    loop {
        let sub = tokio::select! {
            s = rt.broker.subscribe_fanout(std::slice::from_ref(&channel)) => s,
            _ = stop.cancelled() => return,
        };
        let mut sub = match sub {
            Ok(s) => {
                tracing::debug!(%channel, "remote control subscribed");
                backoff = Duration::from_millis(100);
                s
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to remote control; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            tokio::select! {
                m = sub.next() => match m {
                    Some(m) => handle_message(&rt, &m.payload).await,
                    None => {
                        tracing::warn!("remote control connection lost; resubscribing");
                        break;
                    }
                },
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// Mingle: ask the other nodes (Python or celeriac) for their revoked ids with a `hello`
/// broadcast, as a Python worker does at start, and merge the replies (list or dict form).
/// Runs beside the fetch loop instead of before it, so it never delays the start.
pub async fn mingle(rt: Arc<Runtime>) {
    let mut args = Map::new();
    args.insert("from_node".into(), rt.hostname.clone().into());
    args.insert("revoked".into(), json!(rt.revoked.ids()));
    let replies = pidbox::broadcast_and_collect(
        &rt.broker,
        NAMESPACE,
        "hello",
        args,
        rt.events.forward(),
        MINGLE_TIMEOUT,
        rt.signing.for_tasks(),
    )
    .await;
    let replies = match replies {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "mingle failed");
            return;
        }
    };
    let mut nodes = Vec::new();
    for reply in replies {
        for (node, data) in reply {
            if node == rt.hostname {
                continue;
            }
            if let Some(r) = data.get("revoked") {
                let ids = rt.revoked.merge(r);
                tracing::debug!(node = %node, ids, "merged revoked ids");
            }
            if let Some(c) = data.get("clock").and_then(Value::as_u64) {
                rt.events.adjust(c);
            }
            nodes.push(node);
        }
    }
    if nodes.is_empty() {
        tracing::info!("mingle: all alone");
    } else {
        tracing::info!(nodes = %nodes.join(", "), "mingle: sync with nodes");
    }
}

/// How long mingle waits for replies (Celery: 1 s).
pub const MINGLE_TIMEOUT: Duration = Duration::from_secs(1);

async fn handle_message(rt: &Arc<Runtime>, payload: &[u8]) {
    let accept = pidbox::Accept {
        content_types: Some(crate::results::accepted_content_types(
            &rt.settings.accept_content,
        )),
        max_bytes: usize::try_from(rt.settings.max_message_bytes).unwrap_or(usize::MAX),
    };
    let request = match ControlRequest::parse_accepted(
        payload,
        rt.signing.verifier(),
        rt.signing.unsigned_tasks,
        &accept,
    ) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "ignored a bad remote control message");
            return;
        }
    };
    if !request.is_for(&rt.hostname) {
        return;
    }
    rt.events.adjust(request.clock);
    tracing::debug!(method = %request.method, "remote control");
    let Some(reply) = dispatch(rt, &request).await else {
        return;
    };
    let clock = rt.events.forward();
    let sent = pidbox::send_reply(
        &rt.broker,
        &request,
        &rt.hostname,
        reply,
        clock,
        &rt.signing.tasks,
    )
    .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, method = %request.method, "could not send a control reply");
    }
}

fn ok(v: impl Into<Value>) -> Value {
    json!({ "ok": v.into() })
}

fn nok(v: impl Into<Value>) -> Value {
    json!({ "error": v.into() })
}

/// Run one command; `None` means no reply (shutdown).
async fn dispatch(rt: &Arc<Runtime>, req: &ControlRequest) -> Option<Value> {
    let host = rt.hostname.as_str();
    let reply = match req.method.as_str() {
        "ping" => ok("pong"),
        "clock" => json!({ "clock": rt.events.clock() }),
        "hello" => hello(rt, req),
        "stats" => stats(rt),
        "active" => Value::Array(
            rt.tracked
                .all()
                .iter()
                .filter(|r| matches!(r.stage, Stage::Active(_)))
                .map(|r| r.info(host))
                .collect(),
        ),
        "reserved" => Value::Array(
            rt.tracked
                .all()
                .iter()
                .filter(|r| r.stage == Stage::Reserved)
                .map(|r| r.info(host))
                .collect(),
        ),
        "scheduled" => Value::Array(
            rt.tracked
                .all()
                .iter()
                .filter_map(|r| r.scheduled_info(host))
                .collect(),
        ),
        "query_task" => query_task(rt, req),
        "revoked" => json!(rt.revoked.ids()),
        "registered" => registered(rt),
        "active_queues" => {
            Value::Array(rt.consumed_queues().iter().map(|q| queue_dict(q)).collect())
        }
        "conf" => conf(rt),
        "revoke" => revoke(rt, req).await,
        "terminate" => {
            let mut req = req.clone();
            req.arguments.insert("terminate".into(), true.into());
            revoke(rt, &req).await
        }
        "rate_limit" => rate_limit(rt, req),
        "enable_events" | "disable_events" => {
            let on = req.method == "enable_events";
            let was = rt.events.task_events.swap(on, Ordering::Relaxed);
            let word = if on { "enabled" } else { "disabled" };
            if was == on {
                ok(format!("task events already {word}"))
            } else {
                ok(format!("task events {word}"))
            }
        }
        "heartbeat" => {
            events::worker_event(rt, "worker-heartbeat").await;
            Value::Null
        }
        "add_consumer" => add_consumer(rt, req).await,
        "cancel_consumer" => {
            let Some(queue) = req.arg_str("queue") else {
                return Some(nok("missing argument: queue"));
            };
            rt.remove_queue(queue);
            tracing::info!(queue, "no longer consuming from a queue (remote control)");
            ok(format!("no longer consuming from {queue}"))
        }
        "shutdown" => {
            let msg = req.arg_str("msg").unwrap_or("Got shutdown from remote");
            tracing::warn!("{msg}");
            rt.remote_stop.cancel();
            return None;
        }
        other => nok(format!("KeyError('{other}')")),
    };
    Some(reply)
}

fn hello(rt: &Runtime, req: &ControlRequest) -> Value {
    let from = req.arg_str("from_node").unwrap_or_default();
    if from == rt.hostname {
        return Value::Null;
    }
    tracing::info!(from_node = from, "sync with");
    if let Some(r) = req.arguments.get("revoked") {
        rt.revoked.merge(r);
    }
    json!({ "revoked": rt.revoked.ids(), "clock": rt.events.forward() })
}

fn stats(rt: &Runtime) -> Value {
    let totals: Map<String, Value> = rt
        .tracked
        .totals()
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    let concurrency = rt.concurrency;
    json!({
        "total": totals,
        "pid": std::process::id(),
        "clock": rt.events.clock().to_string(),
        "uptime": rt.started.elapsed().as_secs(),
        "pool": {
            "implementation": "celeriac:tokio",
            "max-concurrency": concurrency,
            "processes": [std::process::id()],
            "max-tasks-per-child": "N/A",
            "put-guarded-by-semaphore": false,
            "timeouts": [0, 0],
        },
        "broker": {
            "transport": "redis",
            "hostname": broker_host(rt.settings.broker_url.expose()),
        },
        "prefetch_count": rt.reservations_capacity,
        "rusage": {},
    })
}

/// The host part of a broker URL, without credentials.
fn broker_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?', ':'])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn query_task(rt: &Runtime, req: &ControlRequest) -> Value {
    let ids: Vec<String> = match req.arguments.get("ids") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    let mut out = Map::new();
    for r in rt.tracked.all().iter().filter(|r| ids.contains(&r.id)) {
        let state = match r.stage {
            Stage::Active(_) => "active",
            Stage::Reserved => "reserved",
            Stage::Scheduled(_) => "scheduled",
        };
        out.insert(r.id.clone(), json!([state, r.info(&rt.hostname)]));
    }
    Value::Object(out)
}

fn registered(rt: &Runtime) -> Value {
    let mut names: Vec<&str> = rt
        .registry
        .names()
        .filter(|n| !n.starts_with("celery."))
        .collect();
    names.sort_unstable();
    let list = names
        .into_iter()
        .map(|n| match rt.rate_limits.get(n).flatten() {
            Some(limit) => format!("{n} [rate_limit={}]", limit.text),
            None => n.to_string(),
        })
        .collect::<Vec<_>>();
    json!(list)
}

/// kombu's `Queue.as_dict(recurse=True)` for a queue on a direct exchange of the same name.
fn queue_dict(q: &str) -> Value {
    json!({
        "name": q,
        "exchange": {
            "name": q, "type": "direct", "arguments": null, "durable": true,
            "passive": false, "auto_delete": false, "delivery_mode": null, "no_declare": false,
        },
        "routing_key": q,
        "queue_arguments": null, "binding_arguments": null, "consumer_arguments": null,
        "durable": true, "exclusive": false, "auto_delete": false, "no_ack": false,
        "alias": null, "bindings": [], "no_declare": null, "expires": null,
        "message_ttl": null, "max_length": null, "max_length_bytes": null, "max_priority": null,
    })
}

fn conf(rt: &Runtime) -> Value {
    let s = &rt.settings;
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    let conf = json!({
        "broker_url": celeriac_secrets::redact(s.broker_url.expose()),
        "result_backend": s.result_backend.as_ref().map(|u| celeriac_secrets::redact(u.expose())),
        "result_expires": secs(s.result_expires),
        "result_extended": s.result_extended,
        "task_acks_late": s.task_acks_late,
        "task_acks_on_failure_or_timeout": s.task_acks_on_failure_or_timeout,
        "task_reject_on_worker_lost": s.task_reject_on_worker_lost,
        "task_track_started": s.task_track_started,
        "task_ignore_result": s.task_ignore_result,
        "task_default_queue": s.task_default_queue,
        "task_time_limit": secs(s.task_time_limit),
        "task_soft_time_limit": secs(s.task_soft_time_limit),
        "accept_content": s.accept_content,
        "timezone": s.timezone,
        "worker_concurrency": s.worker_concurrency,
        "async_concurrency": s.async_concurrency,
        "worker_prefetch_multiplier": s.worker_prefetch_multiplier,
        "worker_send_task_events": rt.events.task_events.load(Ordering::Relaxed),
        "broker_transport_options": Value::Object(s.broker_transport_options.clone()),
    });
    censor(conf)
}

/// Celery's `filter_hidden_settings`: mappings are censored key by key, at any depth; any other
/// value under a key naming a secret is replaced by `********`.
fn censor(value: Value) -> Value {
    const HIDDEN: [&str; 9] = [
        "API",
        "TOKEN",
        "KEY",
        "SECRET",
        "PASS",
        "PROFANITIES_LIST",
        "SIGNATURE",
        "DATABASE",
        "BEAT_DBURI",
    ];
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let upper = k.to_uppercase();
                    let v = match v {
                        v @ Value::Object(_) => censor(v),
                        _ if HIDDEN.iter().any(|h| upper.contains(h)) => "********".into(),
                        v => v,
                    };
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

fn python_set_repr(ids: &[String]) -> String {
    let items: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
    format!("{{{}}}", items.join(", "))
}

async fn revoke(rt: &Arc<Runtime>, req: &ControlRequest) -> Value {
    let mut ids: Vec<String> = match req.arguments.get("task_id") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    ids.dedup();
    revoked::revoke(rt, &ids).await;
    let active: Vec<String> = rt
        .tracked
        .all()
        .into_iter()
        .filter(|r| matches!(r.stage, Stage::Active(_)))
        .map(|r| r.id)
        .collect();
    for id in ids.iter().filter(|id| !active.contains(id)) {
        mark_revoked_if_pending(rt, id).await;
    }
    if req.arg_bool("terminate") {
        let mut terminated = Vec::new();
        for id in &ids {
            for tag in rt.tracked.tags_of(id) {
                let running = rt.running.lock().expect("running lock").remove(&tag);
                if let Some(r) = running {
                    tracing::info!(task_id = %id, "terminating (remote control)");
                    r.abort.abort();
                    if !terminated.contains(id) {
                        terminated.push(id.clone());
                    }
                }
            }
        }
        if terminated.is_empty() {
            return ok("terminate: tasks unknown");
        }
        return ok(format!("terminate: {}", terminated.join(", ")));
    }
    tracing::info!(ids = %ids.join(", "), "tasks flagged as revoked");
    ok(format!(
        "tasks {} flagged as revoked",
        python_set_repr(&ids)
    ))
}

/// Celery 5.7: write REVOKED at broadcast time for a task still PENDING/RECEIVED/RETRY/REJECTED.
async fn mark_revoked_if_pending(rt: &Runtime, id: &str) {
    let Some(backend) = &rt.backend else { return };
    let state = match backend.get(id).await {
        Ok(meta) => meta
            .as_ref()
            .and_then(|m| m.get("status"))
            .and_then(Value::as_str)
            .map_or_else(|| "PENDING".to_string(), str::to_string),
        Err(e) => {
            tracing::warn!(task_id = id, error = %e, "failed to mark a task as revoked in the backend");
            return;
        }
    };
    if !matches!(
        state.as_str(),
        "PENDING" | "RECEIVED" | "RETRY" | "REJECTED"
    ) {
        return;
    }
    if let Err(e) = backend.store(&TaskMeta::revoked(id, "revoked")).await {
        tracing::warn!(task_id = id, error = %e, "failed to mark a task as revoked in the backend");
    }
}

fn rate_limit(rt: &Runtime, req: &ControlRequest) -> Value {
    let Some(task) = req.arg_str("task_name") else {
        return nok("missing argument: task_name");
    };
    let text = match req.arguments.get("rate_limit") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let limit = if text.is_empty() {
        None
    } else {
        match RateLimit::from_str(&text) {
            Ok(l) => Some(l),
            Err(e) => return nok(format!("Invalid rate limit string: ValueError('{e}')")),
        }
    };
    if rt.registry.get(task).is_none() {
        tracing::error!(task, "rate limit attempt for an unknown task");
        return nok("unknown task");
    }
    let disabled = limit.is_none();
    rt.rate_limits.set(task, limit);
    if disabled {
        tracing::info!(task, "rate limits disabled (remote control)");
        ok("rate limit disabled successfully")
    } else {
        tracing::info!(task, rate_limit = %text, "new rate limit (remote control)");
        ok("new rate limit set successfully")
    }
}

async fn add_consumer(rt: &Runtime, req: &ControlRequest) -> Value {
    let Some(queue) = req.arg_str("queue") else {
        return nok("missing argument: queue");
    };
    if let Err(e) = rt.broker.declare_queues(&[queue.to_string()]).await {
        return nok(format!("cannot declare {queue}: {e}"));
    }
    rt.add_queue(queue);
    tracing::info!(queue, "consuming from a new queue (remote control)");
    ok(format!("add consumer {queue}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_is_censored_as_celery_does() {
        let conf = json!({
            "broker_url": "redis://:********@h:6379/0",
            "accept_content": ["json"],
            "broker_transport_options": {
                "visibility_timeout": 3600,
                "sentinel_kwargs": {"password": "s3cret", "socket_timeout": 1},
                "api_token": "t",
                "global_keyprefix": "app:",
                "secret_list": [1, 2],
            },
            "task_default_routing_key": "celery",
        });
        assert_eq!(
            censor(conf),
            json!({
                "broker_url": "redis://:********@h:6379/0",
                "accept_content": ["json"],
                "broker_transport_options": {
                    "visibility_timeout": 3600,
                    "sentinel_kwargs": {"password": "********", "socket_timeout": 1},
                    "api_token": "********",
                    // As in Celery: the name holds `KEY`.
                    "global_keyprefix": "********",
                    "secret_list": "********",
                },
                "task_default_routing_key": "********",
            })
        );
    }
}

//! Remote control ("pidbox"): answers `celery inspect` / `celery control` and Flower as a Python
//! worker does. A dedicated PUB/SUB connection subscribes to `/<db>.celery.pidbox` (resubscribing
//! after a lost connection); requests for this node run here and replies go to the caller's
//! reply queue (see broker-bridge's `pidbox`).

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use celeriac_broker_bridge::backend::TaskMeta;
use celeriac_broker_bridge::pidbox::{self, ControlRequest};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::config::{RateLimit, SerializerName, Settings, CONTROL_NAMESPACE};
use crate::message::inflight::Stage;
use crate::message::revoked;
use crate::runtime::Runtime;
use crate::task_api::TaskOptions;

/// Serve remote control until `stop`.
pub(crate) async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let channel = rt
        .broker()
        .fanout_channel(&pidbox::exchange(CONTROL_NAMESPACE), "");
    let mut backoff = Duration::from_millis(100);
    loop {
        let sub = tokio::select! {
            s = rt.broker().subscribe_fanout(std::slice::from_ref(&channel)) => s,
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
pub(crate) async fn mingle(rt: Arc<Runtime>) {
    let mut args = Map::new();
    args.insert("from_node".into(), rt.hostname().to_string().into());
    args.insert("revoked".into(), json!(rt.revoked().ids()));
    let replies = pidbox::broadcast_and_collect(
        rt.broker(),
        CONTROL_NAMESPACE,
        "hello",
        args,
        rt.events().forward(),
        MINGLE_TIMEOUT,
        rt.signing().for_tasks(),
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
            if node == rt.hostname() {
                continue;
            }
            if let Some(r) = data.get("revoked") {
                let ids = rt.revoked().merge(r);
                tracing::debug!(node = %node, ids, "merged revoked ids");
            }
            if let Some(c) = data.get("clock").and_then(Value::as_u64) {
                rt.events().adjust(c);
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
pub(crate) const MINGLE_TIMEOUT: Duration = Duration::from_secs(1);

async fn handle_message(rt: &Arc<Runtime>, payload: &[u8]) {
    let accept = pidbox::Accept {
        content_types: Some(crate::message::results::accepted_content_types(
            &rt.settings().accept_content,
        )),
        max_bytes: usize::try_from(rt.settings().max_message_bytes).unwrap_or(usize::MAX),
    };
    let request = match ControlRequest::parse_accepted(
        payload,
        rt.signing().verifier(),
        rt.signing().unsigned_tasks,
        &accept,
    ) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "ignored a bad remote control message");
            return;
        }
    };
    if !request.is_for(rt.hostname()) {
        return;
    }
    rt.events().adjust(request.clock);
    tracing::debug!(method = %request.method, "remote control");
    let Some(reply) = dispatch(rt, &request).await else {
        return;
    };
    let clock = rt.events().forward();
    let sent = pidbox::send_reply(
        rt.broker(),
        &request,
        rt.hostname(),
        reply,
        clock,
        &rt.signing().tasks,
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
    let reply = match req.method.as_str() {
        "ping" => ok("pong"),
        "clock" => json!({ "clock": rt.events().clock() }),
        "hello" => hello(rt, req),
        "stats" => stats(rt),
        "active" | "reserved" | "scheduled" => in_stage(rt, &req.method),
        "query_task" => query_task(rt, req),
        "revoked" => json!(rt.revoked().ids()),
        "registered" => registered(rt, req),
        "active_queues" => {
            Value::Array(rt.consumed_queues().iter().map(|q| queue_dict(q)).collect())
        }
        "conf" | "dump_conf" => conf(rt),
        "report" => ok(report(rt)),
        "revoke" => revoke(rt, req).await,
        "terminate" => {
            let mut req = req.clone();
            req.arguments.insert("terminate".into(), true.into());
            revoke(rt, &req).await
        }
        "revoke_by_stamped_headers" => revoke_by_stamped_headers(rt, req),
        "rate_limit" => rate_limit(rt, req),
        "enable_events" | "disable_events" => {
            let on = req.method == "enable_events";
            let was = rt.events().task_events.swap(on, Ordering::Relaxed);
            let word = if on { "enabled" } else { "disabled" };
            if was == on {
                ok(format!("task events already {word}"))
            } else {
                ok(format!("task events {word}"))
            }
        }
        "heartbeat" => {
            rt.events()
                .worker_event("worker-heartbeat", rt.load())
                .await;
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
            rt.remote_stop().cancel();
            return None;
        }
        other => nok(format!("KeyError('{other}')")),
    };
    Some(reply)
}

fn hello(rt: &Runtime, req: &ControlRequest) -> Value {
    let from = req.arg_str("from_node").unwrap_or_default();
    if from == rt.hostname() {
        return Value::Null;
    }
    tracing::info!(from_node = from, "sync with");
    if let Some(r) = req.arguments.get("revoked") {
        rt.revoked().merge(r);
    }
    json!({ "revoked": rt.revoked().ids(), "clock": rt.events().forward() })
}

fn stats(rt: &Runtime) -> Value {
    let totals: Map<String, Value> = rt
        .inflight()
        .totals()
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    let concurrency = rt.concurrency();
    json!({
        "total": totals,
        "pid": std::process::id(),
        "clock": rt.events().clock().to_string(),
        "uptime": rt.started().elapsed().as_secs(),
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
            "hostname": broker_host(rt.settings().broker_url.expose()),
        },
        "prefetch_count": rt.reservations_capacity().unwrap_or(0),
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
    for r in rt
        .inflight()
        .requests()
        .iter()
        .filter(|r| ids.contains(&r.id))
    {
        out.insert(
            r.id.clone(),
            json!([stage_name(&r.stage), r.info(rt.hostname())]),
        );
    }
    Value::Object(out)
}

/// A request's stage as `query_task` names it, and the command listing that stage.
fn stage_name(stage: &Stage) -> &'static str {
    match stage {
        Stage::Active(_) => "active",
        Stage::Reserved => "reserved",
        Stage::Scheduled(_) => "scheduled",
    }
}

/// The `active`, `reserved` or `scheduled` reply: the in-flight requests in that `stage`, as
/// Celery lists them (a scheduled one with its ETA and priority).
fn in_stage(rt: &Runtime, stage: &str) -> Value {
    let host = rt.hostname();
    let requests = rt.inflight().requests();
    let listed = requests
        .iter()
        .filter(|r| stage_name(&r.stage) == stage)
        .filter_map(|r| match r.stage {
            Stage::Scheduled(_) => r.scheduled_info(host),
            _ => Some(r.info(host)),
        });
    Value::Array(listed.collect())
}

/// The task attributes `registered` shows when the caller names none (Celery's
/// `DEFAULT_TASK_INFO_ITEMS`).
const DEFAULT_TASK_INFO_ITEMS: [&str; 3] = ["exchange", "routing_key", "rate_limit"];

/// `registered`: each task as `NAME [attr=value ...]` with the attributes asked for
/// (`taskinfoitems`) that the task has (Python's `str()` of each); `celery.*` builtins only
/// with `builtins`.
fn registered(rt: &Runtime, req: &ControlRequest) -> Value {
    let asked: Vec<&str> = match req.arguments.get("taskinfoitems") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(item)) => vec![item.as_str()],
        _ => Vec::new(),
    };
    let mut items = if asked.is_empty() {
        DEFAULT_TASK_INFO_ITEMS.to_vec()
    } else {
        asked
    };
    items.retain(|i| !i.starts_with('_'));
    let builtins = req.arg_bool("builtins");
    let list: Vec<Value> = rt
        .registry()
        .names()
        .filter(|n| builtins || !n.starts_with("celery."))
        .filter_map(|name| {
            let task = rt.registry().get(name)?;
            let remote = rt.rate_limits().get(name);
            Some(Value::from(task_info(name, &items, |attr| {
                task_attribute(name, &task.options, rt.settings(), remote.clone(), attr)
            })))
        })
        .collect();
    Value::Array(list)
}

/// `NAME [attr=value ...]` with the attributes of `items` that `attr` finds (each once), or
/// `NAME` alone when it finds none.
fn task_info(name: &str, items: &[&str], attr: impl Fn(&str) -> Option<String>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    let mut info: Vec<String> = Vec::new();
    for item in items {
        if seen.contains(item) {
            continue;
        }
        seen.push(item);
        if let Some(v) = attr(item) {
            info.push(format!("{item}={v}"));
        }
    }
    if info.is_empty() {
        name.to_string()
    } else {
        format!("{name} [{}]", info.join(" "))
    }
}

/// Python's `str(getattr(task, attr, None))` for the attributes celeriac's tasks have, the
/// worker's setting standing in where the task sets none (Celery's `Task.from_config`);
/// `None` when Python's would be `None`. `remote` is the rate limit set by remote control.
fn task_attribute(
    name: &str,
    o: &TaskOptions,
    s: &Settings,
    remote: Option<Option<RateLimit>>,
    attr: &str,
) -> Option<String> {
    let py_bool = |b: bool| if b { "True" } else { "False" }.to_string();
    let py_secs = |d: Duration| {
        if d.subsec_nanos() == 0 {
            d.as_secs().to_string()
        } else {
            format!("{:?}", d.as_secs_f64())
        }
    };
    match attr {
        "name" => Some(name.to_string()),
        "rate_limit" => match remote {
            Some(remote) => remote.map(|l| l.text),
            None => o
                .rate_limit
                .as_ref()
                .or(s.task_default_rate_limit.as_ref())
                .map(|l| l.text.clone()),
        },
        "max_retries" => o.max_retries.map(|n| n.to_string()),
        "default_retry_delay" => Some(py_secs(o.default_retry_delay)),
        "acks_late" => Some(py_bool(o.acks_late.unwrap_or(s.task_acks_late))),
        "acks_on_failure_or_timeout" => Some(py_bool(
            o.acks_on_failure_or_timeout
                .unwrap_or(s.task_acks_on_failure_or_timeout),
        )),
        "reject_on_worker_lost" => Some(py_bool(
            o.reject_on_worker_lost
                .unwrap_or(s.task_reject_on_worker_lost),
        )),
        "ignore_result" => Some(py_bool(o.ignore_result.unwrap_or(s.task_ignore_result))),
        "track_started" => Some(py_bool(o.track_started.unwrap_or(s.task_track_started))),
        "store_errors_even_if_ignored" => Some(py_bool(s.task_store_errors_even_if_ignored)),
        "time_limit" => o.time_limit.or(s.task_time_limit).map(py_secs),
        "soft_time_limit" => o.soft_time_limit.or(s.task_soft_time_limit).map(py_secs),
        "serializer" => Some(serializer_name(s.task_serializer).to_string()),
        _ => None,
    }
}

fn serializer_name(s: SerializerName) -> &'static str {
    match s {
        SerializerName::Json => "json",
        SerializerName::Auth => "auth",
    }
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

/// `conf`: the worker's settings under Celery's names, censored as Celery censors them. Celery
/// lists the settings its app was given; celeriac lists every Celery setting it honours with
/// its effective value, and the few Celery worker settings it does not read with the value
/// that describes what it does (`include`: no modules imported; `deprecated_settings`: none).
fn conf(rt: &Runtime) -> Value {
    censor(Value::Object(conf_table(rt)))
}

fn conf_table(rt: &Runtime) -> Map<String, Value> {
    let s = rt.settings();
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    let conf = json!({
        "broker_url": celeriac_secrets::redact(s.broker_url.expose()),
        "result_backend": s.result_backend.as_ref().map(|u| celeriac_secrets::redact(u.expose())),
        "result_expires": secs(s.result_expires),
        "result_extended": s.result_extended,
        "result_accept_content": s.result_accept_content,
        "result_serializer": serializer_name(s.result_serializer),
        "task_acks_late": s.task_acks_late,
        "task_acks_on_failure_or_timeout": s.task_acks_on_failure_or_timeout,
        "task_reject_on_worker_lost": s.task_reject_on_worker_lost,
        "task_track_started": s.task_track_started,
        "task_ignore_result": s.task_ignore_result,
        "task_store_errors_even_if_ignored": s.task_store_errors_even_if_ignored,
        "task_default_queue": s.task_default_queue,
        "task_default_retry_delay": s.task_default_retry_delay.as_secs_f64(),
        "task_default_rate_limit": s.task_default_rate_limit.as_ref().map(|l| l.text.clone()),
        "task_time_limit": secs(s.task_time_limit),
        "task_soft_time_limit": secs(s.task_soft_time_limit),
        "task_serializer": serializer_name(s.task_serializer),
        "event_serializer": serializer_name(s.event_serializer),
        "accept_content": s.accept_content,
        "timezone": s.timezone,
        "enable_utc": true,
        "worker_concurrency": s.worker_concurrency,
        "async_concurrency": s.async_concurrency,
        "worker_prefetch_multiplier": s.worker_prefetch_multiplier,
        "worker_send_task_events": rt.events().task_events.load(Ordering::Relaxed),
        "worker_max_tasks_per_child": s.worker_max_tasks_per_child,
        "worker_max_memory_per_child": s.worker_max_memory_per_child,
        "worker_soft_shutdown_timeout": s.worker_soft_shutdown_timeout.as_secs_f64(),
        "worker_hijack_root_logger": true,
        "worker_log_color": false,
        "broker_heartbeat": null,
        "broker_transport_options": Value::Object(s.broker_transport_options.clone()),
        "result_backend_transport_options":
            Value::Object(s.result_backend_transport_options.clone()),
        "include": [],
        "deprecated_settings": [],
    });
    match conf {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

/// `report`: Celery's bug-report text (`app.bugreport()`), its software line naming the Celery
/// version whose protocol celeriac speaks and celeriac's own in place of Celery's codename.
fn report(rt: &Runtime) -> String {
    let results = rt.settings().result_backend.as_ref().map_or_else(
        || "disabled".to_string(),
        |u| celeriac_secrets::redact(u.expose()),
    );
    let settings = match censor(Value::Object(conf_table(rt))) {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", celeriac_broker_bridge::codec::value_repr(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    format!(
        "\nsoftware -> celery:{CELERY_VERSION} (celeriac {}) kombu:- py:-\n            \
         billiard:- redis\nplatform -> system:{} arch:{}\n            \
         kernel version:- imp:Rust\nloader   -> celeriac\n\
         settings -> transport:redis results:{results}\n\n{settings}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH,
    )
}

/// The Celery release whose behaviour and protocol celeriac follows.
const CELERY_VERSION: &str = "5.7.0";

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
    rt.revoked().revoke(&ids).await;
    let active: Vec<String> = rt
        .inflight()
        .requests()
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
            if rt.inflight().terminate(id) {
                tracing::info!(task_id = %id, "terminating (remote control)");
                if !terminated.contains(id) {
                    terminated.push(id.clone());
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

/// `revoke_by_stamped_headers`: the stamps are kept (tasks carrying one are refused when they
/// come to run); with `terminate`, the running tasks carrying one are terminated.
fn revoke_by_stamped_headers(rt: &Runtime, req: &ControlRequest) -> Value {
    let headers: Map<String, Value> = match req.arguments.get("headers") {
        Some(Value::Object(map)) => map.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|h| {
                let mut parts = h.split('=');
                let name = parts.next()?;
                Some((name.to_string(), Value::from(parts.next()?)))
            })
            .collect(),
        _ => return nok("missing argument: headers"),
    };
    rt.revoked().revoke_stamps(&headers);
    let shown = celeriac_broker_bridge::codec::value_repr(&Value::Object(headers.clone()));
    if !req.arg_bool("terminate") {
        return ok(format!(
            "headers {shown} flagged as revoked, but not terminated"
        ));
    }
    // Stamp name → the values by which running tasks were terminated.
    let mut terminated: Vec<(String, Vec<Value>)> = Vec::new();
    for r in rt.inflight().requests() {
        if !matches!(r.stage, Stage::Active(_)) {
            continue;
        }
        let mut hit = false;
        for (name, expected) in &headers {
            let actual = match r.stamps.get(name) {
                None | Some(Value::Null) => continue,
                Some(a) => revoked::maybe_list(a),
            };
            let expected = revoked::maybe_list(expected);
            let common: Vec<Value> = actual
                .into_iter()
                .filter(|a| expected.iter().any(|e| revoked::py_eq(a, e)))
                .collect();
            if common.is_empty() {
                continue;
            }
            hit = true;
            let pos = match terminated.iter().position(|(n, _)| n == name) {
                Some(p) => p,
                None => {
                    terminated.push((name.clone(), Vec::new()));
                    terminated.len() - 1
                }
            };
            for v in common {
                if !terminated[pos].1.contains(&v) {
                    terminated[pos].1.push(v);
                }
            }
        }
        if hit && rt.inflight().terminate(&r.id) {
            tracing::info!(task_id = %r.id, "terminating (revoked by stamped headers)");
        }
    }
    if terminated.is_empty() {
        return ok(format!("headers {shown} were not terminated"));
    }
    let sets: Vec<String> = terminated
        .iter()
        .map(|(name, values)| {
            let values: Vec<String> = values
                .iter()
                .map(celeriac_broker_bridge::codec::value_repr)
                .collect();
            format!("'{name}': {{{}}}", values.join(", "))
        })
        .collect();
    ok(format!(
        "headers defaultdict(<class 'set'>, {{{}}}) revoked",
        sets.join(", ")
    ))
}

/// Celery 5.7: write REVOKED at broadcast time for a task still PENDING/RECEIVED/RETRY/REJECTED.
async fn mark_revoked_if_pending(rt: &Runtime, id: &str) {
    let Some(backend) = rt.backend() else { return };
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
    if rt.registry().get(task).is_none() {
        tracing::error!(task, "rate limit attempt for an unknown task");
        return nok("unknown task");
    }
    let disabled = limit.is_none();
    rt.rate_limits().set(task, limit);
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
    if let Err(e) = rt.broker().declare_queues(&[queue.to_string()]).await {
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

    #[test]
    fn registered_formats_task_attributes_as_celery_does() {
        let s = Settings::default();
        let o = TaskOptions {
            acks_late: Some(true),
            ..TaskOptions::default()
        };
        let attr = |item: &str| task_attribute("t.add", &o, &s, None, item);
        assert_eq!(task_info("t.add", &["name"], attr), "t.add [name=t.add]");
        // No exchange, routing key nor rate limit: Python's `getattr` gives None for all three.
        assert_eq!(task_info("t.add", &DEFAULT_TASK_INFO_ITEMS, attr), "t.add");
        assert_eq!(
            task_info(
                "t.add",
                &[
                    "acks_late",
                    "max_retries",
                    "default_retry_delay",
                    "name",
                    "acks_late",
                    "nope"
                ],
                attr
            ),
            "t.add [acks_late=True max_retries=3 default_retry_delay=180 name=t.add]"
        );
        let limit = RateLimit::from_str("10/m").expect("a rate limit");
        let remote = |item: &str| task_attribute("t.add", &o, &s, Some(Some(limit.clone())), item);
        assert_eq!(
            task_info("t.add", &DEFAULT_TASK_INFO_ITEMS, remote),
            "t.add [rate_limit=10/m]"
        );
        let unlimited = TaskOptions {
            max_retries: None,
            time_limit: Some(Duration::from_millis(1500)),
            ..TaskOptions::default()
        };
        let attr = |item: &str| task_attribute("t.x", &unlimited, &s, None, item);
        assert_eq!(
            task_info("t.x", &["max_retries", "time_limit", "ignore_result"], attr),
            "t.x [time_limit=1.5 ignore_result=False]"
        );
    }
}

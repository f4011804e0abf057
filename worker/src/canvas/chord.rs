//! Chord bookkeeping with the Redis backend (native join), as Celery's `on_chord_part_return`:
//! every header member returns its part; the one completing the set (and winning the claim)
//! publishes the body with the header results in `group_index` order, or fails it with
//! `ChordError` when a member failed.

use celeriac_broker_bridge::backend::group::ResultTree;
use celeriac_broker_bridge::backend::{
    ChordClaim, ChordPart, ExceptionInfo, PartResult, PartReturn, TaskMeta, TaskState,
};
use celeriac_broker_bridge::codec::{args_repr, Signature, TaskMessage};
use serde_json::{Map, Value};

use super::expand::{Parent, Plan};
use crate::message::retrying::{retrying, Write};
use crate::runtime::Runtime;

/// Celery's `result_chord_join_timeout` default, which sets the claim's lifetime.
const JOIN_TIMEOUT_S: f64 = 3.0;

/// A chord header member.
pub(crate) struct Member<'a> {
    /// Its task id.
    pub task_id: &'a str,
    /// The chord's group id.
    pub group_id: &'a str,
    /// Its place in the header.
    pub group_index: Option<i64>,
    /// The chord body.
    pub body: &'a Signature,
    /// Ids the body is published with if this member completes the set.
    pub parent: Parent,
    /// The delivery tag of the message whose processing returns this part (a redelivery keeps
    /// it): the body is published once per run of the chord, and again when a frozen chord is
    /// applied again (see [`super::publish`]).
    pub run: Option<&'a str>,
}

/// If `msg` is a chord header member, return its part (any final state).
pub(crate) async fn part_return(rt: &Runtime, msg: &TaskMessage, state: TaskState, result: Value) {
    let (Some(body), Some(gid)) = (&msg.chord, &msg.group) else {
        return;
    };
    let member = Member {
        task_id: &msg.id,
        group_id: gid,
        group_index: msg.group_index,
        body,
        parent: super::parent_of(msg),
        run: msg.delivery_tag.as_deref(),
    };
    // Boxed: only chord members pay for this large future; every task's own stays small.
    Box::pin(return_part(rt, member, state, result)).await;
}

/// Return one member's part and, if it completes the chord, fire or fail the body.
pub(crate) async fn return_part(rt: &Runtime, member: Member<'_>, state: TaskState, result: Value) {
    let Some(backend) = rt.backend() else {
        tracing::error!(group_id = %member.group_id, "chord member without a result backend: the chord cannot complete");
        return;
    };
    let part = ChordPart {
        group_id: member.group_id.to_string(),
        task_id: member.task_id.to_string(),
        group_index: member.group_index,
        state,
        result,
    };
    // One token for every attempt: if a reply is lost after the claim was taken, the next
    // attempt still gets the claim.
    let token = celeriac_broker_bridge::backend::ResultBackend::new_claim_token();
    let outcome = retrying(rt.metrics(), Write::ChordPart, || {
        backend.chord_part_return_with_token(&part, JOIN_TIMEOUT_S, &token)
    })
    .await;
    let claim = match outcome {
        Ok(PartReturn::Complete(claim)) => claim,
        Ok(PartReturn::AlreadyDone) => {
            tracing::info!(group_id = %member.group_id, "chord already completed; late part ignored");
            return;
        }
        Ok(PartReturn::Pending) => return,
        Err(e) => {
            tracing::error!(group_id = %member.group_id, error = %e, "could not return the chord part");
            return;
        }
    };
    fire(rt, &member, claim).await;
}

async fn fire(rt: &Runtime, member: &Member<'_>, claim: ChordClaim) {
    let Some(backend) = rt.backend() else { return };
    // Without a delivery tag, the claim identifies the run.
    let run = member.run.unwrap_or(&claim.token);
    let results = match header_results(rt, &claim).await {
        Ok(results) => results,
        Err(exc) => {
            tracing::warn!(group_id = %claim.group_id, error = ?exc.exc_message, "chord failed");
            let cause = claim
                .parts
                .iter()
                .find(|p| p.propagates())
                .map(|p| stored_exception(&p.result));
            chord_error(rt, member.body, &exc, cause.as_ref(), run).await;
            if let Err(e) = backend.chord_drop_size(&claim.group_id).await {
                tracing::error!(error = %e, "could not drop the chord size");
            }
            return;
        }
    };
    match retrying(rt.metrics(), Write::ChordClaim, || {
        backend.chord_extend_claim(&claim)
    })
    .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(group_id = %claim.group_id, "chord body not published: the claim is no longer ours");
            return;
        }
        Err(e) => {
            tracing::error!(group_id = %claim.group_id, error = %e, "could not extend the chord claim; body not published");
            return;
        }
    }
    let mut plan = Plan::default();
    let published = match plan.apply(
        member.body,
        &[Value::Array(results)],
        &Map::new(),
        &member.parent,
    ) {
        Ok(()) => super::publish(rt, plan, Some(run)).await,
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = published {
        let exc = chord_exception(format!("Callback error: {e}"));
        chord_error(rt, member.body, &exc, None, run).await;
    } else {
        tracing::info!(group_id = %claim.group_id, "chord body published");
    }
    match retrying(rt.metrics(), Write::ChordCleanup, || {
        backend.chord_finish(&claim)
    })
    .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(group_id = %claim.group_id, "chord claim lost before cleanup; keys left to expire")
        }
        Err(e) => tracing::error!(group_id = %claim.group_id, error = %e, "chord cleanup failed"),
    }
}

/// The header results in order, or the `ChordError` of the first failed member. A header
/// `GroupResult` saved by the producer (nested groups) is joined instead, keeping its structure.
async fn header_results(rt: &Runtime, claim: &ChordClaim) -> Result<Vec<Value>, ExceptionInfo> {
    if let Some(backend) = rt.backend() {
        if let Ok(Some(ResultTree::Group(_, members))) =
            backend.restore_group(&claim.group_id).await
        {
            let mut out = Vec::with_capacity(members.len());
            for m in &members {
                out.push(Box::pin(join_tree(rt, m)).await?);
            }
            return Ok(out);
        }
    }
    claim
        .parts
        .iter()
        .map(|p| {
            if p.propagates() {
                Err(dependency_error(p))
            } else {
                Ok(p.result.clone())
            }
        })
        .collect()
}

async fn join_tree(rt: &Runtime, tree: &ResultTree) -> Result<Value, ExceptionInfo> {
    match tree {
        ResultTree::Task(id) => {
            let meta = match rt.backend() {
                Some(b) => b.get(id).await.ok().flatten(),
                None => None,
            };
            let meta = meta.unwrap_or(Value::Null);
            let part = PartResult {
                task_id: id.clone(),
                state: meta
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("PENDING")
                    .to_string(),
                result: meta.get("result").cloned().unwrap_or(Value::Null),
            };
            if part.propagates() {
                Err(dependency_error(&part))
            } else {
                Ok(part.result)
            }
        }
        ResultTree::Group(_, members) => {
            let mut out = Vec::with_capacity(members.len());
            for m in members {
                out.push(Box::pin(join_tree(rt, m)).await?);
            }
            Ok(Value::Array(out))
        }
    }
}

fn chord_exception(message: String) -> ExceptionInfo {
    ExceptionInfo::celery("ChordError", message)
}

/// A stored exception dict (`exc_type`, `exc_message`, `exc_module`) read back.
fn stored_exception(v: &Value) -> ExceptionInfo {
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let args = match v.get("exc_message") {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other.clone()],
    };
    ExceptionInfo::new(
        text("exc_module").unwrap_or("builtins"),
        text("exc_type").unwrap_or("Exception"),
        args,
    )
}

/// A `link_error`-like option as a list of signatures (one signature or a list).
fn signatures(v: Option<&Value>) -> Vec<Signature> {
    match v {
        Some(v @ Value::Object(_)) => Signature::from_value(v, "signature").into_iter().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| Signature::from_value(v, "signature").ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// Celery's `_result_errbacks`: the id of a signature's result (a chord's is its body's) and
/// the errbacks linked to it (a chord's own on the way, a group's tasks' too).
fn result_errbacks(sig: &Signature) -> (Option<String>, Vec<Signature>) {
    let mut sig = sig.clone();
    let mut errbacks = Vec::new();
    while sig.subtask_type.as_deref() == Some("chord") {
        let Some(Ok(body)) = sig
            .kwargs
            .get("body")
            .map(|b| Signature::from_value(b, "body"))
        else {
            break;
        };
        errbacks.extend(signatures(sig.options.get("link_error")));
        sig = body;
    }
    errbacks.extend(signatures(sig.options.get("link_error")));
    if sig.subtask_type.as_deref() == Some("group") {
        for t in super::expand::tasks_of(&sig, "tasks").unwrap_or_default() {
            errbacks.extend(result_errbacks(&t).1);
        }
    }
    (sig.task_id().map(str::to_string), errbacks)
}

/// The group body of a failed chord: every task's errbacks and FAILURE, then the group's.
async fn group_chord_error(
    rt: &Runtime,
    body: &Signature,
    tasks: &[Signature],
    exc: &ExceptionInfo,
    run: &str,
) {
    let group_errbacks = signatures(body.options.get("link_error"));
    for task in tasks {
        let (id, own) = result_errbacks(task);
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut errbacks: Vec<Signature> = Vec::new();
        for eb in own.into_iter().chain(group_errbacks.iter().cloned()) {
            if !errbacks.contains(&eb) {
                errbacks.push(eb);
            }
        }
        let parent = Parent {
            root_id: Some(id.clone()),
            parent_id: Some(id.clone()),
        };
        let request = crate::canvas::errbacks::request_of_signature(&id, task);
        let children =
            super::call_errbacks_for(rt, &errbacks, &request, exc, &parent, Some(run)).await;
        store_failure(rt, &id, exc, children).await;
    }
    if let Some(gid) = body.task_id() {
        store_failure(rt, gid, exc, Vec::new()).await;
    }
}

async fn store_failure(rt: &Runtime, id: &str, exc: &ExceptionInfo, children: Vec<Value>) {
    if let Some(backend) = rt.backend() {
        let mut meta = TaskMeta::failure(id, exc, None);
        meta.children = Some(children);
        if let Err(e) = retrying(rt.metrics(), Write::Result, || backend.store(&meta)).await {
            tracing::error!(task_id = %id, error = %e, "could not store the chord error");
        }
    }
}

/// `ChordError("Dependency <id> raised <repr(exc)>")`, as Celery words it.
pub(crate) fn dependency_error(part: &PartResult) -> ExceptionInfo {
    chord_exception(format!(
        "Dependency {} raised {}",
        part.task_id,
        exception_repr(&part.result)
    ))
}

/// Python's `repr()` of a stored exception dict, e.g. `ValueError('boom')`.
pub(crate) fn exception_repr(exc: &Value) -> String {
    let name = exc
        .get("exc_type")
        .and_then(Value::as_str)
        .unwrap_or("Exception");
    let args = match exc.get("exc_message") {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other.clone()],
    };
    let tuple = args_repr(&args);
    let inner = tuple
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(&tuple);
    let inner = if args.len() == 1 {
        inner.strip_suffix(',').unwrap_or(inner)
    } else {
        inner
    };
    format!("{name}({inner})")
}

/// Celery's `chord_error_from_stack`: the body's errbacks, FAILURE stored for the body (with
/// the errbacks' group as its `children`), and its chain failed.
///
/// A group body (Celery's `_handle_group_chord_error`): each of its tasks calls its own
/// errbacks and the group's, once each, with the exception that failed the header (`cause`),
/// and is stored FAILURE with it, as is the group.
async fn chord_error(
    rt: &Runtime,
    body: &Signature,
    exc: &ExceptionInfo,
    cause: Option<&ExceptionInfo>,
    run: &str,
) {
    if body.subtask_type.as_deref() == Some("group") {
        if let Ok(tasks) = super::expand::tasks_of(body, "tasks") {
            group_chord_error(rt, body, &tasks, cause.unwrap_or(exc), run).await;
            let chain = signatures(body.options.get("chain"));
            Box::pin(super::fail_chain(rt, &chain, exc)).await;
            return;
        }
    }
    let body_id = body
        .task_id()
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    let errbacks = match body.options.get("link_error") {
        Some(v @ Value::Object(_)) => Signature::from_value(v, "link_error").into_iter().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| Signature::from_value(v, "link_error").ok())
            .collect(),
        _ => Vec::new(),
    };
    let parent = Parent {
        root_id: Some(body_id.clone()),
        parent_id: Some(body_id.clone()),
    };
    let request = crate::canvas::errbacks::request_of_signature(&body_id, body);
    // The errbacks' group is a child of the task completing the chord, which Celery stores
    // as the body's `children` (the failing body is stored from within that task).
    let children = super::call_errbacks_for(rt, &errbacks, &request, exc, &parent, Some(run)).await;
    if let Some(backend) = rt.backend() {
        let mut meta = TaskMeta::failure(body_id.clone(), exc, None);
        meta.children = Some(children);
        if let Err(e) = retrying(rt.metrics(), Write::Result, || backend.store(&meta)).await {
            tracing::error!(task_id = %body_id, error = %e, "could not store the chord error");
        }
    }
    let chain = match body.options.get("chain") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| Signature::from_value(v, "options.chain").ok())
            .collect(),
        _ => Vec::new(),
    };
    Box::pin(super::fail_chain(rt, &chain, exc)).await;
}

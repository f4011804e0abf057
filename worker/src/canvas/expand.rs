//! Applying a signature, as Celery's `Signature.apply_async` does, turned into a [`Plan`]: the
//! messages to publish and the chord sizes to store first. Pure: no I/O, so it is unit-tested.
//!
//! * plain task → one message (`args = prefix + args` unless `immutable`);
//! * `celery.group` → one message per member with `group`/`group_index`; a group given a
//!   chain to continue with is upgraded to a chord whose body is the next step (as Celery does);
//! * `celery.chord` → the header members with `group`, `group_index` and `embed.chord` = body
//!   (body `options.group_id` = the group id unless the chord's options name another, the
//!   chord's other options, `options.chain` = the rest of an enclosing chain),
//!   and the chord size of the group; an empty header applies the body with `[]`;
//! * `celery.chain` → its first task (the chain's own args after the prefix, unless the chain
//!   is immutable), carrying the rest (reversed) as `embed.chain`;
//! * other canvas types (`xmap`, `xstarmap`, `chunks`) are Celery builtin tasks: sent as such.

use celeriac_broker_bridge::backend::group::{group_tuple, task_tuple};
use celeriac_broker_bridge::codec::{Signature, TaskMessage};
use serde_json::{Map, Value};

/// Options of a canvas signature that its members inherit (as `apply_async(**options)`).
const INHERITED: [&str; 4] = ["queue", "priority", "eta", "expires"];

/// Ids of the task applying the signature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parent {
    /// The workflow's root id (the applying task's `root_id`, or its id).
    pub root_id: Option<String>,
    /// The applying task's id.
    pub parent_id: Option<String>,
}

/// What applying signatures publishes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Plan {
    /// Chord sizes to store before any message is published: `(group id, size)`.
    pub chord_sizes: Vec<(String, usize)>,
    /// Messages to publish, in order (`routing_key` = `options.queue`, `None`: default queue).
    pub messages: Vec<TaskMessage>,
    /// Result tuples of what was applied (the applying task's `children`).
    pub children: Vec<Value>,
}

/// A signature that cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot apply signature {task}: {reason}")]
pub(crate) struct CanvasError {
    /// The signature's task name.
    pub task: String,
    /// What is wrong with it.
    pub reason: String,
}

fn err(sig: &Signature, reason: impl Into<String>) -> CanvasError {
    CanvasError {
        task: sig.task.clone(),
        reason: reason.into(),
    }
}

impl Plan {
    /// Apply `sig` with `prefix` prepended to its args (unless immutable) and `call` options
    /// overriding its own; record the result tuple in `children`.
    pub(crate) fn apply(
        &mut self,
        sig: &Signature,
        prefix: &[Value],
        call: &Map<String, Value>,
        parent: &Parent,
    ) -> Result<(), CanvasError> {
        let tuple = self.apply_one(sig, prefix, call, parent)?;
        self.children.push(tuple);
        Ok(())
    }

    fn apply_one(
        &mut self,
        sig: &Signature,
        prefix: &[Value],
        call: &Map<String, Value>,
        parent: &Parent,
    ) -> Result<Value, CanvasError> {
        let mut options = sig.options.clone();
        for (k, v) in call {
            options.insert(k.clone(), v.clone());
        }
        match sig.subtask_type.as_deref() {
            Some("group") => self.group(sig, options, prefix, parent),
            Some("chord") => self.chord(sig, options, prefix, parent),
            Some("chain") => self.chain(sig, options, prefix, parent),
            _ => self.plain(sig, options, prefix, parent),
        }
    }

    fn plain(
        &mut self,
        sig: &Signature,
        options: Map<String, Value>,
        prefix: &[Value],
        parent: &Parent,
    ) -> Result<Value, CanvasError> {
        let mut s = sig.clone();
        s.subtask_type = None;
        s.options = options;
        s.args = with_prefix(sig, prefix);
        let msg =
            TaskMessage::from_signature(&s, parent.root_id.as_deref(), parent.parent_id.as_deref())
                .map_err(|e| err(sig, e.to_string()))?;
        let tuple = task_tuple(&msg.id);
        self.messages.push(msg);
        Ok(tuple)
    }

    fn group(
        &mut self,
        sig: &Signature,
        options: Map<String, Value>,
        prefix: &[Value],
        parent: &Parent,
    ) -> Result<Value, CanvasError> {
        let mut rest = chain_option(sig, &options)?;
        if let Some(next) = rest.pop() {
            // A group followed by more steps: Celery runs it as a chord of the next step.
            let mut body = next;
            if !rest.is_empty() {
                body.options.insert("chain".into(), signature_list(&rest));
            }
            let mut chord = Signature::new("celery.chord", Vec::new(), Map::new());
            chord.subtask_type = Some("chord".into());
            let mut header = sig.clone();
            header.options.remove("chain");
            chord.kwargs.insert("header".into(), header.to_value());
            chord.kwargs.insert("body".into(), body.to_value());
            let mut opts = options;
            opts.remove("chain");
            return self.chord(&chord, opts, prefix, parent);
        }
        let tasks = tasks_of(sig, "tasks")?;
        let gid = id_option(&options).unwrap_or_else(new_id);
        let inherited = inherited(&options);
        // A group that is (the end of a chain in) a chord's header: as Celery freezes it with
        // the chord's group id and body, its tasks are the chord's parts.
        let chord = options
            .get("chord")
            .filter(|c| c.is_object())
            .map(|c| (c, options.get("group_id").and_then(Value::as_str)));
        let mut members = Vec::with_capacity(tasks.len());
        for (i, t) in tasks.iter().enumerate() {
            let mut call = inherited.clone();
            // A group's `link_error` replaces its tasks' own (Celery applies each task with the
            // group's options).
            if let Some(eb) = options.get("link_error").filter(|v| !v.is_null()) {
                call.insert("link_error".into(), eb.clone());
            }
            if t.subtask_type.is_none() {
                let group_id = match chord {
                    // The id a task was frozen with stays (Celery's immutable `group_id`).
                    Some((_, outer)) => t
                        .options
                        .get("group_id")
                        .and_then(Value::as_str)
                        .or(outer)
                        .unwrap_or(&gid),
                    None => &gid,
                };
                call.insert("group_id".into(), Value::from(group_id));
                call.insert("group_index".into(), Value::from(i));
                if let Some((body, _)) = chord {
                    call.insert("chord".into(), body.clone());
                }
            }
            members.push(self.apply_one(t, prefix, &call, parent)?);
        }
        Ok(group_tuple(&gid, members))
    }

    fn chord(
        &mut self,
        sig: &Signature,
        options: Map<String, Value>,
        prefix: &[Value],
        parent: &Parent,
    ) -> Result<Value, CanvasError> {
        let header = match sig.kwargs.get("header") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| Signature::from_value(v, "header").map_err(|e| err(sig, e.to_string())))
                .collect::<Result<Vec<_>, _>>()?,
            Some(v @ Value::Object(_)) => {
                let g = Signature::from_value(v, "header").map_err(|e| err(sig, e.to_string()))?;
                if g.subtask_type.as_deref() == Some("group") {
                    tasks_of(&g, "tasks")?
                } else {
                    vec![g]
                }
            }
            _ => return Err(err(sig, "chord without a header")),
        };
        let header_gid = sig
            .kwargs
            .get("header")
            .and_then(|h| h.get("options"))
            .and_then(|o| o.get("task_id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let gid = header_gid
            .or_else(|| id_option(&options))
            .unwrap_or_else(new_id);
        let mut body = match sig.kwargs.get("body") {
            Some(v @ Value::Object(_)) => {
                Signature::from_value(v, "body").map_err(|e| err(sig, e.to_string()))?
            }
            _ => return Err(err(sig, "chord without a body")),
        };
        // As Celery's `chord.run`: the chord's own options go to its body (so a chord added to
        // another chord reports there), except those of the call itself.
        for (k, v) in &options {
            if !matches!(
                k.as_str(),
                "task_id" | "parent_id" | "countdown" | "eta" | "chain" | "link" | "link_error"
            ) {
                body.options.insert(k.clone(), v.clone());
            }
        }
        add_body_callbacks(&mut body, &options)?;
        if body.task_id().is_none() {
            body.options.insert("task_id".into(), Value::from(new_id()));
        }
        if !body.options.contains_key("group_id") {
            body.options
                .insert("group_id".into(), Value::from(gid.as_str()));
        }
        let rest = chain_option(sig, &options)?;
        if !rest.is_empty() {
            body.options.insert("chain".into(), signature_list(&rest));
        }
        let body_id = body.task_id().unwrap_or_default().to_string();
        if header.is_empty() {
            self.apply_one(&body, &[Value::Array(Vec::new())], &Map::new(), parent)?;
            return Ok(task_tuple(&body_id));
        }
        // Groups in the header are unrolled into it, as Celery's `_freeze_unroll` does.
        let header = unroll(header)?;
        let size = header.iter().map(chord_size).sum::<Result<usize, _>>()?;
        self.chord_sizes.push((gid.clone(), size));
        let inherited = inherited(&options);
        let body_value = body.to_value();
        for (i, t) in header.iter().enumerate() {
            let mut part = Map::new();
            part.insert("group_id".into(), Value::from(gid.as_str()));
            part.insert("group_index".into(), Value::from(i));
            part.insert("chord".into(), body_value.clone());
            match t.subtask_type.as_deref() {
                None => {
                    let mut call = inherited.clone();
                    call.extend(part);
                    self.apply_one(t, prefix, &call, parent)?;
                }
                Some("chain") => {
                    // The chain's last task is the chord part.
                    let mut chain = t.clone();
                    let mut tasks = tasks_of(t, "tasks")?;
                    let last = tasks
                        .last_mut()
                        .ok_or_else(|| err(t, "empty chain in a chord header"))?;
                    last.options.extend(part);
                    chain.kwargs.insert("tasks".into(), signature_list(&tasks));
                    self.apply_one(&chain, prefix, &inherited, parent)?;
                }
                Some(other) => {
                    return Err(err(
                        sig,
                        format!("a {other} inside a chord header is not supported by celeriac"),
                    ))
                }
            }
        }
        Ok(task_tuple(&body_id))
    }

    fn chain(
        &mut self,
        sig: &Signature,
        options: Map<String, Value>,
        prefix: &[Value],
        parent: &Parent,
    ) -> Result<Value, CanvasError> {
        let mut tasks = tasks_of(sig, "tasks")?;
        // As Celery's `_chain.tasks` clones them: the chain's `link` callbacks go to its last
        // task, its `link_error` errbacks to every task.
        let list = |key: &str| -> Vec<Value> {
            match options.get(key) {
                Some(Value::Array(items)) => items.clone(),
                Some(v @ Value::Object(_)) => vec![v.clone()],
                _ => Vec::new(),
            }
        };
        for eb in list("link_error") {
            for t in &mut tasks {
                append_option(t, "link_error", eb.clone());
            }
        }
        if let Some(last) = tasks.last_mut() {
            for cb in list("link") {
                append_option(last, "link", cb);
            }
        }
        let Some((first, rest)) = tasks.split_first() else {
            return Err(err(sig, "empty chain"));
        };
        let mut remaining = chain_option(sig, &options)?;
        remaining.extend(rest.iter().rev().cloned());
        let mut call = inherited(&options);
        call.insert("chain".into(), signature_list(&remaining));
        // As Celery's `_chain.run`: the chain's own args, after the prefix unless it is
        // immutable, go before the first task's.
        let args = if prefix.is_empty() || sig.immutable {
            sig.args.clone()
        } else {
            prefix.iter().chain(&sig.args).cloned().collect()
        };
        self.apply_one(first, &args, &call, parent)
    }
}

/// Celery 5.7's `chord._add_body_callbacks`: the chord's `link` callbacks are linked to its
/// body as `body.link()` does (a group's first task, made immutable), its `link_error`
/// errbacks to the body's own (each task's, for a group body).
fn add_body_callbacks(
    body: &mut Signature,
    options: &Map<String, Value>,
) -> Result<(), CanvasError> {
    let list = |key: &str| -> Vec<Value> {
        match options.get(key) {
            Some(Value::Array(items)) => items.clone(),
            Some(v @ Value::Object(_)) => vec![v.clone()],
            _ => Vec::new(),
        }
    };
    let (callbacks, errbacks) = (list("link"), list("link_error"));
    if callbacks.is_empty() && errbacks.is_empty() {
        return Ok(());
    }
    let is_group = body.subtask_type.as_deref() == Some("group");
    let mut tasks = if is_group {
        tasks_of(body, "tasks")?
    } else {
        Vec::new()
    };
    for cb in callbacks {
        match tasks.first_mut() {
            Some(first) => {
                let mut cb = cb;
                cb["immutable"] = Value::Bool(true);
                append_option(first, "link", cb);
            }
            None => append_option(body, "link", cb),
        }
    }
    for eb in errbacks {
        if is_group {
            for t in &mut tasks {
                append_option(t, "link_error", eb.clone());
            }
        } else {
            append_option(body, "link_error", eb);
        }
    }
    if is_group {
        body.kwargs.insert("tasks".into(), signature_list(&tasks));
    }
    Ok(())
}

/// `sig.append_to_list_option(key, value)`.
fn append_option(sig: &mut Signature, key: &str, value: Value) {
    match sig.options.get_mut(key) {
        Some(Value::Array(items)) => items.push(value),
        Some(other @ Value::Object(_)) => *other = Value::Array(vec![other.take(), value]),
        _ => {
            sig.options.insert(key.into(), Value::Array(vec![value]));
        }
    }
}

/// A chord header with its groups (and theirs) replaced by their tasks.
fn unroll(header: Vec<Signature>) -> Result<Vec<Signature>, CanvasError> {
    let mut out = Vec::with_capacity(header.len());
    for t in header {
        if t.subtask_type.as_deref() == Some("group") {
            out.extend(unroll(tasks_of(&t, "tasks")?)?);
        } else {
            out.push(t);
        }
    }
    Ok(out)
}

/// How many parts a header member returns to its chord (Celery's `chord._descend`): a task one,
/// a group the sum of its tasks', a chain its last non-empty step's, a chord its body's.
fn chord_size(sig: &Signature) -> Result<usize, CanvasError> {
    match sig.subtask_type.as_deref() {
        Some("group") => tasks_of(sig, "tasks")?.iter().map(chord_size).sum(),
        Some("chain") => {
            for t in tasks_of(sig, "tasks")?.iter().rev() {
                let n = chord_size(t)?;
                if n > 0 {
                    return Ok(n);
                }
            }
            Ok(0)
        }
        Some("chord") => match sig.kwargs.get("body") {
            Some(body) => chord_size(
                &Signature::from_value(body, "body").map_err(|e| err(sig, e.to_string()))?,
            ),
            None => Ok(1),
        },
        _ => Ok(1),
    }
}

/// `[prefix] + args`, unless the signature is immutable.
pub(crate) fn with_prefix(sig: &Signature, prefix: &[Value]) -> Vec<Value> {
    if sig.immutable {
        sig.args.clone()
    } else {
        prefix.iter().chain(sig.args.iter()).cloned().collect()
    }
}

/// A `celery.group` signature of `tasks` (how several callbacks or errbacks are applied).
pub(crate) fn group_of(tasks: &[Signature]) -> Signature {
    let mut kwargs = Map::new();
    kwargs.insert("tasks".into(), signature_list(tasks));
    let mut g = Signature::new("celery.group", Vec::new(), kwargs);
    g.subtask_type = Some("group".into());
    g
}

fn signature_list(list: &[Signature]) -> Value {
    Value::Array(list.iter().map(Signature::to_value).collect())
}

pub(super) fn tasks_of(sig: &Signature, key: &str) -> Result<Vec<Signature>, CanvasError> {
    let value = sig
        .kwargs
        .get(key)
        .or_else(|| sig.args.first())
        .ok_or_else(|| err(sig, format!("no `{key}`")))?;
    let Value::Array(items) = value else {
        return Err(err(sig, format!("`{key}` is not a list")));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Signature::from_value(v, &format!("{key}[{i}]")).map_err(|e| err(sig, e.to_string()))
        })
        .collect()
}

fn chain_option(
    sig: &Signature,
    options: &Map<String, Value>,
) -> Result<Vec<Signature>, CanvasError> {
    match options.get("chain") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| Signature::from_value(v, "options.chain").map_err(|e| err(sig, e.to_string())))
            .collect(),
        Some(_) => Err(err(sig, "options.chain is not a list")),
    }
}

fn id_option(options: &Map<String, Value>) -> Option<String> {
    options
        .get("task_id")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn inherited(options: &Map<String, Value>) -> Map<String, Value> {
    INHERITED
        .iter()
        .filter_map(|k| {
            options
                .get(*k)
                .filter(|v| !v.is_null())
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The ids a task's follow-ups are published with: root kept, parent = this task.
pub(crate) fn parent_of(msg: &TaskMessage) -> Parent {
    Parent {
        root_id: Some(msg.root_id.clone().unwrap_or_else(|| msg.id.clone())),
        parent_id: Some(msg.id.clone()),
    }
}

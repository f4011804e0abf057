//! `Task.replace(sig)` as Celery 5.7 does it, turned into a [`Plan`] (pure, unit-tested):
//!
//! * a signature with a `chord` option, or an empty chain, is refused (`ImproperlyConfigured`);
//! * a group becomes a chord with `celery.accumulate(index=0)` as body (so the replaced task's
//!   result is the list of the group's results), as does a group ending a chain;
//! * the replaced task's callbacks are linked to the replacement (a chain: its last task, a
//!   chord: its body), its errbacks too (a chain: every task, a chord: its body);
//! * the task whose result the replacement returns (the task, a chain's last task, a chord's
//!   body) gets the replaced task's id, unless it has an id of its own;
//! * that task inherits the replaced task's chord, `group_id` and `group_index`; the
//!   replacement (each task of a chain) gets `replaced_task_nesting` + 1;
//! * the rest of the replaced task's chain follows the replacement, each step with that
//!   `replaced_task_nesting` too.
//!
//! The plan is applied as the replaced task's child (`parent_id` = its id, its `root_id`).

use celeriac_broker_bridge::codec::{Signature, TaskMessage};
use serde_json::{Map, Value};

use super::expand::{CanvasError, Plan};
use crate::task_api::builtins::ACCUMULATE;

/// The messages replacing the task of `msg` by `sig`; `Err` is why `sig` cannot replace it
/// (Celery's `ImproperlyConfigured`).
pub(crate) fn replacement(msg: &TaskMessage, sig: &Signature) -> Result<Plan, CanvasError> {
    let fail = |reason: &str| CanvasError {
        task: sig.task.clone(),
        reason: reason.to_string(),
    };
    if sig.options.get("chord").is_some_and(|c| !c.is_null()) {
        return Err(fail(
            "A signature replacing a task must not be part of a chord",
        ));
    }
    let nesting = msg.replaced_task_nesting.saturating_add(1);
    let (mut steps, chain_options) = match kind(sig) {
        Some("chain") => {
            let mut options = sig.options.clone();
            let mut steps = flatten(tasks_of(sig)?)?;
            let Some(last) = steps.pop() else {
                return Err(fail("Cannot replace with an empty chain"));
            };
            steps.push(match kind(&last) {
                Some("group") => accumulated(last),
                _ => last,
            });
            // A chain's callbacks run after its last task, its errbacks after any failing task.
            for cb in take_list(&mut options, "link") {
                link(&mut steps, "link", &cb);
            }
            for eb in take_list(&mut options, "link_error") {
                link(&mut steps, "link_error", &eb);
            }
            (steps, Some(options))
        }
        Some("group") => (vec![accumulated(sig.clone())], None),
        _ => (vec![sig.clone()], None),
    };
    for cb in &msg.callbacks {
        link(&mut steps, "link", &cb.to_value());
    }
    for eb in &msg.errbacks {
        link(&mut steps, "link_error", &eb.to_value());
    }
    let last = steps
        .last_mut()
        .expect("a replacement has at least one step");
    insert_deep(last, "task_id", Value::from(msg.id.as_str()));
    let membership = [
        ("chord", msg.chord.as_ref().map(Signature::to_value)),
        ("group_id", msg.group.clone().map(Value::from)),
        ("group_index", msg.group_index.map(Value::from)),
    ];
    for (key, value) in membership {
        if let Some(value) = value {
            last.options.insert(key.into(), value);
        }
    }
    for step in &mut steps {
        step.options
            .insert("replaced_task_nesting".into(), Value::from(nesting));
    }
    let rest = msg.chain.iter().rev().map(|step| {
        let mut step = step.clone();
        step.options
            .insert("replaced_task_nesting".into(), Value::from(nesting));
        step
    });
    steps.extend(rest);
    let whole = match (steps.len(), chain_options) {
        (1, None) => steps.pop().expect("one step"),
        (_, options) => {
            let mut chain = Signature::new("celery.chain", Vec::new(), Map::new());
            chain.subtask_type = Some("chain".into());
            chain.kwargs.insert(
                "tasks".into(),
                Value::Array(steps.iter().map(Signature::to_value).collect()),
            );
            chain.options = options.unwrap_or_default();
            chain
        }
    };
    let mut plan = Plan::default();
    plan.apply(&whole, &[], &Map::new(), &super::parent_of(msg))?;
    Ok(plan)
}

fn kind(sig: &Signature) -> Option<&str> {
    sig.subtask_type.as_deref()
}

/// `group | accumulate.s(index=0)`: a chord of the group with that body.
fn accumulated(group: Signature) -> Signature {
    let mut body_kwargs = Map::new();
    body_kwargs.insert("index".into(), Value::from(0));
    let body = Signature::new(ACCUMULATE, Vec::new(), body_kwargs);
    let mut kwargs = Map::new();
    kwargs.insert("kwargs".into(), Value::Object(Map::new()));
    kwargs.insert("header".into(), group.to_value());
    kwargs.insert("body".into(), body.to_value());
    let mut chord = Signature::new("celery.chord", Vec::new(), kwargs);
    chord.subtask_type = Some("chord".into());
    chord
}

/// Link `callback` under `key` (`link` or `link_error`) to the steps of a replacement: a
/// callback to the last step, an errback to each.
fn link(steps: &mut [Signature], key: &str, callback: &Value) {
    if key == "link" {
        if let Some(last) = steps.last_mut() {
            link_one(last, key, callback);
        }
    } else {
        for step in steps {
            link_one(step, key, callback);
        }
    }
}

/// Link to one signature: a chain's tasks as [`link`] does, a chord's body, else its options.
fn link_one(sig: &mut Signature, key: &str, callback: &Value) {
    match kind(sig) {
        Some("chain") => {
            if let Ok(mut tasks) = tasks_of(sig) {
                link(&mut tasks, key, callback);
                set_list(sig, "tasks", &tasks);
                return;
            }
        }
        Some("chord") => {
            if let Some(Ok(mut body)) = sig
                .kwargs
                .get("body")
                .map(|b| Signature::from_value(b, "body"))
            {
                link_one(&mut body, key, callback);
                sig.kwargs.insert("body".into(), body.to_value());
                return;
            }
        }
        _ => {}
    }
    push(&mut sig.options, key, callback.clone());
}

/// Set `key` on the task whose result is the signature's (a chain's last task, a chord's body)
/// unless it has it: Celery's `freeze(_id)` keeps an id given.
fn insert_deep(sig: &mut Signature, key: &str, value: Value) {
    match kind(sig) {
        Some("chain") => {
            if let Ok(mut tasks) = tasks_of(sig) {
                if let Some(last) = tasks.last_mut() {
                    insert_deep(last, key, value);
                    set_list(sig, "tasks", &tasks);
                    return;
                }
            }
        }
        Some("chord") => {
            if let Some(Ok(mut body)) = sig
                .kwargs
                .get("body")
                .map(|b| Signature::from_value(b, "body"))
            {
                insert_deep(&mut body, key, value);
                sig.kwargs.insert("body".into(), body.to_value());
                return;
            }
        }
        _ => {}
    }
    if sig.options.get(key).is_none_or(Value::is_null) {
        sig.options.insert(key.into(), value);
    }
}

fn tasks_of(sig: &Signature) -> Result<Vec<Signature>, CanvasError> {
    let fail = |reason: String| CanvasError {
        task: sig.task.clone(),
        reason,
    };
    match sig.kwargs.get("tasks").or_else(|| sig.args.first()) {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                Signature::from_value(v, &format!("tasks[{i}]")).map_err(|e| fail(e.to_string()))
            })
            .collect(),
        _ => Err(fail("`tasks` is not a list of signatures".into())),
    }
}

/// Nested chains spliced in, as Celery's `chain(a, chain(b, c))` is `chain(a, b, c)`.
fn flatten(steps: Vec<Signature>) -> Result<Vec<Signature>, CanvasError> {
    let mut flat = Vec::with_capacity(steps.len());
    for step in steps {
        if kind(&step) == Some("chain") {
            let mut inner = flatten(tasks_of(&step)?)?;
            let mut options = step.options.clone();
            for cb in take_list(&mut options, "link") {
                link(&mut inner, "link", &cb);
            }
            for eb in take_list(&mut options, "link_error") {
                link(&mut inner, "link_error", &eb);
            }
            flat.extend(inner);
        } else {
            flat.push(step);
        }
    }
    Ok(flat)
}

/// Write `list` back where [`tasks_of`] read it.
fn set_list(sig: &mut Signature, key: &str, list: &[Signature]) {
    let value = Value::Array(list.iter().map(Signature::to_value).collect());
    match sig.args.first_mut() {
        Some(first) if !sig.kwargs.contains_key(key) => *first = value,
        _ => {
            sig.kwargs.insert(key.into(), value);
        }
    }
}

fn take_list(options: &mut Map<String, Value>, key: &str) -> Vec<Value> {
    match options.remove(key) {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => Vec::new(),
        Some(one) => vec![one],
    }
}

fn push(options: &mut Map<String, Value>, key: &str, value: Value) {
    let mut items = take_list(options, key);
    items.push(value);
    options.insert(key.into(), Value::Array(items));
}

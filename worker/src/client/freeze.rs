//! Freezing a canvas before it is sent, as Celery's `freeze()` does: every task that will have
//! a result gets its `task_id` (and `reply_to`) now, so the caller knows the ids to wait on and
//! chain steps and chord bodies travel with them.

use celeriac_broker_bridge::codec::Signature;
use serde_json::{Map, Value};

/// The result ids of a frozen signature.
#[derive(Debug, Clone, PartialEq)]
pub enum Frozen {
    /// One task's result (a task, a chain's last step, a chord's body).
    Task(String),
    /// A group's results, in order.
    Group {
        /// The group id.
        id: String,
        /// One per member.
        members: Vec<Frozen>,
    },
}

/// Freeze `sig` in place; its result ids.
pub fn freeze(sig: &mut Signature, reply_to: &str) -> Result<Frozen, String> {
    match sig.subtask_type.as_deref() {
        None => Ok(Frozen::Task(freeze_task(&mut sig.options, reply_to))),
        Some("chain") => {
            let mut steps = tasks(sig, "tasks")?;
            let mut last = None;
            for step in &mut steps {
                last = Some(freeze(step, reply_to)?);
            }
            sig.kwargs.insert("tasks".into(), to_list(&steps));
            last.ok_or_else(|| "cannot send an empty chain".to_string())
        }
        Some("group") => {
            let id = id_or_new(&mut sig.options);
            let mut members = tasks(sig, "tasks")?;
            let frozen = members
                .iter_mut()
                .map(|m| freeze(m, reply_to))
                .collect::<Result<Vec<_>, _>>()?;
            sig.kwargs.insert("tasks".into(), to_list(&members));
            Ok(Frozen::Group {
                id,
                members: frozen,
            })
        }
        Some("chord") => {
            if let Some(header) = sig.kwargs.get("header") {
                let mut header =
                    Signature::from_value(header, "chord.header").map_err(|e| e.to_string())?;
                freeze(&mut header, reply_to)?;
                sig.kwargs.insert("header".into(), header.to_value());
            }
            let body = sig
                .kwargs
                .get("body")
                .ok_or_else(|| "a chord without a body".to_string())?;
            let mut body = Signature::from_value(body, "chord.body").map_err(|e| e.to_string())?;
            let result = freeze(&mut body, reply_to)?;
            sig.kwargs.insert("body".into(), body.to_value());
            Ok(result)
        }
        Some(other) => Err(format!("celeriac cannot send a {other} canvas")),
    }
}

fn freeze_task(options: &mut Map<String, Value>, reply_to: &str) -> String {
    let id = id_or_new(options);
    if !options.contains_key("reply_to") {
        options.insert("reply_to".into(), reply_to.into());
    }
    id
}

fn id_or_new(options: &mut Map<String, Value>) -> String {
    match options.get("task_id").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            options.insert("task_id".into(), Value::from(id.as_str()));
            id
        }
    }
}

fn tasks(sig: &Signature, key: &str) -> Result<Vec<Signature>, String> {
    match sig.kwargs.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                Signature::from_value(v, &format!("{}.{key}[{i}]", sig.task))
                    .map_err(|e| e.to_string())
            })
            .collect(),
        _ => Err(format!(
            "{}: `{key}` should be a list of signatures",
            sig.task
        )),
    }
}

fn to_list(sigs: &[Signature]) -> Value {
    Value::Array(sigs.iter().map(Signature::to_value).collect())
}

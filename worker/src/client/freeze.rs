//! Freezing a canvas before it is sent, as Celery's `freeze()` does: every task that will have
//! a result gets its `task_id` (and `reply_to`) now, so the caller knows the ids to wait on and
//! chain steps and chord bodies travel with them.

use celeriac_broker_bridge::codec::Signature;
use serde_json::{Map, Value};

/// The result ids of a frozen signature, each with the result it follows (Celery's
/// `AsyncResult.parent`: a chain step's is the previous step, a chord body's is its header).
#[derive(Debug, Clone, PartialEq)]
pub enum Frozen {
    /// One task's result (a task, a chain's last step, a chord's body).
    Task {
        /// The task id.
        id: String,
        /// The result this one follows.
        parent: Option<Box<Frozen>>,
    },
    /// A group's results, in order.
    Group {
        /// The group id.
        id: String,
        /// One per member.
        members: Vec<Frozen>,
        /// The result this one follows.
        parent: Option<Box<Frozen>>,
    },
}

impl Frozen {
    /// A task's result with no parent.
    pub fn task(id: impl Into<String>) -> Frozen {
        Frozen::Task {
            id: id.into(),
            parent: None,
        }
    }

    /// The task or group id.
    pub fn id(&self) -> &str {
        match self {
            Frozen::Task { id, .. } | Frozen::Group { id, .. } => id,
        }
    }

    /// The result this one follows.
    pub fn parent(&self) -> Option<&Frozen> {
        match self {
            Frozen::Task { parent, .. } | Frozen::Group { parent, .. } => parent.as_deref(),
        }
    }

    fn parent_mut(&mut self) -> &mut Option<Box<Frozen>> {
        match self {
            Frozen::Task { parent, .. } | Frozen::Group { parent, .. } => parent,
        }
    }

    /// Make `first` the parent of the oldest result of this one's line.
    fn follow(&mut self, first: Frozen) {
        let mut node = self;
        while node.parent().is_some() {
            node = node
                .parent_mut()
                .as_deref_mut()
                .expect("checked just above");
        }
        *node.parent_mut() = Some(Box::new(first));
    }

    /// Celery's `as_tuple()`, what a task returning a result stores: `[[id, parent], null]`
    /// for a task, `[[id, parent], [member, ...]]` for a group.
    pub fn as_tuple(&self) -> Value {
        let parent = self.parent().map_or(Value::Null, Frozen::as_tuple);
        let head = Value::Array(vec![Value::from(self.id()), parent]);
        match self {
            Frozen::Task { .. } => Value::Array(vec![head, Value::Null]),
            Frozen::Group { members, .. } => Value::Array(vec![
                head,
                Value::Array(members.iter().map(Frozen::as_tuple).collect()),
            ]),
        }
    }
}

/// Freeze `sig` in place; its result ids.
pub(crate) fn freeze(sig: &mut Signature, reply_to: &str) -> Result<Frozen, String> {
    match sig.subtask_type.as_deref() {
        None => Ok(Frozen::task(freeze_task(&mut sig.options, reply_to))),
        Some("chain") => {
            let mut steps = upgrade_groups(flatten(tasks(sig, "tasks")?)?);
            let mut last: Option<Frozen> = None;
            for step in &mut steps {
                let mut result = freeze(step, reply_to)?;
                if let Some(previous) = last.take() {
                    result.follow(previous);
                }
                last = Some(result);
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
                parent: None,
            })
        }
        Some("chord") => {
            // As Celery freezes a chord: the header group and the chord share one id; the
            // header's tasks get their index; the body its own id.
            let mut header = match sig.kwargs.get("header") {
                Some(h @ Value::Object(_)) => {
                    Signature::from_value(h, "chord.header").map_err(|e| e.to_string())?
                }
                Some(Value::Array(items)) => {
                    let mut kwargs = Map::new();
                    kwargs.insert("tasks".into(), Value::Array(items.clone()));
                    let mut g = Signature::new("celery.group", Vec::new(), kwargs);
                    g.subtask_type = Some("group".into());
                    g
                }
                _ => return Err("a chord without a header".into()),
            };
            let id = match header.task_id().or_else(|| sig.task_id()) {
                Some(id) => id.to_string(),
                None => uuid::Uuid::new_v4().to_string(),
            };
            let mut header_results = Vec::new();
            if header.subtask_type.as_deref() == Some("group") {
                header
                    .options
                    .insert("task_id".into(), Value::from(id.as_str()));
                header.options.insert("root_id".into(), Value::Null);
                header.options.insert("parent_id".into(), Value::Null);
                let mut members = tasks(&header, "tasks")?;
                for (i, m) in members.iter_mut().enumerate() {
                    header_results.push(freeze(m, reply_to)?);
                    if m.subtask_type.is_none() {
                        m.options.insert("group_index".into(), Value::from(i));
                    }
                }
                header.kwargs.insert("tasks".into(), to_list(&members));
            } else {
                header_results.push(freeze(&mut header, reply_to)?);
            }
            sig.kwargs.insert("header".into(), header.to_value());
            sig.options
                .insert("task_id".into(), Value::from(id.as_str()));
            let body = sig
                .kwargs
                .get("body")
                .ok_or_else(|| "a chord without a body".to_string())?;
            let mut body = Signature::from_value(body, "chord.body").map_err(|e| e.to_string())?;
            let mut result = freeze(&mut body, reply_to)?;
            sig.kwargs.insert("body".into(), body.to_value());
            result.follow(Frozen::Group {
                id,
                members: header_results,
                parent: None,
            });
            Ok(result)
        }
        Some(other) => Err(format!("celeriac cannot send a {other} canvas")),
    }
}

/// Nested chains spliced in (`chain(a, chain(b, c))` is `chain(a, b, c)`).
fn flatten(steps: Vec<Signature>) -> Result<Vec<Signature>, String> {
    let mut flat = Vec::with_capacity(steps.len());
    for step in steps {
        if step.subtask_type.as_deref() == Some("chain") {
            flat.extend(flatten(tasks(&step, "tasks")?)?);
        } else {
            flat.push(step);
        }
    }
    Ok(flat)
}

/// A group followed by another step becomes a chord with that step as body, as Celery's
/// `prepare_steps` upgrades it (from the end of the chain).
fn upgrade_groups(steps: Vec<Signature>) -> Vec<Signature> {
    let mut out: Vec<Signature> = Vec::with_capacity(steps.len());
    for step in steps.into_iter().rev() {
        match (step.subtask_type.as_deref(), out.pop()) {
            (Some("group"), Some(body)) => {
                let mut kwargs = Map::new();
                kwargs.insert("kwargs".into(), Value::Object(Map::new()));
                kwargs.insert("header".into(), step.to_value());
                kwargs.insert("body".into(), body.to_value());
                let mut chord = Signature::new("celery.chord", Vec::new(), kwargs);
                chord.subtask_type = Some("chord".into());
                out.push(chord);
            }
            (_, next) => {
                out.extend(next);
                out.push(step);
            }
        }
    }
    out.reverse();
    out
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

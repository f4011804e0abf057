//! Celery's builtin tasks that a worker runs itself: `celery.map` and `celery.starmap` (the
//! targets of `task.map(it)` / `task.starmap(it)`, `xmap`/`xstarmap` signatures). Each calls the
//! task its signature names once per item, in this run, as Python's `task(item)` /
//! `task(*item)` does, and returns the list of results. `celery.accumulate`, the body of the
//! chord a group replacing a task runs as (see [`crate::canvas::replacement`]). `celery.chunks`
//! (which sends a group from the worker) is not here.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::task_api::params::{Param, ParamKind, Params};
use crate::task_api::registry::Registry;
use crate::task_api::{Handler, PyException, TaskContext, TaskError, TaskFuture, TaskOptions};

/// The name of Celery's map builtin.
pub(crate) const MAP: &str = "celery.map";
/// The name of Celery's starmap builtin.
pub(crate) const STARMAP: &str = "celery.starmap";

/// The name of Celery's accumulate builtin.
pub(crate) const ACCUMULATE: &str = "celery.accumulate";

/// Register `celery.map`, `celery.starmap` (calling the tasks of `registry` as it is now) and
/// `celery.accumulate`, unless the application registered its own.
pub(crate) fn install(registry: &mut Registry) {
    if registry.get(ACCUMULATE).is_none() {
        registry.insert(ACCUMULATE, Arc::new(Accumulate), TaskOptions::default());
    }
    let tasks = Arc::new(registry.clone());
    for (name, star) in [(MAP, false), (STARMAP, true)] {
        if registry.get(name).is_none() {
            let handler = MapHandler {
                tasks: tasks.clone(),
                star,
            };
            registry.insert(name, Arc::new(handler), TaskOptions::default());
        }
    }
}

struct MapHandler {
    tasks: Arc<Registry>,
    star: bool,
}

const MAP_PARAMS: [Param; 2] = [
    Param {
        name: "task",
        kind: ParamKind::PositionalOrKeyword,
        has_default: false,
    },
    Param {
        name: "it",
        kind: ParamKind::PositionalOrKeyword,
        has_default: false,
    },
];

impl Handler for MapHandler {
    fn call(&self, ctx: TaskContext) -> TaskFuture {
        let params = Params {
            function: if self.star { "xstarmap" } else { "xmap" },
            params: &MAP_PARAMS,
        };
        let tasks = self.tasks.clone();
        let star = self.star;
        Box::pin(async move {
            let bound = params
                .bind(&ctx.args, &ctx.kwargs)
                .map_err(TaskError::Fail)?;
            let (sig, it) = match bound.as_slice() {
                [Some(sig), Some(it)] => (sig, it),
                _ => return Err(TaskError::fail("TypeError", "missing arguments")),
            };
            let name = signature_task(sig)?;
            let task = tasks.get(&name).ok_or_else(|| {
                TaskError::Fail(PyException {
                    exc_type: "NotRegistered".into(),
                    exc_module: "celery.exceptions".into(),
                    args: vec![Value::String(format!("'{name}'"))],
                })
            })?;
            let mut results = Vec::new();
            for item in iterate(it)? {
                let args = if star {
                    star_args(&name, item)?
                } else {
                    vec![item]
                };
                let call = direct_call(&ctx, &name, args);
                let value = task.handler.call(call).await.map_err(called_directly)?;
                results.push(value);
            }
            Ok(Value::Array(results))
        })
    }
}

/// The task name of a signature given as a dict (or as a bare name).
fn signature_task(sig: &Value) -> Result<String, TaskError> {
    match sig {
        Value::String(name) => Ok(name.clone()),
        Value::Object(map) => match map.get("task") {
            Some(Value::String(name)) => Ok(name.clone()),
            _ => Err(TaskError::fail("KeyError", "'task'")),
        },
        other => Err(TaskError::fail(
            "TypeError",
            format!("not a signature: {}", py_type(other)),
        )),
    }
}

/// Python's `for item in it` over a JSON value.
fn iterate(it: &Value) -> Result<Vec<Value>, TaskError> {
    match it {
        Value::Array(items) => Ok(items.clone()),
        Value::Object(map) => Ok(map.keys().cloned().map(Value::String).collect()),
        Value::String(s) => Ok(s.chars().map(|c| Value::String(c.into())).collect()),
        other => Err(TaskError::fail(
            "TypeError",
            format!("'{}' object is not iterable", py_type(other)),
        )),
    }
}

/// The positional arguments of `task(*item)`.
fn star_args(name: &str, item: Value) -> Result<Vec<Value>, TaskError> {
    match item {
        Value::Array(args) => Ok(args),
        v @ (Value::Object(_) | Value::String(_)) => iterate(&v),
        other => Err(TaskError::fail(
            "TypeError",
            format!(
                "{name}() argument after * must be an iterable, not {}",
                py_type(&other)
            ),
        )),
    }
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// The request of a task called directly (Python's `task(*args)`): only its arguments; no id,
/// no workflow fields. It shares this run's worker facilities and time limits.
fn direct_call(ctx: &TaskContext, name: &str, args: Vec<Value>) -> TaskContext {
    TaskContext {
        id: String::new(),
        name: name.to_string(),
        retries: 0,
        root_id: None,
        parent_id: None,
        group: None,
        headers: Map::new(),
        args,
        kwargs: Map::new(),
        ..ctx.clone()
    }
}

/// What a directly called task's error becomes in the calling run: a retry raises its
/// exception (Celery's `retry` when called directly), a replace cannot happen without a message.
fn called_directly(e: TaskError) -> TaskError {
    match e {
        TaskError::Retry(r) => TaskError::Fail(r.exc.unwrap_or_else(|| {
            PyException::in_module("celery.exceptions", "Retry", "Task can be retried")
        })),
        TaskError::Replace(_) => TaskError::fail(
            "RuntimeError",
            "a task called by celery.map or celery.starmap cannot replace itself",
        ),
        other => other,
    }
}

/// `accumulate(*args, index=None)`: `args[index]` (a negative index counts from the end), or
/// all the arguments as a list without `index`.
struct Accumulate;

impl Handler for Accumulate {
    fn call(&self, ctx: TaskContext) -> TaskFuture {
        Box::pin(std::future::ready(accumulate(
            &ctx.args,
            ctx.kwargs.get("index"),
        )))
    }
}

fn accumulate(args: &[Value], index: Option<&Value>) -> Result<Value, TaskError> {
    let index = match index {
        None | Some(Value::Null) => return Ok(Value::Array(args.to_vec())),
        Some(Value::Bool(b)) => i64::from(*b),
        Some(v) => v.as_i64().ok_or_else(|| {
            TaskError::fail(
                "TypeError",
                format!(
                    "tuple indices must be integers or slices, not {}",
                    py_type(v)
                ),
            )
        })?,
    };
    let len = i64::try_from(args.len()).unwrap_or(i64::MAX);
    let at = if index < 0 { index + len } else { index };
    usize::try_from(at)
        .ok()
        .and_then(|i| args.get(i))
        .cloned()
        .ok_or_else(|| TaskError::fail("IndexError", "tuple index out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task_api::FnHandler;
    use serde_json::json;

    fn registry() -> Registry {
        let mut r = Registry::default();
        let add = FnHandler::new(|_ctx: TaskContext, (a, b): (i64, i64)| async move {
            Ok::<_, TaskError>(a + b)
        });
        r.insert("t.add", Arc::new(add), TaskOptions::default());
        let double = FnHandler::new(|ctx: TaskContext, (a,): (i64,)| async move {
            assert!(ctx.id.is_empty() && ctx.parent_id.is_none());
            Ok::<_, TaskError>(a * 2)
        });
        r.insert("t.double", Arc::new(double), TaskOptions::default());
        install(&mut r);
        r
    }

    async fn run(r: &Registry, name: &str, args: Value, kwargs: Value) -> Result<Value, TaskError> {
        let ctx = TaskContext {
            id: "parent".into(),
            parent_id: Some("p".into()),
            args: args.as_array().cloned().unwrap_or_default(),
            kwargs: kwargs.as_object().cloned().unwrap_or_default(),
            ..TaskContext::default()
        };
        r.get(name).expect("registered").handler.call(ctx).await
    }

    #[tokio::test]
    async fn starmap_and_map_call_the_task_per_item() {
        let r = registry();
        let sig = json!({"task": "t.add", "args": [], "kwargs": {}, "options": {}});
        let out = run(
            &r,
            STARMAP,
            json!([]),
            json!({"task": sig, "it": [[1, 1], [2, 2]]}),
        )
        .await;
        assert_eq!(out, Ok(json!([2, 4])));
        let out = run(&r, MAP, json!([{"task": "t.double"}, [1, 5]]), json!({})).await;
        assert_eq!(out, Ok(json!([2, 10])));
        let out = run(&r, STARMAP, json!(["t.add", []]), json!({})).await;
        assert_eq!(out, Ok(json!([])));
    }

    #[tokio::test]
    async fn errors_are_pythons() {
        let r = registry();
        match run(
            &r,
            STARMAP,
            json!([{"task": "t.nope"}, [[1, 2]]]),
            json!({}),
        )
        .await
        {
            Err(TaskError::Fail(e)) => {
                assert_eq!(
                    (e.exc_module.as_str(), e.exc_type.as_str()),
                    ("celery.exceptions", "NotRegistered")
                );
            }
            other => panic!("{other:?}"),
        }
        match run(&r, STARMAP, json!([{"task": "t.add"}, [3]]), json!({})).await {
            Err(TaskError::Fail(e)) => assert_eq!(e.exc_type, "TypeError"),
            other => panic!("{other:?}"),
        }
        match run(
            &r,
            STARMAP,
            json!([{"task": "t.add"}, [[1, 2, 3]]]),
            json!({}),
        )
        .await
        {
            Err(TaskError::Fail(e)) => assert_eq!(e.exc_type, "TypeError"),
            other => panic!("{other:?}"),
        }
        match run(&r, MAP, json!([{"task": "t.double"}]), json!({})).await {
            Err(TaskError::Fail(e)) => assert_eq!(
                e.args,
                vec![json!("xmap() missing 1 required positional argument: 'it'")]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn accumulate_as_celery() {
        let r = registry();
        let args = json!([[1, 2], "b"]);
        let at = |i: Value| run(&r, ACCUMULATE, args.clone(), json!({ "index": i }));
        assert_eq!(at(json!(0)).await, Ok(json!([1, 2])));
        assert_eq!(at(json!(-1)).await, Ok(json!("b")));
        assert_eq!(at(Value::Null).await, Ok(json!([[1, 2], "b"])));
        assert_eq!(
            at(json!(2)).await.unwrap_err().to_string(),
            "IndexError: tuple index out of range"
        );
        assert_eq!(
            at(json!("x")).await.unwrap_err().to_string(),
            "TypeError: tuple indices must be integers or slices, not str"
        );
    }
}

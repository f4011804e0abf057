//! The tasks of Celery's `t/integration/tasks.py` that return canvases
//! (`return_nested_signature_*`) and rebuild one from its dict (`rebuild_signature`), under the
//! same names and with the same behaviour. The Python source is quoted in each doc comment.
//!
//! A returned canvas is stored as Python's signature serialization writes it: the client's
//! [`chain`], [`group`] and [`chord`] build the unfrozen dicts Python's constructors build, once
//! their argument rules are applied (noted per task: Python's `group(g)` and `chord(g, b)` take
//! the tasks of a group or chain they are given alone).

use celeriac_broker_bridge::codec::value_repr;
use celeriac_worker::client::{chain, chord, group, Signature};
use celeriac_worker::{PyException, TaskError, WorkerBuilder};
use serde_json::{Map, Value};

use super::py;

fn add() -> Signature {
    Signature::new("t.integration.tasks.add")
}

/// `return chain(chain([add.s()]))`
#[celeriac_worker::task(name = "t.integration.tasks.return_nested_signature_chain_chain")]
async fn return_nested_signature_chain_chain() -> Result<Signature, TaskError> {
    Ok(chain([chain([add()])]))
}

/// `return chain(group([add.s()]))`
#[celeriac_worker::task(name = "t.integration.tasks.return_nested_signature_chain_group")]
async fn return_nested_signature_chain_group() -> Result<Signature, TaskError> {
    Ok(chain([group([add()])]))
}

/// `return chain(chord([add.s()], add.s()))`
#[celeriac_worker::task(name = "t.integration.tasks.return_nested_signature_chain_chord")]
async fn return_nested_signature_chain_chord() -> Result<Signature, TaskError> {
    Ok(chain([chord([add()], add())]))
}

/// `return group(chain([add.s()]))`
#[celeriac_worker::task(name = "t.integration.tasks.return_nested_signature_group_chain")]
async fn return_nested_signature_group_chain() -> Result<Signature, TaskError> {
    Ok(group([chain([add()])]))
}

/// `return group(group([add.s()]))`: a group given one group takes its tasks.
#[celeriac_worker::task(name = "t.integration.tasks.return_nested_signature_group_group")]
async fn return_nested_signature_group_group() -> Result<Signature, TaskError> {
    Ok(group([add()]))
}

/// `return group(chord([add.s()], add.s()))`
#[celeriac_worker::task(name = "t.integration.tasks.return_nested_signature_group_chord")]
async fn return_nested_signature_group_chord() -> Result<Signature, TaskError> {
    Ok(group([chord([add()], add())]))
}

/// `return chord(chain([add.s()]), add.s())`: a chord's header given as a chain is its tasks.
#[celeriac_worker::task(name = "t.integration.tasks.return_nested_signature_chord_chain")]
async fn return_nested_signature_chord_chain() -> Result<Signature, TaskError> {
    Ok(chord([add()], add()))
}

/// `return chord(group([add.s()]), add.s())`: a chord's header given as a group is its tasks.
#[celeriac_worker::task(name = "t.integration.tasks.return_nested_signature_chord_group")]
async fn return_nested_signature_chord_group() -> Result<Signature, TaskError> {
    Ok(chord([add()], add()))
}

/// `return chord(chord([add.s()], add.s()), add.s())`
#[celeriac_worker::task(name = "t.integration.tasks.return_nested_signature_chord_chord")]
async fn return_nested_signature_chord_chord() -> Result<Signature, TaskError> {
    Ok(chord([chord([add()], add())], add()))
}

/// ```python
/// def rebuild_signature(sig_dict):
///     sig_obj = Signature.from_dict(sig_dict)
///     def _recurse(sig):
///         if not isinstance(sig, Signature):
///             raise TypeError(f"{sig!r} is not a signature object")
///         if isinstance(sig, (chain, group, chord)):
///             for task in sig.tasks:
///                 _recurse(task)
///         if isinstance(sig, chord):
///             _recurse(sig.body)
///     _recurse(sig_obj)
/// ```
///
/// Returns `None`, or raises what Celery 5.7 raises for that dict (see [`from_dict`]).
#[celeriac_worker::task(name = "t.integration.tasks.rebuild_signature")]
async fn rebuild_signature(sig_dict: Value) -> Result<Value, PyException> {
    check(&from_dict(&sig_dict)?)?;
    Ok(Value::Null)
}

/// What `Signature.from_dict` makes of a value: a signature of a kind, or the value itself
/// where Celery keeps a non-dict member as it is.
#[derive(Debug)]
enum Item {
    Sig(Node),
    Raw(Value),
}

/// The signature classes `rebuild_signature` tells apart.
#[derive(Debug)]
enum Node {
    /// `Signature`, `xmap`, `xstarmap`, `chunks`: not looked into.
    Plain,
    /// `_chain`: what `Signature.from_dict` builds for a chain. It is not an instance of the
    /// `chain` subclass the task checks for, so its tasks are not looked into either (but a
    /// chord's header given as a chain takes them).
    Chain(Vec<Item>),
    Group(Vec<Item>),
    Chord(Vec<Item>, Box<Item>),
}

/// `_recurse`.
fn check(node: &Node) -> Result<(), PyException> {
    let items = |items: &[Item]| items.iter().try_for_each(check_item);
    match node {
        Node::Plain | Node::Chain(_) => Ok(()),
        Node::Group(tasks) => items(tasks),
        Node::Chord(header, body) => {
            items(header)?;
            check_item(body)
        }
    }
}

fn check_item(item: &Item) -> Result<(), PyException> {
    match item {
        Item::Sig(node) => check(node),
        Item::Raw(v) => Err(type_error(format!(
            "{} is not a signature object",
            value_repr(v)
        ))),
    }
}

fn type_error(message: impl Into<String>) -> PyException {
    PyException::new("TypeError", message)
}

/// Python's `KeyError(key)`: its one argument is the key itself.
fn key_error(key: Value) -> PyException {
    PyException {
        args: vec![key],
        ..PyException::new("KeyError", "")
    }
}

/// `v[key]` with a string key.
fn getitem<'a>(v: &'a Value, key: &str) -> Result<&'a Value, PyException> {
    match v {
        Value::Object(m) => m.get(key).ok_or_else(|| key_error(key.into())),
        Value::Array(_) => Err(type_error(
            "list indices must be integers or slices, not str",
        )),
        Value::String(_) => Err(type_error("string indices must be integers, not 'str'")),
        other => Err(type_error(format!(
            "'{}' object is not subscriptable",
            py::type_name(other)
        ))),
    }
}

/// `f(**v)`: `v` must be a mapping (`callable` is how Python names `f` in the error).
fn mapping<'a>(v: &'a Value, callable: &str) -> Result<&'a Map<String, Value>, PyException> {
    v.as_object().ok_or_else(|| {
        type_error(format!(
            "{callable}() argument after ** must be a mapping, not {}",
            py::type_name(v)
        ))
    })
}

/// `for x in v` (a dict iterates its keys, a string its characters).
fn iterate(v: &Value) -> Result<Vec<Value>, PyException> {
    match v {
        Value::Array(items) => Ok(items.clone()),
        Value::Object(m) => Ok(m.keys().map(|k| Value::from(k.as_str())).collect()),
        Value::String(s) => Ok(s.chars().map(|c| Value::from(c.to_string())).collect()),
        other => Err(type_error(format!(
            "'{}' object is not iterable",
            py::type_name(other)
        ))),
    }
}

/// `maybe_signature(v)`: a dict becomes a signature, anything else is kept.
fn maybe_signature(v: &Value) -> Result<Item, PyException> {
    match v {
        Value::Object(_) => from_dict(v).map(Item::Sig),
        other => Ok(Item::Raw(other.clone())),
    }
}

/// `Signature.from_dict(d)` of Celery 5.7, as far as `rebuild_signature` can observe it: the
/// class each dict becomes, and the exception (type and arguments) that malformed dicts raise.
/// Not reproduced: the errors of option names that clash with the constructors' own
/// parameters (`app`, `task`, `args`, `kwargs` in `options`; `header`, `body`, `app` beside a
/// chord's keys) and of a chord's own `task`, `args` or `options` of the wrong type.
fn from_dict(d: &Value) -> Result<Node, PyException> {
    let Value::Object(obj) = d else {
        return Err(PyException::new(
            "AttributeError",
            format!("'{}' object has no attribute 'get'", py::type_name(d)),
        ));
    };
    let typ = obj.get("subtask_type").unwrap_or(&Value::Null);
    if !py::truthy(typ) {
        return Ok(Node::Plain);
    }
    match typ {
        Value::String(s) => match s.as_str() {
            "chain" => chain_from_dict(d),
            "group" => group_from_dict(d),
            "chord" => chord_from_dict(d),
            "xmap" | "xstarmap" => basemap_from_dict(d, s, &["task", "it"]),
            "chunks" => basemap_from_dict(d, s, &["task", "it", "n"]),
            _ => Err(key_error(typ.clone())),
        },
        Value::Array(_) | Value::Object(_) => Err(type_error(format!(
            "unhashable type: '{}'",
            py::type_name(typ)
        ))),
        other => Err(key_error(other.clone())),
    }
}

/// `_chain.from_dict`: the tasks (when truthy) each through `maybe_signature`, then
/// `_chain(tasks, **d['options'])`.
fn chain_from_dict(d: &Value) -> Result<Node, PyException> {
    let tasks = getitem(getitem(d, "kwargs")?, "tasks")?;
    let items = if py::truthy(tasks) {
        iterate(tasks)?
            .iter()
            .map(maybe_signature)
            .collect::<Result<Vec<_>, _>>()?
    } else if tasks.is_array() {
        Vec::new()
    } else {
        // `_chain(x)` with one argument that is not a list keeps it as its only task.
        vec![Item::Raw(tasks.clone())]
    };
    mapping(getitem(d, "options")?, "celery.canvas._chain")?;
    Ok(Node::Chain(items))
}

/// `group.from_dict`: `type(tasks)(maybe_signature(t) for t in tasks)`, then
/// `group(tasks, **d['options'])`.
fn group_from_dict(d: &Value) -> Result<Node, PyException> {
    let tasks = getitem(getitem(d, "kwargs")?, "tasks")?;
    let items = match tasks {
        Value::Array(items) => items
            .iter()
            .map(maybe_signature)
            .collect::<Result<Vec<_>, _>>()?,
        // `str(generator)` is the generator's repr, whose first character is `<`.
        Value::String(_) => vec![Item::Raw(Value::from("<"))],
        // `dict(generator)` of the keys: each must be a pair (two characters).
        Value::Object(m) => {
            let mut pairs: Map<String, Value> = Map::new();
            for (i, key) in m.keys().enumerate() {
                let chars: Vec<char> = key.chars().collect();
                if chars.len() != 2 {
                    return Err(PyException::new(
                        "ValueError",
                        format!(
                            "dictionary update sequence element #{i} has length {}; 2 is required",
                            chars.len()
                        ),
                    ));
                }
                pairs.insert(chars[0].to_string(), Value::from(chars[1].to_string()));
            }
            pairs
                .keys()
                .map(|k| Item::Raw(Value::from(k.as_str())))
                .collect()
        }
        other => return Err(iterate(other).unwrap_err()),
    };
    mapping(getitem(d, "options")?, "celery.canvas.group")?;
    Ok(Node::Group(items))
}

/// `_chord.from_dict`: `chord(header, body, **rest)` with `header` through `_maybe_group` and
/// `body` through `maybe_signature`.
fn chord_from_dict(d: &Value) -> Result<Node, PyException> {
    let kwargs = mapping(getitem(d, "kwargs")?, "celery.canvas._chord._unpack_args")?;
    let header = kwargs.get("header").unwrap_or(&Value::Null);
    let body = kwargs.get("body").unwrap_or(&Value::Null);
    let header = match header {
        Value::Object(_) => match from_dict(header)? {
            Node::Group(tasks) | Node::Chain(tasks) => tasks,
            node => vec![Item::Sig(node)],
        },
        // `[signature(t) for t in header]`: a dict becomes its class, anything else a
        // `Signature` named after it.
        other => iterate(other)?
            .iter()
            .map(|t| match t {
                Value::Object(_) => from_dict(t).map(Item::Sig),
                _ => Ok(Item::Sig(Node::Plain)),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let body = maybe_signature(body)?;
    Ok(Node::Chord(header, Box::new(body)))
}

/// `xmap`/`xstarmap`/`chunks.from_dict`: `cls(*itemgetter(*keys)(d['kwargs']), **d['options'])`.
fn basemap_from_dict(d: &Value, name: &str, keys: &[&str]) -> Result<Node, PyException> {
    let kwargs = getitem(d, "kwargs")?;
    for key in keys {
        getitem(kwargs, key)?;
    }
    mapping(getitem(d, "options")?, &format!("celery.canvas.{name}"))?;
    Ok(Node::Plain)
}

/// Registers the tasks of this module.
pub fn register(builder: WorkerBuilder) -> WorkerBuilder {
    builder
        .register(return_nested_signature_chain_chain)
        .register(return_nested_signature_chain_group)
        .register(return_nested_signature_chain_chord)
        .register(return_nested_signature_group_chain)
        .register(return_nested_signature_group_group)
        .register(return_nested_signature_group_chord)
        .register(return_nested_signature_chord_chain)
        .register(return_nested_signature_chord_group)
        .register(return_nested_signature_chord_chord)
        .register(rebuild_signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn add_dict() -> Value {
        add().to_value()
    }

    fn canvas(kind: &str, tasks: Value) -> Value {
        json!({"task": format!("celery.{kind}"), "args": [], "kwargs": {"tasks": tasks},
               "options": {}, "subtask_type": kind, "immutable": false})
    }

    fn chord_of(header: Value, body: Value) -> Value {
        json!({"task": "celery.chord", "args": [], "kwargs": {"kwargs": {}, "header": header, "body": body},
               "options": {}, "subtask_type": "chord", "immutable": false})
    }

    /// Each `return_nested_signature_*` task returns the bytes Python's task returns, as
    /// Celery 5.7 (the test venv) serializes them.
    #[tokio::test]
    async fn nested_signatures_serialize_as_python() {
        let script = r#"
from celery import Celery, chain, chord, group
from kombu.utils.json import dumps
app = Celery(set_as_current=True)
@app.task(name='t.integration.tasks.add')
def add(x, y, z=None):
    pass
for sig in [chain(chain([add.s()])), chain(group([add.s()])), chain(chord([add.s()], add.s())),
            group(chain([add.s()])), group(group([add.s()])), group(chord([add.s()], add.s())),
            chord(chain([add.s()]), add.s()), chord(group([add.s()]), add.s()),
            chord(chord([add.s()], add.s()), add.s())]:
    print(dumps(sig))
"#;
        let python = celeriac_testkit::python().expect("the test venv's python");
        let out = std::process::Command::new(python)
            .arg("-c")
            .arg(script)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rust = [
            return_nested_signature_chain_chain::run().await,
            return_nested_signature_chain_group::run().await,
            return_nested_signature_chain_chord::run().await,
            return_nested_signature_group_chain::run().await,
            return_nested_signature_group_group::run().await,
            return_nested_signature_group_chord::run().await,
            return_nested_signature_chord_chain::run().await,
            return_nested_signature_chord_group::run().await,
            return_nested_signature_chord_chord::run().await,
        ];
        let python: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(python.len(), rust.len());
        for (py, rs) in python.iter().zip(rust) {
            let py: Value = serde_json::from_str(py).unwrap();
            assert_eq!(
                serde_json::to_string(&rs.unwrap()).unwrap(),
                serde_json::to_string(&py).unwrap()
            );
        }
    }

    /// `rebuild_signature(d)`: `None` or `(exception type, args)`.
    fn rebuild(d: &Value) -> Option<(String, Vec<Value>)> {
        from_dict(d)
            .and_then(|node| check(&node))
            .err()
            .map(|e| (e.exc_type, e.args))
    }

    fn raises(d: Value, exc_type: &str, arg: Value) {
        assert_eq!(rebuild(&d), Some((exc_type.to_string(), vec![arg])), "{d}");
    }

    /// What the `return_nested_signature_*` tasks return rebuilds, as in Python.
    #[test]
    fn nested_canvases_rebuild() {
        let add = add_dict;
        for sig in [
            chain([chain([super::add()])]),
            chain([group([super::add()])]),
            chain([chord([super::add()], super::add())]),
            group([chain([super::add()])]),
            group([chord([super::add()], super::add())]),
            chord([chord([super::add()], super::add())], super::add()),
        ] {
            assert_eq!(rebuild(&sig.to_value()), None, "{}", sig.to_value());
        }
        assert_eq!(
            rebuild(&chord_of(canvas("group", json!([add()])), add())),
            None
        );
        assert_eq!(rebuild(&json!({})), None);
        assert_eq!(rebuild(&json!({"subtask_type": ""})), None);
    }

    /// Each case as Celery 5.7's `rebuild_signature` answers it (checked with its
    /// `t/integration/tasks.py`).
    #[test]
    fn malformed_dicts_raise_as_python() {
        let add = add_dict;
        raises(
            json!(1),
            "AttributeError",
            json!("'int' object has no attribute 'get'"),
        );
        raises(
            json!([add()]),
            "AttributeError",
            json!("'list' object has no attribute 'get'"),
        );
        raises(json!({"subtask_type": "foo"}), "KeyError", json!("foo"));
        raises(json!({"subtask_type": true}), "KeyError", json!(true));
        raises(
            json!({"subtask_type": {"a": 1}}),
            "TypeError",
            json!("unhashable type: 'dict'"),
        );
        raises(
            json!({"subtask_type": "chain"}),
            "KeyError",
            json!("kwargs"),
        );
        raises(
            json!({"subtask_type": "chain", "kwargs": {}}),
            "KeyError",
            json!("tasks"),
        );
        raises(
            json!({"subtask_type": "chain", "kwargs": {"tasks": [add()]}}),
            "KeyError",
            json!("options"),
        );
        let mut bad_options = canvas("chain", json!([add()]));
        bad_options["options"] = json!([]);
        raises(
            bad_options,
            "TypeError",
            json!("celery.canvas._chain() argument after ** must be a mapping, not list"),
        );
        let mut bad_kwargs = canvas("group", json!([add()]));
        bad_kwargs["kwargs"] = json!("x");
        raises(
            bad_kwargs,
            "TypeError",
            json!("string indices must be integers, not 'str'"),
        );
        // Chains rebuild as `_chain`, which the task does not look into.
        assert_eq!(rebuild(&canvas("chain", json!([1, null]))), None);
        raises(
            canvas("chain", json!(5)),
            "TypeError",
            json!("'int' object is not iterable"),
        );
        raises(
            canvas("group", json!([1])),
            "TypeError",
            json!("1 is not a signature object"),
        );
        raises(
            canvas("group", json!(null)),
            "TypeError",
            json!("'NoneType' object is not iterable"),
        );
        raises(
            canvas("group", json!("ab")),
            "TypeError",
            json!("'<' is not a signature object"),
        );
        raises(
            canvas("group", json!({"ab": 1})),
            "TypeError",
            json!("'a' is not a signature object"),
        );
        raises(
            canvas("group", json!({"abc": 1})),
            "ValueError",
            json!("dictionary update sequence element #0 has length 3; 2 is required"),
        );
        raises(
            canvas("group", json!([[add()]])),
            "TypeError",
            json!("[{'task': 't.integration.tasks.add', 'args': [], 'kwargs': {}, 'options': {}, 'subtask_type': None, 'immutable': False}] is not a signature object"),
        );
        raises(
            canvas("group", json!([{"subtask_type": "nope"}])),
            "KeyError",
            json!("nope"),
        );
        // A chord's header members become signatures whatever they are; its body does not.
        assert_eq!(rebuild(&chord_of(json!([5, null, "ab"]), add())), None);
        assert_eq!(rebuild(&chord_of(json!("ab"), add())), None);
        raises(
            chord_of(json!(null), add()),
            "TypeError",
            json!("'NoneType' object is not iterable"),
        );
        raises(
            chord_of(json!([add()]), json!(5)),
            "TypeError",
            json!("5 is not a signature object"),
        );
        raises(
            chord_of(json!([add()]), json!(null)),
            "TypeError",
            json!("None is not a signature object"),
        );
        raises(
            chord_of(json!([add()]), canvas("group", json!([1]))),
            "TypeError",
            json!("1 is not a signature object"),
        );
        assert_eq!(
            rebuild(&chord_of(json!([add()]), canvas("chain", json!([1])))),
            None
        );
        // A header given as a chain takes the chain's tasks, which are then looked into.
        raises(
            chord_of(canvas("chain", json!(null)), add()),
            "TypeError",
            json!("None is not a signature object"),
        );
        raises(
            chord_of(canvas("chain", json!({})), add()),
            "TypeError",
            json!("{} is not a signature object"),
        );
        raises(
            chord_of(canvas("chain", json!("ab")), add()),
            "TypeError",
            json!("'a' is not a signature object"),
        );
        assert_eq!(rebuild(&chord_of(canvas("chain", json!([])), add())), None);
        raises(
            json!({"subtask_type": "chord", "kwargs": []}),
            "TypeError",
            json!(
                "celery.canvas._chord._unpack_args() argument after ** must be a mapping, not list"
            ),
        );
        raises(
            json!({"subtask_type": "xmap", "kwargs": {"task": 1}, "options": {}}),
            "KeyError",
            json!("it"),
        );
        raises(
            json!({"subtask_type": "chunks", "kwargs": {"task": 1, "it": 2}}),
            "KeyError",
            json!("n"),
        );
        raises(
            json!({"subtask_type": "xmap", "kwargs": {"task": 1, "it": 2}, "options": [1]}),
            "TypeError",
            json!("celery.canvas.xmap() argument after ** must be a mapping, not list"),
        );
        assert_eq!(
            rebuild(
                &json!({"subtask_type": "chunks", "kwargs": {"task": 1, "it": 2, "n": 3}, "options": {}})
            ),
            None
        );
    }
}

//! Differential test: every call of a systematic set (0-4 positional arguments × every subset of
//! eight keywords) against seven signatures binds in a `#[celeriac_worker::task]` exactly as
//! CPython (the test venv's) binds it to the same `def`: the same values in the same
//! parameters, or the same `TypeError` message.

use celeriac_worker::Handler;
use celeriac_worker::{TaskContext, TaskError};
use serde_json::{json, Map, Value};

type Out = Result<Value, TaskError>;

#[celeriac_worker::task]
async fn add(a: Value, b: Value) -> Out {
    Ok(json!({"a": a, "b": b}))
}

#[celeriac_worker::task]
async fn f(
    a: Value,
    #[default(json!(2))] b: Value,
    #[args] rest: Vec<Value>,
    c: Value,
    #[default(json!(4))] d: Value,
    #[kwargs] extra: Map<String, Value>,
) -> Out {
    Ok(json!({"a": a, "b": b, "rest": rest, "c": c, "d": d, "extra": extra}))
}

#[celeriac_worker::task]
async fn k(a: Value, #[kw_only] c: Value) -> Out {
    Ok(json!({"a": a, "c": c}))
}

#[celeriac_worker::task]
async fn g(x: Value, #[default(json!(1))] y: Value) -> Out {
    Ok(json!({"x": x, "y": y}))
}

#[celeriac_worker::task]
async fn h() -> Out {
    Ok(json!({}))
}

#[celeriac_worker::task]
async fn v(#[args] args: Vec<Value>, #[kwargs] kw: Map<String, Value>) -> Out {
    Ok(json!({"args": args, "kw": kw}))
}

#[celeriac_worker::task]
async fn w(
    a: Value,
    #[kw_only]
    #[default(json!(1))]
    b: Value,
    c: Value,
) -> Out {
    Ok(json!({"a": a, "b": b, "c": c}))
}

const PYTHON: &str = r#"
import json, sys
def add(a, b): return dict(a=a, b=b)
def f(a, b=2, *rest, c, d=4, **extra): return dict(a=a, b=b, rest=list(rest), c=c, d=d, extra=extra)
def k(a, *, c): return dict(a=a, c=c)
def g(x, y=1): return dict(x=x, y=y)
def h(): return {}
def v(*args, **kw): return dict(args=list(args), kw=kw)
def w(a, *, b=1, c): return dict(a=a, b=b, c=c)
out = []
for name, args, kwargs in json.load(open(sys.argv[1])):
    try:
        out.append({"ok": globals()[name](*args, **kwargs)})
    except TypeError as e:
        out.append({"err": str(e)})
print(json.dumps(out))
"#;

#[tokio::test]
async fn every_call_binds_as_cpython_binds_it() {
    let tasks: [(&str, &dyn Handler); 7] = [
        ("add", &add),
        ("f", &f),
        ("k", &k),
        ("g", &g),
        ("h", &h),
        ("v", &v),
        ("w", &w),
    ];
    let keywords = ["a", "b", "c", "d", "x", "y", "z", "args"];
    let mut calls = Vec::new();
    for (name, _) in &tasks {
        for n in 0..=4 {
            for mask in 0..(1u32 << keywords.len()) {
                let args: Vec<Value> = (0..n).map(|i| json!(10 + i)).collect();
                let kwargs: Map<String, Value> = keywords
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(i, key)| (key.to_string(), json!(100 + i)))
                    .collect();
                calls.push((name.to_string(), args, kwargs));
            }
        }
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&calls).unwrap()).unwrap();
    let python = celeriac_testkit::run_python(PYTHON, &[file.path().to_str().unwrap()], &[])
        .expect("CPython binds the calls");
    let expected: Vec<Value> = serde_json::from_str(python.trim()).unwrap();
    assert_eq!(expected.len(), calls.len());

    let mut mismatches = Vec::new();
    let (mut bound, mut refused) = (0, 0);
    for ((name, args, kwargs), want) in calls.iter().zip(&expected) {
        let task = tasks.iter().find(|(n, _)| n == name).unwrap().1;
        let mut ctx = TaskContext::default();
        ctx.args = args.clone();
        ctx.kwargs = kwargs.clone();
        let got = match task.call(ctx).await {
            Ok(value) => json!({ "ok": value }),
            Err(TaskError::Fail(e)) if e.exc_type == "TypeError" => json!({ "err": e.message() }),
            Err(other) => json!({ "other": other.to_string() }),
        };
        if want.get("ok").is_some() {
            bound += 1;
        } else {
            refused += 1;
        }
        if &got != want {
            mismatches.push(format!(
                "{name}(*{args:?}, **{kwargs:?}): ours {got}, CPython {want}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} calls differ, e.g.:\n{}",
        mismatches.len(),
        calls.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
    assert!(
        bound > 100 && refused > 100,
        "{bound} bound, {refused} refused"
    );
}

//! `#[celeriac_worker::task]`: calls bind as CPython binds them to the same `def`.

use celeriac_worker::{Handler, TaskDefinition};
use std::time::Duration;

use celeriac_worker::{PyException, PyNumber, TaskContext, TaskError, TaskOptions};
use serde_json::{json, Map, Value};

/// `def add(a, b): return a + b`
#[celeriac_worker::task(name = "demo.add")]
async fn add(a: PyNumber, b: PyNumber) -> Result<PyNumber, PyException> {
    a + b
}

/// `def fail(*args): raise ValueError(*args)`
#[celeriac_worker::task(name = "demo.fail")]
async fn fail(#[args] args: Vec<Value>) -> Result<(), PyException> {
    Err(PyException {
        exc_type: "ValueError".into(),
        exc_module: "builtins".into(),
        args,
    })
}

/// `def f(ctx, a, b=10, *rest, scale, offset=0, **extra)`
#[celeriac_worker::task]
async fn shaped(
    ctx: TaskContext,
    a: i64,
    #[default(10)] b: i64,
    #[args] rest: Vec<i64>,
    scale: i64,
    #[default = 0] offset: i64,
    #[kwargs] extra: Map<String, Value>,
) -> Result<Value, TaskError> {
    Ok(json!({
        "id": ctx.id,
        "sum": (a + b + rest.iter().sum::<i64>()) * scale + offset,
        "extra": extra,
    }))
}

/// `@app.task(max_retries=None, acks_late=True, time_limit=1.5, soft_time_limit=1)`
/// `def greet(name, *, polite=False)`
#[celeriac_worker::task(
    max_retries = None,
    acks_late,
    track_started = false,
    time_limit = 1.5,
    soft_time_limit = 1,
    default_retry_delay = 7
)]
async fn greet(
    name: String,
    #[kw_only]
    #[default(false)]
    polite: bool,
) -> Result<String, TaskError> {
    Ok(if polite {
        format!("Good day, {name}")
    } else {
        format!("hi {name}")
    })
}

/// A plain `fn` is a blocking task: `def count(n, *, step=1)`.
#[celeriac_worker::task(name = "t.count")]
fn count(
    ctx: TaskContext,
    n: u64,
    #[kw_only]
    #[default(1)]
    step: u64,
) -> Result<Value, TaskError> {
    ctx.check_time_limits()?;
    Ok(
        json!({"n": (0..n).step_by(step as usize).count(), "thread": std::thread::current().name().map(str::to_string)}),
    )
}

async fn call(task: &dyn Handler, args: Value, kwargs: Value) -> Result<Value, TaskError> {
    let mut ctx = TaskContext::default();
    ctx.id = "id-1".into();
    ctx.args = args.as_array().unwrap().clone();
    ctx.kwargs = kwargs.as_object().unwrap().clone();
    task.call(ctx).await
}

async fn type_error(task: &dyn Handler, args: Value, kwargs: Value) -> String {
    match call(task, args, kwargs).await {
        Err(TaskError::Fail(e)) if e.exc_type == "TypeError" => e.message(),
        other => panic!("expected TypeError, got {other:?}"),
    }
}

#[tokio::test]
async fn add_binds_by_position_name_or_both() {
    assert_eq!(add.name(), "demo.add");
    for (args, kwargs) in [
        (json!([2, 40]), json!({})),
        (json!([]), json!({"a": 2, "b": 40})),
        (json!([2]), json!({"b": 40})),
    ] {
        assert_eq!(call(&add, args, kwargs).await.unwrap(), json!(42));
    }
    let big: Value = serde_json::from_str("[1267650600228229401496703205376, 1]").unwrap();
    assert_eq!(
        call(&add, big, json!({})).await.unwrap().to_string(),
        "1267650600228229401496703205377"
    );
    assert_eq!(
        call(&add, json!([1.5, 2.25]), json!({})).await.unwrap(),
        json!(3.75)
    );
    assert_eq!(
        type_error(&add, json!([1]), json!({})).await,
        "add() missing 1 required positional argument: 'b'"
    );
    assert_eq!(
        type_error(&add, json!([1, 2, 3]), json!({})).await,
        "add() takes 2 positional arguments but 3 were given"
    );
    assert_eq!(
        type_error(&add, json!([1]), json!({"a": 1})).await,
        "add() got multiple values for argument 'a'"
    );
    assert_eq!(
        type_error(&add, json!([1, 2]), json!({"c": 1})).await,
        "add() got an unexpected keyword argument 'c'"
    );
    let wrong = type_error(&add, json!(["x", 1]), json!({})).await;
    assert!(wrong.starts_with("add() argument 'a': "), "{wrong}");
}

#[tokio::test]
async fn fail_raises_value_error_with_its_args() {
    match call(&fail, json!(["boom", 42]), json!({})).await {
        Err(TaskError::Fail(e)) => {
            assert_eq!(
                (e.exc_module.as_str(), e.exc_type.as_str()),
                ("builtins", "ValueError")
            );
            assert_eq!(e.args, vec![json!("boom"), json!(42)]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        type_error(&fail, json!([]), json!({"x": 1})).await,
        "fail() got an unexpected keyword argument 'x'"
    );
}

#[tokio::test]
async fn defaults_variadics_and_keyword_only() {
    assert_eq!(
        shaped::PARAMS.params.len(),
        6,
        "the context is no Python parameter"
    );
    let out = call(&shaped, json!([1, 2, 3, 4]), json!({"scale": 2, "z": true}))
        .await
        .unwrap();
    assert_eq!(out, json!({"id": "id-1", "sum": 20, "extra": {"z": true}}));
    let out = call(&shaped, json!([1]), json!({"scale": 1, "offset": 5}))
        .await
        .unwrap();
    assert_eq!(out["sum"], json!(16));
    assert_eq!(
        type_error(&shaped, json!([1, 2]), json!({})).await,
        "shaped() missing 1 required keyword-only argument: 'scale'"
    );
    assert_eq!(
        type_error(&shaped, json!([]), json!({"scale": 1})).await,
        "shaped() missing 1 required positional argument: 'a'"
    );

    assert_eq!(
        call(&greet, json!(["Ann"]), json!({})).await.unwrap(),
        json!("hi Ann")
    );
    assert_eq!(
        call(&greet, json!([]), json!({"name": "Ann", "polite": true}))
            .await
            .unwrap(),
        json!("Good day, Ann")
    );
    assert_eq!(
        type_error(&greet, json!(["Ann", true]), json!({})).await,
        "greet() takes 1 positional argument but 2 were given"
    );
    assert_eq!(
        greet::run("Bo".into(), true).await.unwrap(),
        "Good day, Bo",
        "the function stays callable"
    );
}

#[test]
fn options_as_app_task_takes_them() {
    assert_eq!(add.options(), TaskOptions::default());
    let expected = TaskOptions {
        max_retries: None,
        acks_late: Some(true),
        track_started: Some(false),
        time_limit: Some(Duration::from_millis(1500)),
        soft_time_limit: Some(Duration::from_secs(1)),
        default_retry_delay: Duration::from_secs(7),
        ..TaskOptions::default()
    };
    assert_eq!(greet.options(), expected);
    assert_eq!(greet.name(), "greet", "the function's name by default");
}

#[tokio::test]
async fn a_plain_fn_runs_on_its_own_thread() {
    assert!(count.blocking() && !add.blocking());
    let out = call(&count, json!([10]), json!({"step": 3})).await.unwrap();
    assert_eq!(out["n"], json!(4));
    assert_ne!(
        out["thread"],
        json!(std::thread::current().name()),
        "not the caller's thread"
    );
    assert_eq!(
        type_error(&count, json!([10, 3]), json!({})).await,
        "count() takes 1 positional argument but 2 were given"
    );
}

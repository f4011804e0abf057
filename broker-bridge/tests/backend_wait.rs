//! A real Python `AsyncResult(id).get()`, already blocked on the pub/sub channel, receives what
//! the Rust backend stores.

mod backend_support;

use anyhow::Result;
use backend_support::{Env, Waiter};
use celeriac_broker_bridge::backend::{BackendOptions, ExceptionInfo, ResultBackend, TaskMeta};
use serde_json::{json, Value};

/// Start a waiter per meta, wait until each is blocked, store, and return the reports.
async fn deliver(
    env: &mut Env,
    backend: &ResultBackend,
    conf: Value,
    metas: &[TaskMeta],
) -> Result<Vec<Value>> {
    let mut waiters = Vec::new();
    for m in metas {
        waiters.push(Waiter::spawn(&env.url, &conf, &m.task_id)?);
    }
    for (w, m) in waiters.iter_mut().zip(metas) {
        w.until_listening(&mut env.conn).await?;
        backend.store(m).await?;
    }
    waiters.into_iter().map(Waiter::finish).collect()
}

#[tokio::test]
async fn success_values_reach_a_waiting_get() -> Result<()> {
    let mut env = Env::start(BackendOptions::default()).await?;
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!(42), "int", "42"),
        (
            serde_json::from_str("1267650600228229401496703205376")?,
            "int",
            "1267650600228229401496703205376",
        ),
        (json!("héllo ✓ 😀"), "str", "'héllo ✓ 😀'"),
        (Value::Null, "NoneType", "None"),
        (
            json!([1, "a", [true, 2.5]]),
            "list",
            "[1, 'a', [True, 2.5]]",
        ),
        (
            json!({"a": 1, "b": {"c": null}}),
            "dict",
            "{'a': 1, 'b': {'c': None}}",
        ),
        (
            json!({"__type__": "datetime", "__value__": "2024-05-06T07:08:09.123456+00:00"}),
            "datetime",
            "datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.timezone.utc)",
        ),
        (
            json!({"__type__": "decimal", "__value__": "1.10"}),
            "Decimal",
            "Decimal('1.10')",
        ),
    ];
    let metas: Vec<TaskMeta> = cases
        .iter()
        .enumerate()
        .map(|(i, (v, _, _))| TaskMeta::success(format!("ok-{i}"), v.clone()))
        .collect();
    let backend = env.backend.clone();
    let reports = deliver(&mut env, &backend, json!({}), &metas).await?;
    for ((value, ty, repr), r) in cases.iter().zip(&reports) {
        assert_eq!(r["raised"], Value::Null, "{value}: {r}");
        assert_eq!(r["type"], *ty, "{value}: {r}");
        assert_eq!(r["repr"], *repr, "{value}: {r}");
        assert_eq!(r["state"], "SUCCESS");
        assert_eq!(r["via_pubsub"], json!(["SUCCESS"]), "{value}: {r}");
    }
    Ok(())
}

#[tokio::test]
async fn failures_are_raised_as_python_exceptions() -> Result<()> {
    let mut env = Env::start(BackendOptions::default()).await?;
    let tb = "Traceback (most recent call last):\n  rust frame\nValueError: boom\n";
    let metas = vec![
        TaskMeta::failure(
            "fail-builtin",
            &ExceptionInfo::builtin("ValueError", "boom"),
            Some(tb.into()),
        ),
        TaskMeta::failure(
            "fail-unknown-module",
            &ExceptionInfo::new(
                "billing.nowhere",
                "PaymentDeclined",
                vec![json!(402), json!({"card": "x"})],
            ),
            None,
        ),
        TaskMeta::revoked("revoked", "terminated"),
    ];
    let backend = env.backend.clone();
    let r = deliver(&mut env, &backend, json!({}), &metas).await?;

    assert_eq!(r[0]["raised"], "ValueError", "{}", r[0]);
    assert_eq!(r[0]["module"], "builtins");
    assert_eq!(r[0]["str"], "boom");
    assert_eq!(r[0]["state"], "FAILURE");
    assert_eq!(r[0]["traceback"], tb);
    assert_eq!(r[0]["via_pubsub"], json!(["FAILURE"]));

    // Python cannot find the module, so it makes an Exception subclass of that name (in
    // celery.exceptions) and calls it with the args.
    assert_eq!(r[1]["raised"], "PaymentDeclined", "{}", r[1]);
    assert_eq!(r[1]["module"], "celery.exceptions");
    assert_eq!(r[1]["is_exception"], true);
    assert_eq!(r[1]["str"], "(402, {'card': 'x'})");
    assert_eq!(r[1]["traceback"], Value::Null);

    assert_eq!(r[2]["raised"], "TaskRevokedError", "{}", r[2]);
    assert_eq!(r[2]["module"], "celery.exceptions");
    assert_eq!(r[2]["str"], "terminated");
    assert_eq!(r[2]["state"], "REVOKED");
    Ok(())
}

#[tokio::test]
async fn prefixed_keys_and_channels_match_python_configured_the_same() -> Result<()> {
    let opts = BackendOptions {
        global_keyprefix: "myapp".into(),
        ..BackendOptions::default()
    };
    let mut env = Env::start(opts).await?;
    let meta = TaskMeta::success("pfx-1", json!("prefixed"));
    let conf = json!({"result_backend_transport_options": {"global_keyprefix": "myapp"}});
    let backend = env.backend.clone();
    let r = deliver(&mut env, &backend, conf, &[meta]).await?;
    assert_eq!(r[0]["repr"], "'prefixed'", "{}", r[0]);
    assert_eq!(r[0]["via_pubsub"], json!(["SUCCESS"]));
    assert!(env.raw("myapp_celery-task-meta-pfx-1").await?.is_some());
    assert!(env.raw("celery-task-meta-pfx-1").await?.is_none());
    Ok(())
}

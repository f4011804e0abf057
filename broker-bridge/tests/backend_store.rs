//! Store rules against a real Redis, read back by real Python Celery: states, `info`,
//! `result_extended`, TTLs, SUCCESS never overwritten, unreadable values refused.

mod backend_support;

use std::time::Duration;

use anyhow::Result;
use backend_support::Env;
use celeriac_broker_bridge::backend::{
    BackendError, BackendOptions, ExceptionInfo, ExtendedMeta, StoreOutcome, TaskMeta,
};
use celeriac_testkit::run_python;
use serde_json::{json, Value};

/// Python: read each task id's state and details with `AsyncResult` (no waiting).
const READER: &str = r#"
import json, sys
from celery import Celery
url, conf = sys.argv[1], json.loads(sys.argv[2])
app = Celery("reader", broker=url, backend=url)
app.conf.update(conf)
out = {}
for tid in sys.argv[3:]:
    r = app.AsyncResult(tid)
    info = r.info
    out[tid] = {
        "state": r.state, "ready": r.ready(),
        "info_type": type(info).__name__, "info": str(info) if isinstance(info, BaseException) else repr(info),
        "name": r.name, "args": repr(r.args), "kwargs": repr(r.kwargs), "worker": r.worker,
        "queue": r.queue, "retries": r.retries,
    }
print(json.dumps(out))
"#;

fn read(url: &str, conf: Value, ids: &[&str]) -> Result<Value> {
    let mut args = vec![url, ""];
    let conf = conf.to_string();
    args[1] = &conf;
    args.extend_from_slice(ids);
    Ok(serde_json::from_str(&run_python(READER, &args, &[])?)?)
}

#[tokio::test]
async fn started_retry_and_revoked_states_with_info() -> Result<()> {
    let env = Env::start(BackendOptions::default()).await?;
    let b = &env.backend;
    b.store(&TaskMeta::started("s", "celery@rust", 4242))
        .await?;
    let again = ExceptionInfo::builtin("RuntimeError", "again");
    b.store(&TaskMeta::retry("r", Some(&again), Some("tb".into())))
        .await?;
    b.store(&TaskMeta::retry("r0", None, None)).await?;
    b.store(&TaskMeta::revoked("v", "expired")).await?;
    let out = read(&env.url, json!({}), &["s", "r", "r0", "v", "missing"])?;

    assert_eq!(out["s"]["state"], "STARTED");
    assert_eq!(out["s"]["ready"], false);
    assert_eq!(out["s"]["info"], "{'pid': 4242, 'hostname': 'celery@rust'}");
    assert_eq!(out["r"]["state"], "RETRY");
    assert_eq!(out["r"]["info_type"], "RuntimeError");
    assert_eq!(out["r"]["info"], "again");
    assert_eq!(out["r0"]["state"], "RETRY");
    assert_eq!(out["r0"]["info"], "None");
    assert_eq!(out["v"]["state"], "REVOKED");
    assert_eq!(out["v"]["ready"], true);
    assert_eq!(out["v"]["info_type"], "TaskRevokedError");
    assert_eq!(out["v"]["info"], "expired");
    assert_eq!(out["missing"]["state"], "PENDING");

    let stored = b.get("s").await?.expect("STARTED stored");
    assert_eq!(stored["date_done"], Value::Null);
    assert!(b.get("missing").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn extended_fields_are_readable_from_python() -> Result<()> {
    let opts = BackendOptions {
        result_extended: true,
        ..BackendOptions::default()
    };
    let env = Env::start(opts).await?;
    let ext = ExtendedMeta {
        name: Some("proj.tasks.add".into()),
        args: json!([2, 3]),
        kwargs: json!({"z": "é"}),
        worker: Some("celeriac@host".into()),
        retries: Some(1),
        queue: Some("math".into()),
        ..ExtendedMeta::default()
    };
    let meta = TaskMeta::success("e", json!(5)).with_extended(ext);
    env.backend.store(&meta).await?;
    let out = read(&env.url, json!({"result_extended": true}), &["e"])?;
    let e = &out["e"];
    assert_eq!(e["state"], "SUCCESS");
    assert_eq!(e["name"], "proj.tasks.add");
    assert_eq!(e["args"], "[2, 3]");
    assert_eq!(e["kwargs"], "{'z': 'é'}");
    assert_eq!(e["worker"], "celeriac@host");
    assert_eq!(e["queue"], "math");
    assert_eq!(e["retries"], 1);
    Ok(())
}

#[tokio::test]
async fn extended_fields_are_not_written_when_the_option_is_off() -> Result<()> {
    let env = Env::start(BackendOptions::default()).await?;
    let ext = ExtendedMeta {
        name: Some("t".into()),
        ..ExtendedMeta::default()
    };
    env.backend
        .store(&TaskMeta::success("e", json!(1)).with_extended(ext))
        .await?;
    let stored = env.backend.get("e").await?.expect("stored");
    assert!(stored.get("name").is_none(), "{stored}");
    Ok(())
}

#[tokio::test]
async fn ttl_follows_result_expires_and_failure_expires() -> Result<()> {
    let mut env = Env::start(BackendOptions::default()).await?;
    env.backend.store(&TaskMeta::success("d", json!(1))).await?;
    let ttl = env.ttl("celery-task-meta-d").await?;
    assert!(ttl > 86_000 && ttl <= 86_400, "default TTL {ttl}");

    let opts = BackendOptions {
        result_expires: Some(Duration::from_millis(99_500)),
        result_failure_expires: Some(Duration::from_secs(50)),
        ..BackendOptions::default()
    };
    let b = celeriac_broker_bridge::backend::ResultBackend::connect(&env.url, opts).await?;
    b.store(&TaskMeta::success("s", json!(1))).await?;
    let boom = ExceptionInfo::builtin("ValueError", "x");
    b.store(&TaskMeta::failure("f", &boom, None)).await?;
    b.store(&TaskMeta::retry("r", Some(&boom), None)).await?;
    let ttl_s = env.ttl("celery-task-meta-s").await?;
    let ttl_f = env.ttl("celery-task-meta-f").await?;
    let ttl_r = env.ttl("celery-task-meta-r").await?;
    assert!(ttl_s > 50 && ttl_s <= 100, "success TTL {ttl_s}");
    assert!(ttl_f > 0 && ttl_f <= 50, "failure TTL {ttl_f}");
    assert!(ttl_r > 50 && ttl_r <= 100, "retry TTL {ttl_r}");

    for never in [None, Some(Duration::ZERO)] {
        let opts = BackendOptions {
            result_expires: never,
            ..BackendOptions::default()
        };
        let b = celeriac_broker_bridge::backend::ResultBackend::connect(&env.url, opts).await?;
        b.store(&TaskMeta::success("n", json!(1))).await?;
        assert_eq!(env.ttl("celery-task-meta-n").await?, -1, "{never:?}");
        b.forget("n").await?;
        assert_eq!(env.ttl("celery-task-meta-n").await?, -2);
    }
    Ok(())
}

#[tokio::test]
async fn success_is_never_overwritten() -> Result<()> {
    let mut env = Env::start(BackendOptions::default()).await?;
    let b = env.backend.clone();
    assert_eq!(
        b.store(&TaskMeta::started("t", "h", 1)).await?,
        StoreOutcome::Stored
    );
    assert_eq!(
        b.store(&TaskMeta::success("t", json!("first"))).await?,
        StoreOutcome::Stored
    );
    let before = env.raw("celery-task-meta-t").await?;
    let late = TaskMeta::failure("t", &ExceptionInfo::builtin("ValueError", "late"), None);
    assert_eq!(b.store(&late).await?, StoreOutcome::KeptSuccess);
    assert_eq!(
        b.store(&TaskMeta::success("t", json!("second"))).await?,
        StoreOutcome::KeptSuccess
    );
    assert_eq!(env.raw("celery-task-meta-t").await?, before);
    let out = read(&env.url, json!({}), &["t"])?;
    assert_eq!(out["t"]["state"], "SUCCESS");
    assert_eq!(out["t"]["info"], "'first'");
    Ok(())
}

#[tokio::test]
async fn a_value_that_is_not_a_json_meta_is_refused_not_overwritten() -> Result<()> {
    let mut env = Env::start(BackendOptions::default()).await?;
    let key = "celery-task-meta-odd";
    redis::cmd("SET")
        .arg(key)
        .arg(b"\x00celery-compressed\x00application/x-gzip\x00xx".as_slice())
        .query_async::<()>(&mut env.conn)
        .await?;
    let err = env
        .backend
        .store(&TaskMeta::success("odd", json!(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::UnreadableMeta { .. }), "{err}");
    let err = env.backend.get("odd").await.unwrap_err();
    assert!(matches!(err, BackendError::UnreadableMeta { .. }), "{err}");
    assert!(env
        .raw(key)
        .await?
        .is_some_and(|v| v.starts_with(b"\x00celery-compressed")));
    Ok(())
}

#[tokio::test]
async fn connect_errors_are_clear() {
    let err = celeriac_broker_bridge::backend::ResultBackend::connect(
        "memcached://h/0",
        BackendOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("unsupported scheme"), "{err}");
}

#[tokio::test]
async fn connects_over_a_unix_socket_with_celery_socket_url() -> Result<()> {
    let sock = std::env::temp_dir().join(format!("celeriac-backend-{}.sock", std::process::id()));
    let sock_arg = sock.to_string_lossy().into_owned();
    let server = celeriac_testkit::RedisServer::start_with_args(&[
        "--unixsocket",
        &sock_arg,
        "--unixsocketperm",
        "700",
    ])?;
    let url = format!("socket://{sock_arg}?virtual_host=3");
    let b =
        celeriac_broker_bridge::backend::ResultBackend::connect(&url, BackendOptions::default())
            .await?;
    b.store(&TaskMeta::success("u", json!("via socket")))
        .await?;
    let out = read(&server.url(3), json!({}), &["u"])?;
    assert_eq!(out["u"]["info"], "'via socket'");
    drop(server);
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

#[tokio::test]
async fn store_many_writes_each_meta_as_store_would() -> Result<()> {
    let mut env = Env::start(BackendOptions::default()).await?;
    let b = env.backend.clone();
    b.store(&TaskMeta::success("done", json!("kept"))).await?;
    let metas = vec![
        TaskMeta::success("a", json!(1)),
        TaskMeta::failure("done", &ExceptionInfo::builtin("ValueError", "late"), None),
        TaskMeta::failure("b", &ExceptionInfo::builtin("KeyError", "k"), None),
    ];
    let outcomes: Vec<StoreOutcome> = b
        .store_many(&metas)
        .await?
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert_eq!(
        outcomes,
        [
            StoreOutcome::Stored,
            StoreOutcome::KeptSuccess,
            StoreOutcome::Stored
        ]
    );
    for (one, key) in [
        (&metas[0], "celery-task-meta-a"),
        (&metas[2], "celery-task-meta-b"),
    ] {
        assert_eq!(env.raw(key).await?, Some(one.encode(false)));
    }
    let out = read(&env.url, json!({}), &["a", "done", "b"])?;
    assert_eq!(out["a"]["state"], "SUCCESS");
    assert_eq!(out["done"]["info"], "'kept'");
    assert_eq!(out["b"]["state"], "FAILURE");
    assert_eq!(out["b"]["info_type"], "KeyError");
    Ok(())
}

/// Python reading with Celery's `setup_security()` (`result_serializer = "auth"`, only signed
/// results accepted): what it sees of each task id.
const SIGNED_READER: &str = r#"
import json, sys
from celery import Celery
url, keys = sys.argv[1], sys.argv[2]
app = Celery("reader", broker=url, backend=url)
app.conf.update(
    task_serializer="auth", result_serializer="auth", accept_content=["auth"],
    result_accept_content=["auth"], security_key=keys + "/key.pem",
    security_certificate=keys + "/cert.pem", security_cert_store=keys + "/store/*.pem",
)
app.setup_security()
out = {}
for tid in sys.argv[3:]:
    try:
        r = app.AsyncResult(tid)
        out[tid] = {"state": r.state, "result": repr(r.result)}
    except Exception as e:
        out[tid] = {"error": type(e).__name__}
print(json.dumps(out))
"#;

#[tokio::test]
async fn signed_results_are_read_by_celery_with_setup_security() -> Result<()> {
    use celeriac_broker_bridge::signing::{BodySerializer, CertStore, Digest, Signer, Verifier};
    use std::sync::Arc;
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../proto-fixtures/fixtures/signed")
        .canonicalize()?;
    let signer = Signer::from_files(
        &keys.join("key.pem"),
        None,
        &keys.join("cert.pem"),
        Digest::Sha256,
    )?;
    let store = CertStore::load(&keys.join("store").to_string_lossy())?;
    let env = Env::start(BackendOptions {
        serializer: BodySerializer::Auth(Arc::new(signer)),
        verifier: Some(Arc::new(Verifier::new(store, Digest::Sha256))),
        require_signed: true,
        ..BackendOptions::default()
    })
    .await?;
    let b = &env.backend;
    // A signed STARTED is read (through its body) and replaced; a signed SUCCESS is kept.
    b.store(&TaskMeta::started("t", "celery@rust", 1)).await?;
    assert_eq!(
        b.store(&TaskMeta::success(
            "t",
            serde_json::from_str("1267650600228229401496703205376")?
        ))
        .await?,
        StoreOutcome::Stored
    );
    assert_eq!(
        b.store(&TaskMeta::retry("t", None, None)).await?,
        StoreOutcome::KeptSuccess
    );
    assert_eq!(b.get("t").await?.unwrap()["status"], "SUCCESS");
    // An unsigned meta planted by someone else is refused on read.
    let mut conn = redis::Client::open(env.url.as_str())?
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(std::time::Duration::from_secs(30))),
        )
        .await?;
    let _: () = redis::cmd("SET")
        .arg(b.key_for("forged"))
        .arg(r#"{"status": "SUCCESS", "result": 666, "task_id": "forged"}"#)
        .query_async(&mut conn)
        .await?;
    assert!(matches!(
        b.get("forged").await,
        Err(BackendError::UnreadableMeta { .. })
    ));

    let out: Value = serde_json::from_str(&run_python(
        SIGNED_READER,
        &[&env.url, &keys.to_string_lossy(), "t", "forged"],
        &[],
    )?)?;
    assert_eq!(out["t"]["state"], "SUCCESS");
    assert_eq!(out["t"]["result"], "1267650600228229401496703205376");
    // Python decodes every stored value with `result_serializer`, so the plain JSON fails too.
    assert_eq!(out["forged"]["error"], "DecodeError");
    Ok(())
}

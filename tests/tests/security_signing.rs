//! Message signing (Celery's `auth` serializer) with real Python Celery on both sides: a
//! producer and a fellow worker that called `app.setup_security()`, and a celeriac worker
//! configured by the same `CELERY_*` variables (an encrypted key whose password comes from a
//! `_FILE`). Signed tasks run and their signed results, retries, chain steps and control
//! replies are accepted by Celery; unsigned messages and messages signed by a key outside the
//! certificate store are dead-lettered intact with the reason, and the worker keeps running.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use celeriac_testkit::workspace_root;
use redis::Commands;
use support::{eventually, World};

fn keys() -> PathBuf {
    workspace_root().join("proto-fixtures/fixtures/signed")
}

/// A world whose both sides sign with the fixtures' key and trust the fixtures' store.
fn signed_world() -> World {
    let keys = keys();
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let mut world = World::new(&[
        ("CELERY_TASK_SERIALIZER", "auth"),
        ("CELERY_RESULT_SERIALIZER", "auth"),
        ("CELERY_EVENT_SERIALIZER", "auth"),
        ("CELERY_ACCEPT_CONTENT", "auth"),
        ("CELERY_SECURITY_KEY", &path(keys.join("key-encrypted.pem"))),
        ("CELERY_SECURITY_CERTIFICATE", &path(keys.join("cert.pem"))),
        (
            "CELERY_SECURITY_CERT_STORE",
            &path(keys.join("store/*.pem")),
        ),
    ]);
    let password_file = world.dir().join("key-password");
    std::fs::write(&password_file, "test-password\n").unwrap();
    world.env.push((
        "CELERY_SECURITY_KEY_PASSWORD_FILE".into(),
        path(password_file),
    ));
    world
}

#[test]
fn signed_tasks_results_retries_chains_and_control_interoperate() {
    let world = signed_world();
    let mut worker = world.celeriac("signer", &["-c", "4"]);
    let _python = world.python_worker("pysigner", "py");
    let out = world.py(r#"
import json
from celery import chain
from celery_app import app, add, mul
r = {}
r["add"] = add.delay(2, 3).get(timeout=30)
r["retried"] = app.send_task("t.flaky", (1,)).get(timeout=30)
r["chain"] = chain(add.s(1, 2), mul.s(10).set(queue="py")).apply_async().get(timeout=30)
replies = app.control.inspect(timeout=3).ping() or {}
r["ping"] = sorted(replies)
print(json.dumps(r))
"#);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["add"], 5, "{out}");
    assert_eq!(r["retried"], 1, "{out}");
    assert_eq!(r["chain"], 30, "{out}");
    assert!(
        r["ping"]
            .as_array()
            .unwrap()
            .contains(&"signer@test".into()),
        "{out}"
    );
    // The result celeriac stored is signed, not plain JSON.
    let mut redis = world.redis();
    let keys: Vec<String> = redis.keys("celery-task-meta-*").unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let raw: String = redis.get(&key).unwrap();
        assert!(
            serde_json::from_str::<serde_json::Value>(&raw).is_err(),
            "{key} holds plain JSON: {raw}"
        );
    }
    worker.signal("TERM");
    worker.wait_exit(Duration::from_secs(30)).unwrap();
}

#[test]
fn unsigned_and_untrusted_messages_are_dead_lettered_with_reasons() {
    let world = signed_world();
    let _worker = world.celeriac("strict", &["-c", "2"]);
    // A producer without setup_security (plain JSON), then one signing with a key of its own
    // whose certificate is not in the worker's store.
    world.py(r#"
import os
for k in ("CELERY_SECURITY_KEY", "CELERY_TASK_SERIALIZER", "CELERY_ACCEPT_CONTENT"):
    os.environ.pop(k, None)
from celery_app import app
app.send_task("t.add", (1, 1), task_id="unsigned-1")
"#);
    world.py(r#"
import datetime, os, tempfile
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(7)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
d = tempfile.mkdtemp()
open(d + "/k.pem", "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
open(d + "/c.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
os.environ["CELERY_SECURITY_KEY"] = d + "/k.pem"
os.environ.pop("CELERY_SECURITY_KEY_PASSWORD_FILE")
os.environ["CELERY_SECURITY_CERTIFICATE"] = d + "/c.pem"
os.environ["CELERY_SECURITY_CERT_STORE"] = d + "/c.pem"
from celery_app import app
app.send_task("t.add", (2, 2), task_id="intruder-1")
"#);
    let mut redis = world.redis();
    let reasons = eventually(Duration::from_secs(20), || {
        let r: HashMap<String, String> = redis.hgetall("celeriac.dead_letter.reasons").unwrap();
        (r.len() == 2).then_some(r)
    })
    .expect("both messages dead-lettered");
    let all: Vec<String> = reasons
        .values()
        .map(|v| {
            let entry: serde_json::Value = serde_json::from_str(v).unwrap();
            entry["reason"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        all.iter()
            .any(|r| r.contains("application/json") && r.contains("not in accept list")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|r| r.contains("unknown signer") && r.contains("intruder 7")),
        "{all:?}"
    );
    let dead: Vec<String> = redis.lrange("celeriac.dead_letter", 0, -1).unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().any(|raw| raw.contains("unsigned-1")));
    assert!(dead.iter().any(|raw| raw.contains("intruder-1")));
    // Neither ran nor got a result (an unsigned message cannot even fail someone's task id),
    // and the worker still serves signed work.
    let out = world.py(r#"
from celery_app import app, add
r = app.AsyncResult
print(r("unsigned-1").state, r("intruder-1").state, add.delay(20, 22).get(timeout=30))
"#);
    assert_eq!(out.trim(), "PENDING PENDING 42");
}

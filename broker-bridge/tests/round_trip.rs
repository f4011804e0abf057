//! encode(decode(x)) for every captured message, pushed into a private Redis and read back by
//! real kombu/Celery: what Python sees equals what Python saw in the original (`expected`).

mod codec_support;

use std::io::Write;
use std::process::{Command, Stdio};

use celeriac_broker_bridge::codec::{decode, DecodeOptions, EncodeOptions, Signature, TaskMessage};
use celeriac_testkit::{python, workspace_root, RedisServer};
use codec_support::{all_messages, assert_same, list_or_empty};
use serde_json::{json, Value};

const QUEUE: &str = "celeriac.roundtrip";

fn lpush(server: &RedisServer, key: &str, value: &[u8]) {
    let mut child = Command::new("redis-cli")
        .args(["-p", &server.port().to_string(), "-x", "LPUSH", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    child.stdin.take().unwrap().write_all(value).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
}

fn read_back(server: &RedisServer, count: usize) -> Vec<Value> {
    let script = workspace_root().join("broker-bridge/tests/python/read_back.py");
    let out = Command::new(python().unwrap())
        .arg(script)
        .args([&server.url(0), QUEUE, &count.to_string()])
        .output()
        .expect("run read_back.py");
    assert!(
        out.status.success(),
        "read_back.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Compare what kombu read back with what kombu read from the original capture.
fn check(name: &str, got: &Value, want: &Value) {
    for k in [
        "task",
        "id",
        "args",
        "kwargs",
        "eta",
        "expires",
        "retries",
        "priority",
        "root_id",
        "parent_id",
        "group",
        "group_index",
        "timelimit",
        "shadow",
    ] {
        assert_same(&format!("{name} {k}"), &got[k], &want[k]);
    }
    // `ignore_result: null` (5.7 send_task) and `false` mean the same to the worker.
    let ir = |v: &Value| v.as_bool().unwrap_or(false);
    assert_eq!(
        ir(&got["ignore_result"]),
        ir(&want["ignore_result"]),
        "{name}"
    );
    for k in ["callbacks", "errbacks", "chain"] {
        assert_same(
            &format!("{name} {k}"),
            &list_or_empty(&got["embed"][k]),
            &list_or_empty(&want["embed"][k]),
        );
    }
    assert_same(
        &format!("{name} chord"),
        &got["embed"]["chord"],
        &want["embed"]["chord"],
    );
    // Custom headers travel too.
    for (k, v) in want["headers"].as_object().unwrap() {
        if k.starts_with("x-") || k == "tenant" || k == "nested" {
            assert_same(&format!("{name} header {k}"), &got["headers"][k], v);
        }
    }
    assert_eq!(got["content_type"], "application/json", "{name}");
    assert_eq!(got["correlation_id"], want["id"], "{name}");
}

#[test]
fn every_fixture_survives_encode_and_is_read_by_real_kombu() {
    let server = RedisServer::start().unwrap();
    let mut wants = Vec::new();
    for m in all_messages() {
        if m.expected["refused"] == json!(true) {
            continue;
        }
        let msg = decode(m.raw.as_bytes(), &DecodeOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", m.name));
        let env = msg.to_envelope(&EncodeOptions::queue(QUEUE));
        assert_ne!(
            env.delivery_tag(),
            msg.delivery_tag.as_deref(),
            "fresh delivery tag"
        );
        lpush(&server, QUEUE, env.to_json().as_bytes());
        wants.push((m.name, m.expected));
    }
    let got = read_back(&server, wants.len());
    assert_eq!(got.len(), wants.len());
    for ((name, want), got) in wants.iter().zip(&got) {
        check(name, got, want);
    }
}

#[test]
fn messages_built_from_signatures_are_read_by_real_kombu() {
    let server = RedisServer::start().unwrap();
    let mut sig = Signature::new("tasks.mul", vec![json!(3), json!(4)], Default::default());
    sig.options.insert("task_id".into(), json!("fixed-id"));
    sig.options.insert("group_id".into(), json!("g-1"));
    sig.options.insert("group_index".into(), json!(2));
    sig.options.insert(
        "link".into(),
        Signature::new("tasks.log", vec![], Default::default()).to_value(),
    );
    let msg = TaskMessage::from_signature(&sig, Some("root-1"), Some("parent-1")).unwrap();
    assert_eq!(msg.id, "fixed-id");
    let fresh = TaskMessage::from_signature(
        &Signature::new("tasks.add", vec![json!(1)], Default::default()),
        None,
        None,
    )
    .unwrap();
    assert_eq!(fresh.root_id.as_deref(), Some(fresh.id.as_str()));
    assert!(uuid::Uuid::parse_str(&fresh.id).is_ok());
    let mut expiring = fresh.clone();
    expiring.expires = celeriac_broker_bridge::codec::WireTime::parse("2999-01-01T00:00:00+00:00");
    let opts = EncodeOptions::queue(QUEUE);
    let env = expiring.to_envelope(&opts);
    let expiration: i64 = env.properties()["expiration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(expiration > 0);
    for m in [&msg, &fresh] {
        lpush(&server, QUEUE, m.to_envelope(&opts).to_json().as_bytes());
    }
    let got = read_back(&server, 2);
    assert_eq!(got[0]["task"], "tasks.mul");
    assert_eq!(got[0]["id"], "fixed-id");
    assert_eq!(got[0]["args"], json!([3, 4]));
    assert_eq!(got[0]["root_id"], "root-1");
    assert_eq!(got[0]["parent_id"], "parent-1");
    assert_eq!(got[0]["group"], "g-1");
    assert_eq!(got[0]["group_index"], 2);
    assert_eq!(got[0]["embed"]["callbacks"][0]["task"], "tasks.log");
    assert_eq!(got[0]["headers"]["argsrepr"], "(3, 4)");
    assert_eq!(got[1]["args"], json!([1]));
    assert_eq!(got[1]["root_id"], got[1]["id"]);
    let canvas = Signature {
        subtask_type: Some("group".into()),
        ..Signature::new("celery.group", vec![], Default::default())
    };
    assert!(TaskMessage::from_signature(&canvas, None, None).is_err());
}

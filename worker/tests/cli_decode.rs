//! `celeriac decode` run as a real process on the captured Celery fixtures.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn run(input: &[u8], args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .arg("decode")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn celeriac");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn fixture_messages() -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for version in ["celery-5.7.0", "celery-5.3.6"] {
        let dir = celeriac_testkit::fixtures_dir().join(version);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| p.file_name().is_some_and(|n| n != "INDEX.json"))
            .collect();
        files.sort();
        for f in files {
            let doc: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            for m in doc["messages"].as_array().unwrap() {
                out.push((
                    format!("{version}/{}", doc["case"].as_str().unwrap()),
                    m["raw"].as_str().unwrap().to_string(),
                    m["expected"].clone(),
                ));
            }
        }
    }
    assert!(out.len() > 40);
    out
}

#[test]
fn decodes_fixtures_and_refuses_pickle() {
    let keys = [
        "protocol",
        "id",
        "task",
        "args",
        "kwargs",
        "eta",
        "expires",
        "retries",
        "priority",
        "root_id",
        "parent_id",
        "group",
        "timelimit",
        "callbacks",
        "errbacks",
        "chain",
        "chord",
        "content_type",
    ];
    let (mut ok, mut refused) = (0, 0);
    for (name, raw, expected) in fixture_messages() {
        let out = run(raw.as_bytes(), &[]);
        if expected["refused"] == Value::Bool(true) {
            assert_eq!(out.status.code(), Some(3), "{name}");
            let err = String::from_utf8(out.stderr).unwrap();
            assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
            assert!(
                err.contains("application/x-python-serialize"),
                "{name}: {err}"
            );
            assert!(out.stdout.is_empty());
            refused += 1;
            continue;
        }
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        for k in keys {
            assert!(v.get(k).is_some(), "{name}: key {k} missing");
        }
        assert_eq!(v["id"], expected["id"], "{name}");
        assert_eq!(v["task"], expected["task"], "{name}");
        assert_eq!(
            v["args"], expected["args"],
            "{name}: args exactly as serialized"
        );
        assert_eq!(v["kwargs"], expected["kwargs"], "{name}");
        assert_eq!(v["eta"], expected["eta"], "{name}");
        assert_eq!(v["expires"], expected["expires"], "{name}");
        ok += 1;
    }
    assert!(ok > 40 && refused >= 2);
}

#[test]
fn big_ints_are_printed_exactly() {
    let (_, raw, _) = fixture_messages()
        .into_iter()
        .find(|(n, _, _)| n == "celery-5.7.0/p2_scalars")
        .expect("p2_scalars fixture");
    let out = run(raw.as_bytes(), &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1267650600228229401496703205376"), "{text}");
    assert!(text.contains("-1180591620717411303424"), "{text}");
}

#[test]
fn malformed_input_exits_2_and_unaccepted_exits_3() {
    for bad in [&b"not json"[..], b"{\"body\": 1}", b""] {
        let out = run(bad, &[]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("malformed"), "{err}");
    }
    let (_, raw, _) = fixture_messages()
        .into_iter()
        .find(|(_, _, e)| e["content_type"] == "application/x-msgpack")
        .expect("a msgpack fixture");
    assert_eq!(
        run(raw.as_bytes(), &["--accept", "json"]).status.code(),
        Some(3)
    );
    assert_eq!(run(raw.as_bytes(), &[]).status.code(), Some(0));
}

#[test]
fn reads_a_file_argument() {
    let (_, raw, expected) = fixture_messages().remove(0);
    let dir = std::env::temp_dir().join(format!("celeriac-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("msg.json");
    std::fs::write(&path, raw).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(["decode", path.to_str().unwrap()])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], expected["id"]);
    let missing = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(["decode", "/nonexistent/celeriac-msg"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn signed_messages_need_the_cert_store() {
    let dir = celeriac_testkit::fixtures_dir().join("signed");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(dir.join("task.json")).unwrap()).unwrap();
    let raw = doc["raw"].as_str().unwrap().as_bytes();

    let refused = run(raw, &[]);
    assert_eq!(refused.status.code(), Some(3));
    let err = String::from_utf8(refused.stderr).unwrap();
    assert!(err.contains("application/data"), "{err}");

    let store = dir.join("store");
    let out = run(raw, &["--cert-store", store.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(msg["task"], "tasks.echo");
    assert_eq!(msg["args"], serde_json::json!([2, 3]));

    let other = dir.join("store/other-cert.pem");
    let untrusted = run(raw, &["--cert-store", other.to_str().unwrap()]);
    assert_eq!(untrusted.status.code(), Some(2));
    let err = String::from_utf8(untrusted.stderr).unwrap();
    assert!(err.contains("unknown signer"), "{err}");
}

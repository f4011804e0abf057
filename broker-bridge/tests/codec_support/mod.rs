//! Shared by the codec's integration tests: load the committed fixtures, compare JSON the way
//! Python compares the same values.

#![allow(dead_code, unreachable_pub)] // shared by test binaries that each use a part

use std::path::PathBuf;

use celeriac_broker_bridge::codec::Signature;
use serde_json::Value;

/// One captured message.
pub struct Captured {
    /// `celery-5.7.0/p2_chain#1`.
    pub name: String,
    /// The list element exactly as stored.
    pub raw: String,
    /// What kombu/Celery decoded it to.
    pub expected: Value,
}

/// Every message of every fixture file of every Celery version (panics if there are none, so a
/// missing fixtures folder fails the tests instead of passing them vacuously).
pub fn all_messages() -> Vec<Captured> {
    let root = celeriac_testkit::fixtures_dir();
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("read {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("celery-"))
        })
        .collect();
    versions.sort();
    assert!(
        versions.len() >= 2,
        "expected fixtures for two Celery versions"
    );
    let mut out = Vec::new();
    for dir in versions {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| p.file_name().is_some_and(|n| n != "INDEX.json"))
            .collect();
        files.sort();
        for file in files {
            let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            let base = format!(
                "{}/{}",
                dir.file_name().unwrap().to_string_lossy(),
                doc["case"].as_str().unwrap()
            );
            for (i, m) in doc["messages"].as_array().unwrap().iter().enumerate() {
                out.push(Captured {
                    name: format!("{base}#{i}"),
                    raw: m["raw"].as_str().unwrap().to_string(),
                    expected: m["expected"].clone(),
                });
            }
        }
    }
    assert!(out.len() > 40, "only {} fixture messages found", out.len());
    out
}

/// Equal as Python would see the two JSON values: numbers by value (ints exactly).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (xs, ys) = (x.to_string(), y.to_string());
            let is_float = |s: &str| s.contains(['.', 'e', 'E']);
            if xs == ys {
                true
            } else if is_float(&xs) || is_float(&ys) {
                x.as_f64() == y.as_f64()
            } else {
                false
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Assert [`same`], printing both sides.
#[track_caller]
pub fn assert_same(what: &str, got: &Value, want: &Value) {
    assert!(same(got, want), "{what}:\n  got  {got}\n  want {want}");
}

/// An embed list as JSON, `[]` for empty (so `null` and `[]` compare equal).
pub fn sig_list(list: &[Signature]) -> Value {
    Value::Array(list.iter().map(Signature::to_value).collect())
}

/// `null` → `[]` for embed lists.
pub fn list_or_empty(v: &Value) -> Value {
    if v.is_null() {
        Value::Array(Vec::new())
    } else {
        v.clone()
    }
}

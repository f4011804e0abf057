//! Malformed input gives an error naming the problem, keeps the raw bytes, and never panics.

use base64::Engine;
use celeriac_broker_bridge::codec::{decode, DecodeErrorKind, DecodeOptions};
use celeriac_broker_bridge::envelope::EnvelopeError;
use serde_json::{json, Value};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn headers() -> Value {
    json!({"lang": "py", "task": "tasks.add", "id": "id-1", "retries": 0, "timelimit": [null, null],
           "root_id": "id-1", "eta": null, "expires": null})
}

fn envelope(body: &[u8], content_type: &str, headers: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "body": b64(body), "content-encoding": "utf-8", "content-type": content_type,
        "headers": headers,
        "properties": {"body_encoding": "base64", "delivery_tag": "t", "priority": 0,
                       "delivery_info": {"exchange": "", "routing_key": "celery"}}
    }))
    .unwrap()
}

fn json_env(body: &str) -> Vec<u8> {
    envelope(body.as_bytes(), "application/json", headers())
}

fn kind(raw: &[u8]) -> DecodeErrorKind {
    let err = decode(raw, &DecodeOptions::default()).expect_err("should fail");
    assert_eq!(err.raw(), raw, "raw bytes kept");
    assert!(!err.to_string().is_empty());
    err.kind().clone()
}

#[test]
fn a_good_message_decodes() {
    let msg = decode(
        &json_env(
            r#"[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": [], "chord": null}]"#,
        ),
        &DecodeOptions::default(),
    )
    .unwrap();
    assert_eq!(msg.args, vec![json!(2), json!(3)]);
    assert!(msg.chain.is_empty());
}

#[test]
fn envelope_problems() {
    assert!(matches!(
        kind(b"not json"),
        DecodeErrorKind::Envelope(EnvelopeError::NotJson(_))
    ));
    let good = json_env("[[], {}, {}]");
    assert!(matches!(
        kind(&good[..good.len() / 2]),
        DecodeErrorKind::Envelope(EnvelopeError::NotJson(_))
    ));
    assert_eq!(
        kind(br#"{"body": "", "headers": {}}"#),
        DecodeErrorKind::Envelope(EnvelopeError::Missing("properties"))
    );
    let no_ct = br#"{"body": "W10=", "headers": {"task": "t", "id": "i"}, "properties": {"body_encoding": "base64"}}"#;
    let err = decode(no_ct, &DecodeOptions::default()).unwrap_err();
    assert_eq!(err.task(), Some("t"));
    assert_eq!(err.id(), Some("i"));
    assert!(err.to_string().contains("content-type"), "{err}");
}

#[test]
fn body_problems() {
    let mut env: Value = serde_json::from_slice(&json_env("[[], {}, {}]")).unwrap();
    env["body"] = json!("%%% not base64 %%%");
    assert!(matches!(
        kind(&serde_json::to_vec(&env).unwrap()),
        DecodeErrorKind::Base64(_)
    ));
    env["properties"]["body_encoding"] = json!("rot13");
    assert_eq!(
        kind(&serde_json::to_vec(&env).unwrap()),
        DecodeErrorKind::BodyEncoding("rot13".into())
    );
    assert!(matches!(
        kind(&json_env("[[], {}")),
        DecodeErrorKind::Deserialize { .. }
    ));
    assert!(matches!(
        kind(&json_env("[[], {}]")),
        DecodeErrorKind::UnknownMessage(_)
    ));
    assert!(matches!(
        kind(&json_env("\"hello\"")),
        DecodeErrorKind::UnknownMessage(_)
    ));
    let no_task_header = envelope(b"[[], {}, {}]", "application/json", json!({}));
    assert!(matches!(
        kind(&no_task_header),
        DecodeErrorKind::UnknownMessage(_)
    ));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(
        kind(&json_env(&deep)),
        DecodeErrorKind::Deserialize { .. }
    ));
}

#[test]
fn wrong_types_name_the_field() {
    let field = |k: DecodeErrorKind| match k {
        DecodeErrorKind::BadField { field, .. } => field,
        other => panic!("not a BadField: {other:?}"),
    };
    assert_eq!(field(kind(&json_env(r#"[7, {}, {}]"#))), "body[0]");
    assert_eq!(field(kind(&json_env(r#"[[], [], {}]"#))), "body[1]");
    assert_eq!(field(kind(&json_env(r#"[[], {}, []]"#))), "body[2] (embed)");
    assert_eq!(
        field(kind(&json_env(
            r#"[[], {}, {"callbacks": [{"args": []}]}]"#
        ))),
        "embed.callbacks[0].task"
    );
    let mut h = headers();
    h["retries"] = json!("three");
    assert_eq!(
        field(kind(&envelope(b"[[], {}, {}]", "application/json", h))),
        "headers.retries"
    );
    let mut h = headers();
    h["timelimit"] = json!([1]);
    assert_eq!(
        field(kind(&envelope(b"[[], {}, {}]", "application/json", h))),
        "headers.timelimit"
    );
    let mut h = headers();
    h["eta"] = json!("next tuesday");
    assert_eq!(
        kind(&envelope(b"[[], {}, {}]", "application/json", h)),
        DecodeErrorKind::BadTimestamp {
            field: "eta",
            value: "next tuesday".into()
        }
    );
    let mut h = headers();
    h["id"] = Value::Null;
    assert_eq!(
        field(kind(&envelope(b"[[], {}, {}]", "application/json", h))),
        "headers.id"
    );
}

#[test]
fn compression_problems() {
    let mut h = headers();
    h["compression"] = json!("application/x-gzip");
    assert!(matches!(
        kind(&envelope(b"[[], {}, {}]", "application/json", h)),
        DecodeErrorKind::Decompress { .. }
    ));
    let mut h = headers();
    h["compression"] = json!("application/x-lz4");
    assert_eq!(
        kind(&envelope(b"[[], {}, {}]", "application/json", h)),
        DecodeErrorKind::UnknownCompression("application/x-lz4".into())
    );
}

#[test]
fn size_limits() {
    let raw = json_env("[[], {}, {}]");
    let opts = DecodeOptions {
        max_bytes: raw.len() - 1,
        ..DecodeOptions::default()
    };
    let err = decode(&raw, &opts).unwrap_err();
    assert!(matches!(
        err.kind(),
        DecodeErrorKind::TooLarge {
            what: "message",
            ..
        }
    ));
    // A zlib bomb: 2 MB of zeros compresses to about 2 KB; the decompressed limit stops it.
    let bomb = celeriac_testkit::run_python(
        "import zlib, base64, sys; sys.stdout.write(base64.b64encode(zlib.compress(b'[' + b' ' * 2_000_000 + b']')).decode())",
        &[],
        &[],
    )
    .unwrap();
    let mut h = headers();
    h["compression"] = json!("application/x-gzip");
    let mut env: Value = serde_json::from_slice(&envelope(b"", "application/json", h)).unwrap();
    env["body"] = json!(bomb);
    let raw = serde_json::to_vec(&env).unwrap();
    let opts = DecodeOptions {
        max_bytes: 100_000,
        ..DecodeOptions::default()
    };
    let err = decode(&raw, &opts).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            DecodeErrorKind::TooLarge {
                what: "decompressed body",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn pickle_and_unaccepted_types_are_refused_with_ids() {
    let raw = envelope(
        b"\x80\x04\x95.",
        "application/x-python-serialize",
        headers(),
    );
    for accept in [vec![], vec!["pickle".to_string(), "json".to_string()]] {
        let err = decode(
            &raw,
            &DecodeOptions {
                accept,
                ..DecodeOptions::default()
            },
        )
        .unwrap_err();
        assert!(err.is_refused());
        assert_eq!((err.task(), err.id()), (Some("tasks.add"), Some("id-1")));
        assert_eq!(err.raw(), &raw[..]);
    }
    let raw = envelope(b"[[], {}, {}]", "application/x-thrift", headers());
    assert!(decode(&raw, &DecodeOptions::default())
        .unwrap_err()
        .is_refused());
    let accept_it = DecodeOptions {
        accept: vec!["application/x-thrift".into()],
        ..DecodeOptions::default()
    };
    assert_eq!(
        decode(&raw, &accept_it).unwrap_err().kind(),
        &DecodeErrorKind::UnknownContentType("application/x-thrift".into())
    );
}

#[test]
fn bodies_compressed_by_python_decode() {
    // Real Python compressors for the methods the fixtures may not cover.
    let script = r#"
import base64, bz2, lzma, zlib, sys
body = b'[[1, "x"], {"k": 2}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
out = [base64.b64encode(zlib.compress(body)).decode(), base64.b64encode(bz2.compress(body)).decode(),
       base64.b64encode(lzma.compress(body)).decode()]
sys.stdout.write("\n".join(out))
"#;
    let out = celeriac_testkit::run_python(script, &[], &[]).unwrap();
    let methods = [
        "application/x-gzip",
        "application/x-bz2",
        "application/x-lzma",
    ];
    for (method, body) in methods.iter().zip(out.lines()) {
        let mut h = headers();
        h["compression"] = json!(method);
        let mut env: Value = serde_json::from_slice(&envelope(b"", "application/json", h)).unwrap();
        env["body"] = json!(body);
        let msg = decode(
            &serde_json::to_vec(&env).unwrap(),
            &DecodeOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(msg.args, vec![json!(1), json!("x")], "{method}");
        assert_eq!(msg.kwargs["k"], json!(2));
    }
}

#[test]
fn hybrid_messages_take_the_body_then_the_headers() {
    // Protocol-1 body with protocol-2 headers (`hybrid_to_proto2`): headers win.
    let body = br#"{"task": "tasks.add", "id": "body-id", "args": [1], "kwargs": {"k": 1},
                    "retries": 4, "eta": "2030-01-02T03:04:05", "group": "g-body",
                    "callbacks": [{"task": "tasks.cb", "args": [], "kwargs": {}, "options": {},
                                   "subtask_type": null, "immutable": false}]}"#;
    let raw = envelope(
        body,
        "application/json",
        json!({"task": "tasks.add", "id": "hdr-id"}),
    );
    let msg = decode(&raw, &DecodeOptions::default()).unwrap();
    assert_eq!(msg.protocol, 2);
    assert_eq!(msg.id, "hdr-id");
    assert_eq!(msg.retries, 4);
    assert_eq!(msg.group.as_deref(), Some("g-body"));
    assert_eq!(msg.args, vec![json!(1)]);
    assert_eq!(msg.callbacks[0].task, "tasks.cb");
    assert_eq!(
        msg.eta.unwrap().utc.to_rfc3339(),
        "2030-01-02T03:04:05+00:00"
    );
}

#[test]
fn protocol1_taskset_is_the_group() {
    let body = br#"{"task": "tasks.add", "id": "p1", "args": [], "kwargs": {}, "group": null,
                    "taskset": "ts-1", "utc": true}"#;
    let raw = envelope(body, "application/json", json!({}));
    let msg = decode(&raw, &DecodeOptions::default()).unwrap();
    assert_eq!((msg.protocol, msg.group.as_deref()), (1, Some("ts-1")));
}

/// `apply_async(time_limit=False, soft_time_limit=True)` sends Python bools; Celery's worker reads
/// them by truthiness, so they decode (false: no limit from the message; true: 1 s), and a string
/// is still an error.
#[test]
fn time_limits_as_python_bools_decode() {
    let mut h = headers();
    h["timelimit"] = json!([false, true]);
    let msg = decode(
        &envelope(b"[[], {}, {}]", "application/json", h),
        &DecodeOptions::default(),
    )
    .unwrap();
    assert_eq!(msg.timelimit, (None, Some(1.0)));
    let mut h = headers();
    h["timelimit"] = json!(["1", null]);
    assert!(matches!(
        kind(&envelope(b"[[], {}, {}]", "application/json", h)),
        DecodeErrorKind::BadField { field, .. } if field == "headers.timelimit[0]"
    ));
}

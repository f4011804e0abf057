//! Signed task messages (Celery's `auth` serializer) against what real Celery wrote
//! (`proto-fixtures/fixtures/signed`): decoded when the signer is trusted, refused otherwise,
//! and what celeriac signs decodes the same way.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use celeriac_broker_bridge::codec::{decode, DecodeErrorKind, DecodeOptions, EncodeOptions};
use celeriac_broker_bridge::signing::{BodySerializer, CertStore, Digest, Signer, Verifier};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto-fixtures/fixtures/signed")
}

fn raw_task() -> Vec<u8> {
    let task: Value =
        serde_json::from_slice(&std::fs::read(dir().join("task.json")).unwrap()).unwrap();
    task["raw"].as_str().unwrap().as_bytes().to_vec()
}

fn options(store: &str) -> DecodeOptions {
    let store = CertStore::load(&dir().join(store).to_string_lossy()).unwrap();
    DecodeOptions {
        accept: vec!["auth".into()],
        verifier: Some(Arc::new(Verifier::new(store, Digest::Sha256))),
        ..DecodeOptions::default()
    }
}

#[test]
fn a_message_signed_by_celery_decodes() {
    let msg = decode(&raw_task(), &options("store")).unwrap();
    assert_eq!(msg.task, "tasks.echo");
    assert_eq!(msg.id, "signed-1");
    assert_eq!(msg.args, vec![Value::from(2), Value::from(3)]);
    assert_eq!(msg.kwargs["big"].to_string(), "1180591620717411303424");
    assert_eq!(msg.content_type, "application/data");
}

#[test]
fn untrusted_unsigned_or_tampered_messages_are_refused_intact() {
    let raw = raw_task();
    let err = decode(&raw, &options("store/other-cert.pem")).unwrap_err();
    assert!(matches!(err.kind(), DecodeErrorKind::Signature(_)), "{err}");
    assert_eq!(err.raw(), &raw[..]);
    assert_eq!(err.id(), Some("signed-1"));

    let no_store = DecodeOptions {
        accept: vec!["auth".into()],
        ..DecodeOptions::default()
    };
    assert!(decode(&raw, &no_store).unwrap_err().is_refused());

    let mut envelope: Value = serde_json::from_slice(&raw).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let signed = b64.decode(envelope["body"].as_str().unwrap()).unwrap();
    let fields = String::from_utf8(b64.decode(&signed).unwrap()).unwrap();
    let tampered = fields.replace("[[2, 3]", "[[2, 4]");
    assert_ne!(tampered, fields);
    envelope["body"] = b64.encode(b64.encode(tampered)).into();
    let tampered_raw = serde_json::to_vec(&envelope).unwrap();
    let err = decode(&tampered_raw, &options("store")).unwrap_err();
    assert!(err.to_string().contains("bad signature"), "{err}");

    let unsigned = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../proto-fixtures/fixtures/celery-5.7.0/p2_args_positional.json"),
    )
    .unwrap();
    let unsigned: Value = serde_json::from_slice(&unsigned).unwrap();
    let unsigned_raw = unsigned["messages"][0]["raw"].as_str().unwrap().as_bytes();
    let err = decode(unsigned_raw, &options("store")).unwrap_err();
    assert!(err.is_refused(), "{err}");
}

#[test]
fn what_celeriac_signs_decodes() {
    let msg = decode(&raw_task(), &options("store")).unwrap();
    let signer = Signer::from_files(
        &dir().join("key.pem"),
        None,
        &dir().join("cert.pem"),
        Digest::Sha256,
    )
    .unwrap();
    let envelope = msg
        .to_envelope_as(
            &EncodeOptions::queue("celery"),
            &BodySerializer::Auth(Arc::new(signer)),
        )
        .unwrap();
    assert_eq!(envelope.content_type(), Some("application/data"));
    let again = decode(envelope.to_json().as_bytes(), &options("store")).unwrap();
    assert_eq!(again.args, msg.args);
    assert_eq!(again.kwargs, msg.kwargs);
}

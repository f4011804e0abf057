//! Against what real Celery wrote (`proto-fixtures/fixtures/signed`, made by
//! `proto-fixtures/capture_signed.py` with Celery's own `setup_security()`).

use base64::Engine;
use serde_json::Value;

use super::test_keys::{dir, signer, verifier};
use super::*;

fn fixture(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir().join(name)).unwrap()).unwrap()
}

#[test]
fn certificate_ids_are_celerys() {
    let cert = Certificate::from_file(&dir().join("cert.pem")).unwrap();
    assert_eq!(cert.id(), fixture("INDEX.json")["signer_id"]);
    assert!(!cert.has_expired());
    assert_eq!(verifier().store().ids().count(), 2);
}

#[test]
fn opens_a_task_body_signed_by_celery() {
    let task = fixture("task.json");
    let envelope: Value = serde_json::from_str(task["raw"].as_str().unwrap()).unwrap();
    assert_eq!(envelope["content-type"], AUTH);
    let signed = B64.decode(envelope["body"].as_str().unwrap()).unwrap();
    let opened = verifier().open(&signed).unwrap();
    assert_eq!(opened.signer, fixture("INDEX.json")["signer_id"]);
    assert_eq!(opened.content_type, "application/json");
    assert_eq!(opened.content_encoding, "utf-8");
    let body: Value = serde_json::from_slice(&opened.body).unwrap();
    assert_eq!(body, task["decoded_body"]);
    assert_eq!(body[1]["big"].to_string(), "1180591620717411303424");
}

#[test]
fn opens_a_result_signed_by_celery() {
    let result = fixture("result.json");
    let opened = verifier()
        .open(result["stored"].as_str().unwrap().as_bytes())
        .unwrap();
    let meta: Value = serde_json::from_slice(&opened.body).unwrap();
    assert_eq!(meta, result["decoded"]);
}

#[test]
fn signs_what_it_verifies_and_refuses_tampering() {
    let signed = signer().sign_json(br#"[[1], {}, {}]"#).unwrap();
    let opened = verifier().open(&signed).unwrap();
    assert_eq!(opened.body, br#"[[1], {}, {}]"#);

    let mut raw = B64.decode(&signed).unwrap();
    let last = raw.len() - 3;
    raw[last] = b'2';
    assert_eq!(
        verifier().open(B64.encode(&raw).as_bytes()),
        Err(SigningError::BadSignature(signer().id().to_string()))
    );
}

#[test]
fn refuses_unknown_signers_and_junk() {
    let only_other = Verifier::new(
        CertStore::load(&dir().join("store/other-cert.pem").to_string_lossy()).unwrap(),
        Digest::Sha256,
    );
    let signed = signer().sign_json(b"{}").unwrap();
    assert!(matches!(
        only_other.open(&signed),
        Err(SigningError::UnknownSigner(_))
    ));
    assert!(matches!(
        verifier().open(b"not base64!"),
        Err(SigningError::Malformed(_))
    ));
    assert!(matches!(
        verifier().open(B64.encode(b"one\x00\x01two").as_bytes()),
        Err(SigningError::Malformed(_))
    ));
    // A signature made with another digest does not verify.
    let sha512 = Signer::from_files(
        &dir().join("key.pem"),
        None,
        &dir().join("cert.pem"),
        Digest::Sha512,
    )
    .unwrap();
    assert!(matches!(
        verifier().open(&sha512.sign_json(b"{}").unwrap()),
        Err(SigningError::BadSignature(_))
    ));
}

#[test]
fn reads_every_key_form_celery_accepts() {
    let cert = std::fs::read(dir().join("cert.pem")).unwrap();
    let pkcs1 = std::fs::read_to_string(dir().join("key-pkcs1.pem")).unwrap();
    assert!(Signer::from_pem(&pkcs1, None, &cert, Digest::Sha256).is_ok());
    let encrypted = std::fs::read_to_string(dir().join("key-encrypted.pem")).unwrap();
    assert!(Signer::from_pem(&encrypted, Some("test-password"), &cert, Digest::Sha256).is_ok());
    let wrong = Signer::from_pem(&encrypted, Some("nope"), &cert, Digest::Sha256).unwrap_err();
    assert!(wrong.to_string().contains("wrong password"), "{wrong}");
    assert!(Signer::from_pem(&encrypted, None, &cert, Digest::Sha256).is_err());
    let other = std::fs::read(dir().join("store/other-cert.pem")).unwrap();
    let mismatch = Signer::from_pem(&pkcs1, None, &other, Digest::Sha256).unwrap_err();
    assert!(
        mismatch.to_string().contains("does not belong"),
        "{mismatch}"
    );
}

#[test]
fn stores_load_like_fscertstore() {
    let store_dir = dir().join("store");
    assert_eq!(
        CertStore::load(&store_dir.to_string_lossy())
            .unwrap()
            .ids()
            .count(),
        2
    );
    let with_hidden = tempfile::tempdir().unwrap();
    std::fs::copy(dir().join("cert.pem"), with_hidden.path().join("cert.pem")).unwrap();
    std::fs::write(with_hidden.path().join(".keep"), "not a certificate").unwrap();
    let loaded = CertStore::load(&with_hidden.path().to_string_lossy()).unwrap();
    assert_eq!(loaded.ids().count(), 1);
    let empty = tempfile::tempdir().unwrap();
    let err = CertStore::load(&empty.path().to_string_lossy()).unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
}

#[test]
fn splits_like_python_maxsplit_four() {
    let parts: Vec<&[u8]> =
        split_fields(b"a\x00\x01b\x00\x01c\x00\x01d\x00\x01e\x00\x01f").collect();
    assert_eq!(parts, [&b"a"[..], b"b", b"c", b"d", b"e\x00\x01f"]);
}

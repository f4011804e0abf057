//! The key, certificate and store Celery's own `setup_security()` used for
//! `proto-fixtures/fixtures/signed` (test data only).

use std::path::PathBuf;

use super::{CertStore, Digest, Signer, Verifier};

/// `proto-fixtures/fixtures/signed`.
pub(crate) fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto-fixtures/fixtures/signed")
}

/// A verifier trusting both certificates of the store.
pub(crate) fn verifier() -> Verifier {
    let store = dir().join("store/*.pem").to_string_lossy().into_owned();
    Verifier::new(CertStore::load(&store).unwrap(), Digest::Sha256)
}

/// The signer of the fixtures.
pub(crate) fn signer() -> Signer {
    Signer::from_files(
        &dir().join("key.pem"),
        None,
        &dir().join("cert.pem"),
        Digest::Sha256,
    )
    .unwrap()
}

//! X.509 certificates as Celery's `celery.security.certificate` sees them: an RSA public key
//! named by `"<issuer attribute values> <serial number>"`, and the store of trusted ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use x509_parser::public_key::PublicKey;

use super::SigningError;

/// One certificate: its Celery id, RSA key and expiry.
#[derive(Clone)]
pub struct Certificate {
    id: String,
    /// DER `RSAPublicKey`.
    key: Vec<u8>,
    not_after: i64,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Read the first certificate of a PEM text. Only RSA keys are accepted, as in Celery.
    pub fn from_pem(pem: &[u8]) -> Result<Self, SigningError> {
        let bad = |why: String| SigningError::Certificate(why);
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
            .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
        let spki = cert.public_key();
        if !matches!(spki.parsed(), Ok(PublicKey::RSA(_))) {
            return Err(bad(
                "not an RSA certificate (Celery supports RSA only)".into()
            ));
        }
        let key = spki.subject_public_key.data.to_vec();
        let mut values = Vec::new();
        for attr in cert.issuer().iter_attributes() {
            values.push(
                attr.as_str()
                    .map_err(|_| bad("an issuer attribute is not a plain string".into()))?,
            );
        }
        // cryptography's `Certificate.get_id`: issuer values joined by spaces, then the serial.
        let id = format!("{} {}", values.join(" "), cert.tbs_certificate.serial);
        Ok(Certificate {
            id,
            key,
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Read a PEM file.
    pub fn from_file(path: &Path) -> Result<Self, SigningError> {
        let pem = std::fs::read(path).map_err(|e| SigningError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_pem(&pem).map_err(|e| e.in_file(path))
    }

    /// The id signed messages name their signer by (`"<issuer values> <serial>"`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the certificate's `notAfter` has passed.
    pub fn has_expired(&self) -> bool {
        chrono::Utc::now().timestamp() >= self.not_after
    }

    /// The DER `RSAPublicKey`.
    pub(super) fn key(&self) -> &[u8] {
        &self.key
    }
}

/// The certificates whose holders may sign messages (`security_cert_store`).
#[derive(Debug, Clone, Default)]
pub struct CertStore {
    certs: BTreeMap<String, Certificate>,
}

impl CertStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a certificate; two with the same id are refused, as in Celery.
    pub fn add(&mut self, cert: Certificate) -> Result<(), SigningError> {
        if self.certs.contains_key(cert.id()) {
            return Err(SigningError::Certificate(format!(
                "duplicate certificate {:?}",
                cert.id()
            )));
        }
        self.certs.insert(cert.id.clone(), cert);
        Ok(())
    }

    /// Load `security_cert_store` as Celery's `FSCertStore` does: a directory (every file in
    /// it), a file, or a glob pattern (`/etc/certs/*.pem`). An expired certificate is an error;
    /// so is a store with no certificate at all (Celery would start and refuse every message).
    pub fn load(path: &str) -> Result<Self, SigningError> {
        let dir = Path::new(path);
        let pattern = if dir.is_dir() {
            format!("{}/*", glob::Pattern::escape(path.trim_end_matches('/')))
        } else {
            path.to_string()
        };
        // As Python's `glob`: `*` does not match a leading dot (a mounted ConfigMap's `..data`).
        let options = glob::MatchOptions {
            require_literal_leading_dot: true,
            ..glob::MatchOptions::new()
        };
        let paths: Vec<PathBuf> = glob::glob_with(&pattern, options)
            .map_err(|e| SigningError::Certificate(format!("bad cert store pattern: {e}")))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        let mut store = CertStore::new();
        for p in &paths {
            let cert = Certificate::from_file(p)?;
            if cert.has_expired() {
                return Err(SigningError::Certificate(format!(
                    "expired certificate {:?} in {}",
                    cert.id(),
                    p.display()
                )));
            }
            store.add(cert)?;
        }
        if store.certs.is_empty() {
            return Err(SigningError::Certificate(format!(
                "no certificate found at {path:?}"
            )));
        }
        Ok(store)
    }

    /// The certificate with this id.
    pub fn get(&self, id: &str) -> Option<&Certificate> {
        self.certs.get(id)
    }

    /// The ids in the store.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.certs.keys().map(String::as_str)
    }
}

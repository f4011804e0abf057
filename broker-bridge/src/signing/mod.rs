//! Celery's `auth` serializer (message signing, `celery.security`): bodies signed with the
//! sender's RSA key (PSS, MGF1, longest salt) and verified against a store of trusted
//! certificates.
//!
//! A signed body is the base64 text of five fields joined by `\x00\x01`: the base64 signer id
//! (`"<issuer values> <serial>"`), the base64 signature, the inner content type, the inner
//! content encoding and the inner body bytes (what the inner serializer, JSON by default,
//! wrote). The signature covers those inner body bytes only. Its content type is
//! `application/data`, its encoding `utf-8`; in a Redis queue the transport base64-encodes it
//! once more, like any body.

mod certificate;
mod digest;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::signature::RsaKeyPair;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use pkcs8::der::SecretDocument;
use pkcs8::EncryptedPrivateKeyInfo;

pub use certificate::{CertStore, Certificate};
pub use digest::Digest;

/// The content type of a signed body.
pub const AUTH: &str = "application/data";

/// The separator between the fields of a signed body.
const SEP: &[u8] = b"\x00\x01";

/// Why signing, verifying or loading keys failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's message.
        reason: String,
    },
    /// The private key cannot be used.
    #[error("private key: {0}")]
    Key(String),
    /// A certificate cannot be used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The body is not in the signed format.
    #[error("not a signed body: {0}")]
    Malformed(String),
    /// The signer is not in the certificate store.
    #[error("unknown signer {0:?} (not in the certificate store)")]
    UnknownSigner(String),
    /// The signature does not match the body.
    #[error("bad signature from {0:?}")]
    BadSignature(String),
    /// RSA refused to sign.
    #[error("cannot sign: {0}")]
    Sign(String),
}

impl SigningError {
    fn in_file(self, path: &Path) -> Self {
        match self {
            SigningError::Key(m) => SigningError::Key(format!("{}: {m}", path.display())),
            SigningError::Certificate(m) => {
                SigningError::Certificate(format!("{}: {m}", path.display()))
            }
            other => other,
        }
    }
}

/// The fields of a signed body once its signature has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Who signed it (a certificate id of the store).
    pub signer: String,
    /// The inner content type (`application/json` unless the sender chose otherwise).
    pub content_type: String,
    /// The inner content encoding.
    pub content_encoding: String,
    /// The inner body, as the inner serializer wrote it.
    pub body: Vec<u8>,
}

impl Opened {
    /// The inner body deserialized by its content type, as Celery's `SecureSerializer` does
    /// (pickle refused, as everywhere).
    pub fn value(&self) -> Result<serde_json::Value, crate::codec::DecodeErrorKind> {
        crate::codec::content::deserialize(&self.content_type, &self.body)
    }
}

/// Signs bodies: the sender's private key and certificate (`security_key`,
/// `security_certificate`) and `security_digest`.
pub struct Signer {
    key: RsaKeyPair,
    cert: Certificate,
    digest: Digest,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("certificate", &self.cert.id())
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from PEM texts. The key is PKCS#8 (`PRIVATE KEY`, or `ENCRYPTED PRIVATE KEY`
    /// with `password`) or PKCS#1 (`RSA PRIVATE KEY`); it must belong to the certificate.
    pub fn from_pem(
        key_pem: &str,
        password: Option<&str>,
        cert_pem: &[u8],
        digest: Digest,
    ) -> Result<Self, SigningError> {
        Self::from_parts(
            private_key(key_pem, password)?,
            Certificate::from_pem(cert_pem)?,
            digest,
        )
    }

    /// A signer from the key and certificate files.
    pub fn from_files(
        key_path: &Path,
        password: Option<&str>,
        cert_path: &Path,
        digest: Digest,
    ) -> Result<Self, SigningError> {
        let key = std::fs::read(key_path).map_err(|e| SigningError::Io {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let key = String::from_utf8(key)
            .map_err(|_| SigningError::Key(format!("{}: not a PEM text", key_path.display())))?;
        Self::from_parts(
            private_key(&key, password).map_err(|e| e.in_file(key_path))?,
            Certificate::from_file(cert_path)?,
            digest,
        )
    }

    fn from_parts(
        key: RsaKeyPair,
        cert: Certificate,
        digest: Digest,
    ) -> Result<Self, SigningError> {
        if digest::public_key_of(&key) != cert.key() {
            return Err(SigningError::Key(format!(
                "does not belong to the certificate {:?}",
                cert.id()
            )));
        }
        Ok(Signer { key, cert, digest })
    }

    /// The signer id written into every signed body.
    pub fn id(&self) -> &str {
        self.cert.id()
    }

    /// The signed body (base64 text) of `body`, written by a serializer with this content type
    /// and encoding.
    pub fn sign(
        &self,
        content_type: &str,
        content_encoding: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, SigningError> {
        let signature = self
            .digest
            .sign(&self.key, body)
            .map_err(SigningError::Sign)?;
        let mut fields = Vec::with_capacity(body.len() + 512);
        for part in [
            B64.encode(self.cert.id()).as_bytes(),
            SEP,
            B64.encode(signature).as_bytes(),
            SEP,
            content_type.as_bytes(),
            SEP,
            content_encoding.as_bytes(),
            SEP,
            body,
        ] {
            fields.extend_from_slice(part);
        }
        Ok(B64.encode(fields).into_bytes())
    }

    /// Sign a JSON body (inner type `application/json`, `utf-8`), as Celery's default is.
    pub fn sign_json(&self, json: &[u8]) -> Result<Vec<u8>, SigningError> {
        self.sign(crate::codec::content::JSON, "utf-8", json)
    }
}

fn private_key(pem: &str, password: Option<&str>) -> Result<RsaKeyPair, SigningError> {
    let bad = |why: String| SigningError::Key(why);
    if pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(bad(
            "a legacy encrypted PEM key is not supported; convert it with \
                        `openssl pkcs8 -topk8` (PKCS#8, encrypted or not)"
                .into(),
        ));
    }
    let (label, der) = SecretDocument::from_pem(pem.trim())
        .map_err(|e| bad(format!("not a PEM private key: {e}")))?;
    let rejected = |e: aws_lc_rs::error::KeyRejected| {
        bad(format!(
            "not a usable RSA key ({e}; Celery supports RSA keys only, celeriac 2048 to 8192 bits)"
        ))
    };
    match label {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(der.as_bytes()).map_err(rejected),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(der.as_bytes()).map_err(rejected),
        "ENCRYPTED PRIVATE KEY" => {
            let password = password.ok_or_else(|| {
                bad("the key is encrypted and no password is set (security_key_password)".into())
            })?;
            let info = EncryptedPrivateKeyInfo::try_from(der.as_bytes())
                .map_err(|e| bad(format!("not an encrypted PKCS#8 key: {e}")))?;
            let plain = info
                .decrypt(password)
                .map_err(|_| bad("cannot decrypt the key (wrong password?)".into()))?;
            RsaKeyPair::from_pkcs8(plain.as_bytes()).map_err(rejected)
        }
        other => Err(bad(format!("a PEM {other:?} is not a private key"))),
    }
}

/// Verifies signed bodies against the certificate store (`security_cert_store`) with
/// `security_digest`.
#[derive(Debug, Clone)]
pub struct Verifier {
    store: CertStore,
    digest: Digest,
}

impl Verifier {
    /// A verifier over `store`.
    pub fn new(store: CertStore, digest: Digest) -> Self {
        Verifier { store, digest }
    }

    /// The trusted certificates.
    pub fn store(&self) -> &CertStore {
        &self.store
    }

    /// Split a signed body and check its signature; the inner body is not deserialized.
    pub fn open(&self, signed: &[u8]) -> Result<Opened, SigningError> {
        let malformed = |why: &str| SigningError::Malformed(why.to_string());
        let cleaned: Vec<u8> = signed
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let raw = B64
            .decode(cleaned)
            .map_err(|_| malformed("the body is not base64"))?;
        let mut fields = split_fields(&raw);
        let (Some(signer), Some(signature), Some(ct), Some(ce), Some(body)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(malformed("fewer than five fields"));
        };
        let signer = B64
            .decode(signer)
            .ok()
            .and_then(|s| String::from_utf8(s).ok())
            .ok_or_else(|| malformed("the signer field is not base64 text"))?;
        let signature = B64
            .decode(signature)
            .map_err(|_| malformed("the signature field is not base64"))?;
        let cert = self
            .store
            .get(&signer)
            .ok_or_else(|| SigningError::UnknownSigner(signer.clone()))?;
        if !self.digest.verify(cert.key(), body, &signature) {
            return Err(SigningError::BadSignature(signer));
        }
        let text =
            |b: &[u8], what: &str| String::from_utf8(b.to_vec()).map_err(|_| malformed(what));
        Ok(Opened {
            content_type: text(ct, "the content type is not text")?,
            content_encoding: text(ce, "the content encoding is not text")?,
            body: body.to_vec(),
            signer,
        })
    }
}

/// The first four `\x00\x01`-separated fields, then the rest whole (Python's
/// `split(sep, maxsplit=4)`).
fn split_fields(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(raw);
    let mut taken = 0;
    std::iter::from_fn(move || {
        let current = rest?;
        if taken == 4 {
            rest = None;
            return Some(current);
        }
        taken += 1;
        match current.windows(SEP.len()).position(|w| w == SEP) {
            Some(i) => {
                rest = Some(&current[i + SEP.len()..]);
                Some(&current[..i])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// How celeriac writes the bodies it publishes or stores (`task_serializer`,
/// `result_serializer`, `event_serializer`): kombu JSON, or JSON signed with the `auth`
/// serializer.
#[derive(Debug, Clone, Default)]
pub enum BodySerializer {
    /// `json`.
    #[default]
    Json,
    /// `auth`: JSON signed by this signer.
    Auth(Arc<Signer>),
}

/// How a node speaks on a channel: the serializer of what it sends, and which bodies it reads
/// (signed ones checked by `verifier`; unsigned ones only when `allow_unsigned`).
#[derive(Debug, Clone, Copy)]
pub struct Signatures<'a> {
    /// Writes what is sent.
    pub serializer: &'a BodySerializer,
    /// Checks signed bodies read; without it they are refused.
    pub verifier: Option<&'a Verifier>,
    /// Whether unsigned bodies are read.
    pub allow_unsigned: bool,
}

/// A serialized body and the envelope fields that describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serialized {
    /// `content-type`.
    pub content_type: &'static str,
    /// The bytes (before the transport's base64).
    pub body: Vec<u8>,
}

impl BodySerializer {
    /// Serialize a JSON text: as is, or signed.
    pub fn serialize(&self, json: Vec<u8>) -> Result<Serialized, SigningError> {
        match self {
            BodySerializer::Json => Ok(Serialized {
                content_type: crate::codec::content::JSON,
                body: json,
            }),
            BodySerializer::Auth(signer) => Ok(Serialized {
                content_type: AUTH,
                body: signer.sign_json(&json)?,
            }),
        }
    }

    /// True for `auth`.
    pub fn is_signed(&self) -> bool {
        matches!(self, BodySerializer::Auth(_))
    }
}

#[cfg(test)]
pub(crate) mod test_keys;
#[cfg(test)]
mod tests;

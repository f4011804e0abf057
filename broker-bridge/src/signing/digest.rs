//! `security_digest`: the hash under the RSA-PSS signature (Celery's default is `sha256`), and
//! the signing and checking themselves (AWS-LC through `aws-lc-rs`: constant-time, as fast as
//! the OpenSSL Python's `cryptography` uses).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, KeyPair, RsaKeyPair, RsaParameters, RsaPssSaltLength, RsaSignatureEncoding,
    UnparsedPublicKey,
};

/// A hash Celery's `security_digest` can name that celeriac signs and checks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Digest {
    /// `sha256` (Celery's default).
    #[default]
    Sha256,
    /// `sha384`.
    Sha384,
    /// `sha512`.
    Sha512,
}

impl std::str::FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('-', "").as_str() {
            "sha256" => Ok(Digest::Sha256),
            "sha384" => Ok(Digest::Sha384),
            "sha512" => Ok(Digest::Sha512),
            _ => Err("expected sha256, sha384 or sha512".into()),
        }
    }
}

// Celery pads with PSS, MGF1 over the same hash and the longest salt the key allows
// (`PSS.MAX_LENGTH`), and checks with the same: so do these.
const SIGN_SHA256: RsaSignatureEncoding =
    signature::RSA_PSS_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);
const SIGN_SHA384: RsaSignatureEncoding =
    signature::RSA_PSS_SHA384.with_pss_salt_length(RsaPssSaltLength::Max);
const SIGN_SHA512: RsaSignatureEncoding =
    signature::RSA_PSS_SHA512.with_pss_salt_length(RsaPssSaltLength::Max);
const CHECK_SHA256: RsaParameters =
    signature::RSA_PSS_2048_8192_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);
const CHECK_SHA384: RsaParameters =
    signature::RSA_PSS_2048_8192_SHA384.with_pss_salt_length(RsaPssSaltLength::Max);
const CHECK_SHA512: RsaParameters =
    signature::RSA_PSS_2048_8192_SHA512.with_pss_salt_length(RsaPssSaltLength::Max);

impl Digest {
    /// Sign `data` as Celery's `PrivateKey.sign` does.
    pub(super) fn sign(self, key: &RsaKeyPair, data: &[u8]) -> Result<Vec<u8>, String> {
        let encoding: &'static RsaSignatureEncoding = match self {
            Digest::Sha256 => &SIGN_SHA256,
            Digest::Sha384 => &SIGN_SHA384,
            Digest::Sha512 => &SIGN_SHA512,
        };
        let mut signature = vec![0; key.public_modulus_len()];
        key.sign(encoding, &SystemRandom::new(), data, &mut signature)
            .map_err(|_| "RSA-PSS signing failed".to_string())?;
        Ok(signature)
    }

    /// Check a signature of `data` as Celery's `Certificate.verify` does; `public_key` is a
    /// DER `RSAPublicKey` (2048 to 8192 bits).
    pub(super) fn verify(self, public_key: &[u8], data: &[u8], signature: &[u8]) -> bool {
        let params: &'static RsaParameters = match self {
            Digest::Sha256 => &CHECK_SHA256,
            Digest::Sha384 => &CHECK_SHA384,
            Digest::Sha512 => &CHECK_SHA512,
        };
        UnparsedPublicKey::new(params, public_key)
            .verify(data, signature)
            .is_ok()
    }
}

/// The DER `RSAPublicKey` of a key pair.
pub(super) fn public_key_of(key: &RsaKeyPair) -> &[u8] {
    key.public_key().as_ref()
}

//! Test certificates made at test time: a CA and a server certificate it signs.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The server's certificate chain and private key, PEM-encoded.
#[derive(Clone)]
pub struct TlsIdentity {
    /// Server certificate (then any intermediates), PEM.
    pub cert_chain_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// A fresh CA and a server identity it signed.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA certificate, PEM: what a client trusts.
    pub ca_pem: String,
    /// The server's identity.
    pub server: TlsIdentity,
}

impl TestCertificates {
    /// Generates a CA and a server certificate for `names` (DNS names or IP addresses).
    pub fn generate(names: &[&str]) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "celeriac TDS test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut server_params = CertificateParams::new(names)?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "celeriac TDS test server");
        let server_cert = server_params.signed_by(&server_key, &issuer)?;
        Ok(TestCertificates {
            ca_pem: ca_cert.pem(),
            server: TlsIdentity {
                cert_chain_pem: server_cert.pem(),
                key_pem: server_key.serialize_pem(),
            },
        })
    }
}

/// A rustls server configuration for `identity`; no TLS 1.3 session tickets, because a
/// ticket sent after the handshake would reach a TDS client that has not yet switched over.
pub fn server_config(identity: &TlsIdentity) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(identity.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

//! Certificates made at test time for TLS servers: a CA, a server certificate for the loopback
//! address and a client certificate, written as PEM files into a temporary folder.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files of one test PKI. The folder is removed on drop.
pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA certificate clients trust.
    pub ca_cert: PathBuf,
    /// The server certificate (names `127.0.0.1` and `localhost`), signed by the CA.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA (for `tls-auth-clients yes`).
    pub client_cert: PathBuf,
    /// The client's private key.
    pub client_key: PathBuf,
}

impl TestPki {
    /// A fresh CA named `name` with a server and a client certificate it signed.
    pub fn generate(name: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |cn: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose| -> Result<_> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(
            &format!("{name} test server"),
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (client_cert, client_key) = leaf(
            &format!("{name} test client"),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let write = |file: &str, pem: &str| -> Result<PathBuf> {
            let path = dir.path().join(file);
            std::fs::write(&path, pem)?;
            Ok(path)
        };
        Ok(TestPki {
            ca_cert: write("ca.pem", &ca_cert.pem())?,
            server_cert: write("server.pem", &server_cert)?,
            server_key: write("server.key", &server_key)?,
            client_cert: write("client.pem", &client_cert)?,
            client_key: write("client.key", &client_key)?,
            dir,
        })
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

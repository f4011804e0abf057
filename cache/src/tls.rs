//! rustls's process-wide crypto provider, for the TLS of the sources and of Redis.

/// Make aws-lc-rs (the one provider every TLS client here is built with) rustls's process default
/// unless a provider is installed already (an application's own choice is kept). Should a
/// dependency ever link ring too, rustls would refuse to guess between the two; installing the
/// default up front keeps TLS working then. Cheap and idempotent: the cache calls it wherever it
/// sets up a connection.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

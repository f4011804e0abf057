//! rustls's process-wide crypto provider, for the TLS of the sources and of Redis.

/// Make ring rustls's process default unless a provider is installed already (an application's
/// own choice is kept). Two providers are linked (ring through sqlx and redis, aws-lc-rs through
/// tiberius) and rustls refuses to guess, so without a default a TLS connection panics in sqlx
/// or fails in redis. Cheap and idempotent: the cache calls it wherever it sets up a connection.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

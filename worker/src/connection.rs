//! How the worker and the producer API set up their connections from the settings: the TLS
//! crypto provider and the result backend's options. A leaf: it knows the settings and the
//! signing, nothing of a running worker.

use celeriac_broker_bridge::backend::BackendOptions;

use crate::config::Settings;
use crate::signing::Signing;

/// Choose rustls's crypto provider for the process before the broker's first `rediss://`
/// connection (see [`celeriac_cache::tls::install_crypto_provider`]).
pub fn install_crypto_provider() {
    celeriac_cache::tls::install_crypto_provider();
}

/// The result backend's options from the settings (key prefix, expiry, signing).
pub(crate) fn backend_options(
    settings: &Settings,
    signing: &Signing,
) -> anyhow::Result<BackendOptions> {
    let prefix = settings
        .result_backend_transport_options
        .get("global_keyprefix")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok(BackendOptions {
        result_expires: settings.result_expires,
        global_keyprefix: prefix,
        result_extended: settings.result_extended,
        serializer: signing.results.clone(),
        verifier: signing.verifier.clone(),
        require_signed: !signing.unsigned_results,
        credentials_file: settings
            .result_backend
            .as_ref()
            .and_then(|u| u.file())
            .map(Into::into),
        ..BackendOptions::default()
    })
}

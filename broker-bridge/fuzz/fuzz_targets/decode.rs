//! Fuzz `codec::decode`: any bytes must give a message or an error, never a panic; a decoded
//! message must re-encode and decode again. Signed (`auth`) messages are accepted and checked
//! against the signed fixtures' certificate store, so the signed-body unpacking is fuzzed too
//! (the signed seed's signature breaks under most mutations: the split and base64 paths are
//! what gets exercised).
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use celeriac_broker_bridge::codec::{decode, DecodeOptions, EncodeOptions};
use celeriac_broker_bridge::signing::{CertStore, Digest, Verifier};
use libfuzzer_sys::fuzz_target;

fn options() -> &'static DecodeOptions {
    static OPTIONS: OnceLock<DecodeOptions> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let store = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../proto-fixtures/fixtures/signed/store");
        let store = CertStore::load(&store.to_string_lossy()).expect("the fixtures' store");
        DecodeOptions {
            accept: ["json", "msgpack", "yaml", "auth"].map(String::from).to_vec(),
            max_bytes: 1 << 20,
            verifier: Some(Arc::new(Verifier::new(store, Digest::Sha256))),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    match decode(data, options()) {
        Ok(msg) => {
            let env = msg.to_envelope(&EncodeOptions::queue("fuzz"));
            let again = decode(env.to_json().as_bytes(), &DecodeOptions::default())
                .expect("an encoded message decodes");
            assert_eq!(again.id, msg.id);
            assert_eq!(again.args, msg.args);
        }
        Err(err) => assert_eq!(err.raw(), data),
    }
});

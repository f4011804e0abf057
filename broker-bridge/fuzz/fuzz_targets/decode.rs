//! Fuzz `codec::decode`: any bytes must give a message or an error, never a panic; a decoded
//! message must re-encode and decode again.
#![no_main]

use celeriac_broker_bridge::codec::{decode, DecodeOptions, EncodeOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions {
        accept: Vec::new(),
        max_bytes: 1 << 20,
    };
    match decode(data, &opts) {
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

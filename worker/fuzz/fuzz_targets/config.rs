//! The configuration parser: any TOML text plus any environment → settings (and the query-task
//! tables) or an error; never a panic. Neither an error nor `Settings`' `Debug` shows the seeds'
//! password in a credential's form, whatever setting it was given to: in a URL or
//! `user:password@host`, or as the value of a secret-named key (`password=…`,
//! `"token": "…"`); nor `security_key_password`. A plain setting's bad value is otherwise
//! echoed (a word given to a boolean is not known to be a secret).
#![no_main]

use std::path::Path;

use celeriac_worker::config::{Settings, WorkerArgs};
use libfuzzer_sys::fuzz_target;

/// A password the seeds put in URLs; errors must not show it.
const SECRET: &str = "fuzz-s3cret";

/// Whether `text` shows [`SECRET`] as a credential: after `:` and before `@` (a URL's
/// password), or as the value of a key whose name says secret.
fn shows_credential(text: &str) -> bool {
    text.match_indices(SECRET).any(|(i, _)| {
        let before = &text[..i];
        let after = &text[i + SECRET.len()..];
        if before.ends_with(':') && after.starts_with('@') {
            return true;
        }
        let key_end = before.trim_end_matches([' ', '"', '\'', '=', ':']);
        if key_end.len() == before.len() {
            return false;
        }
        let key_start = key_end
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map_or(0, |p| p + 1);
        celeriac_secrets::is_secret_key(&key_end[key_start..])
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Input: TOML, then after a NUL byte one `NAME=value` environment variable per line.
    let (toml, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        // `<NAME>_FILE` reads a file: not the parser's input.
        .filter(|(k, _)| !k.ends_with("_FILE"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let path = Path::new("fuzz.toml");
    match Settings::from_parts(
        Some((toml, path)),
        env.clone(),
        &WorkerArgs::default(),
        "host",
    ) {
        Ok(settings) => {
            let debug = format!("{settings:?}");
            assert!(!shows_credential(&debug), "password in Debug: {debug}");
            if let Some(p) = &settings.security_key_password {
                assert!(
                    !debug.contains(&format!("{:?}", p.expose())),
                    "key password in Debug: {debug}"
                );
            }
            if let Err(e) = celeriac_worker::config::parse_query_tasks(&settings.extra, &lookup) {
                assert!(
                    !shows_credential(&e),
                    "secret in a query-task config error: {e}"
                );
            }
        }
        Err(e) => {
            assert!(
                !shows_credential(&e.to_string()),
                "secret in a config error: {e}"
            );
        }
    }
});

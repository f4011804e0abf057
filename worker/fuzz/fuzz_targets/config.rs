//! The configuration parser: any TOML text plus any environment → settings (and the query-task
//! tables) or an error; never a panic, and an error never shows a password given in the input.
#![no_main]

use std::path::Path;

use celeriac_worker::config::{Settings, WorkerArgs};
use libfuzzer_sys::fuzz_target;

/// A password the seeds put in URLs; errors must not show it.
const SECRET: &str = "fuzz-s3cret";

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
            assert!(!format!("{settings:?}").contains(SECRET), "secret in Debug");
            if let Err(e) = celeriac_worker::query_tasks::config::parse(&settings.extra, &lookup) {
                assert!(
                    !e.contains(SECRET),
                    "secret in a query-task config error: {e}"
                );
            }
        }
        Err(e) => {
            assert!(
                !e.to_string().contains(SECRET),
                "secret in a config error: {e}"
            );
        }
    }
});

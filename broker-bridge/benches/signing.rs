//! Cost of message signing (a benchmark, not a test): signing and checking a task body with
//! the fixtures' 2048-bit RSA key, beside Python's `cryptography` doing the same through
//! Celery's `SecureSerializer` in the same run.
//!
//! `cargo bench -p celeriac-broker-bridge --bench signing` prints a Markdown table.
//! `SIGNING_BENCH_N` sets the operations per row (default 2 000); `CELERIAC_TEST_PYTHON` names
//! the Python with Celery and cryptography (default `.venv-test/bin/python`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use celeriac_broker_bridge::codec::content::deserialize;
use celeriac_broker_bridge::signing::{CertStore, Digest, Signer, Verifier};

const BODY: &[u8] = br#"[[2, 3], {"big": 1180591620717411303424}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;

/// Python: sign and check the same body N times with Celery's serializer; prints two figures.
const PYTHON: &str = r#"
import sys, time
from celery.security.serialization import SecureSerializer
from celery.security.certificate import Certificate, FSCertStore
from celery.security.key import PrivateKey
keys, n, body = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = SecureSerializer(PrivateKey(open(keys + "/key.pem").read()),
                     Certificate(open(keys + "/cert.pem").read()),
                     FSCertStore(keys + "/store"), "sha256")
t = time.perf_counter()
for _ in range(n):
    signed = s._pack(body.encode(), "application/json", "utf-8",
                     signature=s._key.sign(body.encode(), s._digest), signer=s._cert.get_id())
sign = (time.perf_counter() - t) / n
t = time.perf_counter()
for _ in range(n):
    s.deserialize(signed)
print(sign * 1e6, (time.perf_counter() - t) / n * 1e6)
"#;

fn main() -> Result<()> {
    let n: usize = match std::env::var("SIGNING_BENCH_N") {
        Ok(v) => v.parse().context("SIGNING_BENCH_N must be a number")?,
        Err(_) => 2_000,
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let keys = root.join("proto-fixtures/fixtures/signed");
    let signer = Signer::from_files(
        &keys.join("key.pem"),
        None,
        &keys.join("cert.pem"),
        Digest::Sha256,
    )?;
    let verifier = Verifier::new(
        CertStore::load(&keys.join("store").to_string_lossy())?,
        Digest::Sha256,
    );

    let started = Instant::now();
    let mut signed = Vec::new();
    for _ in 0..n {
        signed = signer.sign_json(BODY)?;
    }
    let sign_us = started.elapsed().as_secs_f64() / n as f64 * 1e6;
    let started = Instant::now();
    for _ in 0..n {
        let opened = verifier.open(&signed)?;
        deserialize(&opened.content_type, &opened.body)?;
    }
    let verify_us = started.elapsed().as_secs_f64() / n as f64 * 1e6;

    let python = std::env::var_os("CELERIAC_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-test/bin/python"));
    let out = Command::new(&python)
        .args(["-c", PYTHON])
        .arg(&keys)
        .arg(n.to_string())
        .arg(std::str::from_utf8(BODY)?)
        .output()
        .with_context(|| format!("run {}", python.display()))?;
    if !out.status.success() {
        bail!("python failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let figures: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [py_sign, py_verify] = figures[..] else {
        bail!("python printed {text:?}");
    };

    println!(
        "| operation ({n} each, RSA-2048, sha256) | celeriac µs/op | Celery (cryptography) µs/op |"
    );
    println!("|---|---|---|");
    println!("| sign a task body | {sign_us:.1} | {py_sign:.1} |");
    println!("| check, open and parse it | {verify_us:.1} | {py_verify:.1} |");
    Ok(())
}

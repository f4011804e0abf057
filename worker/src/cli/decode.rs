//! `celeriac decode [FILE|-]`: decode one raw Redis list element and print it as one JSON object.
//!
//! Exit codes: 0 decoded; 2 malformed input (or unreadable file, or a signature that does not
//! check out); 3 refused content type (pickle, not in `--accept`, or signed without
//! `--cert-store`). The reason goes to stderr on one line.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use celeriac_broker_bridge::codec::{decode, DecodeOptions, Signature, TaskMessage, WireTime};
use celeriac_broker_bridge::signing::{CertStore, Digest, Verifier};
use serde_json::{Map, Value};

/// Arguments of `celeriac decode`.
#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    /// File holding one raw list element (as `LRANGE`/`LINDEX` returns it); `-` or absent: stdin.
    pub input: Option<PathBuf>,
    /// Accepted content types or serializer names (repeatable); default json, msgpack and yaml.
    #[arg(long = "accept", value_name = "TYPE")]
    pub accept: Vec<String>,
    /// Largest input (and decompressed body) in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_bytes: usize,
    /// Check signed (`auth`) messages against these certificates (a directory, file or glob,
    /// as `security_cert_store`); signed messages are then accepted.
    #[arg(long, value_name = "PATH")]
    pub cert_store: Option<String>,
    /// The signatures' hash (`security_digest`).
    #[arg(long, default_value = "sha256")]
    pub digest: String,
}

/// Exit code for malformed input.
pub const EXIT_MALFORMED: u8 = 2;
/// Exit code for a refused content type.
pub const EXIT_REFUSED: u8 = 3;

/// Run the subcommand: print the decoded message to stdout, or one line to stderr.
pub fn run(args: &DecodeArgs) -> ExitCode {
    let raw = match read_input(args.input.as_deref()) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("celeriac decode: cannot read input: {e}");
            return ExitCode::from(EXIT_MALFORMED);
        }
    };
    let verifier = match &args.cert_store {
        None => None,
        Some(store) => match verifier(store, &args.digest) {
            Ok(v) => Some(std::sync::Arc::new(v)),
            Err(e) => {
                eprintln!("celeriac decode: {e}");
                return ExitCode::from(EXIT_MALFORMED);
            }
        },
    };
    let mut accept = args.accept.clone();
    if verifier.is_some() {
        if accept.is_empty() {
            accept = ["json", "msgpack", "yaml"].map(String::from).to_vec();
        }
        if !accept.iter().any(|a| a == "auth") {
            accept.push("auth".into());
        }
    }
    let opts = DecodeOptions {
        accept,
        max_bytes: args.max_bytes,
        verifier,
    };
    match decode(&raw, &opts) {
        Ok(msg) => {
            println!("{}", to_json(&msg));
            ExitCode::SUCCESS
        }
        Err(err) if err.is_refused() => {
            eprintln!("celeriac decode: refused: {err}");
            ExitCode::from(EXIT_REFUSED)
        }
        Err(err) => {
            eprintln!("celeriac decode: malformed: {err}");
            ExitCode::from(EXIT_MALFORMED)
        }
    }
}

fn verifier(store: &str, digest: &str) -> Result<Verifier, String> {
    let digest: Digest = digest.parse().map_err(|e| format!("--digest: {e}"))?;
    let store = CertStore::load(store).map_err(|e| format!("--cert-store: {e}"))?;
    Ok(Verifier::new(store, digest))
}

fn read_input(path: Option<&std::path::Path>) -> std::io::Result<Vec<u8>> {
    match path {
        Some(p) if p.as_os_str() != "-" => std::fs::read(p),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            Ok(buf)
        }
    }
}

fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

fn sigs(list: &[Signature]) -> Value {
    Value::Array(list.iter().map(Signature::to_value).collect())
}

/// The printed object: the protocol-2 view of the message (`eta`/`expires` as sent, plus
/// `eta_utc`/`expires_utc` normalized to UTC).
pub fn to_json(msg: &TaskMessage) -> Value {
    let raw = |t: &Option<WireTime>| opt(t.as_ref().map(|t| t.raw.clone()));
    let utc = |t: &Option<WireTime>| opt(t.as_ref().map(|t| t.utc.to_rfc3339()));
    let float = |f: Option<f64>| {
        f.and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number)
    };
    let mut out = Map::new();
    let mut put = |k: &str, v: Value| {
        out.insert(k.to_string(), v);
    };
    put("protocol", msg.protocol.into());
    put("id", msg.id.clone().into());
    put("task", msg.task.clone().into());
    put("args", Value::Array(msg.args.clone()));
    put("kwargs", Value::Object(msg.kwargs.clone()));
    put("eta", raw(&msg.eta));
    put("expires", raw(&msg.expires));
    put("retries", msg.retries.into());
    put("priority", opt(msg.priority));
    put("root_id", opt(msg.root_id.clone()));
    put("parent_id", opt(msg.parent_id.clone()));
    put("group", opt(msg.group.clone()));
    put("group_index", opt(msg.group_index));
    put(
        "timelimit",
        Value::Array(vec![float(msg.timelimit.0), float(msg.timelimit.1)]),
    );
    put("callbacks", sigs(&msg.callbacks));
    put("errbacks", sigs(&msg.errbacks));
    put("chain", sigs(&msg.chain));
    put(
        "chord",
        msg.chord.as_ref().map_or(Value::Null, Signature::to_value),
    );
    put("eta_utc", utc(&msg.eta));
    put("expires_utc", utc(&msg.expires));
    put("shadow", opt(msg.shadow.clone()));
    put("ignore_result", opt(msg.ignore_result));
    put("origin", opt(msg.origin.clone()));
    put("stamps", Value::Object(msg.stamps.clone()));
    put("extra_headers", Value::Object(msg.extra_headers.clone()));
    put("content_type", msg.content_type.clone().into());
    put("delivery_tag", opt(msg.delivery_tag.clone()));
    put("exchange", opt(msg.exchange.clone()));
    put("routing_key", opt(msg.routing_key.clone()));
    put("redelivered", msg.redelivered.into());
    Value::Object(out)
}

//! The committed proto-fixtures are complete for both Celery stacks and well-formed.
//!
//! Reads `proto-fixtures/fixtures/celery-<version>/INDEX.json` and the folder itself; only the
//! list of required cases is written here.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use celeriac_testkit::fixtures_dir;
use serde_json::Value;

/// The stacks `proto-fixtures/capture` records.
const STACKS: [&str; 2] = ["celery-5.7.0", "celery-5.3.6"];

/// Task-message cases every stack must have.
const REQUIRED_CASES: &[&str] = &[
    "p2_args_positional",
    "p2_kwargs",
    "p2_unicode",
    "p2_nested",
    "p2_scalars",
    "p2_special_types",
    "p2_countdown",
    "p2_eta",
    "p2_eta_naive",
    "p2_expires_seconds",
    "p2_expires_datetime",
    "p2_priority_0",
    "p2_priority_1",
    "p2_priority_2",
    "p2_priority_3",
    "p2_priority_4",
    "p2_priority_5",
    "p2_priority_6",
    "p2_priority_7",
    "p2_priority_8",
    "p2_priority_9",
    "p2_custom_queue",
    "p2_custom_task_id",
    "p2_headers",
    "p2_retries",
    "p2_time_limits",
    "p2_link_and_link_error",
    "p2_chain",
    "p2_group",
    "p2_chord",
    "p2_chain_with_group_and_chord",
    "p2_ignore_result",
    "p2_shadow",
    "p2_send_task_by_name",
    "p2_stamped",
    "p2_serializer_msgpack",
    "p2_serializer_yaml",
    "p2_serializer_pickle",
    "p2_compression_zlib",
    "p2_compression_bzip2",
    "p2_compression_lzma",
    "p2_global_keyprefix",
    "p1_args",
    "p1_kwargs_eta_expires",
    "p1_link",
];

/// Result-backend cases every stack must have (`results/`).
const REQUIRED_RESULT_CASES: &[&str] = &[
    "result_success_int",
    "result_success_str",
    "result_success_none",
    "result_success_bigint",
    "result_success_datetime",
    "result_success_dict",
    "result_failure_valueerror",
    "result_failure_custom_exception",
    "result_started",
    "result_retry",
    "result_revoked_expired",
    "result_extended",
    "result_ignore_result",
    "group_result_saved",
    "chord_redis_keys",
];

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

fn str_field<'a>(v: &'a Value, key: &str, what: &str) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("{what}: `{key}` is missing or not a string"))
}

/// Checks one case file against its name and the stack's INDEX; returns its message count.
fn check_case(dir: &Path, case: &str, celery_version: &str) -> Result<usize> {
    let fixture = read_json(&dir.join(format!("{case}.json")))?;
    ensure!(
        str_field(&fixture, "case", case)? == case,
        "{case}: `case` differs from the file name"
    );
    ensure!(
        str_field(&fixture, "celery_version", case)? == celery_version,
        "{case}: celery_version differs from INDEX.json"
    );
    str_field(&fixture, "producer_call", case)?;
    let messages = fixture
        .get("messages")
        .and_then(Value::as_array)
        .with_context(|| format!("{case}: `messages` is not a list"))?;
    ensure!(!messages.is_empty(), "{case}: no message captured");
    for (i, message) in messages.iter().enumerate() {
        let what = format!("{case} message {i}");
        str_field(message, "key", &what)?;
        let raw: Value = serde_json::from_str(str_field(message, "raw", &what)?)
            .with_context(|| format!("{what}: `raw` is not JSON"))?;
        ensure!(raw.is_object(), "{what}: `raw` is not a JSON object");
        let expected = message
            .get("expected")
            .and_then(Value::as_object)
            .with_context(|| format!("{what}: `expected` is not an object"))?;
        ensure!(
            expected.get("headers") == raw.get("headers"),
            "{what}: expected.headers differ from the stored envelope's headers"
        );
    }
    Ok(messages.len())
}

fn check_stack(stack: &str) -> Result<()> {
    let dir = fixtures_dir().join(stack);
    let index = read_json(&dir.join("INDEX.json"))?;
    let celery_version = str_field(&index, "celery_version", "INDEX.json")?;
    ensure!(
        stack == format!("celery-{celery_version}"),
        "{stack}: INDEX.json says celery {celery_version}"
    );
    for key in ["kombu_version", "redis_py_version", "python_version"] {
        str_field(&index, key, "INDEX.json")?;
    }
    let entries = index
        .get("cases")
        .and_then(Value::as_array)
        .context("INDEX.json: `cases` is not a list")?;
    let mut indexed = BTreeSet::new();
    for entry in entries {
        let case = str_field(entry, "case", "INDEX.json case")?;
        str_field(entry, "description", case)?;
        let count = check_case(&dir, case, celery_version).with_context(|| stack.to_string())?;
        ensure!(
            entry.get("messages").and_then(Value::as_u64) == Some(count as u64),
            "{stack}/{case}: INDEX.json message count differs from the file"
        );
        if !indexed.insert(case.to_string()) {
            bail!("{stack}: {case} is listed twice in INDEX.json");
        }
    }
    let missing: Vec<_> = REQUIRED_CASES
        .iter()
        .filter(|c| !indexed.contains(**c))
        .collect();
    ensure!(
        missing.is_empty(),
        "{stack}: cases missing from INDEX.json: {missing:?}"
    );
    for file in fs::read_dir(&dir)? {
        let name = file?.file_name().to_string_lossy().into_owned();
        if let Some(case) = name.strip_suffix(".json").filter(|c| *c != "INDEX") {
            ensure!(
                indexed.contains(case),
                "{stack}: {name} is not listed in INDEX.json"
            );
        }
    }
    Ok(())
}

/// Checks one result case file; returns its (key count, publish count).
fn check_result_case(dir: &Path, case: &str, celery_version: &str) -> Result<(u64, u64)> {
    let fixture = read_json(&dir.join(format!("{case}.json")))?;
    ensure!(
        str_field(&fixture, "case", case)? == case,
        "{case}: `case` differs from the file name"
    );
    ensure!(
        str_field(&fixture, "celery_version", case)? == celery_version,
        "{case}: celery_version differs from INDEX.json"
    );
    str_field(&fixture, "task_id", case)?;
    let keys = fixture
        .get("keys")
        .and_then(Value::as_object)
        .with_context(|| format!("{case}: `keys` is not an object"))?;
    for (key, entry) in keys {
        str_field(entry, "type", &format!("{case} key {key}"))?;
        ensure!(
            entry.get("ttl").is_some_and(Value::is_i64),
            "{case} key {key}: no ttl"
        );
    }
    let published = fixture
        .get("published")
        .and_then(Value::as_array)
        .with_context(|| format!("{case}: `published` is not a list"))?;
    for message in published {
        str_field(message, "channel", case)?;
    }
    ensure!(
        fixture.get("backend_commands").is_some_and(Value::is_array),
        "{case}: `backend_commands` is not a list"
    );
    Ok((keys.len() as u64, published.len() as u64))
}

fn check_results(stack: &str) -> Result<()> {
    let dir = fixtures_dir().join(stack).join("results");
    let index = read_json(&dir.join("INDEX.json"))?;
    let celery_version = str_field(&index, "celery_version", "results/INDEX.json")?;
    ensure!(
        stack == format!("celery-{celery_version}"),
        "{stack}: results/INDEX.json says celery {celery_version}"
    );
    let entries = index
        .get("cases")
        .and_then(Value::as_array)
        .context("results/INDEX.json: `cases` is not a list")?;
    let mut indexed = BTreeSet::new();
    for entry in entries {
        let case = str_field(entry, "case", "results/INDEX.json case")?;
        let (keys, published) = check_result_case(&dir, case, celery_version)
            .with_context(|| format!("{stack}/results"))?;
        ensure!(
            entry.get("keys").and_then(Value::as_u64) == Some(keys)
                && entry.get("published").and_then(Value::as_u64) == Some(published),
            "{stack}/results/{case}: INDEX.json counts differ from the file"
        );
        indexed.insert(case.to_string());
    }
    let missing: Vec<_> = REQUIRED_RESULT_CASES
        .iter()
        .filter(|c| !indexed.contains(**c))
        .collect();
    ensure!(
        missing.is_empty(),
        "{stack}: result cases missing: {missing:?}"
    );
    Ok(())
}

#[test]
fn every_stack_has_every_case_well_formed() {
    for stack in STACKS {
        check_stack(stack).unwrap_or_else(|e| panic!("{e:#}"));
    }
}

#[test]
fn every_stack_has_every_result_case_well_formed() {
    for stack in STACKS {
        check_results(stack).unwrap_or_else(|e| panic!("{e:#}"));
    }
}

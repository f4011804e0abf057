//! `[[warm]]` entries of the worker TOML: each names a declared `[[tasks]]` query task and reuses
//! its source, key template and TTLs, adding what a table scan needs.
//!
//! ```toml
//! [[warm]]
//! task = "tickets.get_ticket"     # a [[tasks]] entry with result = "one"
//! table = "tickets"
//! key_column = "id"               # keyset pagination column (unique, indexed)
//! columns = ["id", "title"]       # the task's select list (default: every column)
//! mode = "updated_at"             # full | increasing_key | updated_at | rowversion | change_tracking
//! watermark_column = "updated_at" # updated_at / rowversion modes
//! watermark_type = "timestamptz"  # Postgres: the type the bound watermark is cast to
//! deleted_column = "deleted_at"   # updated_at / rowversion: rows with it set have their key deleted
//! batch_size = 1000
//! rows_per_second = 5000          # throttle (default: none)
//! time_budget = "20m"             # stop, progress saved; the next run resumes
//! lock_ttl = "30s"
//! ```
//!
//! Key parameters come from the row: a task with one parameter takes it from `key_column`,
//! otherwise each parameter from the column of the same name.

pub(crate) mod metrics;
pub(crate) mod progress;

use std::time::Duration;

use celeriac_cache::source::SourceKind;
use celeriac_cache::warm::statements::{ident, Scan, DEL};
use celeriac_cache::warm::{WarmJob, WarmMode};
use celeriac_cache::Sources;

use serde::Deserialize;

use crate::query_tasks::toml_read::{table, PositiveInt, PositiveNumber, Required, Seconds};
use crate::query_tasks::{QueryConfig, ResultShape};

/// One `[[warm]]` entry, checked against its task.
pub(crate) struct WarmSpec {
    /// The job (the task's name is the job's name).
    pub job: WarmJob,
    /// How long the run lock lives without renewal.
    pub lock_ttl: Duration,
}

/// One `[[warm]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmTable {
    task: Required,
    table: Required,
    key_column: Required,
    columns: Option<Vec<String>>,
    mode: Option<String>,
    watermark_column: Option<String>,
    watermark_type: Option<String>,
    deleted_column: Option<String>,
    batch_size: Option<PositiveInt>,
    rows_per_second: Option<PositiveNumber>,
    time_budget: Option<Seconds>,
    lock_ttl: Option<Seconds>,
}

/// Read every `[[warm]]` entry of `extra` against the declared tasks and sources.
pub(crate) fn parse(
    extra: &std::collections::BTreeMap<String, toml::Value>,
    config: &QueryConfig,
    sources: &Sources,
) -> Result<Vec<WarmSpec>, String> {
    let Some(value) = extra.get("warm") else {
        return Err("no [[warm]] entries in the configuration".into());
    };
    let toml::Value::Array(items) = value else {
        return Err("`warm` must be an array of tables ([[warm]])".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| entry(i, item, config, sources))
        .collect()
}

fn entry(
    index: usize,
    value: &toml::Value,
    config: &QueryConfig,
    sources: &Sources,
) -> Result<WarmSpec, String> {
    let s: WarmTable = table(&format!("[[warm]] #{}", index + 1), value)?;
    let task_name = s.task.0;
    let place = format!("[[warm]] `{task_name}`");
    let task = config
        .tasks
        .iter()
        .find(|t| t.name == task_name)
        .ok_or_else(|| format!("{place}: no [[tasks]] entry named `{task_name}`"))?;
    if task.result != ResultShape::One {
        return Err(format!(
            "{place}: only tasks with result = \"one\" can be warmed (one row per key)"
        ));
    }
    let source = sources
        .get(&task.source)
        .ok_or_else(|| format!("{place}: unknown source `{}`", task.source))?;
    let kind = source.kind();
    let table_name = s.table.0;
    let key_column = s.key_column.0;
    let columns = s.columns.unwrap_or_default();
    let batch_size = s.batch_size.map_or(1000, |b| b.0);
    let batch_size = u32::try_from(batch_size)
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{place}: batch_size must be between 1 and 4294967295"))?;
    let bad = |e: celeriac_cache::warm::statements::BadIdent| format!("{place}: {e}");
    let mut scan = Scan::new(kind, &table_name, &key_column, &columns, batch_size).map_err(bad)?;
    let wm_column = s.watermark_column;
    let need_wm = |m: &str| {
        wm_column
            .as_deref()
            .ok_or_else(|| format!("{place}: mode = \"{m}\" needs watermark_column"))
            .and_then(|c| ident(kind, c).map_err(bad))
    };
    let deleted = s.deleted_column;
    let soft_delete = |scan: &mut Scan| -> Result<Option<String>, String> {
        match &deleted {
            Some(c) => {
                let q = ident(kind, c).map_err(bad)?;
                scan.extra = format!(", t.{q} AS {DEL}");
                Ok(Some(q))
            }
            None => Ok(None),
        }
    };
    let mode_name = s.mode.unwrap_or_else(|| "full".into());
    let mode = match mode_name.as_str() {
        "full" => WarmMode::Full,
        "increasing_key" => WarmMode::IncreasingKey,
        "updated_at" => {
            let deleted_column = soft_delete(&mut scan)?;
            let cast = match s.watermark_type {
                Some(t) if t.chars().all(|c| c.is_ascii_alphanumeric() || "_ ()".contains(c)) => {
                    Some(t)
                }
                Some(t) => return Err(format!("{place}: watermark_type `{t}` is not a type name")),
                None if kind == SourceKind::Postgres => Some("timestamptz".into()),
                None => None,
            };
            WarmMode::UpdatedAt {
                column: need_wm("updated_at")?,
                cast,
                deleted_column,
            }
        }
        "rowversion" | "change_tracking" if kind != SourceKind::MsSql => {
            return Err(format!(
                "{place}: mode = \"{mode_name}\" is for SQL Server sources only"
            ))
        }
        "rowversion" => WarmMode::RowVersion {
            column: need_wm("rowversion")?,
            deleted_column: soft_delete(&mut scan)?,
        },
        "change_tracking" => WarmMode::ChangeTracking,
        other => {
            return Err(format!(
                "{place}: unknown mode `{other}` (full, increasing_key, updated_at, rowversion, change_tracking)"
            ))
        }
    };
    let key_params = if task.params.len() == 1 {
        vec![(task.params[0].clone(), None)]
    } else {
        task.params
            .iter()
            .map(|p| (p.clone(), (*p != key_column).then(|| p.clone())))
            .collect()
    };
    Ok(WarmSpec {
        job: WarmJob {
            name: task.name.clone(),
            source: source.clone(),
            table: table_name,
            scan,
            key_params,
            key: task.key.clone(),
            policy: task.policy.clone(),
            mode,
            rows_per_second: s.rows_per_second.map(|r| r.0),
            time_budget: s.time_budget.map(|t| t.0),
        },
        lock_ttl: s.lock_ttl.map_or(Duration::from_secs(30), |t| t.0),
    })
}

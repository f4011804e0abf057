//! The paging loop of one warm job: choose the pass (full or incremental), read keyset pages,
//! write or delete their keys, then advance the saved state — never before the batch is written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::lock::{LockLost, WarmLock};
use super::state::{StateStore, WarmState};
use super::statements::{self as st, Scan};
use super::writer::WarmWriter;
use crate::entry::now_ms;
use crate::{KeyTemplate, NamedSql, Policy, Source, SourceError};

/// How a job finds what changed since its last run.
#[derive(Debug, Clone, PartialEq)]
pub enum WarmMode {
    /// Every run reads the whole table (resuming a pass a killed run left unfinished).
    Full,
    /// The key only grows: each run continues after the last key seen (inserts only).
    IncreasingKey,
    /// Postgres/MySQL: rows with `column` (e.g. `updated_at`) past the watermark. `cast` types
    /// the bound watermark (Postgres: `timestamptz`); rows whose `deleted_column` is set (not
    /// null, not false) have their key deleted.
    UpdatedAt {
        /// The quoted watermark column.
        column: String,
        /// SQL type to cast the bound watermark to.
        cast: Option<String>,
        /// The quoted soft-delete column.
        deleted_column: Option<String>,
    },
    /// SQL Server `rowversion` column (quoted) below `MIN_ACTIVE_ROWVERSION()`. Hard deletes
    /// are not seen; rows whose `deleted_column` is set have their key deleted. A watermark
    /// ahead of the database (restored from an older backup, recreated) means a full reload.
    RowVersion {
        /// The quoted rowversion column.
        column: String,
        /// The quoted soft-delete column.
        deleted_column: Option<String>,
    },
    /// SQL Server Change Tracking on the table: net changes, deletes remove keys; a watermark
    /// older than `CHANGE_TRACKING_MIN_VALID_VERSION` means a full reload.
    ChangeTracking,
}

/// One warm job: what to read and how to key and cache it.
pub struct WarmJob {
    /// The job's name (state and lock keys, logs, metrics).
    pub name: String,
    /// Where rows come from.
    pub source: Arc<dyn Source>,
    /// The table as configured (for `OBJECT_ID`).
    pub table: String,
    /// The page statements.
    pub scan: Scan,
    /// Key template parameters and the row column each comes from (`None`: the key column).
    pub key_params: Vec<(String, Option<String>)>,
    /// The read path's key template.
    pub key: KeyTemplate,
    /// The read path's TTLs.
    pub policy: Policy,
    /// Full or incremental.
    pub mode: WarmMode,
    /// Throttle: at most this many rows per second.
    pub rows_per_second: Option<f64>,
    /// Stop (progress saved) after this long.
    pub time_budget: Option<Duration>,
}

/// Run options from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Read only: no Redis writes, no state saved.
    pub dry_run: bool,
    /// Start a full pass from the beginning, forgetting the watermark.
    pub full: bool,
}

/// Reported after every page.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// `"full"` or `"incremental"`.
    pub pass: String,
    /// Rows read so far.
    pub rows: u64,
    /// Rows this pass will read, when known (full passes).
    pub total: Option<u64>,
    /// Keys written so far.
    pub written: u64,
    /// Keys deleted so far.
    pub deleted: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct WarmSummary {
    /// `"full"` or `"incremental"`.
    pub pass: String,
    /// Rows read.
    pub rows_read: u64,
    /// Keys written.
    pub keys_written: u64,
    /// Keys not written because a reader held their lease.
    pub keys_skipped_leased: u64,
    /// Keys deleted.
    pub keys_deleted: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// False when the time budget ran out (progress is saved; the next run resumes).
    pub complete: bool,
    /// When a run of this job last completed (unix ms): this run's end if it completed, the
    /// stored one otherwise (a run stopped by its budget is not a success).
    pub last_success_ms: Option<u64>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// The database failed.
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Another run took over.
    #[error(transparent)]
    LockLost(#[from] LockLost),
    /// A row or statement the job cannot use.
    #[error("{0}")]
    Data(String),
}

/// Where the job writes: `None` in a dry run.
pub struct Sink<'a> {
    /// The L2 writer.
    pub writer: &'a mut WarmWriter,
    /// The held lock.
    pub lock: &'a WarmLock,
}

async fn fetch(
    job: &WarmJob,
    sql: &str,
    values: &Map<String, Value>,
) -> Result<Vec<crate::Row>, WarmError> {
    let named =
        NamedSql::parse(sql, job.source.kind()).map_err(|e| WarmError::Data(e.to_string()))?;
    let params = named
        .bind(|n| values.get(n))
        .map_err(|e| WarmError::Data(e.to_string()))?;
    Ok(job.source.fetch(&named.sql, &params).await?)
}

async fn scalar(job: &WarmJob, sql: &str, values: &Map<String, Value>) -> Result<Value, WarmError> {
    let rows = fetch(job, sql, values).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().map(|(_, v)| v))
        .unwrap_or(Value::Null))
}

fn int(v: &Value) -> Option<i128> {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .or_else(|| v.to_string().parse().ok())
}

/// One page read from the source, and how long the read took.
struct Page {
    rows: Vec<crate::Row>,
    fetch_ms: u64,
}

async fn fetch_page(
    job: &WarmJob,
    sql: String,
    values: Map<String, Value>,
) -> Result<Page, WarmError> {
    let t0 = Instant::now();
    let rows = fetch(job, &sql, &values).await?;
    Ok(Page {
        rows,
        fetch_ms: t0.elapsed().as_millis() as u64,
    })
}

/// Write (or, in a dry run, count) one page's keys, then save `state` under the lock.
#[allow(clippy::too_many_arguments)]
async fn write_page(
    job: &WarmJob,
    sink: Option<&mut Sink<'_>>,
    store: &mut StateStore,
    state: &WarmState,
    writes: Vec<(String, Value)>,
    deletes: Vec<String>,
    delta_ms: u64,
    summary: &mut WarmSummary,
) -> Result<(), WarmError> {
    let Some(sink) = sink else {
        summary.keys_written += writes.len() as u64;
        summary.keys_deleted += deletes.len() as u64;
        return Ok(());
    };
    sink.lock.check()?;
    let counts = sink.writer.write(writes, delta_ms, &job.policy).await?;
    summary.keys_written += counts.written;
    summary.keys_skipped_leased += counts.skipped_leased;
    summary.keys_deleted += sink.writer.delete(&deletes).await?;
    if !store.save(state, sink.lock.token()).await? {
        return Err(LockLost(sink.lock.key().to_owned()).into());
    }
    Ok(())
}

/// Run `job` once. `sink: None` is a dry run. `on_progress` is called after every page.
pub async fn run(
    job: &WarmJob,
    store: &mut StateStore,
    mut sink: Option<Sink<'_>>,
    options: RunOptions,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<WarmSummary, WarmError> {
    let started = Instant::now();
    let mut state = store.load().await?;
    if options.full {
        state = WarmState {
            last_success_ms: state.last_success_ms,
            ..WarmState::default()
        };
    }
    let mut pass = match state.pass_kind.clone() {
        Some(kind) => kind,
        None => start_pass(job, &mut state).await?,
    };
    if pass == "incremental" && job.mode == WarmMode::ChangeTracking {
        let min_valid = scalar(job, st::CT_MIN_VALID, &obj(json!({"table": job.table}))).await?;
        if let (Some(min), Some(wm)) = (int(&min_valid), int(&state.watermark)) {
            if wm < min {
                tracing::warn!(job = %job.name, watermark = %wm, min_valid = %min, "warm: change tracking history is gone; full reload");
                state.watermark = Value::Null;
                state.pass_kind = None;
                pass = start_pass(job, &mut state).await?;
            }
        }
    }
    let mut upper = match (&job.mode, pass.as_str()) {
        (WarmMode::RowVersion { .. }, "incremental") => {
            scalar(job, st::MIN_ACTIVE_ROWVERSION, &Map::new()).await?
        }
        _ => Value::Null,
    };
    if let (Some(u), Some(wm)) = (int(&upper), int(&state.watermark)) {
        if wm >= u {
            tracing::warn!(job = %job.name, watermark = %wm, min_active_rowversion = %u, "warm: the watermark is ahead of the database (restored or recreated?); full reload");
            state.watermark = Value::Null;
            state.pass_kind = None;
            pass = start_pass(job, &mut state).await?;
            upper = Value::Null;
        }
    }
    let total = if pass == "full" {
        let first = state.cursor.is_null();
        let n = scalar(
            job,
            &job.scan.count_rest(first),
            &obj(json!({"last": state.cursor})),
        )
        .await?;
        int(&n).and_then(|n| u64::try_from(n).ok())
    } else {
        None
    };
    let mut summary = WarmSummary {
        pass: pass.clone(),
        ..WarmSummary::default()
    };
    let mut progress = Progress {
        pass: pass.clone(),
        total,
        ..Progress::default()
    };
    summary.last_success_ms = state.last_success_ms;
    let mut prefetched: Option<Page> = None;
    loop {
        if job
            .time_budget
            .is_some_and(|budget| started.elapsed() >= budget)
        {
            summary.elapsed = started.elapsed();
            return Ok(summary);
        }
        let Page { rows, fetch_ms } = match prefetched.take() {
            Some(page) => page,
            None => {
                let (sql, values) = page(job, &state, &pass, &upper);
                fetch_page(job, sql, values).await?
            }
        };
        let n = rows.len();
        let delta_ms = fetch_ms / (n.max(1) as u64);
        let mut writes = Vec::with_capacity(n);
        let mut deletes = Vec::new();
        let mut last_key = Value::Null;
        let mut last_wm = Value::Null;
        for mut row in rows {
            let key_value = row.shift_remove(st::KEY).unwrap_or(Value::Null);
            let wm = row.shift_remove(st::WM).unwrap_or(Value::Null);
            let op = row.shift_remove(st::OP);
            let del = row.shift_remove(st::DEL);
            let deleted = op.as_ref().and_then(Value::as_str) == Some("D")
                || del.is_some_and(|d| !d.is_null() && d != Value::Bool(false));
            let key = render_key(job, &row, &key_value)?;
            if deleted {
                deletes.push(key);
            } else {
                writes.push((key, Value::Object(row)));
            }
            last_key = key_value;
            last_wm = wm;
        }
        summary.rows_read += n as u64;
        let done = n < job.scan.limit as usize;
        if n > 0 {
            advance(job, &mut state, &pass, last_key, last_wm);
        }
        if done {
            finish(job, &mut state, &pass, &upper);
        }
        // Write this page and save the state it reached while the next page is read (the
        // next statement depends only on the state); without a throttle, whose pace decides
        // when the next read starts.
        let write = write_page(
            job,
            sink.as_mut(),
            store,
            &state,
            writes,
            deletes,
            delta_ms,
            &mut summary,
        );
        if done || job.rows_per_second.is_some_and(|r| r > 0.0) {
            write.await?;
        } else {
            let (sql, values) = page(job, &state, &pass, &upper);
            let (written, next) = tokio::join!(write, fetch_page(job, sql, values));
            written?;
            prefetched = Some(next?);
        }
        progress.rows = summary.rows_read;
        progress.written = summary.keys_written;
        progress.deleted = summary.keys_deleted;
        on_progress(&progress);
        if done {
            summary.complete = true;
            summary.last_success_ms = state.last_success_ms;
            summary.elapsed = started.elapsed();
            return Ok(summary);
        }
        if let Some(rate) = job.rows_per_second.filter(|r| *r > 0.0) {
            let mut due = Duration::from_secs_f64(summary.rows_read as f64 / rate);
            if let Some(budget) = job.time_budget {
                due = due.min(budget);
            }
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Begin a pass: full when there is no watermark yet (or the mode has none), else incremental.
/// A full pass first records the watermark it moves to when it completes.
async fn start_pass(job: &WarmJob, state: &mut WarmState) -> Result<String, WarmError> {
    let full = match &job.mode {
        WarmMode::Full | WarmMode::IncreasingKey => true,
        _ => state.watermark.is_null(),
    };
    state.cursor = match &job.mode {
        WarmMode::IncreasingKey => state.watermark.clone(),
        _ => Value::Null,
    };
    state.target = match (&job.mode, full) {
        (WarmMode::UpdatedAt { column, .. }, true) => {
            json!([
                scalar(job, &job.scan.max_of(column), &Map::new()).await?,
                null
            ])
        }
        (WarmMode::RowVersion { .. }, true) => {
            let upper = scalar(job, st::MIN_ACTIVE_ROWVERSION, &Map::new()).await?;
            json!(int(&upper).map(|u| (u - 1).to_string()))
        }
        (WarmMode::ChangeTracking, _) => scalar(job, st::CT_CURRENT, &Map::new()).await?,
        _ => Value::Null,
    };
    let kind = if full { "full" } else { "incremental" };
    state.pass_kind = Some(kind.to_owned());
    Ok(kind.to_owned())
}

fn page(
    job: &WarmJob,
    state: &WarmState,
    pass: &str,
    upper: &Value,
) -> (String, Map<String, Value>) {
    let s = &job.scan;
    if pass == "full" {
        let first = state.cursor.is_null();
        return (s.full_page(first), obj(json!({"last": state.cursor})));
    }
    match &job.mode {
        WarmMode::UpdatedAt { column, cast, .. } => {
            let wm = state.watermark.get(0).cloned().unwrap_or(Value::Null);
            let last = state.watermark.get(1).cloned().unwrap_or(Value::Null);
            (
                s.updated_page(column, cast.as_deref(), !last.is_null()),
                obj(json!({"wm": wm, "last": last})),
            )
        }
        WarmMode::RowVersion { column, .. } => (
            s.rowversion_page(column),
            obj(json!({"wm": state.watermark, "upper": upper})),
        ),
        WarmMode::ChangeTracking => (
            s.changes_page(state.cursor.is_null()),
            obj(json!({"since": state.watermark, "last": state.cursor})),
        ),
        WarmMode::Full | WarmMode::IncreasingKey => (
            s.full_page(state.cursor.is_null()),
            obj(json!({"last": state.cursor})),
        ),
    }
}

/// After a written page: move the cursor (and, for incremental passes that are their own
/// cursor, the watermark).
fn advance(job: &WarmJob, state: &mut WarmState, pass: &str, last_key: Value, last_wm: Value) {
    match (&job.mode, pass) {
        (WarmMode::UpdatedAt { .. }, "incremental") => state.watermark = json!([last_wm, last_key]),
        (WarmMode::RowVersion { .. }, "incremental") => state.watermark = last_wm,
        _ => state.cursor = last_key,
    }
}

/// The pass read its last page: adopt its target watermark and clear the pass.
fn finish(job: &WarmJob, state: &mut WarmState, pass: &str, upper: &Value) {
    match (&job.mode, pass) {
        (WarmMode::Full, _) => {}
        (WarmMode::IncreasingKey, _) => state.watermark = state.cursor.clone(),
        (WarmMode::UpdatedAt { .. }, "incremental") => {}
        (WarmMode::RowVersion { .. }, "incremental") => {
            if let (Some(u), w) = (int(upper), int(&state.watermark)) {
                if w.is_none_or(|w| w < u - 1) {
                    state.watermark = json!((u - 1).to_string());
                }
            }
        }
        _ => state.watermark = state.target.clone(),
    }
    state.pass_kind = None;
    state.cursor = Value::Null;
    state.target = Value::Null;
    state.last_success_ms = Some(now_ms());
}

fn render_key(
    job: &WarmJob,
    row: &Map<String, Value>,
    key_value: &Value,
) -> Result<String, WarmError> {
    let mut values = Map::new();
    for (param, column) in &job.key_params {
        let v = match column {
            None => key_value.clone(),
            Some(c) => row.get(c).cloned().ok_or_else(|| {
                WarmError::Data(format!(
                    "warm `{}`: the rows have no column `{c}` for key parameter `{param}`",
                    job.name
                ))
            })?,
        };
        values.insert(param.clone(), v);
    }
    job.key
        .render(&values)
        .map_err(|e| WarmError::Data(format!("warm `{}`: key: {e}", job.name)))
}

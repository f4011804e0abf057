//! Runs T-SQL text on SQLite and turns the results into TDS tokens.
//!
//! Statements run as SQLite SQL, one after another (several in one batch give several result
//! sets). Parameters are bound by name: `@P1` in the SQL is SQLite's own named-parameter
//! syntax, so the names tiberius sends match as they are; `?1`/`:P1`/`$P1` work too.

use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value;
use rusqlite::{Batch, Connection, Statement};

use crate::tokens::{self, DONEINPROC, DONEPROC, DONE_COUNT, DONE_ERROR, DONE_MORE};
use crate::tsql::Piece;
use crate::types::ColumnType;

/// Bytes gathered before they are handed on to the connection.
const CHUNK: usize = 32 * 1024;

/// Adds the SQL functions the test server offers beyond SQLite: `sleep_ms(n)` waits `n`
/// milliseconds and returns `n` (for query-timeout tests), and the change tracking and
/// rowversion functions of [`crate::tracking`].
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function("sleep_ms", 1, FunctionFlags::SQLITE_UTF8, |ctx| {
        let ms: i64 = ctx.get(0)?;
        std::thread::sleep(std::time::Duration::from_millis(ms.clamp(0, 60_000) as u64));
        Ok(ms)
    })?;
    crate::tracking::register_functions(conn)
}

/// SQL Server's error number for a SQLite failure, where one is close (else 50000).
fn error_number(message: &str) -> i32 {
    if message.starts_with("no such table") {
        208
    } else if message.starts_with("no such column") {
        207
    } else if message.contains("syntax error") || message.starts_with("near ") {
        102
    } else if message.starts_with("UNIQUE constraint failed") {
        2627
    } else {
        50000
    }
}

/// Gathers tokens and hands them on in chunks; `emit` returns false when the client is gone.
struct Out<'a> {
    buf: Vec<u8>,
    emit: &'a mut dyn FnMut(Vec<u8>) -> bool,
    open: bool,
}

impl Out<'_> {
    fn maybe_flush(&mut self) {
        if self.buf.len() >= CHUNK {
            self.flush();
        }
    }
    fn flush(&mut self) {
        if self.open && !self.buf.is_empty() {
            self.open = (self.emit)(std::mem::take(&mut self.buf));
        }
    }
}

/// Runs `sql` with `params` and emits the whole response (result sets, counts, errors and
/// the closing DONE/DONEPROC); `rpc` selects procedure framing.
pub fn run(
    conn: &Connection,
    sql: &str,
    params: &[(String, Value)],
    rpc: bool,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) {
    let mut out = Out {
        buf: Vec::with_capacity(CHUNK),
        emit,
        open: true,
    };
    let mut pending_done: Option<(u16, u64)> = None;
    let mut failed = false;
    let upper = sql.to_ascii_uppercase();
    let rowversion =
        upper.contains("ROWVERSION") && (upper.contains("CREATE") || upper.contains("ALTER"));
    'pieces: for piece in crate::tsql::translate(sql) {
        let text = match piece {
            Piece::Sql(text) => text,
            Piece::Command(command) => {
                if let Some((status, count)) = pending_done.take() {
                    done(&mut out.buf, rpc, status | DONE_MORE, count);
                }
                match crate::tracking::run(conn, &command) {
                    Ok(()) => pending_done = Some((0, 0)),
                    Err(message) => {
                        fail(&mut out, &message);
                        failed = true;
                        break 'pieces;
                    }
                }
                continue;
            }
        };
        let mut batch = Batch::new(conn, &text);
        while out.open {
            let mut stmt = match batch.next() {
                Ok(Some(stmt)) => stmt,
                Ok(None) => break,
                Err(e) => {
                    fail(&mut out, &e.to_string());
                    failed = true;
                    break 'pieces;
                }
            };
            if let Some((status, count)) = pending_done.take() {
                done(&mut out.buf, rpc, status | DONE_MORE, count);
            }
            let result = statement(&mut stmt, params, &mut out);
            drop(stmt);
            match result {
                Ok(count) => pending_done = Some((DONE_COUNT, count)),
                Err(message) => {
                    fail(&mut out, &message);
                    failed = true;
                    break 'pieces;
                }
            }
            if rowversion {
                if let Err(e) = crate::tracking::install_rowversion(conn) {
                    fail(&mut out, &e.to_string());
                    failed = true;
                    break 'pieces;
                }
            }
        }
        if !out.open {
            break;
        }
    }
    let last_status = if failed { DONE_ERROR } else { 0 };
    if rpc {
        if let Some((status, count)) = pending_done {
            done(&mut out.buf, true, status | DONE_MORE, count);
        }
        tokens::return_status(&mut out.buf, 0);
        tokens::done(&mut out.buf, DONEPROC, last_status, 0);
    } else {
        match pending_done {
            Some((status, count)) => done(&mut out.buf, false, status, count),
            None => tokens::done(&mut out.buf, tokens::DONE, last_status, 0),
        }
    }
    out.flush();
}

fn done(out: &mut Vec<u8>, rpc: bool, status: u16, count: u64) {
    tokens::done(
        out,
        if rpc { DONEINPROC } else { tokens::DONE },
        status,
        count,
    );
}

fn fail(out: &mut Out<'_>, message: &str) {
    tokens::error(&mut out.buf, error_number(message), 16, message);
}

fn bind(stmt: &mut Statement<'_>, params: &[(String, Value)]) -> Result<(), String> {
    for (name, value) in params {
        let bare = name.trim_start_matches(['@', ':', '$']);
        let position = bare
            .trim_start_matches(['P', 'p'])
            .parse::<usize>()
            .ok()
            .map(|n| format!("?{n}"));
        let candidates = [
            Some(format!("@{bare}")),
            Some(format!(":{bare}")),
            Some(format!("${bare}")),
            position,
        ];
        for candidate in candidates.into_iter().flatten() {
            if let Some(index) = stmt
                .parameter_index(&candidate)
                .map_err(|e| e.to_string())?
            {
                stmt.raw_bind_parameter(index, value)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// Runs one statement; its row count (rows returned or changed).
fn statement(
    stmt: &mut Statement<'_>,
    params: &[(String, Value)],
    out: &mut Out<'_>,
) -> Result<u64, String> {
    bind(stmt, params)?;
    if stmt.column_count() == 0 {
        return stmt
            .raw_execute()
            .map(|n| n as u64)
            .map_err(|e| e.to_string());
    }
    let names: Vec<String> = stmt
        .column_names()
        .into_iter()
        .map(|n| n.to_string())
        .collect();
    let declared: Vec<Option<ColumnType>> = stmt
        .columns()
        .into_iter()
        .map(|c| c.decl_type().and_then(ColumnType::from_declared))
        .collect();
    let mut rows = stmt.raw_query();
    let first = rows.next().map_err(|e| e.to_string())?;
    let types: Vec<ColumnType> = declared
        .iter()
        .enumerate()
        .map(|(i, declared)| {
            declared.unwrap_or_else(|| match first.map(|row| row.get_ref(i)) {
                Some(Ok(value)) => ColumnType::from_value(value),
                _ => ColumnType::NVarChar,
            })
        })
        .collect();
    column_metadata(&mut out.buf, &names, &types);
    let mut count = 0u64;
    let mut row = first;
    while let Some(current) = row {
        let mut encoded = vec![tokens::ROW];
        for (i, ty) in types.iter().enumerate() {
            let value = current.get_ref(i).map_err(|e| e.to_string())?;
            ty.write_value(value, &mut encoded)
                .map_err(|e| format!("column {}: {e}", names[i]))?;
        }
        out.buf.extend(encoded);
        count += 1;
        out.maybe_flush();
        if !out.open {
            break;
        }
        row = rows.next().map_err(|e| e.to_string())?;
    }
    Ok(count)
}

fn column_metadata(out: &mut Vec<u8>, names: &[String], types: &[ColumnType]) {
    out.push(tokens::COLMETADATA);
    out.extend_from_slice(&(names.len() as u16).to_le_bytes());
    for (name, ty) in names.iter().zip(types) {
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0x0001u16.to_le_bytes());
        ty.write_type_info(out);
        tokens::b_varchar(out, name);
    }
}

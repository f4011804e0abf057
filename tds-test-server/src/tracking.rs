//! SQL Server Change Tracking and `rowversion` emulated on SQLite, enough for incremental sync
//! clients (a cache warmer) to run unmodified.
//!
//! - `ALTER TABLE t ENABLE CHANGE_TRACKING [WITH (...)]` creates the change table `__ct_t`
//!   (primary key, `SYS_CHANGE_VERSION`, `SYS_CHANGE_CREATION_VERSION`, `__ct_deleted`) and
//!   triggers that bump the database-wide version (`__ct_version`) and record each inserted,
//!   updated or deleted row. `CHANGETABLE(CHANGES t, @v)` reads it (see [`crate::tsql`]), with
//!   the net operation relative to `@v`: `D` deleted, `I` created after `@v`, else `U`.
//! - `CHANGE_TRACKING_CURRENT_VERSION()`, `CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID('t'))`
//!   and `OBJECT_ID('t')` are SQL functions.
//! - `EXEC sp_flush_CT_internal_table_on_demand 't'` forgets the table's whole change history
//!   and moves its min valid version to the current version (SQL Server's cleanup keeps the
//!   retention period; here a test uses it to make a client fall behind).
//! - A column declared `ROWVERSION` is set by triggers from a database-wide counter
//!   (`__rowversion`) on every insert and update. Values are integers (SQL Server's are
//!   `binary(8)`, which `CONVERT(BIGINT, …)` turns into the same numbers); they are sent to
//!   clients as 8 big-endian bytes. `MIN_ACTIVE_ROWVERSION()` is the counter + 1 (statements
//!   run one at a time, so no transaction is ever open across them).
//!
//! Versions move per row changed, not per transaction as in SQL Server.

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension};

/// A statement handled here instead of by SQLite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `ALTER TABLE t ENABLE CHANGE_TRACKING`.
    EnableChangeTracking(String),
    /// `EXEC sp_flush_CT_internal_table_on_demand 't'`.
    FlushChangeTracking(String),
    /// Accepted and ignored (`ALTER DATABASE … SET CHANGE_TRACKING = …`).
    Nothing,
}

/// `[dbo].[t]`, `dbo.t`, `'t'`, `N't'` → `t`.
pub fn table_name(raw: &str) -> String {
    let raw = raw.trim();
    let raw = raw
        .strip_prefix(['N', 'n'])
        .filter(|r| r.starts_with('\''))
        .unwrap_or(raw);
    let raw = raw.trim_matches('\'');
    let last = raw.rsplit('.').next().unwrap_or(raw);
    last.trim_matches(['[', ']', '"']).to_owned()
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs `command`; an error message as SQL Server would phrase it.
pub fn run(conn: &Connection, command: &Command) -> Result<(), String> {
    match command {
        Command::EnableChangeTracking(table) => enable(conn, table),
        Command::FlushChangeTracking(table) => flush(conn, table),
        Command::Nothing => Ok(()),
    }
}

/// The primary key columns of `table` with their declared types.
fn primary_key(conn: &Connection, table: &str) -> Result<Vec<(String, String)>, String> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({})", quote(table)))
        .map_err(|e| e.to_string())?;
    let mut columns: Vec<(i64, String, String)> = stmt
        .query_map([], |r| Ok((r.get(5)?, r.get(1)?, r.get(2)?)))
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    columns.retain(|(pk, _, _)| *pk > 0);
    columns.sort();
    Ok(columns.into_iter().map(|(_, n, t)| (n, t)).collect())
}

fn enable(conn: &Connection, table: &str) -> Result<(), String> {
    let key = primary_key(conn, table)?;
    if key.is_empty() {
        return Err(format!(
            "Cannot enable change tracking on table '{table}'. Change tracking requires a primary key on the table."
        ));
    }
    let tracked: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '__ct_tables'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    if tracked.is_some()
        && conn
            .query_row("SELECT 1 FROM __ct_tables WHERE name = ?1", [table], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(|e| e.to_string())?
            .is_some()
    {
        return Err(format!(
            "Change tracking is already enabled for table '{table}'."
        ));
    }
    let ct = quote(&format!("__ct_{table}"));
    let t = quote(table);
    let cols: Vec<String> = key.iter().map(|(n, _)| quote(n)).collect();
    let col_list = cols.join(", ");
    let col_defs: Vec<String> = key
        .iter()
        .map(|(n, ty)| format!("{} {ty}", quote(n)))
        .collect();
    let values = |row: &str| {
        cols.iter()
            .map(|c| format!("{row}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let same = |row: &str| {
        cols.iter()
            .map(|c| format!("c.{c} = {row}.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let moved = cols
        .iter()
        .map(|c| format!("OLD.{c} IS NOT NEW.{c}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let version = "(SELECT version FROM __ct_version)";
    let record = |row: &str, creation: &str, deleted: u8| {
        format!(
            "INSERT OR REPLACE INTO {ct} ({col_list}, SYS_CHANGE_VERSION, SYS_CHANGE_CREATION_VERSION, __ct_deleted) \
             VALUES ({}, {version}, {creation}, {deleted});",
            values(row)
        )
    };
    let prior = |row: &str| {
        format!(
            "(SELECT c.SYS_CHANGE_CREATION_VERSION FROM {ct} c WHERE {} AND c.__ct_deleted = 0)",
            same(row)
        )
    };
    let bump = "UPDATE __ct_version SET version = version + 1;";
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS __ct_version (version INTEGER NOT NULL);
         INSERT INTO __ct_version SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM __ct_version);
         CREATE TABLE IF NOT EXISTS __ct_tables (name TEXT PRIMARY KEY COLLATE NOCASE, min_valid INTEGER NOT NULL);
         INSERT INTO __ct_tables VALUES ({name}, {version});
         CREATE TABLE {ct} ({defs}, SYS_CHANGE_VERSION BIGINT NOT NULL, SYS_CHANGE_CREATION_VERSION BIGINT,
           __ct_deleted INTEGER NOT NULL, PRIMARY KEY ({col_list}));
         CREATE TRIGGER {ins} AFTER INSERT ON {t} BEGIN {bump} {on_insert} END;
         CREATE TRIGGER {upd} AFTER UPDATE ON {t} BEGIN {bump}
           INSERT OR REPLACE INTO {ct} ({col_list}, SYS_CHANGE_VERSION, SYS_CHANGE_CREATION_VERSION, __ct_deleted)
             SELECT {old}, {version}, NULL, 1 WHERE {moved};
           {on_update} END;
         CREATE TRIGGER {del} AFTER DELETE ON {t} BEGIN {bump} {on_delete} END;",
        name = sql_string(table),
        defs = col_defs.join(", "),
        ins = quote(&format!("__ct_{table}_ins")),
        upd = quote(&format!("__ct_{table}_upd")),
        del = quote(&format!("__ct_{table}_del")),
        on_insert = record("NEW", version, 0),
        old = values("OLD"),
        on_update = record("NEW", &prior("NEW"), 0),
        on_delete = record("OLD", &prior("OLD"), 1),
    );
    conn.execute_batch(&format!("SAVEPOINT enable_ct; {sql} RELEASE enable_ct;"))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK TO enable_ct; RELEASE enable_ct;");
            e.to_string()
        })
}

fn flush(conn: &Connection, table: &str) -> Result<(), String> {
    let tracked = conn
        .query_row(
            "SELECT name FROM __ct_tables WHERE name = ?1",
            [table],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .ok()
        .flatten()
        .ok_or_else(|| format!("Change tracking is not enabled on table '{table}'."))?;
    conn.execute_batch(&format!(
        "DELETE FROM {};
         UPDATE __ct_tables SET min_valid = (SELECT version FROM __ct_version) WHERE name = {};",
        quote(&format!("__ct_{tracked}")),
        sql_string(&tracked)
    ))
    .map_err(|e| e.to_string())
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Gives every table with a `ROWVERSION` column (and no triggers yet) its rowversion
/// triggers. Cheap when there is nothing to do; run after statements that may create tables.
pub fn install_rowversion(conn: &Connection) -> rusqlite::Result<()> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_\\_%' ESCAPE '\\'
             AND name NOT IN (SELECT tbl_name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '\\_\\_rv\\_%' ESCAPE '\\')",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for table in tables {
        let column: Option<String> = conn
            .prepare(&format!("PRAGMA table_info({})", quote(&table)))?
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
            .filter_map(Result::ok)
            .find(|(_, ty)| ty.eq_ignore_ascii_case("ROWVERSION"))
            .map(|(name, _)| name);
        let Some(column) = column else { continue };
        let (t, c) = (quote(&table), quote(&column));
        let set = format!(
            "UPDATE __rowversion SET value = value + 1;
             UPDATE {t} SET {c} = (SELECT value FROM __rowversion) WHERE rowid = NEW.rowid;"
        );
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS __rowversion (value INTEGER NOT NULL);
             INSERT INTO __rowversion SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM __rowversion);
             CREATE TRIGGER {ins} AFTER INSERT ON {t} BEGIN {set} END;
             CREATE TRIGGER {upd} AFTER UPDATE ON {t} WHEN NEW.{c} IS OLD.{c} BEGIN {set} END;",
            ins = quote(&format!("__rv_{table}_ins")),
            upd = quote(&format!("__rv_{table}_upd")),
        ))?;
    }
    Ok(())
}

/// The change tracking and rowversion functions.
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8;
    conn.create_scalar_function("OBJECT_ID", 1, flags, |ctx| {
        let name = table_name(&ctx.get::<String>(0)?);
        // SAFETY: the connection outlives the call and is only read here.
        let conn = unsafe { ctx.get_connection()? };
        Ok(conn
            .query_row(
                "SELECT rowid FROM sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .ok()
            .flatten())
    })?;
    conn.create_scalar_function("CHANGE_TRACKING_CURRENT_VERSION", 0, flags, |ctx| {
        // SAFETY: as above.
        let conn = unsafe { ctx.get_connection()? };
        Ok(read_number(&conn, "SELECT version FROM __ct_version", None))
    })?;
    conn.create_scalar_function("CHANGE_TRACKING_MIN_VALID_VERSION", 1, flags, |ctx| {
        let id: Option<i64> = ctx.get(0)?;
        // SAFETY: as above.
        let conn = unsafe { ctx.get_connection()? };
        Ok(id.and_then(|id| {
            read_number(
                &conn,
                "SELECT t.min_valid FROM __ct_tables t JOIN sqlite_master m \
                 ON m.type = 'table' AND m.name = t.name COLLATE NOCASE WHERE m.rowid = ?1",
                Some(id),
            )
        }))
    })?;
    conn.create_scalar_function("MIN_ACTIVE_ROWVERSION", 0, flags, |ctx| {
        // SAFETY: as above.
        let conn = unsafe { ctx.get_connection()? };
        Ok(read_number(&conn, "SELECT value FROM __rowversion", None).unwrap_or(0) + 1)
    })?;
    Ok(())
}

fn read_number(conn: &Connection, sql: &str, arg: Option<i64>) -> Option<i64> {
    let params: Vec<i64> = arg.into_iter().collect();
    conn.query_row(sql, rusqlite::params_from_iter(params), |r| {
        r.get::<_, Option<i64>>(0)
    })
    .optional()
    .ok()
    .flatten()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        register_functions(&conn).unwrap();
        conn
    }

    fn num(conn: &Connection, sql: &str) -> Option<i64> {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(table_name("[dbo].[tickets]"), "tickets");
        assert_eq!(table_name("N'dbo.tickets'"), "tickets");
        assert_eq!(table_name(" 'tickets' "), "tickets");
    }

    #[test]
    fn change_table_records_net_changes_and_flush_moves_min_valid() {
        let conn = db();
        conn.execute_batch("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');")
            .unwrap();
        assert_eq!(num(&conn, "SELECT CHANGE_TRACKING_CURRENT_VERSION()"), None);
        run(&conn, &Command::EnableChangeTracking("t".into())).unwrap();
        assert!(run(&conn, &Command::EnableChangeTracking("t".into())).is_err());
        assert_eq!(
            num(&conn, "SELECT CHANGE_TRACKING_CURRENT_VERSION()"),
            Some(0)
        );
        conn.execute_batch(
            "INSERT INTO t VALUES (3, 'c'); UPDATE t SET v = 'x' WHERE id IN (1, 3); DELETE FROM t WHERE id = 2;",
        )
        .unwrap();
        let ops: Vec<(i64, String, i64)> = conn
            .prepare("SELECT id, CASE WHEN __ct_deleted = 1 THEN 'D' WHEN SYS_CHANGE_CREATION_VERSION > 0 THEN 'I' ELSE 'U' END, SYS_CHANGE_VERSION FROM __ct_t ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            ops,
            [(1, "U".into(), 2), (2, "D".into(), 4), (3, "I".into(), 3)]
        );
        assert_eq!(
            num(
                &conn,
                "SELECT CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID('dbo.t'))"
            ),
            Some(0)
        );
        run(&conn, &Command::FlushChangeTracking("t".into())).unwrap();
        assert_eq!(
            num(
                &conn,
                "SELECT CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID('[t]'))"
            ),
            Some(4)
        );
        assert_eq!(num(&conn, "SELECT COUNT(*) FROM __ct_t"), Some(0));
        assert_eq!(
            num(
                &conn,
                "SELECT CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID('nope'))"
            ),
            None
        );
    }

    #[test]
    fn rowversion_columns_follow_inserts_and_updates() {
        let conn = db();
        assert_eq!(num(&conn, "SELECT MIN_ACTIVE_ROWVERSION()"), Some(1));
        conn.execute_batch("CREATE TABLE r (id INT PRIMARY KEY, v TEXT, rv ROWVERSION)")
            .unwrap();
        install_rowversion(&conn).unwrap();
        install_rowversion(&conn).unwrap();
        conn.execute_batch(
            "INSERT INTO r (id, v) VALUES (1, 'a'), (2, 'b'); UPDATE r SET v = 'c' WHERE id = 1;",
        )
        .unwrap();
        assert_eq!(num(&conn, "SELECT rv FROM r WHERE id = 1"), Some(3));
        assert_eq!(num(&conn, "SELECT rv FROM r WHERE id = 2"), Some(2));
        assert_eq!(num(&conn, "SELECT MIN_ACTIVE_ROWVERSION()"), Some(4));
    }
}

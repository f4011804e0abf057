//! The few T-SQL spellings rewritten before SQLite sees a statement. Everything else runs
//! as SQLite SQL; SQLite already takes `[bracketed]` names and `@P1` parameters.
//!
//! - `(MAX)` in a type, as in `NVARCHAR(MAX)`, becomes `(2147483647)` (SQLite wants a number).
//! - `N'text'` (a Unicode string) becomes `'text'` (SQLite strings are Unicode).
//! - `SELECT TOP (n) …` / `SELECT TOP n …` becomes `SELECT … LIMIT n` (the limit goes at the end
//!   of that SELECT: the next `;` or the parenthesis closing it).
//! - `CONVERT(type, expr[, style])` becomes `CAST(expr AS type')`: integer types and `BINARY(8)`
//!   / `ROWVERSION` (rowversions are integers here, see [`crate::tracking`]) → `INTEGER`,
//!   character types → `TEXT`, `DECIMAL`/`NUMERIC`/`MONEY` → `NUMERIC`, `FLOAT`/`REAL` → `REAL`.
//! - `CHANGETABLE(CHANGES t, @v)` becomes a subquery over the change table of `t`.
//! - Statements handled by [`crate::tracking`] (`ALTER TABLE t ENABLE CHANGE_TRACKING`,
//!   `ALTER DATABASE … SET CHANGE_TRACKING …`, `EXEC sp_flush_CT_internal_table_on_demand 't'`)
//!   are split out of the batch by [`translate`].

use crate::tracking::{table_name, Command};

/// One part of a translated batch, run in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// SQLite SQL (one or more statements).
    Sql(String),
    /// A statement emulated by [`crate::tracking`].
    Command(Command),
}

/// Splits `sql` into SQLite SQL and emulated statements. A batch without change tracking
/// statements stays one piece (so `CREATE TRIGGER … BEGIN …; END` bodies are never split).
pub fn translate(sql: &str) -> Vec<Piece> {
    let upper = sql.to_ascii_uppercase();
    let special = ["CHANGE_TRACKING", "SP_FLUSH_CT_INTERNAL_TABLE_ON_DEMAND"];
    if !special.iter().any(|s| upper.contains(s)) || upper.contains("CREATE TRIGGER") {
        return vec![Piece::Sql(to_sqlite(sql))];
    }
    let mut pieces = Vec::new();
    let mut plain = String::new();
    for statement in split_statements(sql) {
        match command(statement) {
            Some(cmd) => {
                if !plain.trim().is_empty() {
                    pieces.push(Piece::Sql(to_sqlite(&plain)));
                }
                plain.clear();
                pieces.push(Piece::Command(cmd));
            }
            None => {
                plain.push_str(statement);
                plain.push(';');
            }
        }
    }
    if !plain.trim().is_empty() {
        pieces.push(Piece::Sql(to_sqlite(&plain)));
    }
    pieces
}

fn words(statement: &str) -> Vec<String> {
    statement
        .split(|c: char| c.is_whitespace() || c == '=' || c == ',')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The emulated statement `statement` is, if any.
fn command(statement: &str) -> Option<Command> {
    let w = words(statement);
    let up: Vec<String> = w.iter().map(|s| s.to_ascii_uppercase()).collect();
    let is = |i: usize, word: &str| up.get(i).is_some_and(|u| u == word);
    if is(0, "ALTER") && is(1, "TABLE") && is(3, "ENABLE") && is(4, "CHANGE_TRACKING") {
        return Some(Command::EnableChangeTracking(table_name(&w[2])));
    }
    if is(0, "ALTER") && is(1, "DATABASE") && up.iter().any(|u| u == "CHANGE_TRACKING") {
        return Some(Command::Nothing);
    }
    let exec = is(0, "EXEC") || is(0, "EXECUTE");
    let flush = up
        .get(1)
        .is_some_and(|p| p.ends_with("SP_FLUSH_CT_INTERNAL_TABLE_ON_DEMAND"));
    if exec && flush {
        let table = w.iter().skip(2).find(|a| !a.starts_with('@'))?;
        return Some(Command::FlushChangeTracking(table_name(table)));
    }
    None
}

/// For each byte of `sql`: true when it is code (not inside a string or a `[name]`).
fn code_mask(sql: &str) -> Vec<bool> {
    let mut mask = vec![true; sql.len()];
    let mut quote: Option<u8> = None;
    for (i, &b) in sql.as_bytes().iter().enumerate() {
        match quote {
            Some(q) => {
                mask[i] = false;
                if b == q {
                    quote = None;
                }
            }
            None if matches!(b, b'\'' | b'"') => {
                mask[i] = false;
                quote = Some(b);
            }
            None if b == b'[' => {
                mask[i] = false;
                quote = Some(b']');
            }
            None => {}
        }
    }
    mask
}

/// Statements of a batch, split at `;` outside strings and names.
fn split_statements(sql: &str) -> Vec<&str> {
    let mask = code_mask(sql);
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in sql.bytes().enumerate() {
        if b == b';' && mask[i] {
            out.push(&sql[start..i]);
            start = i + 1;
        }
    }
    out.push(&sql[start..]);
    out.retain(|s| !s.trim().is_empty());
    out
}

/// Where the keyword `word` (case-insensitive, whole word, in code) next starts at or after
/// `from`.
fn find_word(sql: &str, mask: &[bool], word: &str, from: usize) -> Option<usize> {
    let bytes = sql.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'@' || b == b'#';
    let mut i = from;
    while i + word.len() <= bytes.len() {
        if mask[i]
            && bytes[i..i + word.len()].eq_ignore_ascii_case(word.as_bytes())
            && (i == 0 || !ident(bytes[i - 1]))
            && bytes.get(i + word.len()).is_none_or(|b| !ident(*b))
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn skip_space(sql: &str, mut i: usize) -> usize {
    while sql.as_bytes().get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The index of the `)` closing the `(` at `open`.
fn closing(sql: &str, mask: &[bool], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in sql.bytes().enumerate().skip(open) {
        if !mask[i] {
            continue;
        }
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `s` split at its first comma outside parentheses and quotes.
fn split_top_comma(s: &str) -> (&str, Option<&str>) {
    let mask = code_mask(s);
    let mut depth = 0i32;
    for (i, b) in s.bytes().enumerate() {
        if !mask[i] {
            continue;
        }
        match b {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b',' if depth == 0 => return (&s[..i], Some(&s[i + 1..])),
            _ => {}
        }
    }
    (s, None)
}

/// `KEYWORD ( … )` calls: the keyword's start, the `(` and the `)`, first one found.
fn call(sql: &str, mask: &[bool], keyword: &str) -> Option<(usize, usize, usize)> {
    let mut from = 0;
    while let Some(at) = find_word(sql, mask, keyword, from) {
        let open = skip_space(sql, at + keyword.len());
        if sql.as_bytes().get(open) == Some(&b'(') {
            return closing(sql, mask, open).map(|close| (at, open, close));
        }
        from = at + keyword.len();
    }
    None
}

/// Rewrites `sql`, leaving quoted strings and names alone.
pub fn to_sqlite(sql: &str) -> String {
    let mut sql = rewrite_max(sql);
    while let Some(next) = rewrite_convert(&sql) {
        sql = next;
    }
    while let Some(next) = rewrite_changetable(&sql) {
        sql = next;
    }
    while let Some(next) = rewrite_top(&sql) {
        sql = next;
    }
    sql
}

/// `(MAX)` lengths and `N'…'` string prefixes.
fn rewrite_max(sql: &str) -> String {
    let mask = code_mask(sql);
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < sql.len() {
        if mask[i]
            && matches!(bytes[i], b'N' | b'n')
            && bytes.get(i + 1) == Some(&b'\'')
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            i += 1;
            continue;
        }
        if mask[i]
            && sql
                .get(i..i + 5)
                .is_some_and(|s| s.eq_ignore_ascii_case("(max)"))
        {
            out.push_str("(2147483647)");
            i += 5;
            continue;
        }
        let c = sql[i..].chars().next().unwrap_or_default();
        out.push(c);
        i += c.len_utf8().max(1);
    }
    out
}

fn sqlite_type(t_sql: &str) -> String {
    let t = t_sql.trim();
    let upper = t.to_ascii_uppercase();
    let base = upper.split('(').next().unwrap_or("").trim();
    match base {
        "BIGINT" | "INT" | "SMALLINT" | "TINYINT" | "BIT" | "ROWVERSION" | "TIMESTAMP" => {
            "INTEGER".into()
        }
        "BINARY" if upper.replace(' ', "") == "BINARY(8)" => "INTEGER".into(),
        "NVARCHAR" | "VARCHAR" | "NCHAR" | "CHAR" | "NTEXT" | "TEXT" => "TEXT".into(),
        "DECIMAL" | "NUMERIC" | "MONEY" => "NUMERIC".into(),
        "FLOAT" | "REAL" => "REAL".into(),
        _ => t.to_owned(),
    }
}

fn rewrite_convert(sql: &str) -> Option<String> {
    let mask = code_mask(sql);
    let (at, open, close) = call(sql, &mask, "CONVERT")?;
    let (ty, rest) = split_top_comma(&sql[open + 1..close]);
    let expr = split_top_comma(rest?).0;
    Some(format!(
        "{}CAST({} AS {}){}",
        &sql[..at],
        expr.trim(),
        sqlite_type(ty),
        &sql[close + 1..]
    ))
}

fn rewrite_changetable(sql: &str) -> Option<String> {
    let mask = code_mask(sql);
    let (at, open, close) = call(sql, &mask, "CHANGETABLE")?;
    let inner = sql[open + 1..close].trim_start();
    let inner = inner
        .get(..7)
        .filter(|k| k.eq_ignore_ascii_case("CHANGES"))
        .map(|_| &inner[7..])?;
    let (table, version) = split_top_comma(inner);
    let table = table_name(table);
    let v = format!("COALESCE({}, -1)", version?.trim());
    let ct = format!("\"__ct_{}\"", table.replace('"', "\"\""));
    Some(format!(
        "{}(SELECT c.*, CASE WHEN c.__ct_deleted = 1 THEN 'D' \
         WHEN c.SYS_CHANGE_CREATION_VERSION > {v} THEN 'I' ELSE 'U' END AS SYS_CHANGE_OPERATION, \
         NULL AS SYS_CHANGE_COLUMNS, NULL AS SYS_CHANGE_CONTEXT \
         FROM {ct} c WHERE c.SYS_CHANGE_VERSION > {v}){}",
        &sql[..at],
        &sql[close + 1..]
    ))
}

fn rewrite_top(sql: &str) -> Option<String> {
    let mask = code_mask(sql);
    let mut from = 0;
    while let Some(select) = find_word(sql, &mask, "SELECT", from) {
        from = select + 6;
        let top = skip_space(sql, from);
        if find_word(sql, &mask, "TOP", top) != Some(top) {
            continue;
        }
        let arg = skip_space(sql, top + 3);
        let (count, after) = if sql.as_bytes().get(arg) == Some(&b'(') {
            let close = closing(sql, &mask, arg)?;
            (sql[arg + 1..close].trim(), close + 1)
        } else {
            let end = sql[arg..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(sql.len(), |n| arg + n);
            (&sql[arg..end], end)
        };
        let mut depth = 0i32;
        let mut end = sql.len();
        for (i, b) in sql.bytes().enumerate().skip(after) {
            if !mask[i] {
                continue;
            }
            match b {
                b'(' => depth += 1,
                b')' if depth == 0 => {
                    end = i;
                    break;
                }
                b')' => depth -= 1,
                b';' if depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let body = sql[after..end].trim();
        return Some(format!(
            "{}{body} LIMIT {count}{}",
            &sql[..top],
            &sql[end..]
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_max_lengths_outside_strings() {
        assert_eq!(
            to_sqlite("CREATE TABLE t (a NVARCHAR(max), b VARBINARY(MAX))"),
            "CREATE TABLE t (a NVARCHAR(2147483647), b VARBINARY(2147483647))"
        );
        assert_eq!(
            to_sqlite("SELECT '(MAX)', [(max)]"),
            "SELECT '(MAX)', [(max)]"
        );
        assert_eq!(to_sqlite("SELECT 'é(MAX)' AS x"), "SELECT 'é(MAX)' AS x");
        assert_eq!(to_sqlite("SELECT (éé"), "SELECT (éé");
        assert_eq!(
            to_sqlite("SELECT N'a', n'b', 'N''c', [N'd], ON'e'"),
            "SELECT 'a', 'b', 'N''c', [N'd], ON'e'"
        );
    }

    #[test]
    fn top_becomes_limit_at_the_end_of_its_select() {
        assert_eq!(
            to_sqlite("SELECT TOP (40) t.[id] FROM [t] t WHERE t.[id] > @P1 ORDER BY t.[id]"),
            "SELECT t.[id] FROM [t] t WHERE t.[id] > @P1 ORDER BY t.[id] LIMIT 40"
        );
        assert_eq!(
            to_sqlite("SELECT top 3 a FROM t; SELECT 'TOP 1' FROM (SELECT TOP(2) b FROM u) x"),
            "SELECT a FROM t LIMIT 3; SELECT 'TOP 1' FROM (SELECT b FROM u LIMIT 2) x"
        );
        assert_eq!(to_sqlite("SELECT [top] FROM t"), "SELECT [top] FROM t");
    }

    #[test]
    fn convert_becomes_cast() {
        assert_eq!(
            to_sqlite("SELECT CONVERT(BIGINT, MIN_ACTIVE_ROWVERSION()) AS v"),
            "SELECT CAST(MIN_ACTIVE_ROWVERSION() AS INTEGER) AS v"
        );
        assert_eq!(
            to_sqlite("WHERE rv > CONVERT(BINARY(8), CONVERT(BIGINT, @P1)) AND x = CONVERT(NVARCHAR(10), y, 120)"),
            "WHERE rv > CAST(CAST(@P1 AS INTEGER) AS INTEGER) AND x = CAST(y AS TEXT)"
        );
        assert_eq!(
            to_sqlite("SELECT 'CONVERT(a, b)'"),
            "SELECT 'CONVERT(a, b)'"
        );
    }

    #[test]
    fn changetable_reads_the_change_table() {
        let sql = to_sqlite(
            "SELECT TOP (10) ct.[id] FROM CHANGETABLE(CHANGES [dbo].[tickets], @P1) AS ct ORDER BY ct.[id]",
        );
        assert!(
            sql.starts_with("SELECT ct.[id] FROM (SELECT c.*, CASE"),
            "{sql}"
        );
        assert!(
            sql.contains("FROM \"__ct_tickets\" c WHERE c.SYS_CHANGE_VERSION > COALESCE(@P1, -1))"),
            "{sql}"
        );
        assert!(sql.ends_with(") AS ct ORDER BY ct.[id] LIMIT 10"), "{sql}");
    }

    #[test]
    fn tracking_statements_are_split_out() {
        let pieces = translate(
            "ALTER DATABASE shop SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS); \
             CREATE TABLE t (id INT PRIMARY KEY); ALTER TABLE [dbo].[t] ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = OFF); \
             INSERT INTO t VALUES (1); EXEC sys.sp_flush_CT_internal_table_on_demand @TableToClean = N't'",
        );
        assert_eq!(
            pieces,
            [
                Piece::Command(Command::Nothing),
                Piece::Sql(" CREATE TABLE t (id INT PRIMARY KEY);".into()),
                Piece::Command(Command::EnableChangeTracking("t".into())),
                Piece::Sql(" INSERT INTO t VALUES (1);".into()),
                Piece::Command(Command::FlushChangeTracking("t".into())),
            ]
        );
        assert_eq!(translate("SELECT 1"), [Piece::Sql("SELECT 1".into())]);
    }
}

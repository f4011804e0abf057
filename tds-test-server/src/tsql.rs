//! The few T-SQL spellings rewritten before SQLite sees a statement. Everything else runs
//! as SQLite SQL; SQLite already takes `[bracketed]` names and `@P1` parameters.
//!
//! - `(MAX)` in a type, as in `NVARCHAR(MAX)`, becomes `(2147483647)` (SQLite wants a number).

/// Rewrites `sql`, leaving quoted strings and names alone.
pub fn to_sqlite(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if matches!(c, '\'' | '"') => quote = Some(c),
            None if c == '[' => quote = Some(']'),
            None if rest
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case("(max)")) =>
            {
                out.push_str("(2147483647)");
                rest = &rest[5..];
                continue;
            }
            None => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_sqlite;

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
    }
}

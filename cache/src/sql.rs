//! Named parameters (`:ticket_id`) in SQL, translated to a source's placeholders (`$1`, `?`,
//! `@P1`). Values are always sent as parameters; the SQL text never contains them.
//!
//! The scanner skips string literals (`'...'`, with `''` escapes), quoted identifiers (`"..."`,
//! `` `...` ``, `[...]`), comments (`-- ...`, `/* ... */`) and PostgreSQL casts (`::int`).

use crate::source::SourceKind;

/// SQL with its named parameters resolved for one dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSql {
    /// The SQL in the dialect's placeholder syntax.
    pub sql: String,
    /// For each positional placeholder, the parameter name whose value goes there.
    pub order: Vec<String>,
    /// The distinct names, in order of first use.
    pub names: Vec<String>,
}

/// A SQL text that cannot be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SqlError(String);

impl NamedSql {
    /// Translate `sql` for `kind`.
    pub fn parse(sql: &str, kind: SourceKind) -> Result<Self, SqlError> {
        let chars: Vec<char> = sql.chars().collect();
        let mut out = String::with_capacity(sql.len());
        let mut order = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match c {
                '\'' | '"' | '`' | '[' => {
                    let close = if c == '[' { ']' } else { c };
                    let start = i;
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => {
                                return Err(SqlError(format!(
                                    "unterminated {c}...{close} starting at character {start}"
                                )))
                            }
                            Some(&ch) if ch == close => {
                                if chars.get(i + 1) == Some(&close) && close != ']' {
                                    i += 2;
                                } else {
                                    i += 1;
                                    break;
                                }
                            }
                            Some(_) => i += 1,
                        }
                    }
                    out.extend(&chars[start..i]);
                }
                '-' if next == Some('-') => {
                    let start = i;
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1;
                    }
                    out.extend(&chars[start..i]);
                }
                '/' if next == Some('*') => {
                    let start = i;
                    i += 2;
                    while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                        i += 1;
                    }
                    if i >= chars.len() {
                        return Err(SqlError(format!(
                            "unterminated /* comment starting at character {start}"
                        )));
                    }
                    i += 2;
                    out.extend(&chars[start..i]);
                }
                ':' if next == Some(':') => {
                    out.push_str("::");
                    i += 2;
                }
                ':' if next.is_some_and(|n| n.is_ascii_alphabetic() || n == '_') => {
                    let start = i + 1;
                    i = start;
                    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    let name: String = chars[start..i].iter().collect();
                    let position = match names.iter().position(|n| *n == name) {
                        Some(p) => p,
                        None => {
                            names.push(name.clone());
                            names.len() - 1
                        }
                    };
                    match kind {
                        SourceKind::Postgres => out.push_str(&format!("${}", position + 1)),
                        SourceKind::MsSql => out.push_str(&format!("@P{}", position + 1)),
                        SourceKind::MySql | SourceKind::Sqlite => {
                            out.push('?');
                            order.push(name);
                        }
                    }
                }
                '?' if matches!(kind, SourceKind::MySql | SourceKind::Sqlite) => {
                    return Err(SqlError(
                        "use named parameters (:name), not `?` placeholders".into(),
                    ))
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        if matches!(kind, SourceKind::Postgres | SourceKind::MsSql) {
            order = names.clone();
        }
        Ok(NamedSql {
            sql: out,
            order,
            names,
        })
    }

    /// The positional parameter values, looking each name up with `value_of`.
    pub fn bind<'a, V: Clone + 'a>(
        &self,
        mut value_of: impl FnMut(&str) -> Option<&'a V>,
    ) -> Result<Vec<V>, SqlError> {
        self.order
            .iter()
            .map(|name| {
                value_of(name)
                    .cloned()
                    .ok_or_else(|| SqlError(format!("no value for parameter :{name}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_per_dialect() {
        let sql = "SELECT * FROM t WHERE a = :id AND b = :name OR a = :id";
        let pg = NamedSql::parse(sql, SourceKind::Postgres).unwrap();
        assert_eq!(pg.sql, "SELECT * FROM t WHERE a = $1 AND b = $2 OR a = $1");
        assert_eq!(pg.order, ["id", "name"]);
        let my = NamedSql::parse(sql, SourceKind::MySql).unwrap();
        assert_eq!(my.sql, "SELECT * FROM t WHERE a = ? AND b = ? OR a = ?");
        assert_eq!(my.order, ["id", "name", "id"]);
        assert_eq!(my.names, ["id", "name"]);
        let ms = NamedSql::parse(sql, SourceKind::MsSql).unwrap();
        assert_eq!(
            ms.sql,
            "SELECT * FROM t WHERE a = @P1 AND b = @P2 OR a = @P1"
        );
    }

    #[test]
    fn skips_literals_comments_and_casts() {
        let sql = "SELECT ':no', \"x:y\", `a:b`, [c:d] -- :c\n/* :d */ FROM t WHERE x = :x::int AND s = 'it''s :e'";
        let pg = NamedSql::parse(sql, SourceKind::Postgres).unwrap();
        assert_eq!(pg.names, ["x"]);
        assert!(pg.sql.ends_with("x = $1::int AND s = 'it''s :e'"));
        assert!(NamedSql::parse("SELECT 'open", SourceKind::Sqlite).is_err());
        assert!(NamedSql::parse("SELECT ?", SourceKind::Sqlite).is_err());
    }

    #[test]
    fn binds_in_placeholder_order() {
        let my = NamedSql::parse("SELECT :b, :a, :b", SourceKind::MySql).unwrap();
        let values = [("a", 1), ("b", 2)];
        let lookup = |n: &str| values.iter().find(|(k, _)| *k == n).map(|(_, v)| v);
        assert_eq!(my.bind(lookup).unwrap(), [2, 1, 2]);
        let missing = NamedSql::parse("SELECT :c", SourceKind::MySql).unwrap();
        assert!(missing.bind(lookup).is_err());
    }
}

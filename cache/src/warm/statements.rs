//! The SQL of each scan, per dialect, with `:name` parameters (translated by
//! [`crate::NamedSql`]). Identifiers come from configuration, are checked to be plain names and
//! quoted; values are always bound. Every page is keyset-paginated, never OFFSET.
//!
//! Extra columns the warmer needs are selected under reserved names and stripped from the row
//! before it is cached: `__warm_key` (the key column), `__warm_wm` (the watermark),
//! `__warm_op` (SQL Server Change Tracking's operation, `D` for a delete).

use crate::source::SourceKind;

/// The reserved column holding the pagination key.
pub const KEY: &str = "__warm_key";
/// The reserved column holding the watermark.
pub const WM: &str = "__warm_wm";
/// The reserved column telling a soft-deleted row (non-null and not false: delete the key).
pub const DEL: &str = "__warm_del";
/// The reserved column holding the Change Tracking operation.
pub const OP: &str = "__warm_op";

/// An identifier that is not a plain (optionally dotted) name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a plain SQL name (letters, digits, _ and . only)")]
pub struct BadIdent(pub String);

/// `name` (or `schema.name`) quoted for `kind`.
pub fn ident(kind: SourceKind, name: &str) -> Result<String, BadIdent> {
    let ok = !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !part.starts_with(|c: char| c.is_ascii_digit())
        });
    if !ok {
        return Err(BadIdent(name.to_owned()));
    }
    let quote = |p: &str| match kind {
        SourceKind::MySql => format!("`{p}`"),
        SourceKind::MsSql => format!("[{p}]"),
        SourceKind::Postgres | SourceKind::Sqlite => format!("\"{p}\""),
    };
    Ok(name.split('.').map(quote).collect::<Vec<_>>().join("."))
}

/// What a scan reads: table, pagination key, the cached columns.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The dialect.
    pub kind: SourceKind,
    /// Quoted table.
    pub table: String,
    /// Quoted key column.
    pub key: String,
    /// The select list of cached columns (`*` or quoted names), qualified by `t.`.
    pub columns: String,
    /// Rows per page.
    pub limit: u32,
    /// More select items (`, t.x AS __warm_del`), appended to every page.
    pub extra: String,
}

impl Scan {
    /// Check and quote the names.
    pub fn new(
        kind: SourceKind,
        table: &str,
        key_column: &str,
        columns: &[String],
        limit: u32,
    ) -> Result<Scan, BadIdent> {
        let columns = if columns.is_empty() {
            "t.*".to_owned()
        } else {
            columns
                .iter()
                .map(|c| ident(kind, c).map(|q| format!("t.{q}")))
                .collect::<Result<Vec<_>, _>>()?
                .join(", ")
        };
        Ok(Scan {
            kind,
            table: ident(kind, table)?,
            key: ident(kind, key_column)?,
            columns,
            limit: limit.max(1),
            extra: String::new(),
        })
    }

    fn page(&self, select: &str, from: &str, filter: &str, order: &str) -> String {
        let n = self.limit;
        let filter = if filter.is_empty() {
            String::new()
        } else {
            format!(" WHERE {filter}")
        };
        match self.kind {
            SourceKind::MsSql => {
                format!("SELECT TOP ({n}) {select} FROM {from}{filter} ORDER BY {order}")
            }
            _ => format!("SELECT {select} FROM {from}{filter} ORDER BY {order} LIMIT {n}"),
        }
    }

    /// A full-scan page: rows with key > `:last` (or from the start when `first`).
    pub fn full_page(&self, first: bool) -> String {
        let k = &self.key;
        let select = format!("{}, t.{k} AS {KEY}{}", self.columns, self.extra);
        let filter = if first {
            String::new()
        } else {
            format!("t.{k} > :last")
        };
        self.page(
            &select,
            &format!("{} t", self.table),
            &filter,
            &format!("t.{k}"),
        )
    }

    /// `COUNT(*)` of the rows a full pass from `:last` (or the start) still has to read.
    pub fn count_rest(&self, first: bool) -> String {
        let k = &self.key;
        let filter = if first {
            String::new()
        } else {
            format!(" WHERE t.{k} > :last")
        };
        format!("SELECT COUNT(*) AS n FROM {} t{filter}", self.table)
    }

    /// Largest watermark value now (taken before a full pass: rows changed during it come next).
    pub fn max_of(&self, column: &str) -> String {
        format!("SELECT MAX(t.{column}) AS v FROM {} t", self.table)
    }

    /// An `updated_at` page after the cursor (`:wm`, `:last`), or from `:wm` inclusive when
    /// `after_key` is false (just after a full pass). `cast` types the bound watermark (e.g.
    /// `timestamptz`: Postgres binds strings as text).
    pub fn updated_page(&self, wm_column: &str, cast: Option<&str>, after_key: bool) -> String {
        let k = &self.key;
        let w = format!("t.{wm_column}");
        let p = match cast {
            Some(ty) => format!("CAST(:wm AS {ty})"),
            None => ":wm".to_owned(),
        };
        let select = format!(
            "{}, t.{k} AS {KEY}, {w} AS {WM}{}",
            self.columns, self.extra
        );
        let filter = if after_key {
            format!("({w} > {p} OR ({w} = {p} AND t.{k} > :last))")
        } else {
            format!("{w} >= {p}")
        };
        self.page(
            &select,
            &format!("{} t", self.table),
            &filter,
            &format!("{w}, t.{k}"),
        )
    }

    /// SQL Server `rowversion` page: `:wm < rv < :upper` (upper = `MIN_ACTIVE_ROWVERSION()` at
    /// the start, so rows of transactions still open are not skipped), in rowversion order;
    /// with the soft-delete column when there is one.
    pub fn rowversion_page(&self, rv_column: &str) -> String {
        let k = &self.key;
        let rv = format!("t.{rv_column}");
        let select = format!(
            "{}, t.{k} AS {KEY}, CONVERT(BIGINT, {rv}) AS {WM}{}",
            self.columns, self.extra
        );
        let filter = format!(
            "{rv} > CONVERT(BINARY(8), CONVERT(BIGINT, :wm)) AND {rv} < CONVERT(BINARY(8), CONVERT(BIGINT, :upper))"
        );
        self.page(&select, &format!("{} t", self.table), &filter, &rv)
    }

    /// Change Tracking: net changes since `:since`, keyset by key (`:last`); deleted rows come
    /// with `__warm_op = 'D'` and only their key.
    pub fn changes_page(&self, first: bool) -> String {
        let k = &self.key;
        let select = format!(
            "{}, ct.{k} AS {KEY}, ct.SYS_CHANGE_OPERATION AS {OP}",
            self.columns
        );
        let from = format!(
            "CHANGETABLE(CHANGES {table}, :since) AS ct LEFT JOIN {table} t ON t.{k} = ct.{k}",
            table = self.table
        );
        let filter = if first {
            String::new()
        } else {
            format!("ct.{k} > :last")
        };
        self.page(&select, &from, &filter, &format!("ct.{k}"))
    }
}

/// SQL Server: the version to sync to next (`CHANGE_TRACKING_CURRENT_VERSION()`).
pub const CT_CURRENT: &str = "SELECT CHANGE_TRACKING_CURRENT_VERSION() AS v";

/// SQL Server: the oldest version whose changes are still kept, for table `:table`.
pub const CT_MIN_VALID: &str = "SELECT CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(:table)) AS v";

/// SQL Server: the rowversion upper bound (not `@@DBTS`, which can pass rows of open
/// transactions).
pub const MIN_ACTIVE_ROWVERSION: &str = "SELECT CONVERT(BIGINT, MIN_ACTIVE_ROWVERSION()) AS v";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NamedSql;

    fn scan(kind: SourceKind) -> Scan {
        Scan::new(kind, "dbo.tickets", "id", &[], 500).unwrap()
    }

    #[test]
    fn names_are_checked_and_quoted() {
        assert_eq!(ident(SourceKind::MsSql, "dbo.t").unwrap(), "[dbo].[t]");
        assert_eq!(ident(SourceKind::MySql, "t").unwrap(), "`t`");
        assert_eq!(ident(SourceKind::Postgres, "t_1").unwrap(), "\"t_1\"");
        for bad in ["", "a;drop", "a b", "a..b", "1a", "a\"b"] {
            assert!(ident(SourceKind::Postgres, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keyset_pages_never_offset() {
        let pg = scan(SourceKind::Postgres);
        assert_eq!(
            pg.full_page(false),
            "SELECT t.*, t.\"id\" AS __warm_key FROM \"dbo\".\"tickets\" t WHERE t.\"id\" > :last ORDER BY t.\"id\" LIMIT 500"
        );
        assert!(!pg.full_page(true).contains("WHERE"));
        let sql = NamedSql::parse(
            &pg.updated_page("\"updated_at\"", Some("timestamptz"), true),
            SourceKind::Postgres,
        )
        .unwrap();
        assert_eq!(sql.order, ["wm", "last"]); // Postgres reuses $1
        assert!(sql.sql.contains("CAST($1 AS timestamptz)"));
        let ms = scan(SourceKind::MsSql);
        assert_eq!(
            ms.full_page(false),
            "SELECT TOP (500) t.*, t.[id] AS __warm_key FROM [dbo].[tickets] t WHERE t.[id] > :last ORDER BY t.[id]"
        );
        for s in [
            pg.full_page(false),
            ms.full_page(false),
            ms.changes_page(false),
        ] {
            assert!(!s.to_uppercase().contains("OFFSET"));
        }
    }

    #[test]
    fn sql_server_incremental_statements() {
        let ms = Scan::new(
            SourceKind::MsSql,
            "dbo.tickets",
            "id",
            &["id".into(), "title".into()],
            100,
        )
        .unwrap();
        let ct = NamedSql::parse(&ms.changes_page(false), SourceKind::MsSql).unwrap();
        assert_eq!(
            ct.sql,
            "SELECT TOP (100) t.[id], t.[title], ct.[id] AS __warm_key, ct.SYS_CHANGE_OPERATION AS __warm_op \
             FROM CHANGETABLE(CHANGES [dbo].[tickets], @P1) AS ct LEFT JOIN [dbo].[tickets] t ON t.[id] = ct.[id] \
             WHERE ct.[id] > @P2 ORDER BY ct.[id]"
        );
        assert_eq!(ct.order, ["since", "last"]);
        let rv = NamedSql::parse(&ms.rowversion_page("[rv]"), SourceKind::MsSql).unwrap();
        assert_eq!(
            rv.sql,
            "SELECT TOP (100) t.[id], t.[title], t.[id] AS __warm_key, CONVERT(BIGINT, t.[rv]) AS __warm_wm \
             FROM [dbo].[tickets] t WHERE t.[rv] > CONVERT(BINARY(8), CONVERT(BIGINT, @P1)) \
             AND t.[rv] < CONVERT(BINARY(8), CONVERT(BIGINT, @P2)) ORDER BY t.[rv]"
        );
        let min = NamedSql::parse(CT_MIN_VALID, SourceKind::MsSql).unwrap();
        assert_eq!(
            min.sql,
            "SELECT CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(@P1)) AS v"
        );
        assert!(MIN_ACTIVE_ROWVERSION.contains("MIN_ACTIVE_ROWVERSION()"));
        assert!(!MIN_ACTIVE_ROWVERSION.contains("@@DBTS"));
    }
}

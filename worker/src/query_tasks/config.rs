//! `[cache]`, `[sources.<name>]` and `[[tasks]]` of the worker's TOML.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use celeriac_cache::source::SourceConfig;
use celeriac_cache::{CacheConfig, KeyTemplate, Policy};

use serde::Deserialize;

use super::toml_read::{table, PositiveInt, PositiveNumber, Required, Seconds};

/// What a query task returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultShape {
    /// The single row as an object, or `None` when there is none.
    One,
    /// All rows as a list.
    Many,
}

/// One `[[tasks]]` entry.
#[derive(Debug, Clone)]
pub struct QueryTaskConfig {
    /// The Celery task name producers send.
    pub name: String,
    /// The `[sources.<name>]` it reads from.
    pub source: String,
    /// SQL with `:name` parameters.
    pub sql: String,
    /// Parameter names in positional order (`get_ticket(7)` binds `params[0]`).
    pub params: Vec<String>,
    /// The cache key template, e.g. `ticket:{ticket_id}`, in the task's namespace (its name,
    /// or `key_namespace` when tasks share entries on purpose).
    pub key: KeyTemplate,
    /// TTLs and early refresh.
    pub policy: Policy,
    /// `"one"` or `"many"`.
    pub result: ResultShape,
}

/// Everything query tasks need, read from [`crate::config::Settings::extra`].
#[derive(Debug, Clone, Default)]
pub struct QueryConfig {
    /// The cache layout; `None` when the file has no `[cache]` table (defaults apply).
    pub cache: CacheConfig,
    /// `[cache] redis_url`, when set (else the result backend, else the broker).
    pub cache_redis_url: Option<String>,
    /// The sources, by name.
    pub sources: Vec<SourceConfig>,
    /// The tasks.
    pub tasks: Vec<QueryTaskConfig>,
}

/// `[cache]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheTable {
    redis_url: Option<String>,
    cluster: Option<bool>,
    prefix: Option<String>,
    version: Option<String>,
    l1_max_entries: Option<PositiveInt>,
    l1_max_bytes: Option<PositiveInt>,
    l1_ttl: Option<Seconds>,
    lease_ttl: Option<Seconds>,
    lease_wait: Option<Seconds>,
}

/// `[sources.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceTable {
    url: Option<String>,
    url_file: Option<String>,
    max_connections: Option<PositiveInt>,
    connect_timeout: Option<Seconds>,
    query_timeout: Option<Seconds>,
    tls: Option<String>,
    tls_ca_file: Option<PathBuf>,
}

/// One `[[tasks]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskTable {
    name: Required,
    source: Required,
    sql: Required,
    params: Option<Vec<String>>,
    key: Required,
    key_namespace: Option<String>,
    ttl: Seconds,
    negative_ttl: Option<Seconds>,
    result: Option<ResultShape>,
    xfetch_beta: Option<PositiveNumber>,
}

/// Read and check the tables. `env` supplies `CELERIAC_SOURCE_<NAME>_URL` (and `_URL_FILE`).
pub fn parse(
    extra: &BTreeMap<String, toml::Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<QueryConfig, String> {
    let mut out = QueryConfig::default();
    if let Some(value) = extra.get("cache") {
        let t: CacheTable = table("[cache]", value)?;
        let c = &mut out.cache;
        out.cache_redis_url = t.redis_url;
        if let Some(v) = t.prefix {
            c.prefix = v;
        }
        if let Some(v) = t.version {
            c.version = v;
        }
        for (name, v) in [("prefix", &c.prefix), ("version", &c.version)] {
            if v.contains(['{', '}']) {
                return Err(format!(
                    "[cache]: `{name}` must not contain braces (keys carry a Redis Cluster hash tag)"
                ));
            }
        }
        if let Some(PositiveInt(v)) = t.l1_max_entries {
            c.l1_max_entries = v;
        }
        if let Some(PositiveInt(v)) = t.l1_max_bytes {
            c.l1_max_bytes = v;
        }
        if let Some(Seconds(v)) = t.l1_ttl {
            c.l1_ttl = v;
        }
        if let Some(Seconds(v)) = t.lease_ttl {
            c.lease_ttl = v;
        }
        if let Some(Seconds(v)) = t.lease_wait {
            c.lease_wait = v;
        }
        if let Some(v) = t.cluster {
            c.cluster = v;
        }
    }
    if let Some(value) = extra.get("sources") {
        let toml::Value::Table(sources) = value else {
            return Err("[sources]: expected tables [sources.<name>]".into());
        };
        for (name, value) in sources {
            out.sources.push(source(name, value, env)?);
        }
    }
    if let Some(value) = extra.get("tasks") {
        let toml::Value::Array(items) = value else {
            return Err("`tasks` must be an array of tables ([[tasks]])".into());
        };
        let mut seen = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let task = task(i, item)?;
            if !out.sources.iter().any(|s| s.name == task.source) {
                return Err(format!(
                    "[[tasks]] `{}`: unknown source `{}` (configured: {})",
                    task.name,
                    task.source,
                    names(out.sources.iter().map(|s| s.name.as_str()))
                ));
            }
            if !seen.insert(task.name.clone()) {
                return Err(format!("[[tasks]] `{}` is declared twice", task.name));
            }
            out.tasks.push(task);
        }
    }
    Ok(out)
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The environment variable prefix of a source: `CELERIAC_SOURCE_<NAME>` (upper case, `_` for others).
pub(crate) fn source_env_prefix(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("CELERIAC_SOURCE_{upper}")
}

fn source(
    name: &str,
    value: &toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SourceConfig, String> {
    let t: SourceTable = table(&format!("[sources.{name}]"), value)?;
    let prefix = source_env_prefix(name);
    let read_file = |path: &str, origin: &str| {
        std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("[sources.{name}]: cannot read {origin} {path}: {e}"))
    };
    let url = if let Some(url) = env(&format!("{prefix}_URL")) {
        url
    } else if let Some(path) = env(&format!("{prefix}_URL_FILE")) {
        read_file(&path, &format!("{prefix}_URL_FILE"))?
    } else if let Some(url) = t.url {
        url
    } else if let Some(path) = t.url_file {
        read_file(&path, "url_file")?
    } else {
        return Err(format!(
            "[sources.{name}]: no url (set `url`, `url_file`, {prefix}_URL or {prefix}_URL_FILE)"
        ));
    };
    let mut config = SourceConfig::new(name, url);
    if let Some(PositiveInt(v)) = t.max_connections {
        config.max_connections = u32::try_from(v)
            .map_err(|_| format!("[sources.{name}]: max_connections is too large"))?;
    }
    if let Some(Seconds(v)) = t.connect_timeout {
        config.connect_timeout = v;
    }
    if let Some(Seconds(v)) = t.query_timeout {
        config.query_timeout = v;
    }
    if let Some(v) = t.tls {
        config.tls = v
            .parse()
            .map_err(|e| format!("[sources.{name}]: `tls` {e}"))?;
    }
    config.tls_ca_file = t.tls_ca_file;
    Ok(config)
}

fn task(index: usize, value: &toml::Value) -> Result<QueryTaskConfig, String> {
    let t: TaskTable = table(&format!("[[tasks]] #{}", index + 1), value)?;
    let name = t.name.0;
    let place = format!("[[tasks]] `{name}`");
    let key_text = t.key.0;
    let namespace = t.key_namespace.unwrap_or_else(|| name.clone());
    if namespace.is_empty() {
        return Err(format!("{place}: `key_namespace` must not be empty"));
    }
    let key = KeyTemplate::parse(&key_text)
        .map_err(|e| format!("{place}: {e}"))?
        .in_namespace(namespace);
    let params = t.params.unwrap_or_default();
    let mut unique = BTreeSet::new();
    for p in &params {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{place}: parameter name `{p}` must be letters, digits and _"
            ));
        }
        if !unique.insert(p.as_str()) {
            return Err(format!("{place}: parameter `{p}` is listed twice"));
        }
    }
    for field in key.fields() {
        if !unique.contains(field) {
            return Err(format!(
                "{place}: key field {{{field}}} is not one of params [{}]",
                params.join(", ")
            ));
        }
    }
    let fields: BTreeSet<&str> = key.fields().collect();
    for p in &params {
        if !fields.contains(p.as_str()) {
            return Err(format!(
                "{place}: parameter `{p}` is missing from the key template `{key_text}`: calls that differ in it would share one cache entry"
            ));
        }
    }
    let Seconds(ttl) = t.ttl;
    let negative_ttl = t
        .negative_ttl
        .map_or(ttl.min(std::time::Duration::from_secs(30)), |s| s.0);
    let source = t.source.0;
    Ok(QueryTaskConfig {
        policy: Policy {
            ttl,
            negative_ttl,
            xfetch_beta: t.xfetch_beta.map(|b| b.0),
            source: source.clone(),
        },
        source,
        sql: t.sql.0,
        params,
        key,
        result: t.result.unwrap_or(ResultShape::One),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_text(text: &str) -> Result<QueryConfig, String> {
        let table: BTreeMap<String, toml::Value> = toml::from_str(text).unwrap();
        parse(&table, &|_| None)
    }

    const TWO_TASKS: &str = r#"
[sources.main]
url = "sqlite::memory:"

[[tasks]]
name = "a.get"
source = "main"
sql = "SELECT 1 WHERE :id = 1"
params = ["id"]
key = "item:{id}"
ttl = 60

[[tasks]]
name = "b.get"
source = "main"
sql = "SELECT 2 WHERE :id = 1"
params = ["id"]
key = "item:{id}"
ttl = 60
"#;

    fn keys(config: &QueryConfig) -> Vec<String> {
        let values = json!({"id": 7});
        config
            .tasks
            .iter()
            .map(|t| t.key.render(values.as_object().unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn each_task_keys_in_its_own_namespace() {
        let config = parse_text(TWO_TASKS).unwrap();
        assert_eq!(keys(&config), ["a.get:item:(7)", "b.get:item:(7)"]);
    }

    #[test]
    fn tasks_share_entries_only_through_a_named_namespace() {
        let shared = TWO_TASKS.replace("ttl = 60", "ttl = 60\nkey_namespace = \"items\"");
        let config = parse_text(&shared).unwrap();
        assert_eq!(keys(&config), ["items:item:(7)", "items:item:(7)"]);
        let empty = TWO_TASKS.replacen("ttl = 60", "ttl = 60\nkey_namespace = \"\"", 1);
        assert!(parse_text(&empty)
            .unwrap_err()
            .contains("`key_namespace` must not be empty"));
    }

    #[test]
    fn cluster_mode_is_a_boolean() {
        assert!(parse_text("[cache]\ncluster = true").unwrap().cache.cluster);
        assert!(!parse_text("").unwrap().cache.cluster);
        let err = parse_text("[cache]\ncluster = \"yes\"").unwrap_err();
        assert!(err.starts_with("[cache]: `cluster`: invalid type"), "{err}");
    }

    #[test]
    fn each_table_refuses_unknown_keys_and_names_missing_ones() {
        let typo = TWO_TASKS.replacen("ttl = 60", "tll = 60", 1);
        let err = parse_text(&typo).unwrap_err();
        assert!(
            err.starts_with("[[tasks]] #1: unknown field `tll`, expected one of `name`"),
            "{err}"
        );
        let source = TWO_TASKS.replacen("url = ", "max_conections = 4\nurl = ", 1);
        let err = parse_text(&source).unwrap_err();
        assert!(
            err.starts_with("[sources.main]: unknown field `max_conections`"),
            "{err}"
        );
        let err = parse_text("[cache]\nl1_tll = 5").unwrap_err();
        assert!(err.starts_with("[cache]: unknown field `l1_tll`"), "{err}");
        let no_ttl = TWO_TASKS.replacen("ttl = 60", "", 1);
        assert_eq!(
            parse_text(&no_ttl).unwrap_err(),
            "[[tasks]] #1: missing field `ttl`"
        );
        let many = TWO_TASKS.replacen("ttl = 60", "ttl = 60\nresult = \"all\"", 1);
        let err = parse_text(&many).unwrap_err();
        assert!(
            err.starts_with("[[tasks]] #1: `result`: unknown variant `all`"),
            "{err}"
        );
    }

    #[test]
    fn braces_in_the_prefix_are_refused() {
        let err = parse_text("[cache]\nprefix = \"app:{x}:\"").unwrap_err();
        assert!(err.contains("`prefix` must not contain braces"), "{err}");
    }
}

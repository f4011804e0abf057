//! `[cache]`, `[sources.<name>]` and `[[tasks]]` of the worker's TOML.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use celeriac_cache::source::SourceConfig;
use celeriac_cache::{CacheConfig, KeyTemplate, Policy};

use super::toml_read::Section;

/// What a query task returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

const CACHE_KEYS: &[&str] = &[
    "redis_url",
    "cluster",
    "prefix",
    "version",
    "l1_max_entries",
    "l1_max_bytes",
    "l1_ttl",
    "lease_ttl",
    "lease_wait",
];
const SOURCE_KEYS: &[&str] = &[
    "url",
    "url_file",
    "max_connections",
    "connect_timeout",
    "query_timeout",
    "tls",
    "tls_ca_file",
];
const TASK_KEYS: &[&str] = &[
    "name",
    "source",
    "sql",
    "params",
    "key",
    "key_namespace",
    "ttl",
    "negative_ttl",
    "result",
    "xfetch_beta",
];

/// Read and check the tables. `env` supplies `CELERIAC_SOURCE_<NAME>_URL` (and `_URL_FILE`).
pub fn parse(
    extra: &BTreeMap<String, toml::Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<QueryConfig, String> {
    let mut out = QueryConfig::default();
    if let Some(value) = extra.get("cache") {
        let s = Section::new("[cache]", value)?;
        s.only(CACHE_KEYS)?;
        let c = &mut out.cache;
        out.cache_redis_url = s.string("redis_url")?;
        if let Some(v) = s.string("prefix")? {
            c.prefix = v;
        }
        if let Some(v) = s.string("version")? {
            c.version = v;
        }
        for (name, v) in [("prefix", &c.prefix), ("version", &c.version)] {
            if v.contains(['{', '}']) {
                return Err(format!(
                    "[cache]: `{name}` must not contain braces (keys carry a Redis Cluster hash tag)"
                ));
            }
        }
        if let Some(v) = s.integer("l1_max_entries")? {
            c.l1_max_entries = v;
        }
        if let Some(v) = s.integer("l1_max_bytes")? {
            c.l1_max_bytes = v;
        }
        if let Some(v) = s.seconds("l1_ttl")? {
            c.l1_ttl = v;
        }
        if let Some(v) = s.seconds("lease_ttl")? {
            c.lease_ttl = v;
        }
        if let Some(v) = s.seconds("lease_wait")? {
            c.lease_wait = v;
        }
        if let Some(v) = s.boolean("cluster")? {
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
pub fn source_env_prefix(name: &str) -> String {
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
    let s = Section::new(format!("[sources.{name}]"), value)?;
    s.only(SOURCE_KEYS)?;
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
    } else if let Some(url) = s.string("url")? {
        url
    } else if let Some(path) = s.string("url_file")? {
        read_file(&path, "url_file")?
    } else {
        return Err(format!(
            "[sources.{name}]: no url (set `url`, `url_file`, {prefix}_URL or {prefix}_URL_FILE)"
        ));
    };
    let mut config = SourceConfig::new(name, url);
    if let Some(v) = s.integer("max_connections")? {
        config.max_connections = u32::try_from(v)
            .map_err(|_| format!("[sources.{name}]: max_connections is too large"))?;
    }
    if let Some(v) = s.seconds("connect_timeout")? {
        config.connect_timeout = v;
    }
    if let Some(v) = s.seconds("query_timeout")? {
        config.query_timeout = v;
    }
    if let Some(v) = s.string("tls")? {
        config.tls = v
            .parse()
            .map_err(|e| format!("[sources.{name}]: `tls` {e}"))?;
    }
    config.tls_ca_file = s.string("tls_ca_file")?.map(PathBuf::from);
    Ok(config)
}

fn task(index: usize, value: &toml::Value) -> Result<QueryTaskConfig, String> {
    let s = Section::new(format!("[[tasks]] #{}", index + 1), value)?;
    let name = s.required_string("name")?;
    let s = Section::new(format!("[[tasks]] `{name}`"), value)?;
    s.only(TASK_KEYS)?;
    let key_text = s.required_string("key")?;
    let namespace = s.string("key_namespace")?.unwrap_or_else(|| name.clone());
    if namespace.is_empty() {
        return Err(format!("{}: `key_namespace` must not be empty", s.place));
    }
    let key = KeyTemplate::parse(&key_text)
        .map_err(|e| format!("{}: {e}", s.place))?
        .in_namespace(namespace);
    let params = s.strings("params")?.unwrap_or_default();
    let mut unique = BTreeSet::new();
    for p in &params {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{}: parameter name `{p}` must be letters, digits and _",
                s.place
            ));
        }
        if !unique.insert(p.as_str()) {
            return Err(format!("{}: parameter `{p}` is listed twice", s.place));
        }
    }
    for field in key.fields() {
        if !unique.contains(field) {
            return Err(format!(
                "{}: key field {{{field}}} is not one of params [{}]",
                s.place,
                params.join(", ")
            ));
        }
    }
    let fields: BTreeSet<&str> = key.fields().collect();
    for p in &params {
        if !fields.contains(p.as_str()) {
            return Err(format!(
                "{}: parameter `{p}` is missing from the key template `{key_text}`: calls that differ in it would share one cache entry",
                s.place
            ));
        }
    }
    let result = match s.string("result")?.as_deref() {
        None | Some("one") => ResultShape::One,
        Some("many") => ResultShape::Many,
        Some(other) => {
            return Err(format!(
                "{}: `result` must be \"one\" or \"many\", not \"{other}\"",
                s.place
            ))
        }
    };
    let ttl = s
        .seconds("ttl")?
        .ok_or_else(|| format!("{}: `ttl` is required", s.place))?;
    let negative_ttl = s
        .seconds("negative_ttl")?
        .unwrap_or(ttl.min(std::time::Duration::from_secs(30)));
    let source = s.required_string("source")?;
    Ok(QueryTaskConfig {
        policy: Policy {
            ttl,
            negative_ttl,
            xfetch_beta: s.float("xfetch_beta")?,
            source: source.clone(),
        },
        source,
        sql: s.required_string("sql")?,
        params,
        key,
        result,
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
        assert!(err.contains("`cluster` must be true or false"), "{err}");
    }

    #[test]
    fn braces_in_the_prefix_are_refused() {
        let err = parse_text("[cache]\nprefix = \"app:{x}:\"").unwrap_err();
        assert!(err.contains("`prefix` must not contain braces"), "{err}");
    }
}

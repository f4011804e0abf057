//! Declarative query tasks: `[[tasks]]` in the worker's TOML become Celery tasks that read one
//! SQL query through the read-through cache (`celeriac-cache`).
//!
//! ```toml
//! [sources.main]
//! url = "postgres://app@db/app"            # or CELERIAC_SOURCE_MAIN_URL(_FILE)
//!
//! [[tasks]]
//! name = "tickets.get_ticket"              # the Celery task name
//! source = "main"
//! sql = "SELECT * FROM tickets WHERE id = :ticket_id"
//! params = ["ticket_id"]                   # positional order; kwargs by name
//! key = "ticket:{ticket_id}"
//! ttl = "5m"
//! negative_ttl = "30s"
//! result = "one"                           # or "many"
//! ```
//!
//! Everything is checked before the worker consumes; bad call arguments fail the task with
//! Python's `TypeError`/`ValueError`. Rust tasks reach the same cache and sources through
//! [`crate::TaskContext::data`].

pub(crate) mod config;
pub(crate) mod handler;
pub(crate) mod toml_read;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use celeriac_cache::{Cache, NamedSql, Sources};

pub(crate) use config::{QueryConfig, ResultShape};
pub(crate) use handler::QueryTask;

use crate::config::Settings;
use crate::task_api::data::DataAccess;
use crate::task_api::registry::Registry;
use crate::task_api::TaskOptions;

/// Check the `[cache]`, `[sources]` and `[[tasks]]` tables and the SQL of every task, without
/// connecting to anything. `env` looks up environment variables.
pub(crate) fn check(
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(QueryConfig, Sources, Vec<QueryTask>)> {
    let config = config::parse(&settings.extra, env).map_err(anyhow::Error::msg)?;
    let sources = Sources::from_configs(&config.sources).context("configure sources")?;
    let mut tasks = Vec::new();
    for task in &config.tasks {
        let source = sources.get(&task.source).with_context(|| {
            format!(
                "[[tasks]] `{}`: unknown source `{}`",
                task.name, task.source
            )
        })?;
        let sql = NamedSql::parse(&task.sql, source.kind())
            .map_err(|e| anyhow::anyhow!("[[tasks]] `{}`: sql: {e}", task.name))?;
        for name in &sql.names {
            if !task.params.contains(name) {
                anyhow::bail!(
                    "[[tasks]] `{}`: the sql uses :{name}, which is not in params [{}]",
                    task.name,
                    task.params.join(", ")
                );
            }
        }
        for name in &task.params {
            if !sql.names.contains(name) {
                anyhow::bail!(
                    "[[tasks]] `{}`: parameter `{name}` is not used in the sql",
                    task.name
                );
            }
        }
        tasks.push(QueryTask::new(task.clone(), sql, Arc::clone(source)));
    }
    Ok((config, sources, tasks))
}

/// Build the cache and sources from `settings`, register every `[[tasks]]` entry in `registry`
/// and return the shared [`DataAccess`] (`None` when the file declares no sources or tasks).
pub(crate) async fn install(
    settings: &Settings,
    registry: &mut Registry,
) -> anyhow::Result<Option<Arc<DataAccess>>> {
    let env = |name: &str| std::env::var(name).ok();
    let (config, sources, tasks) = check(settings, &env)?;
    if config.sources.is_empty() && tasks.is_empty() && !settings.extra.contains_key("cache") {
        return Ok(None);
    }
    let (redis_url, file) = match &config.cache_redis_url {
        Some(url) => (url.clone(), None),
        None => {
            let url = settings
                .result_backend
                .as_ref()
                .unwrap_or(&settings.broker_url);
            let first = url.expose().split(';').next().unwrap_or_default();
            (first.to_owned(), url.file())
        }
    };
    crate::connection::install_crypto_provider();
    let mut url =
        celeriac_broker_bridge::redis_url::parse(&redis_url).context("[cache] redis_url")?;
    // A URL from `CELERY_RESULT_BACKEND_FILE` / `CELERY_BROKER_URL_FILE`: rotated credentials
    // reach the cache's connections too.
    if let Some(path) = file {
        url = url.with_credentials_file(path, celeriac_broker_bridge::redis_url::POLL_INTERVAL);
    }
    let credentials = url
        .credentials_file()
        .map(|file| Arc::new(file.clone()) as celeriac_cache::Credentials);
    let client = url.client().context("[cache] redis_url")?;
    let cache = Cache::with_credentials(config.cache.clone(), Some(client), credentials);
    for source in &config.sources {
        cache.declare_source(&source.name);
    }
    if !cache.wait_subscribed(Duration::from_secs(2)).await {
        tracing::warn!("cache: not yet subscribed to invalidations; L1 staleness is bounded by l1_ttl until it is");
    }
    let data = Arc::new(DataAccess { cache, sources });
    for task in tasks {
        let name = task.name().to_owned();
        tracing::info!(task = %name, "query task registered");
        registry.insert(
            name,
            Arc::new(task.with_data(Arc::clone(&data))),
            TaskOptions::default(),
        );
    }
    registry.set_data(Arc::clone(&data));
    Ok(Some(data))
}

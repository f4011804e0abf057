//! Celery's own integration suite (`t/integration/` of Celery 5.7.0) against celeriac: the
//! tasks of its `tasks.py` ported to Rust, served by the `celeriac-integration-worker` binary
//! that `tests/celery-integration/run` starts.

pub mod py;
pub mod tasks;
pub mod tasks_control;
pub mod tasks_nested;
pub mod tasks_replace;
pub mod tasks_request;

use std::sync::OnceLock;
use std::time::Duration;

use celeriac_worker::{TaskError, WorkerBuilder};

/// Registers every ported task.
pub fn register(builder: WorkerBuilder) -> WorkerBuilder {
    let builder = tasks::register(builder);
    let builder = tasks_control::register(builder);
    let builder = tasks_nested::register(builder);
    let builder = tasks_request::register(builder);
    tasks_replace::register(builder)
}

static REDIS: OnceLock<redis::Client> = OnceLock::new();

/// The Redis the tasks write to, as `tasks.get_redis_connection()` finds it: `REDIS_HOST`
/// (default `localhost`) and `REDIS_PORT` (default 6379), database 0.
pub fn redis_client() -> anyhow::Result<&'static redis::Client> {
    if let Some(client) = REDIS.get() {
        return Ok(client);
    }
    let host = std::env::var("REDIS_HOST").unwrap_or_else(|_| "localhost".into());
    let port = std::env::var("REDIS_PORT").unwrap_or_else(|_| "6379".into());
    let client = redis::Client::open(format!("redis://{host}:{port}/0"))?;
    Ok(REDIS.get_or_init(|| client))
}

/// A connection to that Redis, with timeouts meant for a loaded test machine.
pub async fn redis_conn() -> Result<redis::aio::MultiplexedConnection, TaskError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(30)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    let conn = redis_client()?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(anyhow::Error::from)?;
    Ok(conn)
}

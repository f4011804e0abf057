//! The cache's Redis connection: made on first use, remade after failures, skipped for a
//! moment after a failed connect so a dead Redis costs the read path nothing.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

/// A lazily connected, self-healing Redis connection.
pub(crate) struct RedisConn {
    client: redis::Client,
    timeout: Duration,
    state: Mutex<State>,
}

struct State {
    conn: Option<ConnectionManager>,
    retry_after: Option<Instant>,
}

const RETRY_PAUSE: Duration = Duration::from_millis(500);

impl RedisConn {
    pub(crate) fn new(client: redis::Client, timeout: Duration) -> Self {
        RedisConn {
            client,
            timeout,
            state: Mutex::new(State {
                conn: None,
                retry_after: None,
            }),
        }
    }

    /// A connection, or `None` while Redis is unreachable.
    pub(crate) async fn get(&self) -> Option<ConnectionManager> {
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            return Some(conn.clone());
        }
        if state.retry_after.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let made = tokio::time::timeout(
            self.timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await;
        match made {
            Ok(Ok(conn)) => {
                state.conn = Some(conn.clone());
                state.retry_after = None;
                Some(conn)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cache: Redis unreachable; reading through to the source");
                state.retry_after = Some(Instant::now() + RETRY_PAUSE);
                None
            }
            Err(_) => {
                tracing::warn!("cache: Redis connect timed out; reading through to the source");
                state.retry_after = Some(Instant::now() + RETRY_PAUSE);
                None
            }
        }
    }
}

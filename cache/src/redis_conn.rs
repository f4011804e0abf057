//! The cache's Redis connection: made on first use, remade after failures, skipped for a
//! moment after a failed connect so a dead Redis costs the read path nothing.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;

use crate::credentials::{Credentials, Shared};

/// A connection to one Redis node, or to a Redis Cluster (slots, MOVED/ASK and topology
/// changes handled by the redis crate's cluster client).
#[derive(Clone)]
pub enum L2Conn {
    /// One node (or a replicated primary).
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for L2Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            L2Conn::Single(c) => c.req_packed_command(cmd),
            L2Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            L2Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            L2Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            L2Conn::Single(c) => c.get_db(),
            L2Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A lazily connected, self-healing Redis connection.
pub(crate) struct RedisConn {
    client: redis::Client,
    credentials: Option<Credentials>,
    cluster: bool,
    timeout: Duration,
    state: Mutex<State>,
}

struct State {
    conn: Option<L2Conn>,
    retry_after: Option<Instant>,
}

const RETRY_PAUSE: Duration = Duration::from_millis(500);

impl RedisConn {
    pub(crate) fn new(
        client: redis::Client,
        credentials: Option<Credentials>,
        cluster: bool,
        timeout: Duration,
    ) -> Self {
        RedisConn {
            client,
            credentials,
            cluster,
            timeout,
            state: Mutex::new(State {
                conn: None,
                retry_after: None,
            }),
        }
    }

    /// A connection, or `None` while Redis is unreachable.
    pub(crate) async fn get(&self) -> Option<L2Conn> {
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            return Some(conn.clone());
        }
        if state.retry_after.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        let made = tokio::time::timeout(self.timeout * 2, self.connect()).await;
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

impl RedisConn {
    async fn connect(&self) -> redis::RedisResult<L2Conn> {
        if self.cluster {
            let mut builder =
                ClusterClientBuilder::new(vec![self.client.get_connection_info().clone()])
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .retries(2);
            if let Some(credentials) = &self.credentials {
                builder = builder.set_credentials_provider(Shared(credentials.clone()));
            }
            let client = builder.build()?;
            return client.get_async_connection().await.map(L2Conn::Cluster);
        }
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        if let Some(credentials) = &self.credentials {
            config = config.set_credentials_provider(Shared(credentials.clone()));
        }
        ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map(L2Conn::Single)
    }
}

//! The broker's shared connection, bounded by the visibility timeout.
//!
//! A held message stays held only while its `unacked_index` score is refreshed more often than
//! the visibility timeout; past it, any worker's sweep (ours or a Python worker's) requeues it,
//! and the run is repeated. So no broker command may wait longer than a fraction of the
//! visibility timeout ([`response_timeout`]), and a connection whose reply timed out is replaced:
//! `redis`'s `ConnectionManager` reconnects only when the socket reports an error, so a
//! connection that went silent (a peer or middlebox dropping it without a reset) would otherwise
//! time out every command — refreshes and acks included — until the kernel gives up on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::FutureExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// The longest a broker command waits for its reply.
pub const RESPONSE_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// The shortest: below it a busy server's slow reply would count as a dead connection.
pub const RESPONSE_TIMEOUT_MIN: Duration = Duration::from_secs(1);

/// A quarter of the visibility timeout, within 1–60 s: a command stuck on a silent connection
/// fails, and the refresh it held up is retried on a new connection, well before any sweep
/// would requeue the messages it keeps.
pub fn response_timeout(visibility_timeout: Duration) -> Duration {
    (visibility_timeout / 4).clamp(RESPONSE_TIMEOUT_MIN, RESPONSE_TIMEOUT_MAX)
}

/// A connection of its own for blocking commands (`BLMOVE`, `BRPOP`): commands on one
/// connection are answered in order, so a blocking command on the shared connection would hold
/// up every fetch, ack and publish behind it. Its replies may take up to `response_timeout`.
pub(crate) async fn dedicated(
    url: &crate::redis_url::RedisUrl,
    response_timeout: Duration,
) -> RedisResult<redis::aio::MultiplexedConnection> {
    let config = url.connection_config(
        redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(response_timeout)),
    );
    url.client()?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// The manager in use and its generation (bumped at each replacement).
struct Current {
    generation: u64,
    manager: ConnectionManager,
}

pub(crate) struct Slot {
    current: RwLock<Current>,
    client: redis::Client,
    config: ConnectionManagerConfig,
    replacing: AtomicBool,
}

impl Slot {
    /// Connect once (errors are returned) and keep the manager for [`Slot::conn`].
    pub(crate) async fn connect(
        url: &crate::redis_url::RedisUrl,
        response_timeout: Duration,
    ) -> RedisResult<Arc<Slot>> {
        let client = url.client()?;
        let config = url.manager_config(
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(10)))
                .set_response_timeout(Some(response_timeout))
                .set_number_of_retries(3)
                .set_max_delay(Duration::from_secs(2)),
        );
        let manager = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
        Ok(Arc::new(Slot {
            current: RwLock::new(Current {
                generation: 0,
                manager,
            }),
            client,
            config,
            replacing: AtomicBool::new(false),
        }))
    }

    /// A handle on the current connection.
    pub(crate) fn conn(self: &Arc<Slot>) -> Conn {
        let current = self.current.read().expect("connection lock");
        Conn {
            manager: current.manager.clone(),
            generation: current.generation,
            slot: self.clone(),
        }
    }

    /// A reply on generation `generation` timed out: connect a new manager in the background
    /// and use it from then on (once per generation; commands meanwhile use the old one).
    fn replace(self: &Arc<Slot>, generation: u64) {
        if self.current.read().expect("connection lock").generation != generation
            || self.replacing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let slot = self.clone();
        tokio::spawn(async move {
            match ConnectionManager::new_with_config(slot.client.clone(), slot.config.clone()).await
            {
                Ok(manager) => {
                    let mut current = slot.current.write().expect("connection lock");
                    if current.generation == generation {
                        current.generation += 1;
                        current.manager = manager;
                        tracing::warn!(
                            "a broker reply timed out; the connection was replaced by a new one"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not replace a broker connection whose reply timed out; the next timeout tries again")
                }
            }
            slot.replacing.store(false, Ordering::Release);
        });
    }
}

/// One handle on the broker connection; a reply that times out replaces the connection.
#[derive(Clone)]
pub(crate) struct Conn {
    manager: ConnectionManager,
    generation: u64,
    slot: Arc<Slot>,
}

impl Conn {
    fn after<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result {
            if e.is_timeout() {
                self.slot.replace(self.generation);
            }
        }
        result
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            let result = self.manager.req_packed_command(cmd).await;
            self.after(result)
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            let result = self
                .manager
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.after(result)
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        self.manager.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_timeout_is_a_quarter_of_the_visibility_timeout_clamped() {
        assert_eq!(
            response_timeout(Duration::from_secs(3600)),
            RESPONSE_TIMEOUT_MAX
        );
        assert_eq!(
            response_timeout(Duration::from_secs(20)),
            Duration::from_secs(5)
        );
        assert_eq!(
            response_timeout(Duration::from_secs(2)),
            RESPONSE_TIMEOUT_MIN
        );
    }
}

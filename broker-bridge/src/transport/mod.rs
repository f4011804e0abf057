//! kombu's Redis transport: queues as lists, priority sub-lists, bindings, ack emulation
//! (`unacked`/`unacked_index`), restore and the visibility-timeout sweep — interoperable with
//! Python Celery workers and producers sharing the same Redis database.
//!
//! Everything goes through [`Broker`], a cheap-to-clone handle on one auto-reconnecting
//! connection. Fetching is non-blocking and atomic (one Lua script pops and records in
//! `unacked`), so a worker killed at any instant loses nothing; see the crate README. An idle
//! worker waits for arrivals with [`ArrivalWait`] (a `BLMOVE` that leaves the message in place)
//! and then fetches with the same script.

mod ack;
mod bindings;
mod conn;
mod depth;
mod error;
mod fanout;
mod fetch;
mod keys;
mod options;
mod publish;
mod rate;
mod restore;
mod revoked_store;
mod scripts;
mod topic;
mod wait;

use std::sync::{Arc, Mutex};

pub use bindings::{Binding, ListWaiter};
pub use conn::{response_timeout, RESPONSE_TIMEOUT_MAX, RESPONSE_TIMEOUT_MIN};
pub use depth::Depths;
pub use error::{Result, TransportError};
pub use fanout::{FanoutMessage, FanoutSubscription};
pub use keys::{envelope_priority, message_priority, small_int_priority, Keys};
pub use options::{QueueOrder, TransportOptions};
pub use publish::Published;
pub use wait::{ArrivalWait, Woken, BLOCK_TIMEOUT};

use conn::{Conn, Slot};
use scripts::Scripts;

/// One message taken from a queue and now held in `unacked` under its delivery tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The queue element exactly as it was in the list (a kombu envelope, JSON).
    pub raw: Vec<u8>,
    /// The logical queue it came from (no prefix, no priority suffix).
    pub queue: String,
    /// `properties.delivery_tag`: the key of its `unacked` entry.
    pub delivery_tag: String,
    /// `properties.delivery_info.exchange` (`""` for Celery tasks).
    pub exchange: String,
    /// `properties.delivery_info.routing_key` (the queue for the default exchange).
    pub routing_key: String,
}

impl Delivery {
    /// The message priority as kombu reads it (`properties.priority` clamped to 0–9), read from
    /// [`Delivery::raw`] when asked: the fetch does not spend a parse on it.
    pub fn priority(&self) -> u8 {
        fetch::priority_of(&self.raw)
    }
}

/// An element that was not a kombu envelope and was moved, intact, to the dead-letter list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLettered {
    /// The queue it was found in.
    pub queue: String,
    /// Why (`not JSON`, `not a JSON object`, `no properties object`, `no delivery_tag`).
    pub reason: String,
}

/// What one [`Broker::fetch`] took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Messages now held by the caller, in kombu's delivery order.
    pub deliveries: Vec<Delivery>,
    /// Bad elements moved to the dead-letter list.
    pub dead_lettered: Vec<DeadLettered>,
}

impl Fetched {
    /// Whether nothing was taken at all.
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.dead_lettered.is_empty()
    }
}

/// A handle on the broker: cheap to clone, shared by every task of a worker.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Arc<Slot>,
    /// For the dedicated connections of fanout subscribers and arrival watchers.
    url: crate::redis_url::RedisUrl,
    /// The database number (part of fanout channel names).
    db: i64,
    opts: TransportOptions,
    keys: Keys,
    scripts: Scripts,
    /// Round-robin queue order, kept between fetches like kombu's `round_robin_cycle`.
    cycle: Mutex<Vec<String>>,
}

impl Broker {
    /// Connect to the broker at `url` (any form [`crate::redis_url::parse`] accepts; TLS files
    /// named in a `rediss://` URL are loaded).
    ///
    /// The connection reconnects by itself: after Redis restarts, the call in flight fails with
    /// [`TransportError::Redis`] and later calls work again.
    pub async fn connect(url: &str, opts: TransportOptions) -> Result<Broker> {
        let mut parsed = crate::redis_url::parse(url)?;
        if let Some(path) = &opts.credentials_file {
            parsed = parsed.with_credentials_file(path, crate::redis_url::POLL_INTERVAL);
        }
        let db = parsed.info.redis_settings().db();
        let conn = Slot::connect(&parsed, response_timeout(opts.visibility_timeout)).await?;
        Ok(Broker {
            inner: Arc::new(Inner {
                conn,
                url: parsed,
                db,
                keys: Keys::new(&opts),
                opts,
                scripts: Scripts::new(),
                cycle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The options this broker was made with.
    pub fn options(&self) -> &TransportOptions {
        &self.inner.opts
    }

    /// The key names in use (prefix applied).
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    fn conn(&self) -> Conn {
        self.inner.conn.conn()
    }

    /// The Redis server clock, as `<seconds>.<microseconds>` text and as seconds.
    async fn server_time(&self) -> Result<(String, f64)> {
        let text: String = self
            .inner
            .scripts
            .server_time
            .prepare_invoke()
            .invoke_async(&mut self.conn())
            .await?;
        let secs = text
            .parse::<f64>()
            .map_err(|_| TransportError::Reply(format!("server time `{text}`")))?;
        Ok((text, secs))
    }
}

//! Waiting for a message to arrive without taking it, so an idle worker wakes at once instead of
//! polling, while the fetch itself stays the one atomic script.
//!
//! One watcher per consumed list (every priority list of every queue), each on its own
//! connection, issues `BLMOVE list list RIGHT RIGHT <timeout>`: it returns as soon as the list is
//! non-empty and puts the element back where it was in the same atomic step, so nothing is ever
//! held outside Redis, the order of the list is unchanged, and a Python worker blocked in `BRPOP`
//! on the same list is served as before. Watchers only block while the fetch loop waits (they are
//! *armed* by [`ArrivalWait::wait`]); each reports at most one arrival per wait, so a busy worker
//! costs them nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::Broker;

/// How long one `BLMOVE` blocks before it is issued again (an idle worker's only traffic).
pub const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before a watcher whose connection failed connects again (doubling, up to 5 s).
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Why [`ArrivalWait::wait`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Woken {
    /// A watched list became non-empty (or was non-empty already): fetch now.
    Arrived,
    /// Nothing arrived within the wait's limit.
    TimedOut,
    /// Some watcher lost its connection (Redis restarting, failover, a cut connection): poll
    /// meanwhile; the watchers connect again by themselves. The server may be a new one.
    Reconnecting,
    /// Some watcher has not connected yet (it was just started, for a new queue or after
    /// [`ArrivalWait::reset`]) and none lost its connection: poll meanwhile.
    Connecting,
    /// Redis refused the blocking command (an ACL user without `+blmove`, a Redis before 6.2):
    /// poll instead. Logged once when first seen.
    Unavailable(String),
}

/// The arming state watchers follow: they block only while `on`, at most once per `generation`.
#[derive(Debug, Clone, Copy, Default)]
struct Arm {
    generation: u64,
    on: bool,
}

struct Shared {
    arm: watch::Sender<Arm>,
    arrived: Notify,
    /// Set once Redis refused `BLMOVE`.
    refused: Mutex<Option<String>>,
    logged_refusal: AtomicBool,
    block: Duration,
}

/// A watcher's connection: not made yet, working, or lost (and being made again).
const CONNECTING: u8 = 0;
const UP: u8 = 1;
const LOST: u8 = 2;

/// One watcher task and the state of its connection.
struct Handle {
    task: JoinHandle<()>,
    link: Arc<AtomicU8>,
}

/// The arrival watchers of one fetch loop (see the module documentation).
pub struct ArrivalWait {
    url: crate::redis_url::RedisUrl,
    shared: Arc<Shared>,
    watchers: HashMap<String, Handle>,
}

impl Drop for ArrivalWait {
    fn drop(&mut self) {
        self.reset();
    }
}

/// Disarms the watchers when a wait ends, however it ends (returned or dropped).
struct Disarm<'a>(&'a Shared);

impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        self.0.arm.send_modify(|a| a.on = false);
    }
}

impl Broker {
    /// Arrival watchers on this broker's Redis, blocking [`BLOCK_TIMEOUT`] per command.
    pub fn arrival_wait(&self) -> ArrivalWait {
        self.arrival_wait_blocking(BLOCK_TIMEOUT)
    }

    /// [`Broker::arrival_wait`] with another blocking time per command (whole seconds, at least 1).
    pub fn arrival_wait_blocking(&self, block: Duration) -> ArrivalWait {
        ArrivalWait {
            url: self.inner.url.clone(),
            shared: Arc::new(Shared {
                arm: watch::Sender::new(Arm::default()),
                arrived: Notify::new(),
                refused: Mutex::new(None),
                logged_refusal: AtomicBool::new(false),
                block: block.max(Duration::from_secs(1)),
            }),
            watchers: HashMap::new(),
        }
    }

    /// Every list of `queues` (the lists [`Broker::fetch`] pops), each once.
    pub fn consumed_lists(&self, queues: &[String]) -> Vec<String> {
        let keys = &self.inner.keys;
        let mut lists: Vec<String> = Vec::new();
        for q in queues {
            for l in keys.queue_lists(q) {
                if !lists.contains(&l) {
                    lists.push(l);
                }
            }
        }
        lists
    }
}

impl ArrivalWait {
    /// Wait until one of `lists` is non-empty, at most `limit`. Call it after a fetch found every
    /// list empty: an element pushed in between is seen, because each watcher checks its list
    /// again after being armed. Watchers are started and stopped to match `lists`.
    pub async fn wait(&mut self, lists: &[String], limit: Duration) -> Woken {
        if let Some(reason) = self.refused() {
            return Woken::Unavailable(reason);
        }
        self.watch_only(lists);
        if let Some(down) = self.down() {
            return down;
        }
        let arrived = self.shared.arrived.notified();
        tokio::pin!(arrived);
        // A permit left by an arrival reported after the previous wait ended is taken here: it
        // costs at most one extra fetch.
        arrived.as_mut().enable();
        self.shared.arm.send_modify(|a| {
            a.generation += 1;
            a.on = true;
        });
        let _disarm = Disarm(&self.shared);
        let mut state = self.shared.arm.subscribe();
        let trouble = async {
            // Watchers report a refusal or a lost connection by touching the arm channel.
            loop {
                if state.changed().await.is_err() {
                    return Woken::TimedOut;
                }
                if let Some(reason) = self.refused() {
                    return Woken::Unavailable(reason);
                }
                if let Some(down) = self.down() {
                    return down;
                }
            }
        };
        tokio::select! {
            _ = arrived => Woken::Arrived,
            w = trouble => w,
            _ = tokio::time::sleep(limit) => Woken::TimedOut,
        }
    }

    /// Drop every watcher and its connection (new ones connect at the next wait): after the
    /// broker was unreachable, a connection that looks alive may lead nowhere.
    pub fn reset(&mut self) {
        for (_, w) in self.watchers.drain() {
            w.task.abort();
        }
    }

    /// The lists watched now, sorted.
    pub fn watched(&self) -> Vec<String> {
        let mut v: Vec<String> = self.watchers.keys().cloned().collect();
        v.sort();
        v
    }

    /// [`Woken::Reconnecting`] when a watcher lost its connection, else [`Woken::Connecting`]
    /// when one has not connected yet, else `None`.
    fn down(&self) -> Option<Woken> {
        let mut connecting = false;
        for w in self.watchers.values() {
            match w.link.load(Ordering::Relaxed) {
                LOST => return Some(Woken::Reconnecting),
                CONNECTING => connecting = true,
                _ => {}
            }
        }
        connecting.then_some(Woken::Connecting)
    }

    fn refused(&self) -> Option<String> {
        let reason = self
            .shared
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        if !self.shared.logged_refusal.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %reason, "Redis refused BLMOVE: polling the queues instead of waiting for arrivals (give the worker's ACL user +blmove, or use Redis 6.2 or later)");
        }
        Some(reason)
    }

    /// Keep a watcher on each of `lists` and on nothing else.
    fn watch_only(&mut self, lists: &[String]) {
        self.watchers.retain(|l, w| {
            let keep = lists.contains(l);
            if !keep {
                w.task.abort();
            }
            keep
        });
        for l in lists {
            if !self.watchers.contains_key(l) {
                let link = Arc::new(AtomicU8::new(CONNECTING));
                let w = Watcher {
                    url: self.url.clone(),
                    list: l.clone(),
                    shared: self.shared.clone(),
                    state: self.shared.arm.subscribe(),
                    link: link.clone(),
                };
                let task = tokio::spawn(w.run());
                self.watchers.insert(l.clone(), Handle { task, link });
            }
        }
    }
}

struct Watcher {
    url: crate::redis_url::RedisUrl,
    list: String,
    shared: Arc<Shared>,
    state: watch::Receiver<Arm>,
    link: Arc<AtomicU8>,
}

impl Watcher {
    /// Stay connected; while armed, block on the list and report when it is non-empty.
    async fn run(mut self) {
        let mut conn = None;
        let mut reported = 0u64;
        let mut backoff = RECONNECT_MIN;
        loop {
            let c = match &mut conn {
                Some(c) => c,
                None => match self.connect().await {
                    Ok(c) => {
                        self.link.store(UP, Ordering::Relaxed);
                        conn.insert(c)
                    }
                    Err(e) => {
                        tracing::debug!(list = %self.list, error = %e, "arrival watcher cannot connect");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(RECONNECT_MAX);
                        continue;
                    }
                },
            };
            let generation = match self
                .state
                .wait_for(|a| a.on && a.generation > reported)
                .await
            {
                Ok(a) => a.generation,
                Err(_) => return,
            };
            let reply: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("BLMOVE")
                .arg(&self.list)
                .arg(&self.list)
                .arg("RIGHT")
                .arg("RIGHT")
                .arg(self.shared.block.as_secs())
                .query_async(c)
                .await;
            match reply {
                Ok(Some(_)) => {
                    backoff = RECONNECT_MIN;
                    reported = generation;
                    self.shared.arrived.notify_one();
                }
                Ok(None) => backoff = RECONNECT_MIN,
                Err(e) if refusal(&e) => {
                    *self
                        .shared
                        .refused
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    self.shared.arm.send_modify(|_| ());
                    return;
                }
                Err(e) => {
                    tracing::debug!(list = %self.list, error = %e, "arrival watcher lost its connection");
                    conn = None;
                    self.link.store(LOST, Ordering::Relaxed);
                    self.shared.arm.send_modify(|_| ());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    async fn connect(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        super::conn::dedicated(&self.url, self.shared.block + Duration::from_secs(15)).await
    }
}

/// Whether Redis refuses `BLMOVE` for good: no permission, or a server that does not know it.
fn refusal(e: &redis::RedisError) -> bool {
    match e.code() {
        Some("NOPERM") => true,
        Some("ERR") => e
            .detail()
            .is_some_and(|d| d.to_ascii_lowercase().contains("unknown command")),
        _ => false,
    }
}

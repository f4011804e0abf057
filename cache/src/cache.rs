//! The read path: L1 (moka) → L2 (Redis, with leases) → source; invalidation.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use moka::future::Cache as Moka;
use moka::Expiry;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::AsyncCommands;
use serde_json::Value;
use tokio::sync::watch;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::config::{CacheConfig, Policy};
use crate::credentials::Credentials;
use crate::entry::{now_ms, Entry};
use crate::invalidation::{self, Invalidation};
use crate::key_index;
use crate::redis_conn::{L2Conn, RedisConn};
use crate::source::SourceError;
use crate::stats::{bump, CacheStats, Counters, SourceStats};

/// Why a cached read failed: only the source can make it fail (Redis trouble never does).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CacheError(pub Arc<SourceError>);

/// A read-through cache, cheap to clone (all clones share L1, Redis and counters).
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: CacheConfig,
    l1: Moka<String, Arc<Entry>>,
    redis: Option<RedisConn>,
    /// Cache-wide counters (invalidations) and the read counters of no source.
    pub(crate) counters: Counters,
    /// Read counters per source label.
    by_source: RwLock<HashMap<String, Arc<Counters>>>,
    /// Bumped by every invalidation: a load that saw it change must not stay in L1.
    epoch: AtomicU64,
    subscribed: watch::Receiver<bool>,
}

struct EntryExpiry;

impl Expiry<String, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(&self, _: &String, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(entry.l1_ttl)
    }
}

/// Writes the value only while the writer's lease is still the current one, then drops the lease.
const WRITE_IF_LEASED: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0";

/// Drops a lease only if it is still ours (a failed load gives the key back at once).
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

impl Cache {
    /// A cache with L2 in the Redis at `redis` (`None`: L1 and source only). Must be called
    /// inside a Tokio runtime: it starts the invalidation subscriber.
    pub fn new(config: CacheConfig, redis: Option<redis::Client>) -> Cache {
        Cache::with_credentials(config, redis, None)
    }

    /// [`Cache::new`] with Redis credentials that can change while the cache runs (see
    /// [`crate::credentials`]).
    pub fn with_credentials(
        config: CacheConfig,
        redis: Option<redis::Client>,
        credentials: Option<Credentials>,
    ) -> Cache {
        crate::tls::install_crypto_provider();
        let per_entry = (config.l1_max_bytes / config.l1_max_entries.max(1)).max(1);
        let floor = u32::try_from(per_entry).unwrap_or(u32::MAX);
        // Weight = max(size, bytes/entries): at most l1_max_entries fit, and at most l1_max_bytes.
        let l1 = Moka::builder()
            .max_capacity(config.l1_max_bytes.max(1))
            .weigher(move |k: &String, v: &Arc<Entry>| {
                v.size.saturating_add(k.len() as u32).max(floor)
            })
            .expire_after(EntryExpiry)
            .support_invalidation_closures()
            .build();
        let (ready_tx, ready_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            redis: redis.clone().map(|client| {
                RedisConn::new(
                    client,
                    credentials.clone(),
                    config.cluster,
                    config.redis_timeout,
                )
            }),
            config,
            l1,
            counters: Counters::default(),
            by_source: RwLock::default(),
            epoch: AtomicU64::new(0),
            subscribed: ready_rx,
        });
        if let Some(client) = redis {
            tokio::spawn(invalidation::subscribe(
                Arc::downgrade(&inner),
                client,
                credentials,
                inner.config.channel(),
                ready_tx,
            ));
        }
        Cache { inner }
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The counters so far, summed over every source.
    pub fn stats(&self) -> CacheStats {
        let by_source = self.inner.by_source.read().expect("stats lock");
        by_source
            .values()
            .fold(self.inner.counters.snapshot(), |sum, c| {
                sum.plus(c.snapshot())
            })
    }

    /// The read counters and query latencies of each source label, sorted by name (a label
    /// appears once it was read or [declared](Cache::declare_source)).
    pub fn source_stats(&self) -> Vec<SourceStats> {
        let by_source = self.inner.by_source.read().expect("stats lock");
        let mut out: Vec<SourceStats> = by_source
            .iter()
            .map(|(source, c)| SourceStats {
                source: source.clone(),
                stats: c.snapshot(),
                load_seconds: c.latency(),
            })
            .collect();
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }

    /// Start counting for `source` now, so its series exist (at zero) before its first read.
    pub fn declare_source(&self, source: &str) {
        self.inner.scope(source);
    }

    /// Entries and weighted size (bytes of JSON, at least `l1_max_bytes / l1_max_entries` each)
    /// in this process's L1 (moka's counts are eventually consistent).
    pub fn l1_size(&self) -> (u64, u64) {
        (self.inner.l1.entry_count(), self.inner.l1.weighted_size())
    }

    /// Wait until the invalidation subscriber is subscribed (false after `timeout`).
    pub async fn wait_subscribed(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.subscribed.clone();
        tokio::time::timeout(timeout, rx.wait_for(|ready| *ready))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The value cached under `key` (a rendered template), loading it with `load` on a miss.
    /// `load` returns `Ok(None)` for "not found", which is cached for `policy.negative_ttl`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use celeriac_cache::{Cache, CacheConfig, Policy};
    /// use serde_json::json;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), celeriac_cache::CacheError> {
    /// // L1 only; `Some(redis::Client)` adds the shared L2 with leases.
    /// let cache = Cache::new(CacheConfig::default(), None);
    /// let policy = Policy::new(Duration::from_secs(60), Duration::from_secs(5)).with_source("main");
    ///
    /// // A miss runs `load` (a source query in practice) and keeps its value.
    /// let ticket = cache
    ///     .get_or_load("ticket:7", &policy, || async { Ok(Some(json!({"id": 7}))) })
    ///     .await?;
    /// assert_eq!(ticket, Some(json!({"id": 7})));
    ///
    /// // A hit does not call `load`.
    /// let again = cache
    ///     .get_or_load("ticket:7", &policy, || async { Ok(Some(json!({"id": 0}))) })
    ///     .await?;
    /// assert_eq!(again, Some(json!({"id": 7})));
    ///
    /// // "Not found" is `Ok(None)`, cached for the policy's `negative_ttl`.
    /// let missing = cache.get_or_load("ticket:8", &policy, || async { Ok(None) }).await?;
    /// assert_eq!(missing, None);
    /// assert_eq!(cache.stats().l1_hits, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_or_load<F, Fut>(
        &self,
        key: &str,
        policy: &Policy,
        load: F,
    ) -> Result<Option<Value>, CacheError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Option<Value>, SourceError>> + Send,
    {
        let inner = &self.inner;
        let c = inner.scope(&policy.source);
        let c = c.as_ref();
        let redis_key = inner.config.redis_key(key);
        if let Some(entry) = inner.l1.get(&redis_key).await {
            bump(&c.l1_hits);
            if entry.value.is_none() {
                bump(&c.negative_hits);
            }
            return Ok(entry.value.clone());
        }
        bump(&c.l1_misses);
        let epoch = inner.epoch.load(Ordering::SeqCst);
        let span = tracing::info_span!(
            "cache.read",
            cache.key = %redis_key,
            cache.source = %policy.source,
            cache.layer = Empty,
        );
        let entry = inner
            .l1
            .try_get_with(
                redis_key.clone(),
                inner
                    .fill(c, &redis_key, policy, load, epoch)
                    .instrument(span),
            )
            .await
            .map_err(|e| CacheError(Arc::clone(&e)))?;
        if entry.l1_ttl.is_zero() {
            inner.l1.invalidate(&redis_key).await;
        }
        Ok(entry.value.clone())
    }

    /// Forget `key` everywhere: L2 value and lease, and every process's L1.
    pub async fn invalidate(&self, key: &str) {
        let redis_key = self.inner.config.redis_key(key);
        self.inner.invalidate(Invalidation::Key(redis_key)).await;
    }

    /// Forget every key starting with `prefix` (of rendered templates) everywhere.
    pub async fn invalidate_prefix(&self, prefix: &str) {
        let redis_prefix = self.inner.config.redis_prefix(prefix);
        self.inner
            .invalidate(Invalidation::Prefix(redis_prefix))
            .await;
    }
}

impl Inner {
    /// The counters of reads of `source`.
    fn scope(&self, source: &str) -> Arc<Counters> {
        if let Some(c) = self.by_source.read().expect("stats lock").get(source) {
            return Arc::clone(c);
        }
        let mut by_source = self.by_source.write().expect("stats lock");
        Arc::clone(by_source.entry(source.to_owned()).or_default())
    }

    /// L1 miss (single-flight per key in this process): L2, else lease and source.
    async fn fill<F, Fut>(
        &self,
        c: &Counters,
        redis_key: &str,
        policy: &Policy,
        load: F,
        epoch: u64,
    ) -> Result<Arc<Entry>, Arc<SourceError>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Value>, SourceError>>,
    {
        let mut entry = match &self.redis {
            Some(redis) => match redis.get().await {
                Some(conn) => self.fill_from_l2(c, conn, redis_key, policy, load).await?,
                None => {
                    bump(&c.redis_errors);
                    bump(&c.redis_fallbacks);
                    self.load(c, policy, load).await?
                }
            },
            None => self.load(c, policy, load).await?,
        };
        let cap = self.config.l1_ttl.min(entry.remaining());
        entry.l1_ttl = if self.epoch.load(Ordering::SeqCst) == epoch {
            cap
        } else {
            Duration::ZERO
        };
        Ok(Arc::new(entry))
    }

    async fn fill_from_l2<F, Fut>(
        &self,
        c: &Counters,
        mut conn: L2Conn,
        redis_key: &str,
        policy: &Policy,
        load: F,
    ) -> Result<Entry, Arc<SourceError>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Value>, SourceError>>,
    {
        let lease_key = self.config.lease_key(redis_key);
        let token = uuid::Uuid::new_v4().to_string();
        let deadline = Instant::now() + self.config.lease_wait;
        let mut first = true;
        let mut waited = false;
        loop {
            let cached: Option<String> = match conn.get(redis_key).await {
                Ok(v) => v,
                Err(e) => return self.redis_failed(c, e, policy, load).await,
            };
            if let Some(entry) = cached.as_deref().and_then(Entry::from_l2) {
                bump(&c.l2_hits);
                Span::current().record("cache.layer", "l2");
                if entry.value.is_none() {
                    bump(&c.negative_hits);
                }
                let early = !waited
                    && entry.value.is_some()
                    && policy.xfetch_beta.is_some_and(|b| {
                        entry.should_refresh_early(b, self.config.draws.unit(), now_ms())
                    });
                if early && self.take_lease(c, &mut conn, &lease_key, &token).await == Some(true) {
                    bump(&c.early_refreshes);
                    return self
                        .load_and_write(c, conn, redis_key, &token, policy, load)
                        .await;
                }
                return Ok(entry);
            }
            if first {
                bump(&c.l2_misses);
                first = false;
            }
            match self.take_lease(c, &mut conn, &lease_key, &token).await {
                Some(true) => {
                    // The previous holder may have written the value and dropped its lease
                    // between our GET and our SET NX: look once more before querying the source.
                    if let Ok(Some(text)) = conn.get::<_, Option<String>>(redis_key).await {
                        if let Some(entry) = Entry::from_l2(&text) {
                            release(&mut conn, &lease_key, &token, c).await;
                            bump(&c.l2_hits);
                            Span::current().record("cache.layer", "l2");
                            return Ok(entry);
                        }
                    }
                    return self
                        .load_and_write(c, conn, redis_key, &token, policy, load)
                        .await;
                }
                Some(false) => {
                    if !waited {
                        bump(&c.lease_waits);
                        waited = true;
                    }
                    if Instant::now() >= deadline {
                        bump(&c.lease_timeouts);
                        return self.load(c, policy, load).await;
                    }
                    tokio::time::sleep(self.config.lease_poll).await;
                }
                None => {
                    bump(&c.redis_fallbacks);
                    return self.load(c, policy, load).await;
                }
            }
        }
    }

    /// `SET lease NX PX`: `Some(true)` won, `Some(false)` someone else holds it, `None` Redis failed.
    async fn take_lease(
        &self,
        c: &Counters,
        conn: &mut L2Conn,
        lease_key: &str,
        token: &str,
    ) -> Option<bool> {
        let ttl_ms = self.config.lease_ttl.as_millis() as u64;
        let reply: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(lease_key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(conn)
            .await;
        match reply {
            Ok(v) => Some(v.is_some()),
            Err(e) => {
                bump(&c.redis_errors);
                tracing::warn!(error = %e, "cache: lease failed; reading through to the source");
                None
            }
        }
    }

    async fn redis_failed<F, Fut>(
        &self,
        c: &Counters,
        e: redis::RedisError,
        policy: &Policy,
        load: F,
    ) -> Result<Entry, Arc<SourceError>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Value>, SourceError>>,
    {
        bump(&c.redis_errors);
        bump(&c.redis_fallbacks);
        tracing::warn!(error = %e, "cache: Redis read failed; reading through to the source");
        self.load(c, policy, load).await
    }

    /// Query the source; the entry expires per `policy` (jittered).
    async fn load<F, Fut>(
        &self,
        c: &Counters,
        policy: &Policy,
        load: F,
    ) -> Result<Entry, Arc<SourceError>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Value>, SourceError>>,
    {
        bump(&c.loads);
        Span::current().record("cache.layer", "source");
        let span = tracing::info_span!("cache.load", cache.source = %policy.source);
        let started = Instant::now();
        let loaded = load().instrument(span).await;
        c.observe_load(started.elapsed());
        let value = loaded.map_err(|e| {
            bump(&c.source_errors);
            Arc::new(e)
        })?;
        let ttl = self.config.draws.jittered(if value.is_some() {
            policy.ttl
        } else {
            policy.negative_ttl
        });
        let mut entry = Entry {
            value,
            delta_ms: started.elapsed().as_millis() as u64,
            expires_at_ms: now_ms() + ttl.as_millis() as u64,
            size: 0,
            l1_ttl: Duration::ZERO,
        };
        entry.size = u32::try_from(entry.to_l2().len()).unwrap_or(u32::MAX);
        Ok(entry)
    }

    /// Load under our lease, then write to L2 only if the lease is still ours.
    async fn load_and_write<F, Fut>(
        &self,
        c: &Counters,
        mut conn: L2Conn,
        redis_key: &str,
        token: &str,
        policy: &Policy,
        load: F,
    ) -> Result<Entry, Arc<SourceError>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Value>, SourceError>>,
    {
        let lease_key = self.config.lease_key(redis_key);
        let lease_key = lease_key.as_str();
        // On a cluster the key enters its prefix index before the source is read, so a prefix
        // invalidation from now on finds it (and its lease); unindexed, it is not written.
        let latest = now_ms()
            + (self.config.lease_ttl + policy.ttl.max(policy.negative_ttl).mul_f64(1.1)).as_millis()
                as u64;
        let indexed =
            key_index::record(&mut conn, &self.config, &[(redis_key.to_owned(), latest)]).await;
        if let Err(e) = &indexed {
            bump(&c.redis_errors);
            tracing::warn!(error = %e, "cache: key index failed; the value is not written to L2");
        }
        let entry = match self.load(c, policy, load).await {
            Ok(entry) => entry,
            Err(e) => {
                release(&mut conn, lease_key, token, c).await;
                return Err(e);
            }
        };
        if indexed.is_err() {
            release(&mut conn, lease_key, token, c).await;
            return Ok(entry);
        }
        let ttl_ms = entry.expires_at_ms.saturating_sub(now_ms()).max(1);
        let written: redis::RedisResult<i64> = redis::Script::new(WRITE_IF_LEASED)
            .key(redis_key)
            .key(lease_key)
            .arg(token)
            .arg(entry.to_l2())
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await;
        match written {
            Ok(1) => bump(&c.l2_writes),
            Ok(_) => bump(&c.stale_writes_prevented),
            Err(e) => {
                bump(&c.redis_errors);
                tracing::warn!(error = %e, "cache: L2 write failed");
            }
        }
        Ok(entry)
    }

    /// Delete from L2 (values and leases), evict locally, tell every other process.
    async fn invalidate(&self, inv: Invalidation) {
        self.evict_local(&inv).await;
        let Some(redis) = &self.redis else { return };
        let Some(mut conn) = redis.get().await else {
            bump(&self.counters.redis_errors);
            return;
        };
        let deleted = match &inv {
            Invalidation::Key(key) => {
                let lease = self.config.lease_key(key);
                conn.del::<_, i64>(&[key.as_str(), lease.as_str()])
                    .await
                    .map(|_| ())
            }
            Invalidation::Prefix(prefix) => match key_index::index_key(&self.config, prefix) {
                Some(set) if self.config.cluster => {
                    delete_indexed(&mut conn, &self.config, &set, prefix).await
                }
                _ => delete_prefix(&mut conn, prefix, &self.config.lease_key(prefix)).await,
            },
        };
        bump(&self.counters.invalidations_sent);
        let published = conn
            .publish::<_, _, i64>(self.config.channel(), inv.encode())
            .await;
        if let Err(e) = deleted.and(published.map(|_| ())) {
            bump(&self.counters.redis_errors);
            tracing::warn!(error = %e, "cache: invalidation did not fully reach Redis");
        }
    }

    /// Evict from this process's L1 and mark loads in flight as stale.
    pub(crate) async fn evict_local(&self, inv: &Invalidation) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        match inv {
            Invalidation::Key(key) => self.l1.invalidate(key).await,
            Invalidation::Prefix(prefix) => {
                let prefix = prefix.clone();
                if self
                    .l1
                    .invalidate_entries_if(move |k, _| k.starts_with(&prefix))
                    .is_err()
                {
                    self.l1.invalidate_all();
                }
            }
        }
    }

    /// After a (re)subscription: invalidations sent while we were away are lost; start clean.
    pub(crate) fn clear_l1_after_reconnect(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.l1.invalidate_all();
    }
}

/// Drops a lease if it is still `token`'s (a Redis error is counted).
async fn release(conn: &mut L2Conn, lease_key: &str, token: &str, c: &Counters) {
    let released: redis::RedisResult<i64> = redis::Script::new(RELEASE_LEASE)
        .key(lease_key)
        .arg(token)
        .invoke_async(conn)
        .await;
    if released.is_err() {
        bump(&c.redis_errors);
    }
}

/// On a cluster: delete every value and lease under `prefix` that the index `set` lists
/// (`ZSCAN MATCH` on the set's one shard, then one `DEL` of value and lease per key).
async fn delete_indexed(
    conn: &mut L2Conn,
    config: &CacheConfig,
    set: &str,
    prefix: &str,
) -> redis::RedisResult<()> {
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor: u64 = 0;
    loop {
        let (next, pairs): (u64, Vec<String>) = redis::cmd("ZSCAN")
            .arg(set)
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        let keys: Vec<String> = pairs.into_iter().step_by(2).collect();
        for key in &keys {
            conn.del::<_, i64>(&[key.as_str(), config.lease_key(key).as_str()])
                .await?;
        }
        if !keys.is_empty() {
            conn.zrem::<_, _, i64>(set, &keys).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Delete every value and lease under `prefix` and `lease_prefix` (SCAN, never KEYS; on a
/// cluster, SCAN on each primary and one DEL per key).
async fn delete_prefix(
    conn: &mut L2Conn,
    prefix: &str,
    lease_prefix: &str,
) -> redis::RedisResult<()> {
    let nodes = match conn {
        L2Conn::Single(_) => vec![None],
        L2Conn::Cluster(c) => primaries(c).await?.into_iter().map(Some).collect(),
    };
    for node in nodes {
        for pattern in [
            format!("{}*", glob_escape(prefix)),
            format!("{}*", glob_escape(lease_prefix)),
        ] {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500);
                let (next, keys): (u64, Vec<String>) = match (&mut *conn, &node) {
                    (L2Conn::Cluster(c), Some((host, port))) => {
                        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        });
                        redis::from_redis_value(c.route_command(scan, routing).await?)?
                    }
                    (conn, _) => scan.query_async(conn).await?,
                };
                match &mut *conn {
                    L2Conn::Single(c) if !keys.is_empty() => {
                        c.del::<_, i64>(&keys).await?;
                    }
                    conn => {
                        for key in &keys {
                            conn.del::<_, i64>(key).await?;
                        }
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    Ok(())
}

/// `(host, port)` of each primary, from `CLUSTER SLOTS`.
async fn primaries(conn: &mut ClusterConnection) -> redis::RedisResult<Vec<(String, u16)>> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut out = Vec::new();
    for range in slots {
        let redis::Value::Array(parts) = range else {
            continue;
        };
        let Some(redis::Value::Array(primary)) = parts.get(2) else {
            continue;
        };
        if let (Some(host), Some(port)) = (primary.first(), primary.get(1)) {
            let host: String = redis::from_redis_value_ref(host)?;
            let port: u16 = redis::from_redis_value_ref(port)?;
            if !out.contains(&(host.clone(), port)) {
                out.push((host, port));
            }
        }
    }
    Ok(out)
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

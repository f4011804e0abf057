//! The run lock: `SET <key> <token> NX PX ttl`, renewed while the run lasts, released at the end
//! only by its owner. A run that fails to renew stops before it moves the watermark again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::L2Conn;

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// The lock was lost (expired and taken, or Redis unreachable past its expiry).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the warm lock {0} was lost; another run may be working")]
pub struct LockLost(pub String);

/// A held run lock; renewed in the background until [`WarmLock::release`] or drop.
pub struct WarmLock {
    key: String,
    token: String,
    conn: L2Conn,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl WarmLock {
    /// Take the lock `key` for `ttl` (renewed every third of it). `Ok(None)`: another run holds
    /// it (its token is returned by [`WarmLock::holder`]).
    pub async fn acquire(
        mut conn: L2Conn,
        key: &str,
        ttl: Duration,
    ) -> redis::RedisResult<Option<WarmLock>> {
        let token = format!("{}:{}", gethost(), uuid::Uuid::new_v4().simple());
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let took: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await?;
        if took.is_none() {
            return Ok(None);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew_loop(
            conn.clone(),
            key.to_owned(),
            token.clone(),
            ttl,
            Arc::clone(&lost),
        ));
        Ok(Some(WarmLock {
            key: key.to_owned(),
            token,
            conn,
            lost,
            renewer,
        }))
    }

    /// Who holds `key` now (the holder's token: `host:uuid`), if anyone.
    pub async fn holder(conn: &mut L2Conn, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query_async(conn)
            .await
            .ok()
            .flatten()
    }

    /// The token this run holds.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The lock key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `Err` once a renewal found the lock gone.
    pub fn check(&self) -> Result<(), LockLost> {
        if self.lost.load(Ordering::SeqCst) {
            Err(LockLost(self.key.clone()))
        } else {
            Ok(())
        }
    }

    /// Stop renewing and delete the lock if it is still ours.
    pub async fn release(mut self) {
        self.renewer.abort();
        let released: redis::RedisResult<i64> = redis::Script::new(RELEASE)
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut self.conn)
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, lock = %self.key, "warm: could not release the lock; it expires by itself");
        }
    }
}

impl Drop for WarmLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

fn gethost() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "warm".into())
}

async fn renew_loop(
    mut conn: L2Conn,
    key: String,
    token: String,
    ttl: Duration,
    lost: Arc<AtomicBool>,
) {
    let every = (ttl / 3).max(Duration::from_millis(10));
    let ttl_ms = ttl.as_millis().max(1) as u64;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let renewed: redis::RedisResult<i64> = redis::Script::new(RENEW)
            .key(&key)
            .arg(&token)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await;
        match renewed {
            Ok(1) => last_ok = tokio::time::Instant::now(),
            Ok(_) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, lock = %key, "warm: lock renewal failed");
                if last_ok.elapsed() >= ttl {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

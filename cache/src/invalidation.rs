//! Invalidations reaching every process: messages on the `<prefix>invalidate` channel evict
//! from each subscriber's L1. One subscriber task per cache; it reconnects with backoff and
//! clears its L1 after every (re)connect, since messages sent meanwhile were lost.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use crate::cache::Inner;
use crate::stats::bump;

/// An invalidation message: one Redis key, or every key under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// `key:<redis key>`.
    Key(String),
    /// `prefix:<redis key prefix>`.
    Prefix(String),
}

impl Invalidation {
    /// The message text.
    pub fn encode(&self) -> String {
        match self {
            Invalidation::Key(k) => format!("key:{k}"),
            Invalidation::Prefix(p) => format!("prefix:{p}"),
        }
    }

    /// Parse a message text.
    pub fn decode(text: &str) -> Option<Self> {
        if let Some(k) = text.strip_prefix("key:") {
            return Some(Invalidation::Key(k.to_owned()));
        }
        text.strip_prefix("prefix:")
            .map(|p| Invalidation::Prefix(p.to_owned()))
    }
}

/// Run the subscriber until the cache is dropped. `ready` becomes true while subscribed.
pub(crate) async fn subscribe(
    inner: Weak<Inner>,
    client: redis::Client,
    credentials: Option<crate::Credentials>,
    channel: String,
    ready: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if inner.strong_count() == 0 {
            return;
        }
        let pubsub = match crate::credentials::current_client(&client, credentials.as_ref()).await {
            Ok(client) => client.get_async_pubsub().await,
            Err(e) => Err(e),
        };
        match pubsub {
            Ok(mut pubsub) => {
                if let Err(e) = pubsub.subscribe(&channel).await {
                    tracing::warn!(error = %e, "cache: cannot subscribe to invalidations");
                } else {
                    backoff = Duration::from_millis(100);
                    match inner.upgrade() {
                        Some(cache) => cache.clear_l1_after_reconnect(),
                        None => return,
                    }
                    let _ = ready.send(true);
                    let mut messages = pubsub.into_on_message();
                    while let Some(msg) = messages.next().await {
                        let Some(cache) = inner.upgrade() else { return };
                        let Ok(text) = msg.get_payload::<String>() else {
                            continue;
                        };
                        if let Some(inv) = Invalidation::decode(&text) {
                            bump(&cache.counters.invalidations_received);
                            cache.evict_local(&inv).await;
                        }
                    }
                    let _ = ready.send(false);
                    tracing::warn!("cache: invalidation subscription lost; reconnecting");
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cache: invalidation subscriber cannot connect");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

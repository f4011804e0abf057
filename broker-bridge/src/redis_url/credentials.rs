//! Redis credentials re-read from the file a URL came from (`CELERY_BROKER_URL_FILE`, …), so a
//! rotated password reaches new connections, and re-authenticates live ones, without a restart.
//!
//! Each subscription (one per connection, see redis' `StreamingCredentialsProvider`) yields the
//! file's current user name and password at once, then reads the file every
//! [`POLL_INTERVAL`] and yields again when they changed. Only the credentials are taken from a
//! changed file (from the URL naming the same server, database and TLS setup, in a `;` list):
//! a file naming none is logged as needing a restart and ignored, and a file that cannot be
//! read or parsed is logged and the last good credentials are kept. Passwords are never logged and `Debug` shows only the path.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use redis::{BasicAuth, RedisResult, StreamingCredentialsProvider};

use super::RedisUrl;

/// How often each connection's subscription reads the file.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The user name sent with a password when the URL names none (Redis 6's `default` user).
const DEFAULT_USER: &str = "default";

/// A credentials provider backed by the file holding a Redis URL. Cheap to clone.
#[derive(Clone)]
pub struct CredentialsFile {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    /// What must not change: address, database and TLS files of the URL at start.
    identity: String,
    interval: Duration,
    state: Mutex<State>,
}

struct State {
    /// The file's text at the last read (changes are only looked at, and logged, once).
    text: String,
    /// The credentials in use, bumped `generation` at each change.
    good: BasicAuth,
    generation: u64,
}

impl std::fmt::Debug for CredentialsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsFile")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

fn identity(url: &RedisUrl) -> String {
    format!(
        "{:?} db {} tls {:?}",
        url.info.addr(),
        url.info.redis_settings().db(),
        url.tls
    )
}

fn credentials(url: &RedisUrl) -> BasicAuth {
    let settings = url.info.redis_settings();
    BasicAuth::new(
        settings.username().unwrap_or(DEFAULT_USER).to_owned(),
        settings.password().unwrap_or_default().to_owned(),
    )
}

impl CredentialsFile {
    /// A provider for `path`, whose content at start was parsed into `url`, reading the file
    /// every `interval` (see [`POLL_INTERVAL`]).
    pub fn new(path: impl Into<PathBuf>, url: &RedisUrl, interval: Duration) -> Self {
        let path = path.into();
        CredentialsFile {
            shared: Arc::new(Shared {
                path,
                identity: identity(url),
                interval,
                // Nothing read yet: the first read takes the file's credentials, even if it
                // was rewritten after `url` was read from it.
                state: Mutex::new(State {
                    text: String::new(),
                    good: credentials(url),
                    generation: 0,
                }),
            }),
        }
    }

    /// The file this provider reads.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The current credentials (the file is read first).
    pub fn current(&self) -> BasicAuth {
        self.refresh().1
    }

    /// Reads the file; on a change, parses it and keeps its credentials if they can be used.
    /// Returns the generation and credentials in use.
    fn refresh(&self) -> (u64, BasicAuth) {
        let shared = &self.shared;
        let read = std::fs::read_to_string(&shared.path);
        let mut state = shared.state.lock().expect("credentials lock");
        let text = match read {
            Ok(text) => text,
            Err(e) => {
                if !state.text.is_empty() {
                    tracing::error!(path = %shared.path.display(), error = %e, "cannot read the Redis URL file; keeping the last good credentials");
                    state.text.clear();
                }
                return (state.generation, state.good.clone());
            }
        };
        if text != state.text {
            state.text = text.clone();
            // Failover lists (`url;url`): the part naming this connection's server.
            let parts: Vec<_> = text
                .trim()
                .split(';')
                .map(|p| super::parse(p.trim()))
                .collect();
            let mine = parts
                .iter()
                .flatten()
                .find(|url| identity(url) == shared.identity);
            match (mine, parts.iter().find_map(|p| p.as_ref().err())) {
                (Some(url), _) if url.info.redis_settings().password().is_none() => {
                    tracing::error!(path = %shared.path.display(), "the Redis URL file now holds a URL without a password; keeping the last good credentials");
                }
                (Some(url), _) => {
                    let new = credentials(url);
                    if new.username() != state.good.username()
                        || new.password() != state.good.password()
                    {
                        state.good = new;
                        state.generation += 1;
                        tracing::info!(path = %shared.path.display(), user = %state.good.username(), "Redis credentials changed in the URL file; connections re-authenticate");
                    }
                }
                // The error shows the URL with its password redacted; text that is not a URL
                // at all (a bare password?) is not shown.
                (None, Some(e)) if text.contains("://") => {
                    tracing::error!(path = %shared.path.display(), error = %e, "the Redis URL file does not hold a usable URL; keeping the last good credentials");
                }
                (None, Some(_)) => {
                    tracing::error!(path = %shared.path.display(), "the Redis URL file does not hold a URL; keeping the last good credentials");
                }
                (None, None) => {
                    tracing::error!(path = %shared.path.display(), "the Redis URL file now names another server, database or TLS setup, which needs a restart; keeping the current server and credentials");
                }
            }
        }
        (state.generation, state.good.clone())
    }
}

impl StreamingCredentialsProvider for CredentialsFile {
    fn subscribe(&self) -> Pin<Box<dyn Stream<Item = RedisResult<BasicAuth>> + Send + 'static>> {
        let this = self.clone();
        Box::pin(futures_util::stream::unfold(
            (this, None::<u64>),
            |(this, last)| async move {
                loop {
                    if last.is_some() {
                        tokio::time::sleep(this.shared.interval).await;
                    }
                    let (generation, auth) = this.refresh();
                    if last != Some(generation) {
                        return Some((Ok(auth), (this, Some(generation))));
                    }
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests;

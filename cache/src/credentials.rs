//! Credentials that can change while the cache runs (a rotated Redis password): every L2 and
//! invalidation connection takes the provider's current user name and password when it
//! connects, and L2 connections re-authenticate when they change.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use redis::{BasicAuth, RedisResult, StreamingCredentialsProvider};

/// A shared credentials provider, such as celeriac's file-backed one for `*_FILE` URLs. Its
/// first item on each subscription must be the current credentials.
pub type Credentials = Arc<dyn StreamingCredentialsProvider>;

/// An owned handle on a shared provider (redis takes one per configuration).
pub(crate) struct Shared(pub(crate) Credentials);

impl StreamingCredentialsProvider for Shared {
    fn subscribe(&self) -> Pin<Box<dyn Stream<Item = RedisResult<BasicAuth>> + Send + 'static>> {
        self.0.subscribe()
    }
}

/// `client` with the provider's current credentials, for connections that take no provider
/// (PUB/SUB); `client` itself when there is no provider.
pub(crate) async fn current_client(
    client: &redis::Client,
    credentials: Option<&Credentials>,
) -> RedisResult<redis::Client> {
    let Some(credentials) = credentials else {
        return Ok(client.clone());
    };
    let auth = match credentials.subscribe().next().await {
        Some(auth) => auth?,
        None => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::AuthenticationFailed,
                "the credentials provider gave no credentials",
            )))
        }
    };
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_username(auth.username())
        .set_password(auth.password());
    redis::Client::open(info.set_redis_settings(settings))
}

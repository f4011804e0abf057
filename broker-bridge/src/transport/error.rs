//! The transport's error type.

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The broker URL is not one Celery accepts.
    #[error("invalid broker URL: {0}")]
    Url(String),
    /// A transport option has a value of the wrong type or out of range.
    #[error("invalid transport option `{key}`: {reason}")]
    Option {
        /// The option's name in `broker_transport_options`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis refused a command or the connection failed (the connection reconnects by itself).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A script or command answered with a shape this code does not expect.
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
    /// A message cannot be published or restored as asked.
    #[error("invalid message: {0}")]
    Message(String),
}

/// Result alias for the transport.
pub type Result<T, E = TransportError> = std::result::Result<T, E>;

impl From<crate::redis_url::UrlError> for TransportError {
    fn from(e: crate::redis_url::UrlError) -> Self {
        TransportError::Url(e.to_string())
    }
}

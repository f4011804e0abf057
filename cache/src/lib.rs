//! A read-through cache for task reads: an in-process L1 (moka), a shared L2 in Redis with leases
//! against stampedes and stale writes, and SQL sources behind a small trait.
//!
//! [`Cache`] is the read path, [`source`] the databases, [`sql`] named parameters,
//! [`key_template`] cache keys. Nothing here knows about Celery.

pub mod cache;
pub mod config;
pub mod credentials;
pub mod entry;
pub mod invalidation;
pub mod key_index;
pub mod key_template;
mod redis_conn;
pub mod source;
pub mod sql;
pub mod stats;
pub mod tls;
pub mod warm;

pub use cache::{Cache, CacheError};
pub use config::{CacheConfig, Draws, Policy};
pub use credentials::Credentials;
pub use key_template::KeyTemplate;
pub use redis_conn::L2Conn;
pub use source::{Row, Source, SourceConfig, SourceError, SourceKind, Sources};
pub use sql::NamedSql;
pub use stats::{CacheStats, LatencyHistogram, SourceStats};

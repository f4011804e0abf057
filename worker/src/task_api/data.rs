//! What a worker's tasks share beyond their arguments: the read-through cache and the SQL
//! sources of the worker's TOML (see [`crate::query_tasks`]), reached through
//! [`TaskContext::data`](crate::TaskContext::data).

use celeriac_cache::{Cache, Sources};

/// The cache and sources a worker's tasks share.
#[derive(Clone)]
pub struct DataAccess {
    /// The read-through cache.
    pub cache: Cache,
    /// The configured sources by name.
    pub sources: Sources,
}

impl std::fmt::Debug for DataAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataAccess")
            .field("sources", &self.sources.names().collect::<Vec<_>>())
            .field("cache", &self.cache.config())
            .finish()
    }
}

//! Read-through cache of SQL query results for celeriac tasks.

pub mod source;

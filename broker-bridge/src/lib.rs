//! Celery's wire on Redis, with no knowledge of tasks or caches.
//!
//! * [`backend`] — the Redis result backend: task metas as Celery writes them.
//! * [`envelope`] — the kombu envelope: one element of a Redis queue list, kept as JSON.

pub mod backend;
pub mod envelope;

//! Celery's wire on Redis, with no knowledge of tasks or caches.
//!
//! * [`envelope`] — the kombu envelope: one element of a Redis queue list, kept as JSON.

pub mod envelope;

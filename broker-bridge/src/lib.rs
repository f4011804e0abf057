//! Celery's wire on Redis, with no knowledge of tasks or caches.
//!
//! * [`envelope`] — the kombu envelope: one element of a Redis queue list, kept as JSON.
//! * [`transport`] — kombu's Redis transport: fetch, ack emulation, restore, publish, bindings.

pub mod envelope;
pub mod transport;

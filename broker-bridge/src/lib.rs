//! Celery's wire on Redis, with no knowledge of tasks or caches.
//!
//! * [`backend`] — the Redis result backend: task metas as Celery writes them.
//! * [`envelope`] — the kombu envelope: one element of a Redis queue list, kept as JSON.
//! * [`codec`] — task messages: decode (protocol 1/2, json/msgpack/yaml, compression, pickle
//!   refused) and encode (protocol 2 JSON).
//! * [`transport`] — kombu's Redis transport: fetch, ack emulation, restore, publish, bindings,
//!   fanout exchanges (PUB/SUB).
//! * [`redis_url`] — Redis URLs as Celery accepts them, for the broker and the backend.
//! * [`pidbox`] — remote control requests and replies.
//! * [`events`] — monitoring events (single and `task.multi` batches).
//! * [`sqs`] — Amazon SQS as the broker, as kombu's SQS transport uses it.
//! * [`signing`] — Celery's `auth` serializer: signed bodies, keys and certificate stores.

pub mod backend;
pub mod codec;
pub mod envelope;
pub mod events;
pub mod pidbox;
pub mod redis_url;
pub mod signing;
pub mod sqs;
pub mod transport;

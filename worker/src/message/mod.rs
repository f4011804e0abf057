//! The path of a message: taken off the queues ([`fetch`]), run ([`processor`]), held for its ETA
//! ([`scheduled`]), retried ([`retry`]), its outcome stored ([`results`]) and settled ([`settle`]),
//! or moved to the dead-letter list ([`dead_letter`]); with what the path needs on the way: time
//! limits, rate limits, the byte budget of reserved messages, batched acks and writes, writes
//! retried across reconnects, the revoked set and the one table of messages in flight ([`inflight`]); [`job`] is one
//! message and its transitions.

pub(crate) mod batch;
pub(crate) mod dead_letter;
pub(crate) mod fetch;
pub(crate) mod inflight;
pub(crate) mod job;
pub(crate) mod processor;
pub(crate) mod rate_limit;
pub(crate) mod reserved_bytes;
pub(crate) mod results;
pub(crate) mod retry;
pub(crate) mod retrying;
pub(crate) mod revoked;
pub(crate) mod scheduled;
pub(crate) mod settle;
pub(crate) mod sqs_fetch;
pub(crate) mod time_limits;

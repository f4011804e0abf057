//! Ack, refresh and reading of held messages (`unacked` / `unacked_index`).

use serde_json::value::RawValue;

use super::error::{Result, TransportError};
use super::Broker;

/// One `unacked` entry as kombu stores it: `[envelope, exchange, routing_key]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnackedEntry {
    /// The hash value exactly as stored (for compare-and-settle).
    pub stored: Vec<u8>,
    /// The envelope's JSON text as stored (exact bytes for entries celeriac wrote).
    pub raw: Vec<u8>,
    /// Exchange it was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
}

/// What is in `unacked` under a tag.
pub(crate) enum Held {
    /// Nothing: acked, restored, or never delivered.
    Absent,
    /// A readable entry.
    Entry(UnackedEntry),
    /// Something that is not `[envelope, exchange, routing_key]`; the bytes as stored.
    Unreadable(Vec<u8>),
}

impl Broker {
    /// Acknowledge: remove the message from `unacked_index` and `unacked` (one `MULTI`, as
    /// kombu's `QoS.ack`). Acking a tag that is not held is a no-op.
    pub async fn ack(&self, tag: &str) -> Result<()> {
        let keys = &self.inner.keys;
        redis::pipe()
            .atomic()
            .zrem(&keys.unacked_index, tag)
            .ignore()
            .hdel(&keys.unacked, tag)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Acknowledge many messages in one round trip: a multi-member `HDEL unacked`, then
    /// `ZREM unacked_index`, pipelined without `MULTI` (two commands for the whole batch). A
    /// crash between the two leaves only index entries whose hash entry is gone, which every
    /// restore sweep (kombu's and ours) removes without restoring anything.
    ///
    /// Returns how many of `tags` were still held: fewer means some were already gone — acked by
    /// an earlier attempt whose reply was lost, or requeued by a visibility-timeout sweep (those
    /// run again).
    pub async fn ack_many(&self, tags: &[String]) -> Result<usize> {
        if tags.is_empty() {
            return Ok(0);
        }
        let keys = &self.inner.keys;
        let (held,): (usize,) = redis::pipe()
            .hdel(&keys.unacked, tags)
            .zrem(&keys.unacked_index, tags)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(held)
    }

    /// Set the delivery time of messages still held to now (`ZADD XX`, server clock) so that no
    /// worker's visibility-timeout sweep restores them (kombu#337). Tags no longer in the index
    /// are left out. Returns how many were refreshed.
    pub async fn refresh(&self, tags: &[String]) -> Result<usize> {
        if tags.is_empty() {
            return Ok(0);
        }
        let mut inv = self.inner.scripts.refresh.prepare_invoke();
        inv.key(&self.inner.keys.unacked_index);
        for t in tags {
            inv.arg(t);
        }
        Ok(inv.invoke_async(&mut self.conn()).await?)
    }

    /// The queue element held in `unacked` under `tag` (exact bytes for messages celeriac
    /// fetched; kombu's re-encoded JSON for messages a Python worker took), or `None`.
    pub async fn get_unacked(&self, tag: &str) -> Result<Option<Vec<u8>>> {
        match self.read_unacked(tag).await? {
            Held::Entry(e) => Ok(Some(e.raw)),
            Held::Absent => Ok(None),
            Held::Unreadable(_) => Err(TransportError::Reply(format!(
                "the unacked entry of `{tag}` is not [envelope, exchange, routing_key]"
            ))),
        }
    }

    pub(crate) async fn read_unacked(&self, tag: &str) -> Result<Held> {
        let stored: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(&self.inner.keys.unacked)
            .arg(tag)
            .query_async(&mut self.conn())
            .await?;
        Ok(match stored {
            None => Held::Absent,
            Some(stored) => match parse_entry(&stored) {
                Some((raw, exchange, routing_key)) => Held::Entry(UnackedEntry {
                    stored,
                    raw,
                    exchange,
                    routing_key,
                }),
                None => Held::Unreadable(stored),
            },
        })
    }
}

fn parse_entry(stored: &[u8]) -> Option<(Vec<u8>, String, String)> {
    let (raw, exchange, routing_key): (Box<RawValue>, String, String) =
        serde_json::from_slice(stored).ok()?;
    Some((raw.get().as_bytes().to_vec(), exchange, routing_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keeps_the_envelope_bytes() {
        let stored =
            br#"[{"body": "x", "n": 123456789012345678901234567890, "f": 1.50}, "", "celery"]"#;
        let (raw, ex, rk) = parse_entry(stored).unwrap();
        assert_eq!(
            raw,
            br#"{"body": "x", "n": 123456789012345678901234567890, "f": 1.50}"#
        );
        assert_eq!((ex.as_str(), rk.as_str()), ("", "celery"));
        assert!(parse_entry(b"[1, 2]").is_none());
        assert!(parse_entry(b"not json").is_none());
    }
}

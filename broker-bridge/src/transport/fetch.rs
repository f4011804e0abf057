//! Non-blocking atomic fetch (pop + record in `unacked`), with kombu's queue order.

use std::collections::HashSet;

use super::error::{Result, TransportError};
use super::keys::message_priority;
use super::options::QueueOrder;
use super::{Broker, DeadLettered, Delivery, Fetched};
use crate::envelope::trailing_properties;

impl Broker {
    /// Take up to `max` messages from `queues` without blocking.
    ///
    /// Order is kombu's: priority step first (every queue's step-0 list before any step-3
    /// list), then queue, with the queue a message came from moved to the end of the order
    /// (round robin, kept between calls). Each message is recorded in `unacked` and
    /// `unacked_index` in the same Lua script that pops it, exactly as a Python worker records
    /// it, so a crash at any instant leaves it either in its list or restorable from `unacked`.
    /// Elements that are not kombu envelopes are moved to the dead-letter list in that same
    /// script and reported in [`Fetched::dead_lettered`]; they count towards `max`. So are
    /// elements longer than [`TransportOptions::max_message_bytes`](super::TransportOptions),
    /// checked before anything parses them.
    pub async fn fetch(&self, queues: &[String], max: usize) -> Result<Fetched> {
        self.fetch_within(queues, max, 0).await
    }

    /// [`Broker::fetch`], taking elements only until they add up to `room` bytes (`0`: no
    /// limit); the first is always taken, so one fetch goes past `room` by less than one
    /// element.
    pub async fn fetch_within(
        &self,
        queues: &[String],
        max: usize,
        room: usize,
    ) -> Result<Fetched> {
        let order = self.queue_order(queues);
        if order.is_empty() || max == 0 {
            return Ok(Fetched::default());
        }
        let keys = &self.inner.keys;
        let steps = keys.steps();
        let mut inv = self.inner.scripts.fetch.prepare_invoke();
        inv.key(&keys.unacked)
            .key(&keys.unacked_index)
            .key(&keys.dead_letter)
            .key(&keys.dead_letter_reasons);
        for q in &order {
            for s in steps {
                inv.key(keys.queue_list(q, *s));
            }
        }
        inv.arg(max)
            .arg(steps.len())
            .arg(self.inner.opts.max_message_bytes.unwrap_or(0))
            .arg(room);
        for q in &order {
            inv.arg(q);
        }
        let reply: Vec<Vec<u8>> = inv.invoke_async(&mut self.conn()).await?;
        let fetched = parse_reply(reply, &order)?;
        let used: Vec<&str> = fetched
            .deliveries
            .iter()
            .map(|d| d.queue.as_str())
            .chain(fetched.dead_lettered.iter().map(|d| d.queue.as_str()))
            .collect();
        self.rotate(&used);
        for d in &fetched.dead_lettered {
            tracing::warn!(queue = %d.queue, reason = %d.reason, "moved a bad queue element to the dead-letter list");
        }
        Ok(fetched)
    }

    /// The order to try `queues` in this time (deduplicated).
    fn queue_order(&self, queues: &[String]) -> Vec<String> {
        let mut seen = HashSet::new();
        let wanted: Vec<String> = queues
            .iter()
            .filter(|q| seen.insert(q.as_str()))
            .cloned()
            .collect();
        match self.inner.opts.queue_order_strategy {
            QueueOrder::Priority => wanted,
            QueueOrder::Sorted => {
                let mut w = wanted;
                w.sort();
                w
            }
            QueueOrder::RoundRobin => {
                let mut cycle = self.inner.cycle.lock().unwrap_or_else(|p| p.into_inner());
                let same = cycle.len() == wanted.len() && wanted.iter().all(|q| cycle.contains(q));
                if !same {
                    *cycle = wanted;
                }
                cycle.clone()
            }
        }
    }

    /// Move each queue a message came from to the end of the round-robin order.
    fn rotate(&self, used: &[&str]) {
        if self.inner.opts.queue_order_strategy != QueueOrder::RoundRobin {
            return;
        }
        let mut cycle = self.inner.cycle.lock().unwrap_or_else(|p| p.into_inner());
        for q in used {
            if let Some(pos) = cycle.iter().position(|c| c == q) {
                let q = cycle.remove(pos);
                cycle.push(q);
            }
        }
    }
}

fn parse_reply(reply: Vec<Vec<u8>>, order: &[String]) -> Result<Fetched> {
    if !reply.len().is_multiple_of(6) {
        return Err(TransportError::Reply(format!(
            "fetch script returned {} items, not groups of 6",
            reply.len()
        )));
    }
    let mut fetched = Fetched::default();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut items = reply.into_iter();
    while let (Some(kind), Some(qi), Some(a), Some(b), Some(c), Some(d)) = (
        items.next(),
        items.next(),
        items.next(),
        items.next(),
        items.next(),
        items.next(),
    ) {
        let queue = text(&qi)
            .parse::<usize>()
            .ok()
            .and_then(|i| order.get(i.wrapping_sub(1)))
            .cloned()
            .ok_or_else(|| TransportError::Reply("fetch script: bad queue index".into()))?;
        if kind == b"1" {
            fetched.deliveries.push(Delivery {
                raw: a,
                queue,
                delivery_tag: text(&b),
                exchange: text(&c),
                routing_key: text(&d),
            });
        } else {
            fetched.dead_lettered.push(DeadLettered {
                queue,
                reason: text(&a),
            });
        }
    }
    Ok(fetched)
}

/// Only `properties.priority` of an envelope, read without building the whole JSON tree (the
/// worker parses the message fully once, later): from the trailing `properties` text alone when
/// it parses, else from the whole element. Unreadable → 0, as kombu.
pub(super) fn priority_of(raw: &[u8]) -> u8 {
    #[derive(serde::Deserialize)]
    struct Envelope {
        properties: Option<Properties>,
    }
    #[derive(serde::Deserialize)]
    struct Properties {
        priority: Option<serde_json::Value>,
    }
    if let Some(Ok(p)) = trailing_properties(raw).map(serde_json::from_slice::<Properties>) {
        return message_priority(p.priority.as_ref());
    }
    serde_json::from_slice::<Envelope>(raw)
        .ok()
        .and_then(|e| e.properties)
        .map_or(0, |p| message_priority(p.priority.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_as_kombu_reads_it() {
        let p = |raw: &str| priority_of(raw.as_bytes());
        assert_eq!(p(r#"{"body": "x", "properties": {"priority": 3}}"#), 3);
        assert_eq!(
            p(r#"{"properties": {"priority": "7", "x": [1, {"a": 2}]}}"#),
            7
        );
        assert_eq!(p(r#"{"properties": {"priority": 42}}"#), 9);
        assert_eq!(p(r#"{"properties": {"priority": null}}"#), 0);
        assert_eq!(p(r#"{"properties": {}}"#), 0);
        assert_eq!(p(r#"{"properties": "x"}"#), 0);
        assert_eq!(p("not json"), 0);
        assert_eq!(
            p(r#"{"body": "e30=", "properties": {"priority": 2, "delivery_tag": "t"}}"#),
            2
        );
        assert_eq!(
            p(r#"{"properties": {"priority": 4}, "headers": {"properties": {"priority": 8}}}"#),
            4,
            "a nested properties object is not the envelope's"
        );
    }
}

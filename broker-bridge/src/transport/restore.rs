//! Giving held messages back: requeue (reject with requeue), restore (shutdown), the
//! visibility-timeout sweep, dead-lettering and moving to another queue.
//!
//! Every path is compare-and-settle: read the `unacked` entry, compute what to push, then one
//! Lua script removes the entry and pushes only if the entry is still exactly what was read.
//! An ack, another worker's restore or a re-delivery in between therefore wins, and a message
//! is never both acked and restored, nor restored twice.

use std::time::Duration;

use serde_json::Value;

use super::ack::{Held, UnackedEntry};
use super::error::{Result, TransportError};
use super::keys::envelope_priority;
use super::{Broker, Delivery};
use crate::envelope::Envelope;

/// How many times a compare-and-settle is retried when the entry changed under us.
const SETTLE_ATTEMPTS: usize = 5;

/// What to do with a held message once its `unacked` entry is removed.
enum Action<'a> {
    /// Push `payload` to the head (`lpush`, back of the queue) or tail (`rpush`, next popped).
    Push {
        left: bool,
        payload: &'a [u8],
        targets: &'a [String],
    },
    /// Push `payload` to the dead-letter list with a reason record.
    Dead {
        payload: &'a [u8],
        reason: &'a str,
        queue: &'a str,
        task: &'a str,
        id: &'a str,
    },
}

/// The longest celeriac holds `unacked_mutex` while sweeping (kombu holds it for
/// `unacked_mutex_expire`, 300 s by default). A worker killed mid-sweep leaves the lock behind
/// until it expires, stopping every sweep meanwhile; since each give-back is compare-and-settle,
/// two overlapping sweeps cannot restore a message twice, so a short lock costs nothing.
pub(crate) const SWEEP_LOCK_MAX: Duration = Duration::from_secs(10);

impl Broker {
    /// Reject with requeue (kombu `basic_reject(requeue=True)`): the message goes to the back of
    /// its queue (`LPUSH`) with `redelivered` flags, and its `unacked` entry is removed, in one
    /// step. Returns `false` (and does nothing) when the message is no longer held as delivered
    /// (already acked, or restored by a sweep and re-delivered).
    pub async fn requeue(&self, d: &Delivery) -> Result<bool> {
        self.give_back(&d.delivery_tag, Some(&d.raw), true, None)
            .await
    }

    /// Give back messages this worker holds (shutdown): each goes to the front of its queue
    /// (`RPUSH`, next to be popped) with `redelivered` flags, only if its `unacked` entry still
    /// exists, atomically with the entry's removal. Returns how many were restored.
    pub async fn restore(&self, tags: &[String]) -> Result<usize> {
        let mut n = 0;
        for tag in tags {
            if self.give_back(tag, None, false, None).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// kombu's visibility-timeout sweep, interoperable with Python workers: take
    /// `unacked_mutex` (`SET NX PX`, for at most 10 s), restore (front of queue, `redelivered`) every entry whose
    /// delivery time is older than `visibility_timeout` (newest first, at most
    /// `unacked_restore_limit`), then release the mutex by compare-and-delete. Returns how
    /// many were restored; 0 when another worker holds the mutex.
    pub async fn restore_visibility_timeouts(&self) -> Result<usize> {
        let keys = &self.inner.keys;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let expire = self.inner.opts.unacked_mutex_expire.min(SWEEP_LOCK_MAX);
        let expire_ms = expire.as_millis().max(1) as u64;
        let got: Option<String> = redis::cmd("SET")
            .arg(&keys.unacked_mutex)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(expire_ms)
            .query_async(&mut self.conn())
            .await?;
        if got.is_none() {
            return Ok(0);
        }
        let swept = self.sweep().await;
        let released: Result<i64> = self
            .inner
            .scripts
            .release_lock
            .key(&keys.unacked_mutex)
            .arg(&token)
            .invoke_async(&mut self.conn())
            .await
            .map_err(Into::into);
        let n = swept?;
        released?;
        Ok(n)
    }

    async fn sweep(&self) -> Result<usize> {
        let (_, now) = self.server_time().await?;
        let ceiling = format!(
            "{:.6}",
            now - self.inner.opts.visibility_timeout.as_secs_f64()
        );
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(&self.inner.keys.unacked_index)
            .arg(&ceiling)
            .arg(0)
            .arg("BYSCORE")
            .arg("REV");
        if let Some(limit) = self.inner.opts.unacked_restore_limit {
            cmd.arg("LIMIT").arg(0).arg(limit);
        }
        let tags: Vec<String> = cmd.query_async(&mut self.conn()).await?;
        let mut n = 0;
        for tag in &tags {
            if self.give_back(tag, None, false, Some(&ceiling)).await? {
                n += 1;
            }
        }
        if n > 0 {
            tracing::info!(
                restored = n,
                "restored messages past the visibility timeout"
            );
        }
        Ok(n)
    }

    /// Move a held message to the dead-letter list, unchanged (so `LMOVE` can replay it), with a
    /// record of why in `<dead_letter_key>.reasons` (field = SHA-1 hex of the element; value =
    /// JSON `{reason, queue, delivery_tag, task, id, at}`), removing its `unacked` entry in the
    /// same step. Returns `false` (and does nothing) when the message is no longer held.
    pub async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<bool> {
        let (task, id) = task_and_id(&d.raw);
        let keys = &self.inner.keys;
        for _ in 0..SETTLE_ATTEMPTS {
            let stored = match self.read_unacked(&d.delivery_tag).await? {
                Held::Entry(e) if same_element(&e.raw, &d.raw) => e.stored,
                // An element Redis's JSON parser took but serde refuses (`NaN`, a stray byte
                // before a well-formed `properties`): its record still starts with it.
                Held::Unreadable(stored) if record_of(&stored, &d.raw) => stored,
                _ => return Ok(false),
            };
            let action = Action::Dead {
                payload: &d.raw,
                reason,
                queue: &d.queue,
                task: &task,
                id: &id,
            };
            if self.settle(&d.delivery_tag, &stored, action, None).await? {
                tracing::warn!(tag = %d.delivery_tag, queue = %d.queue, reason, list = %keys.dead_letter, "dead-lettered a message");
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Push a message this broker never held (one received from SQS) to the dead-letter list,
    /// exactly as given, with the same record as [`Broker::dead_letter`]; `tag` is the
    /// message's delivery tag where it came from.
    pub async fn dead_letter_foreign(
        &self,
        raw: &[u8],
        queue: &str,
        tag: &str,
        reason: &str,
    ) -> Result<()> {
        let (task, id) = task_and_id(raw);
        let keys = &self.inner.keys;
        let _: i64 = self
            .inner
            .scripts
            .dead_letter
            .key(&keys.dead_letter)
            .key(&keys.dead_letter_reasons)
            .arg(raw)
            .arg(reason)
            .arg(queue)
            .arg(tag)
            .arg(task)
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
        tracing::warn!(queue, reason, list = %keys.dead_letter, "dead-lettered a message");
        Ok(())
    }

    /// Move a held message, unchanged, to the back of another queue (its priority sub-list) —
    /// e.g. for a Python worker that can run it — removing its `unacked` entry in the same step.
    /// `reason` is logged. Returns `false` (and does nothing) when the message is no longer held.
    pub async fn move_to(&self, d: &Delivery, target_queue: &str, reason: &str) -> Result<bool> {
        let target = [self
            .inner
            .keys
            .queue_list_for_priority(target_queue, d.priority())];
        for _ in 0..SETTLE_ATTEMPTS {
            let entry = match self.read_unacked(&d.delivery_tag).await? {
                Held::Entry(e) if same_element(&e.raw, &d.raw) => e,
                _ => return Ok(false),
            };
            let action = Action::Push {
                left: true,
                payload: &d.raw,
                targets: &target,
            };
            if self
                .settle(&d.delivery_tag, &entry.stored, action, None)
                .await?
            {
                tracing::info!(tag = %d.delivery_tag, from = %d.queue, to = target_queue, reason, "moved a message to another queue");
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Restore one tag: `left` = requeue (back of the queue), else front. When `expected_raw` is
    /// given, only if the entry still holds that element; when `ceiling` is given, only if the
    /// delivery time is not above it.
    async fn give_back(
        &self,
        tag: &str,
        expected_raw: Option<&[u8]>,
        left: bool,
        ceiling: Option<&str>,
    ) -> Result<bool> {
        for _ in 0..SETTLE_ATTEMPTS {
            let entry = match self.read_unacked(tag).await? {
                Held::Absent => {
                    if ceiling.is_some() {
                        // An index entry without its hash entry is an ack cut in half (or one
                        // finishing now): drop it as kombu's sweep does, so it is not read again.
                        redis::cmd("ZREM")
                            .arg(&self.inner.keys.unacked_index)
                            .arg(tag)
                            .query_async::<()>(&mut self.conn())
                            .await?;
                    }
                    return Ok(false);
                }
                Held::Unreadable(stored) => {
                    if expected_raw.is_some() {
                        return Ok(false);
                    }
                    let action = Action::Dead {
                        payload: &stored,
                        reason: "unreadable unacked entry",
                        queue: "",
                        task: "",
                        id: "",
                    };
                    if self.settle(tag, &stored, action, ceiling).await? {
                        return Ok(false);
                    }
                    continue;
                }
                Held::Entry(e) => e,
            };
            if expected_raw.is_some_and(|raw| !same_element(&entry.raw, raw)) {
                return Ok(false);
            }
            let settled = self.restore_entry(tag, &entry, left, ceiling).await?;
            if settled {
                return Ok(true);
            }
            if ceiling.is_some() {
                // The sweep only restores what is still overdue; a refresh in between wins.
                return Ok(false);
            }
        }
        Ok(false)
    }

    async fn restore_entry(
        &self,
        tag: &str,
        entry: &UnackedEntry,
        left: bool,
        ceiling: Option<&str>,
    ) -> Result<bool> {
        let (payload, priority) = redelivered(&entry.raw);
        let queues = self.lookup(&entry.exchange, &entry.routing_key).await?;
        if queues.is_empty() {
            let reason = format!(
                "no queue to restore to (exchange `{}`, routing key `{}`)",
                entry.exchange, entry.routing_key
            );
            let action = Action::Dead {
                payload: &entry.raw,
                reason: &reason,
                queue: "",
                task: "",
                id: "",
            };
            tracing::warn!(tag, %reason, "dead-lettering an unacked message");
            return self.settle(tag, &entry.stored, action, ceiling).await;
        }
        let targets: Vec<String> = queues
            .iter()
            .map(|q| self.inner.keys.queue_list_for_priority(q, priority))
            .collect();
        let action = Action::Push {
            left,
            payload: &payload,
            targets: &targets,
        };
        self.settle(tag, &entry.stored, action, ceiling).await
    }

    async fn settle(
        &self,
        tag: &str,
        expected: &[u8],
        action: Action<'_>,
        ceiling: Option<&str>,
    ) -> Result<bool> {
        let keys = &self.inner.keys;
        let mut inv = self.inner.scripts.settle.prepare_invoke();
        inv.key(&keys.unacked)
            .key(&keys.unacked_index)
            .key(&keys.dead_letter)
            .key(&keys.dead_letter_reasons);
        inv.arg(tag).arg(expected);
        match action {
            Action::Push {
                left,
                payload,
                targets,
            } => {
                for t in targets {
                    inv.key(t);
                }
                inv.arg(if left { "lpush" } else { "rpush" })
                    .arg(payload)
                    .arg(ceiling.unwrap_or(""));
            }
            Action::Dead {
                payload,
                reason,
                queue,
                task,
                id,
            } => {
                inv.arg("dead")
                    .arg(payload)
                    .arg(ceiling.unwrap_or(""))
                    .arg(reason)
                    .arg(queue)
                    .arg(task)
                    .arg(id);
            }
        }
        let done: i64 = inv.invoke_async(&mut self.conn()).await?;
        match done {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(TransportError::Reply(format!(
                "settle script returned {other}"
            ))),
        }
    }
}

/// The element with kombu's `redelivered` flags (`headers.redelivered` and
/// `properties.delivery_info.redelivered`), and its priority. An element that is not a kombu
/// envelope is given back unchanged (priority 0) rather than lost.
fn redelivered(raw: &[u8]) -> (Vec<u8>, u8) {
    let Ok(value) = serde_json::from_slice::<Value>(raw) else {
        return (raw.to_vec(), 0);
    };
    let priority = envelope_priority(&value);
    match Envelope::from_value(value) {
        Ok(mut env) => {
            env.mark_redelivered();
            (env.to_json().into_bytes(), priority)
        }
        Err(_) => (raw.to_vec(), priority),
    }
}

fn same_element(stored: &[u8], raw: &[u8]) -> bool {
    stored.trim_ascii() == raw.trim_ascii()
}

/// Whether `record`, an `unacked` value serde cannot read, is the fetch script's
/// `[<raw>, <exchange>, <routing_key>]` for `raw`.
fn record_of(record: &[u8], raw: &[u8]) -> bool {
    record
        .strip_prefix(b"[")
        .and_then(|rest| rest.strip_prefix(raw))
        .is_some_and(|rest| rest.starts_with(b", "))
}

/// `headers.task` and `headers.id` (protocol 2), empty when absent.
fn task_and_id(raw: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    let get = |k: &str| {
        v.get("headers")
            .and_then(|h| h.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (get("task"), get("id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_record_is_matched_by_its_leading_element() {
        let raw =
            br#"{"headers": {"timelimit": [NaN, null]}, "properties": {"delivery_tag": "t"}}"#;
        let mut record = b"[".to_vec();
        record.extend_from_slice(raw);
        record.extend_from_slice(br#", "", "celery"]"#);
        assert!(record_of(&record, raw));
        assert!(!record_of(&record, &raw[..raw.len() - 1]));
        assert!(!record_of(raw, raw));
    }

    #[test]
    fn redelivered_sets_flags_and_keeps_big_numbers() {
        let raw = br#"{"body": "e30=", "headers": {"n": 123456789012345678901234567890}, "properties": {"priority": 6, "delivery_info": {"exchange": "", "routing_key": "q"}}}"#;
        let (out, pri) = redelivered(raw);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(pri, 6);
        assert_eq!(v["headers"]["redelivered"], Value::Bool(true));
        assert_eq!(
            v["properties"]["delivery_info"]["redelivered"],
            Value::Bool(true)
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("123456789012345678901234567890"));
        assert_eq!(redelivered(b"garbage").0, b"garbage");
    }
}

//! Revoked task ids: a bounded set with expiry, as Celery's `worker_state.revoked` (50 000
//! entries, each kept 10 800 s; `CELERY_WORKER_REVOKES_MAX` / `CELERY_WORKER_REVOKE_EXPIRES`
//! honoured, as Celery reads them from the environment).
//!
//! Filled by `revoke` broadcasts and by other workers' `hello` (mingle) data. With the celeriac
//! setting `revoked_key`, every revocation is also written to a sorted set in the broker's Redis
//! and read back at start, so restarts and every replica see it (Celery's `--statedb`).
//! Checked on receipt, when an ETA fires and just before running: a revoked message gets
//! REVOKED ("revoked") and is acked.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use celeriac_broker_bridge::codec::TaskMessage;
use celeriac_broker_bridge::transport::Broker;
use serde_json::{Map, Value};

/// Celery's default bound on the set.
pub(crate) const DEFAULT_MAX: usize = 50_000;
/// Celery's default lifetime of an entry.
pub(crate) const DEFAULT_EXPIRES: Duration = Duration::from_secs(10_800);

/// Stale pairs tolerated in the insertion queue beyond twice the live ids.
const COMPACT_SLACK: usize = 64;

/// The bounded, expiring set of revoked ids, and its persistent copy in the broker's Redis (with
/// `revoked_key`).
pub(crate) struct Revoked {
    max: usize,
    expires: Duration,
    inner: Mutex<Entries>,
    /// Revoked stamps: stamp name → the values revoked (Celery's `worker_state.revoked_stamps`).
    stamps: Mutex<Map<String, Value>>,
    /// The broker connection and the sorted set's key, when revocations persist.
    persisted: Option<(Broker, String)>,
}

#[derive(Default)]
struct Entries {
    /// id → unix time it was revoked.
    at: HashMap<String, f64>,
    /// (id, time) in time order; stale pairs are skipped when their time no longer matches.
    order: VecDeque<(String, f64)>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl Revoked {
    /// An empty set with these bounds.
    pub(crate) fn new(max: usize, expires: Duration) -> Self {
        Revoked {
            max: max.max(1),
            expires,
            inner: Mutex::default(),
            stamps: Mutex::default(),
            persisted: None,
        }
    }

    /// Persist revocations in the sorted set `key` (the setting `revoked_key`) over `broker`.
    pub(crate) fn persisted(self, broker: Broker, key: Option<String>) -> Self {
        Revoked {
            persisted: key.map(|key| (broker, key)),
            ..self
        }
    }

    /// Bounds from `CELERY_WORKER_REVOKES_MAX` / `CELERY_WORKER_REVOKE_EXPIRES`, else Celery's.
    pub(crate) fn from_env() -> Self {
        let max = std::env::var("CELERY_WORKER_REVOKES_MAX")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX);
        let expires = std::env::var("CELERY_WORKER_REVOKE_EXPIRES")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_EXPIRES, Duration::from_secs_f64);
        Self::new(max, expires)
    }

    /// Add `id`, revoked at unix time `at`.
    pub(crate) fn insert_at(&self, id: &str, at: f64) {
        let mut e = self.inner.lock().expect("revoked lock");
        e.at.insert(id.to_string(), at);
        // Kept in time order (an older time, merged or loaded, goes before newer ones), so every
        // expired id is at the front, where the purge drops it.
        let pos = e.order.partition_point(|(_, t)| *t <= at);
        e.order.insert(pos, (id.to_string(), at));
        self.purge_locked(&mut e);
    }

    /// Add `id`, revoked now.
    pub(crate) fn insert(&self, id: &str) {
        self.insert_at(id, now());
    }

    /// Whether `id` is revoked (and not expired).
    pub(crate) fn contains(&self, id: &str) -> bool {
        let e = self.inner.lock().expect("revoked lock");
        e.at.get(id)
            .is_some_and(|t| now() - t < self.expires.as_secs_f64())
    }

    /// The ids, oldest first (expired ones dropped).
    pub(crate) fn ids(&self) -> Vec<String> {
        let mut e = self.inner.lock().expect("revoked lock");
        self.purge_locked(&mut e);
        let oldest_kept = now() - self.expires.as_secs_f64();
        let Entries { at, order } = &*e;
        order
            .iter()
            .filter(|(id, t)| at.get(id) == Some(t) && *t >= oldest_kept)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Revoke by stamps (`revoke_by_stamped_headers`): each stamp's values are added to those
    /// already revoked under its name, as Celery appends them.
    pub(crate) fn revoke_stamps(&self, headers: &Map<String, Value>) {
        let mut stamps = self.stamps.lock().expect("revoked stamps lock");
        for (name, values) in headers {
            let mut all = match stamps.get(name) {
                None | Some(Value::Null) => Vec::new(),
                Some(old) => maybe_list(old),
            };
            all.extend(maybe_list(values));
            stamps.insert(name.clone(), Value::Array(all));
        }
    }

    /// The stamp that revokes a request with these `stamps` (name → value, as
    /// [`request_stamps`] gives them), as Celery's `Request.revoked` finds it: a stamp whose
    /// value (or one of whose values, for a list) is among the revoked ones.
    pub(crate) fn revoking_stamp(&self, stamps: &Map<String, Value>) -> Option<(String, Value)> {
        let revoked = self.stamps.lock().expect("revoked stamps lock");
        for (name, value) in stamps {
            let Some(revoked_values) = revoked.get(name) else {
                continue;
            };
            let revoked_values = maybe_list(revoked_values);
            let candidates = match value {
                Value::Null => continue,
                Value::Array(values) => values.clone(),
                one => vec![one.clone()],
            };
            if let Some(hit) = candidates
                .into_iter()
                .find(|v| revoked_values.iter().any(|r| py_eq(r, v)))
            {
                return Some((name.clone(), hit));
            }
        }
        None
    }

    /// Merge another worker's `hello` data: a list of ids (Celery 5.7) or a dict
    /// `{id: [monotonic_ts, id]}` (≤ 5.6; the timestamps mean nothing here, so "now" is used).
    pub(crate) fn merge(&self, revoked: &Value) -> usize {
        let ids: Vec<&str> = match revoked {
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            Value::Object(m) => m.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        for id in &ids {
            if !self.contains(id) {
                self.insert(id);
            }
        }
        ids.len()
    }

    fn purge_locked(&self, e: &mut Entries) {
        let oldest_kept = now() - self.expires.as_secs_f64();
        // Pairs superseded by a later revoke of the same id, behind a live one, are dropped
        // whenever they outnumber the live ids: the queue stays within twice the set (plus a
        // little), amortized O(1) per insert.
        if e.order.len() > 2 * e.at.len() + COMPACT_SLACK {
            let Entries { at, order } = e;
            order.retain(|(id, t)| at.get(id) == Some(t));
        }
        while let Some((id, t)) = e.order.front().cloned() {
            let current = e.at.get(&id) == Some(&t);
            if current && t >= oldest_kept && e.at.len() <= self.max {
                break;
            }
            e.order.pop_front();
            if current {
                e.at.remove(&id);
            }
        }
    }
    /// Revoke `ids` on this worker: in memory and, with `revoked_key`, in Redis.
    pub(crate) async fn revoke(&self, ids: &[String]) {
        for id in ids {
            self.insert(id);
        }
        self.persist(ids).await;
    }

    /// Write `ids` to the persistent set, if one is configured.
    async fn persist(&self, ids: &[String]) {
        let Some((broker, key)) = &self.persisted else {
            return;
        };
        let expires = self.expires.as_secs_f64();
        if let Err(e) = broker.revoked_add(key, ids, now(), expires, self.max).await {
            tracing::error!(error = %e, "could not persist revoked ids");
        }
    }

    /// Load the persistent set (at start), if one is configured.
    pub(crate) async fn load(&self) {
        let Some((broker, key)) = &self.persisted else {
            return;
        };
        match broker
            .revoked_load(key, now() - self.expires.as_secs_f64())
            .await
        {
            Ok(items) => {
                for (id, at) in &items {
                    self.insert_at(id, *at);
                }
                tracing::info!(count = items.len(), "loaded revoked task ids");
            }
            Err(e) => tracing::error!(error = %e, "could not load revoked task ids"),
        }
    }

    /// Whether `msg` is revoked, by its id or one of its stamps (logged: it is not run).
    pub(crate) fn refuses(&self, msg: &TaskMessage) -> bool {
        if self.contains(&msg.id) {
            tracing::info!("task revoked; not run");
        } else if let Some((name, value)) = self.revoking_stamp(&request_stamps(msg)) {
            let mut header = Map::new();
            header.insert(name, value);
            let header = celeriac_broker_bridge::codec::value_repr(&Value::Object(header));
            tracing::info!(revoked_by_header = %header, "task revoked; not run");
        } else {
            return false;
        }
        true
    }
}

/// A request's stamps as Celery's `Request.stamps` has them: each name of the message's
/// `stamped_headers` with its value in `stamps` (`null` when missing).
pub(crate) fn request_stamps(msg: &TaskMessage) -> Map<String, Value> {
    msg.stamped_headers
        .iter()
        .flatten()
        .map(|name| {
            let v = msg.stamps.get(name).cloned().unwrap_or(Value::Null);
            (name.clone(), v)
        })
        .collect()
}

/// Celery's `maybe_list`: a list as it is, anything else as a list of one.
pub(crate) fn maybe_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

/// Python's `==` on JSON values: numbers (and booleans, as 1 and 0) by value.
pub(crate) fn py_eq(a: &Value, b: &Value) -> bool {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let r = Revoked::new(2, Duration::from_secs(100));
        r.insert("a");
        r.insert("b");
        r.insert("c");
        assert!(!r.contains("a"));
        assert_eq!(r.ids(), vec!["b", "c"]);
        r.insert_at("old", now() - 200.0);
        assert!(!r.contains("old"));
        assert!(!r.ids().contains(&"old".to_string()));
    }

    #[test]
    fn stale_pairs_behind_a_live_head_do_not_pile_up() {
        let r = Revoked::new(1000, Duration::from_secs(100));
        r.insert("live");
        for _ in 0..10_000 {
            r.insert("again");
        }
        for i in 0..500 {
            r.insert_at(&format!("expired-{i}"), now() - 200.0);
        }
        let e = r.inner.lock().unwrap();
        assert!(
            e.order.len() <= 2 * e.at.len() + COMPACT_SLACK + 1,
            "{} pairs for {} ids",
            e.order.len(),
            e.at.len()
        );
        assert_eq!(e.at.len(), 2, "expired ids dropped");
        drop(e);
        assert_eq!(r.ids(), vec!["live", "again"]);
        assert!(r.contains("again") && r.contains("live"));
    }

    #[test]
    fn merges_list_and_dict_forms() {
        let r = Revoked::new(10, Duration::from_secs(100));
        assert_eq!(r.merge(&serde_json::json!(["x", "y"])), 2);
        assert_eq!(r.merge(&serde_json::json!({"z": [12.5, "z"]})), 1);
        assert!(r.contains("x") && r.contains("y") && r.contains("z"));
        assert_eq!(r.merge(&serde_json::json!(null)), 0);
    }

    #[test]
    fn stamps_revoke_as_celery_matches_them() {
        let r = Revoked::new(10, Duration::from_secs(100));
        let stamps = |v: Value| v.as_object().cloned().expect("an object");
        assert_eq!(
            r.revoking_stamp(&stamps(serde_json::json!({"m": "4242"}))),
            None
        );
        r.revoke_stamps(&stamps(serde_json::json!({"m": "4242"})));
        r.revoke_stamps(&stamps(
            serde_json::json!({"m": [1234, "x"], "other": null}),
        ));
        assert_eq!(
            r.revoking_stamp(&stamps(serde_json::json!({"m": "4242"}))),
            Some(("m".into(), serde_json::json!("4242")))
        );
        // A number stamp matches the number, not its text; 1234.0 == 1234 as in Python.
        assert_eq!(
            r.revoking_stamp(&stamps(serde_json::json!({"m": 4242}))),
            None
        );
        assert_eq!(
            r.revoking_stamp(&stamps(serde_json::json!({"m": 1234.0}))),
            Some(("m".into(), serde_json::json!(1234.0)))
        );
        // A list stamp: any of its values.
        assert_eq!(
            r.revoking_stamp(&stamps(serde_json::json!({"a": 1, "m": ["y", "x"]}))),
            Some(("m".into(), serde_json::json!("x")))
        );
        assert_eq!(
            r.revoking_stamp(&stamps(serde_json::json!({"m": null}))),
            None
        );
        assert_eq!(
            r.revoking_stamp(&stamps(serde_json::json!({"other": null}))),
            None
        );
        assert_eq!(
            r.revoking_stamp(&stamps(serde_json::json!({"m2": "x"}))),
            None
        );
    }
}

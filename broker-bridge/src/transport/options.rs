//! `broker_transport_options` (Celery's `CELERY_BROKER_TRANSPORT_OPTIONS`) for the Redis transport.

use std::time::Duration;

use serde_json::{Map, Value};

use super::error::{Result, TransportError};

/// The kombu Redis transport options celeriac honours, with kombu's defaults.
///
/// Producers and every worker (Python or Rust) sharing a Redis database must agree on
/// `priority_steps`, `sep`, `global_keyprefix`, the `unacked*` keys and `visibility_timeout`.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportOptions {
    /// Unacked messages older than this are restored by any worker's sweep (kombu: 3600 s).
    pub visibility_timeout: Duration,
    /// Priority buckets, ascending, starting at 0 (kombu: `[0, 3, 6, 9]`).
    pub priority_steps: Vec<u8>,
    /// Separator inside list keys and binding members (kombu: `"\x06\x16"`).
    pub sep: String,
    /// Prefix put verbatim in front of every key (kombu: empty).
    pub global_keyprefix: String,
    /// Hash of delivered, unacknowledged messages (kombu: `unacked`).
    pub unacked_key: String,
    /// Sorted set of delivery times of unacknowledged messages (kombu: `unacked_index`).
    pub unacked_index_key: String,
    /// Lock taken by the restore sweep (kombu: `unacked_mutex`).
    pub unacked_mutex_key: String,
    /// Lifetime of the sweep lock (kombu: 300 s).
    pub unacked_mutex_expire: Duration,
    /// At most this many messages restored per sweep (kombu: no limit).
    pub unacked_restore_limit: Option<usize>,
    /// How often a worker should run the sweep: kombu's `unacked_restore_interval` ×
    /// `unacked_restore_throttle` (10 s × 10 = 100 s).
    pub restore_interval: Duration,
    /// kombu's `deadletter_queue`: where a publish to a named exchange goes when no binding matches.
    pub deadletter_queue: Option<String>,
    /// Order in which queues are tried within one priority: `round_robin` (kombu's default),
    /// `sorted` or `priority` (the given order, never rotated).
    pub queue_order_strategy: QueueOrder,
    /// celeriac only: the list that receives messages no worker can handle (with a reasons hash
    /// at `<key>.reasons`; see the README). Default `celeriac.dead_letter`; prefixed like every key.
    pub dead_letter_key: String,
    /// celeriac only: elements longer than this many bytes are moved to the dead-letter list by
    /// the fetch script itself, unparsed and unchanged (reason `too large: …`), so neither Redis's
    /// JSON parser nor the worker's memory ever sees them. `None` = no limit. Set by the worker
    /// from `max_message_bytes`, not read from `broker_transport_options`.
    pub max_message_bytes: Option<usize>,
    /// celeriac only: the file the URL was read from (`CELERY_BROKER_URL_FILE`); its user name
    /// and password are re-read so a rotated password needs no restart (see
    /// [`crate::redis_url::RedisUrl::with_credentials_file`]). Set by the worker, not read from
    /// `broker_transport_options`.
    pub credentials_file: Option<std::path::PathBuf>,
    /// kombu's `fanout_prefix`: `None` when disabled (`false`), else the text put before the
    /// exchange of PUB/SUB channels, `{db}` standing for the database number (kombu: `/{db}.`).
    pub fanout_prefix: Option<String>,
    /// kombu's `fanout_patterns`: add `/<routing key>` to PUB/SUB channel names (kombu: true).
    pub fanout_patterns: bool,
}

/// How queues are ordered within one priority step when fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOrder {
    /// After a message is taken from a queue, that queue moves to the end (kombu default).
    RoundRobin,
    /// Alphabetical, never rotated.
    Sorted,
    /// The order given by the caller, never rotated.
    Priority,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            visibility_timeout: Duration::from_secs(3600),
            priority_steps: vec![0, 3, 6, 9],
            sep: "\x06\x16".into(),
            global_keyprefix: String::new(),
            unacked_key: "unacked".into(),
            unacked_index_key: "unacked_index".into(),
            unacked_mutex_key: "unacked_mutex".into(),
            unacked_mutex_expire: Duration::from_secs(300),
            unacked_restore_limit: None,
            restore_interval: Duration::from_secs(100),
            deadletter_queue: None,
            queue_order_strategy: QueueOrder::RoundRobin,
            dead_letter_key: "celeriac.dead_letter".into(),
            max_message_bytes: None,
            credentials_file: None,
            fanout_prefix: Some("/{db}.".into()),
            fanout_patterns: true,
        }
    }
}

impl TransportOptions {
    /// Read the options from the JSON object of `broker_transport_options`. Unknown keys are
    /// ignored (they belong to other transports or to kombu features celeriac does not need);
    /// `null` means "default". Known keys with a wrong type or range are an error.
    pub fn from_json(v: &Value) -> Result<Self> {
        let mut o = TransportOptions::default();
        let map = match v {
            Value::Null => return Ok(o),
            Value::Object(m) => m,
            _ => {
                return Err(TransportError::Option {
                    key: "broker_transport_options".into(),
                    reason: "must be a JSON object".into(),
                })
            }
        };
        if let Some(s) = seconds(map, "visibility_timeout")? {
            o.visibility_timeout = s;
        }
        if let Some(s) = seconds(map, "unacked_mutex_expire")? {
            o.unacked_mutex_expire = s;
        }
        if let Some(steps) = get(map, "priority_steps") {
            o.priority_steps = priority_steps(steps)?;
        }
        for (key, slot) in [
            ("sep", &mut o.sep),
            ("global_keyprefix", &mut o.global_keyprefix),
            ("unacked_key", &mut o.unacked_key),
            ("unacked_index_key", &mut o.unacked_index_key),
            ("unacked_mutex_key", &mut o.unacked_mutex_key),
            ("dead_letter_key", &mut o.dead_letter_key),
        ] {
            if let Some(s) = string(map, key)? {
                *slot = s;
            }
        }
        if o.sep.is_empty() {
            return Err(bad("sep", "must not be empty"));
        }
        o.deadletter_queue = string(map, "deadletter_queue")?.filter(|s| !s.is_empty());
        if let Some(v) = get(map, "unacked_restore_limit") {
            let n = v
                .as_u64()
                .ok_or_else(|| bad("unacked_restore_limit", "must be a non-negative integer"))?;
            o.unacked_restore_limit = (n > 0).then_some(n as usize);
        }
        let interval = seconds(map, "unacked_restore_interval")?.unwrap_or(Duration::from_secs(10));
        let throttle = match get(map, "unacked_restore_throttle") {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| bad("unacked_restore_throttle", "must be a non-negative integer"))?
                .max(1),
            None => 10,
        };
        o.restore_interval = interval.saturating_mul(throttle.min(u32::MAX as u64) as u32);
        if let Some(s) = string(map, "queue_order_strategy")? {
            o.queue_order_strategy = match s.as_str() {
                "round_robin" => QueueOrder::RoundRobin,
                "sorted" => QueueOrder::Sorted,
                "priority" => QueueOrder::Priority,
                other => {
                    return Err(bad(
                        "queue_order_strategy",
                        &format!("`{other}` is not round_robin, sorted or priority"),
                    ))
                }
            };
        }
        match get(map, "fanout_prefix") {
            None | Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => o.fanout_prefix = None,
            Some(Value::String(p)) => o.fanout_prefix = Some(p.clone()),
            Some(_) => return Err(bad("fanout_prefix", "must be a boolean or a string")),
        }
        match get(map, "fanout_patterns") {
            None => {}
            Some(Value::Bool(b)) => o.fanout_patterns = *b,
            Some(_) => return Err(bad("fanout_patterns", "must be a boolean")),
        }
        Ok(o)
    }
}

fn bad(key: &str, reason: &str) -> TransportError {
    TransportError::Option {
        key: key.into(),
        reason: reason.into(),
    }
}

fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn string(map: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match get(map, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(key, "must be a string")),
    }
}

fn seconds(map: &Map<String, Value>, key: &str) -> Result<Option<Duration>> {
    let Some(v) = get(map, key) else {
        return Ok(None);
    };
    let secs = v
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e12)
        .ok_or_else(|| bad(key, "must be a non-negative number of seconds"))?;
    Ok(Some(Duration::from_secs_f64(secs)))
}

fn priority_steps(v: &Value) -> Result<Vec<u8>> {
    let err = || bad("priority_steps", "must be a list of integers from 0 to 255");
    let mut steps = v
        .as_array()
        .ok_or_else(err)?
        .iter()
        .map(|s| {
            s.as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(err)
        })
        .collect::<Result<Vec<u8>>>()?;
    steps.sort_unstable();
    steps.dedup();
    if steps.first() != Some(&0) {
        return Err(bad(
            "priority_steps",
            "must include 0 (the list without a suffix)",
        ));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fanout_options() {
        let o = TransportOptions::from_json(&json!({})).unwrap();
        assert_eq!(o.fanout_prefix.as_deref(), Some("/{db}."));
        assert!(o.fanout_patterns);
        let o =
            TransportOptions::from_json(&json!({"fanout_prefix": false, "fanout_patterns": false}))
                .unwrap();
        assert_eq!(o.fanout_prefix, None);
        assert!(!o.fanout_patterns);
        let o = TransportOptions::from_json(&json!({"fanout_prefix": "x{db}:"})).unwrap();
        assert_eq!(o.fanout_prefix.as_deref(), Some("x{db}:"));
        assert!(TransportOptions::from_json(&json!({"fanout_prefix": 3})).is_err());
        assert!(TransportOptions::from_json(&json!({"fanout_patterns": "yes"})).is_err());
    }

    #[test]
    fn defaults_match_kombu() {
        let o = TransportOptions::from_json(&json!({})).unwrap();
        assert_eq!(o, TransportOptions::default());
        assert_eq!(o.visibility_timeout, Duration::from_secs(3600));
        assert_eq!(o.priority_steps, vec![0, 3, 6, 9]);
        assert_eq!(o.sep, "\x06\x16");
        assert_eq!(o.restore_interval, Duration::from_secs(100));
        assert_eq!(TransportOptions::from_json(&Value::Null).unwrap(), o);
    }

    #[test]
    fn reads_known_keys_and_ignores_others() {
        let o = TransportOptions::from_json(&json!({
            "visibility_timeout": 43200, "priority_steps": [9, 0, 1, 2, 3, 4, 5, 6, 7, 8],
            "global_keyprefix": "app:", "unacked_key": "u", "unacked_mutex_expire": 1.5,
            "unacked_restore_interval": 2, "unacked_restore_throttle": 3,
            "queue_order_strategy": "priority", "deadletter_queue": "dlq",
            "master_name": "mymaster", "fanout_prefix": true, "socket_timeout": null
        }))
        .unwrap();
        assert_eq!(o.visibility_timeout, Duration::from_secs(43200));
        assert_eq!(o.priority_steps, (0..10).collect::<Vec<u8>>());
        assert_eq!(o.global_keyprefix, "app:");
        assert_eq!(o.unacked_key, "u");
        assert_eq!(o.unacked_mutex_expire, Duration::from_millis(1500));
        assert_eq!(o.restore_interval, Duration::from_secs(6));
        assert_eq!(o.queue_order_strategy, QueueOrder::Priority);
        assert_eq!(o.deadletter_queue.as_deref(), Some("dlq"));
    }

    #[test]
    fn wrong_types_are_errors() {
        for bad in [
            json!({"visibility_timeout": "1h"}),
            json!({"visibility_timeout": -1}),
            json!({"priority_steps": [3, 6]}),
            json!({"priority_steps": [0, 300]}),
            json!({"priority_steps": "0,3"}),
            json!({"sep": ""}),
            json!({"global_keyprefix": 1}),
            json!({"queue_order_strategy": "random"}),
            json!([1]),
        ] {
            assert!(
                matches!(
                    TransportOptions::from_json(&bad),
                    Err(TransportError::Option { .. })
                ),
                "{bad}"
            );
        }
    }
}

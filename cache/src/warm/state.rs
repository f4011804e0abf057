//! The resumable state of one warm job in Redis: `{"watermark": .., "pass": {"kind", "cursor",
//! "target"} | null, "last_success_ms": ..}`. Saved only while the run lock holds our token, and
//! only after the batch it describes is written.

use crate::L2Conn;
use serde_json::{json, Value};

const SAVE_IF_LOCKED: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0";

/// Where a job stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WarmState {
    /// The incremental watermark reached by the last completed pass (`null` before the first).
    pub watermark: Value,
    /// The pass in progress, if a run stopped in the middle: `"full"` or `"incremental"`.
    pub pass_kind: Option<String>,
    /// The last key (or key tuple) written by the pass in progress.
    pub cursor: Value,
    /// The watermark the pass in progress moves to when it completes.
    pub target: Value,
    /// When a run last completed (unix ms).
    pub last_success_ms: Option<u64>,
}

impl WarmState {
    /// Parse the stored JSON (`None`: unreadable, start fresh).
    pub fn parse(text: &str) -> Option<WarmState> {
        let v: Value = serde_json::from_str(text).ok()?;
        let pass = v.get("pass").filter(|p| p.is_object());
        Some(WarmState {
            watermark: v.get("watermark").cloned().unwrap_or(Value::Null),
            pass_kind: pass
                .and_then(|p| p.get("kind"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            cursor: pass
                .and_then(|p| p.get("cursor"))
                .cloned()
                .unwrap_or(Value::Null),
            target: pass
                .and_then(|p| p.get("target"))
                .cloned()
                .unwrap_or(Value::Null),
            last_success_ms: v.get("last_success_ms").and_then(Value::as_u64),
        })
    }

    /// The stored JSON.
    pub fn to_json(&self) -> String {
        let pass = match &self.pass_kind {
            Some(kind) => json!({"kind": kind, "cursor": self.cursor, "target": self.target}),
            None => Value::Null,
        };
        json!({
            "watermark": self.watermark,
            "pass": pass,
            "last_success_ms": self.last_success_ms,
        })
        .to_string()
    }
}

/// Reads and (lock-guarded) writes one job's state.
#[derive(Clone)]
pub struct StateStore {
    conn: L2Conn,
    key: String,
    lock_key: String,
}

impl StateStore {
    /// The state at `key`, guarded by the lock at `lock_key` (on a cluster both in one slot:
    /// see [`super::JobKeys`]).
    pub fn new(conn: L2Conn, key: String, lock_key: String) -> Self {
        StateStore {
            conn,
            key,
            lock_key,
        }
    }

    /// The stored state (default when absent or unreadable).
    pub async fn load(&mut self) -> redis::RedisResult<WarmState> {
        let text: Option<String> = redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut self.conn)
            .await?;
        Ok(text
            .as_deref()
            .and_then(WarmState::parse)
            .unwrap_or_default())
    }

    /// Save `state` if the lock still holds `token`; `Ok(false)` when it does not.
    pub async fn save(&mut self, state: &WarmState, token: &str) -> redis::RedisResult<bool> {
        let saved: i64 = redis::Script::new(SAVE_IF_LOCKED)
            .key(&self.key)
            .key(&self.lock_key)
            .arg(token)
            .arg(state.to_json())
            .invoke_async(&mut self.conn)
            .await?;
        Ok(saved == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = WarmState {
            watermark: json!("2024-01-01T00:00:00+00:00"),
            pass_kind: Some("full".into()),
            cursor: json!(123456789012345678901234567890u128.to_string()),
            target: json!(7),
            last_success_ms: Some(5),
        };
        assert_eq!(WarmState::parse(&s.to_json()), Some(s));
        assert_eq!(WarmState::parse("nope"), None);
    }
}

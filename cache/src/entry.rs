//! A cached value as held in L1 and as stored (JSON) in L2.
//!
//! L2 holds `{"found": true, "value": <the rows>, "delta_ms": <load time>, "expires_at_ms":
//! <unix ms>}` so other services can read `value`; `found: false` is a cached "not found".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// One cached result.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The value; `None` is a cached "not found".
    pub value: Option<Value>,
    /// How long the load took (XFetch's delta).
    pub delta_ms: u64,
    /// When the L2 copy expires (unix milliseconds).
    pub expires_at_ms: u64,
    /// Approximate size in bytes (the L1 weigher's input).
    pub size: u32,
    /// How long L1 may keep it.
    pub l1_ttl: Duration,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Entry {
    /// The L2 JSON text of this entry.
    pub fn to_l2(&self) -> String {
        json!({
            "found": self.value.is_some(),
            "value": self.value.clone().unwrap_or(Value::Null),
            "delta_ms": self.delta_ms,
            "expires_at_ms": self.expires_at_ms,
        })
        .to_string()
    }

    /// Parse an L2 JSON text; `None` when it is not ours.
    pub fn from_l2(text: &str) -> Option<Entry> {
        let v: Value = serde_json::from_str(text).ok()?;
        let obj = v.as_object()?;
        let found = obj.get("found")?.as_bool()?;
        Some(Entry {
            value: found.then(|| obj.get("value").cloned().unwrap_or(Value::Null)),
            delta_ms: obj.get("delta_ms").and_then(Value::as_u64).unwrap_or(0),
            expires_at_ms: obj
                .get("expires_at_ms")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            size: u32::try_from(text.len()).unwrap_or(u32::MAX),
            l1_ttl: Duration::ZERO,
        })
    }

    /// Time left before the L2 copy expires.
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(now_ms()))
    }

    /// XFetch (Vattani et al.): recompute early when `now - delta * beta * ln(u) >= expiry`,
    /// for a uniform draw `u` in (0, 1] (0 is taken as the smallest positive float).
    pub fn should_refresh_early(&self, beta: f64, u: f64, now_ms: u64) -> bool {
        let early = (self.delta_ms as f64) * beta * -u.max(f64::MIN_POSITIVE).ln();
        (now_ms as f64) + early >= self.expires_at_ms as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(delta_ms: u64, expires_at_ms: u64) -> Entry {
        Entry {
            value: Some(Value::Null),
            delta_ms,
            expires_at_ms,
            size: 0,
            l1_ttl: Duration::ZERO,
        }
    }

    #[test]
    fn xfetch_refreshes_early_by_delta_beta_ln_u() {
        // 1 s load, 500 ms before expiry: -ln(u) ≥ 0.5 ⇔ u ≤ e^-0.5 ≈ 0.6065.
        let e = entry(1_000, 10_500);
        assert!(e.should_refresh_early(1.0, 0.6, 10_000));
        assert!(!e.should_refresh_early(1.0, 0.61, 10_000));
        // u = 1 never refreshes before expiry, always at or after it.
        assert!(!e.should_refresh_early(1.0, 1.0, 10_499));
        assert!(e.should_refresh_early(1.0, 1.0, 10_500));
        // u = 0 is the smallest positive draw: a huge but finite head start.
        assert!(e.should_refresh_early(1.0, 0.0, 0));
        // beta scales the head start.
        assert!(e.should_refresh_early(2.0, 0.7, 10_000));
        assert!(!e.should_refresh_early(0.5, 0.7, 10_000));
    }
}

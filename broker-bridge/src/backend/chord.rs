//! Chords on the Redis backend ("native join"): the chord size key a chord's applier writes, and
//! the chord-part-return every header task does, with Celery 5.7's keys and scripts so Python
//! 5.7 workers, Python ≤ 5.6 workers and celeriac can share one chord.
//!
//! Keys (all `celery-taskset-meta-<gid>` + suffix): `.s` size, `.j` the parts (a ZSET scored by
//! `group_index`), `.t` size adjustment (`add_to_chord`), `.d` dedup set of `task_id:index`
//! (5.7), `.c` the dispatch claim, `done` after the body was published (5.7).
//!
//! ≤ 5.6 workers ZADD their part and count without `.d`/`.c`: a part they redeliver with the same
//! result is the same ZSET member and is not counted twice, and they fire the body when their
//! count reaches the size; so does a claim winner here, and the count reaches the size once.

use serde_json::Value;

use super::python_json;
use super::states::TaskState;
use super::store::{BackendError, ResultBackend};

/// Celery 5.7's `CHORD_PART_RETURN_LUA` behaviour: skip when `.c` is `done`; add the part unless
/// `task_id:index` is in `.d`; count; refresh TTLs; claim `.c` when the count reaches the size.
/// A claim already holding the caller's token counts as won: a call repeated because its reply
/// was lost (connection cut) still gets the claim it took.
const PART_RETURN_SCRIPT: &str = r#"
local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tid, value, score = ARGV[1], ARGV[2], ARGV[3]
local expires, group_expires = tonumber(ARGV[4]), tonumber(ARGV[5])
local claim_expires, token = tonumber(ARGV[6]), ARGV[7]
if redis.call('GET', ckey) == 'done' then
  return {-1, 0, 0, 0}
end
local member = tid .. ':' .. score
if redis.call('SISMEMBER', dkey, member) == 0 then
  redis.call('ZADD', jkey, score, value)
  redis.call('SADD', dkey, member)
end
local count = redis.call('ZCOUNT', jkey, '-inf', '+inf')
if expires > 0 then
  for _, key in ipairs({jkey, tkey, skey, dkey}) do
    redis.call('EXPIRE', key, expires)
  end
  if group_expires > 0 then
    redis.call('EXPIRE', gkey, group_expires)
  end
end
local diff = tonumber(redis.call('GET', tkey) or '0') or 0
local size = redis.call('GET', skey)
local claimed = 0
if size and count == (tonumber(size) or -1) + diff then
  if redis.call('GET', ckey) == token then
    claimed = 1
  elseif redis.call('SET', ckey, token, 'NX', 'EX', claim_expires) then
    claimed = 1
  end
end
return {count, diff, size and 1 or 0, claimed}
"#;

/// Extend our claim, or take an expired one back while the chord data remains (5.7).
const CLAIM_EXTEND_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
if not redis.call('GET', KEYS[1]) and redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]), 'NX') and 1 or 0
end
return 0
"#;

/// Token-checked cleanup after the body was published: drop the data, mark `.c` `done` (5.7).
const CLEANUP_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  redis.call('SET', KEYS[1], 'done', 'EX', tonumber(ARGV[2]))
  return 1
end
return 0
"#;

/// One header task's outcome, as it is added to the chord.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordPart {
    /// The chord's group id (the header task's `group`).
    pub group_id: String,
    /// The header task's id.
    pub task_id: String,
    /// The header task's `group_index` (`None`: scored `+inf`, as Celery does).
    pub group_index: Option<i64>,
    /// The final state (SUCCESS, FAILURE or REVOKED).
    pub state: TaskState,
    /// The return value, or the exception dict for FAILURE/REVOKED.
    pub result: Value,
}

impl ChordPart {
    /// `[1, task_id, state, result]` as Python's `json.dumps` writes it (the `.j` member).
    pub fn encode(&self) -> Vec<u8> {
        python_json::to_vec(&Value::Array(vec![
            Value::from(1),
            Value::from(self.task_id.as_str()),
            Value::from(self.state.as_str()),
            self.result.clone(),
        ]))
    }
}

/// A stored part, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct PartResult {
    /// The header task's id.
    pub task_id: String,
    /// Its state string (`SUCCESS`, `FAILURE`, `REVOKED`).
    pub state: String,
    /// Its result (exception dict for failures).
    pub result: Value,
}

impl PartResult {
    /// FAILURE or REVOKED: makes the chord fail (Celery's `PROPAGATE_STATES`).
    pub fn propagates(&self) -> bool {
        self.state == "FAILURE" || self.state == "REVOKED"
    }
}

/// What a chord-part-return found.
#[derive(Debug, Clone, PartialEq)]
pub enum PartReturn {
    /// The body was already published (`.c` = `done`); nothing was added.
    AlreadyDone,
    /// Not all parts are in yet (or another worker holds the claim).
    Pending,
    /// This call completed the set and won the claim: the caller must publish the body (or fail
    /// it), then call [`ResultBackend::chord_finish`] or [`ResultBackend::chord_drop_size`].
    Complete(ChordClaim),
}

/// The right to fire a chord's body, with the header results in `group_index` order.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordClaim {
    /// The chord's group id.
    pub group_id: String,
    /// The token stored in `.c`.
    pub token: String,
    /// How long the claim lasts, in seconds.
    pub claim_expires: u64,
    /// The parts, in `.j` (ZSET) order.
    pub parts: Vec<PartResult>,
}

/// Celery's `result_chord_join_timeout` default (3 s): the claim lasts `max(5, 2 × it)` seconds.
pub const DEFAULT_JOIN_TIMEOUT_S: f64 = 3.0;

impl ResultBackend {
    fn chord_key(&self, gid: &str, suffix: &str) -> String {
        format!("{}{suffix}", self.keys().group(gid))
    }

    /// `result_expires` in whole seconds (0 = none), the TTL of the chord keys.
    fn chord_expires(&self) -> u64 {
        self.options()
            .result_expires
            .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }

    /// Store a chord's size before its header runs, as Celery 5.7's `set_chord_size`:
    /// `DEL .c` (a re-applied chord reuses its id) then `SET .s <n> [EX result_expires]`.
    pub async fn set_chord_size(&self, group_id: &str, size: usize) -> Result<(), BackendError> {
        let mut conn = self.connection();
        let mut pipe = redis::pipe();
        pipe.atomic().del(self.chord_key(group_id, ".c")).ignore();
        let skey = self.chord_key(group_id, ".s");
        match self.chord_expires() {
            0 => pipe.set(skey, size).ignore(),
            ttl => pipe.set_ex(skey, size, ttl).ignore(),
        };
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// One more member in a running chord (Celery's `add_to_chord`): `INCR .t`, which the
    /// part-return adds to the size stored in `.s`.
    pub async fn add_to_chord(&self, group_id: &str) -> Result<(), BackendError> {
        let mut conn = self.connection();
        let _: i64 = redis::cmd("INCR")
            .arg(self.chord_key(group_id, ".t"))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Add a header task's part and, when it completes the set, claim the right to fire the body
    /// and read the parts. `join_timeout_s` is `result_chord_join_timeout`.
    pub async fn chord_part_return(
        &self,
        part: &ChordPart,
        join_timeout_s: f64,
    ) -> Result<PartReturn, BackendError> {
        let token = Self::new_claim_token();
        self.chord_part_return_with_token(part, join_timeout_s, &token)
            .await
    }

    /// A fresh claim token for [`ResultBackend::chord_part_return_with_token`].
    pub fn new_claim_token() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }

    /// [`ResultBackend::chord_part_return`] with the caller's claim token: when a call is
    /// repeated with the same token after an error (its reply lost, the script maybe run), the
    /// claim it took is still recognised as the caller's.
    pub async fn chord_part_return_with_token(
        &self,
        part: &ChordPart,
        join_timeout_s: f64,
        token: &str,
    ) -> Result<PartReturn, BackendError> {
        let gid = &part.group_id;
        let claim_expires = claim_expires(join_timeout_s);
        let score = part
            .group_index
            .map_or_else(|| "+inf".to_string(), |i| i.to_string());
        let expires = self.chord_expires();
        let mut conn = self.connection();
        let (count, _diff, _has_size, claimed): (i64, i64, i64, i64) =
            redis::Script::new(PART_RETURN_SCRIPT)
                .key(self.chord_key(gid, ".j"))
                .key(self.chord_key(gid, ".t"))
                .key(self.chord_key(gid, ".s"))
                .key(self.chord_key(gid, ".d"))
                .key(self.keys().group(gid))
                .key(self.chord_key(gid, ".c"))
                .arg(&part.task_id)
                .arg(self.encode_value(part.encode())?)
                .arg(score)
                .arg(expires)
                .arg(expires)
                .arg(claim_expires)
                .arg(token)
                .invoke_async(&mut conn)
                .await?;
        if count == -1 {
            return Ok(PartReturn::AlreadyDone);
        }
        if claimed != 1 {
            return Ok(PartReturn::Pending);
        }
        let raw: Vec<Vec<u8>> = redis::cmd("ZRANGE")
            .arg(self.chord_key(gid, ".j"))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let parts = raw
            .iter()
            .map(|r| {
                let key = self.chord_key(gid, ".j");
                decode_part(self.decode_value(r, &key)?, &key)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PartReturn::Complete(ChordClaim {
            group_id: gid.clone(),
            token: token.to_string(),
            claim_expires,
            parts,
        }))
    }

    /// Extend the claim just before publishing the body (5.7's lease). False: the claim was lost
    /// to another worker, so the body must not be published.
    pub async fn chord_extend_claim(&self, claim: &ChordClaim) -> Result<bool, BackendError> {
        let mut conn = self.connection();
        let ok: i64 = redis::Script::new(CLAIM_EXTEND_SCRIPT)
            .key(self.chord_key(&claim.group_id, ".c"))
            .key(self.chord_key(&claim.group_id, ".s"))
            .arg(&claim.token)
            .arg(claim.claim_expires * 2)
            .invoke_async(&mut conn)
            .await?;
        Ok(ok == 1)
    }

    /// After the body was published: delete `.j .t .s .d` and set `.c` = `done` so late
    /// duplicates of header parts are ignored. False: the claim had been lost (data left to expire).
    pub async fn chord_finish(&self, claim: &ChordClaim) -> Result<bool, BackendError> {
        let gid = &claim.group_id;
        let done_expires = (claim.claim_expires * 2).max(300);
        let mut conn = self.connection();
        let ok: i64 = redis::Script::new(CLEANUP_SCRIPT)
            .key(self.chord_key(gid, ".c"))
            .key(self.chord_key(gid, ".j"))
            .key(self.chord_key(gid, ".t"))
            .key(self.chord_key(gid, ".s"))
            .key(self.chord_key(gid, ".d"))
            .arg(&claim.token)
            .arg(done_expires)
            .invoke_async(&mut conn)
            .await?;
        Ok(ok == 1)
    }

    /// After a chord failed (`ChordError`): drop `.s` so a late copy of a header task does not
    /// fail it again, as Celery does. The parts stay until they expire.
    pub async fn chord_drop_size(&self, group_id: &str) -> Result<(), BackendError> {
        let mut conn = self.connection();
        let _: i64 = redis::cmd("DEL")
            .arg(self.chord_key(group_id, ".s"))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}

/// Celery 5.7: the dispatch claim lasts `max(5, int(2 × result_chord_join_timeout))` seconds.
pub fn claim_expires(join_timeout_s: f64) -> u64 {
    let t = if join_timeout_s > 0.0 {
        join_timeout_s
    } else {
        5.0
    };
    ((t * 2.0) as u64).max(5)
}

fn decode_part(v: Value, key: &str) -> Result<PartResult, BackendError> {
    let unreadable = |reason: &str| BackendError::UnreadableMeta {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    match v {
        Value::Array(mut items) if items.len() == 4 => {
            let result = items.pop().unwrap_or(Value::Null);
            let state = items[2]
                .as_str()
                .ok_or_else(|| unreadable("part state is not a string"))?;
            let task_id = items[1]
                .as_str()
                .ok_or_else(|| unreadable("part task id is not a string"))?;
            Ok(PartResult {
                task_id: task_id.to_string(),
                state: state.to_string(),
                result,
            })
        }
        _ => Err(unreadable("chord part is not [1, id, state, result]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn part_encodes_as_python_json() {
        let p = ChordPart {
            group_id: "g".into(),
            task_id: "t1".into(),
            group_index: Some(0),
            state: TaskState::Success,
            result: json!(0),
        };
        assert_eq!(p.encode(), br#"[1, "t1", "SUCCESS", 0]"#.to_vec());
    }

    #[test]
    fn decodes_parts_and_refuses_junk() {
        let p = decode_part(
            serde_json::json!([1, "t", "FAILURE", {"exc_type": "ValueError"}]),
            "k",
        )
        .unwrap();
        assert!(p.propagates());
        assert_eq!(p.task_id, "t");
        assert!(decode_part(serde_json::json!([1, 2]), "k").is_err());
        assert!(decode_part(serde_json::json!("nope"), "k").is_err());
    }

    #[test]
    fn claim_lasts_like_celery() {
        assert_eq!(claim_expires(3.0), 6);
        assert_eq!(claim_expires(1.0), 5);
        assert_eq!(claim_expires(0.0), 10);
    }
}

//! Writing and reading task metas in Redis, as Celery's Redis result backend does.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;

use super::keys::BackendKeys;
use super::meta::TaskMeta;
use super::states::TaskState;
use crate::redis_url::{self, UrlError};
use crate::signing::{BodySerializer, SigningError, Verifier};

/// Largest value Celery's Redis backend stores (512 MiB, Redis's string limit).
pub const MAX_VALUE_SIZE: usize = 512 * 1024 * 1024;

/// Celery's default `result_expires`: one day.
pub const DEFAULT_RESULT_EXPIRES: Duration = Duration::from_secs(86_400);

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend URL cannot be used (the message never contains the password).
    #[error("{0}")]
    Url(String),
    /// Redis refused or the connection failed (after the connection manager's reconnects).
    #[error("result backend redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// The encoded meta is larger than [`MAX_VALUE_SIZE`].
    #[error("result of task {task_id} is {size} bytes, larger than the backend's 512 MiB limit")]
    TooLarge {
        /// The task.
        task_id: String,
        /// Encoded size in bytes.
        size: usize,
    },
    /// A value could not be signed (`result_serializer = "auth"`).
    #[error("cannot sign the result: {0}")]
    Sign(#[from] SigningError),
    /// The key holds something that is not a JSON task meta (e.g. a compressed or pickled
    /// result), so it cannot be checked or returned.
    #[error("stored meta at {key} is not a JSON object: {reason}")]
    UnreadableMeta {
        /// The Redis key.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

impl From<UrlError> for BackendError {
    fn from(e: UrlError) -> Self {
        BackendError::Url(format!("invalid result backend URL: {e}"))
    }
}

/// Backend settings, named after Celery's.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// `result_expires`: TTL of stored metas; `None` or zero = never expire. Celery sends whole
    /// seconds; a fraction is rounded up so a short TTL never becomes "no TTL".
    pub result_expires: Option<Duration>,
    /// `result_failure_expires`: TTL of FAILURE metas; `None` = same as `result_expires`,
    /// zero = never expire.
    pub result_failure_expires: Option<Duration>,
    /// `result_backend_transport_options["global_keyprefix"]` (empty = none); see [`BackendKeys`].
    pub global_keyprefix: String,
    /// `result_extended`: also store the request's name, args, kwargs, worker, retries, queue.
    pub result_extended: bool,
    /// Connect timeout (Celery: `redis_socket_connect_timeout`).
    pub socket_connect_timeout: Duration,
    /// Per-command response timeout (Celery: `redis_socket_timeout`, default 120 s).
    pub socket_timeout: Duration,
    /// `result_serializer`: how metas, chord parts and saved groups are written (JSON, or
    /// signed with `auth`).
    pub serializer: BodySerializer,
    /// Checks signed values read back (chord parts, saved groups, metas).
    pub verifier: Option<Arc<Verifier>>,
    /// Refuse unsigned values read back (`result_accept_content` is `auth` only).
    pub require_signed: bool,
    /// celeriac only: the file the URL was read from (`CELERY_RESULT_BACKEND_FILE`); its user
    /// name and password are re-read so a rotated password needs no restart (see
    /// [`redis_url::RedisUrl::with_credentials_file`]).
    pub credentials_file: Option<std::path::PathBuf>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            result_expires: Some(DEFAULT_RESULT_EXPIRES),
            result_failure_expires: None,
            global_keyprefix: String::new(),
            result_extended: false,
            socket_connect_timeout: Duration::from_secs(10),
            socket_timeout: Duration::from_secs(120),
            serializer: BodySerializer::Json,
            verifier: None,
            require_signed: false,
            credentials_file: None,
        }
    }
}

/// A meta ready to store: its key, its bytes (signed when `result_serializer` is `auth`) and
/// its expiry. Made by [`ResultBackend::encode_meta`].
#[derive(Debug, Clone)]
pub struct EncodedMeta {
    key: String,
    bytes: Vec<u8>,
    ttl: u64,
}

/// What [`ResultBackend::store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// The meta was written and published.
    Stored,
    /// A SUCCESS meta was already stored; nothing was written (Celery never overwrites SUCCESS).
    KeptSuccess,
}

/// For each KEYS[i] with value ARGV[2i-1] and TTL ARGV[2i] (seconds, 0 = none), atomically:
/// leave a stored SUCCESS alone, else SET (with EX when the TTL is > 0) and PUBLISH the same bytes
/// on the channel named as the key. Returns one code per key: 1 stored, 0 kept SUCCESS, -1 when
/// the stored value is not a JSON object.
///
/// The usual case, no meta yet, costs one `SET NX` and one `PUBLISH`; only when a meta exists
/// (STARTED, RETRY, a redelivery) is it read and checked before being replaced. A stored meta
/// signed by the `auth` serializer (base64 of `signer\0\1signature\0\1type\0\1encoding\0\1body`)
/// is read through its JSON body; the signature is not checked here, it only guards a SUCCESS.
const STORE_SCRIPT: &str = r#"
local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local SEXTET = {}
for i = 1, 64 do SEXTET[string.byte(B64, i)] = i - 1 end

local function unbase64(text)
  local out, acc, bits = {}, 0, 0
  for i = 1, #text do
    local v = SEXTET[string.byte(text, i)]
    if v then
      acc = acc * 64 + v
      bits = bits + 6
      if bits >= 8 then
        bits = bits - 8
        local byte = math.floor(acc / 2 ^ bits)
        out[#out + 1] = string.char(byte)
        acc = acc - byte * 2 ^ bits
      end
    end
  end
  return table.concat(out)
end

local function decode_meta(stored)
  local ok, meta = pcall(cjson.decode, stored)
  if ok then return ok, meta end
  local raw, pos = unbase64(stored), 1
  for _ = 1, 4 do
    local from, to = string.find(raw, '\0\1', pos, true)
    if not from then return false, nil end
    pos = to + 1
  end
  return pcall(cjson.decode, string.sub(raw, pos))
end

local out = {}
for i = 1, #KEYS do
  local key, value, ttl = KEYS[i], ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local code = 1
  local written
  if ttl > 0 then
    written = redis.call('SET', key, value, 'NX', 'EX', ttl)
  else
    written = redis.call('SET', key, value, 'NX')
  end
  if not written then
    local ok, meta = decode_meta(redis.call('GET', key))
    if not ok or type(meta) ~= 'table' then
      code = -1
    elseif meta['status'] == 'SUCCESS' then
      code = 0
    elseif ttl > 0 then
      redis.call('SET', key, value, 'EX', ttl)
    else
      redis.call('SET', key, value)
    end
  end
  if code == 1 then
    redis.call('PUBLISH', key, value)
  end
  out[i] = code
end
return out
"#;

/// Celery's Redis result backend, write side (plus reads of single metas).
///
/// Cheap to clone: clones share one auto-reconnecting multiplexed connection.
#[derive(Clone)]
pub struct ResultBackend {
    url: redis_url::RedisUrl,
    conn: ConnectionManager,
    keys: BackendKeys,
    opts: BackendOptions,
    store_script: redis::Script,
}

impl std::fmt::Debug for ResultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultBackend")
            .field("keys", &self.keys)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl ResultBackend {
    /// Connect to the backend URL (may differ from the broker's): `redis://`, `rediss://`,
    /// `socket://` (see [`redis_url`]). Fails if the server cannot be reached now.
    pub async fn connect(url: &str, opts: BackendOptions) -> Result<Self, BackendError> {
        let mut url = redis_url::parse(url)?;
        if let Some(path) = &opts.credentials_file {
            url = url.with_credentials_file(path, redis_url::POLL_INTERVAL);
        }
        let config = url.manager_config(
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(opts.socket_connect_timeout))
                .set_response_timeout(Some(opts.socket_timeout)),
        );
        let conn = ConnectionManager::new_with_config(url.client()?, config).await?;
        Ok(ResultBackend {
            url,
            conn,
            keys: BackendKeys::new(&opts.global_keyprefix),
            opts,
            store_script: redis::Script::new(STORE_SCRIPT),
        })
    }

    /// The options in use.
    pub fn options(&self) -> &BackendOptions {
        &self.opts
    }

    /// A handle on the shared connection (for the chord and group modules).
    pub(super) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The key prefixes in use.
    pub fn keys(&self) -> &BackendKeys {
        &self.keys
    }

    /// `celery-task-meta-<id>` with the backend's key prefix rule; also the pub/sub channel.
    pub fn key_for(&self, task_id: &str) -> String {
        self.keys.task(task_id)
    }

    /// Encode `meta` as [`ResultBackend::store`] writes it (signed when `result_serializer` is
    /// `auth`), checking its size. Callers that batch writes encode first, so each caller pays
    /// for its own signature, in parallel, and a retried write is not signed again.
    pub fn encode_meta(&self, meta: &TaskMeta) -> Result<EncodedMeta, BackendError> {
        let bytes = self.encode_value(meta.encode(self.opts.result_extended))?;
        if bytes.len() > MAX_VALUE_SIZE {
            return Err(BackendError::TooLarge {
                task_id: meta.task_id.clone(),
                size: bytes.len(),
            });
        }
        Ok(EncodedMeta {
            key: self.key_for(&meta.task_id),
            bytes,
            ttl: self.ttl_seconds(meta.status),
        })
    }

    /// Store a meta as Celery does: never over a stored SUCCESS; SET with the expiry, and
    /// PUBLISH the same bytes on the channel named as the key (waiting `AsyncResult.get()`
    /// callers are woken by it). Check and write are one atomic script.
    pub async fn store(&self, meta: &TaskMeta) -> Result<StoreOutcome, BackendError> {
        let encoded = self.encode_meta(meta)?;
        self.store_encoded(std::slice::from_ref(&encoded))
            .await?
            .remove(0)
    }

    /// Store many metas in one round trip (one script call), each exactly as [`ResultBackend::store`]
    /// would; one outcome per meta, in order.
    pub async fn store_many(
        &self,
        metas: &[TaskMeta],
    ) -> Result<Vec<Result<StoreOutcome, BackendError>>, BackendError> {
        let mut ready = Vec::with_capacity(metas.len());
        let mut refused: Vec<Option<BackendError>> = Vec::with_capacity(metas.len());
        for meta in metas {
            match self.encode_meta(meta) {
                Ok(encoded) => {
                    ready.push(encoded);
                    refused.push(None);
                }
                Err(e) => refused.push(Some(e)),
            }
        }
        let mut stored = self.store_encoded(&ready).await?.into_iter();
        Ok(refused
            .into_iter()
            .map(|r| match r {
                Some(e) => Err(e),
                None => stored.next().expect("store_encoded: one outcome per meta"),
            })
            .collect())
    }

    /// Store metas encoded by [`ResultBackend::encode_meta`] in one round trip (one script
    /// call), each as [`ResultBackend::store`] would; one outcome per meta, in order.
    pub async fn store_encoded(
        &self,
        metas: &[EncodedMeta],
    ) -> Result<Vec<Result<StoreOutcome, BackendError>>, BackendError> {
        if metas.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.store_script.prepare_invoke();
        for meta in metas {
            inv.key(&meta.key);
            inv.arg(&meta.bytes[..]).arg(meta.ttl);
        }
        let codes: Vec<i64> = inv.invoke_async(&mut self.conn.clone()).await?;
        let mut codes = codes.into_iter();
        Ok(metas
            .iter()
            .map(|meta| match codes.next() {
                Some(1) => Ok(StoreOutcome::Stored),
                Some(0) => Ok(StoreOutcome::KeptSuccess),
                Some(_) => Err(BackendError::UnreadableMeta {
                    key: meta.key.clone(),
                    reason: "not JSON (compressed or pickled results are not supported)".into(),
                }),
                None => Err(BackendError::UnreadableMeta {
                    key: meta.key.clone(),
                    reason: "the store script returned too few outcomes".into(),
                }),
            })
            .collect())
    }

    /// The stored meta of a task as JSON, or `None` when there is none (Celery reads that as
    /// PENDING).
    pub async fn get(&self, task_id: &str) -> Result<Option<Value>, BackendError> {
        let key = self.key_for(task_id);
        let mut conn = self.conn.clone();
        let raw: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        let Some(raw) = raw else { return Ok(None) };
        match self.decode_value(&raw, &key)? {
            v @ Value::Object(_) => Ok(Some(v)),
            _ => Err(BackendError::UnreadableMeta {
                key,
                reason: "JSON but not an object".into(),
            }),
        }
    }

    /// A client with the current credentials (for dedicated PUB/SUB connections).
    pub(super) fn client(&self) -> Result<redis::Client, UrlError> {
        self.url.client()
    }

    /// The bytes stored for a JSON text: as is, or signed (`result_serializer`).
    pub(super) fn encode_value(&self, json: Vec<u8>) -> Result<Vec<u8>, BackendError> {
        Ok(self.opts.serializer.serialize(json)?.body)
    }

    /// A stored value as JSON: plain JSON (unless signatures are required), or a signed value
    /// that the verifier accepts, opened and deserialized.
    pub(super) fn decode_value(&self, raw: &[u8], key: &str) -> Result<Value, BackendError> {
        let unreadable = |reason: String| BackendError::UnreadableMeta {
            key: key.to_string(),
            reason,
        };
        let json = serde_json::from_slice::<Value>(raw);
        match (json, &self.opts.verifier) {
            (Ok(_), _) if self.opts.require_signed => Err(unreadable(
                "unsigned while result_accept_content accepts only signed (auth) values".into(),
            )),
            (Ok(v), _) => Ok(v),
            (Err(e), None) => Err(unreadable(e.to_string())),
            (Err(_), Some(verifier)) => verifier
                .open(raw)
                .map_err(|e| unreadable(format!("signed value refused: {e}")))?
                .value()
                .map_err(|e| unreadable(e.to_string())),
        }
    }

    /// Delete a task's meta (`AsyncResult.forget()`).
    pub async fn forget(&self, task_id: &str) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.key_for(task_id))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Expiry in whole seconds for a meta in `state` (0 = none).
    fn ttl_seconds(&self, state: TaskState) -> u64 {
        let expires = match (state, self.opts.result_failure_expires) {
            (TaskState::Failure, Some(d)) => Some(d),
            _ => self.opts.result_expires,
        };
        expires.map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }
}

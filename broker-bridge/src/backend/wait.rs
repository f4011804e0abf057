//! Waiting for a task's final meta as Celery's Redis `AsyncResult.get()` does: subscribe to the
//! channel named as the meta key (the store script publishes every meta there), then read the key
//! once, so a result stored before the subscription is not missed.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use super::states::TaskState;
use super::store::{BackendError, ResultBackend};

/// How often the key is read again when the PUB/SUB connection is lost while waiting.
const POLL_AFTER_LOSS: Duration = Duration::from_millis(200);

/// Whether a meta is in a final state (`SUCCESS`, `FAILURE`, `REVOKED`).
pub fn is_ready(meta: &Value) -> bool {
    meta.get("status")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<TaskState>().ok())
        .is_some_and(TaskState::is_ready)
}

impl ResultBackend {
    /// The task's meta once it is in a final state, or `None` if it is not within `timeout`.
    /// Metas in other states (`STARTED`, `RETRY`, …) published meanwhile are skipped.
    pub async fn wait_ready(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<Value>, BackendError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let key = self.key_for(task_id);
        let mut pubsub = self.client()?.get_async_pubsub().await?;
        pubsub.subscribe(&key).await?;
        if let Some(meta) = self.get(task_id).await?.filter(is_ready) {
            return Ok(Some(meta));
        }
        let mut messages = pubsub.on_message();
        loop {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Err(_) => return Ok(None),
                Ok(Some(msg)) => {
                    let meta = self.decode_value(msg.get_payload_bytes(), &key)?;
                    if is_ready(&meta) {
                        return Ok(Some(meta));
                    }
                }
                Ok(None) => break,
            }
        }
        // The PUB/SUB connection was lost: read the key until the deadline.
        loop {
            if let Some(meta) = self.get(task_id).await?.filter(is_ready) {
                return Ok(Some(meta));
            }
            if tokio::time::Instant::now() + POLL_AFTER_LOSS > deadline {
                return Ok(None);
            }
            tokio::time::sleep(POLL_AFTER_LOSS).await;
        }
    }
}

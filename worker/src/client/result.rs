//! [`AsyncResult`] and [`GroupResult`]: reading what a sent task became, as Python's
//! `AsyncResult` reads the Redis result backend.

use std::time::Duration;

use celeriac_broker_bridge::backend::TaskState;
use serde_json::{Map, Value};

use super::{Client, ClientError, Frozen};
use crate::task_api::PyException;

/// The result of one sent task (Celery's `AsyncResult`).
#[derive(Debug, Clone)]
pub struct AsyncResult {
    id: String,
    frozen: Frozen,
    client: Client,
}

/// A task's or a group's result (what [`AsyncResult::parent`] may be).
#[derive(Debug, Clone)]
pub enum AnyResult {
    /// One task's.
    Task(AsyncResult),
    /// A group's.
    Group(GroupResult),
}

impl AnyResult {
    pub(super) fn new(frozen: &Frozen, client: &Client) -> AnyResult {
        match frozen {
            Frozen::Task { .. } => {
                AnyResult::Task(AsyncResult::new(frozen.clone(), client.clone()))
            }
            Frozen::Group { .. } => {
                AnyResult::Group(GroupResult::new(frozen.clone(), client.clone()))
            }
        }
    }

    /// The task or group id.
    pub fn id(&self) -> &str {
        match self {
            AnyResult::Task(r) => r.id(),
            AnyResult::Group(g) => g.id(),
        }
    }
}

impl AsyncResult {
    pub(super) fn new(frozen: Frozen, client: Client) -> Self {
        AsyncResult {
            id: frozen.id().to_string(),
            frozen,
            client,
        }
    }

    /// The result this one follows, when known (sent here): a chain step's previous step, a
    /// chord body's header group (Celery's `AsyncResult.parent`).
    pub fn parent(&self) -> Option<AnyResult> {
        self.frozen
            .parent()
            .map(|p| AnyResult::new(p, &self.client))
    }

    /// Celery's `as_tuple()`: what Celery stores for a task that returns this result.
    pub fn as_tuple(&self) -> Value {
        self.frozen.as_tuple()
    }

    /// The task id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The stored meta (`status`, `result`, `traceback`, `children`, …), `None` while nothing is
    /// stored (Celery reads that as `PENDING`).
    pub async fn meta(&self) -> Result<Option<Value>, ClientError> {
        Ok(self.client.backend()?.get(&self.id).await?)
    }

    /// The state: `PENDING` until a worker stores another (`STARTED`, `RETRY`, `SUCCESS`, …).
    pub async fn state(&self) -> Result<TaskState, ClientError> {
        Ok(match self.meta().await? {
            Some(meta) => state_of(&meta)?,
            None => TaskState::Pending,
        })
    }

    /// Whether the task is in a final state (`SUCCESS`, `FAILURE`, `REVOKED`).
    pub async fn ready(&self) -> Result<bool, ClientError> {
        Ok(self.state().await?.is_ready())
    }

    /// Wait (up to `timeout`) for the task to finish, as `AsyncResult.get(timeout=...)`: its
    /// return value on `SUCCESS`; on `FAILURE` or `REVOKED` the stored exception
    /// ([`ClientError::Task`], e.g. `ValueError('boom')`, `TaskRevokedError`); after the timeout
    /// [`ClientError::Timeout`] (Celery's `TimeoutError`).
    ///
    /// In a task (a client from [`TaskContext::client`](crate::TaskContext::client)) it is
    /// refused as Celery refuses it, with [`ClientError::WouldBlock`]; see
    /// [`AsyncResult::get_with`].
    pub async fn get(&self, timeout: Duration) -> Result<Value, ClientError> {
        self.get_with(timeout, true).await
    }

    /// [`AsyncResult::get`] with Celery's `disable_sync_subtasks`: `false` lets a task wait for
    /// a subtask (the worker must have a free slot to run it, or the wait times out).
    pub async fn get_with(
        &self,
        timeout: Duration,
        disable_sync_subtasks: bool,
    ) -> Result<Value, ClientError> {
        if disable_sync_subtasks && self.client.in_task() {
            return Err(ClientError::WouldBlock);
        }
        let meta = self
            .client
            .backend()?
            .wait_ready(&self.id, timeout)
            .await?
            .ok_or_else(|| ClientError::Timeout {
                task_id: self.id.clone(),
            })?;
        outcome(&self.id, meta)
    }

    /// Revoke the task on every worker (`celery control revoke`); with `terminate`, a worker
    /// running it stops it (SIGTERM).
    pub async fn revoke(&self, terminate: bool) -> Result<(), ClientError> {
        self.client.revoke(&self.id, terminate).await
    }

    /// Delete the stored result (`AsyncResult.forget()`).
    pub async fn forget(&self) -> Result<(), ClientError> {
        Ok(self.client.backend()?.forget(&self.id).await?)
    }
}

/// The results of a sent group (Celery's `GroupResult`).
#[derive(Debug, Clone)]
pub struct GroupResult {
    id: String,
    frozen: Frozen,
    results: Vec<AsyncResult>,
    client: Client,
}

impl GroupResult {
    pub(super) fn new(frozen: Frozen, client: Client) -> Self {
        let results = match &frozen {
            Frozen::Group { members, .. } => members
                .iter()
                .map(|m| AsyncResult::new(m.clone(), client.clone()))
                .collect(),
            Frozen::Task { .. } => vec![AsyncResult::new(frozen.clone(), client.clone())],
        };
        GroupResult {
            id: frozen.id().to_string(),
            frozen,
            results,
            client,
        }
    }

    /// The result this group follows (in a chain), when known.
    pub fn parent(&self) -> Option<AnyResult> {
        self.frozen
            .parent()
            .map(|p| AnyResult::new(p, &self.client))
    }

    /// Store the group so it can be restored by id (`GroupResult.save()`, read by Python's
    /// `GroupResult.restore` and [`Client::restore_group`]).
    pub async fn save(&self) -> Result<(), ClientError> {
        let members = self.results.iter().map(AsyncResult::as_tuple).collect();
        Ok(self.client.backend()?.save_group(&self.id, members).await?)
    }

    /// Celery's `as_tuple()`: what Celery stores for a task that returns this result.
    pub fn as_tuple(&self) -> Value {
        self.frozen.as_tuple()
    }

    /// The group id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// One result per member, in order.
    pub fn results(&self) -> &[AsyncResult] {
        &self.results
    }

    /// Whether every member is in a final state.
    pub async fn ready(&self) -> Result<bool, ClientError> {
        for r in &self.results {
            if !r.ready().await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// How many members succeeded.
    pub async fn completed_count(&self) -> Result<usize, ClientError> {
        let mut n = 0;
        for r in &self.results {
            n += usize::from(r.state().await? == TaskState::Success);
        }
        Ok(n)
    }

    /// Every member's value in order (`GroupResult.get()`); the first failure in order is
    /// returned as the error, as Celery raises it. `timeout` bounds the whole wait. Refused in
    /// a task, as [`AsyncResult::get`].
    pub async fn get(&self, timeout: Duration) -> Result<Vec<Value>, ClientError> {
        self.get_with(timeout, true).await
    }

    /// [`GroupResult::get`] with Celery's `disable_sync_subtasks` (see [`AsyncResult::get_with`]).
    pub async fn get_with(
        &self,
        timeout: Duration,
        disable_sync_subtasks: bool,
    ) -> Result<Vec<Value>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut values = Vec::with_capacity(self.results.len());
        for r in &self.results {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            values.push(r.get_with(left, disable_sync_subtasks).await?);
        }
        Ok(values)
    }

    /// Revoke every member.
    pub async fn revoke(&self, terminate: bool) -> Result<(), ClientError> {
        for r in &self.results {
            r.revoke(terminate).await?;
        }
        Ok(())
    }
}

fn state_of(meta: &Value) -> Result<TaskState, ClientError> {
    let status = meta.get("status").and_then(Value::as_str).unwrap_or("");
    status
        .parse()
        .map_err(|_| ClientError::Result(format!("unknown task state {status:?}")))
}

/// A final meta as `get()` returns it.
fn outcome(task_id: &str, meta: Value) -> Result<Value, ClientError> {
    let state = state_of(&meta)?;
    let Value::Object(mut meta) = meta else {
        return Err(ClientError::Result("a meta that is not an object".into()));
    };
    let result = meta.remove("result").unwrap_or(Value::Null);
    if state == TaskState::Success {
        return Ok(result);
    }
    let traceback = meta
        .get("traceback")
        .and_then(Value::as_str)
        .map(str::to_string);
    Err(ClientError::Task {
        task_id: task_id.to_string(),
        state,
        exception: exception_of(&result),
        traceback,
    })
}

/// The stored exception `{"exc_type", "exc_message", "exc_module"}` as a [`PyException`].
fn exception_of(result: &Value) -> PyException {
    let empty = Map::new();
    let obj = result.as_object().unwrap_or(&empty);
    let text = |k: &str, default: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let args = match obj.get("exc_message") {
        Some(Value::Array(args)) => args.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(other) => vec![other.clone()],
    };
    PyException {
        exc_type: text("exc_type", "Exception"),
        exc_module: text("exc_module", "builtins"),
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn success_failure_and_revoked_metas() {
        let ok = json!({"status": "SUCCESS", "result": 5, "traceback": null});
        assert_eq!(outcome("i", ok).unwrap(), json!(5));
        let failed = json!({"status": "FAILURE", "traceback": "Traceback ...",
            "result": {"exc_type": "ValueError", "exc_message": ["boom", 42], "exc_module": "builtins"}});
        let Err(ClientError::Task {
            state,
            exception,
            traceback,
            ..
        }) = outcome("i", failed)
        else {
            panic!("a failure is an error");
        };
        assert_eq!(state, TaskState::Failure);
        assert_eq!(exception.exc_type, "ValueError");
        assert_eq!(exception.args, vec![json!("boom"), json!(42)]);
        assert_eq!(traceback.as_deref(), Some("Traceback ..."));
        let revoked = json!({"status": "REVOKED", "result": {"exc_type": "TaskRevokedError",
            "exc_message": ["revoked"], "exc_module": "celery.exceptions"}});
        let e = outcome("i", revoked).unwrap_err();
        assert_eq!(
            e.to_string(),
            "task i REVOKED: celery.exceptions.TaskRevokedError: revoked"
        );
    }
}

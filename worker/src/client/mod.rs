//! Sending tasks and canvases from Rust, and reading their results — what Python does with
//! `app.send_task`, `sig.apply_async()` and `AsyncResult`, with the same messages on the wire.
//!
//! * [`Signature`], [`chain`], [`group`], [`chord`] — what to send, with Celery's options.
//! * [`Client`] — connections to the broker and the result backend; [`Client::send`],
//!   [`Client::send_group`], [`Client::revoke`]. A running task gets one bound to its worker,
//!   with itself as parent, from [`TaskContext::client`](crate::TaskContext::client).
//! * [`AsyncResult`], [`GroupResult`] — `get` with a timeout, `state`, `ready`, `revoke`.
//! * [`Producer`] — the messages for a signature (pure: freeze, expand, encode).
//!
//! ```no_run
//! // no_run: it needs a Redis and a worker running `tasks.add` and `tasks.mul`.
//! use std::time::Duration;
//! use celeriac_worker::client::{chain, Client, ClientError, Signature};
//!
//! # async fn run() -> Result<(), ClientError> {
//! let client = Client::connect("redis://127.0.0.1:6379/0", Some("redis://127.0.0.1:6379/1")).await?;
//! let add = client.send(&Signature::new("tasks.add").arg(2).arg(3)).await?;
//! assert_eq!(add.get(Duration::from_secs(10)).await?, 5);
//! // (2 + 3) * 4
//! let flow = chain([
//!     Signature::new("tasks.add").arg(2).arg(3),
//!     Signature::new("tasks.mul").arg(4),
//! ]);
//! let product = client.send(&flow).await?.get(Duration::from_secs(10)).await?;
//! assert_eq!(product, 20);
//! # Ok(())
//! # }
//! ```

mod freeze;
mod producer;
mod result;
mod signature;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use celeriac_broker_bridge::backend::group::ResultTree;
use celeriac_broker_bridge::backend::{BackendError, BackendOptions, ResultBackend, TaskState};
use celeriac_broker_bridge::codec::TaskMessage;
use celeriac_broker_bridge::pidbox;
use celeriac_broker_bridge::transport::{Broker, TransportOptions};
use serde_json::{Map, Value};

pub use freeze::Frozen;
pub use producer::{ChordMember, Outgoing, Prepared, Producer};
pub use result::{AnyResult, AsyncResult, GroupResult};
pub use signature::{chain, chord, group, Signature};

use crate::canvas::expand::{parent_of, Parent};
use crate::task_api::PyException;

/// Celery's `E_WOULDBLOCK`.
const WOULD_BLOCK: &str = "Never call result.get() within a task!\nSee https://docs.celeryq.dev/en/latest/userguide/tasks.html#avoid-launching-synchronous-subtasks\n";

/// Why sending or reading a result failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker could not be reached or refused the message.
    #[error("cannot publish: {0}")]
    Publish(String),
    /// The signature cannot be sent (bad option, empty chain, unsupported canvas).
    #[error("cannot send the signature: {0}")]
    Canvas(String),
    /// No producer is available here (see [`TaskContext::client`](crate::TaskContext::client)).
    #[error("{0}")]
    Unavailable(String),
    /// `get()` in a task without `disable_sync_subtasks = false` (Celery's `RuntimeError`).
    #[error("{}", WOULD_BLOCK)]
    WouldBlock,
    /// `add_to_chord` from a task that is not a chord header member (Celery's `ValueError`).
    #[error("Current task is not member of any chord")]
    NotInChord,
    /// Reading results needs a result backend, and this client has none.
    #[error("no result backend configured: results cannot be read")]
    NoBackend,
    /// The result backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The stored meta cannot be understood.
    #[error("unreadable result: {0}")]
    Result(String),
    /// The task did not finish within the timeout (Celery's `TimeoutError`).
    #[error("task {task_id}: the operation timed out")]
    Timeout {
        /// The task waited for.
        task_id: String,
    },
    /// The task ended in `FAILURE` or `REVOKED`: the exception stored for it, as Python's
    /// `get()` re-raises it.
    #[error("task {task_id} {state}: {}.{exception}", exception.exc_module)]
    Task {
        /// The task.
        task_id: String,
        /// `FAILURE` or `REVOKED`.
        state: TaskState,
        /// The stored exception (type, module, args).
        exception: PyException,
        /// The stored traceback text, if any.
        traceback: Option<String>,
    },
}

impl From<ClientError> for PyException {
    /// What a task calling `get()` fails with, as in Python: the child's own exception, Celery's
    /// `TimeoutError`, or an `OperationalError` for connection trouble.
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Task { exception, .. } => exception,
            ClientError::WouldBlock => PyException::new("RuntimeError", WOULD_BLOCK),
            ClientError::NotInChord => {
                PyException::new("ValueError", "Current task is not member of any chord")
            }
            ClientError::Timeout { .. } => PyException::in_module(
                "celery.exceptions",
                "TimeoutError",
                "The operation timed out.",
            ),
            other => {
                PyException::in_module("kombu.exceptions", "OperationalError", other.to_string())
            }
        }
    }
}

impl From<ClientError> for crate::TaskError {
    fn from(e: ClientError) -> Self {
        crate::TaskError::from(PyException::from(e))
    }
}

/// Sends tasks and reads results. Cheap to clone (shared connections).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    producer: Arc<Producer>,
}

struct Inner {
    broker: Broker,
    backend: Option<ResultBackend>,
    /// kombu's Lamport clock for control messages.
    clock: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("producer", &self.producer)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connect to a Redis broker (`redis://`, `rediss://`, `socket://`) and, to read results,
    /// a Redis result backend, with Celery's default settings.
    pub async fn connect(
        broker_url: &str,
        backend_url: Option<&str>,
    ) -> Result<Client, ClientError> {
        crate::connection::install_crypto_provider();
        let broker = Broker::connect(broker_url, TransportOptions::default())
            .await
            .map_err(|e| ClientError::Publish(e.to_string()))?;
        let backend = match backend_url {
            Some(url) => Some(ResultBackend::connect(url, BackendOptions::default()).await?),
            None => None,
        };
        Ok(Client::from_parts(broker, backend, Producer::default()))
    }

    /// Connect as a worker with these settings would (Celery's `CELERY_*` variables, the TOML
    /// file): broker transport options (`global_keyprefix`, …), result backend options, the
    /// task serializer (signed with `auth`) and `task_default_queue`. E.g.
    /// `Client::from_settings(&Settings::load(&WorkerArgs::default(), config::process_env())?)`.
    pub async fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<Client> {
        use anyhow::Context;
        crate::connection::install_crypto_provider();
        let mut transport =
            TransportOptions::from_json(&Value::Object(settings.broker_transport_options.clone()))
                .context("CELERY_BROKER_TRANSPORT_OPTIONS")?;
        transport.max_message_bytes = usize::try_from(settings.max_message_bytes).ok();
        transport.credentials_file = settings.broker_url.file().map(Into::into);
        let signing = crate::signing::Signing::from_settings(settings)?;
        let broker = Broker::connect(settings.broker_url.expose(), transport)
            .await
            .context("connect to the broker")?;
        let backend = match &settings.result_backend {
            Some(url) => Some(
                ResultBackend::connect(
                    url.expose(),
                    crate::connection::backend_options(settings, &signing)?,
                )
                .await
                .context("connect to the result backend")?,
            ),
            None => None,
        };
        let producer = Producer {
            default_queue: settings.task_default_queue.clone(),
            serializer: signing.tasks.clone(),
            ..Producer::default()
        };
        Ok(Client::from_parts(broker, backend, producer))
    }

    /// A client on existing connections.
    pub fn from_parts(
        broker: Broker,
        backend: Option<ResultBackend>,
        producer: Producer,
    ) -> Client {
        Client {
            inner: Arc::new(Inner {
                broker,
                backend,
                clock: AtomicU64::new(0),
            }),
            producer: Arc::new(producer),
        }
    }

    /// The same connections, sending as a child of the task `parent` (its `parent_id`/`root_id`).
    pub fn child_of(&self, parent: Parent) -> Client {
        let mut producer = (*self.producer).clone();
        producer.parent = parent;
        Client {
            inner: self.inner.clone(),
            producer: Arc::new(producer),
        }
    }

    /// The same connections, sending as a child of the task of `msg` (its id as `parent_id`,
    /// its root as `root_id`), which may extend its chord with [`Client::add_to_chord`].
    pub fn for_task(&self, msg: &TaskMessage) -> Client {
        let mut producer = (*self.producer).clone();
        producer.parent = parent_of(msg);
        producer.chord = match (&msg.chord, &msg.group) {
            (Some(body), Some(group_id)) => Some(ChordMember {
                group_id: group_id.clone(),
                group_index: msg.group_index,
                body: body.to_value(),
            }),
            _ => None,
        };
        Client {
            inner: self.inner.clone(),
            producer: Arc::new(producer),
        }
    }

    /// Whether this client sends as a running task (then `get` is refused by default).
    pub fn in_task(&self) -> bool {
        self.producer.parent.parent_id.is_some()
    }

    /// What messages carry besides the call (queue, origin, parent).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The result backend, or [`ClientError::NoBackend`].
    pub fn backend(&self) -> Result<&ResultBackend, ClientError> {
        self.inner.backend.as_ref().ok_or(ClientError::NoBackend)
    }

    /// Send a task, chain or chord (`sig.apply_async()`); the result of the task, of the
    /// chain's last step or of the chord's body. A group is sent with [`Client::send_group`].
    pub async fn send(&self, sig: &Signature) -> Result<AsyncResult, ClientError> {
        match self.publish(sig).await? {
            frozen @ Frozen::Task { .. } => Ok(AsyncResult::new(frozen, self.clone())),
            Frozen::Group { .. } => Err(ClientError::Canvas(
                "this signature's result is a group: send it with send_group".into(),
            )),
        }
    }

    /// Send a group (`group(...).apply_async()`); one result per member.
    pub async fn send_group(&self, sig: &Signature) -> Result<GroupResult, ClientError> {
        match self.publish(sig).await? {
            frozen @ Frozen::Group { .. } => Ok(GroupResult::new(frozen, self.clone())),
            Frozen::Task { id, .. } => Err(ClientError::Canvas(format!(
                "this signature's result is one task ({id}), not a group: send it with send"
            ))),
        }
    }

    /// Send task `name` with positional and keyword arguments (`app.send_task`).
    pub async fn send_task(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<AsyncResult, ClientError> {
        self.send(&Signature::new(name).args(args).kwargs(kwargs))
            .await
    }

    /// Add `sig` to the chord the sending task is a header member of, as Celery's
    /// `Task.add_to_chord`: it runs as one more header member (the chord's body waits for it and
    /// gets its result too). Only from a chord member's [`TaskContext::client`](crate::TaskContext::client).
    pub async fn add_to_chord(&self, sig: &Signature) -> Result<AsyncResult, ClientError> {
        let member = self
            .producer
            .chord
            .as_ref()
            .ok_or(ClientError::NotInChord)?;
        let mut sig = sig
            .clone()
            .option("group_id", member.group_id.as_str())
            .option("chord", member.body.clone());
        if let Some(index) = member.group_index {
            sig = sig.option("group_index", index);
        }
        let prepared = self.producer.prepare(&sig, chrono::Utc::now())?;
        self.backend()?.add_to_chord(&member.group_id).await?;
        match self.publish_prepared(prepared).await? {
            frozen @ Frozen::Task { .. } => Ok(AsyncResult::new(frozen, self.clone())),
            Frozen::Group { .. } => Err(ClientError::Canvas(
                "only a task can be added to a chord".into(),
            )),
        }
    }

    /// The result of task `task_id` (`AsyncResult(id)`).
    pub fn result(&self, task_id: impl Into<String>) -> AsyncResult {
        AsyncResult::new(Frozen::task(task_id), self.clone())
    }

    /// A group saved with `GroupResult.save()` (here or in Python), `None` if none was saved
    /// (`GroupResult.restore(id)`).
    pub async fn restore_group(&self, group_id: &str) -> Result<Option<GroupResult>, ClientError> {
        let tree = self.backend()?.restore_group(group_id).await?;
        Ok(tree.map(|t| GroupResult::new(frozen_of(&t), self.clone())))
    }

    /// Revoke task `task_id` on every worker, as `celery control revoke` does (a broadcast on
    /// the pidbox; workers that receive the task later skip it and store `REVOKED`). With
    /// `terminate`, a worker running it stops it with SIGTERM.
    pub async fn revoke(&self, task_id: &str, terminate: bool) -> Result<(), ClientError> {
        let mut arguments = Map::new();
        arguments.insert("task_id".into(), task_id.into());
        arguments.insert("terminate".into(), terminate.into());
        arguments.insert("signal".into(), "SIGTERM".into());
        let clock = self.inner.clock.fetch_add(1, Ordering::Relaxed) + 1;
        pidbox::broadcast(
            &self.inner.broker,
            crate::config::CONTROL_NAMESPACE,
            "revoke",
            arguments,
            clock,
            &self.producer.serializer,
        )
        .await
        .map_err(|e| ClientError::Publish(e.to_string()))?;
        Ok(())
    }

    /// Freeze, store chord sizes, publish; the frozen result ids.
    async fn publish(&self, sig: &Signature) -> Result<Frozen, ClientError> {
        self.publish_prepared(self.producer.prepare(sig, chrono::Utc::now())?)
            .await
    }

    async fn publish_prepared(&self, prepared: Prepared) -> Result<Frozen, ClientError> {
        for (group_id, size) in &prepared.chord_sizes {
            self.backend()
                .map_err(|_| ClientError::Canvas("a chord needs a result backend".into()))?
                .set_chord_size(group_id, *size)
                .await?;
        }
        for out in &prepared.messages {
            self.inner
                .broker
                .publish(&out.envelope, "", &out.queue)
                .await
                .map_err(|e| ClientError::Publish(format!("task {}: {e}", out.task_id)))?;
        }
        Ok(prepared.result)
    }
}

fn frozen_of(tree: &ResultTree) -> Frozen {
    match tree {
        ResultTree::Task(id) => Frozen::task(id.clone()),
        ResultTree::Group(id, members) => Frozen::Group {
            id: id.clone(),
            members: members.iter().map(frozen_of).collect(),
            parent: None,
        },
    }
}

#[cfg(test)]
mod tests;

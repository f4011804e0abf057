//! Celery's Redis result backend: the task meta that Python's `AsyncResult` reads, and the
//! Redis writes that store and announce it. Knows nothing of tasks at runtime: callers build a
//! [`TaskMeta`] and [`ResultBackend::store`] writes it.
//!
//! * [`states`] — task state strings.
//! * [`exception`] — exceptions as `{"exc_type", "exc_message", "exc_module"}`.
//! * [`meta`] — the meta JSON, fields and order as Celery writes them.
//! * [`keys`] — key names and the backend's `global_keyprefix` rule.
//! * [`store`] — [`ResultBackend`]: atomic store-unless-SUCCESS + PUBLISH, get, forget.
//! * [`chord`] — chord size and chord-part-return (native join), shared with Python workers.
//! * [`group`] — `GroupResult.save()` keys (`celery-taskset-meta-<gid>`).
//! * [`python_json`] — JSON text as Python's `json.dumps` writes it.
//! * [`wait`] — waiting for a task's final meta as `AsyncResult.get()` does (PUB/SUB).

pub mod chord;
pub mod exception;
pub mod group;
pub mod keys;
pub mod meta;
pub mod python_json;
pub mod states;
pub mod store;
pub mod wait;

pub use chord::{ChordClaim, ChordPart, PartResult, PartReturn};
pub use exception::ExceptionInfo;
pub use keys::BackendKeys;
pub use meta::{ExtendedMeta, TaskMeta};
pub use states::TaskState;
pub use store::{BackendError, BackendOptions, EncodedMeta, ResultBackend, StoreOutcome};

//! The task API: what a Rust task function receives and returns.

pub mod args;
pub mod blocking;
pub mod context;
pub mod error;
pub mod handler;
pub mod number;
pub mod options;
pub mod params;

pub use args::CallArgs;
pub use blocking::BlockingHandler;
/// A Celery signature (for [`TaskError::replace`]).
pub use celeriac_broker_bridge::codec::Signature;
/// A time as a message carries it (for [`TaskContext::eta`] and [`TaskContext::expires`]).
pub use celeriac_broker_bridge::codec::WireTime;
pub use context::{DeliveryInfo, TaskContext};
pub use error::{PyException, RetryRequest, TaskError};
pub use handler::{FnHandler, Handler, TaskDefinition, TaskFuture};
pub use number::PyNumber;
pub use options::TaskOptions;

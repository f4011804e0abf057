//! The task API: what a Rust task function receives and returns.

pub(crate) mod args;
pub(crate) mod blocking;
pub(crate) mod builtins;
pub(crate) mod context;
pub(crate) mod data;
pub(crate) mod error;
pub(crate) mod handler;
pub(crate) mod number;
pub(crate) mod options;
#[doc(hidden)]
pub mod params;
pub(crate) mod properties;
pub(crate) mod registry;
pub(crate) mod soft_limit;

pub use args::CallArgs;
pub use blocking::BlockingHandler;
/// A time as a message carries it (for [`TaskContext::eta`] and [`TaskContext::expires`]).
pub use celeriac_broker_bridge::codec::WireTime;
pub use context::{DeliveryInfo, TaskContext};
pub use error::{PyException, RetryRequest, TaskError};
pub use handler::{FnHandler, Handler, TaskDefinition, TaskFuture};
pub use number::PyNumber;
pub use options::TaskOptions;
pub use properties::Properties;

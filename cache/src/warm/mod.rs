//! Cache warming, source-agnostic parts: the SQL of each scan mode ([`statements`]), L2 writes
//! identical to the read path's ([`writer`]), the run lock ([`lock`]), the resumable state
//! ([`state`]), the paging loop ([`run`]) and where it all goes: one Redis node or a Redis
//! Cluster ([`target`]).

pub mod lock;
pub mod run;
pub mod state;
pub mod statements;
pub mod target;
pub mod writer;

pub use lock::{LockLost, WarmLock};
pub use run::{Progress, RunOptions, Sink, WarmError, WarmJob, WarmMode, WarmSummary};
pub use state::StateStore;
pub use state::WarmState;
pub use target::{connect, JobKeys};
pub use writer::{WarmWriter, WriteCounts};

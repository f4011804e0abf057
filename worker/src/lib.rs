//! The celeriac worker runtime: configuration, logging and (later) the task-running machinery.

pub mod config;
pub mod logging;

//! The `celeriac` command's subcommands.

pub mod decode;
pub mod healthcheck;
pub mod warm;
pub mod worker;

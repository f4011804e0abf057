//! The `celeriac` command's subcommands.

pub mod decode;
pub mod worker;

//! The `celeriac` command's subcommands.

pub mod worker;

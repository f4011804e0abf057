//! Subcommands of the `celeriac` binary.

pub mod decode;

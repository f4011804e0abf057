//! The `celeriac` command's subcommands.

pub mod decode;
pub mod healthcheck;
pub mod pidfile;
pub mod warm;
pub mod worker;

/// Stack size of the runtime's worker threads (tokio's default is 2 MiB). A task's future holds
/// the cache read, the source's pool and, for SQL Server, tiberius's TLS login; unoptimized
/// builds outgrew 2 MiB there. Only the pages used are committed.
pub const RUNTIME_THREAD_STACK: usize = 8 << 20;

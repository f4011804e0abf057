//! End-to-end tests live in `tests/`; `src/bin/celeriac-test-worker.rs` is the worker they run.
//! The library holds what the tests and the chaos run share: the fault proxy and the chaos run.

pub mod chaos;
pub mod fault_proxy;

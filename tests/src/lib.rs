//! End-to-end tests live in `tests/`; `src/bin/celeriac-test-worker.rs` is the worker they run.

//! End-to-end tests live in `tests/`; `src/bin/celeriac-test-worker.rs` is the worker they run.
//! The library holds what the tests and the chaos run share: the fault proxy and the chaos run;
//! and the tasks of Celery's integration suite (`celery_integration`, `tests/celery-integration/`).

pub mod celery_integration;
pub mod chaos;
pub mod fault_proxy;

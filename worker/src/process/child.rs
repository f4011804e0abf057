//! The child side: a re-executed worker binary that runs process tasks one at a time, reading
//! requests on stdin and writing replies on stdout (see [`super::protocol`]).

use std::io::{BufRead, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::protocol::{reply_line, RunRequest, ToChild};
use crate::task_api::registry::Registry;
use crate::task_api::soft_limit::SoftTimeLimitExceeded;
use crate::task_api::{PyException, TaskError};

/// Set in a child's environment: the process serves process tasks instead of being a worker.
pub(crate) const CHILD_ENV: &str = "CELERIAC_PROCESS_CHILD";

static SOFT_PASSED: AtomicBool = AtomicBool::new(false);
static CURRENT: Mutex<String> = Mutex::new(String::new());

/// Whether this process is a task process (started by a worker for its process tasks).
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// In a process task: `Err(SoftTimeLimitExceeded)` once the soft limit has passed, so
/// `check_soft_time_limit()?` in a loop stops the run (FAILURE `SoftTimeLimitExceeded`), and
/// matching the error is the cleanup path.
pub fn check_soft_time_limit() -> Result<(), SoftTimeLimitExceeded> {
    if SOFT_PASSED.load(Ordering::Relaxed) {
        return Err(SoftTimeLimitExceeded);
    }
    Ok(())
}

/// Serve the child role until stdin closes (the worker is gone), then exit. Never returns.
pub(crate) fn serve(registry: &Registry) -> ! {
    let (tx, rx) = std::sync::mpsc::channel::<RunRequest>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match ToChild::parse(&line) {
                Some(ToChild::Run(request)) => {
                    if tx.send(request).is_err() {
                        break;
                    }
                }
                Some(ToChild::SoftLimit(id)) => {
                    if *CURRENT.lock().expect("current run lock") == id {
                        SOFT_PASSED.store(true, Ordering::Relaxed);
                    }
                }
                None => eprintln!("celeriac task process: ignored a line it cannot read"),
            }
        }
        // The worker closed our stdin (or died): stop, even in the middle of a run.
        std::process::exit(0);
    });
    for request in rx {
        *CURRENT.lock().expect("current run lock") = request.id.clone();
        SOFT_PASSED.store(false, Ordering::Relaxed);
        let outcome = run(registry, &request);
        let mut out = std::io::stdout().lock();
        let written =
            writeln!(out, "{}", reply_line(&request.id, &outcome)).and_then(|()| out.flush());
        if written.is_err() {
            std::process::exit(1);
        }
    }
    std::process::exit(0)
}

fn run(registry: &Registry, request: &RunRequest) -> Result<serde_json::Value, TaskError> {
    let Some(f) = registry.process_fn(&request.task) else {
        return Err(TaskError::Fail(PyException::in_module(
            "celery.exceptions",
            "NotRegistered",
            format!("'{}'", request.task),
        )));
    };
    catch_unwind(AssertUnwindSafe(|| f.run(&request.args, &request.kwargs))).unwrap_or_else(
        |payload| {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(TaskError::fail(
                "RuntimeError",
                format!("task panicked: {text}"),
            ))
        },
    )
}

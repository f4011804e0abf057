//! The parent side: task processes started lazily, reused, killed at the hard limit.
//!
//! A child is the worker's own binary (`std::env::current_exe()`, same arguments) with
//! [`CHILD_ENV`] set. Idle children wait in the pool; a run takes one (or starts one), and gives
//! it back when its reply came. A run dropped before its reply — hard time limit, `revoke`
//! with `terminate`, the end of a shutdown's grace — SIGKILLs its child and reaps it. The number
//! of children never exceeds the number of runs at once, so the worker's concurrency bounds it.

use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::child::CHILD_ENV;
use super::protocol::ToChild;
use crate::task_api::PyException;

/// A running task process.
pub(crate) struct TaskProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    pid: u32,
    /// Runs it replied to.
    runs: u64,
}

impl TaskProcess {
    fn spawn() -> std::io::Result<TaskProcess> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Not in the worker's process group: a terminal's Ctrl-C reaches the worker only,
            // which then stops its children itself.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout), Some(pid)) =
            (child.stdin.take(), child.stdout.take(), child.id())
        else {
            return Err(std::io::Error::other("the task process has no pipes"));
        };
        tracing::info!(pid, "task process started");
        Ok(TaskProcess {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            pid,
            runs: 0,
        })
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Send one line.
    pub(crate) async fn send(&mut self, msg: &ToChild) -> std::io::Result<()> {
        let mut line = msg.to_line();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await
    }

    /// The next stdout line; `None` when the child closed it (it exited).
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        self.stdout.next_line().await
    }

    /// Wait for the child to exit (after its stdout closed), killing it if it lingers.
    async fn exit_status(&mut self) -> Option<ExitStatus> {
        let wait = tokio::time::timeout(std::time::Duration::from_secs(5), self.child.wait());
        match wait.await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }

    fn kill_and_reap(self, why: &str, run_id: &str) {
        tracing::warn!(pid = self.pid, run_id, why, "task process killed");
        self.end();
    }

    /// An idle child past a `worker_max_*_per_child` limit: ended, a new one starts on demand.
    fn retire(self, why: &str) {
        tracing::info!(
            pid = self.pid,
            runs = self.runs,
            why,
            "task process replaced"
        );
        self.end();
    }

    /// Its resident memory in KiB (Linux `/proc`), if it can be read.
    fn resident_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn end(mut self) {
        let pid = self.pid;
        let _ = self.child.start_kill();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let _ = self.child.wait().await;
                    tracing::info!(pid, "killed task process reaped");
                });
            }
            // No runtime (the worker is exiting): kill_on_drop and the exit take care of it.
            Err(_) => drop(self),
        }
    }
}

/// The worker's task processes.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<TaskProcess>>,
    jobs: AtomicU64,
    /// `worker_max_tasks_per_child` (0: no limit).
    max_tasks: AtomicU64,
    /// `worker_max_memory_per_child`, KiB (0: no limit).
    max_memory_kib: AtomicU64,
}

impl Pool {
    /// Replace a child after `max_tasks` runs, or when its resident memory exceeds
    /// `max_memory_kib` after a run (Celery's `worker_max_tasks_per_child` and
    /// `worker_max_memory_per_child`; the run that crossed the line completes).
    pub(crate) fn set_limits(&self, max_tasks: Option<u64>, max_memory_kib: Option<u64>) {
        self.max_tasks
            .store(max_tasks.unwrap_or(0), Ordering::Relaxed);
        self.max_memory_kib
            .store(max_memory_kib.unwrap_or(0), Ordering::Relaxed);
    }

    /// Why `p`, having just replied, must not be reused.
    fn past_limit(&self, p: &TaskProcess) -> Option<String> {
        let max_tasks = self.max_tasks.load(Ordering::Relaxed);
        if max_tasks > 0 && p.runs >= max_tasks {
            return Some(format!("worker_max_tasks_per_child ({max_tasks}) reached"));
        }
        let max_kib = self.max_memory_kib.load(Ordering::Relaxed);
        if max_kib > 0 {
            if let Some(kib) = p.resident_kib().filter(|&kib| kib > max_kib) {
                return Some(format!(
                    "resident memory {kib} KiB exceeds worker_max_memory_per_child ({max_kib} KiB)"
                ));
            }
        }
        None
    }

    /// Take an idle child that is still alive, or start one, for run `run_id`. (An idle child
    /// may have died meanwhile, e.g. killed by the OOM killer; it is reaped and replaced, so the
    /// run does not fail for it.)
    pub(crate) fn checkout(self: &Arc<Self>, run_id: &str) -> std::io::Result<Lease> {
        let process = loop {
            let idle = self.idle.lock().expect("pool lock").pop();
            match idle {
                Some(mut p) => match p.child.try_wait() {
                    Ok(None) => break p,
                    Ok(Some(status)) => {
                        tracing::warn!(pid = p.pid, status = %human_status(status), "idle task process had exited; replaced");
                    }
                    Err(e) => {
                        tracing::warn!(pid = p.pid, error = %e, "idle task process cannot be checked; replaced");
                    }
                },
                None => break TaskProcess::spawn()?,
            }
        };
        Ok(Lease {
            process: Some(process),
            pool: self.clone(),
            run_id: run_id.to_string(),
            job: self.jobs.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// A child lent to one run. Dropped without [`Lease::give_back`] or [`Lease::lost`], it kills
/// the child.
pub(crate) struct Lease {
    process: Option<TaskProcess>,
    pool: Arc<Pool>,
    run_id: String,
    job: u64,
}

impl Lease {
    /// The child.
    pub(crate) fn process(&mut self) -> &mut TaskProcess {
        self.process
            .as_mut()
            .expect("a lease holds its process until it ends")
    }

    /// The run finished with a reply: the child goes back to the pool, unless it is past a
    /// per-child limit (then it is replaced).
    pub(crate) fn give_back(mut self) {
        if let Some(mut p) = self.process.take() {
            p.runs += 1;
            match self.pool.past_limit(&p) {
                Some(why) => p.retire(&why),
                None => self.pool.idle.lock().expect("pool lock").push(p),
            }
        }
    }

    /// The child died before replying: Celery's `WorkerLostError`, worded as billiard words it.
    pub(crate) async fn lost(mut self) -> PyException {
        let mut process = self.process.take().expect("a lease holds its process");
        let status = process.exit_status().await;
        let human = status.map_or_else(|| "exitcode unknown".to_string(), human_status);
        tracing::error!(pid = process.pid, run_id = %self.run_id, status = %human, "task process exited before replying");
        PyException::in_module(
            "billiard.exceptions",
            "WorkerLostError",
            format!("Worker exited prematurely: {human} Job: {}.", self.job),
        )
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill_and_reap("the run was stopped before it finished", &self.run_id);
        }
    }
}

/// billiard's `human_status`: `signal 9 (SIGKILL)` or `exitcode 1`.
pub(crate) fn human_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.signal(), status.code()) {
        (Some(sig), _) => match signal_name(sig) {
            Some(name) => format!("signal {sig} ({name})"),
            None => format!("signal {sig}"),
        },
        (None, Some(code)) => format!("exitcode {code}"),
        (None, None) => "exitcode unknown".into(),
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn statuses_as_billiard_words_them() {
        assert_eq!(human_status(ExitStatus::from_raw(9)), "signal 9 (SIGKILL)");
        assert_eq!(human_status(ExitStatus::from_raw(6)), "signal 6 (SIGABRT)");
        assert_eq!(human_status(ExitStatus::from_raw(40)), "signal 40");
        assert_eq!(human_status(ExitStatus::from_raw(3 << 8)), "exitcode 3");
    }
}

//! The processes of the chaos run: celeriac test workers (killed and restarted by slot), the
//! Python Celery worker and the Python producers, each writing to its own log file.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A child process with its output appended to a log file.
pub struct Proc {
    /// A name for messages.
    pub name: String,
    child: Child,
    log: PathBuf,
    log_start: u64,
}

impl Proc {
    /// Start `cmd`, appending its stdout and stderr to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        let log_start = out.metadata()?.len();
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("spawn {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            log_start,
        })
    }

    /// What this process wrote to its log.
    pub fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s.get(self.log_start as usize..).unwrap_or("").to_string()
    }

    /// Wait until the output contains `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}):\n{}", self.name, self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{} did not print {needle:?} in {timeout:?}", self.name)
    }

    /// Whether it has exited (and with what success).
    pub fn exited(&mut self) -> Option<bool> {
        self.child.try_wait().ok().flatten().map(|s| s.success())
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// How to start the processes of the run.
pub struct Launcher {
    /// The celeriac test worker binary.
    pub worker_bin: PathBuf,
    /// The venv's Python with Celery.
    pub python: PathBuf,
    /// `tests/python` (celery_app.py).
    pub python_dir: PathBuf,
    /// Where logs go.
    pub logs: PathBuf,
    /// Environment of the workers (broker through the fault proxy).
    pub worker_env: Vec<(String, String)>,
    /// Environment of the Python worker.
    pub python_worker_env: Vec<(String, String)>,
    /// Environment of the producers (broker directly).
    pub producer_env: Vec<(String, String)>,
    /// Concurrency of each celeriac worker.
    pub concurrency: usize,
    /// The TOML with the declarative query task, when Postgres runs.
    pub config: Option<PathBuf>,
}

impl Launcher {
    /// Start celeriac worker `slot`, incarnation `generation` (node `c<slot>-<generation>@chaos`).
    pub fn celeriac(&self, slot: usize, generation: u64) -> Result<Proc> {
        let node = format!("c{slot}-{generation}@chaos");
        let mut cmd = Command::new(&self.worker_bin);
        cmd.args(["-n", &node, "-l", "INFO", "-Q", "celery,rust"])
            .args(["-c", &self.concurrency.to_string()])
            .envs(self.worker_env.iter().map(|(k, v)| (k, v)));
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        Proc::spawn(&node, cmd, &self.logs.join(format!("celeriac-{slot}.log")))
    }

    /// Start the Python Celery worker (thread pool) on the `celery` queue.
    pub fn python_worker(&self) -> Result<Proc> {
        let mut cmd = Command::new(&self.python);
        cmd.args([
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "-P",
            "threads",
        ])
        .args(["-c", "4", "-Q", "celery", "-n", "py@chaos", "-l", "INFO"])
        .args(["--without-mingle", "--without-gossip"])
        .current_dir(&self.python_dir)
        .env("PYTHONPATH", &self.python_dir)
        .envs(self.python_worker_env.iter().map(|(k, v)| (k, v)));
        Proc::spawn("py@chaos", cmd, &self.logs.join("python-worker.log"))
    }

    /// Start producer `n` sending `tasks` tasks; it writes `manifest`.
    pub fn producer(
        &self,
        n: usize,
        script: &Path,
        tasks: usize,
        seed: u64,
        manifest: &Path,
        query_items: u32,
    ) -> Result<Proc> {
        let mut cmd = Command::new(&self.python);
        cmd.arg(script)
            .args([tasks.to_string(), seed.to_string()])
            .arg(manifest)
            .arg(query_items.to_string())
            .current_dir(&self.python_dir)
            .env("PYTHONPATH", &self.python_dir)
            .env("PYTHONUNBUFFERED", "1")
            .envs(self.producer_env.iter().map(|(k, v)| (k, v)));
        Proc::spawn(
            &format!("producer-{n}"),
            cmd,
            &self.logs.join(format!("producer-{n}.log")),
        )
    }
}

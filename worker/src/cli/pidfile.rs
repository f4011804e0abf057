//! `--pidfile`: the worker's process id in a file, as Celery's worker writes it.
//!
//! A file that names a running process stops the start ("already running"); a stale one (its
//! process is gone, e.g. after SIGKILL) is replaced. The file is removed when the worker exits,
//! if it still holds this process's id.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The pid file, removed on drop.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    pid: u32,
}

/// The pid file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    /// It names a process that is running.
    #[error("pidfile {path} already exists: seems we're already running (pid {pid})")]
    Running {
        /// The file.
        path: String,
        /// The pid it holds.
        pid: u32,
    },
    /// It cannot be read, removed or written.
    #[error("pidfile {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl Pidfile {
    /// Write this process's id to `path`.
    pub fn create(path: &Path) -> Result<Pidfile, PidfileError> {
        let io = |e: std::io::Error| PidfileError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let pid = std::process::id();
        match std::fs::read_to_string(path) {
            Ok(text) => match text.trim().parse::<u32>() {
                Ok(other) if other != pid && is_running(other) => {
                    return Err(PidfileError::Running {
                        path: path.display().to_string(),
                        pid: other,
                    })
                }
                _ => std::fs::remove_file(path).map_err(io)?,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        writeln!(file, "{pid}").map_err(io)?;
        Ok(Pidfile {
            path: path.to_path_buf(),
            pid,
        })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            == Some(self.pid);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether a process with this id exists (Linux: `/proc/<pid>`).
fn is_running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_then_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.pid");
        let file = Pidfile::create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn a_running_process_refuses_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.pid");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&path, format!("{}\n", child.id())).unwrap();
        let err = Pidfile::create(&path).unwrap_err();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            matches!(err, PidfileError::Running { pid, .. } if pid == child.id()),
            "{err}"
        );
        assert!(path.exists(), "another worker's pidfile is left alone");
    }

    #[test]
    fn a_stale_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.pid");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        std::fs::write(&path, format!("{gone}\n")).unwrap();
        let file = Pidfile::create(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(file);
    }
}

//! A private MariaDB server that speaks only TLS: `mariadb-install-db` into a fresh folder, then
//! `mariadbd` on a free port (as the `mysql` system user when run as root) with
//! `--require-secure-transport=ON`; killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::server_user::{give_to, service_user, ServerTlsFiles};
use crate::{free_port, TestPki};

/// A running private server. `root` connects over its Unix socket only (a socket counts as
/// secure transport); TCP clients on 127.0.0.1 and 127.0.0.2 must use TLS.
pub struct MariaDbServer {
    child: Child,
    port: u16,
    socket: PathBuf,
    client: PathBuf,
    dir: tempfile::TempDir,
}

impl MariaDbServer {
    /// Install and start a server with `pki`'s server certificate, listening on 127.0.0.1 and
    /// 127.0.0.2 (a loopback address the certificate does not name).
    pub fn start_tls(pki: &TestPki) -> Result<Self> {
        let install = find_tool(&["mariadb-install-db", "mysql_install_db"])?;
        let server = find_tool(&["mariadbd", "mysqld"])?;
        let client = find_tool(&["mariadb", "mysql"])?;
        let run_as = service_user("mysql");
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let tls = ServerTlsFiles::copy(pki, dir.path())?;
        give_to(run_as.as_deref(), dir.path())?;
        let user_arg = run_as.as_ref().map(|u| format!("--user={u}"));
        let datadir = format!("--datadir={}", data.display());

        let out = Command::new(&install)
            .arg("--no-defaults")
            .args(&user_arg)
            .args([datadir.as_str(), "--auth-root-authentication-method=normal"])
            .args(["--skip-test-db", "--skip-name-resolve"])
            .current_dir(dir.path())
            .output()
            .with_context(|| format!("run {}", install.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}{}",
                install.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let socket = dir.path().join("mysqld.sock");
        let log = dir.path().join("error.log");
        let pid = dir.path().join("mysqld.pid");
        let path = |flag: &str, p: &Path| format!("--{flag}={}", p.display());
        let args = |port: u16| {
            vec![
                datadir.clone(),
                path("socket", &socket),
                path("pid-file", &pid),
                path("log-error", &log),
                format!("--port={port}"),
                "--bind-address=127.0.0.1,127.0.0.2".into(),
                "--skip-name-resolve".into(),
                path("ssl-ca", &tls.ca),
                path("ssl-cert", &tls.cert),
                path("ssl-key", &tls.key),
                "--require-secure-transport=ON".into(),
                "--innodb-buffer-pool-size=16M".into(),
                "--innodb-flush-log-at-trx-commit=0".into(),
            ]
        };
        let spawn = |port: u16| {
            Command::new(&server)
                .arg("--no-defaults")
                .args(&user_arg)
                .args(args(port))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("spawn {}", server.display()))
        };
        let port = free_port();
        let mut db = MariaDbServer {
            child: spawn(port)?,
            port,
            socket: socket.clone(),
            client,
            dir,
        };
        // A free port can be taken before the server binds it: try another.
        for attempt in 1.. {
            match db.wait_ready(&log) {
                Ok(()) => break,
                Err(_) if attempt < 3 && db.child.try_wait()?.is_some() => {
                    db.port = free_port();
                    db.child = spawn(db.port)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(db)
    }

    fn wait_ready(&mut self, log: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "mariadbd exited early ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            match self.sql("SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("mariadbd on port {} did not answer: {last}", self.port)
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Run SQL as `root` over the Unix socket; returns the output (tab-separated, no headers).
    pub fn sql(&self, sql: &str) -> Result<String> {
        let out = Command::new(&self.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--user=root", "--batch", "--skip-column-names", "-e", sql])
            .output()
            .with_context(|| format!("run {}", self.client.display()))?;
        if !out.status.success() {
            bail!("mariadb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The folder holding the data, socket and error log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first of `names` found in `PATH` or `/usr/sbin` (where Debian puts `mariadbd`).
fn find_tool(names: &[&str]) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin".into(), "/usr/bin".into()]);
    names
        .iter()
        .find_map(|name| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()))
        .with_context(|| {
            format!(
                "{} not found (install mariadb-server; scripts/test does)",
                names.join(" / ")
            )
        })
}

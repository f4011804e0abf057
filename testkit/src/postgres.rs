//! A private PostgreSQL cluster: `initdb` into a fresh folder, `pg_ctl` on a free port (as the
//! `postgres` system user when run as root, since Postgres refuses root), restartable, stopped
//! when dropped. Optionally TLS-only.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::server_user::{give_to, service_user, ServerTlsFiles};
use crate::{free_port, TestPki};

/// A running private cluster; user `postgres`, trusted without password.
pub struct PostgresServer {
    data: PathBuf,
    port: u16,
    bin: PathBuf,
    run_as: Option<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PostgresServer {
    /// A cluster listening on 127.0.0.1 in plain text.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// A cluster that speaks only TLS (`ssl=on` with `pki`'s server certificate; `hostssl ...
    /// trust`, `hostnossl ... reject`), listening on 127.0.0.1 and 127.0.0.2 (a loopback address
    /// the certificate does not name).
    pub fn start_tls(pki: &TestPki) -> Result<Self> {
        Self::start_with(Some(pki))
    }

    fn start_with(pki: Option<&TestPki>) -> Result<Self> {
        let bin = find_bin_dir()?;
        let run_as = service_user("postgres");
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("pgdata");
        std::fs::create_dir_all(&data)?;
        let tls = pki
            .map(|pki| ServerTlsFiles::copy(pki, dir.path()))
            .transpose()?;
        give_to(run_as.as_deref(), dir.path())?;
        let mut pg = PostgresServer {
            log: dir.path().join("postgres.log"),
            data,
            port: free_port(),
            bin,
            run_as,
            _dir: dir,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data.to_str().context("utf-8 path")?,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        )?;
        let mut conf = "\nunix_socket_directories = ''\nfsync = off\n".to_string();
        match &tls {
            None => conf.push_str("listen_addresses = '127.0.0.1'\n"),
            Some(tls) => {
                conf.push_str(&format!(
                    "listen_addresses = '127.0.0.1,127.0.0.2'\nssl = on\n\
                     ssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                    tls.cert.display(),
                    tls.key.display()
                ));
                std::fs::write(
                    pg.data.join("pg_hba.conf"),
                    "hostssl all all 127.0.0.0/8 trust\nhostnossl all all all reject\n",
                )?;
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data.join("postgresql.conf"))?;
        std::io::Write::write_all(&mut file, conf.as_bytes())?;
        // A free port can be taken before the server binds it: try another.
        for attempt in 1.. {
            match pg.ctl(&["start", "-w", "-t", "60"]) {
                Ok(()) => break,
                Err(_) if attempt < 3 => pg.port = free_port(),
                Err(e) => return Err(e),
            }
        }
        Ok(pg)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restart the server (fast shutdown: open connections are cut, as in a failover).
    pub fn restart(&self) -> Result<()> {
        self.ctl(&["restart", "-m", "fast", "-w", "-t", "60"])
    }

    /// Run SQL with `psql` as `postgres` (TLS when the server offers it); returns its output.
    pub fn psql(&self, sql: &str) -> Result<String> {
        let conn = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=prefer",
            self.port
        );
        let out = Command::new(self.bin.join("psql"))
            .args([conn.as_str(), "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .output()
            .context("run psql")?;
        if !out.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ctl(&self, args: &[&str]) -> Result<()> {
        let port = format!("-p {}", self.port);
        let mut all = vec![
            "-D",
            self.data.to_str().context("utf-8 path")?,
            "-l",
            self.log.to_str().context("utf-8 path")?,
            "-o",
            &port,
        ];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let path = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let out = cmd
            .args(args)
            .current_dir("/")
            .output()
            .with_context(|| format!("run {}", path.display()))?;
        if !out.status.success() {
            bail!(
                "{tool} failed ({}): {}{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
    }
}

/// The folder holding `initdb`, `pg_ctl` and `psql`: the newest `/usr/lib/postgresql/<v>/bin`,
/// else wherever `PATH` has them.
fn find_bin_dir() -> Result<PathBuf> {
    let tools = |p: &Path| {
        ["initdb", "pg_ctl", "psql"]
            .iter()
            .all(|t| p.join(t).exists())
    };
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|p| tools(p));
    versions.sort_by_key(|bin| version_of(bin));
    if let Some(dir) = versions.pop() {
        return Ok(dir);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|p| tools(p))
        .context("initdb/pg_ctl/psql not found (install PostgreSQL; scripts/test does)")
}

/// The version numbers of `/usr/lib/postgresql/<v>/bin` (`9.6` → `[9, 6]`), so 15 sorts after 9.6.
fn version_of(bin: &Path) -> Vec<u32> {
    bin.parent()
        .and_then(Path::file_name)
        .and_then(|v| v.to_str())
        .map(|v| v.split('.').map(|n| n.parse().unwrap_or(0)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_numbers() {
        let mut bins: Vec<PathBuf> = ["15", "9.6", "10"]
            .iter()
            .map(|v| Path::new("/usr/lib/postgresql").join(v).join("bin"))
            .collect();
        bins.sort_by_key(|bin| version_of(bin));
        let order: Vec<Vec<u32>> = bins.iter().map(|b| version_of(b)).collect();
        assert_eq!(order, vec![vec![9, 6], vec![10], vec![15]]);
    }

    #[test]
    fn plain_cluster_answers_and_survives_a_restart() {
        let pg = PostgresServer::start().unwrap();
        pg.psql("CREATE TABLE t AS SELECT 7 AS n").unwrap();
        pg.restart().unwrap();
        assert_eq!(pg.psql("SELECT n FROM t").unwrap().trim(), "7");
        let ssl = pg
            .psql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .unwrap();
        assert_eq!(ssl.trim(), "f", "a plain cluster has no TLS");
    }
}

//! A private PostgreSQL cluster for the chaos run: `initdb` into a fresh folder, `pg_ctl` on a
//! free port (as the `postgres` system user when run as root, since Postgres refuses root), a
//! table of items for the declarative query task, restartable, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Items in the `items` table (`id` 1..=ITEMS, `name` = `item <id>`).
pub const ITEMS: u32 = 20_000;

/// A running private cluster.
pub struct PrivatePostgres {
    data: PathBuf,
    port: u16,
    bin: PathBuf,
    run_as: Option<String>,
    log: PathBuf,
}

impl PrivatePostgres {
    /// Create and start a cluster under `dir` and load the items.
    pub fn start(dir: &Path) -> Result<PrivatePostgres> {
        let bin = find_bin_dir()?;
        let run_as = running_as_root().then(|| "postgres".to_string());
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data)?;
        if run_as.is_some() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()?;
            if !status.success() {
                bail!("chown {} to postgres failed", dir.display());
            }
        }
        let pg = PrivatePostgres {
            log: dir.join("postgres.log"),
            data,
            port: celeriac_testkit::free_port(),
            bin,
            run_as,
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
        pg.ctl(&["start", "-w", "-t", "60"])?;
        pg.psql(&format!(
            "CREATE TABLE items AS SELECT g AS id, 'item ' || g AS name FROM generate_series(1, {ITEMS}) g; \
             ALTER TABLE items ADD PRIMARY KEY (id);"
        ))?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restart the server (fast shutdown: open connections are cut, as in a failover).
    pub fn restart(&self) -> Result<()> {
        self.ctl(&["restart", "-m", "fast", "-w", "-t", "60"])
    }

    fn ctl(&self, args: &[&str]) -> Result<()> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off",
            self.port
        );
        let mut all = vec![
            "-D",
            self.data.to_str().context("utf-8 path")?,
            "-l",
            self.log.to_str().context("utf-8 path")?,
            "-o",
            &opts,
        ];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    fn psql(&self, sql: &str) -> Result<()> {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"])
            .args(["-q", "-c", sql])
            .output()
            .context("run psql")?;
        if !out.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
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
                "{tool} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The folder holding `initdb` and `pg_ctl`: the newest `/usr/lib/postgresql/<v>/bin`, else
/// wherever `PATH` has them.
fn find_bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists() && p.join("pg_ctl").exists());
    versions.sort();
    if let Some(dir) = versions.pop() {
        return Ok(dir);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .context("initdb/pg_ctl not found (install PostgreSQL)")
}

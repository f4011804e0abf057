//! What the private database servers share: the system user they run as when the tests run as
//! root (Postgres and MariaDB refuse root), and their TLS files copied where that user can read.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::TestPki;

/// `Some(user)` when running as root (the server must run as `user`), `None` otherwise.
pub(crate) fn service_user(user: &str) -> Option<String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    root.then(|| user.to_string())
}

/// `chown -R user:user dir` when `user` is set.
pub(crate) fn give_to(user: Option<&str>, dir: &Path) -> Result<()> {
    let Some(user) = user else { return Ok(()) };
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:{user}"))
        .arg(dir)
        .status()
        .context("run chown")?;
    if !status.success() {
        bail!("chown {} to {user} failed", dir.display());
    }
    Ok(())
}

/// The server's copies of `pki`'s CA, certificate and key (mode 0600) in `dir/tls`; the caller
/// then gives `dir` to the server user.
pub(crate) struct ServerTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerTlsFiles {
    pub(crate) fn copy(pki: &TestPki, dir: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls)?;
        let copy = |from: &Path, name: &str| -> Result<PathBuf> {
            let to = tls.join(name);
            std::fs::copy(from, &to).with_context(|| format!("copy {}", from.display()))?;
            Ok(to)
        };
        let files = ServerTlsFiles {
            ca: copy(&pki.ca_cert, "ca.pem")?,
            cert: copy(&pki.server_cert, "server.pem")?,
            key: copy(&pki.server_key, "server.key")?,
        };
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600))?;
        Ok(files)
    }
}

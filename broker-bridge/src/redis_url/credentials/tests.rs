use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::StreamingCredentialsProvider;

use super::CredentialsFile;
use crate::redis_url::parse;

/// Log lines written while a test runs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

fn provider(dir: &tempfile::TempDir, text: &str) -> (std::path::PathBuf, CredentialsFile) {
    let path = dir.path().join("url");
    std::fs::write(&path, text).unwrap();
    let url = parse(text.trim()).unwrap();
    let file = CredentialsFile::new(&path, &url, Duration::from_millis(20));
    (path, file)
}

async fn next(
    stream: &mut (impl futures_util::Stream<Item = redis::RedisResult<redis::BasicAuth>> + Unpin),
) -> (String, String) {
    let auth = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("credentials within the deadline")
        .expect("stream open")
        .expect("credentials");
    (auth.username().to_owned(), auth.password().to_owned())
}

#[tokio::test]
async fn yields_current_credentials_at_once_then_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let (path, file) = provider(&dir, "redis://app:first-secret@127.0.0.1:6379/2\n");
    let mut stream = file.subscribe();
    assert_eq!(
        next(&mut stream).await,
        ("app".into(), "first-secret".into())
    );
    std::fs::write(&path, "redis://app:second-secret@127.0.0.1:6379/2\n").unwrap();
    assert_eq!(
        next(&mut stream).await,
        ("app".into(), "second-secret".into())
    );
    // A new subscription (a new connection) starts from the current credentials.
    let mut fresh = file.subscribe();
    assert_eq!(
        next(&mut fresh).await,
        ("app".into(), "second-secret".into())
    );
    std::fs::write(&path, "redis://other:third%40secret@127.0.0.1:6379/2").unwrap();
    assert_eq!(
        next(&mut stream).await,
        ("other".into(), "third@secret".into())
    );
    assert_eq!(
        next(&mut fresh).await,
        ("other".into(), "third@secret".into())
    );
}

#[test]
fn a_file_rewritten_since_the_url_was_read_counts_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (path, file) = provider(&dir, "redis://app:read-secret@127.0.0.1:6379/0");
    std::fs::write(&path, "redis://app:rewritten-secret@127.0.0.1:6379/0").unwrap();
    assert_eq!(file.current().password(), "rewritten-secret");
}

#[tokio::test]
async fn no_user_name_means_the_default_user() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, file) = provider(&dir, "redis://:only-secret@127.0.0.1:6379/0");
    let mut stream = file.subscribe();
    assert_eq!(
        next(&mut stream).await,
        ("default".into(), "only-secret".into())
    );
}

#[test]
fn bad_or_moved_urls_keep_the_last_good_credentials_and_never_show_passwords() {
    let (logs, _guard) = capture();
    let dir = tempfile::tempdir().unwrap();
    let (path, file) = provider(&dir, "redis://app:good-secret@127.0.0.1:6379/0");
    let current = |f: &CredentialsFile| {
        let a = f.current();
        (a.username().to_owned(), a.password().to_owned())
    };
    let good = ("app".to_string(), "good-secret".to_string());
    assert_eq!(current(&file), good);

    std::fs::write(&path, "bare-password-secret").unwrap();
    assert_eq!(current(&file), good);
    assert!(
        logs.text().contains("does not hold a URL"),
        "{}",
        logs.text()
    );

    std::fs::write(&path, "redis://app:port-secret@127.0.0.1:notaport/0").unwrap();
    assert_eq!(current(&file), good);
    assert!(logs.text().contains("usable URL"), "{}", logs.text());

    std::fs::write(&path, "redis://app:moved-secret@elsewhere:6379/0").unwrap();
    assert_eq!(current(&file), good);
    std::fs::write(&path, "redis://app:db-secret@127.0.0.1:6379/5").unwrap();
    assert_eq!(current(&file), good);
    assert!(logs.text().contains("needs a restart"), "{}", logs.text());

    std::fs::write(&path, "redis://app@127.0.0.1:6379/0").unwrap();
    assert_eq!(current(&file), good);
    assert!(
        logs.text().contains("without a password"),
        "{}",
        logs.text()
    );

    std::fs::remove_file(&path).unwrap();
    assert_eq!(current(&file), good);
    assert!(logs.text().contains("cannot read"), "{}", logs.text());

    std::fs::write(&path, "redis://app:new-secret@127.0.0.1:6379/0").unwrap();
    assert_eq!(current(&file), ("app".into(), "new-secret".into()));
    assert!(
        logs.text().contains("credentials changed"),
        "{}",
        logs.text()
    );

    // In a failover list, the URL of this connection's server counts.
    std::fs::write(
        &path,
        "redis://app:other-secret@elsewhere:6379/0;redis://app:list-secret@127.0.0.1:6379/0",
    )
    .unwrap();
    assert_eq!(current(&file), ("app".into(), "list-secret".into()));

    let shown = format!(
        "{file:?} {:?}",
        parse("redis://app:new-secret@127.0.0.1:6379/0")
            .unwrap()
            .with_credentials_file(&path, Duration::from_secs(5))
    );
    assert!(shown.contains("CredentialsFile"), "{shown}");
    let logs = logs.text();
    for secret in [
        "good", "bare", "port", "moved", "db", "new", "other", "list",
    ] {
        let secret = format!("{secret}-secret");
        assert!(!logs.contains(&secret), "{secret} in the logs: {logs}");
        assert!(!shown.contains(&secret), "{secret} in Debug: {shown}");
    }
}

#[test]
fn a_url_without_password_gets_no_provider() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("url");
    std::fs::write(&path, "redis://127.0.0.1:6379/0").unwrap();
    let url = parse("redis://127.0.0.1:6379/0")
        .unwrap()
        .with_credentials_file(&path, Duration::from_secs(5));
    assert!(url.credentials_file().is_none());
    let url = parse("redis://:pw@127.0.0.1:6379/0")
        .unwrap()
        .with_credentials_file(&path, Duration::from_secs(5));
    assert_eq!(url.credentials_file().unwrap().path(), path);
}

//! Declarative query tasks called from real Python Celery, reading real Postgres, MariaDB,
//! SQLite and "SQL Server" (the project's TDS test server over TLS, tiberius unmodified) through
//! the cache; invalidation from another process; bad config and bad arguments.
//!
//! Each test creates its own database (unique name) on the local servers and drops it after.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use celeriac_cache::source::{registry::connect_lazy, SourceConfig};
use celeriac_cache::{Cache, CacheConfig, Source};
use serde_json::{json, Value};
use support::World;
use tds_test_server::{ServerOptions, TdsServer, TestCertificates};

/// A throwaway database on a local server (or a TDS test server of its own), dropped at the end.
struct TempDb {
    admin: Option<Arc<dyn Source>>,
    name: String,
    url: String,
    /// Extra lines of the `[sources.main]` table (TLS settings).
    source_toml: String,
    source_config: SourceConfig,
    rt: tokio::runtime::Runtime,
    _tds: Option<TdsServer>,
    _dir: tempfile::TempDir,
}

impl TempDb {
    fn create(kind: &str) -> TempDb {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let _in_runtime = rt.enter();
        let name = format!("celeriac_t_{}_{}", std::process::id(), uuid_suffix());
        let mut source_toml = String::new();
        let mut tds = None;
        let (admin, url) = match kind {
            "postgres" => {
                let admin = connect_lazy(&SourceConfig::new(
                    "admin",
                    "postgres://postgres@127.0.0.1:5432/postgres",
                ))
                .unwrap();
                (
                    Some(admin),
                    format!("postgres://postgres@127.0.0.1:5432/{name}"),
                )
            }
            "mariadb" => {
                let admin = connect_lazy(&SourceConfig::new(
                    "admin",
                    "mysql://root@127.0.0.1:3306/mysql",
                ))
                .unwrap();
                (Some(admin), format!("mysql://root@127.0.0.1:3306/{name}"))
            }
            "mssql" => {
                // TLS on: the server's certificate is checked against a CA made for this test.
                let certs = TestCertificates::generate(&["localhost", "127.0.0.1"]).unwrap();
                let ca = dir.path().join("ca.pem");
                std::fs::write(&ca, &certs.ca_pem).unwrap();
                source_toml = format!("tls_ca_file = \"{}\"", ca.display());
                let server = rt
                    .block_on(TdsServer::start(ServerOptions {
                        tls: Some(certs.server),
                        credentials: Some(("app".into(), "s3cret".into())),
                        ..ServerOptions::default()
                    }))
                    .unwrap();
                let url = format!(
                    "server=tcp:127.0.0.1,{};user=app;password=s3cret;database={name};encrypt=true",
                    server.addr().port()
                );
                tds = Some(server);
                (None, url)
            }
            _ => (
                None,
                format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
            ),
        };
        if let Some(admin) = &admin {
            rt.block_on(admin.fetch(&format!("CREATE DATABASE {name}"), &[]))
                .unwrap_or_else(|e| panic!("create {kind} database (is the server running? scripts/test starts it): {e}"));
        }
        let mut source_config = SourceConfig::new("t", url.clone());
        if kind == "mssql" {
            source_config.tls_ca_file = Some(dir.path().join("ca.pem"));
        }
        let db = TempDb {
            admin,
            name,
            url,
            source_toml,
            source_config,
            rt,
            _tds: tds,
            _dir: dir,
        };
        db.exec("CREATE TABLE tickets (id BIGINT PRIMARY KEY, title VARCHAR(200) NOT NULL, price DECIMAL(10,2), status VARCHAR(20))");
        db.exec("INSERT INTO tickets (id, title, price, status) VALUES (1, 'printer on fire', 12.50, 'open'), (2, 'no coffee', NULL, 'open'), (3, 'done', 1.00, 'closed')");
        db
    }

    fn exec(&self, sql: &str) {
        let _in_runtime = self.rt.enter();
        let source = connect_lazy(&self.source_config).unwrap();
        self.rt.block_on(source.fetch(sql, &[])).unwrap();
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _in_runtime = self.rt.enter();
        if let Some(admin) = &self.admin {
            let _ = self
                .rt
                .block_on(admin.fetch(&format!("DROP DATABASE {}", self.name), &[]));
        }
    }
}

fn uuid_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{nanos:x}")
}

fn config_file(db: &TempDb, dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let url = &db.url;
    let source_toml = &db.source_toml;
    let path = dir.join("worker.toml");
    let text = format!(
        r#"
[cache]
prefix = "t:cache:"

[sources.main]
url = "{url}"
query_timeout = "5s"
{source_toml}

[[tasks]]
name = "q.get_ticket"
source = "main"
sql = "SELECT id, title, price, status FROM tickets WHERE id = :ticket_id"
params = ["ticket_id"]
key = "ticket:{{ticket_id}}"
ttl = 300
negative_ttl = 30
result = "one"

[[tasks]]
name = "q.tickets_by_status"
source = "main"
sql = "SELECT id, title FROM tickets WHERE status = :status ORDER BY id"
params = ["status"]
key = "tickets:status:{{status}}"
ttl = "5m"
result = "many"
{extra}
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

const CALLS: &str = r#"
import json
from celery_app import app

def call(name, *args, **kwargs):
    try:
        return app.send_task(name, args=args, kwargs=kwargs).get(timeout=20)
    except Exception as e:
        return {"raised": type(e).__name__, "message": str(e)}

out = {
    "one": call("q.get_ticket", 1),
    "kw": call("q.get_ticket", ticket_id=2),
    "missing": call("q.get_ticket", 999),
    "many": call("q.tickets_by_status", "open"),
    "none": call("q.tickets_by_status", "nope"),
    "no_args": call("q.get_ticket"),
    "extra_kw": call("q.get_ticket", 1, color="red"),
    "list_arg": call("q.get_ticket", [1]),
    "drop_status": call("q.tickets_by_status", "'; DROP TABLE tickets; --"),
    "or_status": call("q.tickets_by_status", "open' OR '1'='1"),
    "drop_id": call("q.get_ticket", "'; DROP TABLE tickets; --"),
    "or_id": call("q.get_ticket", "1 OR 1=1"),
    "closed_after": call("q.tickets_by_status", "closed"),
}
print(json.dumps(out))
"#;

fn run_against(kind: &str) {
    let db = TempDb::create(kind);
    let world = World::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&db, dir.path(), "");
    let worker = world.celeriac("w", &["--config", config.to_str().unwrap()]);
    let out: Value = serde_json::from_str(world.py(CALLS).trim()).unwrap();
    // SQLite has no decimal type: DECIMAL columns hold REAL numbers there.
    let price = if kind == "sqlite" {
        json!(12.5)
    } else {
        json!("12.50")
    };
    assert_eq!(
        out["one"],
        json!({"id": 1, "title": "printer on fire", "price": price, "status": "open"}),
        "{kind}"
    );
    assert_eq!(out["kw"]["id"], json!(2));
    assert_eq!(out["kw"]["price"], Value::Null);
    assert_eq!(out["missing"], Value::Null);
    assert_eq!(
        out["many"],
        json!([{"id": 1, "title": "printer on fire"}, {"id": 2, "title": "no coffee"}])
    );
    assert_eq!(out["none"], json!([]));
    assert_eq!(out["no_args"]["raised"], json!("TypeError"));
    assert!(out["no_args"]["message"]
        .as_str()
        .unwrap()
        .contains("missing 1 required argument(s): 'ticket_id'"));
    assert_eq!(out["extra_kw"]["raised"], json!("TypeError"));
    assert_eq!(out["list_arg"]["raised"], json!("ValueError"));

    // Hostile strings are parameters, never SQL: no rows for them, and the table is intact (the
    // `closed` key was never cached, so it is read from the database after them). Compared with
    // the integer id, Postgres refuses text (a failed task), MariaDB casts the numeric prefix
    // ('1 OR 1=1' → 1: that one ticket), SQLite and SQL Server compare text (no row).
    assert_eq!(out["drop_status"], json!([]), "{kind}");
    assert_eq!(out["or_status"], json!([]), "{kind}");
    for case in ["drop_id", "or_id"] {
        let v = &out[case];
        let one = json!({"id": 1, "title": "printer on fire", "price": price, "status": "open"});
        assert!(
            v.is_null() || v.get("raised").is_some() || (kind == "mariadb" && *v == one),
            "{kind}: {case} gave {v}"
        );
    }
    assert_eq!(
        out["closed_after"],
        json!([{"id": 3, "title": "done"}]),
        "{kind}"
    );

    // The value is cached: a change in the database is not seen until the key is invalidated,
    // and the invalidation (sent from this process) reaches the worker process's L1.
    db.exec("UPDATE tickets SET title = 'printer extinguished' WHERE id = 1");
    let get1 = "from celery_app import app\nprint(app.send_task('q.get_ticket', args=(1,)).get(timeout=20)['title'])";
    assert_eq!(world.py(get1).trim(), "printer on fire");
    db.rt.block_on(async {
        let client = redis::Client::open(world.redis.url(0)).unwrap();
        let cache = Cache::new(
            CacheConfig {
                prefix: "t:cache:".into(),
                ..CacheConfig::default()
            },
            Some(client),
        );
        cache.invalidate("q.get_ticket:ticket:(1)").await;
    });
    let fresh = support::eventually(Duration::from_secs(10), || {
        let title = world.py(get1).trim().to_owned();
        (title == "printer extinguished").then_some(title)
    });
    assert!(
        fresh.is_some(),
        "{kind}: the invalidation did not reach the worker"
    );
    drop(worker);
}

#[test]
fn query_tasks_read_postgres() {
    run_against("postgres");
}

#[test]
fn query_tasks_read_mariadb() {
    run_against("mariadb");
}

#[test]
fn query_tasks_read_sql_server_over_tls() {
    on_big_stack(|| run_against("mssql"));
}

/// Run `f` on a thread with an 8 MiB stack: tiberius's futures, unoptimized, outgrow the 2 MiB
/// of a test thread when driven by `block_on` there.
fn on_big_stack(f: impl FnOnce() + Send + 'static) {
    let outcome = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(f)
        .unwrap()
        .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn query_tasks_read_sqlite() {
    run_against("sqlite");
}

#[test]
fn bad_task_config_stops_the_worker_with_a_clear_error() {
    let world = World::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"[[tasks]]
name = "x"
source = "nowhere"
sql = "SELECT 1"
key = "k"
ttl = 5"#,
            "unknown source `nowhere`",
        ),
        (
            r#"[sources.main]
url = "sqlite::memory:"
[[tasks]]
name = "x"
source = "main"
sql = "SELECT :a, :b"
params = ["a"]
key = "k:{a}"
ttl = 5"#,
            "the sql uses :b, which is not in params [a]",
        ),
        (
            r#"[sources.main]
url = "sqlite::memory:"
[[tasks]]
name = "x"
source = "main"
sql = "SELECT :a"
params = ["a"]
key = "k:{a"
ttl = 5"#,
            "bad key template",
        ),
        (
            r#"[sources.main]
url = "sqlite::memory:"
[[tasks]]
name = "x"
source = "main"
sql = "SELECT :a, :b"
params = ["a", "b"]
key = "k:{a}"
ttl = 5"#,
            "parameter `b` is missing from the key template",
        ),
        (
            r#"[sources.main]
url = "oracle://x"
"#,
            "unsupported url scheme `oracle`",
        ),
    ];
    for (i, (toml, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_celeriac-test-worker"))
            .args(["--config", path.to_str().unwrap()])
            .envs(world.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(!out.status.success(), "case {i} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected),
            "case {i}: expected `{expected}` in: {stderr}"
        );
    }
}

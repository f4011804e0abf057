//! The shipped configurations run as shipped: `celeriac warm --config worker/examples/demo.toml`
//! (the demo's `[[warm]]` entry, on the demo's SQLite data) fills the cache that a worker then
//! serves a real Python Celery call from, and the deploy configurations' warm examples run
//! with the CronJob's command; the warm job's metrics reach a real Pushgateway, over plain HTTP
//! and over TLS with basic auth.

mod support;

use std::path::Path;
use std::process::Command;

use celeriac_testkit::workspace_root;
use support::World;

/// `celeriac warm` as the CronJob runs it (`warm --config FILE`), in the world's environment.
fn warm(world: &World, config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac-test-warm"))
        .arg("--config")
        .arg(config)
        .envs(world.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The demo's SQLite data (worker/examples/demo-data.sql) in a file of its own.
fn demo_db(world: &World) -> std::path::PathBuf {
    let db = world.dir().join("demo.db");
    let sql = workspace_root().join("worker/examples/demo-data.sql");
    world.py(&format!(
        "import sqlite3\nc = sqlite3.connect({db:?})\nc.executescript(open({sql:?}).read())\nc.commit()\n"
    ));
    db
}

#[test]
fn demo_config_warms_the_cache_a_worker_then_serves() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let world = World::new(&[("CELERIAC_SOURCE_MAIN_URL", url.as_str())]);
    let made = demo_db(&world);
    std::fs::rename(&made, &db).unwrap();
    let config = workspace_root().join("worker/examples/demo.toml");

    let (code, out) = warm(&world, &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("demo.get_customer"), "{out}");

    // The database changes after the warm-up: a worker answering with the warmed row proves
    // the call was served from the cache the warm job filled, not from the database.
    world.py(&format!(
        "import sqlite3\nc = sqlite3.connect({db:?})\nc.execute(\"UPDATE customers SET name = 'renamed'\")\nc.commit()\n"
    ));
    let config_arg = config.to_string_lossy().into_owned();
    let _worker = world.celeriac("demo", &["--config", &config_arg, "-c", "2"]);
    let got = world.py(r#"
import json
from celery_app import app
print(json.dumps([app.send_task("demo.get_customer", args=(i,)).get(timeout=20) for i in (1, 2)]))
"#);
    let got: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
    assert_eq!(
        got,
        serde_json::json!([
            {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com"},
            {"id": 2, "name": "Grace Hopper", "email": "grace@example.com"}
        ])
    );
}

/// A throwaway PostgreSQL database (local server, trust auth) with the `customers` table the
/// deploy configurations' example expects; dropped at the end.
struct Customers {
    name: String,
}

impl Customers {
    fn create() -> Customers {
        let name = format!("celeriac_deploy_{}", std::process::id());
        psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        psql("postgres", &format!("CREATE DATABASE {name}"));
        psql(
            &name,
            "CREATE TABLE customers (id bigint PRIMARY KEY, name text, email text, \
             updated_at timestamptz NOT NULL DEFAULT now()); \
             INSERT INTO customers (id, name, email) VALUES \
             (1, 'Ada Lovelace', 'ada@example.com'), (2, 'Grace Hopper', 'grace@example.com'), \
             (3, 'Edsger Dijkstra', 'ewd@example.com')",
        );
        Customers { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for Customers {
    fn drop(&mut self) {
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(db: &str, sql: &str) {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The cached entry of `app.get_customer(id)` under the configuration's cache prefix (`v1`,
/// key layout `k2`).
fn cached_customer(world: &World, id: u32) -> serde_json::Value {
    let mut r = world.redis();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*:v1:k2:{{app.get_customer:customer:({id})}}"))
        .query(&mut r)
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let text: String = redis::cmd("GET").arg(&keys[0]).query(&mut r).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn generic_overlay_config_warm_runs_as_the_cronjob_runs_it() {
    let db = Customers::create();
    let url = db.url();
    let world = World::new(&[("CELERIAC_SOURCE_MAIN_URL", url.as_str())]);
    let config = workspace_root().join("deploy/overlays/generic/celeriac.toml");
    let (code, out) = warm(&world, &config);
    assert_eq!(code, 0, "{out}");
    let entry = cached_customer(&world, 3);
    assert_eq!(entry["found"], serde_json::json!(true), "{entry}");
    assert_eq!(
        entry["value"],
        serde_json::json!({"id": 3, "name": "Edsger Dijkstra", "email": "ewd@example.com"})
    );
    // The next night: only what changed is read, and the change reaches the cache.
    psql(
        &db.name,
        "UPDATE customers SET name = 'Barbara Liskov', updated_at = now() + interval '1 second' WHERE id = 2",
    );
    let (code, out) = warm(&world, &config);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        cached_customer(&world, 2)["value"]["name"],
        serde_json::json!("Barbara Liskov")
    );
}

#[test]
fn aws_overlay_config_is_a_valid_warm_configuration() {
    // Aurora needs TLS (verify-full, the RDS CA bundle): nothing here serves that, so the run
    // must get past the configuration (exit 2 would mean the shipped file is wrong) and stop
    // on the connection (exit 1).
    let world = World::new(&[
        (
            "CELERIAC_SOURCE_AURORA_URL",
            "postgres://celeriac@127.0.0.1:9/app",
        ),
        (
            "CELERIAC_SOURCE_ONPREM_URL",
            "server=tcp:127.0.0.1,9;user=celeriac;password=x;database=app",
        ),
    ]);
    let config = workspace_root().join("deploy/overlays/aws/celeriac.toml");
    let (code, out) = warm(&world, &config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("app.get_customer"), "{out}");
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `http://127.0.0.1:port/path` with a plain HTTP/1.0 request; the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

#[test]
fn two_warm_jobs_push_to_a_real_pushgateway() {
    let port = free_port();
    let world = World::new(&[(
        "CELERIAC_WARM_PUSHGATEWAY_URL",
        &format!("http://127.0.0.1:{port}/"),
    )]);
    let mut gateway = Command::new("prometheus-pushgateway");
    gateway
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--persistence.file=");
    let _gateway =
        support::Proc::spawn("pushgateway", gateway, world.dir().join("pushgateway.log"));
    support::eventually(std::time::Duration::from_secs(20), || {
        http_get(port, "/-/ready")
    })
    .expect("the Pushgateway is ready");

    let config = two_jobs_config(&world);
    let (code, out) = warm(&world, &config);
    assert_eq!(code, 0, "{out}");
    assert_pushed(&http_get(port, "/metrics").unwrap());
}

/// A config with two `[[warm]]` entries over the demo's SQLite data.
fn two_jobs_config(world: &World) -> std::path::PathBuf {
    let db = demo_db(world);
    let config = world.dir().join("two-jobs.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sources.main]
url = "sqlite://{}"

[[tasks]]
name = "demo.get_customer"
source = "main"
sql = "SELECT id, name FROM customers WHERE id = :customer_id"
params = ["customer_id"]
key = "customer:{{customer_id}}"
ttl = "1h"

[[tasks]]
name = "demo.get_ticket_row"
source = "main"
sql = "SELECT id, title FROM tickets WHERE id = :ticket_id"
params = ["ticket_id"]
key = "ticket:{{ticket_id}}"
ttl = "1h"

[[warm]]
task = "demo.get_customer"
table = "customers"
key_column = "id"
columns = ["id", "name"]

[[warm]]
task = "demo.get_ticket_row"
table = "tickets"
key_column = "id"
columns = ["id", "title"]
"#,
            db.display()
        ),
    )
    .unwrap();
    config
}

/// Both jobs' rows and last-success series are in the Pushgateway's exposition.
fn assert_pushed(metrics: &str) {
    for (job, rows) in [("demo.get_customer", 2), ("demo.get_ticket_row", 3)] {
        let line = format!(
            "celeriac_warm_rows_total{{instance=\"\",job=\"celeriac_warm\",warm_job=\"{job}\"}} {rows}"
        );
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
        let success = format!(
            "celeriac_warm_last_success_timestamp_seconds{{instance=\"\",job=\"celeriac_warm\",warm_job=\"{job}\"}} "
        );
        assert!(metrics.contains(&success), "{success} not in:\n{metrics}");
    }
}

/// GET `https://127.0.0.1:port/path` trusting `ca`, as `user` with `password`; the body of a
/// successful reply.
fn https_get(ca: &Path, port: u16, path: &str, user: &str, password: &str) -> Option<String> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let reply = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .ok()?
            .get(format!("https://127.0.0.1:{port}{path}"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .ok()?;
        if !reply.status().is_success() {
            return None;
        }
        reply.text().await.ok()
    })
}

/// The push over HTTPS with basic auth to a Pushgateway whose web config (`--web.config.file`)
/// serves TLS from a test CA and admits one bcrypt-hashed user: the URL with the user's
/// credentials comes from `CELERIAC_WARM_PUSHGATEWAY_URL_FILE` and the CA from
/// `CELERIAC_WARM_PUSHGATEWAY_CA_FILE`. A wrong password, or no trusted CA, fails the run.
#[test]
fn warm_pushes_over_tls_with_basic_auth() {
    let pki = celeriac_testkit::TestPki::generate("pushgateway").unwrap();
    let port = free_port();
    let secrets = tempfile::tempdir().unwrap();
    let url_file = secrets.path().join("pushgateway-url");
    let web_config = secrets.path().join("web.yml");
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  warm: {}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            bcrypt::hash("s3cret pass", 4).unwrap()
        ),
    )
    .unwrap();
    let world = World::new(&[
        (
            "CELERIAC_WARM_PUSHGATEWAY_URL_FILE",
            url_file.to_str().unwrap(),
        ),
        (
            "CELERIAC_WARM_PUSHGATEWAY_CA_FILE",
            pki.ca_cert.to_str().unwrap(),
        ),
    ]);
    let mut gateway = Command::new("prometheus-pushgateway");
    gateway
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--web.config.file={}", web_config.display()))
        .arg("--persistence.file=");
    let _gateway =
        support::Proc::spawn("pushgateway", gateway, world.dir().join("pushgateway.log"));
    support::eventually(std::time::Duration::from_secs(20), || {
        https_get(&pki.ca_cert, port, "/-/ready", "warm", "s3cret pass")
    })
    .expect("the Pushgateway is ready over TLS");
    let config = two_jobs_config(&world);

    std::fs::write(
        &url_file,
        format!("https://warm:s3cret@127.0.0.1:{port}/\n"),
    )
    .unwrap();
    let (code, out) = warm(&world, &config);
    assert_ne!(code, 0, "a wrong password must fail the run: {out}");
    assert!(out.contains("401"), "{out}");

    std::fs::write(
        &url_file,
        format!("https://warm:s3cret%20pass@127.0.0.1:{port}/\n"),
    )
    .unwrap();
    let mut untrusted = Command::new(env!("CARGO_BIN_EXE_celeriac-test-warm"));
    untrusted
        .arg("--config")
        .arg(&config)
        .envs(world.env.iter().map(|(k, v)| (k, v)))
        .env_remove("CELERIAC_WARM_PUSHGATEWAY_CA_FILE");
    let refused = untrusted.output().unwrap();
    let refused_out = String::from_utf8_lossy(&refused.stderr).into_owned()
        + &String::from_utf8_lossy(&refused.stdout);
    assert_ne!(
        refused.status.code(),
        Some(0),
        "an untrusted certificate must fail the run: {refused_out}"
    );
    assert!(
        https_get(&pki.ca_cert, port, "/metrics", "warm", "s3cret pass")
            .unwrap()
            .lines()
            .all(|l| !l.starts_with("celeriac_warm_rows_total")),
        "nothing was pushed by the refused runs"
    );

    let (code, out) = warm(&world, &config);
    assert_eq!(code, 0, "{out}");
    assert_pushed(&https_get(&pki.ca_cert, port, "/metrics", "warm", "s3cret pass").unwrap());
}

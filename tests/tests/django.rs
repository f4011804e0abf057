//! The adoption path end to end: the example Django project (`examples/django-app`) is the
//! producer. Django's dev server, a Python Celery worker and celeriac (with the project's
//! `celeriac.toml`) share a private Redis and a throwaway PostgreSQL database that Django
//! migrates. `/tickets/<id>/` is served by celeriac's cached query task, `/report/` by the
//! Python worker; a second read does not touch the database; a save through Django's ORM
//! (post_save → `tickets/celeriac_cache.py`) makes the next read fresh.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use celeriac_cache::source::{registry::connect_lazy, SourceConfig};
use celeriac_cache::Source;
use celeriac_testkit::{free_port, python, workspace_root};
use serde_json::{json, Value};
use support::World;

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A PostgreSQL database of this test, dropped at the end.
struct PgDb {
    admin: Arc<dyn Source>,
    name: String,
    url: String,
    rt: tokio::runtime::Runtime,
}

impl PgDb {
    fn create() -> PgDb {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let admin = {
            let _in_runtime = rt.enter();
            connect_lazy(&SourceConfig::new("admin", ADMIN_URL)).unwrap()
        };
        let name = format!("celeriac_django_{}", std::process::id());
        rt.block_on(admin.fetch(&format!("CREATE DATABASE {name}"), &[]))
            .unwrap_or_else(|e| {
                panic!("create the database (is PostgreSQL running? scripts/test starts it): {e}")
            });
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        PgDb {
            admin,
            name,
            url,
            rt,
        }
    }

    /// Scans (sequential + index) of Django's ticket table so far, as the statistics collector
    /// reports them.
    fn ticket_scans(&self) -> i64 {
        let _in_runtime = self.rt.enter();
        let source = connect_lazy(&SourceConfig::new("stats", self.url.clone())).unwrap();
        let rows = self
            .rt
            .block_on(source.fetch(
                "SELECT (seq_scan + COALESCE(idx_scan, 0))::bigint AS n FROM pg_stat_user_tables WHERE relname = 'tickets_ticket'",
                &[],
            ))
            .unwrap();
        rows.first()
            .and_then(|row| row.get("n"))
            .and_then(Value::as_i64)
            .expect("tickets_ticket in pg_stat_user_tables")
    }
}

impl PgDb {
    /// [`PgDb::ticket_scans`] once it stops changing (statistics of finished processes are
    /// flushed asynchronously).
    fn settled_ticket_scans(&self) -> i64 {
        support::eventually(Duration::from_secs(30), || {
            let a = self.ticket_scans();
            std::thread::sleep(Duration::from_millis(500));
            (self.ticket_scans() == a).then_some(a)
        })
        .expect("table statistics settle")
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _in_runtime = self.rt.enter();
        let _ = self.rt.block_on(self.admin.fetch(
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            &[],
        ));
    }
}

fn app_dir() -> PathBuf {
    workspace_root().join("examples/django-app")
}

/// `manage.py <args>` in the example project with the world's environment.
fn manage(world: &World, args: &[&str]) -> String {
    let out = Command::new(python().unwrap())
        .arg("manage.py")
        .args(args)
        .current_dir(app_dir())
        .envs(world.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "manage.py {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GET `path` on the dev server: (status, JSON body), or None while it is not answering.
fn get(port: u16, path: &str) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}):\n{response}"));
    Some((status, body))
}

#[test]
fn django_project_reads_through_celeriac_and_reports_through_python() {
    let db = PgDb::create();
    let app = app_dir();
    let world = World::new(&[
        ("DATABASE_URL", &db.url),
        ("DJANGO_SETTINGS_MODULE", "proj.settings"),
        ("PYTHONPATH", app.to_str().unwrap()),
        ("CELERIAC_SOURCE_MAIN_URL", &db.url),
    ]);
    manage(&world, &["migrate", "--noinput"]);
    assert!(manage(&world, &["seed_tickets"]).contains("3 tickets"));

    // The project's celeriac.toml, with one database connection so that the scan counts below
    // come from one backend in order.
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(app.join("celeriac.toml")).unwrap();
    assert!(example.contains("max_connections = 8"));
    let config = dir.path().join("celeriac.toml");
    std::fs::write(
        &config,
        example.replace("max_connections = 8", "max_connections = 1"),
    )
    .unwrap();
    let _celeriac = world.celeriac(
        "celeriac",
        &["-Q", "celeriac", "--config", config.to_str().unwrap()],
    );
    let mut py_worker = world.python_process(
        "python-worker",
        &[
            "-m",
            "celery",
            "-A",
            "proj",
            "worker",
            "-P",
            "solo",
            "-Q",
            "celery",
            "-n",
            "py@test",
            "-l",
            "INFO",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ],
    );
    py_worker
        .wait_for_log("ready.", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let manage_py = app.join("manage.py");
    let _server = world.python_process(
        "runserver",
        &[
            manage_py.to_str().unwrap(),
            "runserver",
            &format!("127.0.0.1:{port}"),
            "--noreload",
        ],
    );
    let listening = support::eventually(Duration::from_secs(60), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(listening.is_some(), "the dev server did not start");

    // /tickets/1/: celeriac's declarative task read the row Django wrote.
    let before = db.settled_ticket_scans();
    let first = get(port, "/tickets/1/").expect("dev server answers");
    assert_eq!(
        first,
        (
            200,
            json!({"id": 1, "title": "printer on fire", "status": "open", "price": "12.50"})
        )
    );
    assert!(
        support::eventually(Duration::from_secs(30), || (db.ticket_scans()
            == before + 1)
            .then_some(()))
        .is_some(),
        "the first read scanned tickets_ticket once (scans before: {before}, now {})",
        db.ticket_scans()
    );
    assert!(!py_worker.log().contains("tickets.get_ticket["));

    // The second read is served from the cache; a read of another row (same single
    // connection) flushes any scan the second read would have made.
    assert_eq!(get(port, "/tickets/1/"), Some(first.clone()));
    assert_eq!(get(port, "/tickets/404/").map(|r| r.0), Some(404));
    assert!(
        support::eventually(Duration::from_secs(30), || (db.ticket_scans()
            >= before + 2)
            .then_some(()))
        .is_some(),
        "the read of a missing row scanned the table"
    );
    assert_eq!(
        db.ticket_scans(),
        before + 2,
        "the second read of ticket 1 queried the database"
    );

    // /report/: the Python worker (the ORM in tickets.report) answered.
    assert_eq!(
        get(port, "/report/"),
        Some((
            200,
            json!({"total": 3, "by_status": {"closed": 1, "open": 2}})
        ))
    );
    assert!(py_worker.log().contains("tickets.report"));

    // A save through Django's ORM invalidates (post_save → celeriac_cache.invalidate).
    world.py(
        "import django\ndjango.setup()\nfrom tickets.models import Ticket\n\
         t = Ticket.objects.get(pk=1)\nt.title = 'printer extinguished'\nt.status = 'closed'\nt.save()",
    );
    let fresh = support::eventually(Duration::from_secs(10), || {
        let (status, body) = get(port, "/tickets/1/")?;
        (status == 200 && body["title"] == json!("printer extinguished")).then_some(body)
    });
    assert_eq!(
        fresh,
        Some(
            json!({"id": 1, "title": "printer extinguished", "status": "closed", "price": "12.50"})
        )
    );
    assert_eq!(
        get(port, "/report/"),
        Some((
            200,
            json!({"total": 3, "by_status": {"closed": 2, "open": 1}})
        ))
    );
}

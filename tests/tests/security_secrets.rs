//! No secret in a log line, an error or a stored result: the real worker binary logs JSON at
//! debug level (every crate: `RUST_LOG=debug`) while it runs with passwords in the broker URL
//! (read from a `_FILE`), the backend URL and the cache sources' URLs (one from
//! `CELERIAC_SOURCE_<NAME>_URL_FILE`), including sources that fail (wrong password, nothing
//! listening), an unreachable broker and configuration errors.

mod support;

use std::process::Command;
use std::time::Duration;

use celeriac_testkit::{free_port, RedisServer};
use redis::Commands;
use support::World;

const REDIS_PW: &str = "redis-pw-0d1e";
const PG_PW: &str = "pg-pw-7c2f";
const MYSQL_PW: &str = "mysql-pw-91ab";
const DOWN_PW: &str = "down-pw-55e0";

/// Every secret of these tests, and the forms they could take in a text.
fn assert_no_secret(what: &str, text: &str) {
    for secret in [REDIS_PW, PG_PW, MYSQL_PW, DOWN_PW] {
        assert!(
            !text.contains(secret),
            "{what} shows the secret {secret}:\n{text}"
        );
    }
}

/// Every value in the Redis database, as text.
fn dump(redis: &mut redis::Connection) -> String {
    let keys: Vec<Vec<u8>> = redis.keys("*").unwrap();
    let mut out = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(redis).unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis.get(&key).unwrap()],
            "list" => redis.lrange(&key, 0, -1).unwrap(),
            "hash" => redis.hvals(&key).unwrap(),
            "set" => redis.smembers(&key).unwrap(),
            "zset" => redis.zrange(&key, 0, -1).unwrap(),
            _ => Vec::new(),
        };
        out.push_str(&String::from_utf8_lossy(&key));
        for v in values {
            out.push(' ');
            out.push_str(&String::from_utf8_lossy(&v));
        }
        out.push('\n');
    }
    out
}

#[test]
fn passwords_never_reach_logs_errors_or_results() {
    let redis = RedisServer::start().unwrap();
    let port = redis.port();
    let mut admin = redis::Client::open(redis.url(0))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(REDIS_PW)
        .query(&mut admin)
        .unwrap();
    let url = format!("redis://:{REDIS_PW}@127.0.0.1:{port}/0");
    let world = World::around(redis, url.clone(), &[("RUST_LOG", "debug")]);
    let broker_file = world.dir().join("broker_url");
    std::fs::write(&broker_file, format!("{url}\n")).unwrap();
    let pg_file = world.dir().join("pg_url");
    // Postgres trusts local connections: the password is sent and ignored, the source works.
    std::fs::write(
        &pg_file,
        format!("postgres://postgres:{PG_PW}@127.0.0.1:5432/postgres"),
    )
    .unwrap();
    let config = world.dir().join("worker.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sources.pg]
url = "postgres://placeholder@127.0.0.1:1/none"

[sources.mysql]
url = "mysql://root:{MYSQL_PW}@127.0.0.1:3306/mysql"
connect_timeout = "5s"

[sources.down]
url = "postgres://app:{DOWN_PW}@127.0.0.1:{closed}/app"
connect_timeout = "2s"

[[tasks]]
name = "q.pg"
source = "pg"
sql = "SELECT CAST(:n AS BIGINT) AS n"
params = ["n"]
key = "pg:{{n}}"
ttl = 60
result = "one"

[[tasks]]
name = "q.mysql"
source = "mysql"
sql = "SELECT :n AS n"
params = ["n"]
key = "mysql:{{n}}"
ttl = 60
result = "one"

[[tasks]]
name = "q.down"
source = "down"
sql = "SELECT :n AS n"
params = ["n"]
key = "down:{{n}}"
ttl = 60
result = "one"
"#,
            closed = free_port()
        ),
    )
    .unwrap();
    let mut env = world.env.clone();
    env.retain(|(k, _)| k != "CELERY_BROKER_URL");
    let log = world.dir().join("w1.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_celeriac-test-worker"))
        .args(["-n", "w1@test", "-c", "4", "--config"])
        .arg(&config)
        .envs(env)
        .env("CELERY_BROKER_URL_FILE", &broker_file)
        .env("CELERIAC_SOURCE_PG_URL_FILE", &pg_file)
        .env("CELERIAC_LOG_FORMAT", "json")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let ready = support::eventually(Duration::from_secs(30), || {
        read_log().contains("celeriac worker ready").then_some(())
    });
    assert!(ready.is_some(), "worker not ready:\n{}", read_log());
    let results = world.py(r#"
from celery_app import app

def call(name, *args):
    try:
        return repr(app.send_task(name, args=args).get(timeout=60))
    except Exception as e:
        return f"{type(e).__name__}: {e}"

print(call("t.add", 1, 2))
print(call("q.pg", 7))
print(call("q.mysql", 1))
print(call("q.down", 1))
print(call("nobody.knows"))
print(call("t.fail", "boom"))
"#);
    let _ = worker.kill();
    let _ = worker.wait();
    let lines: Vec<&str> = results.lines().collect();
    assert_eq!(lines[0], "3", "{results}");
    assert_eq!(lines[1], "{'n': 7}", "{results}");
    assert!(lines[2].contains("Access denied"), "{results}");
    assert!(!lines[3].starts_with('{'), "{results}");
    assert!(lines[4].starts_with("NotRegistered"), "{results}");
    let log = read_log();
    assert!(
        log.lines().any(|l| l.contains("\"DEBUG\"")),
        "debug lines were logged"
    );
    assert!(
        log.lines().all(|l| l.starts_with('{')),
        "JSON lines:\n{log}"
    );
    assert_no_secret("Python's view of the results", &results);
    assert_no_secret("the worker's log", &log);
    let mut redis = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let stored = dump(&mut redis);
    assert!(stored.contains("celery-task-meta-"), "{stored}");
    assert_no_secret("what is stored in Redis", &stored);
}

/// Run the worker with `env` (broker `broker` unless `env` sets `CELERY_BROKER_URL[_FILE]`) until it exits or `until`
/// appears in its output; returns the output.
fn run_briefly(broker: &str, env: &[(&str, &str)], args: &[&str], until: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac-test-worker"));
    cmd.env_remove("CELERY_BROKER_URL");
    if env.iter().all(|(k, _)| !k.starts_with("CELERY_BROKER_URL")) {
        cmd.env("CELERY_BROKER_URL", broker);
    }
    let mut child = cmd
        .args(["-n", "w@test"])
        .args(args)
        .env_remove("CELERY_RESULT_BACKEND")
        .envs(env.iter().copied())
        .env("CELERIAC_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    support::eventually(Duration::from_secs(30), || {
        let exited = child.try_wait().unwrap().is_some();
        let seen = read().contains(until);
        (exited || seen).then_some(())
    })
    .unwrap_or_else(|| panic!("neither exited nor logged {until:?}:\n{}", read()));
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    read()
}

/// What the error must say, the environment, the flags.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>);

#[test]
fn unreachable_brokers_and_configuration_errors_hide_passwords() {
    let closed = free_port();
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("broker");
    std::fs::write(
        &secret_file,
        format!("redis://:{REDIS_PW}@127.0.0.1:{closed}/0\n"),
    )
    .unwrap();
    let out = run_briefly(
        "",
        &[("CELERY_BROKER_URL_FILE", secret_file.to_str().unwrap())],
        &[],
        "cannot reach the broker",
    );
    assert!(out.contains("cannot reach the broker"), "{out}");
    assert_no_secret("an unreachable broker's log", &out);

    let bad_port = format!("redis://:{REDIS_PW}@127.0.0.1:notaport/0");
    let bad_scheme = format!("amqp://guest:{REDIS_PW}@rabbit//");
    let failover = format!("redis://:{REDIS_PW}@h1/0;redis://:{PG_PW}@h2:x/0");
    let options = format!(r#"{{"password": "{MYSQL_PW}", "visibility_timeout": "soon"}}"#);
    let bad_source = dir.path().join("bad_source.toml");
    std::fs::write(
        &bad_source,
        format!(
            "[sources.main]\nurl = \"postgres://app:{DOWN_PW}@db:99999/x\"\n\n[[tasks]]\nname = \"q\"\nsource = \"main\"\nsql = \"SELECT 1 AS one\"\nkey = \"k\"\nttl = 60\nresult = \"one\"\n"
        ),
    )
    .unwrap();
    let bad_cache = dir.path().join("bad_cache.toml");
    std::fs::write(
        &bad_cache,
        format!("[cache]\nredis_url = \"redis://:{DOWN_PW}@h:x/0\"\n"),
    )
    .unwrap();
    let broken_toml = dir.path().join("broken.toml");
    std::fs::write(
        &broken_toml,
        format!("broker_url = \"redis://:{REDIS_PW}@h/0\n"),
    )
    .unwrap();
    let cases: Vec<Case> = vec![
        ("notaport", vec![("CELERY_BROKER_URL", &bad_port)], vec![]),
        ("amqp", vec![("CELERY_BROKER_URL", &bad_scheme)], vec![]),
        (
            "result backend",
            vec![("CELERY_RESULT_BACKEND", &failover)],
            vec![],
        ),
        (
            "visibility_timeout",
            vec![("CELERY_BROKER_TRANSPORT_OPTIONS", &options)],
            vec![],
        ),
        (
            "invalid port number",
            vec![],
            vec!["--config", bad_source.to_str().unwrap()],
        ),
        (
            "[cache] redis_url",
            vec![],
            vec!["--config", bad_cache.to_str().unwrap()],
        ),
        (
            "invalid TOML",
            vec![],
            vec!["--config", broken_toml.to_str().unwrap()],
        ),
    ];
    for (name, env, args) in cases {
        let out = run_briefly(&redis.url(0), &env, &args, "celeriac worker ready");
        assert!(
            out.contains(name),
            "the error names the problem ({name}):\n{out}"
        );
        assert_no_secret(name, &out);
        let error: Vec<&str> = out
            .lines()
            .skip_while(|l| !l.contains("rror"))
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .collect();
        let error = error.join(" / ");
        eprintln!("{name}: {error}");
    }
}

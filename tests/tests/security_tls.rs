//! TLS Redis: broker, result backend and cache over `rediss://` with CA verification and client
//! certificates, against a private TLS-only `redis-server`; real Python Celery produces and reads
//! results over the same URL. A CA that does not vouch for the server fails clearly, and the
//! password in the URL is never shown.

mod support;

use std::time::Duration;

use celeriac_testkit::{RedisServer, TestPki};
use redis::Commands;
use support::{query_task_config, World};

#[test]
fn broker_backend_and_cache_over_tls_with_client_certificates() {
    celeriac_worker::__private::install_crypto_provider();
    let pki = TestPki::generate("celeriac").unwrap();
    let world = World::tls(&pki, &[]);
    let cache_url = world
        .redis
        .tls_url(1, &pki.ca_cert, Some((&pki.client_cert, &pki.client_key)));
    let config = query_task_config(
        &world,
        &format!("prefix = \"t:tls:\"\nredis_url = \"{cache_url}\""),
    );
    let _w = world.celeriac("w1", &["-c", "2", "--config", config.to_str().unwrap()]);
    let out = world.py(r#"
from celery_app import app
print(app.send_task("t.add", args=(20, 22)).get(timeout=30))
print(app.send_task("q.get_ticket", args=(1,)).get(timeout=30)["title"])
print(app.connection().transport_cls, app.conf.broker_url.split("?")[0])
"#);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "42", "{out}");
    assert_eq!(lines[1], "printer on fire", "{out}");
    assert!(lines[2].contains("rediss://127.0.0.1"), "{out}");
    // The cache wrote its L2 entry into db 1 of the TLS server.
    let mut cache = celeriac_broker_bridge::redis_url::parse(&cache_url)
        .unwrap()
        .client()
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = cache.keys("*").unwrap();
    assert_eq!(keys, ["t:tls:v1:k2:{q.get_ticket:ticket:(1)}"]);
    let stored: String = cache.get(&keys[0]).unwrap();
    assert!(stored.contains("printer on fire"), "{stored}");
    // The result is in db 0, read over TLS.
    let mut redis = world.redis();
    let metas: Vec<String> = redis.keys("celery-task-meta-*").unwrap();
    assert_eq!(metas.len(), 2, "{metas:?}");
}

#[test]
fn a_ca_that_does_not_vouch_for_the_server_fails_clearly_without_the_password() {
    let pki = TestPki::generate("server").unwrap();
    let stranger = TestPki::generate("stranger").unwrap();
    let server = RedisServer::start_tls(&pki, false).unwrap();
    let password = "s3cret-tls-pw";
    let url = server.tls_url(0, &stranger.ca_cert, None).replacen(
        "rediss://",
        &format!("rediss://:{password}@"),
        1,
    );
    let world = World::around(server, url.clone(), &[("RUST_LOG", "debug")]);
    let mut w = world.celeriac_started("w1", &[]);
    w.wait_for_log("cannot reach the broker", Duration::from_secs(30))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let log = w.log();
    let line = log
        .lines()
        .find(|l| l.contains("cannot reach the broker"))
        .unwrap();
    let lower = line.to_ascii_lowercase();
    assert!(
        lower.contains("certificate") || lower.contains("unknownissuer"),
        "the error names the certificate problem: {line}"
    );
    assert!(!log.contains(password), "password in the log:\n{log}");
    eprintln!("the error a wrong CA gives: {line}");
    assert!(!log.contains("celeriac worker ready"), "{log}");
    // Python Celery with the same URL refuses the server too.
    let err = world
        .try_py(
            r#"
from celery_app import app
app.send_task("t.add", args=(1, 2))
"#,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("CERTIFICATE_VERIFY_FAILED"), "{err}");
}

use super::*;

fn tcp(u: &RedisUrl) -> (String, u16) {
    match u.info.addr() {
        ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
        other => panic!("not tcp: {other:?}"),
    }
}

fn db_of(u: &RedisUrl) -> i64 {
    u.info.redis_settings().db()
}

#[test]
fn plain_host_port_db() {
    let u = parse("redis://cache.internal:6380/3").unwrap();
    assert_eq!(tcp(&u), ("cache.internal".into(), 6380));
    assert_eq!(db_of(&u), 3);
    assert_eq!(u.info.redis_settings().password(), None);
    assert!(u.tls.is_none());
}

#[test]
fn defaults_and_trailing_slash() {
    let u = parse("redis://").unwrap();
    assert_eq!(tcp(&u), ("localhost".into(), 6379));
    assert_eq!(db_of(&u), 0);
    assert_eq!(db_of(&parse("redis://h/").unwrap()), 0);
    let u = parse("redis://localhost").unwrap();
    assert_eq!(tcp(&u), ("localhost".into(), 6379));
    assert_eq!(db_of(&u), 0);
}

#[test]
fn query_db_overrides_the_path() {
    assert_eq!(db_of(&parse("redis://h/1?virtual_host=5").unwrap()), 5);
    assert_eq!(db_of(&parse("redis://h/1?db=6").unwrap()), 6);
    assert_eq!(db_of(&parse("redis://h/1?db=6&virtual_host=7").unwrap()), 7);
    assert_eq!(db_of(&parse("redis://h?virtual_host=/8").unwrap()), 8);
}

#[test]
fn credentials_are_percent_decoded() {
    let u = parse("redis://:p%40ss%3Aw0rd@h:1/2").unwrap();
    assert_eq!(u.info.redis_settings().password(), Some("p@ss:w0rd"));
    assert_eq!(u.info.redis_settings().username(), None);
    let u = parse("redis://alice:s3cr%2Ft@h").unwrap();
    assert_eq!(u.info.redis_settings().username(), Some("alice"));
    assert_eq!(u.info.redis_settings().password(), Some("s3cr/t"));
    let u = parse("redis://user:a@b@h:7").unwrap();
    assert_eq!(u.info.redis_settings().password(), Some("a@b"));
    assert_eq!(tcp(&u), ("h".into(), 7));
    let u = parse("redis://us%40er:p%3Ass@example.com:6380/3").unwrap();
    assert_eq!(tcp(&u), ("example.com".into(), 6380));
    assert_eq!(db_of(&u), 3);
    assert_eq!(u.info.redis_settings().username(), Some("us@er"));
    assert_eq!(u.info.redis_settings().password(), Some("p:ss"));
}

#[test]
fn tls_and_query_arguments() {
    let u = parse("rediss://:pw@h:6380/1?ssl_cert_reqs=CERT_NONE&ssl_ca_certs=/x").unwrap();
    match u.info.addr() {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            ..
        } => {
            assert_eq!((host.as_str(), *port, *insecure), ("h", 6380, true));
        }
        other => panic!("not tls: {other:?}"),
    }
    assert_eq!(u.tls.unwrap().ca_certs, Some(PathBuf::from("/x")));
    for reqs in ["required", "CERT_REQUIRED", "optional", "CERT_OPTIONAL"] {
        let u = parse(&format!("rediss://h:6390/0?ssl_cert_reqs={reqs}")).unwrap();
        assert!(
            matches!(
                u.info.addr(),
                ConnectionAddr::TcpTls {
                    insecure: false,
                    port: 6390,
                    ..
                }
            ),
            "{reqs}"
        );
        assert!(u.tls.is_none(), "{reqs}");
    }
    let none = parse("rediss://h/0?ssl_cert_reqs=none").unwrap();
    assert!(matches!(
        none.info.addr(),
        ConnectionAddr::TcpTls { insecure: true, .. }
    ));
    let plain = parse("rediss://h/0").unwrap();
    assert!(matches!(
        plain.info.addr(),
        ConnectionAddr::TcpTls {
            insecure: false,
            ..
        }
    ));
}

#[test]
fn tls_files() {
    let u = parse("rediss://h/0?ssl_ca_certs=/ca.pem").unwrap();
    assert_eq!(
        u.tls,
        Some(TlsFiles {
            ca_certs: Some("/ca.pem".into()),
            client: None
        })
    );
    let u = parse("rediss://h/0?ssl_certfile=%2Fc.pem&ssl_keyfile=/k.pem").unwrap();
    assert_eq!(
        u.tls,
        Some(TlsFiles {
            ca_certs: None,
            client: Some(("/c.pem".into(), "/k.pem".into()))
        })
    );
    assert!(parse("rediss://h/0?ssl_cert_reqs=maybe").is_err());
    assert!(parse("rediss://h/0?ssl_certfile=/c.pem").is_err());
    assert!(parse("rediss://h/0?ssl_keyfile=/k.pem").is_err());
}

#[test]
fn tls_files_are_read_when_the_client_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let u = parse(&format!("rediss://h/0?ssl_ca_certs={}", missing.display())).unwrap();
    let e = u.client().unwrap_err().to_string();
    assert!(e.contains("missing-ca.pem"), "{e}");
    assert!(parse("rediss://h/0").unwrap().client().is_ok());
}

#[test]
fn ssl_arguments_on_a_plain_url_are_refused() {
    for url in [
        "redis://h/0?ssl_cert_reqs=none",
        "redis://h/0?ssl_ca_certs=/ca.pem",
    ] {
        let e = parse(url).unwrap_err().to_string();
        assert!(e.contains("rediss://"), "{e}");
    }
}

#[test]
fn unix_sockets() {
    for url in [
        "redis+socket:///run/redis.sock?db=4",
        "unix:///run/redis.sock?db=4",
        "socket:///run/redis.sock?db=4",
        "socket:///run/redis.sock?virtual_host=4",
        "redis+socket:///run/redis.sock?virtual_host=4",
        "redis+unix:///run/redis.sock?virtual_host=4",
    ] {
        let u = parse(url).unwrap();
        assert_eq!(
            u.info.addr(),
            &ConnectionAddr::Unix("/run/redis.sock".into()),
            "{url}"
        );
        assert_eq!(db_of(&u), 4, "{url}");
    }
    let u = parse("unix://:pw@/run/r.sock").unwrap();
    assert_eq!(u.info.redis_settings().password(), Some("pw"));
    assert_eq!(db_of(&u), 0);
}

#[test]
fn ipv6_hosts() {
    let u = parse("redis://[::1]:7000/0").unwrap();
    assert_eq!(tcp(&u), ("::1".into(), 7000));
}

#[test]
fn bad_urls_are_clear_errors() {
    for url in [
        "localhost:6379",
        "not a url",
        "amqp://guest@h//",
        "redis://h:notaport/0",
        "redis://h/notadb",
        "redis://h:99999",
        "redis://[::1/0",
        "redis+socket://relative.sock",
        "socket://",
        "socket:///",
        "redis://h/-1",
        "redis://h/0?db=x",
        "redis://:%ff@h/0",
    ] {
        assert!(parse(url).is_err(), "{url}");
    }
    let e = parse("memcached://h/0").unwrap_err().to_string();
    assert!(e.contains("unsupported scheme"), "{e}");
    let e = parse("redis://u:secret@h/notadb").unwrap_err().to_string();
    assert!(
        e.contains("invalid database number") && !e.contains("secret"),
        "{e}"
    );
    let e = parse("redis://:hunter2@h:x").unwrap_err().to_string();
    assert!(!e.contains("hunter2"), "{e}");
}

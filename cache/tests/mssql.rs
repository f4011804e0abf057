//! The SQL Server source against the TDS test server (tiberius unmodified, SQLite behind).

use std::time::Duration;

use celeriac_cache::source::mssql::{MsSqlOptions, MsSqlSource};
use celeriac_cache::source::{Source, SourceError, SourceKind};
use serde_json::{json, Value};
use tds_test_server::{ServerOptions, TdsServer, TestCertificates};

async fn server() -> TdsServer {
    TdsServer::start(ServerOptions::default()).await.unwrap()
}

fn url(server: &TdsServer, settings: &str) -> String {
    format!(
        "server=tcp:127.0.0.1,{};user=app;password=secret;database=shop;{settings}",
        server.addr().port()
    )
}

fn plaintext(server: &TdsServer) -> MsSqlOptions {
    MsSqlOptions::new(url(server, "encrypt=DANGER_PLAINTEXT"))
}

fn source(options: &MsSqlOptions) -> MsSqlSource {
    MsSqlSource::new("orders", options).unwrap()
}

const TYPED: &str = "CREATE TABLE typed (
    id INT, big BIGINT, flag BIT, ratio FLOAT, price DECIMAL(10,2), cash MONEY,
    name NVARCHAR(50), at DATETIME2, at_tz DATETIMEOFFSET, day DATE, clock TIME,
    ident UNIQUEIDENTIFIER, data VARBINARY(100));
  INSERT INTO typed VALUES (7, 9007199254740993, 1, 2.5, '12.5', 1.5, 'Zoë',
    '2024-05-06 07:08:09.123456', '2024-05-06 09:08:09.123456+02:00', '2024-05-06',
    '07:08:09', '6F9619FF-8B86-D011-B42D-00C04FC964FF', X'000102FF');
  INSERT INTO typed VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL);";

#[tokio::test]
async fn column_types_map_to_json_as_the_contract_says() {
    let server = server().await;
    server.execute_batch(TYPED).unwrap();
    let source = source(&plaintext(&server));
    assert_eq!(source.kind(), SourceKind::MsSql);
    let rows = source
        .fetch("SELECT * FROM typed ORDER BY id DESC", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        Value::Object(rows[0].clone()),
        json!({
            "id": 7,
            "big": 9007199254740993u64,
            "flag": true,
            "ratio": 2.5,
            "price": "12.50",
            "cash": "1.5000",
            "name": "Zoë",
            "at": "2024-05-06T07:08:09.123456",
            "at_tz": "2024-05-06T09:08:09.123456+02:00",
            "day": "2024-05-06",
            "clock": "07:08:09",
            "ident": "6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "data": "AAEC/w==",
        })
    );
    assert_eq!(
        serde_json::to_string(&rows[0]["big"]).unwrap(),
        "9007199254740993"
    );
    let keys: Vec<&String> = rows[0].keys().collect();
    assert_eq!(keys.first().map(|k| k.as_str()), Some("id"));
    assert!(
        rows[1].values().all(Value::is_null),
        "the NULL row: {:?}",
        rows[1]
    );
    assert_eq!(rows[1].len(), 13);
}

#[tokio::test]
async fn json_parameters_of_every_kind_filter_rows() {
    let server = server().await;
    server
        .execute_batch(
            "CREATE TABLE item (id INT, n BIGINT, flag BIT, ratio FLOAT, name NVARCHAR(20), note NVARCHAR(20));
             INSERT INTO item VALUES (1, 5, 1, 0.5, 'a', NULL), (2, 9223372036854775807, 0, 1.5, 'b', 'x');",
        )
        .unwrap();
    let source = source(&plaintext(&server));
    let one = source
        .fetch(
            "SELECT id FROM item WHERE n = @P1 AND flag = @P2 AND ratio = @P3 AND name = @P4 AND note IS @P5",
            &[json!(5), json!(true), json!(0.5), json!("a"), Value::Null],
        )
        .await
        .unwrap();
    assert_eq!(one, vec![json!({"id": 1}).as_object().unwrap().clone()]);
    let big: Value = serde_json::from_str("9223372036854775807").unwrap();
    let two = source
        .fetch(
            "SELECT id, n FROM item WHERE n = @P1 AND flag = @P2",
            &[big, json!(false)],
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_string(&two).unwrap(),
        r#"[{"id":2,"n":9223372036854775807}]"#
    );
    let none = source
        .fetch("SELECT id FROM item WHERE name = @P1", &[json!("zzz")])
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn a_parameter_that_cannot_be_sent_is_named() {
    let server = server().await;
    let source = source(&plaintext(&server));
    let err = source
        .fetch("SELECT @P1, @P2", &[json!(1), json!({"a": 1})])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::Param { index: 2, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failing_query_is_a_query_error_and_the_source_goes_on() {
    let server = server().await;
    let source = source(&plaintext(&server));
    let err = source
        .fetch("SELECT * FROM no_such_table", &[])
        .await
        .unwrap_err();
    match &err {
        SourceError::Query(message) => assert!(message.contains("no_such_table"), "{message}"),
        other => panic!("expected a query error, got {other:?}"),
    }
    let rows = source.fetch("SELECT 1 AS one", &[]).await.unwrap();
    assert_eq!(rows[0]["one"], json!(1));
}

#[tokio::test]
async fn a_slow_query_times_out_and_the_source_recovers() {
    let server = server().await;
    let mut options = plaintext(&server);
    options.query_timeout = Duration::from_millis(300);
    let impatient = source(&options);
    let err = impatient
        .fetch("SELECT sleep_ms(1500) AS slept", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::Timeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    // Waits for the server to finish the slow statement (it holds the database meanwhile).
    let patient = source(&plaintext(&server));
    patient.fetch("SELECT 1", &[]).await.unwrap();
    let rows = impatient.fetch("SELECT 2 AS two", &[]).await.unwrap();
    assert_eq!(rows[0]["two"], json!(2));
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error_naming_the_source() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut options = MsSqlOptions::new(format!(
        "server=tcp:127.0.0.1,{port};user=a;password=b;encrypt=DANGER_PLAINTEXT"
    ));
    options.connect_timeout = Duration::from_secs(5);
    let err = source(&options).fetch("SELECT 1", &[]).await.unwrap_err();
    match err {
        SourceError::Connect { source_name, .. } => assert_eq!(source_name, "orders"),
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_rejected_login_is_a_connect_error() {
    let server = TdsServer::start(ServerOptions {
        credentials: Some(("app".into(), "other".into())),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let err = source(&plaintext(&server))
        .fetch("SELECT 1", &[])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SourceError::Connect { .. }), "{err:?}");
    assert!(text.contains("Login failed for user 'app'"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}

async fn tls_server() -> (TdsServer, tempfile::TempDir) {
    let certs = TestCertificates::generate(&["localhost", "127.0.0.1"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &certs.ca_pem).unwrap();
    let server = TdsServer::start(ServerOptions {
        tls: Some(certs.server),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    (server, dir)
}

#[tokio::test]
async fn tls_with_a_ca_file_option() {
    let (server, dir) = tls_server().await;
    let mut options = MsSqlOptions::new(url(&server, "encrypt=true"));
    options.ca_file = Some(dir.path().join("ca.pem"));
    let rows = source(&options)
        .fetch("SELECT 'over tls' AS said", &[])
        .await
        .unwrap();
    assert_eq!(rows[0]["said"], json!("over tls"));
}

#[tokio::test]
async fn tls_with_trust_server_certificate() {
    let (server, _dir) = tls_server().await;
    let mut options = MsSqlOptions::new(url(&server, "encrypt=true"));
    options.trust_server_certificate = true;
    let rows = source(&options)
        .fetch("SELECT 1 AS one", &[])
        .await
        .unwrap();
    assert_eq!(rows[0]["one"], json!(1));
}

#[tokio::test]
async fn tls_refuses_a_server_certificate_nobody_vouches_for() {
    let (server, _dir) = tls_server().await;
    let options = MsSqlOptions::new(url(&server, "encrypt=true"));
    let err = source(&options).fetch("SELECT 1", &[]).await.unwrap_err();
    assert!(matches!(err, SourceError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn ten_thousand_rows() {
    let server = server().await;
    let source = source(&plaintext(&server));
    let rows = source
        .fetch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < @P1)
             SELECT i, 'label ' || i AS label FROM n",
            &[json!(10_000)],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 10_000);
    assert_eq!(rows[9_999]["i"], json!(10_000));
    assert_eq!(rows[9_999]["label"], json!("label 10000"));
    let sum: i64 = rows.iter().filter_map(|r| r["i"].as_i64()).sum();
    assert_eq!(sum, 10_000 * 10_001 / 2);
}

#[tokio::test]
async fn concurrent_fetches_share_a_small_pool() {
    let server = server().await;
    server
        .execute_batch("CREATE TABLE t (n INT); INSERT INTO t VALUES (1), (2), (3);")
        .unwrap();
    let mut options = plaintext(&server);
    options.max_connections = 2;
    let source = std::sync::Arc::new(source(&options));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8i64 {
        let source = source.clone();
        tasks.spawn(async move {
            source
                .fetch("SELECT count(*) + @P1 AS c FROM t", &[json!(i)])
                .await
                .map(|rows| (i, rows[0]["c"].clone()))
        });
    }
    let mut seen = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, c) = done.unwrap().unwrap();
        assert_eq!(c, json!(3 + i));
        seen.push(i);
    }
    seen.sort();
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_pooled_connection_the_server_dropped_is_replaced() {
    let first = server().await;
    let addr = first.addr();
    let source = source(&plaintext(&first));
    source.fetch("SELECT 1", &[]).await.unwrap();
    drop(first);
    let mut restarted = None;
    for _ in 0..100 {
        match TdsServer::start(ServerOptions {
            listen: addr,
            ..ServerOptions::default()
        })
        .await
        {
            Ok(server) => {
                restarted = Some(server);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let _restarted = restarted.expect("the port did not come free");
    let rows = source.fetch("SELECT 'again' AS said", &[]).await.unwrap();
    assert_eq!(rows[0]["said"], json!("again"));
}

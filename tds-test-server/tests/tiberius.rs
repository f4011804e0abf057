//! Unmodified tiberius against the TDS test server: logins (plaintext, TLS), every column
//! type both ways, parameters, NULLs, errors, row counts and large results.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use tds_test_server::{ServerOptions, TdsServer, TestCertificates};
use tiberius::numeric::Numeric;
use tiberius::{Client, Config, Uuid};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

type TdsClient = Client<Compat<TcpStream>>;

async fn connect_with(ado: &str) -> tiberius::Result<TdsClient> {
    let config = Config::from_ado_string(ado)?;
    let tcp = TcpStream::connect(config.get_addr()).await?;
    tcp.set_nodelay(true)?;
    Client::connect(config, tcp.compat_write()).await
}

fn ado(server: &TdsServer, settings: &str) -> String {
    format!(
        "server=tcp:127.0.0.1,{};user=app;password=secret;database=shop;{settings}",
        server.addr().port()
    )
}

async fn plaintext_server() -> (TdsServer, TdsClient) {
    let server = TdsServer::start(ServerOptions::default()).await.unwrap();
    let client = connect_with(&ado(&server, "encrypt=DANGER_PLAINTEXT"))
        .await
        .unwrap();
    (server, client)
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

async fn select_one(client: &mut TdsClient) -> i64 {
    let row = client
        .query("SELECT 40 + 2 AS answer", &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    row.get::<i64, _>("answer").unwrap()
}

#[tokio::test]
async fn plaintext_login_and_query() {
    let (_server, mut client) = plaintext_server().await;
    assert_eq!(select_one(&mut client).await, 42);
}

#[tokio::test]
async fn tls_for_the_whole_session_with_a_trusted_ca() {
    let (server, dir) = tls_server().await;
    let ca = dir.path().join("ca.pem");
    let settings = format!("encrypt=true;TrustServerCertificateCA={}", ca.display());
    let mut client = connect_with(&ado(&server, &settings)).await.unwrap();
    assert_eq!(select_one(&mut client).await, 42);
}

#[tokio::test]
async fn tls_for_the_login_only() {
    let (server, dir) = tls_server().await;
    let ca = dir.path().join("ca.pem");
    let settings = format!("encrypt=false;TrustServerCertificateCA={}", ca.display());
    let mut client = connect_with(&ado(&server, &settings)).await.unwrap();
    assert_eq!(select_one(&mut client).await, 42);
}

#[tokio::test]
async fn tls_rejects_a_certificate_from_an_unknown_ca() {
    let (server, _dir) = tls_server().await;
    let other = TestCertificates::generate(&["localhost"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, other.ca_pem).unwrap();
    let settings = format!("encrypt=true;TrustServerCertificateCA={}", ca.display());
    let result = connect_with(&ado(&server, &settings)).await;
    assert!(result.is_err(), "an untrusted certificate was accepted");
}

#[tokio::test]
async fn tls_with_trust_server_certificate() {
    let (server, _dir) = tls_server().await;
    let settings = "encrypt=true;TrustServerCertificate=true";
    let mut client = connect_with(&ado(&server, settings)).await.unwrap();
    assert_eq!(select_one(&mut client).await, 42);
}

#[tokio::test]
async fn wrong_password_is_a_login_error() {
    let server = TdsServer::start(ServerOptions {
        credentials: Some(("app".into(), "right".into())),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let Err(err) = connect_with(&ado(&server, "encrypt=DANGER_PLAINTEXT")).await else {
        panic!("login with a wrong password succeeded");
    };
    assert_eq!(err.code(), Some(18456), "{err}");
    let good = ado(&server, "encrypt=DANGER_PLAINTEXT").replace("secret", "right");
    assert!(connect_with(&good).await.is_ok());
}

const TYPED_TABLE: &str = "CREATE TABLE typed (
    id INT, big BIGINT, small SMALLINT, tiny TINYINT, flag BIT, ratio FLOAT,
    price DECIMAL(10,2), huge DECIMAL(38,0), cash MONEY, name NVARCHAR(50),
    at DATETIME2, at_tz DATETIMEOFFSET, day DATE, clock TIME, ident UNIQUEIDENTIFIER,
    data VARBINARY(MAX))";

#[tokio::test]
async fn every_column_type_round_trips_through_parameters() {
    let (_server, mut client) = plaintext_server().await;
    client
        .simple_query(TYPED_TABLE)
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();

    let at = NaiveDateTime::parse_from_str("2024-05-06 07:08:09.1234567", "%Y-%m-%d %H:%M:%S%.f")
        .unwrap();
    let at_tz = DateTime::<FixedOffset>::parse_from_rfc3339("2024-05-06T07:08:09.5+02:00").unwrap();
    let day = NaiveDate::from_ymd_opt(2024, 5, 6).unwrap();
    let clock = NaiveTime::from_hms_micro_opt(7, 8, 9, 250_000).unwrap();
    let ident = Uuid::parse_str("6f9619ff-8b86-d011-b42d-00c04fc964ff").unwrap();
    // SQLite keeps DECIMAL columns as REAL past 15 digits: 2^100 is exact there and still
    // needs the 17-byte wire form.
    let huge = Numeric::new_with_scale(-(1i128 << 100), 0);
    let data: Vec<u8> = vec![0, 1, 2, 255];

    let inserted = client
        .execute(
            "INSERT INTO typed VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10,
                                       @P11, @P12, @P13, @P14, @P15, @P16)",
            &[
                &7i32,
                &9_007_199_254_740_993i64,
                &-3i16,
                &200u8,
                &true,
                &2.5f64,
                &Numeric::new_with_scale(1250, 2),
                &huge,
                &Numeric::new_with_scale(-1_234_567, 4),
                &"Zoë ☃",
                &at,
                &at_tz,
                &day,
                &clock,
                &ident,
                &data,
            ],
        )
        .await
        .unwrap();
    assert_eq!(inserted.total(), 1);

    let row = client
        .query("SELECT * FROM typed WHERE id = @P1", &[&7i32])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .expect("the inserted row");
    assert_eq!(row.get::<i32, _>("id"), Some(7));
    assert_eq!(row.get::<i64, _>("big"), Some(9_007_199_254_740_993));
    assert_eq!(row.get::<i16, _>("small"), Some(-3));
    assert_eq!(row.get::<u8, _>("tiny"), Some(200));
    assert_eq!(row.get::<bool, _>("flag"), Some(true));
    assert_eq!(row.get::<f64, _>("ratio"), Some(2.5));
    let price = row.get::<Numeric, _>("price").unwrap();
    assert_eq!((price.value(), price.scale()), (1250, 2));
    let back = row.get::<Numeric, _>("huge").unwrap();
    assert_eq!((back.value(), back.scale()), (huge.value(), 0));
    assert_eq!(row.get::<f64, _>("cash"), Some(-123.4567));
    assert_eq!(row.get::<&str, _>("name"), Some("Zoë ☃"));
    assert_eq!(row.get::<NaiveDateTime, _>("at"), Some(at));
    assert_eq!(row.get::<DateTime<FixedOffset>, _>("at_tz"), Some(at_tz));
    assert_eq!(
        row.get::<DateTime<FixedOffset>, _>("at_tz")
            .unwrap()
            .offset()
            .local_minus_utc(),
        7200
    );
    assert_eq!(row.get::<NaiveDate, _>("day"), Some(day));
    assert_eq!(row.get::<NaiveTime, _>("clock"), Some(clock));
    assert_eq!(row.get::<Uuid, _>("ident"), Some(ident));
    assert_eq!(row.get::<&[u8], _>("data"), Some(&data[..]));
}

#[tokio::test]
async fn nulls_of_every_type_come_back_as_null() {
    let (_server, mut client) = plaintext_server().await;
    client
        .simple_query(TYPED_TABLE)
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO typed (id, big, flag, price, name, at, day, ident, data)
             VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9)",
            &[
                &Option::<i32>::None,
                &Option::<i64>::None,
                &Option::<bool>::None,
                &Option::<Numeric>::None,
                &Option::<&str>::None,
                &Option::<NaiveDateTime>::None,
                &Option::<NaiveDate>::None,
                &Option::<Uuid>::None,
                &Option::<Vec<u8>>::None,
            ],
        )
        .await
        .unwrap();
    let row = client
        .query("SELECT * FROM typed", &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.len(), 16);
    for (i, column) in row.columns().iter().enumerate() {
        let data = row.cells().nth(i).unwrap().1;
        assert!(
            format!("{data:?}").contains("None"),
            "{} is not NULL: {data:?}",
            column.name()
        );
    }
    assert_eq!(row.get::<i32, _>("id"), None);
    assert_eq!(row.get::<&str, _>("name"), None);
    assert_eq!(row.get::<NaiveDate, _>("day"), None);
}

#[tokio::test]
async fn parameters_filter_and_repeat() {
    let (_server, mut client) = plaintext_server().await;
    client
        .simple_query(
            "CREATE TABLE product (sku NVARCHAR(20), price DECIMAL(8,2));
             INSERT INTO product VALUES ('a', 1.50), ('b', 2.25), ('c', 9.99);",
        )
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let rows = client
        .query(
            "SELECT sku, price FROM product WHERE price >= @P1 AND sku <> @P2 OR sku = @P2 ORDER BY sku",
            &[&2i32, &"a"],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            let price = r.get::<Numeric, _>(1).unwrap();
            (
                r.get::<&str, _>(0).unwrap().to_string(),
                format!("{}/{}", price.value(), price.scale()),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".to_string(), "150/2".to_string()),
            ("b".to_string(), "225/2".to_string()),
            ("c".to_string(), "999/2".to_string())
        ]
    );
}

#[tokio::test]
async fn errors_are_server_errors_and_the_connection_stays_usable() {
    let (_server, mut client) = plaintext_server().await;
    let Err(err) = client.query("SELECT * FROM missing_table", &[]).await else {
        panic!("a query on a missing table succeeded");
    };
    assert_eq!(err.code(), Some(208), "{err}");
    assert!(err.to_string().contains("missing_table"), "{err}");

    let Err(err) = client.simple_query("SELEC 1").await else {
        panic!("a syntax error succeeded");
    };
    assert_eq!(err.code(), Some(102), "{err}");

    client
        .simple_query("CREATE TABLE t (n INT); INSERT INTO t VALUES (1), ('abc')")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let err = match client.query("SELECT n FROM t", &[]).await {
        Ok(stream) => stream.into_first_result().await.err(),
        Err(e) => Some(e),
    }
    .expect("text in an INT column converted");
    assert!(
        err.to_string().contains("'abc' is not a valid integer"),
        "{err}"
    );
    assert_eq!(select_one(&mut client).await, 42);
}

#[tokio::test]
async fn row_counts_of_inserts_updates_and_deletes() {
    let (_server, mut client) = plaintext_server().await;
    client
        .simple_query("CREATE TABLE t (n INT)")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let inserted = client
        .execute("INSERT INTO t VALUES (1), (2), (3)", &[])
        .await
        .unwrap();
    assert_eq!(inserted.total(), 3);
    let updated = client
        .execute("UPDATE t SET n = n + 10 WHERE n > @P1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(updated.total(), 2);
    let deleted = client.execute("DELETE FROM t", &[]).await.unwrap();
    assert_eq!(deleted.total(), 3);
}

#[tokio::test]
async fn several_statements_give_several_result_sets() {
    let (_server, mut client) = plaintext_server().await;
    let results = client
        .simple_query("SELECT 1 AS a; SELECT 'x' AS b UNION ALL SELECT 'y'")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0][0].get::<i64, _>("a"), Some(1));
    let b: Vec<&str> = results[1]
        .iter()
        .map(|r| r.get::<&str, _>("b").unwrap())
        .collect();
    assert_eq!(b, vec!["x", "y"]);
}

#[tokio::test]
async fn ten_thousand_rows_stream_in_one_result_set() {
    let (_server, mut client) = plaintext_server().await;
    let rows = client
        .query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < @P1)
             SELECT i, 'row ' || i || ' ' || hex(randomblob(16)) AS label FROM n",
            &[&10_000i32],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 10_000);
    let sum: i64 = rows.iter().map(|r| r.get::<i64, _>("i").unwrap()).sum();
    assert_eq!(sum, 10_000 * 10_001 / 2);
    let last = rows[9_999].get::<&str, _>("label").unwrap();
    assert!(last.starts_with("row 10000 "), "{last}");
    assert_eq!(last.len(), "row 10000 ".len() + 32);
}

#[tokio::test]
async fn sessions_share_the_database() {
    let (server, mut first) = plaintext_server().await;
    first
        .simple_query("CREATE TABLE shared (n INT); INSERT INTO shared VALUES (5)")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let mut second = connect_with(&ado(&server, "encrypt=DANGER_PLAINTEXT"))
        .await
        .unwrap();
    let row = second
        .query("SELECT n FROM shared", &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), Some(5));
}

#[tokio::test]
async fn long_values_cross_packets_both_ways() {
    let (_server, mut client) = plaintext_server().await;
    let text: String = "ünïcødé ☃ ".repeat(5_000);
    let bytes: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let row = client
        .query(
            "SELECT @P1 AS text, @P2 AS bytes, length(@P1) AS chars",
            &[&text.as_str(), &bytes],
        )
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<&str, _>("text"), Some(text.as_str()));
    assert_eq!(row.get::<&[u8], _>("bytes"), Some(&bytes[..]));
    assert_eq!(
        row.get::<i64, _>("chars"),
        Some(text.chars().count() as i64)
    );
}

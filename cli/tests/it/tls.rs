//! TLS end to end, with certificates made in the test by the `openssl` CLI
//! (a CA and a server certificate for localhost / 127.0.0.1 signed by it):
//! the API over HTTPS and psql over TLS answer what PostgreSQL itself says,
//! `require_tls` refuses an unencrypted psql, and a bad certificate or key is
//! one line from `medallion serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use medallion::config::{TlsConfig, TlsIdentity};
use medallion::lake::Lake;
use medallion::live::LiveHandle;
use medallion::serve;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::serve::{exchange, northwind_lake, test_options};
use crate::support::*;

/// A test CA and a server certificate it signed, in a temporary folder.
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
}

impl Pki {
    /// Makes a CA named `name` and a certificate for localhost and 127.0.0.1.
    pub(crate) fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let path = |file: &str| dir.path().join(file).to_string_lossy().into_owned();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(&[&["req", "-x509"], &ec[..], &["-keyout", &path("ca.key"), "-out", &path("ca.crt"), "-days", "30", "-subj", &format!("/CN={name}")]]);
        openssl(&[&["req"], &ec[..], &["-keyout", &path("server.key"), "-out", &path("server.csr"), "-subj", "/CN=localhost"]]);
        std::fs::write(
            dir.path().join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n\
             subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(&[&[
            "x509", "-req", "-in", &path("server.csr"), "-CA", &path("ca.crt"), "-CAkey", &path("ca.key"),
            "-CAcreateserial", "-out", &path("server.crt"), "-days", "30", "-extfile", &path("server.ext"),
        ]]);
        Pki { dir }
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    fn identity(&self) -> TlsIdentity {
        TlsIdentity { cert: self.path("server.crt"), key: self.path("server.key") }
    }
}

fn openssl(parts: &[&[&str]]) {
    let args: Vec<&str> = parts.concat();
    let output = Command::new("openssl").args(&args).output().expect("the openssl CLI is installed");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// `POST /api/sql` over HTTPS, trusting only `ca`, with `localhost` as the
/// name the certificate must carry.
async fn https_sql(addr: SocketAddr, ca: &Path, sql: &str) -> Value {
    let mut roots = rustls::RootCertStore::empty();
    for cert in medallion::tls::load_certs(ca, "test CA").unwrap() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(medallion::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.expect("TLS handshake with the HTTPS endpoint");
    let body = json!({ "sql": sql }).to_string();
    let reply = exchange(stream, addr, "POST", "/api/sql", &[("Accept", "application/json")], &body).await;
    assert_eq!(reply.status, 200);
    reply.json()
}

fn psql(port: u16, options: &str, sql: &str) -> Output {
    Command::new("psql")
        .arg(format!("host=127.0.0.1 port={port} user=anyone dbname=lake {options}"))
        .args(["-X", "-A", "-t", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql is installed with PostgreSQL by scripts/pg.sh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_api_and_psql_over_tls_answer_and_require_tls_refuses_plain_clients() {
    let (db, _lake, mut config) = northwind_lake("tls_serve").await;
    let pki = Pki::new("medallion test CA");
    config.tls = TlsConfig { identity: Some(pki.identity()), require_tls: true };
    let server = serve::start(&config, Lake::new(&config).unwrap(), LiveHandle::new(), test_options()).await.unwrap();
    let expected = pg_rows(&db, "SELECT COUNT(*) FROM orders").await[0][0].i64();
    let count = "SELECT COUNT(*) AS n FROM bronze.orders";

    // HTTPS, the certificate verified against the test CA for "localhost".
    let http = server.http_addr();
    let reply = https_sql(http, &pki.ca(), count).await;
    assert_eq!(reply["rows"][0]["n"].as_i64(), Some(expected), "{reply}");
    // Plain HTTP on the same port gets no HTTP answer.
    let mut plain = TcpStream::connect(http).await.unwrap();
    plain.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw).await;
    assert!(!raw.starts_with(b"HTTP/"), "plain HTTP answered: {}", String::from_utf8_lossy(&raw));

    // psql with full verification (it fails unless the session is encrypted
    // with a certificate of our CA for 127.0.0.1).
    let pg = server.pg_addr().unwrap().port();
    let ca = pki.ca().display().to_string();
    let output = psql(pg, &format!("sslmode=verify-full sslrootcert={ca}"), count);
    assert!(output.status.success(), "psql over TLS failed: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), expected.to_string());
    // sslmode=require (encrypted, not verified) works too.
    let output = psql(pg, "sslmode=require", "SELECT 1");
    assert!(output.status.success(), "psql sslmode=require: {}", String::from_utf8_lossy(&output.stderr));
    // An unencrypted client is refused, with a message saying what to do.
    let output = psql(pg, "sslmode=disable", "SELECT 1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "an unencrypted psql was let in");
    assert!(stderr.contains("requires TLS") && stderr.contains("sslmode=require"), "{stderr}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_off_unless_required_lets_plain_and_encrypted_psql_in() {
    let lake = TestLake::new();
    let mut config = config(&lake.url(), None, "2026-11-25");
    let pki = Pki::new("medallion test CA");
    config.tls = TlsConfig { identity: Some(pki.identity()), require_tls: false };
    let server = serve::start(&config, Lake::new(&config).unwrap(), LiveHandle::new(), test_options()).await.unwrap();
    let pg = server.pg_addr().unwrap().port();
    for options in ["sslmode=disable", "sslmode=require"] {
        let output = psql(pg, options, "SELECT 40 + 2");
        assert!(output.status.success(), "{options}: {}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "42", "{options}");
    }
    server.shutdown().await;
}

/// `medallion serve` with these TLS files: its output. A server that starts
/// anyway is stopped after a minute (the test then fails on its success).
fn serve_with(cert: &Path, key: &Path) -> Output {
    let lake = TestLake::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_medallion"))
        .args(["serve", "--lake", &lake.url(), "--addr", "127.0.0.1:0", "--pg-addr", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env("MEDALLION_TLS_CERT", cert)
        .env("MEDALLION_TLS_KEY", key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the medallion binary runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

fn one_line_failure(output: &Output) -> String {
    assert!(!output.status.success(), "serve started: {}", String::from_utf8_lossy(&output.stdout));
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(text.trim_end().lines().count(), 1, "one line expected: {text}");
    text
}

#[test]
fn a_bad_certificate_or_key_is_one_line_naming_the_file() {
    let pki = Pki::new("medallion test CA");
    let other = Pki::new("another CA");
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let cert = pki.path("server.crt");
    let key = pki.path("server.key");

    let text = one_line_failure(&serve_with(&garbage, &key));
    assert!(text.contains(&garbage.display().to_string()) && text.contains("no certificate"), "{text}");
    let missing = pki.path("missing.key");
    let text = one_line_failure(&serve_with(&cert, &missing));
    assert!(text.contains(&missing.display().to_string()) && text.contains("cannot read TLS key"), "{text}");
    let text = one_line_failure(&serve_with(&cert, &garbage));
    assert!(text.contains("holds no private key"), "{text}");
    // A key that belongs to another certificate.
    let text = one_line_failure(&serve_with(&cert, &other.path("server.key")));
    assert!(text.contains("cannot be used together"), "{text}");
    // Nothing of the key's content in any message.
    let key_text = std::fs::read_to_string(&key).unwrap();
    let secret_line = key_text.lines().nth(1).unwrap();
    assert!(!text.contains(secret_line));
}

/// The CA of the test PostgreSQL server's certificate (scripts/pg.sh).
fn pg_root_cert() -> String {
    std::env::var("MEDALLION_PG_SSLROOTCERT")
        .expect("MEDALLION_PG_SSLROOTCERT is not set: run the tests with scripts/test.sh (scripts/pg.sh env prints it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_over_verified_tls_reads_every_row_and_a_foreign_ca_is_one_line() {
    let db = northwind_database("tls_source").await;
    let ca = pg_root_cert();
    for mode in ["verify-full", "verify-ca"] {
        let url = format!("{db}?sslmode={mode}&sslrootcert={ca}");
        // The server itself says the session is encrypted.
        let client = medallion::source::postgres::connect(&url).await.unwrap();
        let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
        assert!(row.get::<_, bool>(0), "{mode}: not encrypted");
    }
    // sslmode=disable stays plain (the server allows both).
    let client = medallion::source::postgres::connect(&format!("{db}?sslmode=disable")).await.unwrap();
    let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
    assert!(!row.get::<_, bool>(0), "sslmode=disable encrypted");

    // The whole ingest over verify-full: every row of every table.
    let lake = TestLake::new();
    let url = format!("{db}?sslmode=verify-full&sslrootcert={ca}");
    let output = Command::new(env!("CARGO_BIN_EXE_medallion"))
        .args(["ingest", "--lake", &lake.url(), "--quiet", "--date", "2026-11-25"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(output.status.success(), "ingest over TLS: {}", String::from_utf8_lossy(&output.stderr));
    let config = config(&lake.url(), None, "2026-11-25");
    for table in ["orders", "order_details", "customers"] {
        let expected = pg_rows(&db, &format!("SELECT COUNT(*) FROM {table}")).await[0][0].i64();
        let got = lake_query(&config, &format!("SELECT COUNT(*) AS n FROM bronze.{table}")).await;
        let got = got[0].column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap().value(0);
        assert_eq!(got, expected, "bronze.{table}");
    }

    // A root certificate that did not sign the server's: one line naming the
    // host, never the password.
    let other = Pki::new("not the PostgreSQL CA");
    let url = format!("{db}?sslmode=verify-full&sslrootcert={}", other.ca().display());
    let lake = TestLake::new();
    let output = Command::new(env!("CARGO_BIN_EXE_medallion"))
        .args(["ingest", "--lake", &lake.url(), "--quiet"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let text = one_line_failure(&output);
    assert!(text.contains("127.0.0.1") && text.contains("certificate") && text.contains("sslrootcert"), "{text}");
    assert!(!text.contains(":medallion@"), "password leaked: {text}");
}

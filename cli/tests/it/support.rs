//! Shared test plumbing: a fresh PostgreSQL database per test, a temporary
//! lake, helpers to read query results as plain Rust values, and a receiver
//! of JSON POSTs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use medallion::config::{Config, Overrides};
use medallion::lake::session::SessionBuilder;
use medallion::lake::Lake;
use medallion::pipeline::{self, BatchSource};
use medallion::progress::Progress;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;

/// A file of this repository, relative to its root. Read from the environment
/// at run time (cargo sets CARGO_MANIFEST_DIR, here `cli/`, when it runs
/// tests), not baked in at compile time: clones sharing one target dir may
/// reuse a test binary built in another.
pub fn repo_path(relative: &str) -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&package).join("..").join(relative)
}

/// The vendored real Northwind dump.
pub fn northwind_dump() -> String {
    repo_path("data/northwind/northwind.sql").to_string_lossy().into_owned()
}

/// The superuser URL of the test PostgreSQL server (set by scripts/test.sh).
pub fn admin_url() -> String {
    std::env::var("MEDALLION_TEST_DATABASE_URL").expect(
        "MEDALLION_TEST_DATABASE_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL",
    )
}

/// The admin URL pointed at another database.
pub fn url_for_database(database: &str) -> String {
    let admin = admin_url();
    let (base, _) = admin.rsplit_once('/').expect("URL with a database");
    format!("{base}/{database}")
}

/// Drops and creates `name`; returns its URL.
pub async fn fresh_database(name: &str) -> String {
    let admin = pg_connect(&admin_url()).await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    url_for_database(name)
}

/// A fresh database holding the real Northwind dump.
pub async fn northwind_database(name: &str) -> String {
    let url = fresh_database(name).await;
    let mut client = pg_connect(&url).await;
    let sql = std::fs::read_to_string(repo_path("data/northwind/northwind.sql")).unwrap();
    medallion::source::generator::load_dump(&mut client, name, &sql).await.unwrap();
    url
}

pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("test PostgreSQL unreachable ({e}); scripts/test.sh starts it"));
    tokio::spawn(connection);
    client
}

/// A temporary local lake.
pub struct TestLake {
    pub dir: tempfile::TempDir,
}

/// A failed test's lake is kept for a post-mortem: copied into
/// `$TMPDIR/medallion-failed-lakes/` (the temporary folder goes with the test).
impl Drop for TestLake {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let kept = std::env::temp_dir().join("medallion-failed-lakes");
        let _ = std::fs::create_dir_all(&kept);
        let copied = std::process::Command::new("cp").arg("-r").arg(self.dir.path()).arg(&kept).status();
        if copied.is_ok_and(|s| s.success()) {
            eprintln!("the failed test's lake is kept in {}", kept.display());
        }
    }
}

impl TestLake {
    pub fn new() -> TestLake {
        TestLake { dir: tempfile::tempdir().unwrap() }
    }
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }
}

/// A configuration for a test: lake URL, optional database, date.
pub fn config(lake: &str, database_url: Option<&str>, day: &str) -> Config {
    Config::load(Overrides {
        config_file: None,
        lake: Some(lake.to_string()),
        database_url: database_url.map(str::to_string),
        date: Some(day.to_string()),
        models_dir: None,
        create_buckets: None,
        ..Overrides::default()
    })
    .unwrap()
}

/// Runs the whole batch DAG from PostgreSQL.
pub async fn run_pipeline(config: &Config) -> medallion::Result<Vec<pipeline::StageReport>> {
    let lake = Lake::new(config)?;
    let source = BatchSource::from_config(config)?;
    pipeline::run(config, &lake, &source, &Progress::hidden()).await
}

/// Runs SQL over the lake.
pub async fn lake_query(config: &Config, sql: &str) -> Vec<RecordBatch> {
    let lake = Lake::new(config).unwrap();
    let ctx = SessionBuilder::new(&lake).build().await.unwrap().ctx;
    ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await.unwrap()
}

/// A client of medallion's PostgreSQL endpoint at `addr` (no token).
pub async fn pg_endpoint_client(addr: std::net::SocketAddr) -> tokio_postgres::Client {
    let url = format!("host=127.0.0.1 port={} user=anyone dbname=lake", addr.port());
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A value of a result cell, for comparisons.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

impl Cell {
    pub fn f64(&self) -> f64 {
        match self {
            Cell::Int(v) => *v as f64,
            Cell::Float(v) => *v,
            other => panic!("not a number: {other:?}"),
        }
    }
    pub fn i64(&self) -> i64 {
        match self {
            Cell::Int(v) => *v,
            other => panic!("not an integer: {other:?}"),
        }
    }
    pub fn text(&self) -> String {
        match self {
            Cell::Text(v) => v.clone(),
            Cell::Null => "NULL".into(),
            Cell::Int(v) => v.to_string(),
            Cell::Float(v) => v.to_string(),
        }
    }
}

/// Flattens batches into rows of cells (integers, floats, everything else as text).
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut out = Vec::new();
    for batch in batches {
        let columns: Vec<Vec<Cell>> = batch.columns().iter().map(|c| cells(c.as_ref())).collect();
        for i in 0..batch.num_rows() {
            out.push(columns.iter().map(|c| c[i].clone()).collect());
        }
    }
    out
}

fn cells(array: &dyn Array) -> Vec<Cell> {
    let (target, kind) = match array.data_type() {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16
        | DataType::UInt32 | DataType::UInt64 => (DataType::Int64, 0),
        DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => (DataType::Float64, 1),
        _ => (DataType::Utf8, 2),
    };
    let casted = cast(array, &target).unwrap();
    (0..array.len())
        .map(|i| {
            if casted.is_null(i) {
                return Cell::Null;
            }
            match kind {
                0 => Cell::Int(casted.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap().value(i)),
                1 => Cell::Float(casted.as_any().downcast_ref::<datafusion::arrow::array::Float64Array>().unwrap().value(i)),
                _ => Cell::Text(casted.as_any().downcast_ref::<datafusion::arrow::array::StringArray>().unwrap().value(i).to_string()),
            }
        })
        .collect()
}

/// Rows of a PostgreSQL query, every column converted the same way (the
/// query casts to int8 / float8 / text as needed).
pub async fn pg_rows(url: &str, sql: &str) -> Vec<Vec<Cell>> {
    let client = pg_connect(url).await;
    let rows = client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| match row.columns()[i].type_().name() {
                    "int8" => row.get::<_, Option<i64>>(i).map(Cell::Int).unwrap_or(Cell::Null),
                    "int4" => row.get::<_, Option<i32>>(i).map(|v| Cell::Int(v as i64)).unwrap_or(Cell::Null),
                    "float8" => row.get::<_, Option<f64>>(i).map(Cell::Float).unwrap_or(Cell::Null),
                    _ => row.get::<_, Option<String>>(i).map(Cell::Text).unwrap_or(Cell::Null),
                })
                .collect()
        })
        .collect()
}

/// Asserts two floats agree to 1e-9 relative.
pub fn assert_close(actual: f64, expected: f64, what: &str) {
    let tolerance = 1e-9 * expected.abs().max(1.0);
    assert!((actual - expected).abs() <= tolerance, "{what}: got {actual}, expected {expected}");
}

// ---------------------------------------------------------------- S3 ------

/// One setting of the test S3 server, exported by scripts/test.sh.
fn s3_setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts the S3 server (scripts/s3.sh)")
    })
}

/// Where an S3 server listens and how to sign in to it.
#[derive(Debug, Clone)]
pub struct S3Endpoint {
    pub url: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl S3Endpoint {
    /// The shared test server started by scripts/test.sh.
    pub fn shared() -> S3Endpoint {
        S3Endpoint {
            url: s3_setting("MEDALLION_TEST_S3_ENDPOINT"),
            access_key_id: s3_setting("MEDALLION_TEST_S3_ACCESS_KEY_ID"),
            secret_access_key: s3_setting("MEDALLION_TEST_S3_SECRET_ACCESS_KEY"),
            region: s3_setting("MEDALLION_TEST_S3_REGION"),
        }
    }

    /// The `AWS_*` variables a `medallion` process needs for this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// Points a configuration at this server.
    pub fn apply(&self, config: &mut Config) {
        config.s3.endpoint = Some(self.url.clone());
        config.s3.access_key_id = Some(self.access_key_id.clone());
        config.s3.secret_access_key = Some(self.secret_access_key.clone());
        config.s3.region = Some(self.region.clone());
        config.s3.allow_http = true;
    }
}

/// A test configuration on an S3 lake of `endpoint`.
pub fn s3_config(endpoint: &S3Endpoint, lake: &str, database_url: Option<&str>, day: &str) -> Config {
    let mut config = config(lake, database_url, day);
    endpoint.apply(&mut config);
    config
}

/// A name no other test run uses (bucket prefixes, bucket names).
pub fn unique_name(stem: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{stem}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// A loopback port for a server a test starts (and may restart) itself.
///
/// Taken below the kernel's ephemeral range (32768 and up): a port in that
/// range can be held at any moment as the local end of some outgoing
/// connection, and the server's bind would then fail. The ports handed out
/// are spread by process id and never repeat within one test process.
pub fn unused_service_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 10_000;
    let offset = (std::process::id() % u32::from(SPAN)) as u16;
    loop {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(step < SPAN, "no free loopback port left in {FIRST}..{}", FIRST + SPAN);
        let port = FIRST + (offset + step) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A private test S3 server (own port, own state dir) started with
/// scripts/s3.sh, for tests that stop it or break it. Stopped on drop.
pub struct PrivateS3 {
    pub endpoint: S3Endpoint,
    pub port: u16,
    pub state: tempfile::TempDir,
}

impl PrivateS3 {
    pub fn start() -> PrivateS3 {
        let port = unused_service_port();
        let state = tempfile::tempdir().unwrap();
        let mut endpoint = S3Endpoint::shared();
        endpoint.url = format!("http://127.0.0.1:{port}");
        let server = PrivateS3 { endpoint, port, state };
        server.script("start");
        server
    }

    /// Runs scripts/s3.sh for this instance; panics loudly when it fails.
    pub fn script(&self, command: &str) {
        let output = std::process::Command::new(s3_setting("MEDALLION_TEST_S3_SCRIPT"))
            .arg(command)
            .env("S3_PORT", self.port.to_string())
            .env("MEDALLION_SERVICES_DIR", self.state.path())
            .output()
            .expect("scripts/s3.sh runs");
        assert!(
            output.status.success(),
            "scripts/s3.sh {command} on port {} failed: {}",
            self.port,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The folder holding the server's buckets.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.state.path().join("s3/data")
    }

    pub fn stop(&self) {
        self.script("stop");
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        let _ = std::process::Command::new(s3_setting("MEDALLION_TEST_S3_SCRIPT"))
            .arg("stop")
            .env("S3_PORT", self.port.to_string())
            .env("MEDALLION_SERVICES_DIR", self.state.path())
            .output();
    }
}

/// The commits of a Delta table read straight from its `_delta_log`
/// objects: `(version, medallion.partition metadata, operation)`, in order.
pub async fn table_history(config: &Config, layer: &str, table: &str) -> Vec<(i64, String, String)> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let lake = Lake::new(config).unwrap();
    let store = lake.layer_store(layer).unwrap();
    let log = deltalake::Path::from(format!("{table}/_delta_log"));
    let mut names: Vec<String> = store
        .list(Some(&log))
        .map_ok(|meta| meta.location.filename().unwrap_or_default().to_string())
        .try_collect()
        .await
        .unwrap();
    names.retain(|name| name.ends_with(".json") && name.len() == 25);
    names.sort();
    let mut commits = Vec::new();
    for name in names {
        let version: i64 = name.trim_end_matches(".json").parse().unwrap();
        let path = deltalake::Path::from(format!("{table}/_delta_log/{name}"));
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let info = text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find_map(|action| action.get("commitInfo").cloned())
            .unwrap_or_else(|| panic!("{layer}.{table} version {version} has no commitInfo"));
        let partition = info["medallion.partition"].as_str().unwrap_or_default().to_string();
        let operation = info["operation"].as_str().unwrap_or_default().to_string();
        commits.push((version, partition, operation));
    }
    commits
}

/// An HTTP receiver of JSON POSTs (alerts, OpenLineage events) at `path`:
/// its URL, and every JSON body it got.
pub async fn json_receiver(path: &str) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buffer = [0u8; 8192];
                loop {
                    let Ok(n) = stream.read(&mut buffer).await else { return };
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buffer[..n]);
                    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    if raw.len() >= split + 4 + length {
                        let body = &raw[split + 4..split + 4 + length];
                        if let Ok(json) = serde_json::from_slice(body) {
                            store.lock().unwrap().push(json);
                        }
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                        return;
                    }
                }
            });
        }
    });
    (url, received)
}

/// A `medallion` command with no ambient lake, database, engine or AWS settings.
pub fn medallion_command(args: &[&str], env: &[(&str, String)]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_medallion"));
    command.args(args);
    for name in [
        "DATABASE_URL", "MEDALLION_LAKE", "MEDALLION_ENGINE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION", "AWS_ALLOW_HTTP", "MEDALLION_CREATE_BUCKETS",
    ] {
        command.env_remove(name);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// A failed command: non-zero exit, one line on stderr, no panic, no secret.
pub fn assert_one_line_failure(output: &std::process::Output, secrets: &[&str]) -> String {
    assert!(!output.status.success(), "expected a failure, got success: {}", String::from_utf8_lossy(&output.stdout));
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(text.trim_end().lines().count(), 1, "one line expected, got: {text}");
    assert!(!text.contains("panicked"), "{text}");
    for secret in secrets {
        assert!(!text.contains(secret), "secret leaked: {text}");
    }
    text
}

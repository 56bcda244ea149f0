//! Shared test plumbing: a fresh PostgreSQL database per test, a temporary
//! lake, and helpers to read query results as plain Rust values.

use std::path::Path;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use medallion::config::{Config, Overrides};
use medallion::lake::{catalog, Lake};
use medallion::pipeline::{self, BatchSource};
use medallion::progress::Progress;
use tokio_postgres::NoTls;

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
    let sql = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/northwind/northwind.sql")).unwrap();
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
    let ctx = catalog::session_for(&lake).await.unwrap();
    ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await.unwrap()
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

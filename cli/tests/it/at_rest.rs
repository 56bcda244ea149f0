//! PII encrypted at rest (issue 13, `[pii] encrypt_at_rest`): two lakes from
//! the same real Northwind, one clear and one encrypted. Every Parquet file
//! of the encrypted lake is decoded and no protected column holds a value
//! PostgreSQL has in clear; the Delta logs hold none either (file statistics).
//! The same checks on the clear lake find them, so the scan can fail. Read
//! back, admins see PostgreSQL's values, analysts the same pseudonyms as on
//! the clear lake, readers masks, and the gold tables of both lakes are equal.

use std::collections::BTreeSet;
use std::path::Path;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use medallion::config::Role;
use medallion::lake::session::SessionBuilder;
use medallion::lake::Lake;

use crate::support::*;

const KEY: &str = "a-test-key-for-pii-at-rest";

/// The protected columns of the default policy, per source table.
const CUSTOMERS: [&str; 6] = ["contact_name", "contact_title", "address", "postal_code", "phone", "fax"];
const EMPLOYEES: [&str; 8] =
    ["last_name", "first_name", "birth_date", "address", "postal_code", "home_phone", "notes", "photo_path"];

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// The values of the columns named `columns` in every Parquet file of
/// `table_dir`, as text.
fn stored_values(table_dir: &Path, columns: &[&str]) -> Vec<String> {
    let mut values = Vec::new();
    for file in files_under(table_dir).into_iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            for column in columns {
                let Ok(index) = batch.schema().index_of(column) else { continue };
                let text = cast(batch.column(index), &DataType::Utf8).unwrap();
                let text = text.as_any().downcast_ref::<StringArray>().unwrap();
                values.extend(text.iter().flatten().map(str::to_string));
            }
        }
    }
    values
}

/// Every JSON string in the Delta log of `table_dir` (all commits), with the
/// file statistics (a JSON document held in a string) opened too. Only
/// strings: a clear value such as the postal code `5022` must not be found
/// inside a modification time or a file size.
fn delta_log_strings(table_dir: &Path) -> Vec<String> {
    fn collect(value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::String(text) => {
                match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(nested @ serde_json::Value::Object(_)) => collect(&nested, found),
                    _ => found.push(text.clone()),
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| collect(item, found)),
            serde_json::Value::Object(fields) => fields.values().for_each(|field| collect(field, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for action in log_actions(table_dir) {
        collect(&action, &mut found);
    }
    found
}

/// Every action of a table's Delta log (its JSON commit files).
fn log_actions(table_dir: &Path) -> Vec<serde_json::Value> {
    let mut actions = Vec::new();
    for file in files_under(&table_dir.join("_delta_log")).into_iter().filter(|f| f.extension().is_some_and(|e| e == "json")) {
        for line in std::fs::read_to_string(file).unwrap().lines().filter(|l| !l.trim().is_empty()) {
            actions.push(serde_json::from_str(line).unwrap());
        }
    }
    actions
}

/// Whether a string of the log is `value` or a statistic cut from it (Delta
/// writers truncate long string minima/maxima to a prefix).
fn log_holds(log: &[String], value: &str) -> bool {
    log.iter().any(|text| text.len() >= 4 && value.starts_with(text.as_str()))
}

/// The columns with a minimum in the file statistics of a table's Delta log.
fn stats_columns(table_dir: &Path) -> BTreeSet<String> {
    let mut columns = BTreeSet::new();
    for action in log_actions(table_dir) {
        let Some(stats) = action["add"]["stats"].as_str() else { continue };
        let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
        if let Some(minima) = stats["minValues"].as_object() {
            columns.extend(minima.keys().cloned());
        }
    }
    columns
}

/// PostgreSQL's clear values of `columns` of `table` (at least 4 characters,
/// so a value cannot match by chance).
async fn clear_values(db: &str, table: &str, columns: &[&str]) -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    for column in columns {
        for row in pg_rows(db, &format!("SELECT {column}::text FROM {table} WHERE {column} IS NOT NULL")).await {
            if let Cell::Text(value) = &row[0] {
                if value.len() >= 4 {
                    values.insert(value.clone());
                }
            }
        }
    }
    values
}

async fn role_rows(lake: &Lake, config: &medallion::config::Config, role: Role, sql: &str) -> Vec<Vec<Cell>> {
    let session = SessionBuilder::full(lake, config).for_role(role, &config.pii).build().await.unwrap();
    rows(&session.ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_lakes_store_no_clear_pii_and_read_back_by_role() {
    let db = northwind_database("it_gov_at_rest").await;
    let clear_dir = TestLake::new();
    let mut clear = config(&clear_dir.url(), Some(&db), "2026-11-25");
    clear.pii.key = Some(KEY.into());
    run_pipeline(&clear).await.unwrap();
    let encrypted_dir = TestLake::new();
    let mut encrypted = config(&encrypted_dir.url(), Some(&db), "2026-11-25");
    encrypted.pii.key = Some(KEY.into());
    encrypted.pii.encrypt_at_rest = true;
    run_pipeline(&encrypted).await.unwrap();

    for (table, columns) in [("customers", &CUSTOMERS[..]), ("employees", &EMPLOYEES[..])] {
        let truth = clear_values(&db, table, columns).await;
        assert!(truth.len() > 20, "{table}: {} clear values", truth.len());
        // The clear lake stores them (the scan sees what it looks for)...
        let in_clear_lake: BTreeSet<String> = stored_values(&clear_dir.dir.path().join("bronze").join(table), columns).into_iter().collect();
        assert!(truth.iter().filter(|v| in_clear_lake.contains(*v)).count() * 10 >= truth.len() * 9, "{table}: the clear lake holds the values");
        // ...the encrypted one holds only ciphertext, in every layer.
        let stored = stored_values(&encrypted_dir.dir.path().join("bronze").join(table), columns);
        assert!(stored.len() >= truth.len(), "{table}: {} stored values", stored.len());
        for value in &stored {
            assert!(value.starts_with("enc:v1:") && !truth.contains(value), "{table}: {value} stored in clear");
        }
        for layer in ["silver", "gold"] {
            for value in stored_values(&encrypted_dir.dir.path().join(layer), columns) {
                assert!(value.starts_with("enc:v1:") && !truth.contains(&value), "{layer}: {value} stored in clear");
            }
        }
        // File statistics in the Delta log: both logs hold minima and maxima
        // (of the ingestion timestamp: the lake keeps none for text
        // columns, see lake::writer_properties), and the encrypted lake's
        // holds no clear value.
        let clear_stats = stats_columns(&clear_dir.dir.path().join("bronze").join(table));
        assert!(clear_stats.contains("_ingestion_timestamp"), "{table}: the clear log has statistics: {clear_stats:?}");
        let encrypted_stats = stats_columns(&encrypted_dir.dir.path().join("bronze").join(table));
        assert!(encrypted_stats.contains("_ingestion_timestamp"), "{table}: the encrypted log has statistics: {encrypted_stats:?}");
        let encrypted_log = delta_log_strings(&encrypted_dir.dir.path().join("bronze").join(table));
        let leaked: Vec<&String> = truth.iter().filter(|v| log_holds(&encrypted_log, v)).collect();
        assert!(leaked.is_empty(), "{table}: the encrypted log holds {leaked:?}");
    }

    // Read back: admins see PostgreSQL's values, analysts the clear lake's
    // pseudonyms, readers masks.
    let select = format!("SELECT customer_id, {} FROM bronze.customers ORDER BY customer_id", CUSTOMERS.join(", "));
    let pg = pg_rows(&db, &format!("SELECT customer_id, {} FROM customers ORDER BY customer_id", CUSTOMERS.join(", "))).await;
    let (clear_lake, encrypted_lake) = (Lake::new(&clear).unwrap(), Lake::new(&encrypted).unwrap());
    assert_eq!(role_rows(&encrypted_lake, &encrypted, Role::Admin, &select).await, pg);
    assert_eq!(
        role_rows(&encrypted_lake, &encrypted, Role::Analyst, &select).await,
        role_rows(&clear_lake, &clear, Role::Analyst, &select).await
    );
    assert_eq!(
        role_rows(&encrypted_lake, &encrypted, Role::Reader, &select).await,
        role_rows(&clear_lake, &clear, Role::Reader, &select).await
    );
    // A filter on an encrypted column runs on the decrypted value.
    let name = match &pg[0][1] {
        Cell::Text(name) => name.replace('\'', "''"),
        other => panic!("{other:?}"),
    };
    let by_name = format!("SELECT COUNT(*) FROM bronze.customers WHERE contact_name = '{name}'");
    assert_eq!(role_rows(&encrypted_lake, &encrypted, Role::Admin, &by_name).await[0][0], Cell::Int(1));
    // A birth date reads back as its text.
    let births = role_rows(&encrypted_lake, &encrypted, Role::Admin, "SELECT birth_date FROM bronze.employees ORDER BY employee_id").await;
    let pg_births = pg_rows(&db, "SELECT birth_date::text FROM employees ORDER BY employee_id").await;
    assert_eq!(births, pg_births);

    // The models see clear values: every gold table equals the clear lake's.
    for table in ["kpi_revenue", "kpi_country_sales", "kpi_category_sales", "kpi_top_countries", "rfm_customers", "rfm_segments"] {
        let query = format!("SELECT * FROM gold.{table} ORDER BY 1, 2");
        let (ours, theirs) = (rows(&lake_query(&encrypted, &query).await), rows(&lake_query(&clear, &query).await));
        assert!(!theirs.is_empty() && ours.len() == theirs.len(), "gold.{table}: {} vs {} rows", ours.len(), theirs.len());
        for (mine, other) in ours.iter().zip(&theirs) {
            for (a, b) in mine.iter().zip(other) {
                match (a, b) {
                    // Sums of floats may differ in the last bits with the order of partial sums.
                    (Cell::Float(a), Cell::Float(b)) => assert_close(*a, *b, &format!("gold.{table}")),
                    _ => assert_eq!(a, b, "gold.{table}"),
                }
            }
        }
    }

    // Without the key, an encrypted lake is refused in one line naming what to set.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_medallion"))
        .args(["sql", "--quiet", "--lake", &encrypted_dir.url(), "SELECT 1"])
        .env_remove("MEDALLION_PII_KEY")
        .env_remove("DATABASE_URL")
        .env("MEDALLION_PII_ENCRYPT_AT_REST", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.trim().lines().count() == 1 && stderr.contains("MEDALLION_PII_KEY"), "{stderr}");
}

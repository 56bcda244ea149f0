//! One catalog everywhere: on a lake built by the pipeline from the real
//! Northwind, `medallion sql`, `POST /api/sql` and the PostgreSQL endpoint
//! list the same tables in `information_schema`, and that list is what the
//! lake holds on disk plus the reference, live and serving names. The CLI
//! also reads `live.sales_by_country` back from its persisted copy.

use std::path::Path;
use std::process::{Command, Output};

use chrono::{TimeZone, Utc};
use medallion::lake::Lake;
use medallion::live::{CountryTotals, LiveHandle};
use medallion::serve::{self, ServeOptions};
use serde_json::json;

use crate::serve::{northwind_lake, sql, test_options};
use crate::support::*;

const LISTING: &str = "SELECT table_schema, table_name FROM information_schema.tables \
     WHERE table_schema IN ('bronze', 'silver', 'gold', 'ref', 'live', 'serving') ORDER BY 1, 2";

type Names = Vec<(String, String)>;

/// `(layer, table)` of every Delta table of a local lake, read from its
/// folders: `<layer>/<table>/_delta_log/` holding at least one commit.
fn delta_tables_on_disk(root: &Path) -> Names {
    let mut names = Vec::new();
    for layer in ["bronze", "silver", "gold"] {
        let Ok(entries) = std::fs::read_dir(root.join(layer)) else { continue };
        for entry in entries {
            let table = entry.unwrap().path();
            let log = table.join("_delta_log");
            let has_commit = std::fs::read_dir(&log)
                .map(|files| files.filter_map(|f| f.ok()).any(|f| f.path().extension().is_some_and(|x| x == "json")))
                .unwrap_or(false);
            if has_commit {
                names.push((layer.to_string(), table.file_name().unwrap().to_string_lossy().into_owned()));
            }
        }
    }
    names
}

/// `medallion sql --lake <lake> --format csv <query>`, run as a user would.
fn medallion_sql(lake: &str, query: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medallion"))
        .args(["sql", "--quiet", "--lake", lake, "--format", "csv", query])
        .env_remove("DATABASE_URL")
        .env_remove("MEDALLION_LAKE")
        .output()
        .expect("the medallion binary runs")
}

/// The data lines of a CSV answer, each split at commas (no field here has one).
fn csv_rows(output: &Output) -> Vec<Vec<String>> {
    assert!(output.status.success(), "medallion sql failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines().skip(1).map(|line| line.split(',').map(str::to_string).collect()).collect()
}

fn pair(row: &[String]) -> (String, String) {
    (row[0].clone(), row[1].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_the_sql_api_and_the_postgres_endpoint_list_the_same_tables() {
    let (_db, lake, config) = northwind_lake("it_catalog_listing").await;
    // A stream in another process persists its totals here.
    let persisted = vec![
        CountryTotals { pays: "Germany".into(), total_ventes_live: 99.5, nb_transactions: 2, last_event_time: Utc.timestamp_opt(1_764_000_000, 0).unwrap() },
        CountryTotals { pays: "USA".into(), total_ventes_live: 10.25, nb_transactions: 1, last_event_time: Utc.timestamp_opt(1_764_000_060, 0).unwrap() },
    ];
    let live_copy = Lake::new(&config).unwrap().table("gold", "live_sales_by_country").await.unwrap();
    live_copy.write(vec![medallion::live::sales_by_country_batch(&persisted)]).await.unwrap();

    // What must be listed: the lake's folders, and the names sessions add.
    let mut expected = delta_tables_on_disk(lake.dir.path());
    for (layer, table) in [("ref", "country_map"), ("live", "sales_by_country"), ("serving", "sales_by_country")] {
        expected.push((layer.to_string(), table.to_string()));
    }
    expected.sort();
    for known in [("bronze", "orders"), ("silver", "sales_master"), ("gold", "kpi_revenue"), ("gold", "pipeline_runs"), ("gold", "live_sales_by_country")] {
        assert!(expected.contains(&(known.0.to_string(), known.1.to_string())), "{known:?} is not on disk: {expected:?}");
    }

    let from_cli: Names = csv_rows(&medallion_sql(&lake.url(), LISTING)).iter().map(|r| pair(r)).collect();

    let options = ServeOptions { follow_lake_live: false, ..test_options() };
    let server = serve::start(&config, Lake::new(&config).unwrap(), LiveHandle::new(), options).await.unwrap();
    let reply = sql(server.http_addr(), json!({ "sql": LISTING }), "application/json").await.json();
    let from_http: Names = reply["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {reply}"))
        .iter()
        .map(|row| (row["table_schema"].as_str().unwrap().to_string(), row["table_name"].as_str().unwrap().to_string()))
        .collect();

    let client = pg_endpoint_client(server.pg_addr().unwrap()).await;
    let from_pg: Names =
        client.query(LISTING, &[]).await.unwrap().iter().map(|row| (row.get::<_, String>(0), row.get::<_, String>(1))).collect();
    server.shutdown().await;

    assert_eq!(from_cli, expected, "medallion sql");
    assert_eq!(from_http, expected, "POST /api/sql");
    assert_eq!(from_pg, expected, "PostgreSQL endpoint");

    // The CLI reads live.sales_by_country back from gold.live_sales_by_country.
    let live = csv_rows(&medallion_sql(&lake.url(), "SELECT pays, total_ventes_live, nb_transactions FROM live.sales_by_country ORDER BY pays"));
    assert_eq!(live, [["Germany", "99.5", "2"], ["USA", "10.25", "1"]]);
}

/// The descriptions of `models/<layer>/<table>.docs.toml`, read here with a
/// TOML parser: (table description, column → description).
fn docs_file(layer: &str, table: &str) -> (String, std::collections::BTreeMap<String, String>) {
    let text = std::fs::read_to_string(repo_path(&format!("models/{layer}/{table}.docs.toml"))).unwrap();
    let docs: toml::Table = text.parse().unwrap();
    let columns = docs["columns"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(name, text)| (name.clone(), text.as_str().unwrap().to_string()))
        .collect();
    (docs["description"].as_str().unwrap().to_string(), columns)
}

/// The glossary as PostgreSQL comments: `obj_description` and
/// `col_description` over the endpoint's pg_catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_endpoint_serves_the_glossary_as_table_and_column_comments() {
    let (_db, _lake, config) = northwind_lake("it_catalog_comments").await;
    let server = serve::start(&config, Lake::new(&config).unwrap(), LiveHandle::new(), test_options()).await.unwrap();
    let pg = server.pg_addr().unwrap();
    let (table_text, columns) = docs_file("gold", "kpi_revenue");
    assert!(columns.len() >= 5);

    let client = pg_endpoint_client(pg).await;
    let table_row = client
        .query_one(
            "SELECT obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'gold' AND c.relname = 'kpi_revenue'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(table_row.get::<_, Option<String>>(0).as_deref(), Some(table_text.as_str()));
    let rows = client
        .query(
            "SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'gold' AND c.relname = 'kpi_revenue' AND a.attnum > 0",
            &[],
        )
        .await
        .unwrap();
    let described: std::collections::BTreeMap<String, String> =
        rows.iter().filter_map(|r| Some((r.get::<_, String>(0), r.get::<_, Option<String>>(1)?))).collect();
    assert_eq!(described, columns);

    // psql's own `\d+` query is not served yet: it also calls `array(subquery)`,
    // which the pg_catalog emulation lacks; the two functions above are what it reads.
    server.shutdown().await;
}

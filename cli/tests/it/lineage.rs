//! OpenLineage events and the lineage API (issue 13). A run on the real
//! Northwind sends, to a local HTTP receiver and to a JSON-lines file, one
//! START and one COMPLETE per table written: the six source tables' bronze
//! copies (counted by hand) and one per model file in models/ (listed from
//! the folder). Every event validates against the vendored OpenLineage JSON
//! schemas (cli/tests/data/openlineage, checked by Python's jsonschema, which is
//! first shown to reject a broken event). A model that fails sends FAIL with
//! its error. `/api/lineage` serves the table graph and column lineage.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use medallion::lake::Lake;
use medallion::live::LiveHandle;
use medallion::models::ModelSet;
use medallion::progress::Progress;
use medallion::serve;
use serde_json::Value;

use crate::serve::{get, test_options};
use crate::support::*;

/// The bronze tables a run lands: Northwind's six source tables.
const BRONZE: [&str; 6] =
    ["bronze.categories", "bronze.customers", "bronze.employees", "bronze.order_details", "bronze.orders", "bronze.products"];

/// `silver.x` / `gold.y` for every model file of the repository's models/.
fn model_tables() -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    for layer in ["silver", "gold"] {
        for entry in std::fs::read_dir(repo_path(&format!("models/{layer}"))).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().to_string();
            if let Some(table) = name.strip_suffix(".sql") {
                tables.insert(format!("{layer}.{table}"));
            }
        }
    }
    tables
}

fn read_events(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Runs the vendored-schema validator on a JSON-lines file.
fn validate(file: &Path) -> (bool, String) {
    let python = std::env::var("MEDALLION_TEST_PYTHON")
        .expect("MEDALLION_TEST_PYTHON is not set: run the tests through scripts/test.sh (it provides Python's jsonschema)");
    let output = std::process::Command::new(python)
        .arg(repo_path("cli/tests/data/openlineage/validate.py"))
        .arg(file)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_sends_valid_openlineage_events_for_every_table_it_writes() {
    let db = northwind_database("it_gov_lineage").await;
    let lake = TestLake::new();
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("lineage.jsonl");
    let (url, received) = json_receiver("/api/v1/lineage").await;
    let mut config = config(&lake.url(), Some(&db), "2026-11-25");
    config.lineage.url = Some(url);
    config.lineage.file = Some(file.clone());
    config.lineage.namespace = "northwind-test".into();
    run_pipeline(&config).await.unwrap();

    // One START and one COMPLETE per table written, START first, same run id.
    let events = read_events(&file);
    let mut expected: BTreeSet<String> = BRONZE.iter().map(|t| t.to_string()).collect();
    expected.extend(model_tables());
    assert_eq!(expected.len(), 13, "6 bronze tables and the 7 models of models/");
    let mut runs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for event in &events {
        assert_eq!(event["job"]["namespace"], "northwind-test");
        let job = event["job"]["name"].as_str().unwrap().to_string();
        runs.entry(job).or_default().push((event["eventType"].as_str().unwrap().into(), event["run"]["runId"].as_str().unwrap().into()));
    }
    assert_eq!(runs.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (job, sequence) in &runs {
        let kinds: Vec<&str> = sequence.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["START", "COMPLETE"], "{job}");
        assert_eq!(sequence[0].1, sequence[1].1, "{job}: one run id");
    }
    // The HTTP receiver got the same events (the run waits for their delivery).
    let posted: BTreeSet<String> = received.lock().unwrap().iter().map(|e| e.to_string()).collect();
    let written: BTreeSet<String> = events.iter().map(|e| e.to_string()).collect();
    assert_eq!(posted, written);

    // Datasets: a bronze table reads its PostgreSQL table; the password never appears.
    let complete = |job: &str| -> Value {
        events.iter().find(|e| e["job"]["name"] == job && e["eventType"] == "COMPLETE").unwrap().clone()
    };
    let customers = complete("bronze.customers");
    let database = db.rsplit('/').next().unwrap().split('?').next().unwrap();
    assert_eq!(customers["inputs"][0]["name"], format!("{database}.public.customers"));
    assert!(customers["inputs"][0]["namespace"].as_str().unwrap().starts_with("postgres://127.0.0.1:"));
    let copied = &customers["outputs"][0]["facets"]["columnLineage"]["fields"]["contact_name"]["inputFields"][0];
    assert_eq!((copied["name"].as_str(), copied["field"].as_str()), (Some(format!("{database}.public.customers").as_str()), Some("contact_name")));
    if let Some(password) = url::Url::parse(&db).ok().and_then(|u| u.password().map(str::to_string)) {
        assert!(!written.iter().any(|e| e.contains(&format!(":{password}@"))), "the database password is in an event");
    }
    // Gold: the schema facet lists the table's columns (as the lake has
    // them), the column lineage names what the SQL sums.
    let categories = complete("gold.kpi_category_sales");
    let output = &categories["outputs"][0];
    assert_eq!(output["name"], "gold.kpi_category_sales");
    let facet_columns: BTreeSet<String> =
        output["facets"]["schema"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect();
    let lake_columns = rows(&lake_query(&config, "SELECT column_name FROM information_schema.columns WHERE table_schema = 'gold' AND table_name = 'kpi_category_sales'").await);
    assert_eq!(facet_columns, lake_columns.iter().map(|r| r[0].text()).collect::<BTreeSet<_>>());
    let revenue_inputs = &output["facets"]["columnLineage"]["fields"]["revenue"]["inputFields"];
    assert_eq!(revenue_inputs.as_array().unwrap().len(), 1);
    assert_eq!((revenue_inputs[0]["name"].as_str(), revenue_inputs[0]["field"].as_str()), (Some("silver.sales_master"), Some("line_total")));
    assert_eq!(categories["inputs"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect::<Vec<_>>(), ["silver.sales_master"]);
    assert!(categories["job"]["facets"]["sql"]["query"].as_str().unwrap().contains("SUM(line_total)"));
    // A gold model built on another: kpi_revenue reads gold.rfm_customers.
    let revenue = complete("gold.kpi_revenue");
    let total = &revenue["outputs"][0]["facets"]["columnLineage"]["fields"]["total_revenue"]["inputFields"];
    assert_eq!((total[0]["name"].as_str(), total[0]["field"].as_str()), (Some("gold.rfm_customers"), Some("monetary")));
    assert_eq!(revenue["inputs"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect::<Vec<_>>(), ["gold.rfm_customers"]);

    // Every event is valid OpenLineage; the validator does reject a broken one.
    let (valid, report) = validate(&file);
    assert!(valid, "{report}");
    assert!(report.contains(&format!("{} events, 0 invalid", events.len())), "{report}");
    let broken = scratch.path().join("broken.jsonl");
    let mut bad = events[0].clone();
    bad["eventType"] = "FINISHED".into();
    bad["run"].as_object_mut().unwrap().remove("runId");
    std::fs::write(&broken, format!("{bad}\n")).unwrap();
    let (valid, report) = validate(&broken);
    assert!(!valid && report.contains("1 invalid"), "{report}");

    // A failing model: FAIL with the error line, also valid.
    let models_dir = scratch.path().join("models");
    copy_dir(&repo_path("models"), &models_dir);
    std::fs::write(models_dir.join("gold/kpi_revenue.sql"), "SELECT no_such_column FROM silver.sales_master").unwrap();
    let failing = scratch.path().join("failing.jsonl");
    let mut failing_config = config.clone();
    failing_config.lineage.url = None;
    failing_config.lineage.file = Some(failing.clone());
    let models = ModelSet::load(Some(&models_dir)).unwrap();
    let lake_handle = Lake::new(&failing_config).unwrap();
    let result = medallion::pipeline::run_models(&failing_config, &lake_handle, &models, "gold", &Progress::hidden()).await;
    assert!(result.is_err());
    let failed = read_events(&failing);
    let fail = failed.iter().find(|e| e["eventType"] == "FAIL").unwrap_or_else(|| panic!("no FAIL in {failed:?}"));
    assert_eq!(fail["job"]["name"], "gold.kpi_revenue");
    assert!(fail["run"]["facets"]["errorMessage"]["message"].as_str().unwrap().contains("no_such_column"), "{fail}");
    let (valid, report) = validate(&failing);
    assert!(valid, "{report}");

    // /api/lineage: the same graph, with the gold columns.
    let server = serve::start(&config, Lake::new(&config).unwrap(), LiveHandle::new(), test_options()).await.unwrap();
    let reply = get(server.http_addr(), "/api/lineage").await;
    assert_eq!(reply.status, 200);
    let graph = reply.json();
    let edges: BTreeSet<(String, String)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["from"].as_str().unwrap().to_string(), e["to"].as_str().unwrap().to_string()))
        .collect();
    for table in model_tables() {
        assert!(edges.iter().any(|(_, to)| *to == table), "no edge into {table}");
        assert!(graph["columns"][&table]["fields"].as_array().is_some_and(|f| !f.is_empty()), "no columns for {table}");
    }
    assert!(edges.contains(&("silver.sales_master".to_string(), "gold.rfm_customers".to_string())));
    assert!(edges.contains(&("gold.rfm_customers".to_string(), "gold.kpi_revenue".to_string())));
    server.shutdown().await;
}

//! Governance against a real PostgreSQL: the column profiles medallion
//! stores in gold.table_profiles, checked against the same statistics
//! computed independently in plain SQL on the source database.

use crate::support::*;

/// How a source column's statistics are compared.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Text,
    Int,
    Float,
    Date,
}

fn kind_of(pg_type: &str) -> Option<Kind> {
    match pg_type {
        "smallint" | "integer" | "bigint" => Some(Kind::Int),
        "real" | "double precision" | "numeric" => Some(Kind::Float),
        "date" => Some(Kind::Date),
        "character varying" | "character" | "text" => Some(Kind::Text),
        _ => None,
    }
}

fn close(actual: f64, expected: f64, relative: f64) -> bool {
    (actual - expected).abs() <= relative * expected.abs().max(1.0)
}

/// Northwind's personal data in the customers table (the default PII
/// policy): profiled for counts and lengths, never for values.
const CUSTOMER_PII: [&str; 6] = ["contact_name", "contact_title", "address", "postal_code", "phone", "fax"];

/// Compares the stored profile of `table` (latest) with PostgreSQL's
/// statistics of `relation` (a table or a subquery) for `columns`; the
/// `protected` columns must show no value at all.
async fn assert_profile_matches(
    config: &medallion::config::Config,
    db: &str,
    table: &str,
    relation: &str,
    columns: &[(String, Kind)],
    protected: &[&str],
) {
    for (column, kind) in columns {
        let c = format!("\"{column}\"");
        // Text ordering as bytes, as the lake orders strings.
        let ordered = if *kind == Kind::Text { format!("{c} COLLATE \"C\"") } else { c.clone() };
        let numeric = matches!(kind, Kind::Int | Kind::Float);
        let expected = pg_rows(db, &format!(
            "SELECT COUNT(*)::int8, (COUNT(*) - COUNT({c}))::int8, COUNT(DISTINCT {c})::int8,
                    MIN({ordered})::text, MAX({ordered})::text,
                    {mean}, {stddev},
                    MIN(char_length({c}::text))::int8, MAX(char_length({c}::text))::int8
             FROM {relation} AS r",
            mean = if numeric { format!("AVG({c})::float8") } else { "NULL::float8".into() },
            stddev = if numeric { format!("STDDEV({c})::float8") } else { "NULL::float8".into() },
        )).await;
        let e = &expected[0];
        let expected_top = pg_rows(db, &format!(
            "SELECT {c}::text, COUNT(*)::int8 FROM {relation} AS r WHERE {c} IS NOT NULL
             GROUP BY {c} ORDER BY COUNT(*) DESC, {ordered} LIMIT 5"
        )).await;
        let actual = rows(&lake_query(config, &format!(
            "SELECT row_count, null_count, distinct_count, min_value, max_value, mean, stddev, min_length, max_length,
                    top_values, distinct_method
             FROM gold.table_profiles WHERE table_name = '{table}' AND column_name = '{column}'
               AND snapshot_date = (SELECT MAX(snapshot_date) FROM gold.table_profiles)"
        )).await);
        assert_eq!(actual.len(), 1, "{table}.{column}: one profile row");
        let a = &actual[0];
        let what = format!("{table}.{column}");
        assert_eq!(a[0].i64(), e[0].i64(), "{what} rows");
        assert_eq!(a[1].i64(), e[1].i64(), "{what} nulls");
        assert_eq!(a[2].i64(), e[2].i64(), "{what} distinct");
        assert_eq!(a[10].text(), "exact", "{what}");
        if protected.contains(&column.as_str()) {
            assert!(a[3] == Cell::Null && a[4] == Cell::Null, "{what}: a protected column has no min/max: {a:?}");
            assert_eq!(a[9].text(), "[]", "{what}: a protected column has no top values");
            if *kind == Kind::Text {
                assert_eq!(a[7], e[7], "{what} min length");
            }
            continue;
        }
        match kind {
            Kind::Text | Kind::Date => {
                assert_eq!(a[3], e[3], "{what} min");
                assert_eq!(a[4], e[4], "{what} max");
            }
            Kind::Int | Kind::Float => {
                for (i, name) in [(3, "min"), (4, "max")] {
                    let actual: f64 = a[i].text().parse().unwrap();
                    let expected: f64 = e[i].text().parse().unwrap();
                    assert!(close(actual, expected, 1e-6), "{what} {name}: {actual} vs {expected}");
                }
                assert!(close(a[5].f64(), e[5].f64(), 1e-9), "{what} mean: {:?} vs {:?}", a[5], e[5]);
                assert!(close(a[6].f64(), e[6].f64(), 1e-9), "{what} stddev: {:?} vs {:?}", a[6], e[6]);
            }
        }
        if *kind == Kind::Text {
            assert_eq!(a[7], e[7], "{what} min length");
            assert_eq!(a[8], e[8], "{what} max length");
        }
        let top: serde_json::Value = serde_json::from_str(&a[9].text()).unwrap();
        let top = top.as_array().unwrap();
        assert_eq!(top.len(), expected_top.len(), "{what} top values: {top:?} vs {expected_top:?}");
        for (got, want) in top.iter().zip(&expected_top) {
            assert_eq!(got["count"].as_i64().unwrap(), want[1].i64(), "{what} top counts: {top:?} vs {expected_top:?}");
            let (got, want) = (got["value"].as_str().unwrap(), want[0].text());
            if *kind == Kind::Float {
                assert!(close(got.parse().unwrap(), want.parse().unwrap(), 1e-6), "{what} top value {got} vs {want}");
            } else {
                assert_eq!(got, want, "{what} top values");
            }
        }
    }
}

/// The source table's columns that the profile compares, from PostgreSQL's catalog.
async fn source_columns(db: &str, table: &str) -> Vec<(String, Kind)> {
    pg_rows(db, &format!(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = '{table}' ORDER BY ordinal_position"
    ))
    .await
    .into_iter()
    .filter_map(|row| Some((row[0].text(), kind_of(&row[1].text())?)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_after_a_run_equal_postgres_statistics() {
    let db = northwind_database("it_profiles").await;
    let lake = TestLake::new();
    let config = config(&lake.url(), Some(&db), "2026-11-25");
    run_pipeline(&config).await.unwrap();

    for table in ["customers", "orders"] {
        let columns = source_columns(&db, table).await;
        assert!(columns.len() >= 10, "{table}: {columns:?}");
        let protected: &[&str] = if table == "customers" { &CUSTOMER_PII } else { &[] };
        assert_profile_matches(&config, &db, &format!("bronze.{table}"), table, &columns, protected).await;
    }

    // silver.sales_master's columns copied from one source column each.
    let lines = "(SELECT od.order_id, od.product_id, o.customer_id, o.employee_id, o.order_date, o.required_date,
                         o.shipped_date, p.product_name, p.category_id, c.category_name, cu.company_name, cu.city,
                         od.unit_price::float8 AS unit_price, od.quantity, od.discount::float8 AS discount
                  FROM order_details od JOIN orders o ON o.order_id = od.order_id
                  JOIN products p ON p.product_id = od.product_id JOIN categories c ON c.category_id = p.category_id
                  JOIN customers cu ON cu.customer_id = o.customer_id)";
    let columns: Vec<(String, Kind)> = [
        ("order_id", Kind::Int), ("product_id", Kind::Int), ("customer_id", Kind::Text), ("employee_id", Kind::Int),
        ("order_date", Kind::Date), ("required_date", Kind::Date), ("shipped_date", Kind::Date),
        ("product_name", Kind::Text), ("category_id", Kind::Int), ("category_name", Kind::Text),
        ("company_name", Kind::Text), ("city", Kind::Text), ("unit_price", Kind::Float), ("quantity", Kind::Int),
        ("discount", Kind::Float),
    ]
    .iter()
    .map(|(c, k)| (c.to_string(), *k))
    .collect();
    assert_profile_matches(&config, &db, "silver.sales_master", lines, &columns, &[]).await;

    // Every table the run wrote has a profile, the profile table itself none.
    let profiled = rows(&lake_query(&config, "SELECT DISTINCT table_name FROM gold.table_profiles ORDER BY 1").await);
    let profiled: Vec<String> = profiled.iter().map(|r| r[0].text()).collect();
    for table in ["bronze.order_details", "silver.sales_master", "gold.kpi_revenue", "gold.rfm_segments"] {
        assert!(profiled.contains(&table.to_string()), "{table} not in {profiled:?}");
    }
    assert!(!profiled.contains(&"gold.table_profiles".to_string()));

    // The API: the catalog with descriptions, row counts and versions; the
    // latest profile of a table (no previous one yet).
    let server = medallion::serve::start(&config, medallion::lake::Lake::new(&config).unwrap(), medallion::live::LiveHandle::new(), crate::serve::test_options())
        .await
        .unwrap();
    let addr = server.http_addr();
    let catalog = crate::serve::http(addr, "GET", "/api/catalog?q=days%20between", &[], "").await.json();
    let tables = catalog["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "only gold.rfm_customers.recency_days says 'days between': {catalog}");
    assert_eq!(tables[0]["table"], "gold.rfm_customers");
    let customers = pg_rows(&db, "SELECT COUNT(DISTINCT o.customer_id)::int8 FROM orders o JOIN order_details od ON od.order_id = o.order_id").await;
    assert_eq!(tables[0]["rows"].as_i64().unwrap(), customers[0][0].i64(), "one row per customer who ordered");
    let columns: Vec<&str> = tables[0]["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["recency_days"], "only the matching columns of a table whose name and description do not match");
    let all = crate::serve::http(addr, "GET", "/api/catalog", &[], "").await.json();
    for table in all["tables"].as_array().unwrap().iter().filter(|t| t["layer"] != "live" && t["layer"] != "serving" && t["layer"] != "ref") {
        assert!(table["description"].is_string(), "{table}");
        assert!(table["version"].is_i64(), "{table}");
    }
    let profile = crate::serve::http(addr, "GET", "/api/profiles?table=bronze.customers", &[], "").await.json();
    let latest = profile["latest"].as_array().unwrap();
    let source = source_columns(&db, "customers").await;
    assert!(latest.len() >= source.len(), "{profile}");
    assert_eq!(latest[0]["column_name"], "customer_id");
    assert_eq!(profile["previous"].as_array().unwrap().len(), 0);
    let bad = crate::serve::http(addr, "GET", "/api/profiles?table=x';DROP", &[], "").await;
    assert_eq!(bad.status, 400);
    server.shutdown().await;
}

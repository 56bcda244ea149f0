//! The batch path against a real PostgreSQL: gold checked against the same
//! figures computed independently in plain SQL on PostgreSQL.

use medallion::lake::{Lake, Layer};
use medallion::models::ModelSet;
use medallion::pipeline::{self, BatchSource};
use medallion::progress::Progress;

use crate::support::*;

/// Order lines as the spec defines them, computed by PostgreSQL itself.
pub(crate) const PG_LINES: &str = "
    SELECT od.order_id, o.customer_id, cu.company_name, cu.country, c.category_name, od.quantity, o.order_date,
           od.unit_price::float8 * od.quantity * (1 - od.discount::float8) AS line_total
    FROM order_details od
    JOIN orders o ON o.order_id = od.order_id
    JOIN products p ON p.product_id = od.product_id
    JOIN categories c ON c.category_id = p.category_id
    JOIN customers cu ON cu.customer_id = o.customer_id";

pub(crate) fn pg_rfm_sql() -> String {
    format!(
        "WITH lines AS ({PG_LINES}),
         ref AS (SELECT MAX(order_date) + 1 AS reference_date FROM lines),
         per AS (SELECT customer_id, MAX(order_date) AS last_date, COUNT(DISTINCT order_id) AS frequency,
                        SUM(line_total) AS monetary FROM lines GROUP BY customer_id),
         m AS (SELECT per.*, ref.reference_date - per.last_date AS recency_days FROM per CROSS JOIN ref),
         s AS (SELECT customer_id, recency_days, frequency, monetary,
                      NTILE(5) OVER (ORDER BY recency_days DESC, customer_id) AS r,
                      NTILE(5) OVER (ORDER BY frequency ASC, customer_id) AS f,
                      NTILE(5) OVER (ORDER BY monetary ASC, customer_id) AS mo FROM m)
         SELECT customer_id::text, recency_days::int8, frequency::int8, monetary, r::int8, f::int8, mo::int8,
                CASE WHEN r >= 4 AND f >= 4 THEN 'Champions'
                     WHEN r >= 3 AND f >= 3 THEN 'Loyal Customers'
                     WHEN r >= 4 AND f <= 2 THEN 'Potential Loyalists'
                     WHEN r <= 2 AND f >= 3 THEN 'At Risk'
                     WHEN r <= 2 AND f <= 2 THEN 'Hibernating'
                     ELSE 'Need Attention' END
         FROM s ORDER BY customer_id"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_northwind_gold_equals_postgres_ground_truth() {
    let db = northwind_database("it_gold_truth").await;
    let lake = TestLake::new();
    let config = config(&lake.url(), Some(&db), "2026-11-25");
    run_pipeline(&config).await.unwrap();
    let at = "snapshot_date = DATE '2026-11-25'";

    // Headline KPIs.
    let expected = pg_rows(&db, &format!(
        "WITH lines AS ({PG_LINES}) SELECT SUM(line_total), COUNT(DISTINCT order_id)::int8,
         COUNT(DISTINCT customer_id)::int8, SUM(line_total) / COUNT(DISTINCT order_id) FROM lines"
    )).await;
    let actual = rows(&lake_query(&config, &format!(
        "SELECT total_revenue, orders, customers, avg_order_value FROM gold.kpi_revenue WHERE {at}"
    )).await);
    assert_eq!(actual.len(), 1);
    assert_close(actual[0][0].f64(), expected[0][0].f64(), "total_revenue");
    assert_eq!(actual[0][1].i64(), expected[0][1].i64(), "orders");
    assert_eq!(actual[0][2].i64(), expected[0][2].i64(), "customers");
    assert_close(actual[0][3].f64(), expected[0][3].f64(), "avg_order_value");
    assert_eq!(expected[0][1].i64(), 830, "the real dump has 830 orders");

    // Top 3 countries.
    let expected = pg_rows(&db, &format!(
        "WITH lines AS ({PG_LINES}) SELECT country::text, SUM(line_total) AS revenue FROM lines
         GROUP BY country ORDER BY revenue DESC, country LIMIT 3"
    )).await;
    let actual = rows(&lake_query(&config, &format!(
        "SELECT country, revenue, \"rank\" FROM gold.kpi_top_countries WHERE {at} ORDER BY \"rank\""
    )).await);
    assert_eq!(actual.len(), 3);
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a[0].text(), e[0].text());
        assert_close(a[1].f64(), e[1].f64(), "country revenue");
        assert_eq!(a[2].i64(), i as i64 + 1);
    }

    // Every category.
    let expected = pg_rows(&db, &format!(
        "WITH lines AS ({PG_LINES}) SELECT category_name::text, SUM(line_total), SUM(quantity)::int8,
         COUNT(DISTINCT order_id)::int8 FROM lines GROUP BY category_name ORDER BY category_name"
    )).await;
    let actual = rows(&lake_query(&config, &format!(
        "SELECT category_name, revenue, quantity, orders FROM gold.kpi_category_sales WHERE {at} ORDER BY category_name"
    )).await);
    assert_eq!(actual.len(), 8);
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a[0].text(), e[0].text());
        assert_close(a[1].f64(), e[1].f64(), "category revenue");
        assert_eq!(a[2].i64(), e[2].i64(), "category quantity");
        assert_eq!(a[3].i64(), e[3].i64(), "category orders");
    }

    // RFM: every customer's measures, scores and segment.
    let expected = pg_rows(&db, &pg_rfm_sql()).await;
    let actual = rows(&lake_query(&config, &format!(
        "SELECT customer_id, recency_days, frequency, monetary, r_score, f_score, m_score, segment
         FROM gold.rfm_customers WHERE {at} ORDER BY customer_id"
    )).await);
    assert_eq!(actual.len(), 89, "91 customers, two never ordered");
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a[0].text(), e[0].text());
        assert_eq!(a[1].i64(), e[1].i64(), "recency of {}", e[0].text());
        assert_eq!(a[2].i64(), e[2].i64(), "frequency of {}", e[0].text());
        assert_close(a[3].f64(), e[3].f64(), "monetary");
        assert_eq!((a[4].i64(), a[5].i64(), a[6].i64()), (e[4].i64(), e[5].i64(), e[6].i64()), "scores of {}", e[0].text());
        assert_eq!(a[7].text(), e[7].text(), "segment of {}", e[0].text());
    }

    // Segments: counts and revenue per segment.
    let expected = pg_rows(&db, &format!(
        "WITH rfm AS ({}) SELECT \"case\", COUNT(*)::int8, SUM(monetary) FROM rfm GROUP BY 1 ORDER BY 1",
        pg_rfm_sql()
    )).await;
    let actual = rows(&lake_query(&config, &format!(
        "SELECT segment, customers, revenue, share_of_revenue FROM gold.rfm_segments WHERE {at} ORDER BY segment"
    )).await);
    assert_eq!(actual.len(), expected.len());
    let total: f64 = expected.iter().map(|e| e[2].f64()).sum();
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a[0].text(), e[0].text());
        assert_eq!(a[1].i64(), e[1].i64(), "customers in {}", e[0].text());
        assert_close(a[2].f64(), e[2].f64(), "segment revenue");
        assert!((a[3].f64() - e[2].f64() / total).abs() < 1e-9, "share of {}", e[0].text());
    }

    // No quarantine on the clean real data.
    let quarantined = rows(&lake_query(&config, "SELECT COUNT(*) FROM silver.sales_master_quarantine").await);
    assert_eq!(quarantined[0][0].i64(), 0);
}

/// Sorted content of a table for one date, for before/after comparisons.
async fn content(config: &medallion::config::Config, table: &str, filter: &str) -> Vec<Vec<Cell>> {
    let mut all = rows(&lake_query(config, &format!("SELECT * FROM {table} WHERE {filter}")).await);
    all.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerunning_a_date_is_idempotent_and_dates_coexist() {
    let db = northwind_database("it_idempotent").await;
    let lake = TestLake::new();
    let first = config(&lake.url(), Some(&db), "2026-11-24");
    run_pipeline(&first).await.unwrap();
    let at = "snapshot_date = DATE '2026-11-24'";
    let silver_before = content(&first, "silver.sales_master", at).await;
    let gold_before = content(&first, "gold.rfm_customers", at).await;

    run_pipeline(&first).await.unwrap();
    assert_eq!(content(&first, "silver.sales_master", at).await, silver_before);
    assert_eq!(content(&first, "gold.rfm_customers", at).await, gold_before);
    let orders = rows(&lake_query(&first, "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM bronze.orders").await);
    assert_eq!((orders[0][0].i64(), orders[0][1].i64()), (830, 830), "no duplicate rows after a rerun");

    let second = config(&lake.url(), Some(&db), "2026-11-25");
    run_pipeline(&second).await.unwrap();
    let per_date = rows(&lake_query(&second,
        "SELECT CAST(_ingestion_date AS VARCHAR), COUNT(*) FROM bronze.orders GROUP BY 1 ORDER BY 1").await);
    assert_eq!(per_date, vec![
        vec![Cell::Text("2026-11-24".into()), Cell::Int(830)],
        vec![Cell::Text("2026-11-25".into()), Cell::Int(830)],
    ]);
    let kpis = rows(&lake_query(&second, "SELECT COUNT(*) FROM gold.kpi_revenue").await);
    assert_eq!(kpis[0][0].i64(), 2);
    assert_eq!(content(&second, "silver.sales_master", at).await, silver_before, "the older date is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_rows_land_where_the_rules_say() {
    let db = northwind_database("it_dirty").await;
    let pg = pg_connect(&db).await;
    // A copy with the constraints dropped, then anomalies injected.
    pg.batch_execute(
        "DO $$ DECLARE c record; BEGIN
             FOR c IN SELECT conrelid::regclass AS t, conname FROM pg_constraint
                      WHERE connamespace = 'public'::regnamespace AND contype IN ('f', 'p') ORDER BY contype = 'p'
             LOOP EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I CASCADE', c.t, c.conname); END LOOP;
         END $$;
         ALTER TABLE order_details ALTER COLUMN unit_price DROP NOT NULL, ALTER COLUMN discount DROP NOT NULL;
         UPDATE customers SET country = 'united states' WHERE customer_id = 'GREAL';
         UPDATE customers SET country = '  germany ' WHERE customer_id = 'ALFKI';
         UPDATE customers SET country = 'U.K.' WHERE customer_id = 'AROUT';
         UPDATE order_details SET quantity = -5 WHERE order_id = 10248 AND product_id = 11;
         INSERT INTO order_details VALUES (10249, 999, 10, 1, 0);
         UPDATE orders SET customer_id = NULL WHERE order_id = 10250;
         UPDATE order_details SET unit_price = NULL WHERE order_id = 10251 AND product_id = 22;
         UPDATE order_details SET discount = 1.5 WHERE order_id = 10252 AND product_id = 20;
         UPDATE orders SET order_date = NULL WHERE order_id = 10253;
         INSERT INTO order_details VALUES (30000, 11, 14, 1, 0);
         UPDATE order_details SET discount = NULL WHERE order_id = 10254 AND product_id = 24;",
    )
    .await
    .unwrap();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move { pg_rows(&db, sql).await[0][0].i64() }
    };
    let lines_10250 = count("SELECT COUNT(*)::int8 FROM order_details WHERE order_id = 10250").await;
    let lines_10253 = count("SELECT COUNT(*)::int8 FROM order_details WHERE order_id = 10253").await;
    let all_lines = count("SELECT COUNT(*)::int8 FROM order_details").await;
    assert_eq!(all_lines, 2157);

    let lake = TestLake::new();
    let config = config(&lake.url(), Some(&db), "2026-11-25");
    let reports = run_pipeline(&config).await.unwrap();
    let refine = &reports[1];
    let expected_by_rule = [
        ("category_found", 1),
        ("customer_found", lines_10250 + 1),
        ("discount_between_0_and_1", 1),
        ("order_date_present", lines_10253 + 1),
        ("order_found", 1),
        ("product_found", 1),
        ("quantity_positive", 1),
        ("unit_price_non_negative", 1),
    ];
    for (rule, expected) in expected_by_rule {
        assert_eq!(refine.failures_by_rule[rule], expected as u64, "failures of {rule}");
    }
    let quarantined = 5 + lines_10250 + lines_10253;
    assert_eq!(refine.quarantined, quarantined as u64);

    let counted = rows(&lake_query(&config, "SELECT COUNT(*) FROM silver.sales_master_quarantine").await);
    assert_eq!(counted[0][0].i64(), quarantined);
    let silver = rows(&lake_query(&config, "SELECT COUNT(*) FROM silver.sales_master").await);
    assert_eq!(silver[0][0].i64(), all_lines - quarantined, "never silently dropped");

    let unknown_product = rows(&lake_query(&config,
        "SELECT failed_rule, failed_rules, order_id FROM silver.sales_master_quarantine WHERE product_id = 999").await);
    assert_eq!(unknown_product, vec![vec![
        Cell::Text("product_found".into()), Cell::Text("product_found,category_found".into()), Cell::Int(10249)
    ]]);
    let negative = rows(&lake_query(&config,
        "SELECT failed_rule FROM silver.sales_master_quarantine WHERE order_id = 10248 AND product_id = 11").await);
    assert_eq!(negative, vec![vec![Cell::Text("quantity_positive".into())]]);

    let countries = rows(&lake_query(&config,
        "SELECT customer_id, MIN(country), MAX(country) FROM silver.sales_master
         WHERE customer_id IN ('GREAL', 'ALFKI', 'AROUT') GROUP BY customer_id ORDER BY customer_id").await);
    let by_customer: Vec<(String, String, String)> =
        countries.iter().map(|r| (r[0].text(), r[1].text(), r[2].text())).collect();
    assert_eq!(by_customer, vec![
        ("ALFKI".into(), "Germany".into(), "Germany".into()),
        ("AROUT".into(), "UK".into(), "UK".into()),
        ("GREAL".into(), "USA".into(), "USA".into()),
    ]);
    let null_discount = rows(&lake_query(&config,
        "SELECT discount, line_total, unit_price * quantity FROM silver.sales_master WHERE order_id = 10254 AND product_id = 24").await);
    assert_eq!(null_discount[0][0].f64(), 0.0);
    assert_close(null_discount[0][1].f64(), null_discount[0][2].f64(), "NULL discount means no discount");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_the_run_rule_stops_before_writing() {
    let db = northwind_database("it_fail_rule").await;
    let lake = TestLake::new();
    let mut config = config(&lake.url(), Some(&db), "2026-11-25");
    run_pipeline(&config).await.unwrap();
    let silver = Lake::new(&config).unwrap().existing_table("silver", "sales_master").await.unwrap().unwrap();
    let version_before = silver.version();

    pg_connect(&db).await
        .batch_execute("UPDATE order_details SET quantity = 0 WHERE order_id = 10248")
        .await
        .unwrap();
    let models = tempfile::tempdir().unwrap();
    for layer in ["silver", "gold"] {
        let from = repo_path("models").join(layer);
        std::fs::create_dir_all(models.path().join(layer)).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let mut text = std::fs::read_to_string(&path).unwrap();
            if path.ends_with("sales_master.expectations.toml") {
                text = text.replace("check = \"quantity > 0\"", "check = \"quantity > 0\"\non_fail = \"fail\"");
            }
            std::fs::write(models.path().join(layer).join(path.file_name().unwrap()), text).unwrap();
        }
    }
    config.models_dir = Some(models.path().to_path_buf());
    let err = run_pipeline(&config).await.unwrap_err();
    let lines_10248 = pg_rows(&db, "SELECT COUNT(*)::int8 FROM order_details WHERE order_id = 10248").await[0][0].i64();
    assert!(matches!(&err, medallion::Error::ExpectationFailed { rule, rows, .. }
        if rule == "quantity_positive" && *rows == lines_10248 as u64), "{err}");
    let silver = Lake::new(&config).unwrap().existing_table("silver", "sales_master").await.unwrap().unwrap();
    assert_eq!(silver.version(), version_before, "silver untouched by the failed run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_type_lands_faithfully() {
    let db = northwind_database("it_types").await;
    pg_connect(&db).await.batch_execute(
        "ALTER TABLE categories ADD COLUMN big bigint, ADD COLUMN amount numeric(12,2), ADD COLUMN free numeric,
             ADD COLUMN created timestamp, ADD COLUMN created_tz timestamptz, ADD COLUMN flag boolean,
             ADD COLUMN ratio float8, ADD COLUMN token uuid;
         UPDATE categories SET big = 9007199254740993, amount = -12345.67, free = 3.14159,
             created = '2026-01-02 03:04:05.123456', created_tz = '2026-01-02 03:04:05.5+02',
             flag = true, ratio = 0.1, token = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'
         WHERE category_id = 1;
         UPDATE categories SET picture = '\\x00ff10' WHERE category_id = 2;",
    )
    .await
    .unwrap();
    let lake = TestLake::new();
    let config = config(&lake.url(), Some(&db), "2026-11-25");
    let lake_handle = Lake::new(&config).unwrap();
    let source = BatchSource::from_config(&config).unwrap();
    pipeline::ingest(&config, &lake_handle, &source, &Progress::hidden()).await.unwrap();

    let types = rows(&lake_query(&config,
        "SELECT column_name, data_type FROM information_schema.columns
         WHERE table_schema = 'bronze' AND table_name IN ('categories', 'order_details', 'orders')
         ORDER BY table_name, column_name").await);
    // Delta has one binary and one string type; DataFusion reads them as view arrays.
    let type_of = |column: &str| {
        types.iter().find(|r| r[0].text() == column).map(|r| r[1].text().replace("View", ""))
            .unwrap_or_else(|| panic!("no column {column}"))
    };
    assert_eq!(type_of("category_id"), "Int16");
    assert_eq!(type_of("picture"), "Binary");
    assert_eq!(type_of("big"), "Int64");
    assert_eq!(type_of("amount"), "Decimal128(12, 2)");
    assert_eq!(type_of("free"), "Decimal128(38, 10)");
    assert_eq!(type_of("created"), "Timestamp(µs)");
    assert!(type_of("created_tz").starts_with("Timestamp(µs, \"UTC\")") || type_of("created_tz").contains("UTC"));
    assert_eq!(type_of("flag"), "Boolean");
    assert_eq!(type_of("ratio"), "Float64");
    assert_eq!(type_of("token"), "Utf8");
    assert_eq!(type_of("unit_price"), "Float32");
    assert_eq!(type_of("discount"), "Float32");
    assert_eq!(type_of("order_date"), "Date32");
    assert_eq!(type_of("_ingestion_date"), "Date32");

    // Values, compared with PostgreSQL's own text rendering.
    let expected = pg_rows(&db,
        "SELECT big::text, amount::text, free::text, to_char(created, 'YYYY-MM-DD\"T\"HH24:MI:SS.US'),
                to_char(created_tz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), flag::text, ratio::text,
                token::text, category_name::text
         FROM categories WHERE category_id = 1").await;
    let actual = rows(&lake_query(&config,
        "SELECT CAST(big AS VARCHAR), CAST(amount AS VARCHAR), CAST(free AS VARCHAR), CAST(created AS VARCHAR),
                CAST(created_tz AS VARCHAR), CAST(flag AS VARCHAR), CAST(ratio AS VARCHAR), token, category_name
         FROM bronze.categories WHERE category_id = 1").await);
    assert_eq!(actual[0][0].text(), expected[0][0].text(), "bigint");
    assert_eq!(actual[0][1].text(), expected[0][1].text(), "numeric(12,2)");
    assert_eq!(actual[0][2].text().trim_end_matches('0'), expected[0][2].text(), "unconstrained numeric");
    assert_eq!(actual[0][3].text(), expected[0][3].text(), "timestamp");
    assert!(actual[0][4].text().starts_with(&expected[0][4].text()[..19]), "timestamptz in UTC: {:?} vs {:?}", actual[0][4], expected[0][4]);
    assert_eq!(actual[0][5].text(), expected[0][5].text(), "boolean");
    assert_eq!(actual[0][6].text(), expected[0][6].text(), "float8");
    assert_eq!(actual[0][7].text(), expected[0][7].text(), "uuid as text");
    assert_eq!(actual[0][8].text(), expected[0][8].text(), "varchar");

    let bytes = rows(&lake_query(&config, "SELECT encode(picture, 'hex') FROM bronze.categories WHERE category_id = 2").await);
    assert_eq!(bytes[0][0].text(), "00ff10", "bytea");
    let real = rows(&lake_query(&config,
        "SELECT CAST(unit_price AS DOUBLE) FROM bronze.order_details WHERE order_id = 10248 AND product_id = 11").await);
    let expected_real = pg_rows(&db, "SELECT unit_price::float8 FROM order_details WHERE order_id = 10248 AND product_id = 11").await;
    assert_eq!(real[0][0].f64(), expected_real[0][0].f64(), "float4 kept bit for bit");

    let origin = rows(&lake_query(&config, "SELECT DISTINCT _source FROM bronze.orders").await);
    let origin = origin[0][0].text();
    assert!(origin.ends_with("/it_types/public.orders") && !origin.contains('@'), "{origin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_northwind_at_scale_10_joins_cleanly() {
    let db = fresh_database("it_scale10").await;
    let mut client = pg_connect(&db).await;
    medallion::source::generator::load(&mut client, "it_scale10", 10, &indicatif::ProgressBar::hidden()).await.unwrap();
    let lake = TestLake::new();
    let config = config(&lake.url(), Some(&db), "2026-11-25");
    let reports = run_pipeline(&config).await.unwrap();
    assert_eq!(reports[1].quarantined, 0, "{:?}", reports[1].failures_by_rule);

    let expected = pg_rows(&db, &format!(
        "WITH lines AS ({PG_LINES}) SELECT COUNT(*)::int8, COUNT(DISTINCT order_id)::int8, SUM(line_total) FROM lines"
    )).await;
    let all_lines = pg_rows(&db, "SELECT COUNT(*)::int8 FROM order_details").await;
    assert_eq!(expected[0][0].i64(), all_lines[0][0].i64(), "every generated line joins");
    assert_eq!(expected[0][1].i64(), 8300);
    let silver = rows(&lake_query(&config, "SELECT COUNT(*) FROM silver.sales_master").await);
    assert_eq!(silver[0][0].i64(), expected[0][0].i64());
    let kpi = rows(&lake_query(&config, "SELECT orders, total_revenue FROM gold.kpi_revenue").await);
    assert_eq!(kpi[0][0].i64(), 8300);
    assert_close(kpi[0][1].f64(), expected[0][2].f64(), "total revenue at scale 10");

    // The same scale twice gives the same data.
    let fingerprint = "SELECT md5(string_agg(order_id || ':' || product_id || ':' || quantity || ':' || unit_price, ',' ORDER BY order_id, product_id)) FROM order_details";
    let before = pg_rows(&db, fingerprint).await;
    medallion::source::generator::load(&mut client, "it_scale10", 10, &indicatif::ProgressBar::hidden()).await.unwrap();
    assert_eq!(pg_rows(&db, fingerprint).await, before, "deterministic generator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_from_a_folder_replace_the_builtin_ones() {
    let set = ModelSet::load(Some(&repo_path("models"))).unwrap();
    let builtin = ModelSet::builtin().unwrap();
    let names = |s: &ModelSet, l: Layer| s.layer(l).iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&set, Layer::Gold), names(&builtin, Layer::Gold), "the built-in list matches the models folder");
    assert_eq!(names(&set, Layer::Silver), names(&builtin, Layer::Silver));
}

/// A table too big for one batch fails to decode near its end, after its
/// first batches were already streamed into Parquet files: the landing
/// fails with the source's reason in one line, and the table keeps its last
/// committed version (the files written are not in its log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_read_failing_mid_table_leaves_bronze_as_it_was() {
    let db = fresh_database("it_mid_table_failure").await;
    let mut client = pg_connect(&db).await;
    medallion::source::generator::load(&mut client, "it_mid_table_failure", 100, &indicatif::ProgressBar::hidden())
        .await
        .unwrap();
    // An unconstrained numeric is read at scale 10; 1e30 does not fit in 38 digits.
    client.batch_execute("ALTER TABLE order_details ADD COLUMN note numeric").await.unwrap();
    let lake = TestLake::new();
    let config = config(&lake.url(), Some(&db), "2026-11-25");
    let source = BatchSource::from_config(&config).unwrap();
    let medallion_lake = Lake::new(&config).unwrap();
    pipeline::ingest(&config, &medallion_lake, &source, &Progress::hidden()).await.unwrap();
    let lines = pg_rows(&db, "SELECT COUNT(*)::int8 FROM order_details").await[0][0].i64();
    assert!(lines > 3 * 65_536, "the table spans several batches: {lines}");
    let before = medallion_lake.existing_table("bronze", "order_details").await.unwrap().unwrap().version();

    client
        .batch_execute("UPDATE order_details SET note = 1e30 WHERE order_id = (SELECT max(order_id) FROM order_details)")
        .await
        .unwrap();
    let err = pipeline::ingest(&config, &medallion_lake, &source, &Progress::hidden()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("order_details") && text.contains("too large"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");

    let after = medallion_lake.existing_table("bronze", "order_details").await.unwrap().unwrap();
    assert_eq!(after.version(), before, "no commit for the failed landing");
    let landed = rows(&lake_query(&config, "SELECT COUNT(*) FROM bronze.order_details").await);
    assert_eq!(landed[0][0].i64(), lines, "the first landing's rows, all of them");
}

/// `memory_limit_mb` bounds the models' queries: under a limit they spill
/// and build the same gold; a limit too small for a join's build side is
/// one line that says which setting to raise, and the table stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_bounds_the_models_and_one_too_small_is_a_clear_error() {
    let db = fresh_database("it_memory_limit").await;
    let mut client = pg_connect(&db).await;
    medallion::source::generator::load(&mut client, "it_memory_limit", 10, &indicatif::ProgressBar::hidden()).await.unwrap();
    let lake = TestLake::new();
    let mut config = config(&lake.url(), Some(&db), "2026-11-25");
    config.memory_limit = Some(32 * 1024 * 1024);
    run_pipeline(&config).await.unwrap();
    let expected = pg_rows(&db, &format!(
        "WITH lines AS ({PG_LINES}) SELECT COUNT(DISTINCT order_id)::int8, COUNT(DISTINCT customer_id)::int8, SUM(line_total) FROM lines"
    )).await;
    let kpi = rows(&lake_query(&config, "SELECT orders, customers, total_revenue FROM gold.kpi_revenue").await);
    assert_eq!((kpi[0][0].i64(), kpi[0][1].i64()), (expected[0][0].i64(), expected[0][1].i64()));
    assert_close(kpi[0][2].f64(), expected[0][2].f64(), "revenue under a memory limit");

    let medallion_lake = Lake::new(&config).unwrap();
    let before = medallion_lake.existing_table("silver", "sales_master").await.unwrap().unwrap().version();
    config.memory_limit = Some(1024);
    let models = ModelSet::builtin().unwrap();
    let err = pipeline::run_models(&config, &medallion_lake, &models, "silver", &Progress::hidden()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("memory_limit_mb"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    let after = medallion_lake.existing_table("silver", "sales_master").await.unwrap().unwrap().version();
    assert_eq!(after, before, "silver untouched");
}

//! The lake on a real S3 server (medallion-s3, started by scripts/test.sh): the
//! whole batch pipeline in both S3 layouts checked against PostgreSQL, bucket
//! creation, two `medallion` processes committing to the same tables at once,
//! and the faults a user meets (server down, server stopped mid-run, wrong
//! credentials). Fault tests run their own private instance of it so the
//! shared server is never disturbed.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use medallion::lake::s3::{BucketClient, BucketState};
use medallion::lake::Lake;

use crate::batch::{pg_rfm_sql, PG_LINES};
use crate::support::*;


fn medallion(args: &[&str], env: &[(&str, String)]) -> Output {
    medallion_command(args, env).output().expect("the medallion binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}


/// Gold of `date` equals the same figures computed by PostgreSQL in SQL.
async fn assert_gold_matches_postgres(config: &medallion::config::Config, db: &str, date: &str) {
    let at = format!("snapshot_date = DATE '{date}'");
    let expected = pg_rows(db, &format!(
        "WITH lines AS ({PG_LINES}) SELECT SUM(line_total), COUNT(DISTINCT order_id)::int8,
         COUNT(DISTINCT customer_id)::int8, SUM(line_total) / COUNT(DISTINCT order_id) FROM lines"
    )).await;
    let actual = rows(&lake_query(config, &format!(
        "SELECT total_revenue, orders, customers, avg_order_value FROM gold.kpi_revenue WHERE {at}"
    )).await);
    assert_eq!(actual.len(), 1, "one kpi_revenue row for {date}");
    assert_close(actual[0][0].f64(), expected[0][0].f64(), "total_revenue");
    assert_eq!(actual[0][1].i64(), expected[0][1].i64(), "orders");
    assert_eq!(actual[0][2].i64(), expected[0][2].i64(), "customers");
    assert_close(actual[0][3].f64(), expected[0][3].f64(), "avg_order_value");

    let expected = pg_rows(db, &format!(
        "WITH lines AS ({PG_LINES}) SELECT country::text, SUM(line_total) AS revenue FROM lines
         GROUP BY country ORDER BY revenue DESC, country LIMIT 3"
    )).await;
    let actual = rows(&lake_query(config, &format!(
        "SELECT country, revenue FROM gold.kpi_top_countries WHERE {at} ORDER BY \"rank\""
    )).await);
    assert_eq!(actual.len(), 3);
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a[0].text(), e[0].text());
        assert_close(a[1].f64(), e[1].f64(), "country revenue");
    }

    let expected = pg_rows(db, &format!(
        "WITH lines AS ({PG_LINES}) SELECT category_name::text, SUM(line_total), SUM(quantity)::int8,
         COUNT(DISTINCT order_id)::int8 FROM lines GROUP BY category_name ORDER BY category_name"
    )).await;
    let actual = rows(&lake_query(config, &format!(
        "SELECT category_name, revenue, quantity, orders FROM gold.kpi_category_sales WHERE {at} ORDER BY category_name"
    )).await);
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a[0].text(), e[0].text());
        assert_close(a[1].f64(), e[1].f64(), "category revenue");
        assert_eq!((a[2].i64(), a[3].i64()), (e[2].i64(), e[3].i64()), "quantity, orders of {}", e[0].text());
    }

    let expected = pg_rows(db, &pg_rfm_sql()).await;
    let actual = rows(&lake_query(config, &format!(
        "SELECT customer_id, recency_days, frequency, monetary, r_score, f_score, m_score, segment
         FROM gold.rfm_customers WHERE {at} ORDER BY customer_id"
    )).await);
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a[0].text(), e[0].text());
        assert_eq!((a[1].i64(), a[2].i64()), (e[1].i64(), e[2].i64()), "recency, frequency of {}", e[0].text());
        assert_close(a[3].f64(), e[3].f64(), "monetary");
        assert_eq!((a[4].i64(), a[5].i64(), a[6].i64()), (e[4].i64(), e[5].i64(), e[6].i64()), "scores of {}", e[0].text());
        assert_eq!(a[7].text(), e[7].text(), "segment of {}", e[0].text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_bucket_per_layer_pipeline_matches_postgres() {
    let s3 = S3Endpoint::shared();
    let db = northwind_database("it_s3_buckets").await;
    let config = s3_config(&s3, "s3://", Some(&db), "2026-10-01");
    run_pipeline(&config).await.unwrap();
    assert_gold_matches_postgres(&config, &db, "2026-10-01").await;

    // Each layer lives in its own bucket, at the bucket's root.
    let lake = Lake::new(&config).unwrap();
    assert_eq!(lake.location().table_url("gold", "kpi_revenue").as_str(), "s3://gold/kpi_revenue");
    for (layer, table) in [("bronze", "orders"), ("silver", "sales_master"), ("gold", "rfm_segments")] {
        assert!(lake.list_tables(layer).await.unwrap().contains(&table.to_string()), "{layer}.{table} missing");
    }
    let orders = rows(&lake_query(&config,
        "SELECT COUNT(*) FROM bronze.orders WHERE _ingestion_date = DATE '2026-10-01'").await);
    let expected = pg_rows(&db, "SELECT COUNT(*) FROM orders").await;
    assert_eq!(orders[0][0].i64(), expected[0][0].i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_bucket_and_prefix_pipeline_matches_postgres_and_reruns_idempotently() {
    let s3 = S3Endpoint::shared();
    let db = northwind_database("it_s3_prefix").await;
    let prefix = unique_name("prefix");
    let lake_url = format!("s3://silver/{prefix}/lake");
    let config = s3_config(&s3, &lake_url, Some(&db), "2026-10-02");
    run_pipeline(&config).await.unwrap();
    assert_gold_matches_postgres(&config, &db, "2026-10-02").await;

    // Every layer is under the prefix of the one bucket.
    let lake = Lake::new(&config).unwrap();
    assert_eq!(lake.location().buckets(&["bronze", "silver", "gold"]), vec!["silver".to_string()]);
    assert_eq!(
        lake.location().table_url("bronze", "orders").as_str(),
        format!("s3://silver/{prefix}/lake/bronze/orders")
    );

    // A rerun of the date replaces it: same rows, one more commit per table.
    let before = rows(&lake_query(&config, "SELECT COUNT(*), SUM(line_total) FROM silver.sales_master").await);
    run_pipeline(&config).await.unwrap();
    let after = rows(&lake_query(&config, "SELECT COUNT(*), SUM(line_total) FROM silver.sales_master").await);
    assert_eq!(after[0][0], before[0][0]);
    assert_close(after[0][1].f64(), before[0][1].f64(), "silver revenue after a rerun");
    let history = table_history(&config, "silver", "sales_master").await;
    let versions: Vec<i64> = history.iter().map(|c| c.0).collect();
    assert_eq!(versions, vec![0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_one_clear_line_and_create_buckets_fixes_it() {
    let s3 = S3Endpoint::shared();
    let bucket = unique_name("it-lake");
    let lake_url = format!("s3://{bucket}/p");
    let env = s3.env();
    let args = ["ingest", "--lake", &lake_url, "--from-dump", &northwind_dump(), "--date", "2026-10-03", "--quiet"];

    let output = medallion(&args, &env);
    let text = assert_one_line_failure(&output, &[s3.secret_access_key.as_str()]);
    assert!(text.contains(&format!("'{bucket}' does not exist")) && text.contains("--create-buckets"), "{text}");
    let client = BucketClient::new(Lake::new(&s3_config(&s3, &lake_url, None, "2026-10-03")).unwrap().storage_options()).unwrap();
    assert_eq!(client.state(&bucket).await.unwrap(), BucketState::Missing, "nothing was created");

    let mut with_flag = args.to_vec();
    with_flag.push("--create-buckets");
    let output = medallion(&with_flag, &env);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(client.state(&bucket).await.unwrap(), BucketState::Exists);
    let config = s3_config(&s3, &lake_url, None, "2026-10-03");
    let orders = rows(&lake_query(&config, "SELECT COUNT(*) FROM bronze.orders").await);
    assert_eq!(orders[0][0].i64(), 830, "the real dump has 830 orders");

    // Renamed buckets per layer, created through the environment variable.
    let stem = unique_name("it-layer");
    let config_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config_file.path(),
        format!("[s3]\nbuckets = {{ bronze = \"{stem}-b\", silver = \"{stem}-s\", gold = \"{stem}-g\" }}\n"),
    )
    .unwrap();
    let config_path = config_file.path().to_str().unwrap();
    let args = ["ingest", "--lake", "s3://", "--config", config_path, "--from-dump", &northwind_dump(), "--quiet"];
    let output = medallion(&args, &env);
    let text = assert_one_line_failure(&output, &[s3.secret_access_key.as_str()]);
    assert!(text.contains(&format!("{stem}-")), "{text}");
    let mut env_create = env.clone();
    env_create.push(("MEDALLION_CREATE_BUCKETS", "true".to_string()));
    let output = medallion(&args, &env_create);
    assert!(output.status.success(), "{}", stderr(&output));
    for suffix in ["b", "s", "g"] {
        assert_eq!(client.state(&format!("{stem}-{suffix}")).await.unwrap(), BucketState::Exists);
    }
}

/// Rows of `layer.table` per date partition at one Delta version.
async fn counts_at_version(config: &medallion::config::Config, table: &str, version: i64) -> BTreeMap<String, (i64, i64)> {
    let lake = Lake::new(config).unwrap();
    let mut delta = lake.table("bronze", table).await.unwrap();
    delta.load_version(version.try_into().unwrap()).await.unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    delta.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", delta.table_provider().await.unwrap()).unwrap();
    let batches = ctx
        .sql("SELECT CAST(_ingestion_date AS VARCHAR), COUNT(*), COUNT(DISTINCT order_id) FROM t GROUP BY 1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    rows(&batches).into_iter().map(|r| (r[0].text(), (r[1].i64(), r[2].i64()))).collect()
}

/// Runs two `medallion ingest` processes on the same lake at the same time.
fn ingest_twice_at_once(lake_url: &str, dates: [&str; 2], env: &[(&str, String)]) -> [Output; 2] {
    let spawn = |date: &str| {
        medallion_command(&["ingest", "--lake", lake_url, "--from-dump", &northwind_dump(), "--date", date, "--quiet"], env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("medallion starts")
    };
    let first = spawn(dates[0]);
    let second = spawn(dates[1]);
    [first.wait_with_output().unwrap(), second.wait_with_output().unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_s3_never_lose_a_commit() {
    let s3 = S3Endpoint::shared();
    let lake_url = format!("s3://bronze/{}", unique_name("concurrent"));
    let env = s3.env();
    let config = s3_config(&s3, &lake_url, None, "2026-10-04");
    let base = medallion(&["ingest", "--lake", &lake_url, "--from-dump", &northwind_dump(), "--date", "2026-10-04", "--quiet"], &env);
    assert!(base.status.success(), "{}", stderr(&base));

    // Two dates at once, then the same date twice at once.
    let mut landed = vec!["2026-10-04".to_string()];
    for dates in [["2026-10-05", "2026-10-06"], ["2026-10-07", "2026-10-07"]] {
        for (output, date) in ingest_twice_at_once(&lake_url, dates, &env).iter().zip(dates) {
            if output.status.success() {
                landed.push(date.to_string());
            } else {
                let text = assert_one_line_failure(output, &[s3.secret_access_key.as_str()]);
                assert!(text.contains("another writer"), "only a commit conflict may fail a writer: {text}");
            }
        }
    }
    assert!(landed.iter().any(|d| d.as_str() == "2026-10-07"), "one of the two same-date writers lands");

    // The log has no gap and every commit names the date it replaced.
    for table in ["orders", "order_details", "customers"] {
        let history = table_history(&config, "bronze", table).await;
        let versions: Vec<i64> = history.iter().map(|c| c.0).collect();
        assert_eq!(versions, (0..history.len() as i64).collect::<Vec<_>>(), "bronze.{table} versions");
        for date in &landed {
            assert!(history.iter().any(|c| &c.1 == date), "bronze.{table}: the commit of {date} is lost: {history:?}");
        }
    }

    // Every version of bronze.orders holds whole partitions only, and the
    // newest holds every date a successful writer reported, once.
    let history = table_history(&config, "bronze", "orders").await;
    for (version, _, _) in &history {
        for (date, (count, distinct)) in counts_at_version(&config, "orders", *version).await {
            assert_eq!((count, distinct), (830, 830), "bronze.orders v{version}, date {date}");
        }
    }
    let newest = counts_at_version(&config, "orders", history.last().unwrap().0).await;
    for date in &landed {
        assert_eq!(newest.get(date), Some(&(830, 830)), "date {date} in the newest version: {newest:?}");
    }
}

/// The premise of the test above: the test server decides a conditional
/// create atomically, as S3 and MinIO do (s3s-fs alone let several racing
/// `If-None-Match: *` writes of one key succeed). Twelve signed PUTs race
/// for one new key: exactly one may create it.
#[test]
fn racing_conditional_creates_on_the_test_server_have_one_winner() {
    let s3 = S3Endpoint::shared();
    let url = format!("{}/bronze/{}", s3.url, unique_name("race"));
    let writers: Vec<_> = (0..12)
        .map(|i| {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "--data-binary", &format!("writer {i}")])
                .args(["--aws-sigv4", &format!("aws:amz:{}:s3", s3.region)])
                .args(["--user", &format!("{}:{}", s3.access_key_id, s3.secret_access_key)])
                .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-H", "If-None-Match: *", &url])
                .stdout(Stdio::piped())
                .spawn()
                .expect("curl runs (scripts/s3.sh installs it)")
        })
        .collect();
    let mut codes: Vec<String> =
        writers.into_iter().map(|w| String::from_utf8(w.wait_with_output().unwrap().stdout).unwrap()).collect();
    codes.sort();
    let created = codes.iter().filter(|c| c.as_str() == "200").count();
    let refused = codes.iter().filter(|c| c.as_str() == "412").count();
    assert_eq!((created, refused), (1, 11), "status codes: {codes:?}");
}

#[test]
fn s3_server_down_at_start_fails_in_bounded_time_with_one_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut s3 = S3Endpoint::shared();
    s3.url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let output = medallion(&["ingest", "--lake", "s3://", "--from-dump", &northwind_dump(), "--quiet"], &s3.env());
    let elapsed = started.elapsed();
    let text = assert_one_line_failure(&output, &[s3.secret_access_key.as_str()]);
    assert!(text.contains(&format!("127.0.0.1:{port}")) && text.contains("AWS_ENDPOINT_URL"), "{text}");
    assert!(elapsed < Duration::from_secs(90), "gave up only after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_s3_credentials_are_one_line_without_the_secret() {
    let s3 = S3Endpoint::shared();
    let secret = "Wr0ngS3cretKeyValue";
    let mut wrong_secret = s3.clone();
    wrong_secret.secret_access_key = secret.to_string();
    let mut wrong_key = s3.clone();
    wrong_key.access_key_id = "nobody-here".to_string();
    for endpoint in [wrong_secret, wrong_key] {
        let env = endpoint.env();
        let output = medallion(&["ingest", "--lake", "s3://", "--from-dump", &northwind_dump(), "--quiet"], &env);
        let text = assert_one_line_failure(&output, &[secret, s3.secret_access_key.as_str()]);
        assert!(text.contains("credentials") && text.contains("AWS_SECRET_ACCESS_KEY"), "{text}");

        let output = medallion(&["sql", "--lake", "s3://", "SELECT 1"], &env);
        let text = assert_one_line_failure(&output, &[secret, s3.secret_access_key.as_str()]);
        assert!(text.contains("credentials"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_stopped_mid_run_fails_cleanly_and_tables_keep_their_last_version() {
    let server = PrivateS3::start();
    let db = northwind_database("it_s3_stopped").await;
    let date = "2026-10-08";
    let config = s3_config(&server.endpoint, "s3://", Some(&db), date);
    run_pipeline(&config).await.unwrap();
    let at = format!("snapshot_date = DATE '{date}'");
    let gold_before = rows(&lake_query(&config, &format!("SELECT * FROM gold.kpi_revenue WHERE {at}")).await);
    let silver_before = rows(&lake_query(&config, "SELECT COUNT(*), SUM(line_total) FROM silver.sales_master").await);

    // Rerun the date; stop the server as soon as the rerun's first commit lands.
    let mut env = server.endpoint.env();
    env.push(("DATABASE_URL", db.clone()));
    let mut child = medallion_command(&["run", "--lake", "s3://", "--date", date, "--quiet"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first_commit = server.data_dir().join("bronze/orders/_delta_log/00000000000000000001.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !first_commit.exists() {
        assert!(Instant::now() < deadline, "the rerun never committed bronze.orders");
        assert!(child.try_wait().unwrap().is_none(), "the rerun ended before the server was stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.stop();
    let stopped = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(90), "the run hung {:?} after the server stopped", stopped.elapsed());
    let text = assert_one_line_failure(&output, &[server.endpoint.secret_access_key.as_str()]);
    assert!(text.contains("AWS_ENDPOINT_URL") || text.contains("did not answer") || text.contains("cannot reach"), "{text}");

    // Back up: every table reads, at its last committed version.
    server.script("start");
    assert_eq!(rows(&lake_query(&config, &format!("SELECT * FROM gold.kpi_revenue WHERE {at}")).await), gold_before);
    let silver_after = rows(&lake_query(&config, "SELECT COUNT(*), SUM(line_total) FROM silver.sales_master").await);
    assert_eq!(silver_after[0][0], silver_before[0][0]);
    assert_close(silver_after[0][1].f64(), silver_before[0][1].f64(), "silver revenue");
    let expected = pg_rows(&db, "SELECT COUNT(*) FROM orders").await;
    let orders = rows(&lake_query(&config, "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM bronze.orders").await);
    assert_eq!((orders[0][0].i64(), orders[0][1].i64()), (expected[0][0].i64(), expected[0][0].i64()));
    for table in ["orders", "order_details", "products", "customers", "employees", "categories"] {
        let history = table_history(&config, "bronze", table).await;
        let versions: Vec<i64> = history.iter().map(|c| c.0).collect();
        assert_eq!(versions, (0..history.len() as i64).collect::<Vec<_>>(), "bronze.{table} versions");
    }
    // And a new run completes on the restarted server.
    run_pipeline(&config).await.unwrap();
    assert_gold_matches_postgres(&config, &db, date).await;
}

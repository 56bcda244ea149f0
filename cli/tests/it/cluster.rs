//! Scale out on a real Ballista cluster: a scheduler and executors started as
//! `medallion cluster ...` processes on 127.0.0.1. The models run on the
//! cluster give the gold PostgreSQL computes and the local engine gives; an
//! executor or the scheduler killed mid-job, a missing scheduler or executor,
//! an executor without the lake's credentials: the command finishes, or fails
//! in one line within a bounded time, and the lake keeps its old version.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use medallion::config::{Config, Engine};
use medallion::lake::Lake;
use medallion::pipeline::{self, BatchSource};
use medallion::progress::Progress;

use crate::batch::{pg_rfm_sql, PG_LINES};
use crate::support::*;

/// A scheduler and its executors, killed when dropped.
struct Cluster {
    port: u16,
    scheduler: Option<Child>,
    executors: Vec<Child>,
    /// The data port of each executor started, in order.
    data_ports: Vec<u16>,
    work: tempfile::TempDir,
}

impl Cluster {
    /// A scheduler and `executors` executors of 2 slots, each with `env`,
    /// registered before this returns.
    async fn start(executors: usize, env: &[(&str, String)]) -> Cluster {
        let port = unused_service_port();
        let scheduler = medallion_command(
            &["cluster", "scheduler", "--bind", &format!("127.0.0.1:{port}"), "--executor-timeout", "6s", "--stall-timeout", "15s"],
            &[],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the scheduler starts");
        let mut cluster = Cluster { port, scheduler: Some(scheduler), executors: Vec::new(), data_ports: Vec::new(), work: tempfile::tempdir().unwrap() };
        for _ in 0..executors {
            cluster.add_executor(env);
        }
        cluster.wait_for_executors(executors).await;
        cluster
    }

    fn add_executor(&mut self, env: &[(&str, String)]) {
        let work = self.work.path().join(format!("executor-{}", self.executors.len()));
        std::fs::create_dir_all(&work).unwrap();
        let (data, tasks) = (unused_service_port().to_string(), unused_service_port().to_string());
        self.data_ports.push(data.parse().unwrap());
        let scheduler = format!("127.0.0.1:{}", self.port);
        let args = [
            "cluster", "executor", "--scheduler", &scheduler, "--slots", "2", "--port", &data, "--grpc-port", &tasks,
            "--work-dir", work.to_str().unwrap(), "--heartbeat", "1s",
        ];
        let child = medallion_command(&args, env).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("an executor starts");
        self.executors.push(child);
    }

    /// Waits until the scheduler lists `count` executors.
    async fn wait_for_executors(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = medallion::cluster::status::fetch("127.0.0.1", self.port, Duration::from_secs(1)).await;
            match status {
                Ok(status) if status.executors.len() >= count => return,
                _ if Instant::now() > deadline => panic!("{count} executor(s) did not register in 60 s: {status:?}"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Waits until the scheduler runs a job (true), or `limit` passed.
    async fn wait_for_a_running_job(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(status) = medallion::cluster::status::fetch("127.0.0.1", self.port, Duration::from_secs(1)).await {
                if status.jobs.iter().any(|job| job.state == "running") {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn engine(&self) -> Engine {
        Engine::Ballista { host: "127.0.0.1".into(), port: self.port }
    }

    fn engine_url(&self) -> String {
        self.engine().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.executors.iter_mut().chain(self.scheduler.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn on(config: &Config, cluster: &Cluster) -> Config {
    let mut config = config.clone();
    config.engine = cluster.engine();
    config
}

/// Every row of `table`, sorted, with floats rounded to 6 significant
/// places after the point (sums over partitions may differ in the last bits).
async fn table_rows(config: &Config, table: &str) -> Vec<String> {
    let batches = lake_query(config, &format!("SELECT * FROM {table}")).await;
    let mut rows: Vec<String> = rows(&batches)
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| match cell {
                    Cell::Float(value) => format!("{value:.6}"),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    rows.sort();
    rows
}

/// The silver and gold tables built from Northwind.
const BUILT: [&str; 8] = [
    "silver.sales_master",
    "silver.sales_master_quarantine",
    "gold.kpi_category_sales",
    "gold.kpi_country_sales",
    "gold.kpi_revenue",
    "gold.kpi_top_countries",
    "gold.rfm_customers",
    "gold.rfm_segments",
];

async fn assert_same_tables(local: &Config, cluster: &Config) {
    for table in BUILT {
        let (expected, actual) = (table_rows(local, table).await, table_rows(cluster, table).await);
        assert_eq!(actual.len(), expected.len(), "rows of {table}");
        assert_eq!(actual, expected, "{table} on the cluster differs from the local engine's");
    }
}

/// Gold revenue, orders, customers and every customer's RFM segment equal
/// what PostgreSQL computes from the source.
async fn assert_gold_matches_postgres(config: &Config, db: &str) {
    let expected = pg_rows(db, &format!(
        "WITH lines AS ({PG_LINES}) SELECT SUM(line_total), COUNT(DISTINCT order_id)::int8, COUNT(DISTINCT customer_id)::int8 FROM lines"
    ))
    .await;
    let actual = rows(&lake_query(config, "SELECT total_revenue, orders, customers FROM gold.kpi_revenue").await);
    assert_eq!(actual.len(), 1);
    assert_close(actual[0][0].f64(), expected[0][0].f64(), "total_revenue");
    assert_eq!((actual[0][1].i64(), actual[0][2].i64()), (expected[0][1].i64(), expected[0][2].i64()), "orders, customers");
    let expected = pg_rows(db, &format!("WITH rfm AS ({}) SELECT customer_id, \"case\" FROM rfm ORDER BY 1", pg_rfm_sql())).await;
    let actual = rows(&lake_query(config, "SELECT customer_id, segment FROM gold.rfm_customers ORDER BY 1").await);
    assert_eq!(actual, expected, "RFM segments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_on_a_cluster_of_two_executors_equal_postgres_and_the_local_engine() {
    let cluster = Cluster::start(2, &[]).await;
    let real = northwind_database("it_cluster_real").await;
    let generated = fresh_database("it_cluster_scale10").await;
    let mut client = pg_connect(&generated).await;
    medallion::source::generator::load(&mut client, "it_cluster_scale10", 10, &indicatif::ProgressBar::hidden()).await.unwrap();
    for db in [real, generated] {
        let (local_lake, cluster_lake) = (TestLake::new(), TestLake::new());
        let local = config(&local_lake.url(), Some(&db), "2026-11-25");
        run_pipeline(&local).await.unwrap();
        let distributed = on(&config(&cluster_lake.url(), Some(&db), "2026-11-25"), &cluster);
        let reports = run_pipeline(&distributed).await.unwrap();
        let quarantined = reports.iter().map(|r| r.quarantined).sum::<u64>();
        let local_quarantined: i64 =
            rows(&lake_query(&local, "SELECT COUNT(*) FROM silver.sales_master_quarantine").await)[0][0].i64();
        assert_eq!(quarantined as i64, local_quarantined, "quarantine counts");
        assert_gold_matches_postgres(&distributed, &db).await;
        assert_same_tables(&local, &distributed).await;
    }
    // The scheduler saw the jobs: every model is a job of its own.
    let status = medallion::cluster::status::fetch("127.0.0.1", cluster.port, Duration::from_secs(2)).await.unwrap();
    assert_eq!((status.executors.len(), status.slots()), (2, 4));
    assert!(status.jobs.iter().filter(|job| job.state == "successful").count() >= 2 * 7, "{:?}", status.jobs);

    // `medallion cluster status` prints them; `sql --engine` queries through the cluster.
    let shown = medallion_command(&["cluster", "status", "--scheduler", &format!("127.0.0.1:{}", cluster.port)], &[]).output().unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success() && text.contains("2 executor(s), 4 slot(s)"), "{text}");
}

/// The version of `table`, or None when it does not exist.
async fn version(config: &Config, table: &str) -> Option<u64> {
    let lake = Lake::new(config).unwrap();
    let (layer, name) = table.split_once('.').unwrap();
    lake.existing_table(layer, name).await.unwrap().and_then(|delta| delta.version())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_of_the_cluster_killed_mid_job_finishes_the_job_or_fails_it_in_one_line_leaving_the_lake_as_it_was() {
    let db = fresh_database("it_cluster_kill").await;
    let mut client = pg_connect(&db).await;
    medallion::source::generator::load(&mut client, "it_cluster_kill", 100, &indicatif::ProgressBar::hidden()).await.unwrap();
    let lake = TestLake::new();
    let local = config(&lake.url(), Some(&db), "2026-11-25");
    let store = Lake::new(&local).unwrap();
    let source = BatchSource::from_config(&local).unwrap();
    pipeline::ingest(&local, &store, &source, &Progress::hidden()).await.unwrap();
    let models = medallion::models::ModelSet::builtin().unwrap();
    pipeline::run_models(&local, &store, &models, "silver", &Progress::hidden()).await.unwrap();
    let expected = table_rows(&local, "silver.sales_master").await;
    let refine = |cluster: &Cluster| {
        medallion_command(&["refine", "--lake", &lake.url(), "--date", "2026-11-25", "--engine", &cluster.engine_url(), "--quiet"], &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Bounded: a job the cluster never finishes nor cancels must fail the
    // test, not hang it (the command is killed after 180 s).
    let wait = |mut child: Child| {
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(180) {
                child.kill().unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let output = child.wait_with_output().unwrap();
        (output, started.elapsed())
    };

    // An executor killed with SIGKILL while refine runs.
    let mut cluster = Cluster::start(2, &[]).await;
    let before = version(&local, "silver.sales_master").await;
    let child = refine(&cluster);
    assert!(cluster.wait_for_a_running_job(Duration::from_secs(60)).await, "refine never ran a job on the cluster");
    cluster.executors[0].kill().unwrap();
    let (output, took) = tokio::task::spawn_blocking(move || wait(child)).await.unwrap();
    assert!(took < Duration::from_secs(120), "refine took {took:?} after an executor was lost");
    eprintln!("refine with an executor killed: {:?} in {took:?}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    if output.status.success() {
        // Ballista ran the lost tasks again on the other executor.
        assert_eq!(table_rows(&local, "silver.sales_master").await, expected, "silver after the retry");
    } else {
        let line = assert_one_line_failure(&output, &[]);
        assert!(line.contains("silver.sales_master") && line.contains("Job "), "{line}");
        assert_eq!(version(&local, "silver.sales_master").await, before, "nothing committed: {line}");
        // The scheduler says why it gave the job up.
        let status = medallion::cluster::status::fetch("127.0.0.1", cluster.port, Duration::from_secs(2)).await.unwrap();
        let reasons: Vec<String> = status.jobs.iter().filter_map(|job| job.reason.clone()).collect();
        assert!(!line.contains("Cancelled") || reasons.iter().any(|r| r.contains("was lost")), "{line} / {reasons:?}");
    }

    // The scheduler killed while refine runs: the client fails, nothing is written.
    let mut cluster = Cluster::start(1, &[]).await;
    let before = version(&local, "silver.sales_master").await;
    let child = refine(&cluster);
    assert!(cluster.wait_for_a_running_job(Duration::from_secs(60)).await, "refine never ran a job on the cluster");
    cluster.scheduler.as_mut().unwrap().kill().unwrap();
    let (output, took) = tokio::task::spawn_blocking(move || wait(child)).await.unwrap();
    eprintln!("refine with the scheduler killed: {:?} in {took:?}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    assert!(took < Duration::from_secs(60), "refine took {took:?} after the scheduler died");
    let line = assert_one_line_failure(&output, &[]);
    assert!(line.contains("silver.sales_master") && line.contains("scheduler"), "{line}");
    assert_eq!(version(&local, "silver.sales_master").await, before, "nothing committed: {line}");
    assert_eq!(table_rows(&local, "silver.sales_master").await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_is_not_there_or_has_no_executor_is_one_line_and_nothing_is_written() {
    let lake = TestLake::new();
    let ingest = medallion_command(&["ingest", "--lake", &lake.url(), "--from-dump", &northwind_dump(), "--quiet"], &[]).output().unwrap();
    assert!(ingest.status.success(), "{}", String::from_utf8_lossy(&ingest.stderr));
    let refine = |engine: &str| {
        let started = Instant::now();
        let output = medallion_command(&["refine", "--lake", &lake.url(), "--engine", engine, "--quiet"], &[]).output().unwrap();
        (output, started.elapsed())
    };
    let silver = std::path::Path::new(lake.dir.path()).join("silver/sales_master/_delta_log");

    let nobody = format!("ballista://127.0.0.1:{}", unused_service_port());
    let (output, took) = refine(&nobody);
    let line = assert_one_line_failure(&output, &[]);
    assert!(line.contains("does not answer") && line.contains("medallion cluster scheduler"), "{line}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(!silver.exists(), "nothing written");

    let cluster = Cluster::start(0, &[]).await;
    let (output, took) = refine(&cluster.engine_url());
    let line = assert_one_line_failure(&output, &[]);
    assert!(line.contains("no executor") && line.contains("medallion cluster executor"), "{line}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(!silver.exists(), "nothing written");

    let bad = medallion_command(&["refine", "--lake", &lake.url(), "--engine", "spark://x:1"], &[]).output().unwrap();
    let line = assert_one_line_failure(&bad, &[]);
    assert!(line.contains("--engine") && line.contains("ballista://HOST:PORT"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_read_an_s3_lake_with_their_own_credentials_and_one_without_fails_the_job_in_one_line() {
    let s3 = S3Endpoint::shared();
    let lake_url = format!("s3://silver/{}/lake", unique_name("cluster"));
    let ingest = medallion_command(&["ingest", "--lake", &lake_url, "--from-dump", &northwind_dump(), "--quiet"], &s3.env()).output().unwrap();
    assert!(ingest.status.success(), "{}", String::from_utf8_lossy(&ingest.stderr));
    let refine = |cluster: &Cluster| {
        let args = ["refine", "--lake", &lake_url, "--engine", &cluster.engine_url(), "--quiet"];
        let started = Instant::now();
        let output = medallion_command(&args, &s3.env()).output().unwrap();
        (output, started.elapsed())
    };
    let config = s3_config(&s3, &lake_url, None, "2026-11-25");

    // The executor has no AWS settings at all: the client's never travel.
    let without = Cluster::start(1, &[]).await;
    let (output, took) = refine(&without);
    let line = assert_one_line_failure(&output, &[]);
    eprintln!("refine on an executor without credentials: {line}");
    assert!(line.contains("silver.sales_master") && line.contains("could not read the lake's files"), "{line}");
    assert!(!line.contains(&s3.secret_access_key), "{line}");
    assert!(took < Duration::from_secs(120), "{took:?}");
    assert_eq!(version(&config, "silver.sales_master").await, None, "nothing written: {line}");
    drop(without);

    let with = Cluster::start(1, &s3.env()).await;
    let (output, _) = refine(&with);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // 2155 order lines in the real dump.
    let count = rows(&lake_query(&config, "SELECT COUNT(*) FROM silver.sales_master").await);
    assert_eq!(count[0][0].i64(), 2155);
}

/// A `medallion serve` process on a free port, killed when dropped.
struct ServeProcess {
    child: Child,
    addr: std::net::SocketAddr,
}

impl ServeProcess {
    /// `medallion serve --engine ENGINE` over `lake`, once it accepts connections.
    async fn start(lake: &str, engine: &str) -> ServeProcess {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", unused_service_port()).parse().unwrap();
        let mut child = serve_command(lake, engine, addr).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if child.try_wait().unwrap().is_some() {
                panic!("serve stopped: {}", String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr));
            }
            assert!(Instant::now() < deadline, "serve did not listen on {addr} within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ServeProcess { child, addr }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_command(lake: &str, engine: &str, addr: std::net::SocketAddr) -> std::process::Command {
    medallion_command(&["serve", "--lake", lake, "--addr", &addr.to_string(), "--no-pg", "--engine", engine], &[])
}

/// What `/api/sql` answers for `query`: its columns and rows.
async fn sql_rows(addr: std::net::SocketAddr, query: &str) -> (serde_json::Value, serde_json::Value) {
    let reply = crate::serve::sql(addr, serde_json::json!({ "sql": query }), "application/json").await;
    let body = reply.json();
    assert_eq!(reply.status, 200, "{query}: {body}");
    (body["columns"].clone(), body["rows"].clone())
}

/// Jobs the scheduler knows.
async fn jobs_seen(cluster: &Cluster) -> usize {
    medallion::cluster::status::fetch("127.0.0.1", cluster.port, Duration::from_secs(2)).await.unwrap().jobs.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_cluster_shows_its_executors_and_answers_sql_as_the_local_engine() {
    let mut cluster = Cluster::start(2, &[]).await;
    let (_db, lake, config) = crate::serve::northwind_lake("it_cluster_serve").await;
    let server = ServeProcess::start(&lake.url(), &cluster.engine_url()).await;

    // /api/cluster: the two executors this test started, 2 slots each.
    let reply = crate::serve::get(server.addr, "/api/cluster").await;
    let status = reply.json();
    assert_eq!(reply.status, 200, "{status}");
    assert_eq!(status["engine"], cluster.engine_url());
    assert_eq!(status["scheduler"], format!("127.0.0.1:{}", cluster.port));
    let executors = status["executors"].as_array().unwrap();
    let mut ports: Vec<u16> =
        executors.iter().map(|e| e["address"].as_str().unwrap().rsplit_once(':').unwrap().1.parse().unwrap()).collect();
    ports.sort();
    let mut launched = cluster.data_ports.clone();
    launched.sort();
    assert_eq!(ports, launched, "executors: {status}");
    assert!(executors.iter().all(|e| e["slots"] == 2 && e["id"].as_str().is_some_and(|id| !id.is_empty())), "{status}");
    assert_ne!(executors[0]["id"], executors[1]["id"]);
    assert!(executors.iter().all(|e| e["last_seen_seconds"].as_u64().is_some_and(|s| s < 10)), "heartbeats: {status}");

    // /api/sql runs on the cluster (a job more) and answers what the local engine answers.
    let query = "SELECT country, COUNT(*) AS lines, COUNT(DISTINCT order_id) AS orders, SUM(quantity) AS units, \
                 ROUND(SUM(line_total), 2) AS revenue FROM silver.sales_master GROUP BY country ORDER BY country";
    let before = jobs_seen(&cluster).await;
    let on_cluster = sql_rows(server.addr, query).await;
    assert!(jobs_seen(&cluster).await > before, "the query did not run on the cluster");
    let local = medallion::serve::start(&config, Lake::new(&config).unwrap(), medallion::live::LiveHandle::new(), crate::serve::test_options())
        .await
        .unwrap();
    let here = sql_rows(local.http_addr(), query).await;
    assert_eq!(on_cluster, here, "the cluster's answer differs from the local engine's");
    // 2155 order lines in the real Northwind.
    let lines: i64 = on_cluster.1.as_array().unwrap().iter().map(|row| row["lines"].as_i64().unwrap()).sum();
    assert_eq!(lines, 2155, "{:?}", on_cluster.1);
    // A serving view, whose live part travels with the plan.
    let view = "SELECT country, source, ROUND(revenue, 2) AS revenue, transactions FROM serving.sales_by_country ORDER BY country, source";
    assert_eq!(sql_rows(server.addr, view).await, sql_rows(local.http_addr(), view).await, "{view}");
    local.shutdown().await;

    // The dashboard's Cluster panel shows them.
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", server.addr);
    let args = vec!["--virtual-time-budget=3000".to_string(), "--timeout=8000".to_string(), "--dump-dom".to_string()];
    let output = tokio::task::spawn_blocking(move || crate::serve::chromium(profile.path(), &args, &url)).await.unwrap();
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    let shown = |attr: &str| crate::serve::data_attr(&dom, "cluster-panel", attr);
    assert_eq!(shown("engine"), Some(cluster.engine_url()), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!((shown("executors").as_deref(), shown("slots").as_deref()), (Some("2"), Some("4")));
    for executor in executors {
        assert!(dom.contains(&format!("data-executor=\"{}\"", executor["id"].as_str().unwrap())), "{executor} not on the page");
    }

    // The scheduler gone: /api/cluster says so in one line, as a bad gateway.
    cluster.scheduler.as_mut().unwrap().kill().unwrap();
    let _ = cluster.scheduler.as_mut().unwrap().wait();
    let reply = crate::serve::get(server.addr, "/api/cluster").await;
    let body = reply.json();
    assert_eq!(reply.status, 502, "{body}");
    assert_eq!(body["engine"], cluster.engine_url());
    let line = body["error"].as_str().unwrap();
    assert!(line.contains("does not answer") && !line.contains('\n'), "{line}");
}

/// The output of a command that should stop by itself, killed after 60 s.
fn finished(mut command: std::process::Command) -> std::process::Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_cluster_that_is_not_there_or_has_no_executor_stops_in_one_line() {
    let lake = TestLake::new();
    let addr = format!("127.0.0.1:{}", unused_service_port()).parse().unwrap();
    let nobody = format!("ballista://127.0.0.1:{}", unused_service_port());
    let output = finished(serve_command(&lake.url(), &nobody, addr));
    let line = assert_one_line_failure(&output, &[]);
    assert!(line.contains("does not answer") && line.contains("medallion cluster scheduler"), "{line}");

    let cluster = Cluster::start(0, &[]).await;
    let output = finished(serve_command(&lake.url(), &cluster.engine_url(), addr));
    let line = assert_one_line_failure(&output, &[]);
    assert!(line.contains("no executor") && line.contains("medallion cluster executor"), "{line}");
}

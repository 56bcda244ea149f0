//! `medallion up` as a process, on the real services: the stream, the
//! server and a schedule together, stopped by SIGTERM with nothing lost; a
//! scheduled run that fails while PostgreSQL is unreachable (through a proxy
//! the test cuts), its failure alert and its recovery alert, received by a
//! webhook receiver in the test; a freshness breach alerted once and shown
//! red in `/api/freshness`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use crate::batch::PG_LINES;
use crate::serve::get;
use crate::stream::{assert_exactly_once, brokers, create_topic, messages, send};
use crate::support::*;

/// A `medallion up` process and the dashboard address it printed.
struct Up {
    child: Child,
    http: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Up {
    /// Starts `medallion up` with `toml` as its medallion.toml and waits
    /// (60 s at most) for it to say it runs.
    fn start(toml: &str, lake: &str, database_url: &str) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("medallion.toml");
        std::fs::write(&config, toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_medallion"))
            .args(["up", "--quiet", "--config", config.to_str().unwrap(), "--lake", lake, "--database-url", database_url])
            .env_remove("DATABASE_URL")
            .env_remove("MEDALLION_LAKE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut http = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = received.recv_timeout(left).unwrap_or_else(|_| panic!("medallion up did not say it runs within 60 s"));
            if let Some(rest) = line.strip_prefix("dashboard   http://") {
                http = Some(rest.split('/').next().unwrap().parse().unwrap());
            }
            if line.starts_with("Ctrl-C or SIGTERM stops") {
                break;
            }
        }
        Up { child, http, _dir: dir }
    }

    fn http(&self) -> SocketAddr {
        self.http.expect("the server runs")
    }

    /// SIGTERM, then the exit status within `limit`.
    fn terminate(mut self, limit: Duration) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("medallion up did not stop within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Successful scheduled runs of `schedule` recorded in gold.pipeline_runs
/// (one aggregate stage per complete run).
async fn scheduled_runs(config: &medallion::config::Config, schedule: &str, status: &str) -> i64 {
    let sql = format!(
        "SELECT COUNT(DISTINCT run_id) FROM gold.pipeline_runs WHERE stage = 'aggregate' AND status = '{status}' \
         AND details LIKE '%\"schedule\":\"{schedule}\"%'"
    );
    rows(&lake_query(config, &sql).await)[0][0].i64()
}

async fn table_exists(config: &medallion::config::Config, table: &str) -> bool {
    let sql = format!("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema || '.' || table_name = '{table}'");
    rows(&lake_query(config, &sql).await)[0][0].i64() > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_streams_serves_and_runs_its_schedule_then_stops_on_sigterm_losing_nothing() {
    let topic = unique_name("it-up");
    create_topic(&topic, 1).await;
    let db = northwind_database("it_up_service").await;
    let lake = TestLake::new();
    let toml = format!(
        r#"
[stream]
brokers = "{brokers}"
topic = "{topic}"
interval = "200ms"
[serve]
addr = "127.0.0.1:0"
pg = false
[up]
grace = "25s"
[[up.schedule]]
name = "often"
every = "3s"
run = "run"
catch_up = "none"
[up.retry]
attempts = 2
backoff = "1s"
[maintenance]
optimize_every = "2s"
vacuum_every = "0s"
"#,
        brokers = brokers()
    );
    let up = Up::start(&toml, &lake.url(), &db);
    let http = up.http();
    let config = config(&lake.url(), Some(&db), "2026-11-25");

    let sent = messages(3_000, "up");
    let valid = sent.iter().filter(|s| s.counts_as.is_some()).count() as i64;
    // Sent in three parts, so the stream makes several commits that upkeep compacts.
    for part in sent.chunks(1_000) {
        send(&topic, part).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        assert_eq!(get(http, "/health").await.status, 200, "the dashboard API answers throughout");
        let status = get(http, "/api/status").await;
        assert_eq!(status.status, 200);
        let status = status.json();
        assert_eq!(status["parts"]["stream"]["state"], "running", "{status}");
        let live = get(http, "/api/live").await.json();
        let live_events: i64 = live["countries"]
            .as_array()
            .map(|countries| countries.iter().map(|c| c["nb_transactions"].as_i64().unwrap_or(0)).sum())
            .unwrap_or(0);
        let ran = if table_exists(&config, "gold.pipeline_runs").await { scheduled_runs(&config, "often", "ok").await } else { 0 };
        let compacted = status["upkeep"]["files_compacted"].as_u64().unwrap_or(0);
        if ran >= 2 && live_events == valid && compacted > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 150 s: {ran} scheduled runs, {live_events} of {valid} live events, {compacted} files compacted; {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let status = up.terminate(Duration::from_secs(30));
    assert!(status.success(), "medallion up exits 0 on SIGTERM: {status:?}");

    // The stream: every event once, gold live totals exact.
    assert_exactly_once(&config, &sent).await;
    // The schedule: each attempt recorded with its trigger; gold equals the source.
    assert!(scheduled_runs(&config, "often", "ok").await >= 2);
    let expected = pg_rows(&db, &format!("WITH lines AS ({PG_LINES}) SELECT SUM(line_total) FROM lines")).await;
    let gold = rows(&lake_query(&config, "SELECT total_revenue FROM gold.kpi_revenue ORDER BY snapshot_date DESC LIMIT 1").await);
    assert_close(gold[0][0].f64(), expected[0][0].f64(), "total_revenue of the scheduled run");
    // Upkeep compacted the stream's commits and checkpointed the table.
    let operations: Vec<String> = table_history(&config, "bronze", "sales_events").await.into_iter().map(|(_, _, op)| op).collect();
    assert!(operations.iter().any(|op| op == "OPTIMIZE"), "{operations:?}");
    let checkpoint = lake.dir.path().join("bronze/sales_events/_delta_log/_last_checkpoint");
    assert!(checkpoint.exists(), "a checkpoint of bronze.sales_events");
}

/// A TCP proxy to PostgreSQL that the test can cut: connections made while
/// it is down are closed at once.
struct PgProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
}

impl PgProxy {
    async fn start(target: SocketAddr) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        PgProxy { addr, up }
    }
}

fn alerts_of(received: &Mutex<Vec<Value>>, event: &str) -> Vec<Value> {
    received.lock().unwrap().iter().filter(|a| a["event"] == event).cloned().collect()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_schedule_is_retried_alerted_and_recovers_and_a_stale_table_is_alerted_once() {
    let db = northwind_database("it_up_alerts").await;
    let real: tokio_postgres::Config = db.parse().unwrap();
    let host = match &real.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        #[allow(unreachable_patterns)]
        _ => panic!("the test database is reached over TCP"),
    };
    let target: SocketAddr = format!("{host}:{}", real.get_ports()[0]).parse().unwrap();
    let proxy = PgProxy::start(target).await;
    let through_proxy = db.replacen(&format!("{host}:{}", target.port()), &proxy.addr.to_string(), 1);
    assert_ne!(through_proxy, db, "the URL now names the proxy");
    let (webhook, received) = json_receiver("/hook").await;

    // A table that stays stale: written once before `up` starts.
    let lake = TestLake::new();
    let config = config(&lake.url(), Some(&db), "2026-11-25");
    run_pipeline(&config).await.unwrap();

    proxy.up.store(false, Ordering::SeqCst);
    let toml = format!(
        r#"
[serve]
addr = "127.0.0.1:0"
pg = false
[up]
stream = false
grace = "20s"
[[up.schedule]]
name = "nightly"
every = "2s"
run = "ingest"
catch_up = "none"
[up.retry]
attempts = 2
backoff = "300ms"
[alerts]
webhook = "{webhook}"
[freshness]
"silver.sales_master" = {{ error_after = "1s" }}
"#
    );
    let up = Up::start(&toml, &lake.url(), &through_proxy);
    let http = up.http();

    // PostgreSQL unreachable: both attempts fail, then one failure alert with the error line.
    wait_for("a failure alert", Duration::from_secs(60), || !alerts_of(&received, "failure").is_empty()).await;
    let failure = alerts_of(&received, "failure").remove(0);
    assert_eq!(failure["pipeline"], "nightly", "{failure}");
    let error = failure["error"].as_str().unwrap_or_default().to_string();
    assert!(!error.is_empty() && !error.contains('\n'), "one error line: {failure}");
    let password = medallion::config::database_password(&db).unwrap_or_default();
    assert!(password.len() < 3 || !failure.to_string().contains(&password), "no password in an alert");
    let failed_attempts = scheduled_attempts(&config, "nightly", "failed").await;
    assert!(failed_attempts >= 2, "both attempts recorded, got {failed_attempts}");

    // PostgreSQL back: the next run succeeds and a recovery alert arrives.
    proxy.up.store(true, Ordering::SeqCst);
    wait_for("a recovery alert", Duration::from_secs(60), || !alerts_of(&received, "recovery").is_empty()).await;
    assert_eq!(alerts_of(&received, "recovery")[0]["pipeline"], "nightly");

    // silver.sales_master was written before up started and is never again:
    // past its 1 s limit it is red, alerted once however often it is checked.
    wait_for("a freshness alert", Duration::from_secs(30), || !alerts_of(&received, "freshness_breach").is_empty()).await;
    let freshness = get(http, "/api/freshness").await.json();
    let table = freshness["tables"].as_array().unwrap().iter().find(|t| t["table"] == "silver.sales_master").cloned().unwrap();
    assert_eq!((table["level"].as_str(), table["colour"].as_str()), (Some("error"), Some("red")), "{freshness}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let breaches = alerts_of(&received, "freshness_breach");
    assert_eq!(breaches.len(), 1, "one alert per breach: {breaches:?}");
    assert_eq!(breaches[0]["table"], "silver.sales_master");

    let status = up.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}

/// Attempts of `schedule` with `status`, from their recorded triggers.
async fn scheduled_attempts(config: &medallion::config::Config, schedule: &str, status: &str) -> i64 {
    let sql = format!(
        "SELECT COUNT(*) FROM gold.pipeline_runs WHERE status = '{status}' AND details LIKE '%\"schedule\":\"{schedule}\"%'"
    );
    rows(&lake_query(config, &sql).await)[0][0].i64()
}

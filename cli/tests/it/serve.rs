//! The serving layer against a lake built from the real Northwind: the API
//! equals PostgreSQL's own figures, the SQL API and the PostgreSQL endpoint
//! refuse every write, auth works on both, psql and tokio-postgres read gold
//! and live tables, and a headless Chromium shows the same KPIs as the API
//! and sees live data arrive. Servers bind 127.0.0.1 port 0.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use medallion::config::Config;
use medallion::lake::Lake;
use medallion::live::{self, CountryTotals, LiveHandle, LiveSnapshot};
use medallion::serve::{self, ServeOptions, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Order lines as the spec defines them (shared with the batch tests).
use crate::batch::PG_LINES;

/// A lake built by the batch pipeline from the real Northwind in PostgreSQL.
pub(crate) async fn northwind_lake(name: &str) -> (String, TestLake, Config) {
    let db = northwind_database(name).await;
    let lake = TestLake::new();
    let config = config(&lake.url(), Some(&db), "2026-11-25");
    run_pipeline(&config).await.unwrap();
    (db, lake, config)
}

pub(crate) fn test_options() -> ServeOptions {
    ServeOptions {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        pg_addr: Some("127.0.0.1:0".parse().unwrap()),
        refresh_interval: Duration::from_millis(200),
        sql_row_limit: 1000,
        sql_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

async fn start(config: &Config, live: LiveHandle, follow_lake_live: bool) -> Server {
    let options = ServeOptions { follow_lake_live, ..test_options() };
    serve::start(config, Lake::new(config).unwrap(), live, options).await.unwrap()
}

/// A plain HTTP/1.1 exchange (Connection: close).
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

pub(crate) async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    exchange(stream, addr, method, path, headers, body).await
}

/// One request and its reply over `stream` (plain TCP or TLS).
pub(crate) async fn exchange<S>(mut stream: S, addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Reply { status, headers: head, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else { break };
        let size = usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 4 + size..];
    }
    out
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Reply {
    http(addr, "GET", path, &[], "").await
}

pub(crate) async fn sql(addr: SocketAddr, body: Value, accept: &str) -> Reply {
    http(addr, "POST", "/api/sql", &[("Accept", accept)], &body.to_string()).await
}

fn f(value: &Value) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("not a number: {value}"))
}

fn country(name: &str, total: f64, count: i64) -> CountryTotals {
    CountryTotals { pays: name.into(), total_ventes_live: total, nb_transactions: count, last_event_time: Utc::now() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_kpis_equal_the_postgres_ground_truth() {
    let (db, _lake, config) = northwind_lake("it_serve_kpis").await;
    let server = start(&config, LiveHandle::new(), false).await;
    let addr = server.http_addr();

    let reply = get(addr, "/api/kpis").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let kpis = reply.json();
    let truth = pg_rows(&db, &format!(
        "WITH lines AS ({PG_LINES}) SELECT SUM(line_total), COUNT(DISTINCT order_id)::int8,
         COUNT(DISTINCT customer_id)::int8, SUM(line_total) / COUNT(DISTINCT order_id) FROM lines")).await;
    assert_close(f(&kpis["total_revenue"]), truth[0][0].f64(), "total_revenue");
    assert_eq!(kpis["orders"].as_i64(), Some(truth[0][1].i64()));
    assert_eq!(kpis["customers"].as_i64(), Some(truth[0][2].i64()));
    assert_close(f(&kpis["avg_order_value"]), truth[0][3].f64(), "avg_order_value");
    assert_eq!(kpis["snapshot_date"], "2026-11-25");

    let top = pg_rows(&db, &format!(
        "WITH lines AS ({PG_LINES}) SELECT country::text, SUM(line_total) AS r FROM lines GROUP BY 1 ORDER BY r DESC, 1 LIMIT 3")).await;
    let shown = kpis["top_countries"].as_array().unwrap();
    assert_eq!(shown.len(), 3);
    for (i, (s, t)) in shown.iter().zip(&top).enumerate() {
        assert_eq!(s["country"].as_str().unwrap(), t[0].text());
        assert_close(f(&s["revenue"]), t[1].f64(), "country revenue");
        assert_eq!(s["rank"].as_i64(), Some(i as i64 + 1));
    }
    let categories = pg_rows(&db, &format!(
        "WITH lines AS ({PG_LINES}) SELECT category_name::text, SUM(line_total) FROM lines GROUP BY 1")).await;
    let shown = kpis["categories"].as_array().unwrap();
    assert_eq!(shown.len(), categories.len());
    for t in &categories {
        let s = shown.iter().find(|c| c["category_name"] == t[0].text().as_str()).unwrap();
        assert_close(f(&s["revenue"]), t[1].f64(), "category revenue");
    }
    let customers: i64 = kpis["segments"].as_array().unwrap().iter().map(|s| s["customers"].as_i64().unwrap()).sum();
    assert_eq!(customers, truth[0][2].i64(), "every customer has a segment");

    // RFM: one row per customer with its scores.
    let rfm = get(addr, "/api/rfm").await.json();
    assert_eq!(rfm["customers"].as_array().unwrap().len() as i64, truth[0][2].i64());

    // The combined view: its batch part is revenue per country of the snapshot.
    let per_country = pg_rows(&db, &format!("WITH lines AS ({PG_LINES}) SELECT COUNT(DISTINCT country)::int8 FROM lines")).await;
    let combined = sql(addr, json!({"sql": "SELECT source, COUNT(*) AS n, SUM(revenue) AS r FROM serving.sales_by_country GROUP BY source"}), "application/json").await.json();
    let rows = combined["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "no live data yet: {rows:?}");
    assert_eq!(rows[0]["source"], "batch");
    assert_eq!(rows[0]["n"].as_i64(), Some(per_country[0][0].i64()));
    assert_close(f(&rows[0]["r"]), truth[0][0].f64(), "batch revenue in serving.sales_by_country");

    // Run history, catalog and metrics.
    let runs = get(addr, "/api/runs").await.json();
    let stages: Vec<&str> = runs["runs"].as_array().unwrap().iter().map(|r| r["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["aggregate", "refine", "ingest"], "newest first");
    assert!(runs["runs"].as_array().unwrap().iter().all(|r| r["status"] == "ok"));
    assert_eq!(runs["runs"][2]["details"]["tables"]["bronze.orders"], 830);
    let tables = get(addr, "/api/tables").await.json();
    let revenue = tables["tables"].as_array().unwrap().iter().find(|t| t["layer"] == "gold" && t["table"] == "kpi_revenue").unwrap();
    assert_eq!((revenue["rows"].as_i64(), revenue["version"].as_i64()), (Some(1), Some(0)));
    assert!(revenue["last_commit"].is_string());
    let metrics = get(addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for needle in ["medallion_stage_rows{stage=\"ingest\"} 3170", "medallion_stage_duration_seconds{stage=\"refine\"}",
        "medallion_stream_events_per_second 0", "medallion_table_rows{layer=\"bronze\",table=\"orders\"} 830"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_api_is_read_only_with_a_row_limit_and_a_timeout() {
    let (_db, _lake, config) = northwind_lake("it_serve_sql").await;
    let server = start(&config, LiveHandle::new(), false).await;
    let addr = server.http_addr();

    for (statement, word) in [
        ("INSERT INTO gold.kpi_revenue SELECT * FROM gold.kpi_revenue", "INSERT"),
        ("CREATE TABLE gold.copy AS SELECT * FROM gold.kpi_revenue", "CREATE TABLE"),
        ("COPY gold.kpi_revenue TO '/tmp/medallion-stolen.csv'", "COPY"),
        ("DROP TABLE gold.kpi_revenue", "DROP TABLE"),
        ("SET datafusion.execution.batch_size = 1", "SET"),
        ("DELETE FROM gold.kpi_revenue", "DELETE"),
        ("SELECT * INTO gold.copy FROM gold.kpi_revenue", "SELECT"),
    ] {
        let reply = sql(addr, json!({ "sql": statement }), "application/json").await;
        assert_eq!(reply.status, 400, "{statement}: {}", reply.text());
        let error = reply.json()["error"].as_str().unwrap().to_string();
        assert!(error.starts_with(word) && (error.contains("read-only")), "{statement}: {error}");
        assert_eq!(error.lines().count(), 1);
    }
    assert!(!std::path::Path::new("/tmp/medallion-stolen.csv").exists());
    let kpis = rows(&lake_query(&config, "SELECT COUNT(*) FROM gold.kpi_revenue").await);
    assert_eq!(kpis[0][0].i64(), 1, "nothing was written");

    // Limit: the server's cap (1000) and the request's own.
    let reply = sql(addr, json!({"sql": "SELECT * FROM generate_series(1, 5000)"}), "application/json").await.json();
    assert_eq!((reply["row_count"].as_i64(), reply["truncated"].as_bool()), (Some(1000), Some(true)));
    let reply = sql(addr, json!({"sql": "SELECT * FROM generate_series(1, 5000)", "limit": 7}), "application/json").await.json();
    assert_eq!(reply["rows"].as_array().unwrap().len(), 7);
    let reply = sql(addr, json!({"sql": "SELECT order_id FROM bronze.orders", "limit": 5000}), "application/json").await.json();
    assert_eq!((reply["row_count"].as_i64(), reply["truncated"].as_bool()), (Some(830), Some(false)));

    // Timeout: a cross join of 10^10 rows is stopped.
    let started = std::time::Instant::now();
    let reply = sql(addr, json!({"sql": "SELECT COUNT(*) FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b", "timeout_ms": 300}), "application/json").await;
    assert_eq!(reply.status, 408, "{}", reply.text());
    assert!(reply.json()["error"].as_str().unwrap().contains("300 ms"));
    assert!(started.elapsed() < Duration::from_secs(4), "stopped on time: {:?}", started.elapsed());

    // Formats by Accept.
    let csv = sql(addr, json!({"sql": "SELECT country, \"rank\" FROM gold.kpi_top_countries ORDER BY \"rank\""}), "text/csv").await;
    assert_eq!(csv.header("content-type").as_deref(), Some("text/csv; charset=utf-8"));
    let text = csv.text();
    assert_eq!(text.lines().next(), Some("country,rank"));
    assert_eq!(text.lines().count(), 4);
    let arrow = sql(addr, json!({"sql": "SELECT order_id FROM bronze.orders"}), "application/vnd.apache.arrow.stream").await;
    assert_eq!(arrow.status, 200);
    let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow.body), None).unwrap();
    let total: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(total, 830);
    let refused = sql(addr, json!({"sql": "SELECT 1"}), "application/xml").await;
    assert_eq!(refused.status, 406);

    // Bad input is a clear 400, never a stack trace.
    let reply = http(addr, "POST", "/api/sql", &[], "not json").await;
    assert_eq!(reply.status, 400);
    let reply = sql(addr, json!({"sql": "SELECT * FROM gold.nope"}), "application/json").await;
    assert_eq!(reply.status, 400);
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("nope") && !error.contains("backtrace") && error.lines().count() == 1, "{error}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guards_the_api_and_the_postgres_endpoint() {
    let (_db, _lake, mut config) = northwind_lake("it_serve_auth").await;
    let token = "T0ken-for-tests";
    config.token = Some(token.into());
    let server = start(&config, LiveHandle::new(), false).await;
    let addr = server.http_addr();

    assert_eq!(get(addr, "/health").await.status, 200, "health needs no token");
    assert_eq!(get(addr, "/").await.status, 200, "the page loads and asks for the token");
    for path in ["/api/kpis", "/api/rfm", "/api/live", "/api/tables", "/api/runs", "/metrics"] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 401, "{path}");
        assert!(!reply.text().contains(token));
        let wrong = http(addr, "GET", path, &[("Authorization", "Bearer nope")], "").await;
        assert_eq!(wrong.status, 401, "{path}");
        let right = http(addr, "GET", path, &[("Authorization", &format!("Bearer {token}"))], "").await;
        assert_eq!(right.status, 200, "{path}: {}", right.text());
    }
    let reply = sql(addr, json!({"sql": "SELECT 1"}), "application/json").await;
    assert_eq!(reply.status, 401);

    let pg = server.pg_addr().unwrap();
    let base = format!("host=127.0.0.1 port={} user=analyst dbname=lake", pg.port());
    let refused = tokio_postgres::connect(&format!("{base} password=wrong"), tokio_postgres::NoTls).await;
    assert!(refused.is_err(), "a wrong password is refused");
    let refused = tokio_postgres::connect(&base, tokio_postgres::NoTls).await;
    assert!(refused.is_err(), "no password is refused");
    let (client, connection) = tokio_postgres::connect(&format!("{base} password={token}"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client.simple_query("SELECT orders FROM gold.kpi_revenue").await.unwrap();
    assert!(rows.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("830"))));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clients_read_gold_live_and_views_and_cannot_write() {
    let (_db, _lake, config) = northwind_lake("it_serve_pgwire").await;
    let live = LiveHandle::new();
    live.publish(LiveSnapshot { countries: vec![country("France", 120.5, 3)], ..Default::default() });
    let server = start(&config, live.clone(), false).await;
    let pg = server.pg_addr().unwrap();

    let client = pg_endpoint_client(pg).await;
    // Extended protocol (prepared statements), as drivers use it.
    let row = client.query_one("SELECT orders, customers FROM gold.kpi_revenue", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (830, 89));
    let row = client.query_one("SELECT pays, total_ventes_live FROM live.sales_by_country", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, f64>(1)), ("France".to_string(), 120.5));
    live.publish(LiveSnapshot { countries: vec![country("France", 200.0, 4), country("Spain", 10.0, 1)], ..Default::default() });
    let rows = client.query("SELECT source, COUNT(*) FROM serving.sales_by_country GROUP BY source ORDER BY source", &[]).await.unwrap();
    let sources: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(sources[1], ("live".to_string(), 2), "{sources:?}");
    assert_eq!(sources[0].0, "batch");
    // Tools list tables through information_schema and pg_catalog.
    let rows = client.query("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN ('gold', 'live', 'serving')", &[]).await.unwrap();
    let names: Vec<String> = rows.iter().map(|r| format!("{}.{}", r.get::<_, String>(0), r.get::<_, String>(1))).collect();
    for expected in ["gold.kpi_revenue", "live.sales_by_country", "serving.sales_by_country"] {
        assert!(names.iter().any(|n| n == expected), "{expected} not listed: {names:?}");
    }
    client.simple_query("SET application_name = 'bi-tool'").await.expect("session settings are accepted");
    client.simple_query("SHOW application_name").await.unwrap();

    for statement in [
        "INSERT INTO gold.kpi_revenue SELECT * FROM gold.kpi_revenue",
        "CREATE TABLE gold.t AS SELECT 1",
        "DROP TABLE gold.kpi_revenue",
        "COPY gold.kpi_revenue TO '/tmp/medallion-pg-stolen.csv'",
        "DELETE FROM gold.kpi_revenue",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let err = client.simple_query(statement).await.expect_err(statement);
        let db_error = err.as_db_error().unwrap_or_else(|| panic!("{statement}: {err}"));
        assert_eq!(db_error.code().code(), "25006", "{statement}");
        let err = client.prepare(statement).await.expect_err(statement);
        assert!(err.as_db_error().is_some(), "{statement} (extended): {err}");
    }
    let row = client.query_one("SELECT COUNT(*) FROM gold.kpi_revenue", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "nothing was written");

    // psql itself.
    let output = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &pg.port().to_string(), "-U", "anyone", "-d", "lake", "-X", "-A", "-t"])
        .args(["-c", "SELECT orders FROM gold.kpi_revenue", "-c", "SELECT pays FROM live.sales_by_country ORDER BY pays", "-c", "\\dt gold.*"])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql is installed with PostgreSQL by scripts/pg.sh");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "psql failed: {}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..3], ["830", "France", "Spain"], "{text}");
    assert!(text.contains("gold|kpi_revenue|table"), "\\dt lists gold tables: {text}");
    let output = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &pg.port().to_string(), "-U", "anyone", "-d", "lake", "-X", "-c", "DROP TABLE gold.kpi_revenue"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("read-only"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_alone_follows_the_live_table_a_stream_process_writes() {
    let (_db, _lake, config) = northwind_lake("it_serve_follow").await;
    let live = LiveHandle::new();
    let server = start(&config, live.clone(), true).await;
    let addr = server.http_addr();
    let mut changes = live.subscribe();

    // Another process (the stream) persists its totals.
    let lake = Lake::new(&config).unwrap();
    let write = |countries: Vec<CountryTotals>| {
        let lake = lake.clone();
        async move {
            let table = lake.table("gold", "live_sales_by_country").await.unwrap();
            table
                .write(vec![live::sales_by_country_batch(&countries)])
                .with_save_mode(deltalake::protocol::SaveMode::Overwrite)
                .await
                .unwrap();
        }
    };
    write(vec![country("Germany", 99.5, 2), country("USA", 10.0, 1)]).await;
    tokio::time::timeout(Duration::from_secs(10), changes.changed()).await.expect("published within 10 s").unwrap();
    let reply = get(addr, "/api/live").await.json();
    assert_close(f(&reply["total_ventes_live"]), 109.5, "live total");
    assert_eq!(reply["countries"][0]["pays"], "Germany");

    // Server-sent events: the current state first, then every change.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET /api/live/stream HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let first = read_event(&mut stream).await;
    assert_close(f(&first["total_ventes_live"]), 109.5, "first event");
    write(vec![country("Germany", 150.0, 3), country("USA", 10.0, 1)]).await;
    let next = read_event(&mut stream).await;
    assert_close(f(&next["total_ventes_live"]), 160.0, "event after the new version");
    let combined = get(addr, "/api/combined").await.json();
    let germany = combined["countries"].as_array().unwrap().iter().find(|c| c["country"] == "Germany").unwrap().clone();
    assert_close(f(&germany["live_revenue"]), 150.0, "live part of the combined view");
    assert!(f(&germany["batch_revenue"]) > 200_000.0);
    server.shutdown().await;
}

/// The next `data:` payload of a server-sent event stream.
async fn read_event(stream: &mut TcpStream) -> Value {
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(start) = seen.find("data: ") {
            if let Some(end) = seen[start..].find('\n') {
                let payload = seen[start + 6..start + end].to_string();
                return serde_json::from_str(&payload).unwrap();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await.expect("an event within 10 s").unwrap();
        assert!(n > 0, "stream closed");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
}

pub(crate) fn chromium(profile: &std::path::Path, extra: &[String], url: &str) -> std::process::Output {
    let mut command = Command::new("chromium");
    command.args([
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command.args(extra).arg(url);
    command.output().expect("chromium is missing: scripts/test.sh installs Debian's chromium")
}

/// `id="<id>"` element's `data-<attr>` in a dumped DOM.
pub(crate) fn data_attr(dom: &str, id: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let tag_start = dom[..at].rfind('<')?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let key = format!("data-{attr}=\"");
    let from = tag.find(&key)? + key.len();
    Some(tag[from..from + tag[from..].find('"')?].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium_shows_the_api_figures_and_live_updates() {
    let (_db, _lake, config) = northwind_lake("it_serve_browser").await;
    let live = LiveHandle::new();
    live.publish(LiveSnapshot { countries: vec![country("France", 100.0, 1)], events_per_second: 1.0, ..Default::default() });
    let server = start(&config, live.clone(), false).await;
    let addr = server.http_addr();
    let kpis = get(addr, "/api/kpis").await.json();

    // Keep publishing while the browser runs: the page must follow.
    let publisher = {
        let live = live.clone();
        tokio::spawn(async move {
            for i in 1..=200 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                live.publish(LiveSnapshot {
                    countries: vec![country("France", 100.0 + i as f64, 1 + i), country("Spain", 50.0, 2)],
                    events_per_second: 12.5,
                    batches_committed: i as u64,
                    ..Default::default()
                });
            }
        })
    };
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}/");
    let dom_args = vec!["--virtual-time-budget=3000".to_string(), "--timeout=8000".to_string(), "--dump-dom".to_string()];
    let output = tokio::task::spawn_blocking({
        let (profile, url) = (profile.path().to_path_buf(), url.clone());
        move || chromium(&profile, &dom_args, &url)
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(dom.contains("kpi-total-revenue"), "no dashboard in the DOM: {}", String::from_utf8_lossy(&output.stderr));

    let shown = |id: &str| data_attr(&dom, id, "value").unwrap_or_else(|| panic!("{id} has no value in the DOM")).parse::<f64>().unwrap();
    assert_close(shown("kpi-total-revenue"), f(&kpis["total_revenue"]), "total revenue on the page");
    assert_close(shown("kpi-orders"), f(&kpis["orders"]), "orders on the page");
    assert_close(shown("kpi-customers"), f(&kpis["customers"]), "customers on the page");
    assert_close(shown("kpi-avg-order-value"), f(&kpis["avg_order_value"]), "average order on the page");
    let top = kpis["top_countries"][0]["country"].as_str().unwrap();
    assert!(dom.contains(&format!("data-country=\"{top}\"")), "top country {top} shown");
    let updates: u32 = data_attr(&dom, "live-total", "updates").unwrap().parse().unwrap();
    let live_total = shown("live-total");
    assert!(updates >= 2, "the live panel changed by itself (updates seen: {updates})");
    assert!(live_total > 150.0, "the live total moved past its first value: {live_total}");
    assert!(dom.contains("Spain"), "a country published later appears");
    assert_eq!(data_attr(&dom, "cluster-panel", "engine").as_deref(), Some("local"), "the engine line of a local server");
    publisher.await.unwrap();

    // A screenshot for people (in the target dir, or MEDALLION_SCREENSHOT).
    let shot = std::env::var("MEDALLION_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"));
    let shot_args = vec![
        "--window-size=1440,2300".to_string(),
        "--virtual-time-budget=3000".to_string(),
        format!("--screenshot={}", shot.display()),
    ];
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::task::spawn_blocking(move || chromium(profile.path(), &shot_args, &url)).await.unwrap();
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&output.stderr));
    println!("dashboard screenshot: {}", shot.display());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_api_reads_a_table_as_of_an_older_version() {
    let db = northwind_database("it_serve_as_of").await;
    let lake = TestLake::new();
    let first = config(&lake.url(), Some(&db), "2026-11-24");
    run_pipeline(&first).await.unwrap();
    // The version after the first date, read through the library.
    let version = Lake::new(&first).unwrap().existing_table("gold", "kpi_revenue").await.unwrap().unwrap().version().unwrap();
    let second = config(&lake.url(), Some(&db), "2026-11-25");
    run_pipeline(&second).await.unwrap();
    let server = start(&second, LiveHandle::new(), false).await;
    let addr = server.http_addr();
    let count = "SELECT count(*) AS n FROM gold.kpi_revenue";

    let now = sql(addr, json!({ "sql": count }), "application/json").await.json();
    assert_eq!(now["rows"][0]["n"], 2, "{now}");
    let then = sql(addr, json!({ "sql": count, "as_of": version.to_string() }), "application/json").await.json();
    assert_eq!(then["rows"][0]["n"], 1, "{then}");
    // The shared session still reads the newest version.
    assert_eq!(sql(addr, json!({ "sql": count }), "application/json").await.json()["rows"][0]["n"], 2);

    let bad = sql(addr, json!({ "sql": count, "as_of": "last tuesday" }), "application/json").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("neither a table version"), "{}", bad.text());
    server.shutdown().await;
}

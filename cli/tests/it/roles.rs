//! Roles and limits of the serving layer (issue 13): the PostgreSQL endpoint's
//! statement timeout and the cap on concurrent queries of both endpoints;
//! tokens with names and roles made by `medallion token create`; what each
//! role sees of the PII columns (sessions built for a role, `medallion sql
//! --role`), compared with PostgreSQL's own clear values.
//! Against a lake built from the real Northwind; servers bind port 0.

use std::time::{Duration, Instant};

use medallion::lake::Lake;
use medallion::config::Role;
use medallion::lake::session::SessionBuilder;
use medallion::live::LiveHandle;
use medallion::serve::{self, ServeOptions};
use serde_json::json;

use crate::serve::{http, northwind_lake, sql, test_options};
use crate::support::*;

/// 2155³ ≈ 10^10 rows to sum (a COUNT(*) would be answered from the
/// statistics): far longer than any timeout of these tests.
const CROSS_JOIN: &str =
    "SELECT SUM(a.quantity + b.quantity + c.quantity) FROM bronze.order_details a CROSS JOIN bronze.order_details b CROSS JOIN bronze.order_details c";

fn db_code(err: &tokio_postgres::Error) -> (String, String) {
    let db = err.as_db_error().unwrap_or_else(|| panic!("not a server error: {err}"));
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_statement_timeout_cancels_a_cross_join_and_the_query_cap_refuses_past_it() {
    let (db, _lake, config) = northwind_lake("it_gov_limits").await;
    let options = ServeOptions {
        follow_lake_live: false,
        pg_statement_timeout: Duration::from_millis(800),
        max_concurrent_queries: 1,
        ..test_options()
    };
    let server = serve::start(&config, Lake::new(&config).unwrap(), LiveHandle::new(), options).await.unwrap();
    let pg = server.pg_addr().unwrap();
    let client = pg_endpoint_client(pg).await;

    // Simple and extended protocol: cut at the configured timeout, 57014, one line.
    let started = Instant::now();
    let err = client.simple_query(CROSS_JOIN).await.expect_err("the cross join is cancelled");
    let (code, message) = db_code(&err);
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("800 ms") && message.lines().count() == 1, "{message}");
    assert!(started.elapsed() < Duration::from_secs(5), "cancelled on time: {:?}", started.elapsed());
    let started = Instant::now();
    let err = client.query(CROSS_JOIN, &[]).await.expect_err("the cross join is cancelled (extended)");
    assert_eq!(db_code(&err).0, "57014");
    assert!(started.elapsed() < Duration::from_secs(5), "cancelled on time: {:?}", started.elapsed());

    // The endpoint still answers, on the same connection and on a new one.
    let expected = pg_rows(&db, "SELECT COUNT(*) FROM orders").await;
    let row = client.query_one("SELECT COUNT(*) FROM bronze.orders", &[]).await.unwrap();
    assert_eq!(Cell::Int(row.get::<_, i64>(0)), expected[0][0]);
    let other = pg_endpoint_client(pg).await;
    let row = other.query_one("SELECT COUNT(*) FROM bronze.orders", &[]).await.unwrap();
    assert_eq!(Cell::Int(row.get::<_, i64>(0)), expected[0][0]);

    // A client's own statement_timeout can only lower the server's.
    other.simple_query("SET statement_timeout = '200ms'").await.unwrap();
    let started = Instant::now();
    let err = other.simple_query(CROSS_JOIN).await.expect_err("cancelled at the client's timeout");
    assert_eq!(db_code(&err).0, "57014");
    assert!(started.elapsed() < Duration::from_millis(750), "the client's 200 ms applied: {:?}", started.elapsed());

    // The cap (1): while the cross join holds the only slot, a second query
    // waits up to its timeout (200 ms), then is refused with one line.
    let busy = tokio::spawn(async move { client.simple_query(CROSS_JOIN).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = other.simple_query("SELECT 1").await.expect_err("no slot within 200 ms");
    let (code, message) = db_code(&err);
    assert_eq!(code, "53000", "{message}");
    assert!(message.contains("max_concurrent_queries") && message.lines().count() == 1, "{message}");
    assert_eq!(db_code(&busy.await.unwrap().unwrap_err()).0, "57014");
    // The slot is back once the cross join is cancelled.
    other.simple_query("SET statement_timeout = '0'").await.unwrap();
    let row = other.query_one("SELECT COUNT(*) FROM bronze.orders", &[]).await.unwrap();
    assert_eq!(Cell::Int(row.get::<_, i64>(0)), expected[0][0]);

    // /api/sql has its own cap of 1.
    let addr = server.http_addr();
    let long = tokio::spawn(async move { sql(addr, json!({"sql": CROSS_JOIN, "timeout_ms": 1500}), "application/json").await.status });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = sql(addr, json!({"sql": "SELECT 1", "timeout_ms": 200}), "application/json").await;
    assert_eq!(refused.status, 503);
    let error = refused.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("max_concurrent_queries") && error.lines().count() == 1, "{error}");
    assert_eq!(long.await.unwrap(), 408);
    let reply = sql(addr, json!({"sql": "SELECT COUNT(*) AS n FROM bronze.orders"}), "application/json").await.json();
    assert_eq!(Cell::Int(reply["rows"][0]["n"].as_i64().unwrap()), expected[0][0]);
    server.shutdown().await;
}

/// `medallion token create`: the token it prints and the entry for medallion.toml.
fn create_token(role: &str, name: &str) -> (String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_medallion"))
        .args(["token", "create", "--role", role, "--name", name])
        .env_remove("MEDALLION_CONFIG")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let token = text.lines().find_map(|l| l.strip_prefix("token (shown once; store it now): ")).expect(&text).to_string();
    let entry = text[text.find("[[auth.tokens]]").expect(&text)..].to_string();
    assert!(!entry.contains(&token), "the entry holds the hash, not the token");
    (token, entry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_tokens_resolve_to_their_name_and_role_over_http_and_postgres() {
    let (_db, lake, _config) = northwind_lake("it_gov_tokens").await;
    let (reader, reader_entry) = create_token("reader", "bi");
    let (analyst, analyst_entry) = create_token("analyst", "data team");
    assert_ne!(reader, analyst);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_medallion")).args(["token", "create", "--role", "boss", "--name", "x"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("reader, analyst or admin"));

    // The printed entries, pasted into medallion.toml, next to the single legacy token.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("medallion.toml");
    std::fs::write(&file, format!("lake = \"{}\"\ntoken = \"legacy-admin-token\"\n\n{reader_entry}\n{analyst_entry}", lake.url())).unwrap();
    let config = medallion::config::Config::load(medallion::config::Overrides { config_file: Some(file), ..Default::default() }).unwrap();
    let options = ServeOptions { follow_lake_live: false, ..test_options() };
    let server = serve::start(&config, Lake::new(&config).unwrap(), LiveHandle::new(), options).await.unwrap();
    let addr = server.http_addr();

    for (token, name, role) in [(&reader, "bi", "reader"), (&analyst, "data team", "analyst"), (&"legacy-admin-token".to_string(), "admin", "admin")] {
        let bearer = format!("Bearer {token}");
        let me = http(addr, "GET", "/api/me", &[("Authorization", &bearer)], "").await;
        assert_eq!(me.status, 200);
        assert_eq!((me.json()["name"].as_str(), me.json()["role"].as_str()), (Some(name), Some(role)));
        let body = json!({"sql": "SELECT COUNT(*) AS n FROM bronze.orders"}).to_string();
        let reply = http(addr, "POST", "/api/sql", &[("Authorization", &bearer)], &body).await;
        assert_eq!(reply.status, 200, "{name}");
    }
    for headers in [vec![], vec![("Authorization", "Bearer mdn_0000")], vec![("Authorization", "Bearer legacy-admin-token-")]] {
        assert_eq!(http(addr, "GET", "/api/me", &headers, "").await.status, 401);
    }

    // PostgreSQL wire: a token as the password of any user.
    let pg = server.pg_addr().unwrap();
    let base = format!("host=127.0.0.1 port={} user=whoever dbname=lake", pg.port());
    for token in [&reader, &analyst, &"legacy-admin-token".to_string()] {
        let (client, connection) = tokio_postgres::connect(&format!("{base} password={token}"), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let row = client.query_one("SELECT COUNT(*) FROM bronze.orders", &[]).await.unwrap();
        assert!(row.get::<_, i64>(0) > 0);
    }
    for password in ["wrong", &reader[..reader.len() - 1]] {
        let refused = tokio_postgres::connect(&format!("{base} password={password}"), tokio_postgres::NoTls).await;
        let err = refused.err().expect("a wrong token is refused");
        assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("28P01"), "{err}");
    }
    server.shutdown().await;
}

const PII: [&str; 6] = ["contact_name", "contact_title", "address", "postal_code", "phone", "fax"];

async fn role_rows(lake: &Lake, config: &medallion::config::Config, role: Role, sql: &str) -> Vec<Vec<Cell>> {
    let session = SessionBuilder::full(lake, config).for_role(role, &config.pii).build().await.unwrap();
    rows(&session.ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

fn sorted_counts(rows: &[Vec<Cell>]) -> Vec<Cell> {
    let mut counts: Vec<Cell> = rows.iter().map(|r| r[1].clone()).collect();
    counts.sort_by_key(|c| format!("{c:?}"));
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_masked_pii_analysts_stable_pseudonyms_and_admins_clear_text() {
    let (db, test_lake, mut config) = northwind_lake("it_gov_pii").await;
    config.pii.key = Some("a-test-pii-key".into());
    let lake = Lake::new(&config).unwrap();
    let select = format!("SELECT customer_id, {} FROM bronze.customers ORDER BY customer_id", PII.join(", "));
    let clear = pg_rows(&db, &format!("SELECT customer_id, {} FROM customers ORDER BY customer_id", PII.join(", "))).await;
    assert!(clear.len() > 80);

    // Reader: no clear value of any PII column in any row; the key column is untouched.
    let masked = role_rows(&lake, &config, Role::Reader, &select).await;
    assert_eq!(masked.len(), clear.len());
    let mut compared = 0;
    for (seen, truth) in masked.iter().zip(&clear) {
        assert_eq!(seen[0], truth[0]);
        for i in 1..seen.len() {
            match (&seen[i], &truth[i]) {
                (Cell::Null, Cell::Null) => {}
                (Cell::Text(shown), Cell::Text(value)) if value.chars().filter(|c| c.is_alphanumeric()).count() >= 3 => {
                    assert_ne!(shown, value, "{} of {:?} is shown to a reader", PII[i - 1], truth[0]);
                    assert!(shown.contains('*'), "{shown}");
                    compared += 1;
                }
                (Cell::Text(_), Cell::Text(_)) => {}
                other => panic!("{} of {:?}: {other:?}", PII[i - 1], truth[0]),
            }
        }
    }
    assert!(compared > 400, "{compared} values compared");
    // A filter on a protected column never runs on the clear value.
    let name = match &clear[0][1] { Cell::Text(name) => name.clone(), other => panic!("{other:?}") };
    let by_name = format!("SELECT COUNT(*) FROM bronze.customers WHERE contact_name = '{}'", name.replace('\'', "''"));
    assert_eq!(role_rows(&lake, &config, Role::Reader, &by_name).await[0][0], Cell::Int(0));
    assert_eq!(role_rows(&lake, &config, Role::Admin, &by_name).await[0][0], Cell::Int(1));
    // Analyst: pseudonyms, the same from two sessions (two server starts); counts by pseudonym equal counts by value.
    let first = role_rows(&lake, &config, Role::Analyst, &select).await;
    let second = role_rows(&lake, &config, Role::Analyst, &select).await;
    assert_eq!(first, second);
    for (seen, truth) in first.iter().zip(&clear) {
        for i in 1..seen.len() {
            match (&seen[i], &truth[i]) {
                (Cell::Null, Cell::Null) => {}
                (Cell::Text(shown), Cell::Text(value)) => assert!(shown.starts_with("pii_") && shown != value, "{shown}"),
                other => panic!("{other:?}"),
            }
        }
    }
    let by_title = role_rows(&lake, &config, Role::Analyst, "SELECT contact_title, COUNT(*) FROM bronze.customers GROUP BY contact_title").await;
    let truth = pg_rows(&db, "SELECT contact_title, COUNT(*) FROM customers GROUP BY contact_title").await;
    assert_eq!(sorted_counts(&by_title), sorted_counts(&truth));
    let join = "SELECT c.contact_name, COUNT(*) FROM bronze.orders o JOIN bronze.customers c ON o.customer_id = c.customer_id GROUP BY c.contact_name";
    let pg_join = "SELECT c.contact_name, COUNT(*) FROM orders o JOIN customers c ON o.customer_id = c.customer_id GROUP BY c.contact_name";
    assert_eq!(sorted_counts(&role_rows(&lake, &config, Role::Analyst, join).await), sorted_counts(&pg_rows(&db, pg_join).await));
    // Without a key analysts see what readers see.
    let mut keyless = config.clone();
    keyless.pii.key = None;
    assert_eq!(role_rows(&lake, &keyless, Role::Analyst, &select).await, masked);

    // Admin: clear text.
    assert_eq!(role_rows(&lake, &config, Role::Admin, &select).await, clear);

    // The CLI: admin by default, --role reader masks.
    let query = "SELECT contact_name FROM bronze.customers ORDER BY customer_id LIMIT 1";
    let cli = |role: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_medallion"));
        command.args(["sql", "--quiet", "--lake", &test_lake.url(), "--format", "csv", query]);
        if let Some(role) = role {
            command.args(["--role", role]);
        }
        let output = command.env_remove("DATABASE_URL").env_remove("MEDALLION_LAKE").env_remove("MEDALLION_PII_KEY").output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(cli(None).contains(&name));
    let reader = cli(Some("reader"));
    assert!(!reader.contains(&name) && reader.contains('*'), "{reader}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_each_token_its_roles_view_of_pii_over_http_and_postgres() {
    let (db, _lake, mut config) = northwind_lake("it_gov_pii_serve").await;
    config.pii.key = Some("a-test-pii-key".into());
    let (reader, analyst, admin) = ("reader-token-for-tests", "analyst-token-for-tests", "admin-token-for-tests");
    config.auth = medallion::config::AuthConfig::default()
        .with_token("bi", Role::Reader, &medallion::config::tokens::token_hash(reader))
        .unwrap()
        .with_token("data", Role::Analyst, &medallion::config::tokens::token_hash(analyst))
        .unwrap();
    config.token = Some(admin.into());
    let options = ServeOptions { follow_lake_live: false, ..test_options() };
    let server = serve::start(&config, Lake::new(&config).unwrap(), LiveHandle::new(), options).await.unwrap();
    let clear = pg_rows(&db, "SELECT contact_name, phone FROM customers ORDER BY customer_id").await;
    let text = |cell: &Cell| match cell { Cell::Text(t) => t.clone(), other => panic!("{other:?}") };
    let names: Vec<String> = clear.iter().map(|r| text(&r[0])).collect();
    let phones: Vec<String> = clear.iter().map(|r| text(&r[1])).collect();
    let query = "SELECT contact_name, phone FROM bronze.customers ORDER BY customer_id";
    let by_name = format!("SELECT COUNT(*) AS n FROM bronze.customers WHERE contact_name = '{}'", names[0].replace('\'', "''"));

    // HTTP
    let addr = server.http_addr();
    let over_http = |token: &'static str, sql: String| async move {
        let body = json!({ "sql": sql }).to_string();
        let reply = http(addr, "POST", "/api/sql", &[("Authorization", &format!("Bearer {token}"))], &body).await;
        assert_eq!(reply.status, 200);
        reply.json()["rows"].as_array().unwrap().clone()
    };
    let seen = over_http(reader, query.into()).await;
    assert_eq!(seen.len(), names.len());
    for (row, (name, phone)) in seen.iter().zip(names.iter().zip(&phones)) {
        assert!(row["contact_name"].as_str().unwrap() != name && row["phone"].as_str().unwrap() != phone, "{row}");
    }
    assert_eq!(over_http(reader, by_name.clone()).await[0]["n"].as_i64(), Some(0));
    let pseudonyms = over_http(analyst, query.into()).await;
    assert!(pseudonyms.iter().all(|r| r["contact_name"].as_str().unwrap().starts_with("pii_")));
    let clear_http = over_http(admin, query.into()).await;
    assert_eq!(clear_http.iter().map(|r| r["contact_name"].as_str().unwrap().to_string()).collect::<Vec<_>>(), names);

    // PostgreSQL wire, simple and extended protocol.
    let pg = server.pg_addr().unwrap();
    let connect = |token: &'static str| async move {
        let url = format!("host=127.0.0.1 port={} user=x dbname=lake password={token}", pg.port());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    };
    let client = connect(reader).await;
    let rows = client.query(query, &[]).await.unwrap();
    assert_eq!(rows.len(), names.len());
    for (row, name) in rows.iter().zip(&names) {
        assert_ne!(&row.get::<_, String>(0), name);
    }
    let simple = client.simple_query(query).await.unwrap();
    assert!(!simple.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if names.iter().any(|n| Some(n.as_str()) == r.get(0)))));
    assert_eq!(client.query_one(by_name.as_str(), &[]).await.unwrap().get::<_, i64>(0), 0);
    let client = connect(analyst).await;
    let rows = client.query(query, &[]).await.unwrap();
    let over_pg: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let over_api: Vec<String> = pseudonyms.iter().map(|r| r["contact_name"].as_str().unwrap().to_string()).collect();
    assert_eq!(over_pg, over_api, "the same pseudonyms on both endpoints");
    let client = connect(admin).await;
    let rows = client.query(query, &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(), names);
    server.shutdown().await;
}

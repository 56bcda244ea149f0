//! The audit log (issue 13): a scripted session of queries over HTTP (plain
//! and time travel), the PostgreSQL wire and the CLI, by tokens of three
//! roles, some failing, some refused, some timed out, and failed logins,
//! leaves exactly those rows in `audit.queries` (the expected list is
//! written here by hand, row counts from PostgreSQL); no secret presented
//! lands in it; only admins read it (HTTP, PostgreSQL, CLI, `/api/audit`).
//! Against a lake built from the real Northwind; the server binds port 0.

use std::time::Duration;

use medallion::config::{tokens::token_hash, AuthConfig, Role};
use medallion::lake::session::SessionBuilder;
use medallion::lake::Lake;
use medallion::live::LiveHandle;
use medallion::serve::{self, ServeOptions};
use medallion::tables::AUDIT_QUERIES;
use serde_json::json;

use crate::serve::{http, northwind_lake, test_options};
use crate::support::*;

const READER: &str = "reader-token-of-the-audit-test";
const ANALYST: &str = "analyst-token-of-the-audit-test";
const ADMIN: &str = "admin-token-of-the-audit-test";
const WRONG: &str = "mdn_wrong_secret_presented_42";

/// 2155³ rows to sum: far past any timeout here.
const CROSS_JOIN: &str =
    "SELECT SUM(a.quantity + b.quantity + c.quantity) FROM bronze.order_details a CROSS JOIN bronze.order_details b CROSS JOIN bronze.order_details c";

/// One expected row: token name, role, endpoint, statement, rows returned, outcome.
type Expected = (Option<&'static str>, Option<&'static str>, &'static str, Option<String>, Option<i64>, &'static str);

fn q(token: &'static str, role: &'static str, endpoint: &'static str, sql: &str, rows: Option<i64>, outcome: &'static str) -> Expected {
    (Some(token), Some(role), endpoint, Some(sql.to_string()), rows, outcome)
}

async fn post_sql(addr: std::net::SocketAddr, token: &str, body: serde_json::Value) -> crate::serve::Reply {
    http(addr, "POST", "/api/sql", &[("Authorization", &format!("Bearer {token}"))], &body.to_string()).await
}

async fn pg_client(pg: std::net::SocketAddr, token: &str) -> tokio_postgres::Client {
    let url = format!("host=127.0.0.1 port={} user=someone dbname=lake password={token}", pg.port());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

fn code(err: &tokio_postgres::Error) -> String {
    err.as_db_error().unwrap_or_else(|| panic!("not a server error: {err}")).code().code().to_string()
}

/// Every row of `audit.queries`, oldest first: token, role, endpoint,
/// statement, rows, outcome, error, duration (ms).
async fn audit_rows(lake: &Lake) -> Vec<Vec<Cell>> {
    let session = SessionBuilder::new(lake).only(&[AUDIT_QUERIES]).build().await.unwrap();
    let sql = "SELECT token_name, role, endpoint, statement, rows_returned, outcome, error, duration_ms FROM audit.queries ORDER BY query_time";
    rows(&session.ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

fn as_expected(row: &[Cell]) -> Expected {
    let text = |cell: &Cell| match cell {
        Cell::Null => None,
        Cell::Text(t) => Some(&*Box::leak(t.clone().into_boxed_str())),
        other => panic!("{other:?}"),
    };
    let rows = match &row[4] {
        Cell::Null => None,
        cell => Some(cell.i64()),
    };
    (text(&row[0]), text(&row[1]), text(&row[2]).unwrap(), text(&row[3]).map(str::to_string), rows, text(&row[5]).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_session_leaves_exactly_its_queries_in_the_audit_log_which_only_admins_read() {
    let (db, test_lake, mut config) = northwind_lake("it_audit_session").await;
    config.auth = AuthConfig::default()
        .with_token("bi", Role::Reader, &token_hash(READER))
        .unwrap()
        .with_token("data", Role::Analyst, &token_hash(ANALYST))
        .unwrap()
        .with_token("ops", Role::Admin, &token_hash(ADMIN))
        .unwrap();
    config.audit.flush_interval = Duration::from_millis(300);
    let lake = Lake::new(&config).unwrap();
    let server = serve::start(&config, lake.clone(), LiveHandle::new(), ServeOptions { follow_lake_live: false, ..test_options() })
        .await
        .unwrap();
    let (addr, pg) = (server.http_addr(), server.pg_addr().unwrap());
    let customers = pg_rows(&db, "SELECT COUNT(*) FROM customers").await[0][0].i64();
    let french = pg_rows(&db, "SELECT COUNT(*) FROM customers WHERE country = 'France'").await[0][0].i64();
    let mut expected: Vec<Expected> = Vec::new();

    // ---- HTTP /api/sql, by the three roles.
    let count_orders = "SELECT COUNT(*) AS n FROM bronze.orders";
    assert_eq!(post_sql(addr, READER, json!({ "sql": count_orders })).await.status, 200);
    expected.push(q("bi", "reader", "http", count_orders, Some(1), "ok"));
    let five = "SELECT contact_name FROM bronze.customers ORDER BY customer_id LIMIT 5";
    assert_eq!(post_sql(addr, READER, json!({ "sql": five })).await.status, 200);
    expected.push(q("bi", "reader", "http", five, Some(5), "ok"));
    let bad_column = "SELECT nope FROM bronze.orders";
    assert_eq!(post_sql(addr, READER, json!({ "sql": bad_column })).await.status, 400);
    expected.push(q("bi", "reader", "http", bad_column, None, "error"));
    let read_audit = "SELECT * FROM audit.queries";
    let refused = post_sql(addr, READER, json!({ "sql": read_audit })).await;
    assert_eq!(refused.status, 403);
    let line = refused.json()["error"].as_str().unwrap().to_string();
    assert!(line.contains("audit.queries") && line.contains("admin") && line.lines().count() == 1, "{line}");
    expected.push(q("bi", "reader", "http", read_audit, None, "refused"));
    let delete = "DELETE FROM bronze.orders";
    assert_eq!(post_sql(addr, READER, json!({ "sql": delete })).await.status, 400);
    expected.push(q("bi", "reader", "http", delete, None, "refused"));
    let in_france = "SELECT customer_id FROM bronze.customers WHERE country = 'France'";
    assert_eq!(post_sql(addr, ANALYST, json!({ "sql": in_france })).await.status, 200);
    expected.push(q("data", "analyst", "http", in_france, Some(french), "ok"));
    let count_lines = "SELECT COUNT(*) AS n FROM bronze.order_details";
    assert_eq!(post_sql(addr, ADMIN, json!({ "sql": count_lines })).await.status, 200);
    expected.push(q("ops", "admin", "http", count_lines, Some(1), "ok"));
    // Time travel: the first version of bronze.orders.
    assert_eq!(post_sql(addr, ADMIN, json!({ "sql": count_orders, "as_of": "0" })).await.status, 200);
    expected.push(q("ops", "admin", "time_travel", count_orders, Some(1), "ok"));
    assert_eq!(post_sql(addr, ADMIN, json!({ "sql": CROSS_JOIN, "timeout_ms": 300 })).await.status, 408);
    expected.push(q("ops", "admin", "http", CROSS_JOIN, None, "timeout"));

    // ---- A failed login over HTTP (recorded), a request with no token (a page before login: not recorded).
    assert_eq!(http(addr, "GET", "/api/me", &[("Authorization", &format!("Bearer {WRONG}"))], "").await.status, 401);
    expected.push((None, None, "http", None, None, "refused"));
    assert_eq!(http(addr, "GET", "/api/me", &[], "").await.status, 401);

    // ---- PostgreSQL wire: simple and extended protocol.
    let reader = pg_client(pg, READER).await;
    let count_orders_pg = "SELECT COUNT(*) FROM bronze.orders";
    reader.simple_query(count_orders_pg).await.unwrap();
    expected.push(q("bi", "reader", "pg", count_orders_pg, Some(1), "ok"));
    let names = "SELECT contact_name FROM bronze.customers";
    assert_eq!(reader.query(names, &[]).await.unwrap().len() as i64, customers);
    expected.push(q("bi", "reader", "pg", names, Some(customers), "ok"));
    let err = reader.query(read_audit, &[]).await.expect_err("a reader cannot read the audit log");
    assert_eq!(code(&err), "42501");
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(message.contains("audit.queries") && message.contains("admin"), "{message}");
    expected.push(q("bi", "reader", "pg", read_audit, None, "refused"));
    let err = reader.simple_query(read_audit).await.expect_err("not over the simple protocol either");
    assert_eq!(code(&err), "42501");
    expected.push(q("bi", "reader", "pg", read_audit, None, "refused"));
    let missing = "SELECT missing_column FROM bronze.orders";
    reader.simple_query(missing).await.expect_err("no such column");
    expected.push(q("bi", "reader", "pg", missing, None, "error"));
    let drop_table = "DROP TABLE bronze.orders";
    assert_eq!(code(&reader.simple_query(drop_table).await.expect_err("read-only")), "25006");
    expected.push(q("bi", "reader", "pg", drop_table, None, "refused"));
    let analyst = pg_client(pg, ANALYST).await;
    let ids = "SELECT customer_id FROM bronze.customers";
    assert_eq!(analyst.query(ids, &[]).await.unwrap().len() as i64, customers);
    expected.push(q("data", "analyst", "pg", ids, Some(customers), "ok"));
    let admin = pg_client(pg, ADMIN).await;
    let set = "SET statement_timeout = '300ms'";
    admin.simple_query(set).await.unwrap();
    expected.push(q("ops", "admin", "pg", set, Some(0), "ok"));
    assert_eq!(code(&admin.simple_query(CROSS_JOIN).await.expect_err("cancelled")), "57014");
    expected.push(q("ops", "admin", "pg", CROSS_JOIN, None, "timeout"));
    let wrong = format!("host=127.0.0.1 port={} user=mallory dbname=lake password={WRONG}", pg.port());
    assert!(tokio_postgres::connect(&wrong, tokio_postgres::NoTls).await.is_err());
    expected.push((None, None, "pg", None, None, "refused"));

    // ---- /api/audit: admins only; what the writer holds is included.
    for token in [READER, ANALYST] {
        let reply = http(addr, "GET", "/api/audit", &[("Authorization", &format!("Bearer {token}"))], "").await;
        assert_eq!(reply.status, 403);
        assert!(reply.json()["error"].as_str().unwrap().contains("admin"));
    }
    let reply = http(addr, "GET", "/api/audit?limit=1000", &[("Authorization", &format!("Bearer {ADMIN}"))], "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["records"].as_array().unwrap().len(), expected.len());
    let reply = http(addr, "GET", "/api/audit?token=bi&endpoint=pg&limit=2", &[("Authorization", &format!("Bearer {ADMIN}"))], "").await;
    let records = reply.json()["records"].as_array().unwrap().clone();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["statement"], drop_table, "newest first");
    assert_eq!(records[1]["statement"], missing);
    // The catalog shows the audit log to admins only.
    let listed = |token: &'static str| async move {
        let reply = http(addr, "GET", "/api/tables", &[("Authorization", &format!("Bearer {token}"))], "").await;
        reply.json()["tables"].as_array().unwrap().iter().any(|t| t["layer"] == "audit")
    };
    // (The server registers the table at its next refresh.)
    for _ in 0..50 {
        if listed(ADMIN).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed(ADMIN).await && !listed(READER).await);
    // An admin reads it over the wire (the statement is itself recorded).
    let audited = "SELECT COUNT(*) FROM audit.queries";
    assert!(admin.query_one(audited, &[]).await.unwrap().get::<_, i64>(0) > 0);
    expected.push(q("ops", "admin", "pg", audited, Some(1), "ok"));
    drop((reader, analyst, admin));
    server.shutdown().await;

    // ---- Exactly the script, in order.
    let found = audit_rows(&lake).await;
    let seen: Vec<Expected> = found.iter().map(|row| as_expected(row)).collect();
    assert_eq!(seen, expected);
    assert_eq!(expected.len(), 21, "the hand count of the script: 9 + 1 over HTTP, 10 + 1 over PostgreSQL");
    for (row, wanted) in found.iter().zip(&expected) {
        let error = &row[6];
        match wanted.5 {
            "ok" => assert_eq!(*error, Cell::Null),
            _ => assert!(matches!(error, Cell::Text(t) if !t.is_empty() && !t.contains('\n')), "{row:?}"),
        }
        assert!(row[7].f64() >= 0.0);
        if wanted.5 == "timeout" {
            assert!(row[7].f64() >= 250.0, "a timeout lasts its limit: {row:?}");
        }
    }
    let logins: Vec<&Vec<Cell>> = found.iter().filter(|r| r[0] == Cell::Null).collect();
    assert!(logins[0][6].text().contains("/api/me"), "{:?}", logins[0]);
    assert!(logins[1][6].text().contains("mallory"), "{:?}", logins[1]);
    // No secret presented or configured is in the log.
    let everything = format!("{found:?}");
    for secret in [WRONG, READER, ANALYST, ADMIN] {
        assert!(!everything.contains(secret), "{secret} is in the audit log");
    }

    // ---- The CLI: a reader is refused in one line, an admin reads the log; both recorded.
    let cli = |role: &str, query: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_medallion"))
            .args(["sql", "--quiet", "--lake", &test_lake.url(), "--format", "csv", "--role", role, query])
            .env_remove("MEDALLION_AUDIT")
            .env_remove("MEDALLION_LAKE")
            .env_remove("MEDALLION_CONFIG")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    };
    let refused = cli("reader", "SELECT * FROM audit.queries");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(stderr.contains("audit.queries") && stderr.contains("admin") && stderr.trim().lines().count() == 1, "{stderr}");
    let counted = cli("admin", "SELECT COUNT(*) AS n FROM audit.queries");
    assert!(counted.status.success(), "{}", String::from_utf8_lossy(&counted.stderr));
    let text = String::from_utf8(counted.stdout).unwrap();
    // The scripted queries plus the reader's refused CLI query just above
    // (a CLI command writes its own record before it exits).
    assert_eq!(text.lines().nth(1), Some((expected.len() + 1).to_string().as_str()), "{text}");
    let after = audit_rows(&lake).await;
    assert_eq!(after.len(), expected.len() + 2);
    let user = std::env::var("USER").unwrap_or_default();
    let cli_name = if user.is_empty() { "cli".to_string() } else { format!("cli:{user}") };
    let tail: Vec<(String, String, String, String)> =
        after[expected.len()..].iter().map(|r| (r[0].text(), r[1].text(), r[2].text(), r[5].text())).collect();
    assert_eq!(
        tail,
        [
            (cli_name.clone(), "reader".into(), "cli".into(), "refused".into()),
            (cli_name, "admin".into(), "cli".into(), "ok".into())
        ]
    );
}

//! What the serving layer lets a client run: read-only statements only.
//!
//! Statements are parsed with DataFusion's SQL parser and judged by kind,
//! never by a string prefix, so `WITH x AS (INSERT …)`, `SELECT … INTO t`
//! and `EXPLAIN ANALYZE INSERT …` are refused like a plain `INSERT`. The
//! HTTP API accepts queries and EXPLAIN; the PostgreSQL endpoint also lets
//! through what tools send to set up a session (SHOW, SET of session
//! settings, transactions, cursors), which writes nothing.

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Query, SetExpr, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

/// Checks that `sql` is exactly one read-only statement (SELECT, WITH,
/// VALUES, EXPLAIN of one of those). The error is a message for the user.
pub fn check_read_only(sql: &str) -> Result<(), String> {
    parse_read_only(sql).map(|_| ())
}

/// `check_read_only` that hands back the parsed statement (PostgreSQL
/// dialect, as the PostgreSQL endpoint parses), so the caller plans it
/// without parsing the text again.
pub fn parse_read_only(sql: &str) -> Result<DfStatement, String> {
    let mut statements = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})
        .map_err(|e| format!("cannot parse the SQL: {}", crate::error::one_line(&e.to_string())))?;
    match statements.len() {
        0 => return Err("no SQL statement given: send {\"sql\": \"SELECT ...\"}".into()),
        1 => {}
        n => return Err(format!("{n} statements given: send one SELECT, WITH or EXPLAIN statement at a time")),
    }
    let statement = statements.pop_front().expect("one statement");
    if df_statement_is_read_only(&statement) {
        Ok(statement)
    } else {
        Err(refusal(&df_keyword(&statement)))
    }
}

/// The message for a refused statement.
pub fn refusal(keyword: &str) -> String {
    if keyword == "SET" {
        return "SET of server options is not allowed: the session is shared and read-only; session settings (application_name, search_path, statement_timeout, TimeZone, DateStyle) are accepted".into();
    }
    format!("{keyword} is not allowed: the serving layer is read-only (SELECT, WITH and EXPLAIN only); change data with `medallion run` or the stream")
}

fn df_statement_is_read_only(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Statement(inner) => is_read_only_query(inner),
        DfStatement::Explain(explain) => df_statement_is_read_only(&explain.statement),
        DfStatement::CreateExternalTable(_) | DfStatement::CopyTo(_) | DfStatement::Reset(_) => false,
    }
}

fn df_keyword(statement: &DfStatement) -> String {
    match statement {
        DfStatement::Statement(inner) => keyword(inner),
        DfStatement::Explain(explain) => df_keyword(&explain.statement),
        DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE".into(),
        DfStatement::CopyTo(_) => "COPY".into(),
        DfStatement::Reset(_) => "RESET".into(),
    }
}

/// A query that reads only, or EXPLAIN of one.
pub fn is_read_only_query(statement: &Statement) -> bool {
    match statement {
        Statement::Query(query) => query_is_read_only(query),
        Statement::Explain { statement, .. } => is_read_only_query(statement),
        Statement::ExplainTable { .. } => true,
        _ => false,
    }
}

/// What the PostgreSQL endpoint accepts besides queries: statements tools
/// send to set up or end a session, none of which writes. `SET` of a
/// DataFusion option is refused: the session is shared by every client.
pub fn is_session_statement(statement: &Statement) -> bool {
    match statement {
        Statement::Set(_) => !keyword_text(statement).to_ascii_lowercase().contains("datafusion."),
        Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => true,
        _ => false,
    }
}

fn query_is_read_only(query: &Query) -> bool {
    let ctes_ok = query.with.as_ref().is_none_or(|with| with.cte_tables.iter().all(|cte| query_is_read_only(&cte.query)));
    ctes_ok && set_expr_is_read_only(&query.body)
}

fn set_expr_is_read_only(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(select) => select.into.is_none(),
        SetExpr::Query(query) => query_is_read_only(query),
        SetExpr::SetOperation { left, right, .. } => set_expr_is_read_only(left) && set_expr_is_read_only(right),
        SetExpr::Values(_) | SetExpr::Table(_) => true,
        _ => false,
    }
}

/// The statement's leading keywords, for messages (`INSERT`, `CREATE TABLE`).
pub fn keyword(statement: &Statement) -> String {
    let text = keyword_text(statement);
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    let two_word = matches!(words.first().map(|w| w.to_ascii_uppercase()).as_deref(), Some("CREATE" | "DROP" | "ALTER"));
    let taken = if two_word { words.len() } else { 1 };
    words[..taken.min(words.len())].join(" ").to_ascii_uppercase()
}

fn keyword_text(statement: &Statement) -> String {
    statement.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_explain_pass() {
        for sql in [
            "SELECT 1",
            "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
            "EXPLAIN SELECT * FROM gold.kpi_revenue",
            "EXPLAIN ANALYZE SELECT 1",
            "SELECT 1 UNION ALL SELECT 2",
            "VALUES (1), (2)",
        ] {
            assert_eq!(check_read_only(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn writes_are_refused_by_kind() {
        for (sql, word) in [
            ("INSERT INTO gold.kpi_revenue VALUES (1)", "INSERT"),
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
            ("DROP TABLE gold.kpi_revenue", "DROP TABLE"),
            ("DELETE FROM gold.kpi_revenue", "DELETE"),
            ("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/tmp/x'", "CREATE EXTERNAL TABLE"),
            ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", "INSERT"),
            ("  insert into t values (1)", "INSERT"),
        ] {
            let err = check_read_only(sql).unwrap_err();
            assert!(err.starts_with(word) && err.contains("read-only"), "{sql}: {err}");
        }
        assert!(check_read_only("SET datafusion.execution.batch_size = 1").unwrap_err().starts_with("SET of server options"));
        assert!(check_read_only("SELECT 1 INTO t").is_err());
        assert!(check_read_only("WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x").is_err());
        assert!(check_read_only("SELECT 1; DROP TABLE t").unwrap_err().contains("2 statements"));
        assert!(check_read_only("SELEC 1").unwrap_err().contains("cannot parse"));
    }
}

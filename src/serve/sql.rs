//! `POST /api/sql`: read-only SQL over every table, with a row limit and a
//! timeout, answered as JSON, CSV or Arrow IPC by the `Accept` header.
//!
//! Body: `{"sql": "SELECT ...", "limit": 100, "timeout_ms": 5000}` (limit and
//! timeout optional, capped by the server's `--sql-row-limit` and
//! `--sql-timeout`). The statement is parsed once, in the PostgreSQL dialect
//! as on the PostgreSQL endpoint, judged by kind (`readonly`) and planned
//! with DDL, DML and session statements disabled, so nothing can write. A
//! result longer than the limit is cut and flagged (`truncated` in JSON, the
//! `X-Medallion-Truncated` header otherwise). At most `max_concurrent_queries`
//! run at once; a query past the cap waits for a slot (its wait counts toward
//! its timeout), then is refused with 503. `"as_of": "12"` or
//! `"as_of": "2026-11-30T21:00:00Z"` reads the query's lake tables as they
//! were, in a session of its own. The query runs in the session of the
//! token's role (PII hidden from readers and analysts, see `lake::pii`);
//! a reader or analyst who names the audit log is refused with 403. With a
//! cluster engine (`serve --engine ballista://…`), the queries of identities
//! that see the lake in clear run on the cluster (`query_session_for`);
//! time travel and masked roles stay in this process. Every
//! query is recorded in the audit log (`crate::audit`): endpoint `http`, or
//! `time_travel` with `as_of`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use serde_json::json;

use super::readonly::parse_read_only;
use super::response::{text_response, ApiError};
use super::state::AppState;
use crate::audit::{self, Endpoint, Outcome};
use crate::config::{Identity, Role};
use crate::error::Error;
use crate::lake::history::{point_query_as_of, AsOf};
use crate::lake::session::SessionBuilder;
use crate::output;

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    limit: Option<usize>,
    timeout_ms: Option<u64>,
    /// Read the lake tables of the query as they were: a version (one
    /// table) or a time, as `medallion sql --as-of`.
    as_of: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Json,
    Csv,
    Arrow,
}

pub async fn handle(
    State(state): State<Arc<AppState>>,
    axum::Extension(identity): axum::Extension<Identity>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SqlRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("the body must be JSON like {{\"sql\": \"SELECT 1\"}}: {e}"))
    })?;
    let endpoint = if request.as_of.is_some() { Endpoint::TimeTravel } else { Endpoint::Http };
    let audit = state.audit.query(&identity, endpoint, &request.sql);
    match answer(&state, &identity, &headers, &request).await {
        Ok((response, rows)) => {
            audit.ok(rows);
            Ok(response)
        }
        Err(Failed(outcome, err)) => {
            audit.failed(outcome, err.message());
            Err(err)
        }
    }
}

/// Why a query was not answered, as the audit log records it, and what the
/// client gets.
struct Failed(Outcome, ApiError);

impl From<ApiError> for Failed {
    fn from(err: ApiError) -> Failed {
        Failed(Outcome::Error, err)
    }
}

impl From<Error> for Failed {
    fn from(err: Error) -> Failed {
        Failed(Outcome::Error, err.into())
    }
}

/// Runs the request's query for `identity`; the response and the rows it holds.
async fn answer(state: &AppState, identity: &Identity, headers: &HeaderMap, request: &SqlRequest) -> Result<(Response, u64), Failed> {
    // Parsed once: judged read-only, checked for the audit log, then planned.
    let statement =
        parse_read_only(&request.sql).map_err(|message| Failed(Outcome::Refused, ApiError::new(StatusCode::BAD_REQUEST, message)))?;
    if let Some(message) = audit::refusal_of_parsed(identity.role, &statement) {
        return Err(Failed(Outcome::Refused, ApiError::new(StatusCode::FORBIDDEN, message)));
    }
    if identity.role == Role::Admin && audit::parsed_names_audit_log(&statement) {
        state.follow_audit().await;
    }
    let answer = negotiate(headers)?;
    let max_rows = state.options.sql_row_limit;
    let limit = request.limit.unwrap_or(max_rows).min(max_rows);
    let max_time = state.options.sql_timeout;
    let timeout = request.timeout_ms.map(Duration::from_millis).unwrap_or(max_time).min(max_time);

    let started = Instant::now();
    // Waiting for a slot counts toward the query's timeout.
    let deadline = tokio::time::Instant::now() + timeout;
    let _slot = match tokio::time::timeout_at(deadline, state.sql_slots.clone().acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            return Err(Failed(
                Outcome::Refused,
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the server is already running its {} SQL queries (max_concurrent_queries) and none finished within {} ms: try again later",
                        state.options.max_concurrent_queries.max(1),
                        timeout.as_millis()
                    ),
                ),
            ))
        }
    };
    let time_travel = match &request.as_of {
        Some(as_of) => Some(session_as_of(state, identity.role, &request.sql, as_of).await?),
        None => None,
    };
    let ctx = time_travel.as_ref().unwrap_or(state.query_session_for(identity.role));
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let work = async {
        let plan = ctx.state().statement_to_plan(statement).await?;
        options.verify_plan(&plan)?;
        let frame = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        // One row past the limit tells whether the result was cut.
        let batches = frame.limit(0, Some(limit + 1))?.collect().await?;
        Ok::<_, datafusion::error::DataFusionError>((schema, batches))
    };
    let (schema, batches) = match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result.map_err(Error::from)?,
        Err(_) => {
            return Err(Failed(
                Outcome::Timeout,
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the query ran longer than {} ms and was stopped: add filters or a LIMIT", timeout.as_millis()),
                ),
            ))
        }
    };
    let (batches, truncated) = cut(batches, limit);
    let row_count: usize = batches.iter().map(|b| b.num_rows()).sum();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let mut response = match answer {
        Answer::Json => {
            let rows = output::json_rows(&batches)?;
            let columns: Vec<_> =
                schema.fields().iter().map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() })).collect();
            let body = json!({
                "columns": columns,
                "rows": rows,
                "row_count": rows.len(),
                "truncated": truncated,
                "limit": limit,
                "elapsed_ms": elapsed_ms,
            });
            axum::Json(body).into_response()
        }
        Answer::Csv => text_response(StatusCode::OK, "text/csv; charset=utf-8", output::csv(&batches, Some(schema.as_ref()))?),
        Answer::Arrow => text_response(StatusCode::OK, ARROW_STREAM, output::arrow_ipc(&schema, &batches)?),
    };
    let flag = if truncated { "true" } else { "false" };
    response.headers_mut().insert("x-medallion-truncated", HeaderValue::from_static(flag));
    Ok((response, row_count as u64))
}

/// A session of its own for a time-travel query: the lake tables `sql`
/// reads, as of `as_of` (the shared session stays at the newest versions).
/// Only lake tables can be read this way, not `live.*` or `serving.*`.
async fn session_as_of(state: &AppState, role: Role, sql: &str, as_of: &str) -> Result<Arc<SessionContext>, ApiError> {
    let bad_request = |err: Error| ApiError::new(StatusCode::BAD_REQUEST, err.to_string());
    let as_of = AsOf::parse(as_of).map_err(bad_request)?;
    let session = SessionBuilder::new(&state.lake).only(&[]).for_role(role, &state.pii).build().await?;
    match point_query_as_of(&session.ctx, &state.lake, sql, as_of).await {
        Ok(_) => Ok(Arc::new(session.ctx)),
        Err(err @ (Error::Config(_) | Error::Query(_))) => Err(bad_request(err)),
        Err(err) => Err(err.into()),
    }
}

/// The first format the client accepts, JSON by default.
fn negotiate(headers: &HeaderMap) -> Result<Answer, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Answer::Json);
    };
    for part in accept.split(',') {
        let media = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "application/json" | "*/*" | "application/*" | "" => return Ok(Answer::Json),
            "text/csv" | "text/*" => return Ok(Answer::Csv),
            ARROW_STREAM | "application/vnd.apache.arrow" => return Ok(Answer::Arrow),
            _ => {}
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        format!("cannot answer as '{accept}': accept application/json, text/csv or {ARROW_STREAM}"),
    ))
}

/// At most `limit` rows; whether rows were dropped.
fn cut(batches: Vec<RecordBatch>, limit: usize) -> (Vec<RecordBatch>, bool) {
    let mut kept = Vec::new();
    let mut left = limit;
    let mut truncated = false;
    for batch in batches {
        if batch.num_rows() <= left {
            left -= batch.num_rows();
            kept.push(batch);
        } else {
            truncated = true;
            if left > 0 {
                kept.push(batch.slice(0, left));
            }
            left = 0;
        }
    }
    (kept, truncated)
}

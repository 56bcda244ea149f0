//! The HTTP side: dashboard assets, the JSON API, server-sent events and
//! bearer-token auth.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the dashboard (HTML/CSS/JS compiled into the binary) |
//! | `GET /health` | liveness, never needs the token |
//! | `GET /api/kpis` | revenue KPIs, top countries, categories, segments (latest snapshot) |
//! | `GET /api/rfm` | RFM segments and every customer's scores |
//! | `GET /api/live` | the live state (per-country totals, events/s, lag) |
//! | `GET /api/live/stream` | the same, pushed as server-sent events on every change |
//! | `GET /api/combined` | `serving.sales_by_country`, one row per country |
//! | `GET /api/tables` | the table catalog (layer, rows, Delta version, last commit) |
//! | `GET /api/runs` | run history from `gold.pipeline_runs` |
//! | `GET /api/catalog?q=` | tables and columns with types, descriptions, rows, version (see `governance`) |
//! | `GET /api/profiles?table=` | a table's latest and previous column profiles |
//! | `GET /api/lineage` | the table graph and the silver and gold columns' lineage |
//! | `GET /api/cluster` | the engine: `local`, or a cluster's scheduler, executors and jobs (see `cluster`) |
//! | `GET /metrics` | Prometheus text |
//! | `POST /api/sql` | read-only SQL (see `sql`) |
//! | `GET /api/me` | the caller's token name and role |
//! | `GET /api/audit?token=&role=&endpoint=&outcome=&limit=` | the newest records of the audit log (admins only) |
//!
//! The auth middleware resolves the bearer token to the caller's `Identity`
//! (token name and role, see `config::auth`) and puts it into the request's
//! extensions for the handlers. A token that matches none is a failed login,
//! recorded in the audit log (the path, never the token).
//!
//! Errors are JSON `{"error": "..."}`: one line, never a stack trace.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{json, Map, Value};

use super::response::ApiError;
use super::state::AppState;
use super::{metrics, sql};
use crate::audit::{self, AuditFilter, Endpoint};
use crate::config::{Identity, Role};
use crate::error::Error;
use crate::lake::TableName;
use crate::live::LiveSnapshot;
use crate::output;
use crate::tables::{dashboard, PIPELINE_RUNS, SERVING_SALES_BY_COUNTRY};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Every route, with auth on the API.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/kpis", get(kpis))
        .route("/api/rfm", get(rfm))
        .route("/api/live", get(live))
        .route("/api/live/stream", get(live_stream))
        .route("/api/combined", get(combined))
        .route("/api/tables", get(tables))
        .route("/api/runs", get(runs))
        .route("/api/catalog", get(super::governance::catalog))
        .route("/api/profiles", get(super::governance::profiles))
        .route("/api/lineage", get(super::governance::lineage))
        .route("/api/cluster", get(super::cluster::handle))
        .route("/api/status", get(service_status))
        .route("/api/freshness", get(freshness))
        .route("/api/sql", post(sql::handle))
        .route("/api/me", get(me))
        .route("/api/audit", get(audit_records))
        .route("/metrics", get(metrics::handle))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/app.js", get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/style.css", get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }))
        .route("/health", get(health))
        .merge(api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint: see / for the dashboard and /api/* for the API") })
        .with_state(state)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Refuses API calls without a configured bearer token; puts the caller's
/// `Identity` (token name and role) into the request's extensions. An open
/// server (no token configured) treats every caller as an anonymous admin.
async fn require_token(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let presented = bearer(request.headers());
    let identity = if state.tokens.is_open() {
        Some(Identity::anonymous())
    } else {
        presented.and_then(|given| state.tokens.identify(given))
    };
    let Some(identity) = identity else {
        // A token that matches none is a failed login; no token at all is a
        // page opened before logging in, not recorded.
        if presented.is_some() {
            let what = format!("login failed on {} {}: the bearer token matches no configured token", request.method(), request.uri().path());
            state.audit.failed_login(Endpoint::Http, what);
        }
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send the header `Authorization: Bearer <token>` (MEDALLION_TOKEN or one of [[auth.tokens]])",
        )
        .into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

/// `GET /api/me`: who the token says the caller is.
async fn me(axum::Extension(identity): axum::Extension<Identity>) -> Response {
    axum::Json(json!({ "name": identity.name, "role": identity.role })).into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "uptime_seconds": state.started_at.elapsed().as_secs(),
        "auth": !state.tokens.is_open(),
    }))
    .into_response()
}

/// `GET /api/status`: what `medallion up` is doing (parts, schedules,
/// upkeep, stream lag); 404 when the server runs alone.
async fn service_status(State(state): State<Arc<AppState>>) -> Response {
    match state.service.get() {
        Some(service) => axum::Json(service.status()).into_response(),
        None => not_under_up("/api/status"),
    }
}

/// `GET /api/freshness`: every `[freshness]` table's level and age.
async fn freshness(State(state): State<Arc<AppState>>) -> Response {
    match state.service.get() {
        Some(service) => axum::Json(service.freshness()).into_response(),
        None => not_under_up("/api/freshness"),
    }
}

fn not_under_up(path: &str) -> Response {
    let message = format!("{path} is served by medallion up (this server runs alone): start it with `medallion up`");
    (StatusCode::NOT_FOUND, axum::Json(json!({ "error": message }))).into_response()
}

/// A JSON body that is already serialised.
fn json_bytes(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

async fn rows(state: &AppState, sql: &str) -> Result<Vec<Map<String, Value>>, Error> {
    output::json_rows(&state.query(sql).await?)
}

fn require(state: &AppState, table: &TableName) -> Result<(), Error> {
    if state.has_table(table) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{table} does not exist yet: build the lake first (`medallion run` or `medallion demo --no-serve`)"
        )))
    }
}

async fn kpis(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let bytes = state.cached("kpis", &dashboard::KPI_TABLES, || build_kpis(&state)).await?;
    Ok(json_bytes(bytes))
}

async fn build_kpis(state: &AppState) -> Result<Bytes, Error> {
    for table in &dashboard::KPI_TABLES {
        require(state, table)?;
    }
    let revenue = rows(state, &dashboard::revenue()).await?;
    let top = rows(state, &dashboard::top_countries()).await?;
    let categories = rows(state, &dashboard::category_sales()).await?;
    let segments = rows(state, &dashboard::segments()).await?;
    let mut body = revenue.into_iter().next().unwrap_or_default();
    body.insert("top_countries".into(), Value::from(top.into_iter().map(Value::Object).collect::<Vec<_>>()));
    body.insert("categories".into(), Value::from(categories.into_iter().map(Value::Object).collect::<Vec<_>>()));
    body.insert("segments".into(), Value::from(segments.into_iter().map(Value::Object).collect::<Vec<_>>()));
    Ok(Bytes::from(serde_json::to_vec(&body).map_err(|e| Error::other("JSON encoding", e))?))
}

async fn rfm(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let bytes = state
        .cached("rfm", &dashboard::RFM_TABLES, || async {
            for table in &dashboard::RFM_TABLES {
                require(&state, table)?;
            }
            let segments = rows(&state, &dashboard::segments()).await?;
            let customers = rows(&state, &dashboard::rfm_customers()).await?;
            let snapshot = customers.first().and_then(|c| c.get("snapshot_date").cloned()).unwrap_or(Value::Null);
            let body = json!({ "snapshot_date": snapshot, "segments": segments, "customers": customers });
            Ok(Bytes::from(body.to_string()))
        })
        .await?;
    Ok(json_bytes(bytes))
}

/// The live state as the API shows it.
pub fn live_json(snapshot: &LiveSnapshot) -> Value {
    let mut value = serde_json::to_value(snapshot).unwrap_or_else(|_| json!({}));
    // `+ 0.0` turns the empty sum (-0.0) into 0.
    let total: f64 = snapshot.countries.iter().map(|c| c.total_ventes_live).sum::<f64>() + 0.0;
    let transactions: i64 = snapshot.countries.iter().map(|c| c.nb_transactions).sum();
    value["total_ventes_live"] = json!(total);
    value["nb_transactions"] = json!(transactions);
    value["total_lag"] = json!(snapshot.lag.values().sum::<i64>());
    value
}

async fn live(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(live_json(&state.live.current())).into_response()
}

async fn live_stream(State(state): State<Arc<AppState>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.live.subscribe();
    let first = live_json(&state.live.current()).to_string();
    let stop = super::stopped(state.shutdown.subscribe());
    let updates = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.changed().await.ok()?;
        let snapshot = receiver.borrow_and_update().clone();
        Some((live_json(&snapshot).to_string(), receiver))
    });
    let events = futures::stream::once(async move { first })
        .chain(updates)
        .map(|data| Ok(Event::default().event("live").data(data)))
        .take_until(stop);
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn combined(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    if !state.has_table(&SERVING_SALES_BY_COUNTRY) {
        return Ok(axum::Json(json!({ "countries": [] })).into_response());
    }
    let countries = rows(&state, &dashboard::combined_by_country()).await?;
    Ok(axum::Json(json!({ "countries": countries })).into_response())
}

async fn tables(State(state): State<Arc<AppState>>, axum::Extension(identity): axum::Extension<Identity>) -> Response {
    axum::Json(json!({ "tables": state.catalog_for(identity.role).await })).into_response()
}

/// `GET /api/audit`: the newest records of `audit.queries` (filters
/// `token`, `role`, `endpoint`, `outcome`; `limit`, 100 by default), what the
/// writer holds included; admins only.
async fn audit_records(
    State(state): State<Arc<AppState>>,
    axum::Extension(identity): axum::Extension<Identity>,
    Query(filter): Query<AuditFilter>,
) -> Result<Response, ApiError> {
    if identity.role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("/api/audit is the audit log, readable by admin tokens only; this token's role is {}", identity.role),
        ));
    }
    if !state.audit.is_enabled() {
        return Ok(axum::Json(json!({ "enabled": false, "records": [] })).into_response());
    }
    state.audit.flush().await;
    let records = output::json_rows(&audit::recent(&state.lake, &filter).await?)?;
    Ok(axum::Json(json!({ "enabled": true, "records": records, "counts": state.audit.counts() })).into_response())
}

#[derive(serde::Deserialize)]
struct RunsQuery {
    limit: Option<usize>,
}

async fn runs(State(state): State<Arc<AppState>>, Query(query): Query<RunsQuery>) -> Result<Response, ApiError> {
    if !state.has_table(&PIPELINE_RUNS) {
        return Ok(axum::Json(json!({ "runs": [] })).into_response());
    }
    let limit = query.limit.unwrap_or(200).clamp(1, 5000);
    let mut runs = rows(&state, &dashboard::runs(limit)).await?;
    for run in runs.iter_mut() {
        if let Some(Value::String(text)) = run.get("details") {
            let parsed = serde_json::from_str(text).unwrap_or(Value::Null);
            run.insert("details".into(), parsed);
        }
    }
    Ok(axum::Json(json!({ "runs": runs })).into_response())
}


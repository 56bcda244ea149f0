//! The catalog, lineage and profile routes of the HTTP API: `GET
//! /api/catalog?q=` (tables and columns, types, descriptions, rows, Delta
//! version), `GET /api/lineage` (the table graph and the columns' lineage,
//! derived from the models' plans) and `GET /api/profiles?table=` (the latest
//! and the previous column profile of a table, from `gold.table_profiles`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::response::ApiError;
use super::state::AppState;
use crate::config::Identity;
use crate::glossary::{self, Glossary, TableState};
use crate::lake::TableName;
use crate::profiles;
use crate::tables::TABLE_PROFILES;

#[derive(serde::Deserialize)]
pub struct CatalogQuery {
    q: Option<String>,
}

/// `GET /api/catalog?q=`: every table (or those matching `q`).
pub async fn catalog(
    State(state): State<Arc<AppState>>,
    axum::Extension(identity): axum::Extension<Identity>,
    Query(query): Query<CatalogQuery>,
) -> Result<Response, ApiError> {
    let glossary = Glossary::builtin()?;
    let tables: Vec<TableState> = state
        .catalog_for(identity.role)
        .await
        .into_iter()
        .map(|info| TableState { name: TableName::owned(info.layer, info.table), rows: info.rows, version: info.version })
        .collect();
    let entries = glossary::entries(&state.ctx, &glossary, &tables, query.q.as_deref()).await;
    Ok(axum::Json(json!({ "tables": entries })).into_response())
}

/// `GET /api/lineage`: `{edges: [{from, to}], columns: {table: {fields:
/// [{name, inputs: [{table, column}]}], indirect: [...]}}}`.
pub async fn lineage(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let models = crate::models::ModelSet::load(state.models_dir.as_deref())?;
    let graph = crate::lineage::graph(&state.ctx, &models, state.date).await?;
    Ok(axum::Json(graph).into_response())
}

#[derive(serde::Deserialize)]
pub struct ProfileQuery {
    table: Option<String>,
}

/// `GET /api/profiles?table=layer.table`: `{latest, previous}` column rows;
/// without `table`, the tables that have a profile.
pub async fn profiles(State(state): State<Arc<AppState>>, Query(query): Query<ProfileQuery>) -> Result<Response, ApiError> {
    if !state.has_table(&TABLE_PROFILES) {
        return Ok(axum::Json(json!({ "tables": [], "latest": [], "previous": [] })).into_response());
    }
    let Some(table) = query.table.filter(|t| !t.trim().is_empty()) else {
        let batches = state.query(&format!("SELECT DISTINCT table_name FROM {TABLE_PROFILES} ORDER BY table_name")).await?;
        let names: Vec<serde_json::Value> =
            crate::output::json_rows(&batches)?.into_iter().filter_map(|mut row| row.remove("table_name")).collect();
        return Ok(axum::Json(json!({ "tables": names })).into_response());
    };
    if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "table must be layer.table, e.g. silver.sales_master"));
    }
    let (latest, previous) = profiles::latest_two(&state.ctx, &table).await?;
    Ok(axum::Json(json!({ "table": table, "latest": latest, "previous": previous })).into_response())
}

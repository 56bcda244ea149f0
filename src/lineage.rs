//! Table-level lineage, derived from the SQL by DataFusion's planner (never
//! written by hand): each model's rendered SQL, and each part of a serving
//! view, is planned in a session over the lake, and every table its
//! logical plan scans (subqueries and CTEs included) is an edge into the
//! model's table. The source tables feed their bronze copies.
//!
//! Column-level lineage and OpenLineage events are not built yet.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::lake::views;
use crate::models::{self, ModelSet};
use crate::source::NORTHWIND_TABLES;
use crate::tables;

/// One edge of the table graph: `from` is read to build `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

/// The tables `sql` reads, from its logical plan in `ctx`.
pub async fn tables_read(ctx: &SessionContext, what: &str, sql: &str) -> Result<BTreeSet<String>> {
    let plan = ctx.state().create_logical_plan(sql).await.map_err(|e| Error::model(what, e))?;
    let mut read = BTreeSet::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            read.insert(scan.table_name.to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| Error::model(what, e))?;
    Ok(read)
}

/// Every edge: `postgres.<table>` → `bronze.<table>`, the models' inputs →
/// their tables, the serving views' inputs → the views. `ctx` must hold the
/// tables the models read (a full session over a built lake).
pub async fn table_edges(ctx: &SessionContext, models: &ModelSet, date: NaiveDate) -> Result<Vec<Edge>> {
    let mut edges = BTreeSet::new();
    for table in NORTHWIND_TABLES {
        edges.insert(Edge { from: format!("postgres.{table}"), to: tables::bronze(table).to_string() });
    }
    for model in models.layer(crate::lake::Layer::Silver).into_iter().chain(models.layer(crate::lake::Layer::Gold)) {
        let to = model.table_name().to_string();
        for from in tables_read(ctx, &to, &models::render(model, date)?).await? {
            edges.insert(Edge { from, to: to.clone() });
        }
    }
    for (view, parts) in views::definitions() {
        let to = view.to_string();
        for part in parts {
            for from in tables_read(ctx, &to, part).await? {
                edges.insert(Edge { from, to: to.clone() });
            }
        }
    }
    Ok(edges.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::session::SessionBuilder;

    /// The edges derived from the built-in models equal the edges read off
    /// the SQL files by hand.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_derived_table_graph_equals_the_edges_read_from_the_sql() {
        let dir = tempfile::tempdir().unwrap();
        let (config, lake) = crate::pipeline::built_demo_lake(dir.path()).await;
        let ctx = SessionBuilder::full(&lake, &config).build().await.unwrap().ctx;
        let edges = table_edges(&ctx, &ModelSet::builtin().unwrap(), config.date).await.unwrap();
        let got: Vec<(&str, &str)> = edges.iter().map(|e| (e.from.as_str(), e.to.as_str())).collect();
        let mut expected = vec![
            ("postgres.orders", "bronze.orders"),
            ("postgres.order_details", "bronze.order_details"),
            ("postgres.products", "bronze.products"),
            ("postgres.customers", "bronze.customers"),
            ("postgres.employees", "bronze.employees"),
            ("postgres.categories", "bronze.categories"),
            // models/silver/sales_master.sql: five bronze tables and the country map.
            ("bronze.order_details", "silver.sales_master"),
            ("bronze.orders", "silver.sales_master"),
            ("bronze.products", "silver.sales_master"),
            ("bronze.categories", "silver.sales_master"),
            ("bronze.customers", "silver.sales_master"),
            ("ref.country_map", "silver.sales_master"),
            // models/gold/*.sql
            ("silver.sales_master", "gold.kpi_category_sales"),
            ("silver.sales_master", "gold.kpi_country_sales"),
            ("silver.sales_master", "gold.kpi_revenue"),
            ("silver.sales_master", "gold.kpi_top_countries"),
            ("silver.sales_master", "gold.rfm_customers"),
            ("gold.rfm_customers", "gold.rfm_segments"),
            // models/serving/sales_by_country.{batch,live}.sql
            ("gold.kpi_country_sales", "serving.sales_by_country"),
            ("live.sales_by_country", "serving.sales_by_country"),
        ];
        expected.sort();
        assert_eq!(got, expected);
    }
}

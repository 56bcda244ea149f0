//! Lineage, derived from the SQL by DataFusion's planner (never written by
//! hand): each model's rendered SQL, and each part of a serving view, is
//! planned in a session over the lake, and every table its logical plan
//! scans (subqueries and CTEs included) is an edge into the model's table.
//! The source tables feed their bronze copies. `columns` traces each column
//! of a model to the columns it is computed from; `openlineage` sends the
//! pipeline's runs as OpenLineage events.

pub mod columns;
pub mod openlineage;

pub use columns::tables_read;

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use datafusion::prelude::SessionContext;

use crate::error::Result;
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

/// The lineage of the lakehouse: the table graph, and each model's columns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Graph {
    pub edges: Vec<Edge>,
    /// Per model table (`gold.kpi_revenue`), its columns' lineage.
    pub columns: BTreeMap<String, columns::ColumnLineage>,
}

/// The table graph and the column lineage of every silver and gold model.
pub async fn graph(ctx: &SessionContext, models: &ModelSet, date: NaiveDate) -> Result<Graph> {
    let edges = table_edges(ctx, models, date).await?;
    let mut by_table = BTreeMap::new();
    for model in models.layer(crate::lake::Layer::Silver).into_iter().chain(models.layer(crate::lake::Layer::Gold)) {
        let name = model.table_name().to_string();
        let lineage = columns::column_lineage(ctx, &name, &models::render(model, date)?).await?;
        by_table.insert(name, lineage);
    }
    Ok(Graph { edges, columns: by_table })
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
            ("silver.sales_master", "gold.rfm_customers"),
            ("gold.rfm_customers", "gold.kpi_country_sales"),
            ("gold.rfm_customers", "gold.kpi_revenue"),
            ("gold.rfm_customers", "gold.rfm_segments"),
            ("gold.kpi_country_sales", "gold.kpi_top_countries"),
            // models/serving/sales_by_country.{batch,live}.sql
            ("gold.kpi_country_sales", "serving.sales_by_country"),
            ("live.sales_by_country", "serving.sales_by_country"),
        ];
        expected.sort();
        assert_eq!(got, expected);
    }

    /// The gold columns' inputs, read from models/gold/*.sql by hand.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gold_columns_come_from_the_columns_their_sql_names() {
        let dir = tempfile::tempdir().unwrap();
        let (config, lake) = crate::pipeline::built_demo_lake(dir.path()).await;
        let ctx = SessionBuilder::full(&lake, &config).build().await.unwrap().ctx;
        let graph = graph(&ctx, &ModelSet::builtin().unwrap(), config.date).await.unwrap();
        let inputs = |table: &str, column: &str| -> Vec<String> {
            let lineage = graph.columns.get(table).unwrap_or_else(|| panic!("no lineage for {table}"));
            let inputs = lineage.inputs_of(column).unwrap_or_else(|| panic!("{table} has no column {column}"));
            inputs.iter().map(|c| format!("{}.{}", c.table, c.column)).collect()
        };
        let silver = |c: &str| format!("silver.sales_master.{c}");
        // kpi_revenue.sql: constants, sums over gold.rfm_customers.
        let rfm = |c: &str| format!("gold.rfm_customers.{c}");
        assert!(inputs("gold.kpi_revenue", "snapshot_date").is_empty());
        assert_eq!(inputs("gold.kpi_revenue", "total_revenue"), [rfm("monetary")]);
        assert_eq!(inputs("gold.kpi_revenue", "orders"), [rfm("frequency")]);
        assert_eq!(inputs("gold.kpi_revenue", "customers"), [rfm("customer_id")]);
        assert_eq!(inputs("gold.kpi_revenue", "avg_order_value"), [rfm("frequency"), rfm("monetary")]);
        let indirect: Vec<String> =
            graph.columns["gold.kpi_revenue"].indirect.iter().map(|c| format!("{}.{}", c.table, c.column)).collect();
        assert_eq!(indirect, [rfm("snapshot_date")]);
        // kpi_category_sales.sql: sums over silver per category.
        assert_eq!(inputs("gold.kpi_category_sales", "revenue"), [silver("line_total")]);
        assert_eq!(inputs("gold.kpi_category_sales", "orders"), [silver("order_id")]);
        // kpi_top_countries.sql: the rank orders kpi_country_sales by revenue, then country.
        let countries = |c: &str| format!("gold.kpi_country_sales.{c}");
        assert_eq!(inputs("gold.kpi_top_countries", "country"), [countries("country")]);
        assert_eq!(inputs("gold.kpi_top_countries", "revenue"), [countries("revenue")]);
        assert_eq!(inputs("gold.kpi_top_countries", "rank"), [countries("country"), countries("revenue")]);
        // rfm_segments.sql: built on gold.rfm_customers; COUNT(*) reads no column.
        assert_eq!(inputs("gold.rfm_segments", "segment"), ["gold.rfm_customers.segment"]);
        assert!(inputs("gold.rfm_segments", "customers").is_empty());
        assert_eq!(inputs("gold.rfm_segments", "revenue"), ["gold.rfm_customers.monetary"]);
        assert_eq!(inputs("gold.rfm_segments", "share_of_revenue"), ["gold.rfm_customers.monetary"]);
        // Every column of every gold table has an entry.
        for (table, lineage) in &graph.columns {
            assert!(!lineage.fields.is_empty(), "{table}");
        }
    }
}

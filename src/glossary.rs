//! The catalog's business glossary: a plain-language description of every
//! table and column, kept beside the models as `<model>.docs.toml` (and
//! `models/bronze/<table>.docs.toml` for the raw tables), and the catalog
//! entries that join it with what the lake holds (types, rows, version).
//!
//! ```toml
//! description = "One row per order line, ..."
//! [columns]
//! order_id = "Order number."
//! ```
//!
//! The built-in descriptions are compiled in; with `--models DIR` a
//! `DIR/<layer>/<table>.docs.toml` replaces the built-in one of its table.
//! Columns the engine adds (bronze's `_ingestion_*`, a quarantine's failed
//! rules) and the tables Rust writes are described here, in code.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lake::{Layer, TableName};
use crate::tables;

/// The description of one table.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableDocs {
    pub description: String,
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}

/// The built-in docs files: (table, text).
const BUILTIN: &[(&str, &str)] = &[
    ("bronze.categories", include_str!("../models/bronze/categories.docs.toml")),
    ("bronze.customers", include_str!("../models/bronze/customers.docs.toml")),
    ("bronze.employees", include_str!("../models/bronze/employees.docs.toml")),
    ("bronze.order_details", include_str!("../models/bronze/order_details.docs.toml")),
    ("bronze.orders", include_str!("../models/bronze/orders.docs.toml")),
    ("bronze.products", include_str!("../models/bronze/products.docs.toml")),
    ("silver.sales_master", include_str!("../models/silver/sales_master.docs.toml")),
    ("gold.kpi_category_sales", include_str!("../models/gold/kpi_category_sales.docs.toml")),
    ("gold.kpi_country_sales", include_str!("../models/gold/kpi_country_sales.docs.toml")),
    ("gold.kpi_revenue", include_str!("../models/gold/kpi_revenue.docs.toml")),
    ("gold.kpi_top_countries", include_str!("../models/gold/kpi_top_countries.docs.toml")),
    ("gold.rfm_customers", include_str!("../models/gold/rfm_customers.docs.toml")),
    ("gold.rfm_segments", include_str!("../models/gold/rfm_segments.docs.toml")),
];

/// Columns the engine adds, whatever the table.
const ENGINE_COLUMNS: &[(&str, &str)] = &[
    ("_ingestion_timestamp", "When medallion copied the row from the source (technical)."),
    ("_ingestion_date", "Snapshot date the row was copied for; the table is partitioned by it (technical)."),
    ("_source", "Where the row was copied from: the source database and table, never a password (technical)."),
    ("failed_rule", "The first quality rule the row failed."),
    ("failed_rules", "Every quality rule the row failed, comma-separated."),
    ("snapshot_date", "Day of the data snapshot the row belongs to."),
];

/// Every table's description, by `layer.table`.
#[derive(Debug, Clone, Default)]
pub struct Glossary {
    tables: BTreeMap<String, TableDocs>,
}

fn parse(name: &str, text: &str) -> Result<TableDocs> {
    toml::from_str(text).map_err(|e| Error::Config(format!("the descriptions of {name} are not valid: {}", crate::error::one_line(&e.to_string()))))
}

impl Glossary {
    /// The built-in descriptions, plus those of the tables Rust writes.
    pub fn builtin() -> Result<Glossary> {
        let mut tables = BTreeMap::new();
        for (name, text) in BUILTIN {
            tables.insert(name.to_string(), parse(name, text)?);
        }
        for (name, docs) in engine_tables() {
            tables.insert(name.to_string(), docs);
        }
        Ok(Glossary { tables })
    }

    /// The built-in descriptions, with those of `dir` (`<layer>/*.docs.toml`)
    /// in place of the built-in ones of the same table.
    pub fn load(dir: Option<&Path>) -> Result<Glossary> {
        let mut glossary = Glossary::builtin()?;
        let Some(dir) = dir else { return Ok(glossary) };
        for layer in Layer::STORED {
            let Ok(entries) = std::fs::read_dir(dir.join(layer.as_str())) else { continue };
            for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
                let Some(file) = path.file_name().and_then(|f| f.to_str()) else { continue };
                let Some(table) = file.strip_suffix(".docs.toml") else { continue };
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
                let name = TableName::owned(layer, table).to_string();
                let docs = parse(&path.display().to_string(), &text)?;
                glossary.tables.insert(name, docs);
            }
        }
        Ok(glossary)
    }

    /// The description of `table` (`layer.table`); a quarantine table is
    /// described from its model's.
    pub fn table(&self, table: &str) -> Option<String> {
        if let Some(docs) = self.tables.get(table) {
            return Some(docs.description.clone());
        }
        let base = table.strip_suffix(crate::models::QUARANTINE_SUFFIX)?;
        self.tables.get(base).map(|_| format!("Rows of {base} that failed a quality rule, with the rules they failed."))
    }

    /// The description of a column of `table`.
    pub fn column(&self, table: &str, column: &str) -> Option<String> {
        let own = |name: &str| self.tables.get(name).and_then(|d| d.columns.get(column)).cloned();
        own(table)
            .or_else(|| table.strip_suffix(crate::models::QUARANTINE_SUFFIX).and_then(own))
            .or_else(|| ENGINE_COLUMNS.iter().find(|(name, _)| *name == column).map(|(_, text)| text.to_string()))
    }
}

/// One column of a catalog entry.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogColumn {
    pub name: String,
    pub data_type: String,
    pub description: Option<String>,
}

/// One table of the catalog: what it is, what it holds, where it stands.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogTable {
    pub table: String,
    /// The layer that owns the table (bronze, silver, gold, ...).
    pub layer: String,
    pub description: Option<String>,
    pub rows: Option<u64>,
    pub version: Option<i64>,
    pub columns: Vec<CatalogColumn>,
}

/// A table as the lake shows it: name, rows, Delta version.
pub struct TableState {
    pub name: TableName,
    pub rows: Option<u64>,
    pub version: Option<i64>,
}

/// The catalog entries of `tables` (registered in `ctx`, for their column
/// types), with the glossary's descriptions. With `query`, only the tables
/// whose name or description contains it (any case), or, of the others,
/// only the columns whose name or description does.
pub async fn entries(ctx: &datafusion::prelude::SessionContext, glossary: &Glossary, tables: &[TableState], query: Option<&str>) -> Vec<CatalogTable> {
    let query = query.map(|q| q.trim().to_lowercase()).filter(|q| !q.is_empty());
    let hit = |text: &str| query.as_deref().is_none_or(|q| text.to_lowercase().contains(q));
    let mut out = Vec::new();
    for state in tables {
        let name = state.name.to_string();
        let Ok(frame) = ctx.table(name.as_str()).await else { continue };
        let description = glossary.table(&name);
        let columns: Vec<CatalogColumn> = frame
            .schema()
            .fields()
            .iter()
            .map(|f| CatalogColumn {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                description: glossary.column(&name, f.name()),
            })
            .collect();
        let table_hit = hit(&name) || description.as_deref().is_some_and(hit);
        let columns: Vec<CatalogColumn> = if table_hit {
            columns
        } else {
            columns.into_iter().filter(|c| hit(&c.name) || c.description.as_deref().is_some_and(hit)).collect()
        };
        if !table_hit && columns.is_empty() {
            continue;
        }
        out.push(CatalogTable {
            table: name,
            layer: state.name.layer.as_str().to_string(),
            description,
            rows: state.rows,
            version: state.version,
            columns,
        });
    }
    out
}

/// Descriptions of the tables Rust writes (their columns come from their
/// contracts in `tables`).
fn engine_tables() -> Vec<(String, TableDocs)> {
    let docs = |description: &str, columns: &[(&str, &str)]| TableDocs {
        description: description.to_string(),
        columns: columns.iter().map(|(c, d)| (c.to_string(), d.to_string())).collect(),
    };
    vec![
        (
            tables::PIPELINE_RUNS.to_string(),
            docs(
                "Run history: one row per stage (ingest, refine, aggregate, stream) of every command, with its outcome.",
                &[
                    ("run_id", "Identifier shared by the stages of one command."),
                    ("command", "The command that ran: run, ingest, refine, aggregate or stream."),
                    ("stage", "The stage of the command."),
                    ("started_at", "When the stage started."),
                    ("duration_ms", "How long the stage took, in milliseconds."),
                    ("status", "ok or failed."),
                    ("rows", "Rows written (events consumed, for the stream)."),
                    ("quarantined", "Rows set aside by quality rules (rejected messages, for the stream)."),
                    ("details", "More about the stage, as JSON (tables written, rules failed, schedule)."),
                    ("error", "Why a failed stage failed, in one line."),
                ],
            ),
        ),
        (
            tables::TABLE_PROFILES.to_string(),
            docs(
                "Data profiles: statistics of every column of each profiled table's newest snapshot, one row per table and column.",
                &[
                    ("table_name", "The table profiled."),
                    ("table_snapshot", "The snapshot (partition) of that table that was profiled."),
                    ("table_version", "The table's Delta version when profiled."),
                    ("ordinal", "Position of the column in the table, from 0."),
                    ("column_name", "The column profiled."),
                    ("data_type", "The column's data type."),
                    ("row_count", "Rows in the snapshot."),
                    ("null_count", "Rows where the column is empty."),
                    ("distinct_count", "Number of different values."),
                    ("distinct_method", "exact, or approximate for large tables."),
                    ("min_value", "Smallest value, as text."),
                    ("max_value", "Largest value, as text."),
                    ("mean", "Average, for numbers."),
                    ("stddev", "Standard deviation, for numbers."),
                    ("top_values", "The five most frequent values with their counts, as JSON."),
                    ("min_length", "Shortest text, in characters."),
                    ("max_length", "Longest text, in characters."),
                    ("profiled_at", "When the profile was computed."),
                ],
            ),
        ),
        (
            tables::AUDIT_QUERIES.to_string(),
            docs(
                "The audit log: every query of /api/sql, time travel, the PostgreSQL endpoint and medallion sql, and every failed login (admins only).",
                &[
                    ("query_time", "When the query arrived (the failed login happened)."),
                    ("token_name", "The name of the token that sent it (cli:<user> for medallion sql); empty for a failed login."),
                    ("role", "The token's role: reader, analyst or admin."),
                    ("endpoint", "http (/api/sql), time_travel (/api/sql with as_of), pg (PostgreSQL wire) or cli (medallion sql)."),
                    ("statement", "The statement as the client sent it; empty for a failed login."),
                    ("rows_returned", "Rows the client got; empty when it got no result."),
                    ("duration_ms", "From arrival to the last row sent, in milliseconds."),
                    ("outcome", "ok, error, refused (not read-only, not for this role, no free slot, failed login) or timeout."),
                    ("error", "The one-line error the client got."),
                    ("query_date", "The day of query_time (the partition)."),
                ],
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the built-in Northwind into a fresh lake and checks that every
    /// column of every bronze table and built-in model's table (their real
    /// output schemas) has a description, so a new column without one fails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_column_of_every_builtin_table_is_described() {
        let dir = tempfile::tempdir().unwrap();
        let (_config, lake) = crate::pipeline::built_demo_lake(dir.path()).await;
        let glossary = Glossary::builtin().unwrap();
        let every = lake.every_table().await.unwrap();
        let ctx = crate::lake::session::SessionBuilder::new(&lake).build().await.unwrap().ctx;
        let columns = |name: String| {
            let ctx = ctx.clone();
            async move {
                let frame = ctx.table(name.as_str()).await.unwrap();
                frame.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<String>>()
            }
        };
        let models = crate::models::ModelSet::builtin().unwrap();
        let mut expected: Vec<String> = models.table_names();
        expected.extend(crate::source::NORTHWIND_TABLES.iter().map(|t| tables::bronze(t).to_string()));
        expected.push(tables::TABLE_PROFILES.to_string());
        expected.push(tables::PIPELINE_RUNS.to_string());
        let mut missing = Vec::new();
        for name in &expected {
            assert!(every.iter().any(|t| t.to_string() == *name), "{name} was not built");
            if glossary.table(name).is_none_or(|d| d.trim().is_empty()) {
                missing.push(name.clone());
            }
            for column in columns(name.clone()).await {
                if glossary.column(name, &column).is_none_or(|d| d.trim().is_empty()) {
                    missing.push(format!("{name}.{column}"));
                }
            }
        }
        assert!(missing.is_empty(), "no description for: {missing:?}");
        // Descriptions of columns a table does not have are stale.
        for (name, docs) in &glossary.tables {
            if !every.iter().any(|t| t.to_string() == *name) {
                continue;
            }
            let have = columns(name.clone()).await;
            for column in docs.columns.keys() {
                assert!(have.contains(column), "{name} has no column {column}");
            }
        }
    }

    #[test]
    fn a_docs_file_of_the_models_folder_replaces_the_builtin_one_and_bad_ones_say_where() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("gold")).unwrap();
        std::fs::write(dir.path().join("gold/kpi_revenue.docs.toml"), "description = \"Mine\"\n[columns]\norders = \"N\"\n").unwrap();
        let glossary = Glossary::load(Some(dir.path())).unwrap();
        assert_eq!(glossary.table("gold.kpi_revenue").unwrap(), "Mine");
        assert_eq!(glossary.column("gold.kpi_revenue", "orders").unwrap(), "N");
        assert!(glossary.table("silver.sales_master_quarantine").unwrap().contains("silver.sales_master"));
        assert_eq!(glossary.column("silver.sales_master_quarantine", "quantity"), glossary.column("silver.sales_master", "quantity"));
        std::fs::write(dir.path().join("gold/kpi_revenue.docs.toml"), "descripton = \"typo\"\n").unwrap();
        let err = Glossary::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("kpi_revenue.docs.toml") && !err.contains('\n'), "{err}");
    }
}

//! SQL models: the business rules of silver and gold, as SQL files run by
//! DataFusion and materialised as Delta tables (dbt's convention).
//!
//! A model is `models/<layer>/<name>.sql`, optionally with
//! `<name>.expectations.toml` beside it (see `quality`). Models of a layer run
//! in file-name order, so a model may read one that sorts before it. The
//! built-in models are compiled into the binary; `--models DIR` (or
//! `models_dir` in medallion.toml) runs the files of DIR instead, so analysts
//! change rules without rebuilding. `{{ snapshot_date }}` in a model becomes
//! the date being built. To add a model, drop a SQL file in the layer folder.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use indicatif::ProgressBar;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::{catalog, Lake, PartitionWrite, Rows};
use crate::quality::{self, Expectation, OnFail};

/// The partition column of silver and gold tables.
pub const SNAPSHOT_COLUMN: &str = "snapshot_date";

/// The built-in models: (layer, name, sql, expectations).
const BUILTIN: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "silver",
        "sales_master",
        include_str!("../../models/silver/sales_master.sql"),
        Some(include_str!("../../models/silver/sales_master.expectations.toml")),
    ),
    ("gold", "kpi_category_sales", include_str!("../../models/gold/kpi_category_sales.sql"), None),
    ("gold", "kpi_country_sales", include_str!("../../models/gold/kpi_country_sales.sql"), None),
    ("gold", "kpi_revenue", include_str!("../../models/gold/kpi_revenue.sql"), None),
    ("gold", "kpi_top_countries", include_str!("../../models/gold/kpi_top_countries.sql"), None),
    ("gold", "rfm_customers", include_str!("../../models/gold/rfm_customers.sql"), None),
    ("gold", "rfm_segments", include_str!("../../models/gold/rfm_segments.sql"), None),
];

/// One model.
#[derive(Debug, Clone)]
pub struct Model {
    pub layer: String,
    pub name: String,
    pub sql: String,
    pub expectations: Vec<Expectation>,
}

impl Model {
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.layer, self.name)
    }
}

/// All models, in run order.
#[derive(Debug, Clone)]
pub struct ModelSet {
    models: Vec<Model>,
}

impl ModelSet {
    /// The models of `dir`, or the built-in ones.
    pub fn load(dir: Option<&Path>) -> Result<ModelSet> {
        match dir {
            Some(dir) => ModelSet::from_dir(dir),
            None => ModelSet::builtin(),
        }
    }

    pub fn builtin() -> Result<ModelSet> {
        let mut models = Vec::new();
        for (layer, name, sql, expectations) in BUILTIN {
            let qualified = format!("{layer}.{name}");
            models.push(Model {
                layer: layer.to_string(),
                name: name.to_string(),
                sql: sql.to_string(),
                expectations: match expectations {
                    Some(text) => quality::parse_expectations(&qualified, text)?,
                    None => Vec::new(),
                },
            });
        }
        Ok(ModelSet { models })
    }

    /// Reads `<dir>/silver/*.sql` and `<dir>/gold/*.sql`.
    pub fn from_dir(dir: &Path) -> Result<ModelSet> {
        let mut models = Vec::new();
        for layer in ["silver", "gold"] {
            let folder = dir.join(layer);
            let entries = std::fs::read_dir(&folder).map_err(|e| {
                Error::Config(format!("cannot read models folder {}: {e}", folder.display()))
            })?;
            let mut files: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .collect();
            files.sort();
            for file in files {
                let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                let read = |path: &Path| {
                    std::fs::read_to_string(path)
                        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
                };
                let sql = read(&file)?;
                let rules_file = folder.join(format!("{name}.expectations.toml"));
                let expectations = if rules_file.exists() {
                    quality::parse_expectations(&format!("{layer}.{name}"), &read(&rules_file)?)?
                } else {
                    Vec::new()
                };
                models.push(Model { layer: layer.to_string(), name, sql, expectations });
            }
        }
        Ok(ModelSet { models })
    }

    /// The models of one layer, in run order.
    pub fn layer(&self, layer: &str) -> Vec<&Model> {
        self.models.iter().filter(|m| m.layer == layer).collect()
    }
}

/// What materialising one model did.
#[derive(Debug, Clone, Default)]
pub struct ModelOutcome {
    pub table: String,
    pub rows: u64,
    /// Failures per rule (a row failing two rules counts in both).
    pub failures_by_rule: BTreeMap<String, u64>,
    /// Rows written to the quarantine table.
    pub quarantined: u64,
}

/// Substitutes `{{ snapshot_date }}`.
pub fn render(model: &Model, date: NaiveDate) -> Result<String> {
    let literal = format!("DATE '{date}'");
    let sql = model.sql.replace("{{ snapshot_date }}", &literal).replace("{{snapshot_date}}", &literal);
    if let Some(start) = sql.find("{{") {
        let snippet: String = sql[start..].chars().take(30).collect();
        return Err(Error::model(model.qualified_name(), format!("unknown template variable near '{snippet}' (only {{{{ snapshot_date }}}} exists)")));
    }
    Ok(sql)
}

/// Registers configuration-driven reference tables (`ref.country_map`).
pub fn register_reference_tables(ctx: &SessionContext, config: &Config) -> Result<()> {
    let lookup = config.countries.lookup();
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, false),
    ]));
    let keys: Vec<&str> = lookup.keys().map(String::as_str).collect();
    let countries: Vec<&str> = lookup.values().map(String::as_str).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(keys)), Arc::new(StringArray::from(countries))],
    )?;
    let table = MemTable::try_new(schema, vec![vec![batch]])?;
    ctx.deregister_table("ref.country_map")?;
    ctx.register_table("ref.country_map", Arc::new(table))?;
    Ok(())
}

/// Runs every model of `layer` for `date`, writing each table's partition.
pub async fn run_layer(
    ctx: &SessionContext,
    lake: &Lake,
    models: &ModelSet,
    layer: &str,
    date: NaiveDate,
    progress: &ProgressBar,
) -> Result<Vec<ModelOutcome>> {
    let layer_models = models.layer(layer);
    progress.set_length(layer_models.len() as u64);
    let mut outcomes = Vec::new();
    for model in layer_models {
        progress.set_message(model.qualified_name());
        let outcome = materialise(ctx, lake, model, date).await?;
        // Later models of the layer may read this one: show them the new version.
        catalog::register_table(ctx, lake, &model.layer, &model.name).await?;
        outcomes.push(outcome);
        progress.inc(1);
    }
    Ok(outcomes)
}

/// Runs one model and writes its partition (and its quarantine).
async fn materialise(ctx: &SessionContext, lake: &Lake, model: &Model, date: NaiveDate) -> Result<ModelOutcome> {
    let sql = render(model, date)?;
    // Planned as a subquery each time (not a registered view), so the
    // optimiser sees through it: filters and projections reach the scans.
    let candidate = format!("(\n{sql}\n) AS candidate");
    write_checked(ctx, lake, model, date, &candidate).await
}

async fn write_checked(
    ctx: &SessionContext,
    lake: &Lake,
    model: &Model,
    date: NaiveDate,
    candidate: &str,
) -> Result<ModelOutcome> {
    let name = model.qualified_name();
    let plan = |sql: String| {
        let name = name.clone();
        async move { ctx.sql(&sql).await.map_err(|e| Error::model(&name, e)) }
    };
    let rules = &model.expectations;

    // 1. Count: rows passing, failures per rule. A fail-the-run rule stops
    //    here, before anything is written.
    let counts = plan(quality::count_failures_sql(rules, candidate)).await?.collect().await.map_err(|e| Error::model(&name, e))?;
    let count_of = |column: &str| {
        counts
            .first()
            .and_then(|b| b.column_by_name(column))
            .and_then(|c| c.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>())
            .map(|a| if a.is_empty() || a.is_null(0) { 0 } else { a.value(0) as u64 })
            .unwrap_or(0)
    };
    let mut failures_by_rule = BTreeMap::new();
    for rule in rules {
        let failed = count_of(&rule.name);
        if failed > 0 && rule.on_fail == OnFail::Fail {
            return Err(Error::ExpectationFailed { model: name, rule: rule.name.clone(), rows: failed });
        }
        failures_by_rule.insert(rule.name.clone(), failed);
    }
    let rows = count_of(quality::PASSING_ROWS);

    // 2. The passing rows, streamed into the table (technical `_` columns dropped).
    let output_columns: Vec<String> = plan(format!("SELECT * FROM {candidate}"))
        .await?
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !n.starts_with('_'))
        .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
        .collect();
    let columns = output_columns.join(", ");
    let passing = quality::all_pass_predicate(rules);
    let started = std::time::Instant::now();
    let good = plan(format!("SELECT {columns} FROM {candidate} WHERE {passing}")).await?;
    lake.replace_partition(PartitionWrite {
        layer: &model.layer,
        table: &model.name,
        partition_column: SNAPSHOT_COLUMN,
        date,
        rows: Rows::Query { plan: good.logical_plan().clone(), session: Arc::new(ctx.state()) },
    })
    .await?;
    tracing::debug!("{name}: {rows} rows written in {:?}", started.elapsed());

    // 3. The failing rows, with the rules they failed.
    let mut quarantined = 0;
    if !rules.is_empty() {
        let (first, all) = quality::failed_rule_columns(rules);
        let bad = plan(format!(
            "SELECT {columns}, {first} AS failed_rule, {all} AS failed_rules FROM {candidate} WHERE NOT ({passing})"
        ))
        .await?;
        let schema = Arc::new(bad.schema().as_arrow().clone());
        let batches = bad.collect().await.map_err(|e| Error::model(&name, e))?;
        quarantined = batches.iter().map(|b| b.num_rows() as u64).sum();
        lake.replace_partition(PartitionWrite {
            layer: &model.layer,
            table: &format!("{}_quarantine", model.name),
            partition_column: SNAPSHOT_COLUMN,
            date,
            rows: Rows::Batches { schema, batches },
        })
        .await?;
    }
    Ok(ModelOutcome { table: name, rows, failures_by_rule, quarantined })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_models_load_in_order() {
        let set = ModelSet::builtin().unwrap();
        let gold: Vec<&str> = set.layer("gold").iter().map(|m| m.name.as_str()).collect();
        assert_eq!(gold, vec!["kpi_category_sales", "kpi_country_sales", "kpi_revenue", "kpi_top_countries", "rfm_customers", "rfm_segments"]);
        assert_eq!(set.layer("silver")[0].expectations.len(), 8);
    }

    #[test]
    fn render_substitutes_the_date_and_rejects_unknown_variables() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let mut model = Model { layer: "gold".into(), name: "x".into(), sql: "SELECT {{ snapshot_date }}".into(), expectations: vec![] };
        assert_eq!(render(&model, date).unwrap(), "SELECT DATE '2026-11-25'");
        model.sql = "SELECT {{ nope }}".into();
        assert!(render(&model, date).is_err());
    }
}

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
use datafusion::arrow::array::Array;
use datafusion::prelude::SessionContext;
use indicatif::ProgressBar;

use crate::error::{Error, Result};
use crate::lake::{catalog, Lake, Layer, PartitionWrite, Rows, TableName};
use crate::quality::{self, Expectation, OnFail};
use crate::tables::{
    KPI_CATEGORY_SALES, KPI_COUNTRY_SALES, KPI_REVENUE, KPI_TOP_COUNTRIES, RFM_CUSTOMERS, RFM_SEGMENTS, SALES_MASTER,
};

/// The partition column of silver and gold tables.
pub const SNAPSHOT_COLUMN: &str = "snapshot_date";

/// `<model>_quarantine` holds the rows of a model that failed an expectation.
pub const QUARANTINE_SUFFIX: &str = "_quarantine";

/// The layers built by models, in run order.
pub const MODEL_LAYERS: [Layer; 2] = [Layer::Silver, Layer::Gold];

/// The built-in models: (table, sql, expectations).
const BUILTIN: &[(TableName, &str, Option<&str>)] = &[
    (
        SALES_MASTER,
        include_str!("../../models/silver/sales_master.sql"),
        Some(include_str!("../../models/silver/sales_master.expectations.toml")),
    ),
    (KPI_CATEGORY_SALES, include_str!("../../models/gold/kpi_category_sales.sql"), None),
    (KPI_COUNTRY_SALES, include_str!("../../models/gold/kpi_country_sales.sql"), None),
    (KPI_REVENUE, include_str!("../../models/gold/kpi_revenue.sql"), None),
    (KPI_TOP_COUNTRIES, include_str!("../../models/gold/kpi_top_countries.sql"), None),
    (RFM_CUSTOMERS, include_str!("../../models/gold/rfm_customers.sql"), None),
    (RFM_SEGMENTS, include_str!("../../models/gold/rfm_segments.sql"), None),
];

/// One model.
#[derive(Debug, Clone)]
pub struct Model {
    pub layer: Layer,
    pub name: String,
    pub sql: String,
    pub expectations: Vec<Expectation>,
}

impl Model {
    /// The table the model writes, `layer.name`.
    pub fn table_name(&self) -> TableName {
        TableName::owned(self.layer, self.name.clone())
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
        for (table, sql, expectations) in BUILTIN {
            models.push(Model {
                layer: table.layer,
                name: table.table().to_string(),
                sql: sql.to_string(),
                expectations: match expectations {
                    Some(text) => quality::parse_expectations(&table.to_string(), text)?,
                    None => Vec::new(),
                },
            });
        }
        Ok(ModelSet { models })
    }

    /// Reads `<dir>/silver/*.sql` and `<dir>/gold/*.sql`.
    pub fn from_dir(dir: &Path) -> Result<ModelSet> {
        let mut models = Vec::new();
        for layer in MODEL_LAYERS {
            let folder = dir.join(layer.as_str());
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
                    quality::parse_expectations(&TableName::owned(layer, name.clone()).to_string(), &read(&rules_file)?)?
                } else {
                    Vec::new()
                };
                models.push(Model { layer, name, sql, expectations });
            }
        }
        Ok(ModelSet { models })
    }

    /// The models of one layer, in run order.
    pub fn layer(&self, layer: Layer) -> Vec<&Model> {
        self.models.iter().filter(|m| m.layer == layer).collect()
    }
}

/// What materialising one model did.
#[derive(Debug, Clone)]
pub struct ModelOutcome {
    pub table: TableName,
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
        return Err(Error::model(model.table_name(), format!("unknown template variable near '{snippet}' (only {{{{ snapshot_date }}}} exists)")));
    }
    Ok(sql)
}

/// Runs every model of `layer` for `date`, writing each table's partition.
pub async fn run_layer(
    ctx: &SessionContext,
    lake: &Lake,
    models: &ModelSet,
    layer: Layer,
    date: NaiveDate,
    progress: &ProgressBar,
) -> Result<Vec<ModelOutcome>> {
    let layer_models = models.layer(layer);
    progress.set_length(layer_models.len() as u64);
    let mut outcomes = Vec::new();
    for model in layer_models {
        progress.set_message(model.table_name().to_string());
        let outcome = materialise(ctx, lake, model, date).await?;
        // Later models of the layer may read this one: show them the new version.
        catalog::open_and_register(ctx, lake, &outcome.table).await?;
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
    let table = model.table_name();
    let name = table.to_string();
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
    let good_rows = Rows::Query { plan: good.logical_plan().clone(), session: Arc::new(ctx.state()) };
    lake.replace_partition(PartitionWrite::to(&table, SNAPSHOT_COLUMN, date, good_rows)).await?;
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
        let quarantine = table.with_suffix(QUARANTINE_SUFFIX);
        lake.replace_partition(PartitionWrite::to(&quarantine, SNAPSHOT_COLUMN, date, Rows::Batches { schema, batches }))
            .await?;
    }
    Ok(ModelOutcome { table, rows, failures_by_rule, quarantined })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_models_load_in_order() {
        let set = ModelSet::builtin().unwrap();
        let gold: Vec<&str> = set.layer(Layer::Gold).iter().map(|m| m.name.as_str()).collect();
        assert_eq!(gold, vec!["kpi_category_sales", "kpi_country_sales", "kpi_revenue", "kpi_top_countries", "rfm_customers", "rfm_segments"]);
        assert_eq!(set.layer(Layer::Silver)[0].expectations.len(), 8);
    }

    #[test]
    fn render_substitutes_the_date_and_rejects_unknown_variables() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let mut model = Model { layer: Layer::Gold, name: "x".into(), sql: "SELECT {{ snapshot_date }}".into(), expectations: vec![] };
        assert_eq!(render(&model, date).unwrap(), "SELECT DATE '2026-11-25'");
        model.sql = "SELECT {{ nope }}".into();
        assert!(render(&model, date).is_err());
    }
}

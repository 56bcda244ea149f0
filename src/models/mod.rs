//! SQL models: the business rules of silver and gold, as SQL files run by
//! DataFusion and materialised as Delta tables (dbt's convention).
//!
//! A model is `models/<layer>/<name>.sql`, optionally with
//! `<name>.expectations.toml` beside it (see `quality`). A model may read
//! other models of its layer (`gold.rfm_customers` in a gold model): it runs
//! once they are written; models that do not depend on each other run two
//! at a time, in file-name order; a cycle is refused before anything runs. The
//! built-in models are compiled into the binary; `--models DIR` (or
//! `models_dir` in medallion.toml) runs the files of DIR instead, so analysts
//! change rules without rebuilding. `{{ snapshot_date }}` in a model becomes
//! the date being built. To add a model, drop a SQL file in the layer folder.

pub mod checked;
pub mod profile;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use chrono::NaiveDate;
use futures::StreamExt;
use datafusion::arrow::array::{Array, Int64Array};
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::{execute_stream, ExecutionPlanProperties};
use datafusion::prelude::SessionContext;
use indicatif::ProgressBar;

use crate::error::{Error, Result};
use crate::lake::{catalog, Lake, Layer, PartitionWrite, Rows, TableName};
use crate::lineage::openlineage::{Events, JobRun};
use crate::quality::{self, Expectation, OnFail};
use checked::RuleSplit;
pub use profile::{ModelProfile, OperatorTimes};
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

    /// The model that builds `table` (`layer.name`).
    pub fn find(&self, table: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.table_name().to_string() == table)
    }

    /// The tables the models build, in run order.
    pub fn table_names(&self) -> Vec<String> {
        self.models.iter().map(|m| m.table_name().to_string()).collect()
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
    pub profile: ModelProfile,
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

/// Models of one layer run at the same time, at most this many.
const MODELS_AT_ONCE: usize = 2;

/// Runs every model of `layer` for `date`, writing each table's partition.
/// A model starts once the models of the layer it reads (by name) are
/// written; independent models run side by side, so one model's
/// single-threaded phases (a final sort, a window, a commit) leave the
/// other cores to the next. Two models that read the layer above never run
/// at once: each scans it whole and holds the stage's largest hash tables,
/// and side by side they split `memory_limit_mb` (at scale 10 000 the two
/// gold aggregations over silver did not fit in the default 1.5 GiB).
/// Outcomes come back in run order.
pub async fn run_layer(
    ctx: &SessionContext,
    lake: &Lake,
    models: &ModelSet,
    layer: Layer,
    date: NaiveDate,
    progress: &ProgressBar,
    events: &Events,
) -> Result<Vec<ModelOutcome>> {
    let layer_models = models.layer(layer);
    progress.set_length(layer_models.len() as u64);
    let reads = reads_of(&layer_models)?;
    let scans_above: Vec<bool> = layer_models.iter().map(|model| reads_layer_above(model, layer)).collect();
    let mut scanning_above = 0;
    let mut outcomes: Vec<Option<ModelOutcome>> = vec![None; layer_models.len()];
    let mut started = vec![false; layer_models.len()];
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        for (index, model) in layer_models.iter().enumerate() {
            let ready = !started[index] && reads[index].iter().all(|before| outcomes[*before].is_some());
            let fits = !scans_above[index] || scanning_above == 0;
            if ready && fits && running.len() < MODELS_AT_ONCE {
                started[index] = true;
                if scans_above[index] {
                    scanning_above += 1;
                }
                progress.set_message(model.table_name().to_string());
                running.push(async move {
                    let run = lineage_run(ctx, events, model, date).await;
                    let outcome = match materialise(ctx, lake, model, date).await {
                        Ok(outcome) => outcome,
                        Err(err) => {
                            if let Some(run) = &run {
                                events.fail(run, &crate::error::one_line(&err.to_string()));
                            }
                            return Err(err);
                        }
                    };
                    // Later models of the layer may read this one: show them the new version.
                    catalog::open_and_register(ctx, lake, &outcome.table).await?;
                    if let Some(run) = &run {
                        lineage_complete(ctx, lake, events, run, &outcome).await;
                    }
                    Ok::<_, Error>((index, outcome))
                });
            }
        }
        let Some(finished) = running.next().await else { break };
        let (index, outcome) = finished?;
        if scans_above[index] {
            scanning_above -= 1;
        }
        outcomes[index] = Some(outcome);
        progress.inc(1);
    }
    Ok(outcomes.into_iter().flatten().collect())
}

/// The OpenLineage run of `model`, started (`None` when no events are sent):
/// its inputs are the tables its plan reads.
async fn lineage_run(ctx: &SessionContext, events: &Events, model: &Model, date: NaiveDate) -> Option<JobRun> {
    if !events.enabled() {
        return None;
    }
    let table = model.table_name();
    let sql = render(model, date).ok()?;
    let read = crate::lineage::columns::tables_read(ctx, &table.to_string(), &sql).await.unwrap_or_default();
    let inputs = read.iter().map(|name| events.lake_dataset(name)).collect();
    let run = events.run(&table, inputs, Some(sql));
    events.start(&run);
    Some(run)
}

/// `COMPLETE` for a model's run: the table written (schema and column
/// lineage) and its quarantine table when rows went there.
async fn lineage_complete(ctx: &SessionContext, lake: &Lake, events: &Events, run: &JobRun, outcome: &ModelOutcome) {
    let name = outcome.table.to_string();
    let columns = match &run.sql {
        Some(sql) => crate::lineage::columns::column_lineage(ctx, &name, sql).await.ok(),
        None => None,
    };
    let mut outputs = vec![events.written(lake, &outcome.table, columns).await];
    if outcome.quarantined > 0 {
        outputs.push(events.written(lake, &outcome.table.with_suffix(QUARANTINE_SUFFIX), None).await);
    }
    events.complete(run, &outputs);
}

/// For each model, the other models of `models` whose table it names: it
/// runs after them. Models that read each other, directly or through
/// others, are refused (none of them could start).
fn reads_of(models: &[&Model]) -> Result<Vec<Vec<usize>>> {
    let reads: Vec<Vec<usize>> = models
        .iter()
        .enumerate()
        .map(|(index, model)| {
            let sql = code_of(&model.sql).to_lowercase();
            (0..models.len())
                .filter(|other| *other != index && names_table(&sql, &models[*other].table_name().to_string()))
                .collect()
        })
        .collect();
    // Take out, again and again, the models whose inputs are all taken out;
    // what stays is a cycle.
    let mut done = vec![false; models.len()];
    loop {
        let ready: Vec<usize> =
            (0..models.len()).filter(|i| !done[*i] && reads[*i].iter().all(|input| done[*input])).collect();
        if ready.is_empty() {
            break;
        }
        ready.into_iter().for_each(|i| done[i] = true);
    }
    let stuck: Vec<String> = (0..models.len()).filter(|i| !done[*i]).map(|i| models[i].table_name().to_string()).collect();
    if !stuck.is_empty() {
        return Err(Error::Config(format!(
            "the models {} cannot run: they read each other in a cycle (or read a model that is in one); make one of them read the layer above instead",
            stuck.join(", ")
        )));
    }
    Ok(reads)
}

/// Whether `model` (of `layer`) names a table of the layer above its own:
/// bronze for a silver model, silver for a gold one.
fn reads_layer_above(model: &Model, layer: Layer) -> bool {
    let above = match layer {
        Layer::Silver => Layer::Bronze,
        Layer::Gold => Layer::Silver,
        _ => return false,
    };
    let sql = code_of(&model.sql).to_lowercase();
    sql.match_indices(&format!("{above}.")).any(|(at, _)| name_starts_at(&sql, at))
}

/// `sql` as the search for the tables a model reads sees it: without its
/// comments (`-- …` to the end of the line, `/* … */`) and without the text
/// of its string literals (a table named in either is not read); quoted
/// identifiers are kept.
fn code_of(sql: &str) -> String {
    let mut kept = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(open) => {
                if c == open {
                    quote = None;
                    kept.push(c);
                } else if open == '"' {
                    kept.push(c);
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                kept.push(c);
            }
            None if c == '-' && chars.peek() == Some(&'-') => {
                while chars.peek().is_some_and(|next| *next != '\n') {
                    chars.next();
                }
            }
            None if c == '/' && chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for next in chars.by_ref() {
                    if previous == '*' && next == '/' {
                        break;
                    }
                    previous = next;
                }
                kept.push(' ');
            }
            None => kept.push(c),
        }
    }
    kept
}

/// Whether lowercase `sql` names `table` (`layer.name`) as a whole word.
fn names_table(sql: &str, table: &str) -> bool {
    let table = table.to_lowercase();
    sql.match_indices(&table).any(|(at, _)| {
        let after = sql[at + table.len()..].chars().next();
        name_starts_at(sql, at) && !after.is_some_and(is_word_char)
    })
}

/// Whether a (possibly qualified) name can start at byte `at` of `sql`: not
/// inside a word, nor after a dot (`x.gold.t` does not name `gold.t`).
fn name_starts_at(sql: &str, at: usize) -> bool {
    !sql[..at].chars().next_back().is_some_and(|c| is_word_char(c) || c == '.')
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The query a model runs: its columns (technical `_` columns dropped) and,
/// for each expectation, a boolean column `__rule_<i>` (see `checked`).
async fn checked_query(ctx: &SessionContext, model: &Model, candidate: &str) -> Result<String> {
    let name = model.table_name().to_string();
    let mut select: Vec<String> = ctx
        .sql(&format!("SELECT * FROM {candidate}"))
        .await
        .map_err(|e| Error::model(&name, e))?
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !n.starts_with('_'))
        .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
        .collect();
    select.extend(model.expectations.iter().enumerate().map(|(i, rule)| format!("{} AS \"__rule_{i}\"", quality::passes(rule))));
    Ok(format!("SELECT {} FROM {candidate}", select.join(", ")))
}

/// The physical plan of the query a model runs for `date`. With `analyze`
/// the query runs (its rows are counted and dropped; nothing is written)
/// and the plan shows each operator's rows and time.
pub async fn explain(ctx: &SessionContext, model: &Model, date: NaiveDate, analyze: bool) -> Result<String> {
    let name = model.table_name().to_string();
    let candidate = candidate(model, date)?;
    let planning = Instant::now();
    let query = ctx.sql(&checked_query(ctx, model, &candidate).await?).await.map_err(|e| Error::model(&name, e))?;
    let physical = query.create_physical_plan().await.map_err(|e| Error::model(&name, e))?;
    let planned = planning.elapsed();
    if !analyze {
        let plan = DisplayableExecutionPlan::new(physical.as_ref()).indent(true);
        return Ok(format!("{name} for {date}: planned in {:.1} ms (not run)\n\n{plan}", planned.as_secs_f64() * 1000.0));
    }
    let running = Instant::now();
    let mut rows = 0u64;
    let mut batches = execute_stream(physical.clone(), ctx.task_ctx()).map_err(|e| Error::model(&name, e))?;
    while let Some(batch) = batches.next().await {
        rows += batch.map_err(|e| Error::model(&name, e))?.num_rows() as u64;
    }
    let ran = running.elapsed();
    let operators = OperatorTimes::of(&physical);
    let plan = DisplayableExecutionPlan::with_metrics(physical.as_ref()).indent(true);
    Ok(format!(
        "{name} for {date}: {rows} rows in {:.3} s, planned in {:.1} ms (nothing written)\n\
         operator time (summed over cores): scan {:.3} s, join {:.3} s, aggregate {:.3} s, sort {:.3} s, window {:.3} s, other {:.3} s\n\n{plan}",
        ran.as_secs_f64(),
        planned.as_secs_f64() * 1000.0,
        operators.scan.as_secs_f64(),
        operators.join.as_secs_f64(),
        operators.aggregate.as_secs_f64(),
        operators.sort.as_secs_f64(),
        operators.window.as_secs_f64(),
        operators.other.as_secs_f64(),
    ))
}

/// Runs one model and writes its partition (and its quarantine).
async fn materialise(ctx: &SessionContext, lake: &Lake, model: &Model, date: NaiveDate) -> Result<ModelOutcome> {
    write_checked(ctx, lake, model, date, &candidate(model, date)?).await
}

/// The model for `date` as the relation `candidate`: planned as a subquery
/// each time (not a registered view), so the optimiser sees through it and
/// filters and projections reach the scans.
fn candidate(model: &Model, date: NaiveDate) -> Result<String> {
    Ok(format!("(\n{}\n) AS candidate", render(model, date)?))
}

/// Runs the model's query once: the rows passing every expectation stream
/// into the table while the others are kept for the quarantine (see
/// `checked`). A fail-the-run rule is checked by a count first, so a model
/// that breaks one writes nothing.
async fn write_checked(
    ctx: &SessionContext,
    lake: &Lake,
    model: &Model,
    date: NaiveDate,
    candidate: &str,
) -> Result<ModelOutcome> {
    let started = Instant::now();
    let table = model.table_name();
    let name = table.to_string();
    let rules = &model.expectations;
    let mut profile = ModelProfile::default();

    // 1. Fail-the-run rules, counted before anything is written.
    let fatal: Vec<Expectation> = rules.iter().filter(|r| r.on_fail == OnFail::Fail).cloned().collect();
    if !fatal.is_empty() {
        let checking = Instant::now();
        let counts = ctx
            .sql(&quality::count_failures_sql(&fatal, candidate))
            .await
            .map_err(|e| Error::model(&name, e))?
            .collect()
            .await
            .map_err(|e| Error::model(&name, e))?;
        for rule in &fatal {
            let failed = counts
                .first()
                .and_then(|b| b.column_by_name(&rule.name))
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .map(|a| if a.is_empty() || a.is_null(0) { 0 } else { a.value(0) as u64 })
                .unwrap_or(0);
            if failed > 0 {
                return Err(Error::ExpectationFailed { model: name, rule: rule.name.clone(), rows: failed });
            }
        }
        profile.precheck = checking.elapsed();
    }

    // 2. One query: the model's columns and one boolean per rule.
    let planning = Instant::now();
    let query = ctx.sql(&checked_query(ctx, model, candidate).await?).await.map_err(|e| Error::model(&name, e))?;
    let physical = query.create_physical_plan().await.map_err(|e| Error::model(&name, e))?;
    profile.plan = planning.elapsed();

    // 3. The passing rows streamed into the table, one writer per partition
    //    of the plan.
    let split = RuleSplit::new(&physical.schema(), rules);
    let task = ctx.task_ctx();
    let streams = (0..physical.output_partitioning().partition_count())
        .map(|partition| physical.execute(partition, task.clone()).map(|rows| split.passing_rows(rows)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::model(&name, e))?;
    let written = lake
        .replace_partition(PartitionWrite::to(
            &table,
            SNAPSHOT_COLUMN,
            date,
            Rows::Streams { schema: split.passing_schema(), streams },
        ))
        .await?;
    profile.write = written.profile;
    profile.operators = OperatorTimes::of(&physical);
    let tally = split.finish();
    profile.checks = tally.split_time;

    // 4. The failing rows, with the rules they failed.
    let mut quarantined = 0;
    if !rules.is_empty() {
        let writing = Instant::now();
        quarantined = tally.quarantine.iter().map(|b| b.num_rows() as u64).sum();
        let quarantine = table.with_suffix(QUARANTINE_SUFFIX);
        lake.replace_partition(PartitionWrite::to(
            &quarantine,
            SNAPSHOT_COLUMN,
            date,
            Rows::Batches { schema: split.quarantine_schema(), batches: tally.quarantine },
        ))
        .await?;
        profile.quarantine = writing.elapsed();
    }
    let failures_by_rule = rules.iter().map(|r| r.name.clone()).zip(tally.failures).collect();
    profile.wall = started.elapsed();
    Ok(ModelOutcome { table, rows: tally.passing, failures_by_rule, quarantined, profile })
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
    fn a_model_waits_for_the_models_it_reads_and_a_cycle_is_refused() {
        let set = ModelSet::builtin().unwrap();
        let gold = set.layer(Layer::Gold);
        let reads = reads_of(&gold).unwrap();
        let at = |name: &str| gold.iter().position(|m| m.name == name).unwrap();
        let customers = at("rfm_customers");
        // Read by hand from models/gold/*.sql.
        let expected = [
            ("kpi_category_sales", vec![]),
            ("kpi_country_sales", vec![customers]),
            ("kpi_revenue", vec![customers]),
            ("kpi_top_countries", vec![at("kpi_country_sales")]),
            ("rfm_customers", vec![]),
            ("rfm_segments", vec![customers]),
        ];
        for (name, inputs) in expected {
            assert_eq!(reads[at(name)], inputs, "{name}");
        }
        let model = |name: &str, sql: &str| Model { layer: Layer::Gold, name: name.into(), sql: sql.into(), expectations: vec![] };
        let (a, b, c) = (model("a", "SELECT * FROM gold.b"), model("b", "SELECT * FROM gold.c"), model("c", "SELECT * FROM gold.a"));
        let err = reads_of(&[&a, &b, &c]).unwrap_err().to_string();
        assert!(err.contains("gold.a, gold.b, gold.c") && err.contains("cycle"), "{err}");
        let later = model("a_first", "SELECT * FROM gold.z_last");
        let z = model("z_last", "SELECT 1");
        assert_eq!(reads_of(&[&later, &z]).unwrap(), vec![vec![1], vec![]], "a model may read one that sorts after it");
        // A table named in a comment or a string is not read: no edge, so no cycle.
        let commented = model("z_last", "-- feeds gold.a_first\nSELECT 1 /* unlike gold.a_first */ AS x, 'gold.a_first' AS y");
        assert_eq!(reads_of(&[&later, &commented]).unwrap(), vec![vec![1], vec![]]);
        assert_eq!(
            code_of("SELECT \"a\" -- one\nFROM t /* x */ WHERE b = 'gold.x -- y'"),
            "SELECT \"a\" \nFROM t   WHERE b = ''"
        );
        // Which models scan the layer above (one of those runs at a time).
        let above: Vec<&str> =
            gold.iter().filter(|m| reads_layer_above(m, Layer::Gold)).map(|m| m.name.as_str()).collect();
        assert_eq!(above, ["kpi_category_sales", "rfm_customers"]);
        assert!(!reads_layer_above(&model("x", "SELECT 1 -- silver.sales_master"), Layer::Gold));
        assert!(names_table("select * from gold.kpi_revenue r", "gold.kpi_revenue"));
        assert!(!names_table("select * from gold.kpi_revenue_daily", "gold.kpi_revenue"));
        assert!(!names_table("select * from x.gold.kpi_revenue", "gold.kpi_revenue"));
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
